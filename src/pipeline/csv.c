/*
 * csv.c - the incremental RFC 4180 reader (see csv.h for the format, the rejections and the contract).
 *
 * DESIGN: two passes over each row, the second one cache-hot. The tokenizer finds the row's extent and
 * its cells' spans (8 bytes at a time while no delimiter, quote or CR is among them; memchr for the
 * closing quote), deciding everything within max_record bytes of the row's start: a row that has not
 * ended by then is too large, and a row that has not ended before the end of a non-final chunk waits for
 * the next call. Then, for a row with as many cells as the header, the converter writes the JSON object
 * straight into the batch's buffer (space for the worst case reserved once per row): it validates UTF-8,
 * escapes, and checks typed cells, 8 bytes at a time while none needs escaping. A cell's problem takes
 * the row's object back out of the buffer.
 *
 * Resynchronization (csv.h) tries single physical lines: a candidate that would continue past its line
 * end in quotes fails at once, so every candidate costs at most its own line and resynchronizing is
 * linear in the skipped bytes.
 *
 * What it must never do: read outside [data, data + len), look more than max_record bytes past a row's
 * start, or write a byte of a cell into a status or message.
 */
#include "pipeline/csv.h"

#include "base/json_scan.h"
#include "base/timefmt.h"
#include "pipeline/record_scan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

_Static_assert(CSV_MAX_COLUMNS == RECORD_MAX_FIELDS, "a row is a record: as many columns as a record has fields");
_Static_assert(SCHEMA_FIELD_MAX == RECORD_KEY_MAX, "a column's field name is a record's field name");

#define ALIGN 4096
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* ---- bytes ---- */

static inline uint64_t load8(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Nonzero if a byte of w equals the byte repeated in pat (exact as a "whether": a false positive only
 * ever sits above a true one). */
static inline uint64_t has_byte(uint64_t w, uint64_t pat)
{
    uint64_t x = w ^ pat;
    return (x - ONES) & ~x & HIGHS;
}

/* Nonzero if a byte of w is a delimiter of an unquoted cell, or a quote or CR. */
static inline uint64_t has_unquoted_special(uint64_t w)
{
    return has_byte(w, ONES * ',') | has_byte(w, ONES * '\n') | has_byte(w, ONES * '\r') | has_byte(w, ONES * '"');
}

/* Nonzero if a byte of w needs more than a copy into a JSON string: < 0x20, '"', '\\' or >= 0x80. */
static inline uint64_t needs_escape(uint64_t w)
{
    uint64_t lt = (w - ONES * 0x20) & ~w;
    return (lt | has_byte(w, ONES * '"') | has_byte(w, ONES * '\\') | w) & HIGHS;
}

/* The length of the valid UTF-8 sequence (RFC 3629) at p, or 0. */
static size_t utf8_seq_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t n = (size_t)(end - p);
    if (c >= 0xC2 && c <= 0xDF) return n >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && p[1] < 0xA0) return 0; /* overlong */
        if (c == 0xED && p[1] > 0x9F) return 0; /* a surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && p[1] < 0x90) return 0; /* overlong */
        if (c == 0xF4 && p[1] > 0x8F) return 0; /* past U+10FFFF */
        return 4;
    }
    return 0;
}

/* Write cell text [s, s+n) as the inside of a JSON string at *w (room for 6n bytes). In a quoted cell a
 * quote is always the first of a doubled pair (the tokenizer saw to it) and stands for one quote. */
static csv_status escape(char **w, const char *s, size_t n, bool quoted)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    char *o = *w;
    while (p < end) {
        while (end - p >= 8) {
            uint64_t v = load8((const char *)p);
            if (needs_escape(v)) break;
            memcpy(o, &v, 8);
            o += 8, p += 8;
        }
        if (p == end) break;
        unsigned c = *p;
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *o++ = (char)c, p++;
        } else if (c >= 0x80) {
            size_t k = utf8_seq_len(p, end);
            if (!k) return CSV_BAD_UTF8;
            memcpy(o, p, k);
            o += k, p += k;
        } else if (c == '"') {
            *o++ = '\\', *o++ = '"';
            p += quoted ? 2 : 1;
        } else if (c == '\\') {
            *o++ = '\\', *o++ = '\\', p++;
        } else if (c == 0) {
            return CSV_BAD_NUL;
        } else {
            *o++ = '\\';
            switch (c) {
            case '\b': *o++ = 'b'; break;
            case '\f': *o++ = 'f'; break;
            case '\n': *o++ = 'n'; break;
            case '\r': *o++ = 'r'; break;
            case '\t': *o++ = 't'; break;
            default: *o++ = 'u', *o++ = '0', *o++ = '0', *o++ = hex[c >> 4], *o++ = hex[c & 15];
            }
            p++;
        }
    }
    *w = o;
    return CSV_ROW_OK;
}

