/*
 * csv.h - stage 0 for CSV input: an incremental RFC 4180 reader that turns the rows of a CSV file (its
 * header row first) into record JSON objects, the text the rest of the pipeline takes (prepare.h:
 * record_prepare_csv). It is the one CSV reader of medstream: POST /v1/records with text/csv and
 * `medstream import --format csv` both use it.
 *
 * THE FORMAT (RFC 4180, and what it leaves open):
 *   - UTF-8, with or without a byte-order mark (skipped, only at the very start of the input);
 *   - rows end with CR LF or LF (mixed is fine); the last row may lack its line end;
 *   - cells are separated by ',' and may be quoted: "..." holds commas, line breaks (kept in the value as
 *     they are: CR LF stays CR LF) and quotes written twice (""); nothing may follow a closing quote but
 *     ',' or the line end. A quote inside an unquoted cell, and a CR outside quotes that does not end a
 *     line, are errors of that cell (the row is rejected, the reader goes on after it);
 *   - the header row names the columns: each name 1-1024 bytes of UTF-8 without NUL, unique, at most
 *     CSV_MAX_COLUMNS; the schema's "columns" maps a name to a field name (schema.h), which must be
 *     unique too. Names are taken exactly as written (case and spaces kept);
 *   - an empty line (nothing before its line end) is no row and is skipped; every other row must have
 *     exactly as many cells as the header;
 *   - a cell is a string field, whitespace kept; an empty cell ("" too) is an absent field. The schema's
 *     "types" makes a field a number (JSON number syntax: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?,
 *     written unquoted) or a boolean (true/false in any case, 1/0; written true/false); its "dob_format"
 *     (timefmt.h) converts the date-of-birth column to YYYY-MM-DD, and the date must be real.
 *
 * WHAT A ROW BECOMES: a JSON object of its non-empty cells in column order, {"name":"…","dob":"1990-01-31"},
 * strings escaped as RFC 8259 and JSON.stringify write them (\" \\ \b \f \n \r \t, other controls as
 * \u00XX with lowercase hex, everything else as the UTF-8 it is), so that a record sent as CSV and the same
 * record sent as JSON by a common serializer are the same record (same content hash, same derived id). The
 * objects of a batch sit in one buffer, each followed by '\n': the buffer is NDJSON, 4 KiB-aligned and
 * padded on request (csv_batch_padded) so that it can be the stored body of an ingest job as it is.
 *
 * REJECTED ROWS never stop the reading. Each rejection has a status, the 1-based column (0: the whole
 * row) and the row's physical line, line count and byte offset; csv_row_message makes the text. A row
 * whose extent is known (its quotes balance) is rejected alone: another number of cells than the header
 * (on one line), invalid UTF-8, a NUL byte, a bad number, boolean or date, a quote or CR in an unquoted
 * cell, an object over max_record. A row whose extent is unknown is rejected as a SPAN: an unterminated
 * quote (the quoted cell runs to the end of the input), text after a closing quote, a row longer than
 * max_record bytes (its line end included), or a row whose quoted cell holds a line break and that has
 * another number of cells than the header (a stray quote that a later quote happened to close: taken as
 * broken, so that it does not swallow the rows between). The reader then resynchronizes: it tries each
 * following physical line as a row, and the first line that is on its own a well-formed row (quotes
 * balanced within the line, no quote inside an unquoted cell nor a stray CR, as many cells as the header)
 * ends the span and is read as a row again; the span is reported as one rejected row covering lines
 * a..b. (So a good row that itself spans several lines, right after a broken one, is inside the span;
 * every line but an empty one is in a row or in a reported span, never dropped unreported.)
 *
 * INCREMENTAL: csv_convert takes any prefix of the rest of the input and consumes only whole rows (and
 * whole rejected lines), returning how many bytes it consumed; the caller keeps the unconsumed tail, puts
 * more input after it and calls again, with final set once the input ends. The same input split at any
 * byte positions gives the same rows as in one call. Memory is bounded: a row never needs more than
 * max_record bytes of input to be decided, so a caller that passes at least max_record bytes (or the last
 * bytes, with final) always makes progress; rows that were incomplete at the end of a call are scanned
 * again from their start on the next (pass large chunks, a few MiB, to keep that rescanning small).
 *
 * Contract: pure (no I/O, no global state); a reader belongs to one thread at a time; messages name lines,
 * byte offsets, columns and column names, never a cell's value (values are PHI). What it must never do:
 * buffer more than max_record bytes of a row, read outside [data, data+len), or put a byte of a value into
 * a status or message.
 */
