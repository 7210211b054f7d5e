/*
 * rejects.h - the reject file of an import: every row that was not stored, as one JSON object a line:
 *
 *   {"line":L,"offset":O,"column":"dob"|null,"reason":"...","raw":"<the row as it is in the file>"}
 *
 * line is the physical line the row starts on, offset its stream byte offset (input.h), column the
 * field or CSV column the reason names (null when it names none), reason what is wrong (it names fields
 * and positions, never values). raw is the row itself: THE FILE HOLDS PHI, so it is created mode 0600
 * and kept as the input is kept. A row that is not valid UTF-8 has "raw_base64" (its bytes) instead of
 * "raw"; a row over the record limit has only its first 64 KiB and "raw_truncated":true.
 *
 * Exactly once across runs: entries are written in line order, and a resumed import first cuts the file
 * at its first entry for a row at or after the checkpoint's line (rejects_open), so rows read again after
 * a crash are not listed twice, while entries written after the checkpoint's commit for rows before it
 * (the writer's refusals of the last committed batch) stay. A fresh pass over the file starts it empty.
 *
 * Contract: one thread. Entries are buffered and written by rejects_flush, which the importer calls
 * (with sync) before it records a checkpoint that counts them. The file is created only once there is
 * something to write (or an existing one to cut back).
 *
 * What it must never do: follow a symbolic link at the path (it is opened O_NOFOLLOW), leave the file
 * readable by others, or put a row's bytes anywhere but the file.
 */
#ifndef MS_IMPORT_REJECTS_H
#define MS_IMPORT_REJECTS_H

#include "base/util.h"

typedef struct rejects rejects;

/* The reject file at path, cut at its first entry for a row at or after line cut_line (1: emptied if it
 * exists). known: the length the checkpoint recorded, every entry before which is for an earlier row (the
 * search starts there). *short_file: the file is shorter than known (or missing while known > 0): rejects
 * of earlier rows are missing from it (moved away, or a sync lost); it goes on from its end. Errors:
 * MS_EIO it cannot be opened, read, cut or made 0600. */
ms_code rejects_open(rejects **out, const char *path, uint64_t known, uint64_t cut_line, bool *short_file, ms_err *e);
/* Flushes nothing: call rejects_flush first. NULL is a no-op. */
void rejects_close(rejects *r);

/* Buffer one entry. column may be NULL; raw is the row's kept bytes (raw_cut: the row was longer). */
void rejects_add(rejects *r, uint64_t line, uint64_t offset, const char *column, const char *reason, const char *raw,
                 size_t raw_len, bool raw_cut);
/* Write what is buffered (creating the file if needed); sync: fdatasync it too. Errors: MS_EFULL the disk
 * is full; MS_EIO another write or sync failure. */
ms_code rejects_flush(rejects *r, bool sync, ms_err *e);
/* The file's length once what is buffered is written. */
uint64_t rejects_bytes(const rejects *r);
const char *rejects_path(const rejects *r);

#endif
