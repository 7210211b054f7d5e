/*
 * out_file.h - one output file written durably: created under a temporary name beside its final one
 * (".NAME.tmp"), written through a buffer while its SHA-256 and size are counted, fdatasynced, renamed
 * to its name, and its directory fsynced. Also the directory chores of an export: make, fsync, remove a
 * tree.
 *
 * Contract: errors name the file's path and the cause; ENOSPC, EDQUOT and EFBIG are MS_EFULL ("disk full
 * writing PATH"). out_abort removes the temporary file. Must never: leave a file under its final name
 * that was not completely written and synced.
 */
#ifndef MS_EXPORT_OUT_FILE_H
#define MS_EXPORT_OUT_FILE_H

#include "base/util.h"

typedef struct out_file out_file;

/* Create dir/.name.tmp (mode 0600 or 0644). */
ms_code out_open(out_file **out, const char *dir, const char *name, int mode, ms_err *e);
ms_code out_write(out_file *f, const void *data, size_t len, ms_err *e);
uint64_t out_bytes(const out_file *f);
/* Flush, fdatasync, close, rename to dir/name, fsync dir; sha256 (may be NULL) receives the digest. Frees f
 * either way (on failure the temporary file is removed). */
ms_code out_finish(out_file *f, unsigned char sha256[32], ms_err *e);
/* Close and remove the temporary file; NULL is a no-op. */
void out_abort(out_file *f);

/* An errno as an ms_code with a message naming the path ("disk full writing PATH: ..."). */
ms_code out_errno(ms_err *e, int err, const char *what, const char *path);
/* mkdir -p (mode 0700 for what it creates). */
ms_code out_mkdirs(const char *path, ms_err *e);
ms_code out_fsync_dir(const char *path, ms_err *e);
/* rm -rf; a missing path is fine. */
ms_code out_remove_tree(const char *path, ms_err *e);
/* The SHA-256 of a whole file, and its size. */
ms_code out_sha256_file(const char *path, unsigned char sha256[32], uint64_t *size, ms_err *e);
void out_hex(const unsigned char *b, size_t n, char *out);

#endif
