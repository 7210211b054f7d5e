/*
 * rows.c - an import's stream cut into rows (see rows.h).
 *
 * DESIGN: one buffer of max_row + two read chunks: unread bytes are [pos, len), buf[pos] being stream
 * offset `offset` on physical line `line`. A row's end is searched incrementally by the format's
 * scanner (row_scan), so a row that arrives over many reads is scanned once; when no end is found the
 * unread bytes move to the front and another chunk is read behind them. A row that outgrows max_row is
 * cut: its first bytes are copied aside and the rest is scanned and dropped a buffer at a time.
 */
#include "import/rows.h"

#include <stdlib.h>
#include <string.h>

#define READ_CHUNK ((size_t)4 << 20)
#define CUT_KEEP ((size_t)64 << 10) /* of a row over the limit, the bytes kept for the reject file */

struct row_reader {
    import_input *in;
    row_end_fn row_end;
    size_t max_row;
    char *buf;
    size_t cap, pos, len;
    uint64_t offset, line; /* of buf[pos] */
    bool eof;              /* the input has no more bytes than [pos, len) */
    bool bom_checked;
    char *cut; /* the kept head of a row over the limit */
    size_t cut_len;
    /* CSV (csv.h): the header, the reader, and the rows of the last conversion being handed out */
    bool csv;
    const schema *schema;
    size_t max_record;
    csv_header header;
    char *header_text;
    size_t header_len;
    csv_reader creader;
    csv_batch converted;
    uint32_t next_row;
    size_t converted_bytes;  /* consumed by the last conversion: dropped once its rows are handed out */
    uint64_t converted_base; /* stream offset of buf[pos] at that conversion */
    bool csv_done;           /* the final conversion was made */
    char *span_head;         /* the first bytes of a rejected span that began in an earlier conversion */
    size_t span_len;
    uint64_t span_offset;
    char message[512];
};

size_t row_end_line(row_scan *s, const char *p, size_t n, bool at_eof)
{
    const char *nl = s->scanned < n ? memchr(p + s->scanned, '\n', n - s->scanned) : NULL;
    if (nl) return (size_t)(nl - p) + 1;
    s->scanned = n;
    return at_eof ? n : 0;
}

row_reader *row_reader_new(import_input *in, row_end_fn row_end, size_t max_row)
{
    row_reader *r = ms_calloc(1, sizeof *r);
    r->in = in;
    r->row_end = row_end ? row_end : row_end_line;
    r->max_row = max_row;
    r->cap = max_row + 2 * READ_CHUNK;
    r->buf = ms_malloc(r->cap);
    r->line = 1;
    r->cut = ms_malloc(CUT_KEEP < max_row ? CUT_KEEP : max_row + 1);
    return r;
}

void row_reader_free(row_reader *r)
{
    if (!r) return;
    if (r->csv) {
        csv_reader_free(&r->creader);
        csv_batch_free(&r->converted);
        csv_header_free(&r->header);
        free(r->header_text);
        free(r->span_head);
    }
    free(r->buf);
    free(r->cut);
    free(r);
}

uint64_t row_reader_offset(const row_reader *r) { return r->offset; }
uint64_t row_reader_line(const row_reader *r) { return r->line; }

/* Move the unread bytes to the front and read more behind them (eof when there are none). */
static ms_code fill(row_reader *r, ms_err *e)
{
    if (r->pos) {
        memmove(r->buf, r->buf + r->pos, r->len - r->pos);
        r->len -= r->pos;
        r->pos = 0;
    }
    size_t room = r->cap - r->len, got = 0;
    if (room > READ_CHUNK) room = READ_CHUNK;
    ms_code rc = import_input_read(r->in, r->buf + r->len, room, &got, e);
    if (rc != MS_OK) return rc;
    r->len += got;
    if (got == 0) r->eof = true;
    return MS_OK;
}

/* Drop n unread bytes (a row handed out or skipped, or the dropped middle of a cut row). */
static void consume(row_reader *r, size_t n)
{
    r->pos += n;
    r->offset += n;
}

static bool blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r') return false;
    return true;
}

/* The length of a row's text without its line end (\n, or \r\n). */
static size_t without_line_end(const char *p, size_t n)
{
    if (n && p[n - 1] == '\n') n--;
    if (n && p[n - 1] == '\r') n--;
    return n;
}

/* A row over the limit: keep its head, scan and drop the rest up to its end. On return the row is
 * consumed and *row describes it (text = the kept head). */