/* ---- the tokenizer ---- */

typedef struct {
    size_t start, len; /* from the row's first byte; a quoted cell's content is inside its quotes */
    uint8_t quoted;
    uint8_t doubled; /* a quoted cell with "" inside */
    uint8_t bad;     /* CSV_BAD_QUOTE_IN_CELL or CSV_BAD_CR: the first syntax problem of an unquoted cell */
} cell;

typedef enum {
    TOK_ROW,          /* a whole row */
    TOK_MORE,         /* not ended before the end of a non-final chunk */
    TOK_UNTERMINATED, /* a quoted cell runs to the end of the input */
    TOK_AFTER_QUOTE,  /* text after a closing quote */
    TOK_TOO_LARGE,    /* not ended within the limit */
    TOK_MULTILINE,    /* single_line: a quoted cell goes past the line end */
} tok_result;

typedef struct {
    size_t len;      /* bytes of the row, its line end included */
    uint64_t nl;     /* line feeds inside quotes */
    uint32_t ncells; /* cells found (only the first maxcells are stored) */
    uint32_t column; /* the column of a TOK_UNTERMINATED, TOK_AFTER_QUOTE or TOK_TOO_LARGE */
} tok_row;

static bool unquoted_special(unsigned char c) { return c == ',' || c == '\n' || c == '\r' || c == '"'; }

/* One row at row (the input goes on to end). Looks at most limit bytes; a row must end within them. */
static tok_result tokenize(const char *row, const char *end, bool final, size_t limit, bool single_line, cell *cells,
                           uint32_t maxcells, tok_row *o)
{
    bool at_limit = (size_t)(end - row) >= limit;
    const char *w = at_limit ? row + limit : end; /* the window: nothing at or past w is read */
    /* what the end of the window means: a row that has not ended is too large, or waits for more input,
     * or (final) ends with the input */
    tok_result cut = at_limit ? TOK_TOO_LARGE : final ? TOK_ROW : TOK_MORE;
    const char *q = row;
    o->nl = 0;
    o->ncells = 0;
    o->column = 0;
    for (;;) {
        cell c = {0};
        uint32_t column = o->ncells + 1;
        if (q < w && *q == '"') {
            c.quoted = 1;
            const char *s = ++q;
            for (;;) {
                const char *dq = memchr(q, '"', (size_t)(w - q));
                const char *stop = dq ? dq : w;
                for (const char *lf = q; (lf = memchr(lf, '\n', (size_t)(stop - lf))) != NULL; lf++) {
                    if (single_line) return o->column = column, TOK_MULTILINE;
                    o->nl++;
                }
                if (!dq) { /* still inside the quotes at the window's end */
                    o->column = column;
                    return cut == TOK_ROW ? TOK_UNTERMINATED : cut;
                }
                q = dq + 1;
                if (q < w && *q == '"') { /* "" stands for one quote */
                    c.doubled = 1;
                    q++;
                    continue;
                }
                break; /* the closing quote (or the window ends right after a quote) */
            }
            c.start = (size_t)(s - row);
            c.len = (size_t)(q - 1 - s);
            if (q < w && *q != ',' && *q != '\n' && *q != '\r') return o->column = column, TOK_AFTER_QUOTE;
        } else {
            c.start = (size_t)(q - row);
            for (;;) {
                while (w - q >= 8 && !has_unquoted_special(load8(q)))
                    q += 8;
                while (q < w && !unquoted_special((unsigned char)*q))
                    q++;
                if (q < w && *q == '"') {
                    if (!c.bad) c.bad = CSV_BAD_QUOTE_IN_CELL;
                    q++;
                    continue;
                }
                if (q < w && *q == '\r' && q + 1 < w && q[1] != '\n') { /* a CR that ends no line */
                    if (!c.bad) c.bad = CSV_BAD_CR;
                    q++;
                    continue;
                }
                break;
            }
            c.len = (size_t)(q - row) - c.start;
        }
        /* q: the cell's delimiter, or the window's end */
        if (o->ncells < maxcells) cells[o->ncells] = c;
        o->ncells++;
        if (q == w || (*q == '\r' && q + 1 == w)) { /* the window ends (before a line end, or inside a CR LF) */
            if (cut != TOK_ROW) return o->column = column, cut;
            o->len = (size_t)(w - row); /* the input ends: so does the row (a CR at the very end ends it) */
            return TOK_ROW;
        }
        if (*q == ',') {
            q++;
            continue;
        }
        if (*q == '\r') {
            if (q[1] != '\n') return o->column = column, TOK_AFTER_QUOTE; /* after a quote; unquoted took it */
            q++;
        }
        o->len = (size_t)(q + 1 - row); /* q: the line feed */
        return TOK_ROW;
    }
}

