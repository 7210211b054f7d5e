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
    row->lines = 1 + s->newlines;
    r->line += row->lines;
    row->end = r->offset;
    return MS_OK;
}

ms_code row_reader_next(row_reader *r, import_row *row, bool *eof, ms_err *e)
{
    *eof = false;
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
    return MS_OK;
}