static ms_code cut_row(row_reader *r, row_scan *s, import_row *row, ms_err *e)
{
    size_t keep = CUT_KEEP < r->max_row ? CUT_KEEP : r->max_row;
    memcpy(r->cut, r->buf + r->pos, keep);
    r->cut_len = keep;
    row->offset = r->offset;
    row->line = r->line;
    uint64_t full = 0;
    char last2[2] = {0, 0}; /* the last two bytes of the row, for its line end */
    for (;;) {
        size_t avail = r->len - r->pos;
        size_t rl = r->row_end(s, r->buf + r->pos, avail, r->eof);
        size_t take = rl ? rl : avail;
        if (take >= 2) {
            last2[0] = r->buf[r->pos + take - 2];
            last2[1] = r->buf[r->pos + take - 1];
        } else if (take == 1) {
            last2[0] = last2[1];
            last2[1] = r->buf[r->pos];
        }
        full += take;
        consume(r, take);
        if (rl || (r->eof && r->pos == r->len)) break;
        s->scanned = 0; /* everything scanned was dropped */
        ms_code rc = fill(r, e);
        if (rc != MS_OK) return rc;
    }
    if (full && last2[1] == '\n') full -= (full >= 2 && last2[0] == '\r') ? 2 : 1;
    row->text = r->cut;
    row->len = r->cut_len;
    row->full_len = (size_t)full;
    row->cut = true;
    row->json = row->error = NULL;
    row->json_len = 0;
    row->column = 0;
    row->lines = 1 + s->newlines;
    r->line += row->lines;
    row->end = r->offset;
    return MS_OK;
}

static ms_code next_csv(row_reader *r, import_row *row, bool *eof, ms_err *e);

ms_code row_reader_next(row_reader *r, import_row *row, bool *eof, ms_err *e)
{
    *eof = false;
    if (r->csv) return next_csv(r, row, eof, e);
    for (;;) {
        ms_code rc;
        if (!r->bom_checked) {
            while (r->len - r->pos < 3 && !r->eof)
                if ((rc = fill(r, e)) != MS_OK) return rc;
            if (r->offset == 0 && r->len - r->pos >= 3 && memcmp(r->buf + r->pos, "\xEF\xBB\xBF", 3) == 0)
                consume(r, 3);
            r->bom_checked = true;
        }
        row_scan s = {0};
        size_t rl;
        for (;;) {
            size_t avail = r->len - r->pos;
            rl = r->row_end(&s, r->buf + r->pos, avail, r->eof);
            if (rl) break;
            if (r->eof) { /* nothing left */
                *eof = true;
                return MS_OK;
            }
            if (avail > r->max_row) {
                if ((rc = cut_row(r, &s, row, e)) != MS_OK) return rc;
                return MS_OK;
            }
            if ((rc = fill(r, e)) != MS_OK) return rc;
        }
        const char *text = r->buf + r->pos;
        size_t len = without_line_end(text, rl);
        uint64_t lines = 1 + s.newlines;
        if (blank(text, len)) {
            consume(r, rl);
            r->line += lines;
            continue;
        }
        row->text = text;
        row->len = row->full_len = len;
        row->cut = false;
        row->json = row->error = NULL;
        row->json_len = 0;
        row->column = 0;
        row->line = r->line;
        row->lines = lines;
        row->offset = r->offset;
        consume(r, rl);
        r->line += lines;
        row->end = r->offset;
        return MS_OK;
    }
}

ms_code row_reader_seek(row_reader *r, uint64_t offset, uint64_t line, ms_err *e)
{
    if (offset < r->offset) return ms_fail(e, MS_EINVAL, "import: cannot seek back in the input");
    uint64_t buffered_end = r->offset + (r->len - r->pos);
    if (offset <= buffered_end) {
        consume(r, (size_t)(offset - r->offset));
    } else {
        ms_code rc = import_input_skip(r->in, offset, e);
        if (rc != MS_OK) return rc;
        r->pos = r->len = 0;
        r->offset = offset;
        r->eof = false;
    }
    r->line = line;
    if (offset > 0) r->bom_checked = true;
    if (r->csv) {
        csv_reader_seek(&r->creader, line, offset);
        csv_batch_reset(&r->converted);
        r->next_row = 0;
        r->converted_bytes = 0;
        r->csv_done = false;
    }
    return MS_OK;
}

/* ---- CSV ---- */

row_reader *row_reader_new_csv(import_input *in, const schema *sc, size_t max_record)
{
    row_reader *r = row_reader_new(in, NULL, max_record);
    r->csv = true;
    r->schema = sc;
    r->max_record = max_record;
    r->bom_checked = true; /* the header's reader skips it */
    r->span_head = ms_malloc(CUT_KEEP);
    return r;
}

const csv_header *row_reader_csv_header(const row_reader *r) { return &r->header; }

const char *row_reader_csv_header_text(const row_reader *r, size_t *len)
{
    *len = r->header_len;
    return r->header_text;
}