#ifndef MS_CSV_H
#define MS_CSV_H

#include "base/util.h"
#include "pipeline/schema.h"

#define CSV_MAX_COLUMNS 1024 /* a record has at most RECORD_MAX_FIELDS (1024) fields */

typedef enum {
    CSV_STRING = 0,
    CSV_NUMBER,  /* the schema's "types": number */
    CSV_BOOLEAN, /* the schema's "types": boolean */
    CSV_DATE,    /* the date-of-birth field when the schema has a "dob_format" */
} csv_type;

typedef struct {
    const char *name;  /* the column's name in the header (decoded, NUL-terminated) */
    const char *field; /* the record field it becomes (after the schema's "columns"), NUL-terminated */
    csv_type type;
    const char *key; /* "field": as JSON text (private) */
    uint32_t key_len;
} csv_column;

typedef struct {
    csv_column *columns;
    uint32_t ncolumns;
    uint64_t lines;         /* physical lines the header row took */
    uint64_t bytes;         /* bytes of input it took: a byte-order mark, the row and its line end */
    const char *dob_format; /* for CSV_DATE columns (a copy of the schema's) */
    char *mem;              /* private: the names, fields, keys and dob_format */
    size_t key_bytes;       /* private: the keys' lengths + 3 each, summed */
} csv_header;

/* Read the header row at the start of the input (data, len: its first bytes; final: they are all of it).
 * MS_OK and *used > 0: h is filled and *used == h->bytes. MS_OK and *used == 0: the header row is not
 * complete yet and !final; call again with more bytes (at most max_record are ever needed). MS_EINVAL
 * with e naming the problem and the column number (h left empty): no header row (empty input, or an
 * empty first line), a quote error, invalid UTF-8 or NUL, an empty name, a name longer than 1024 bytes,
 * a name (or the field it maps to) twice, more than CSV_MAX_COLUMNS columns, or a row over max_record
 * bytes. csv_header_free is safe after any result. */
ms_code csv_header_parse(const schema *s, const char *data, size_t len, bool final, size_t max_record, csv_header *h,
                         size_t *used, ms_err *e);
void csv_header_free(csv_header *h);

/* The reason a row was rejected (csv_status_text gives its text). */
typedef enum {
    CSV_ROW_OK = 0,
    /* the row alone (its extent is known) */
    CSV_BAD_CELLS,         /* another number of cells than the header has */
    CSV_BAD_UTF8,          /* a cell is not valid UTF-8 */
    CSV_BAD_NUL,           /* a cell holds a NUL byte */
    CSV_BAD_QUOTE_IN_CELL, /* a quote inside an unquoted cell */
    CSV_BAD_CR,            /* a carriage return outside quotes that does not end the line */
    CSV_BAD_NUMBER,        /* a number column's cell is not a JSON number (or beyond PostgreSQL's range) */
    CSV_BAD_BOOLEAN,       /* a boolean column's cell is not true/false/1/0 */
    CSV_BAD_DATE_FORMAT,   /* the dob cell does not match the schema's dob_format */
    CSV_BAD_DATE,          /* the dob cell matches it but is not a real date */
    CSV_RECORD_TOO_LARGE,  /* the row's JSON object is longer than max_record bytes */
    /* a span (the extent is unknown; the reader resynchronized after it) */
    CSV_UNTERMINATED_QUOTE, /* a quoted cell runs to the end of the input */
    CSV_TEXT_AFTER_QUOTE,   /* something other than ',' or the line end after a closing quote */
    CSV_ROW_TOO_LARGE,      /* more than max_record bytes without the row ending */
    CSV_CELLS_ACROSS_LINES, /* a row whose quoted cell holds a line break has another number of cells than the
                               header: its quotes are taken as broken (cells holds how many) */
} csv_status;

