/*
 * rows.h - an import's input stream cut into rows: NDJSON lines, or CSV records (pipeline/csv.h, after
 * the header row; a quoted cell may hold line breaks), each with the physical line it starts on and its
 * byte offset in the stream; a CSV row also with the record object it makes, or the CSV reader's reason
 * for rejecting it.
 *
 * DESIGN: the stream is read in chunks of a few MiB into one buffer; a row is handed out as a span of
 * that buffer, valid until the next call. Blank lines (only spaces, tabs and CRs) are skipped but
 * counted. A UTF-8 byte-order mark at the very start of the stream is skipped. A row longer than the
 * reader's limit is not held: its first bytes are kept (for the reject file), the rest is read and
 * dropped up to its line end, and it is handed out with its full length, so that memory stays bounded
 * whatever the file holds.
 *
 * Contract: one thread at a time. Positions are the stream's (input.h): a row's `end` is where the
 * next one may start, which is what a checkpoint records; resuming there (row_reader_seek) yields the
 * same rows with the same lines and offsets as reading from the start.
 *
 * What it must never do: hold more than its buffer (a chunk, or the limit plus a chunk), or put a
 * byte of the file into a message.
 */
#ifndef MS_IMPORT_ROWS_H
#define MS_IMPORT_ROWS_H

#include "import/input.h"
#include "pipeline/csv.h"

typedef enum { IMPORT_NDJSON, IMPORT_CSV } import_format;

/* Where a row ends, found incrementally: a format's scanner goes on from s->scanned over [p, p + n) (the
 * bytes before s->scanned were seen by an earlier call, with the state it left in s) and returns the
 * row's length with its line end, or 0 if the row goes on past p + n (at_eof: the stream ends at p + n,
 * so what is there is the row). s->newlines counts the line breaks inside the row (CSV records whose
 * quoted fields hold some). The reader zeroes s before each row, and may drop bytes from the front of a
 * row it is cutting, lowering s->scanned by as many. */
typedef struct {
    size_t scanned;
    uint64_t newlines;
    int state; /* the format's own (CSV: inside quotes) */
} row_scan;
typedef size_t (*row_end_fn)(row_scan *s, const char *p, size_t n, bool at_eof);

typedef struct {
    const char *text; /* the row without its line end (\n or \r\n); valid until the next call */
    size_t len;       /* bytes in text */
    size_t full_len;  /* the row's length in the file (without its line end) */
    uint64_t line;    /* the physical line it starts on, 1-based */
    uint64_t lines;   /* physical lines it spans (1 unless a quoted field holds line breaks) */
    uint64_t offset;  /* stream byte offset of its first byte */
    uint64_t end;     /* stream byte offset after its line end: where the next row may start */
    bool cut;         /* longer than the reader keeps (len < full_len): text holds its first bytes */
    /* CSV */
    const char *json; /* the record object it makes (valid until the next call), or NULL: rejected */
    size_t json_len;
    const char *error; /* the CSV reader's reason when rejected (csv_row_message; until the next call) */
    uint32_t column;   /* the 1-based column the reason is about (0: the row) */
} import_row;

typedef struct row_reader row_reader;

/* Rows of in, each cut to at most max_row bytes (row_end: the format's; NULL: lines, as NDJSON).
 * The reader does not own in. */
row_reader *row_reader_new(import_input *in, row_end_fn row_end, size_t max_row);
void row_reader_free(row_reader *r);

/* Rows of a CSV stream: its header row is read first (row_reader_csv_start), then every further row is
 * converted to the record object it makes with the schema's columns, types and date format. */
row_reader *row_reader_new_csv(import_input *in, const schema *sc, size_t max_record);
/* Read the CSV header row at the start of the stream. Errors: MS_EINVAL the header cannot be read
 * (csv_header_parse names the column); the input's. */
ms_code row_reader_csv_start(row_reader *r, ms_err *e);
const csv_header *row_reader_csv_header(const row_reader *r);
/* The header row's bytes as in the file (its line end included, a byte-order mark left out). */
const char *row_reader_csv_header_text(const row_reader *r, size_t *len);

/* The next row that is not blank; *eof true (and *row untouched) at the end of the stream. Errors: the
 * input's (input.h). */
ms_code row_reader_next(row_reader *r, import_row *row, bool *eof, ms_err *e);

/* Continue from stream offset `offset`, which is physical line `line` (both from a row's end, or
 * 0/1 for the start): the rows before it are not read again (a plain file seeks). Only forward.
 * Errors: as import_input_skip. */
ms_code row_reader_seek(row_reader *r, uint64_t offset, uint64_t line, ms_err *e);

/* The stream offset and line after the last row handed out (or the seek): where reading goes on. */
uint64_t row_reader_offset(const row_reader *r);
uint64_t row_reader_line(const row_reader *r);

/* NDJSON's row end: the next '\n' (or the end of the stream). */
size_t row_end_line(row_scan *s, const char *p, size_t n, bool at_eof);

#endif