ms_code row_reader_csv_start(row_reader *r, ms_err *e)
{
    for (;;) {
        size_t used = 0;
        ms_code rc =
            csv_header_parse(r->schema, r->buf + r->pos, r->len - r->pos, r->eof, r->max_record, &r->header, &used, e);
        if (rc != MS_OK) return rc;
        if (used) {
            const char *text = r->buf + r->pos;
            size_t len = used;
            if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) text += 3, len -= 3;
            r->header_text = ms_malloc(len + 1);
            memcpy(r->header_text, text, len);
            r->header_text[len] = 0;
            r->header_len = len;
            consume(r, used);
            r->line = 1 + r->header.lines;
            csv_reader_init(&r->creader, &r->header, r->max_record);
            return MS_OK;
        }
        if ((rc = fill(r, e)) != MS_OK) return rc;
    }
}

/* Keep the first bytes of a span still pending at the end of a conversion (its row comes later), once the
 * conversion's rows are handed out and before its bytes are dropped. */
static void keep_span_head(row_reader *r)
{
    if (!r->creader.resync) return;
    uint64_t start = r->creader.span.offset, base = r->converted_base, end = base + r->converted_bytes;
    if (start != r->span_offset || r->span_len == 0) { /* a new span */
        r->span_offset = start;
        r->span_len = 0;
    }
    uint64_t from = start + r->span_len; /* the next byte of the span not kept yet */
    if (from < base) from = base;
    while (r->span_len < CUT_KEEP && from < end) {
        size_t n = end - from < CUT_KEEP - r->span_len ? (size_t)(end - from) : CUT_KEEP - r->span_len;
        memcpy(r->span_head + r->span_len, r->buf + r->pos + (from - base), n);
        r->span_len += n;
        from += n;
    }
}

/* The next converted row, converting more of the stream when those of the last conversion are out. */
static ms_code next_csv(row_reader *r, import_row *row, bool *eof, ms_err *e)
{
    for (;;) {
        if (r->next_row < r->converted.n) {
            const csv_row *c = &r->converted.rows[r->next_row++];
            const char *text;
            size_t have; /* bytes of the row at text: all of it, or the kept head of a long span */
            if (c->offset >= r->converted_base) { /* within the buffer */
                text = r->buf + r->pos + (c->offset - r->converted_base);
                have = (size_t)c->bytes;
            } else { /* a span that began in an earlier conversion: its kept head, topped up from here */
                uint64_t kept_to = c->offset + r->span_len, row_end = c->offset + c->bytes;
                if (r->span_len < CUT_KEEP && kept_to >= r->converted_base && kept_to < row_end) {
                    size_t n = CUT_KEEP - r->span_len;
                    if (n > row_end - kept_to) n = (size_t)(row_end - kept_to);
                    memcpy(r->span_head + r->span_len, r->buf + r->pos + (kept_to - r->converted_base), n);
                    r->span_len += n;
                }
                text = r->span_head;
                have = r->span_len < c->bytes ? r->span_len : (size_t)c->bytes;
                r->span_len = 0;
            }
            row->full_len = have == c->bytes ? without_line_end(text, have) : (size_t)c->bytes;
            row->len = have == c->bytes ? row->full_len : have;
            row->cut = row->len < row->full_len;
            row->text = text;
            row->line = c->line;
            row->lines = c->nlines;
            row->offset = c->offset;
            row->end = c->offset + c->bytes;
            row->column = c->column;
            row->json = c->status == CSV_ROW_OK ? r->converted.json + c->json : NULL;
            row->json_len = c->status == CSV_ROW_OK ? c->json_len : 0;
            row->error = NULL;
            if (c->status != CSV_ROW_OK) {
                csv_row_message(&r->header, c, r->message, sizeof r->message);
                row->error = r->message;
            }
            return MS_OK;
        }
        /* every row of the last conversion handed out: keep the head of a span still pending (only now: a span
         * that ended in that conversion was handed out from the head kept so far, and a new one's head must not
         * replace it before), drop the conversion's bytes, convert more */
        keep_span_head(r);
        consume(r, r->converted_bytes);
        r->converted_bytes = 0;
        csv_batch_reset(&r->converted);
        r->next_row = 0;
        if (r->csv_done) {
            *eof = true;
            return MS_OK;
        }
        r->converted_base = r->offset;
        size_t used = csv_convert(&r->creader, r->buf + r->pos, r->len - r->pos, r->eof, &r->converted);
        r->converted_bytes = used;
        r->line = r->creader.line;
        if (r->eof) {
            r->csv_done = true;
            continue;
        }
        if (used == 0 && r->converted.n == 0) {
            ms_code rc = fill(r, e);
            if (rc != MS_OK) return rc;
        }
    }
}