/* ---- the header ---- */

/* A column name for a message: cut to 64 bytes (not inside a UTF-8 sequence), controls shown as '?'. */
static const char *name_text(const char *s, size_t n, char out[72])
{
    size_t cut = n;
    if (cut > 64) {
        cut = 64;
        while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
            cut--;
    }
    for (size_t i = 0; i < cut; i++)
        out[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    memcpy(out + cut, cut < n ? "..." : "", cut < n ? 4 : 1);
    return out;
}

void csv_header_free(csv_header *h)
{
    free(h->columns);
    free(h->mem);
    memset(h, 0, sizeof *h);
}

/* Offsets into the header's text block while it grows; pointers are set once it is complete. */
typedef struct {
    size_t name, field, key;
    uint32_t key_len;
    csv_type type;
} column_place;

static bool is_bom_prefix(const char *d, size_t n) { return memcmp(d, "\xEF\xBB\xBF", n < 3 ? n : 3) == 0; }

ms_code csv_header_parse(const schema *s, const char *data, size_t len, bool final, size_t max_record, csv_header *h,
                         size_t *used, ms_err *e)
{
    memset(h, 0, sizeof *h);
    *used = 0;
    size_t bom = 0;
    if (len < 3 && !final && is_bom_prefix(data, len)) return MS_OK; /* a byte-order mark may be coming */
    if (len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0) bom = 3;
    const char *row = data + bom, *end = data + len;
    if (row == end) {
        if (!final) return MS_OK;
        return ms_fail(e, MS_EINVAL, "CSV: no header row (the input is empty)");
    }
    if (*row == '\n' || (*row == '\r' && (row + 1 == end || row[1] == '\n'))) {
        if (*row == '\r' && row + 1 == end && !final) return MS_OK;
        return ms_fail(e, MS_EINVAL, "CSV header: the first line is empty (the header row names the columns)");
    }
    cell *cells = ms_malloc(sizeof(cell) * (CSV_MAX_COLUMNS + 1));
    column_place *place = NULL;
    buf mem = {0};
    char name[72], other[72];
    ms_code rc = MS_OK;
    tok_row t;
    tok_result tr = tokenize(row, end, final, max_record, false, cells, CSV_MAX_COLUMNS + 1, &t);
    switch (tr) {
    case TOK_MORE: goto out;
    case TOK_UNTERMINATED:
        rc = ms_fail(e, MS_EINVAL, "CSV header: column %u has an unterminated quote", t.column);
        goto out;
    case TOK_AFTER_QUOTE:
        rc = ms_fail(e, MS_EINVAL, "CSV header: column %u has text after its closing quote", t.column);
        goto out;
    case TOK_TOO_LARGE:
    case TOK_MULTILINE:
        rc = ms_fail(e, MS_EINVAL, "CSV header: the header row is longer than the record limit of %zu bytes",
                     max_record);
        goto out;
    case TOK_ROW: break;
    }
    if (t.ncells > CSV_MAX_COLUMNS) {
        rc = ms_fail(e, MS_EINVAL, "CSV header: %u columns; at most %d", t.ncells, CSV_MAX_COLUMNS);
        goto out;
    }
    place = ms_calloc(t.ncells, sizeof *place);
    for (uint32_t i = 0; i < t.ncells && rc == MS_OK; i++) {
        const cell *c = &cells[i];
        uint32_t col = i + 1;
        if (c->bad) {
            rc = ms_fail(e, MS_EINVAL, "CSV header: column %u %s", col, csv_status_text((csv_status)c->bad));
            break;
        }
        /* the name, decoded ("" -> ") */
        buf_reserve(&mem, c->len + 1);
        place[i].name = mem.len;
        const char *src = row + c->start;
        for (size_t k = 0; k < c->len; k++) {
            mem.data[mem.len++] = src[k];
            if (c->quoted && src[k] == '"') k++;
        }
        mem.data[mem.len] = 0;
        const char *nm = mem.data + place[i].name;
        size_t nlen = mem.len - place[i].name;
        mem.len++;
        if (nlen == 0) {
            rc = ms_fail(e, MS_EINVAL, "CSV header: column %u has no name", col);
        } else if (memchr(nm, 0, nlen)) {
            rc = ms_fail(e, MS_EINVAL, "CSV header: column %u: its name holds a NUL byte", col);
        } else if (utf8_check(nm, nlen) != nlen) {
            rc = ms_fail(e, MS_EINVAL, "CSV header: column %u: its name is not valid UTF-8", col);
        } else if (nlen > SCHEMA_FIELD_MAX) {
            rc =
                ms_fail(e, MS_EINVAL, "CSV header: column %u: its name is longer than %d bytes", col, SCHEMA_FIELD_MAX);
        }
        if (rc != MS_OK) break;
        /* the field it becomes, and its type */
        const char *field = schema_column_field(s, nm, nlen);
        size_t flen = field ? strlen(field) : nlen;
        buf_reserve(&mem, flen + 1);
        nm = mem.data + place[i].name; /* the buffer may have moved */
        place[i].field = mem.len;
        buf_put(&mem, field ? field : nm, flen);
        buf_putc(&mem, 0);
        const char *fd = mem.data + place[i].field;
        field_type ft = schema_field_type_of(s, fd, flen);
        place[i].type = ft == FIELD_NUMBER ? CSV_NUMBER : ft == FIELD_BOOLEAN ? CSV_BOOLEAN : CSV_STRING;
        if (s->dob_format && strcmp(fd, s->dob_field) == 0) place[i].type = CSV_DATE;
        for (uint32_t j = 0; j < i; j++) {
            const char *nj = mem.data + place[j].name, *fj = mem.data + place[j].field;
            if (strcmp(nj, mem.data + place[i].name) == 0) {
                rc = ms_fail(e, MS_EINVAL, "CSV header: column %u (\"%s\") has the name of column %u", col,
                             name_text(nj, strlen(nj), name), j + 1);
                break;
            }
            if (strcmp(fj, fd) == 0) {
                rc = ms_fail(
                    e, MS_EINVAL, "CSV header: column %u (\"%s\") and column %u (\"%s\") are both field \"%s\"", j + 1,
                    name_text(nj, strlen(nj), name), col, name_text(mem.data + place[i].name, nlen, other), fd);
                break;
            }
        }
        if (rc != MS_OK) break;
        /* "field": as JSON text */
        buf_reserve(&mem, 6 * flen + 4);
        place[i].key = mem.len;
        char *o = mem.data + mem.len;
        *o++ = '"';
        escape(&o, mem.data + place[i].field, flen, false); /* valid UTF-8 without NUL: cannot fail */
        *o++ = '"', *o++ = ':';
        place[i].key_len = (uint32_t)(o - (mem.data + mem.len));
        mem.len += place[i].key_len;
    }
    if (rc != MS_OK) goto out;
    h->columns = ms_calloc(t.ncells, sizeof(csv_column));
    h->ncolumns = t.ncells;
    for (uint32_t i = 0; i < t.ncells; i++) {
        h->columns[i].type = place[i].type;
        h->columns[i].key_len = place[i].key_len;
    }
    size_t fmt = mem.len;
    if (s->dob_format) buf_put(&mem, s->dob_format, strlen(s->dob_format) + 1);
    h->lines = 1 + t.nl;
    h->bytes = bom + t.len;
    h->mem = buf_take(&mem);
    for (uint32_t i = 0; i < t.ncells; i++) {
        h->columns[i].name = h->mem + place[i].name;
        h->columns[i].field = h->mem + place[i].field;
        h->columns[i].key = h->mem + place[i].key;
        h->key_bytes += place[i].key_len + 3;
    }
    h->dob_format = s->dob_format ? h->mem + fmt : NULL;
    *used = (size_t)h->bytes;
out:
    free(cells);
    free(place);
    buf_free(&mem);
    return rc;
}

/* ---- the reader ---- */

void csv_reader_init(csv_reader *r, const csv_header *h, size_t max_record)
{
    memset(r, 0, sizeof *r);
    r->header = h;
    r->max_record = max_record < UINT32_MAX ? max_record : UINT32_MAX; /* csv_row.json_len is 32 bits */
    r->line = h->lines + 1;
    r->offset = h->bytes;
    r->cells = ms_malloc(sizeof(cell) * (h->ncolumns + 1));
}

void csv_reader_seek(csv_reader *r, uint64_t line, uint64_t offset)
{
    r->line = line;
    r->offset = offset;
    r->resync = r->skip_line = r->mid_line = false;
}

void csv_reader_free(csv_reader *r)
{
    free(r->cells);
    memset(r, 0, sizeof *r);
}

/* ---- the batch ---- */

static void json_reserve(csv_batch *b, size_t extra)
{
    if (b->json_cap - b->json_len >= extra) return;
    size_t cap = b->json_cap ? b->json_cap : 1 << 16;
    while (cap - b->json_len < extra)
        cap *= 2;
    void *p;
    if (posix_memalign(&p, ALIGN, cap) != 0) ms_oom();
    if (b->json_len) memcpy(p, b->json, b->json_len);
    free(b->json);
    b->json = p;
    b->json_cap = cap;
}

static csv_row *add_row(csv_batch *b)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 256;
        b->rows = ms_realloc(b->rows, sizeof(csv_row) * b->cap);
    }
    csv_row *row = &b->rows[b->n++];
    memset(row, 0, sizeof *row);
    return row;
}

