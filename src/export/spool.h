/*
 * spool.h - phase 1 of an export: entries put aside per partition, in files under the export's
 * temporary directory, while the store is read in record-id order (which interleaves partitions); phase
 * 2 reads each partition's entries back, one partition at a time, to write its part files. An entry is
 * framed by a 4-byte big-endian length: an encoded row, or for PHI a record version whose body phase 2
 * reads again.
 *
 * Contract: memory is bounded whatever the number of partitions: at most SPOOL_OPEN_MAX spool files are
 * open at once (64 KiB buffer each), the least recently used closed and reopened for appending when
 * needed. Rows come back in the order they were appended. spool_free removes the files. Errors name
 * the spool file (MS_EFULL for a full disk).
 */
#ifndef MS_EXPORT_SPOOL_H
#define MS_EXPORT_SPOOL_H

#include "base/util.h"

#define SPOOL_OPEN_MAX 64

typedef struct spool_set spool_set;

void spool_open(spool_set **out, const char *dir);
/* Append one framed entry (rows_encode, or export.c's version_encode) to the spool of partition path. */
ms_code spool_append(spool_set *s, const char *path, size_t path_len, const void *row, size_t len, ms_err *e);
size_t spool_count(const spool_set *s);
/* The partitions' paths, sorted (valid until spool_free). */
const char *const *spool_sorted(spool_set *s);
/* Each row of partition `path` in order: fn(ctx, encoded row, its length). fn's error stops and is returned. */
typedef ms_code (*spool_row_fn)(void *ctx, const char *row, size_t len, ms_err *e);
ms_code spool_read(spool_set *s, const char *path, spool_row_fn fn, void *ctx, ms_err *e);
void spool_free(spool_set *s);

#endif
