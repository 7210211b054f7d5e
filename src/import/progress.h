/*
 * progress.h - what an import shows while it runs and when it ends: a progress bar redrawn in place on
 * a terminal, a plain line every few seconds otherwise, the final summary, and the rejected rows counted
 * by reason.
 *
 * Contract: pure (text into a buf). Everything shown is counts, sizes, rates, times, the file's name as
 * given, and reasons reduced to their class (reason_class): a reason names fields and positions only,
 * and the few that quote something a client chose (a record id) are replaced by fixed text.
 *
 * What it must never do: show a row's value, a record id or a patient id.
 */
#ifndef MS_IMPORT_PROGRESS_H
#define MS_IMPORT_PROGRESS_H

#include "base/util.h"

typedef struct {
    uint64_t rows; /* rows read (blank lines are not rows) */
    uint64_t created, updated, duplicate, rejected;
    uint64_t valid; /* --dry-run: rows that would be stored */
} import_counts;

typedef struct {
    const char *name;               /* the file as the user named it */
    uint64_t file_done, file_total; /* bytes of the file consumed, and its size */
    uint64_t file_at_start;         /* file bytes already consumed when this run began (a resume) */
    uint64_t stream_bytes;          /* bytes of rows read this run (decompressed) */
    import_counts counts;           /* this run */
    double elapsed;                 /* seconds since this run began */
} progress_view;

/* The bar, one line without a line end (the caller writes "\r" before it and erases the rest of the
 * line after it): "name [=====>    ] 45%  1.2 GB/2.6 GB  16,400 rows/s  320 MB/s  ETA 1m20s". columns:
 * the terminal's width. */
void progress_bar(buf *out, const progress_view *v, int columns);
/* The line of --progress=plain (and of a non-terminal), with its line end. */
void progress_line(buf *out, const progress_view *v);

/* "12,345,678" */
void format_count(char *out, size_t cap, uint64_t n);
/* "1.2 GB", "340 MB", "12 KB", "512 B" (decimal units) */
void format_size(char *out, size_t cap, uint64_t bytes);
/* "3.2 s", "1m20s", "2h05m" */
void format_duration(char *out, size_t cap, double seconds);

/* ---- rejected rows by reason ---- */

/* The class of a reason, for counting and showing on a terminal: the "line N: " prefix the scanner
 * puts on it removed, numbers replaced by N, the reason that quotes a record id replaced by its fixed
 * words. */
void reason_class(const char *reason, char *out, size_t cap);
/* The reason itself without its "line N: " (or "item N: ") prefix (for the reject file, which has the
 * line in its own member). */
const char *reason_text(const char *reason);
/* The field or column the reason names (field "x", column "x"), into out; false if none. */
bool reason_column(const char *reason, char *out, size_t cap);

#define REASON_CLASSES_MAX 32
typedef struct {
    struct {
        char text[160];
        uint64_t count;
    } c[REASON_CLASSES_MAX];
    int n;
    uint64_t other; /* rows whose class did not fit in the table */
} reason_table;

void reason_table_add(reason_table *t, const char *reason, uint64_t count);
/* Lines "    COUNT  CLASS", most frequent first, at most max of them (then "    COUNT  other reasons"). */
void reason_table_print(buf *out, const reason_table *t, int max);

#endif