size_t csv_batch_padded(csv_batch *b)
{
    size_t padded = (b->json_len + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    json_reserve(b, padded - b->json_len + (padded == 0 ? ALIGN : 0));
    memset(b->json + b->json_len, 0, padded - b->json_len);
    return padded;
}

void csv_batch_reset(csv_batch *b)
{
    b->n = 0;
    b->rejected = 0;
    b->json_len = 0;
}

void csv_batch_free(csv_batch *b)
{
    free(b->rows);
    free(b->json);
    memset(b, 0, sizeof *b);
}

/* ---- one row to JSON ---- */

static bool boolean_of(const char *s, size_t n, bool *v)
{
    if (n == 1 && (*s == '1' || *s == '0')) return *v = *s == '1', true;
    if (n == 4 && strncasecmp(s, "true", 4) == 0) return *v = true, true;
    if (n == 5 && strncasecmp(s, "false", 5) == 0) return *v = false, true;
    return false;
}

/* The object of a row with as many cells as the header, appended to b->json with its '\n'; or a status
 * and *column, and nothing appended. */
static csv_status convert_row(const csv_header *h, const char *row, size_t row_len, const cell *cells,
                              size_t max_record, csv_batch *b, uint32_t *column)
{
    json_reserve(b, h->key_bytes + 6 * row_len + 4);
    char *start = b->json + b->json_len, *o = start;
    *o++ = '{';
    csv_status st = CSV_ROW_OK;
    uint32_t i;
    for (i = 0; i < h->ncolumns; i++) {
        const cell *c = &cells[i];
        const csv_column *col = &h->columns[i];
        if (c->bad) {
            st = (csv_status)c->bad;
            break;
        }
        if (c->len == 0) continue; /* an empty cell is an absent field */
        if (o > start + 1) *o++ = ',';
        memcpy(o, col->key, col->key_len);
        o += col->key_len;
        const char *v = row + c->start;
        switch (col->type) {
        case CSV_STRING:
            *o++ = '"';
            st = escape(&o, v, c->len, c->quoted);
            *o++ = '"';
            break;
        case CSV_NUMBER: {
            json_type t;
            const char *q = c->doubled ? NULL : json_scan_value(v, v, v + c->len, &t, NULL);
            if (!q || q != v + c->len || t != JSON_NUMBER) {
                st = CSV_BAD_NUMBER;
                break;
            }
            memcpy(o, v, c->len);
            o += c->len;
            break;
        }
        case CSV_BOOLEAN: {
            bool yes;
            if (c->doubled || !boolean_of(v, c->len, &yes)) {
                st = CSV_BAD_BOOLEAN;
                break;
            }
            memcpy(o, yes ? "true" : "false", yes ? 4 : 5);
            o += yes ? 4 : 5;
            break;
        }
        case CSV_DATE: {
            int y = 0, m = 0, d = 0;
            const char *why = c->doubled ? "quoted quotes" : date_parse_format(h->dob_format, v, c->len, &y, &m, &d);
            if (why) {
                st = strcmp(why, "is not a real date") == 0 ? CSV_BAD_DATE : CSV_BAD_DATE_FORMAT;
                break;
            }
            char date[12] = {'"',
                             (char)('0' + y / 1000),
                             (char)('0' + y / 100 % 10),
                             (char)('0' + y / 10 % 10),
                             (char)('0' + y % 10),
                             '-',
                             (char)('0' + m / 10),
                             (char)('0' + m % 10),
                             '-',
                             (char)('0' + d / 10),
                             (char)('0' + d % 10),
                             '"'};
            memcpy(o, date, sizeof date);
            o += sizeof date;
            break;
        }
        }
        if (st != CSV_ROW_OK) break;
    }
    if (st != CSV_ROW_OK) {
        *column = i + 1;
        return st;
    }
    *o++ = '}';
    if ((size_t)(o - start) > max_record) {
        *column = 0;
        return CSV_RECORD_TOO_LARGE;
    }
    *o++ = '\n';
    b->json_len += (size_t)(o - start);
    return CSV_ROW_OK;
}

/* ---- the conversion loop ---- */

/* The pending span ends at offset, before line r->line (and with it, if bytes of it were consumed: the
 * input ended inside it). */
static void end_span(csv_reader *r, csv_batch *out, uint64_t offset)
{
    csv_row *row = add_row(out);
    *row = r->span;
    row->nlines = r->line - r->span.line + (r->mid_line ? 1 : 0);
    row->bytes = offset - r->span.offset;
    out->rejected++;
    r->resync = r->skip_line = false;
}

/* Consume [*p, to): to is a line's end (just past its '\n') or, mid-line, where the input stops. */
static void consume(csv_reader *r, const char **p, const char *to)
{
    if (to == *p) return;
    *p = to;
    if (to[-1] == '\n') {
        r->line++;
        r->mid_line = false;
    } else {
        r->mid_line = true;
    }
}

size_t csv_convert(csv_reader *r, const char *data, size_t len, bool final, csv_batch *out)
{
    const csv_header *h = r->header;
    cell *cells = r->cells;
    const uint64_t base = r->offset; /* the input offset of data[0] */
    const char *p = data, *end = data + len;
    for (;;) {
        if (r->skip_line) { /* the rest of a physical line that belongs to the span */
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            consume(r, &p, nl ? nl + 1 : end);
            if (nl)
                r->skip_line = false;
            else
                break;
            continue;
        }
        if (p == end) break;
        /* an empty line: no row (inside a span, part of it) */
        if (*p == '\n' || (*p == '\r' && (p + 1 == end || p[1] == '\n'))) {
            if (*p == '\r' && p + 1 == end && !final) break;
            consume(r, &p, p + (*p == '\r' && p + 1 < end ? 2 : 1));
            continue;
        }
        tok_row t;
        tok_result tr = tokenize(p, end, final, r->max_record, r->resync, cells, h->ncolumns + 1, &t);
        if (tr == TOK_MORE) break;
        uint64_t offset = base + (uint64_t)(p - data);
        if (r->resync) {
            bool well_formed = tr == TOK_ROW && t.ncells == h->ncolumns;
            for (uint32_t i = 0; well_formed && i < t.ncells; i++)
                well_formed = !cells[i].bad; /* a stray quote or CR: no better than the lines before */
            if (!well_formed) {
                r->skip_line = true; /* this line joins the span */
                continue;
            }
            end_span(r, out, offset); /* this line is a row again */
        }
        /* the row's extent is unknown: a span from here, resynchronized; so is a row whose quotes close on
         * a later line and leave another number of cells than the header (a stray quote that a later one
         * happened to close) */
        bool across = tr == TOK_ROW && t.nl > 0 && t.ncells != h->ncolumns;
        if (tr != TOK_ROW || across) {
            memset(&r->span, 0, sizeof r->span);
            r->span.line = r->line;
            r->span.offset = offset;
            r->span.status = across                   ? CSV_CELLS_ACROSS_LINES
                             : tr == TOK_UNTERMINATED ? CSV_UNTERMINATED_QUOTE
                             : tr == TOK_AFTER_QUOTE  ? CSV_TEXT_AFTER_QUOTE
                                                      : CSV_ROW_TOO_LARGE;
            r->span.column = tr == TOK_TOO_LARGE || across ? 0 : t.column;
            r->span.cells = across ? t.ncells : 0;
            r->resync = r->skip_line = true;
            continue;
        }
        csv_row *row = add_row(out);
        row->line = r->line;
        row->nlines = 1 + t.nl;
        row->offset = offset;
        row->bytes = t.len;
        if (t.ncells != h->ncolumns) {
            row->status = CSV_BAD_CELLS;
            row->cells = t.ncells;
        } else {
            size_t at = out->json_len;
            row->status = convert_row(h, p, t.len, cells, r->max_record, out, &row->column);
            if (row->status == CSV_ROW_OK) {
                row->json = at;
                row->json_len = (uint32_t)(out->json_len - at - 1);
            }
        }
        if (row->status != CSV_ROW_OK) out->rejected++;
        r->line += t.nl;
        consume(r, &p, p + t.len);
    }
    if (final && p == end && r->resync) end_span(r, out, base + (uint64_t)(p - data));
    size_t used = (size_t)(p - data);
    r->offset += used;
    return used;
}

/* ---- messages ---- */

const char *csv_status_text(csv_status s)
{
    switch (s) {
    case CSV_ROW_OK: return "is well-formed";
    case CSV_BAD_CELLS: return "has another number of cells than the header";
    case CSV_BAD_UTF8: return "is not valid UTF-8";
    case CSV_BAD_NUL: return "holds a NUL byte";
    case CSV_BAD_QUOTE_IN_CELL: return "has a quote inside an unquoted cell (quote the cell and double its quotes)";
    case CSV_BAD_CR: return "has a carriage return outside quotes that does not end the line";
    case CSV_BAD_NUMBER: return "is not a number";
    case CSV_BAD_BOOLEAN: return "is not a boolean (true, false, 1 or 0)";
    case CSV_BAD_DATE_FORMAT: return "does not match the date format";
    case CSV_BAD_DATE: return "is not a real date";
    case CSV_RECORD_TOO_LARGE: return "makes a record larger than the record limit";
    case CSV_UNTERMINATED_QUOTE: return "has an unterminated quote";
    case CSV_TEXT_AFTER_QUOTE: return "has text after its closing quote";
    case CSV_ROW_TOO_LARGE: return "is larger than the record limit";
    case CSV_CELLS_ACROSS_LINES: return "has a quoted line break and another number of cells than the header";
    }
    return "is rejected";
}

size_t csv_row_message(const csv_header *h, const csv_row *row, char *out, size_t cap)
{
    buf b = {0};
    if (row->nlines > 1)
        buf_printf(&b, "lines %llu-%llu", (unsigned long long)row->line,
                   (unsigned long long)(row->line + row->nlines - 1));
    else
        buf_printf(&b, "line %llu", (unsigned long long)row->line);
    buf_printf(&b, ", byte %llu: ", (unsigned long long)row->offset);
    if (row->status == CSV_BAD_CELLS) {
        buf_printf(&b, "%u cells, the header has %u", row->cells, h->ncolumns);
    } else if (row->status == CSV_CELLS_ACROSS_LINES) {
        buf_printf(&b, "a row whose quotes close on a later line has %u cells, the header has %u (a stray quote?)",
                   row->cells, h->ncolumns);
    } else {
        if (row->column >= 1 && row->column <= h->ncolumns) {
            char name[72];
            const char *nm = h->columns[row->column - 1].name;
            buf_printf(&b, "column %u (\"%s\") ", row->column, name_text(nm, strlen(nm), name));
        } else if (row->column > h->ncolumns) { /* a span's row had more cells than the header */
            buf_printf(&b, "column %u ", row->column);
        } else {
            buf_puts(&b, "the row ");
        }
        buf_puts(&b, csv_status_text(row->status));
        if (row->status == CSV_BAD_DATE_FORMAT && h->dob_format) buf_printf(&b, " %s", h->dob_format);
    }
    if (csv_status_is_span(row->status))
        buf_puts(&b, row->nlines > 1 ? "; these lines were skipped up to the next well-formed row"
                                     : "; the line was skipped");
    size_t n = b.len < cap ? b.len : cap ? cap - 1 : 0;
    if (cap) {
        memcpy(out, b.data, n);
        out[n] = 0;
    }
    buf_free(&b);
    return n;
}
