/*
 * lake_log.h - the lake's commits log (LAKE/_medstream/commits) and the decisions a start makes from it:
 * which files of the lake are visible, up to which commit-log position they hold, and what to do with
 * what a crash left in LAKE/_medstream/tmp. Pure: text and listings in, values out (sink_lake.c does the
 * I/O; tests/unit/test_lake.c drives these directly).
 *
 * The log: one line per published roll, appended and fdatasynced BEFORE its files are renamed into
 * place, so it is the truth of the lake (sink_lake.h, "Exactly once"). A line is a JSON object, members in
 * this order:
 *   {"from":F,"to":T,"commit_time_us":C,"rows":R,
 *    "files":[{"path":"records/type=lab/year=2026/part-00000000000000000012-00000.parquet",
 *              "rows":N,"bytes":B,"sha256":"<64 hex>"},...],
 *    "rewritten":[{"path","rows","bytes","sha256"},...],"crc32":"<8 hex>"}
 * ("rewritten" only on a line after an erasure: files of earlier lines written again without the erased
 * patient's rows, whose last word on a path is the line that lists it last)
 * F..T: the commit-log positions the roll holds (inclusive); C: the store's commit time of entry T (a store
 * restored from an older copy is noticed by it); crc32: of the line's bytes before `,"crc32"`, so that a
 * line torn by a crash mid-append is told from a whole one.
 *
 * File names: part-<F, 20 digits>-<n, 5 digits>.parquet, n counting the roll's files from 0: unique across
 * the lake (each roll's F is past the previous roll's T) and sorting in commit order. While unpublished a
 * file is LAKE/_medstream/tmp/<name>.pending (a name no `*.parquet` glob matches).
 *
 * What it must never do: accept a line whose check fails as anything but a torn last line; decide to
 * delete a pending file that the last entry names.
 */
#ifndef MS_SINKS_LAKE_LOG_H
#define MS_SINKS_LAKE_LOG_H

#include "base/util.h"

#define LAKE_PENDING_SUFFIX ".pending"

typedef struct {
    char *path; /* relative to LAKE: records/type=…/year=…/part-….parquet or deletions/part-….parquet */
    uint64_t rows, bytes;
    unsigned char sha256[32];
} lake_file;

typedef struct {
    uint64_t from, to;      /* commit-log positions held, inclusive */
    int64_t commit_time_us; /* the store's commit time of entry `to` */
    uint64_t rows;          /* the files' rows, in all */
    lake_file *files;
    size_t nfiles;
    /* files of earlier rolls written again without an erased patient's rows (sink_lake.h, "Erasure"):
     * their new rows, bytes and sha256 (not counted in rows; the line's "rewritten" member, absent when
     * none) */
    lake_file *rewritten;
    size_t nrewritten;
} lake_entry;

/* Add a rewritten file (path copied) to en (not counted in its rows). */
void lake_entry_add_rewritten(lake_entry *en, const char *path, uint64_t rows, uint64_t bytes,
                              const unsigned char sha256[32]);
/* Add a file (path copied) to en, counting its rows. */
void lake_entry_add(lake_entry *en, const char *path, uint64_t rows, uint64_t bytes, const unsigned char sha256[32]);
void lake_entry_free(lake_entry *en);

/* "part-<from:020>-<n:05>.parquet", replacing out's content. */
void lake_part_name(uint64_t from, uint32_t n, buf *out);
/* The name a path's file has in tmp while pending: its base name + LAKE_PENDING_SUFFIX (replaces out). */
void lake_pending_name(const char *path, buf *out);

/* The entry as one line, '\n' ended, appended to out. */
void lake_log_encode(const lake_entry *en, buf *out);
/* One line (without its '\n'). Errors: MS_ECORRUPT (the message says what is wrong, never more). */
ms_code lake_log_parse_line(const char *line, size_t len, lake_entry *en, ms_err *e);

typedef struct {
    size_t valid_len; /* bytes of whole, valid lines from the start: the log's true length */
    bool torn;        /* bytes past valid_len: a last line a crash cut (or never synced): to be cut off */
    uint64_t entries; /* whole lines */
    lake_entry last;  /* the last whole line's entry (entries > 0) */
} lake_log_state;

/* Read a whole log. A bad or unterminated LAST line is torn (valid_len stops before it); a bad line with a
 * good one after it, or positions that do not increase from line to line, are MS_ECORRUPT (naming the line
 * number). st->last is owned by st: lake_log_state_free. */
ms_code lake_log_read(const char *text, size_t len, lake_log_state *st, ms_err *e);
void lake_log_state_free(lake_log_state *st);

/* What a start does with LAKE/_medstream/tmp, given the log's last entry (NULL: none) and the names the
 * tmp directory holds: each file of the last entry that is not visible (exists(ctx, path) false) is
 * renamed from its pending name into place; every other name in tmp (pending files of a roll that never
 * reached the log, out_file's partial ".NAME.tmp" files) is removed. */
typedef struct {
    size_t nrename, nremove;
    const char **rename_from; /* names in tmp */
    const char **rename_to;   /* paths relative to LAKE (point into the entry) */
    const char **remove;      /* names in tmp (point into tmp_names) */
    buf names;                /* storage of rename_from */
} lake_plan;

/* Errors: MS_ECORRUPT a file of the last entry that is neither visible nor pending (lost: the message names
 * it). */
ms_code lake_recovery_plan(const lake_entry *last, const char *const *tmp_names, size_t ntmp,
                           bool (*exists)(void *ctx, const char *path), void *ctx, lake_plan *plan, ms_err *e);
void lake_plan_free(lake_plan *plan);

#endif
