/*
 * tar.h - the archive of GET /v1/exports/{id}/download: POSIX ustar, uncompressed (Parquet is
 * compressed already; every tar reads it), with a POSIX.1-2001 pax extended header before a member whose
 * path ustar cannot hold, of an export directory; and its extraction by `medstream export --url`.
 *
 * Contract: tar_write_dir archives every directory and regular file under dir (names relative to it,
 * sorted, so the same export gives the same archive bar its mtimes), written through out_file (temporary
 * name, fsync, rename). A path that fits ustar (a prefix of 155 bytes at most, '/', a name of 100 at
 * most) is written as ustar alone; a longer one (up to TAR_PATH_MAX bytes) gets an 'x' header with a
 * "path" record first (tar_pax_record), which GNU tar and Python's tarfile read. tar_extract (a
 * buffer) and tar_extract_fd (a file read from its current offset to the end marker, a chunk at a time:
 * memory bounded whatever the archive's size) read both, alike; they refuse (MS_EINVAL) a member whose name
 * (the pax path when there is one) is absolute, has an empty, "." or ".." component (a directory's one
 * trailing '/' aside) or one of the form ".NAME.tmp" (out_file's temporary files), or is not a file or a
 * directory, before writing it; a header whose size field is not an octal number (GNU's base-256 included);
 * a directory member where a file of its name was extracted; and a malformed, oversized or dangling extended
 * header. A refusal's message ends "(the header at byte N)", N the offset in the archive of the header at
 * fault. A directory's size field is not data (as GNU tar and Python's tarfile read it). Files are written
 * through out_file too. Members larger than TAR_SIZE_MAX (8 GiB) are refused on both sides.
 */
#ifndef MS_EXPORT_TAR_H
#define MS_EXPORT_TAR_H

#include "base/util.h"

ms_code tar_write_dir(const char *dir, const char *tar_dir, const char *tar_name, ms_err *e);
ms_code tar_extract(const char *data, size_t len, const char *dir, ms_err *e);
/* release: the file's bytes are freed from the disk as they are read (fallocate PUNCH_HOLE, where the file system
 * can): a downloaded archive and its extraction then need about the room of one. */
ms_code tar_extract_fd(int fd, bool release, const char *dir, ms_err *e);

#define TAR_PATH_MAX 4096                     /* the longest member path written or read */
#define TAR_SIZE_MAX ((uint64_t)077777777777) /* the largest member written or read: ustar's 11 octal digits */
#define TAR_PAX_MAX 65536                     /* the largest pax extended header read */

/* One pax extended header record, appended to out: "LEN key=value\n", LEN the record's length in bytes
 * with its own digits. Pure. */
void tar_pax_record(const char *key, const char *value, buf *out);

#endif
