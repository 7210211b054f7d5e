/*
 * sink_lake_internal.h - what the lake sink's two files share (sink_lake.c: the rolls, publishing,
 * recovery; lake_erase.c: the published files that held an erased patient's rows, written again without
 * them). Private to src/sinks: nothing else includes it.
 */
#ifndef MS_SINK_LAKE_INTERNAL_H
#define MS_SINK_LAKE_INTERNAL_H

#include "sinks/sink_lake.h"

#include "base/metrics.h"
#include "export/layout.h"
#include "export/part.h"
#include "export/rows.h"
#include "pipeline/schema.h"
#include "sinks/lake_log.h"

#include <pthread.h>
#include <stdatomic.h>

#define SINK_NAME "lake"
#define STEP_MAX_COMMITS 256       /* commit-log entries per read transaction, at most */
#define STEP_MAX_ROWS 20000        /* rows per read transaction, about */
#define MAX_OPEN_PARTS 64          /* partitions open in one roll (1 MiB of write buffer each); more: it rolls early */
#define LOG_TAIL ((size_t)4 << 20) /* a start reads this much of the commits log's end, at most */
#define ROW_GROUP_MAX (64u << 20)  /* Parquet row groups: the roll's bytes, at most this */
#define RETRY_S 1.0
#define HISTORY_RETRY_S 5.0
#define IDLE_US 20000
#define ROLL_MARGIN_S 0.1 /* a roll starts publishing this much (and its expected duration) before it is due */

typedef enum { LAKE_OK, LAKE_FAILING } lake_state;

/* Test hook (tests/e2e/test_lake.py): MEDSTREAM_TEST_LAKE_CRASH=files|log|rename makes the process kill
 * itself with SIGKILL at that step of the first roll it publishes with files: once its files are synced
 * in tmp (before the log line), once the log line is synced (before any rename), once the first file is
 * renamed into place; =erase once the first file an erasure wrote again is renamed over the published one
 * (before the line that logs it), =erase_added once the first file it adds to a roll is. Read at start;
 * unset, it costs one comparison a roll. */
typedef enum { CRASH_NONE, CRASH_FILES, CRASH_LOG, CRASH_RENAME, CRASH_ERASE, CRASH_ERASE_ADDED } crash_point;

typedef struct {
    char *path; /* partition directory relative to the lake: records/type=…/year=…, or deletions */
    char *name; /* part-….parquet */
    const export_columns *cols;
    part_writer *w;
} lake_part;

struct sink_lake {
    sink_lake_options o;
    char *dir, *meta, *tmp, *log_path;
    int lock_fd, log_fd;
    uint64_t log_size; /* bytes of whole lines: appends go here */
    bool log_dirty;    /* a failed append may have left bytes past log_size: cut them before the next */
    export_columns rcols, dcols;
    /* While a re-projection was under way at start, public reads (and so the lake) read the copies of the
     * version in force then, old_sv, made under old_schema: their rows are laid out under it, in old_rcols,
     * until the switch; from then on under the server's schema (o.schema, rcols). Fixed after the start. */
    schema old_schema;
    export_columns old_rcols;
    uint32_t old_sv;
    bool have_old;
    row_builder rb;
    export_row row;
    record_version rv;
    buf part_path, scratch;

    /* the roll in hand: commits roll_from..read_pos, not yet published */
    lake_part *parts;
    size_t nparts, cap_parts;
    uint64_t roll_from, roll_rows, roll_bytes;
    int64_t roll_first_time, roll_last_time; /* commit times of its first and last commits */
    uint64_t published, read_pos;
    lake_entry unfinished; /* logged, renames not all done (an I/O failure after the log line) */
    bool has_unfinished;
    lake_entry last_logged; /* the log's last entry at start, until checked against the store */
    bool check_history;
    double publish_est_s;  /* how long publishing took, lately */
    crash_point crash_at;  /* the test hook above */
    bool caught_up;        /* the last step read up to the store's last commit */
    uint64_t erasure_at;   /* an entry that erases a patient, met by the step before reading it (0: none) */
    uint64_t erasure_done; /* the last such entry the lake was rewritten for (read as any other from then on) */
    bool erasure_waits;    /* that entry waits for the re-projection under way (said once in the log) */
    lake_entry rewritten;  /* the files that rewrite wrote, logged with the next roll's line */

    /* the step's state (inside store_log_entry) */
    store_read *r;
    int64_t commit_time;
    ms_code step_rc;
    ms_err step_err;

    pthread_t thread;
    atomic_bool stop;
    /* for /metrics and /healthz */
    _Atomic int state;
    _Atomic uint64_t lag_commits, lag_us, files_total, rows_total, rolls_total, failures_total;
    _Atomic uint64_t position; /* = published, for /metrics */
    histogram publish_seconds;
    pthread_mutex_t err_lock;
    char error[sizeof(((ms_err *)0)->msg)];
};

/* path a "/" b (malloc'd). */
char *path_join(const char *a, const char *b);
/* mkdir -p of rel below base, fsyncing the parent of every directory it makes. */
ms_code mkdirs_synced(const char *base, const char *rel, ms_err *e);
/* The lake row of a commit-log item (a public record version), into l->row; *skip when it has none (a
 * patient version, a version without a public copy); *cols its columns, dir its partition directory. */
ms_code row_of(sink_lake *l, store_read *r, int64_t commit_time, const log_item *it, bool *skip,
               const export_columns **cols, buf *dir, ms_err *e);
/* b's bytes written at byte `at` of fd, then fdatasync; errors name path. */
ms_code write_synced(int fd, const buf *b, uint64_t at, const char *path, ms_err *e);
/* The test hook: SIGKILL here when the hook names this step. */
void crash_if(const sink_lake *l, crash_point at);

/* ---- lake_erase.c ---- */

/* The erasure at commit-log entry `at`: every published roll that held a version it erased is written again
 * without the erased patients' rows (each file beside, synced, renamed over, its directory synced; noted in
 * l->rewritten for the next roll's line). *wait: nothing done, a re-projection is under way (the rows are
 * laid out once its copies are in force: call again later). */
ms_code lake_rewrite(sink_lake *l, uint64_t at, bool *wait, ms_err *e);
/* The files a rewrite added are journaled (_medstream/added) until a line lists them: after that line,
 * lake_added_clear empties the journal (a failure only logged: the names it keeps are named by a line); at
 * start, after the log's recovery, lake_added_recover removes every journaled file no line names. */
void lake_added_clear(sink_lake *l);
ms_code lake_added_recover(sink_lake *l, ms_err *e);

#endif