const char *csv_status_text(csv_status s);
/* Was the row rejected as a span (its end found by resynchronization)? */
static inline bool csv_status_is_span(csv_status s) { return s >= CSV_UNTERMINATED_QUOTE; }

typedef struct {
    uint64_t line;   /* the physical line (1-based, the header's lines counted) where it starts */
    uint64_t nlines; /* physical lines it covers: line .. line + nlines - 1 */
    uint64_t offset; /* byte offset of its first byte in the input (a byte-order mark counted) */
    uint64_t bytes;  /* bytes of input it covers, its line end included */
    csv_status status;
    uint32_t column; /* rejected: the 1-based column of the problem, 0 for the whole row (a span's may be
                        past the header's columns: the broken row had more cells) */
    uint32_t cells;  /* CSV_BAD_CELLS, CSV_CELLS_ACROSS_LINES: the number of cells found */
    uint32_t json_len;
    size_t json; /* CSV_ROW_OK: the object is json_len bytes at batch->json + json */
} csv_row;

typedef struct {
    csv_row *rows; /* in input order; each call of csv_convert appends */
    uint32_t n, cap;
    uint32_t rejected;
    char *json; /* the valid rows' objects, each followed by '\n' (so: NDJSON); 4 KiB-aligned */
    size_t json_len, json_cap;
} csv_batch;

typedef struct {
    const csv_header *header;
    size_t max_record;
    uint64_t line;   /* physical line of the next byte to read */
    uint64_t offset; /* byte offset in the input of the next byte to read */
    /* private: a rejected span being resynchronized */
    bool resync, skip_line; /* skip_line: the rest of the current physical line belongs to the span */
    bool mid_line;          /* bytes of line `line` were consumed (it counts in a span at the input's end) */
    csv_row span;
    void *cells; /* scratch: the cells of one row */
} csv_reader;

/* A reader of the rows after header h (line h->lines + 1, offset h->bytes); max_record: bytes of a row and
 * of its JSON object, at most (use scan_config's). h must outlive it. */
void csv_reader_init(csv_reader *r, const csv_header *h, size_t max_record);
/* Go on from another position of the same input (a checkpoint: line and offset of a reader that was
 * idle); the next call of csv_convert gets the input from that offset on. */
void csv_reader_seek(csv_reader *r, uint64_t line, uint64_t offset);
/* No rejected span pending: (r->line, r->offset) is the start of a row, a position to resume from. */
static inline bool csv_reader_idle(const csv_reader *r) { return !r->resync; }
void csv_reader_free(csv_reader *r);

/* Convert the rows in [data, data + len), the input from r->offset on, appending them to out; final: the
 * input ends at data + len. Returns the bytes consumed (r->offset and r->line advance by them): every whole
 * row and rejected line; the caller passes the rest again, followed by more input. With final, all of len
 * is consumed and a pending span is reported. */
size_t csv_convert(csv_reader *r, const char *data, size_t len, bool final, csv_batch *out);

/* The text of a rejected row for a bulk answer or a reject file: "line 7, byte 1234, column 3 (\"dob\"): is
 * not a number", "lines 7-9, byte 1234, column 2 (\"notes\"): an unterminated quote (the rows of these lines
 * were not read)", "line 8, byte 2000: 4 cells, the header has 5". Never a value. Returns strlen of out
 * (cut to cap - 1). */
size_t csv_row_message(const csv_header *h, const csv_row *row, char *out, size_t cap);

/* Zero-fill out->json up to the next multiple of 4096 bytes and return that length: the buffer is then a
 * body store_append_body writes without a copy. */
size_t csv_batch_padded(csv_batch *b);
/* Empty the batch, keeping its memory (a loop over chunks). */
void csv_batch_reset(csv_batch *b);
void csv_batch_free(csv_batch *b);

#endif
