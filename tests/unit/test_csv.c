/*
 * test_csv.c - the CSV reader (src/pipeline/csv.h) over inputs the tests write: the header (byte-order
 * mark, quoted and multi-line names, the schema's column map and types, every refusal naming its
 * column), rows (RFC 4180 quoting: "" inside quotes, commas, CR LF and LF mixed, embedded line breaks,
 * a last row with or without its line end, empty cells as absent fields, whitespace kept), typed cells
 * and dates, every rejection with its line, byte offset and column, spans after an unterminated quote
 * or text after a closing quote (the good rows after them still converted), the row and record limits,
 * the messages (never a value), and record_prepare_csv (prepare.h).
 *
 * Two properties: the same input split at every byte position (and fed a byte at a time, and in random
 * pieces) gives the same rows as in one call; and random well-formed CSV written by the test from known
 * cell values converts to exactly the JSON those values make (an oracle that does not parse CSV).
 */
#include "unit.h"

#include "pipeline/csv.h"

static const char *const status_names[] = {"ok",      "cells",        "utf8",        "nul",           "quote_in_cell",
                                           "cr",      "number",       "boolean",     "date_format",   "date",
                                           "too_big", "unterminated", "after_quote", "row_too_large", "cells_lines"};

typedef struct {
    csv_header h;
    csv_reader r;
    csv_batch b;
    bool have_header;
    char header_error[240];
} run_state;

/* Convert in[0..n) fed in pieces ending at cuts[0..ncuts) and n (the last one final). The rows go into
 * st; the header's refusal, if any, into st->header_error. */
static void run_pieces(const schema *sc, size_t max_record, const char *in, size_t n, const size_t *cuts, int ncuts,
                       run_state *st)
{
    memset(st, 0, sizeof *st);
    buf pending = {0};
    size_t pos = 0;
    for (int piece = 0; piece <= ncuts; piece++) {
        size_t to = piece < ncuts ? cuts[piece] : n;
        buf_put(&pending, in + pos, to - pos);
        pos = to;
        bool final = piece == ncuts;
        const char *data = pending.data ? pending.data : "";
        if (!st->have_header) {
            size_t used = 0;
            ms_err e = {0};
            if (csv_header_parse(sc, data, pending.len, final, max_record, &st->h, &used, &e) != MS_OK) {
                snprintf(st->header_error, sizeof st->header_error, "%s", e.msg);
                break;
            }
            if (used == 0) {
                if (final) fail_msg("header: nothing consumed of the final input");
                continue;
            }
            assert_int_equal(used, st->h.bytes);
            st->have_header = true;
            csv_reader_init(&st->r, &st->h, max_record);
            memmove(pending.data, pending.data + used, pending.len - used);
            pending.len -= used;
            data = pending.data;
        }
        size_t used = csv_convert(&st->r, data, pending.len, final, &st->b);
        assert_true(used <= pending.len);
        if (final) assert_int_equal(used, pending.len);
        memmove(pending.data, pending.data + used, pending.len - used);
        pending.len -= used;
    }
    if (st->have_header) assert_true(csv_reader_idle(&st->r));
    buf_free(&pending);
}

static void run_free(run_state *st)
{
    if (st->have_header) csv_reader_free(&st->r);
    csv_batch_free(&st->b);
    csv_header_free(&st->h);
}

/* The rows as text, one a line: "LINE+NLINES @OFFSET/BYTES JSON" or "LINE+NLINES @OFFSET/BYTES !status col N". */
static char *describe(const run_state *st)
{
    buf d = {0};
    if (!st->have_header) {
        buf_printf(&d, "header: %s", st->header_error);
        return buf_take(&d);
    }
    for (uint32_t i = 0; i < st->b.n; i++) {
        const csv_row *r = &st->b.rows[i];
        buf_printf(&d, "%llu+%llu @%llu/%llu ", (unsigned long long)r->line, (unsigned long long)r->nlines,
                   (unsigned long long)r->offset, (unsigned long long)r->bytes);
        if (r->status == CSV_ROW_OK) {
            buf_put(&d, st->b.json + r->json, r->json_len);
            assert_int_equal(st->b.json[r->json + r->json_len], '\n');
        } else {
            buf_printf(&d, "!%s col %u", status_names[r->status], r->column);
            if (r->status == CSV_BAD_CELLS || r->status == CSV_CELLS_ACROSS_LINES)
                buf_printf(&d, " cells %u", r->cells);
        }
        buf_putc(&d, '\n');
    }
    if (!d.data) buf_puts(&d, "");
    return buf_take(&d);
}

static char *convert_all(const schema *sc, size_t max_record, const char *in, size_t n)
{
    run_state st;
    run_pieces(sc, max_record, in, n, NULL, 0, &st);
    char *d = describe(&st);
    uint32_t rejected = 0;
    for (uint32_t i = 0; st.have_header && i < st.b.n; i++)
        rejected += st.b.rows[i].status != CSV_ROW_OK;
    if (st.have_header) assert_int_equal(rejected, st.b.rejected);
    run_free(&st);
    return d;
}

static void expect_rows_n(const schema *sc, size_t max_record, const char *in, size_t n, const char *want)
{
    char *got = convert_all(sc, max_record, in, n);
    if (strcmp(got, want) != 0) fail_msg("input:\n%.*s\ngot:\n%s\nwant:\n%s", (int)n, in, got, want);
    free(got);
}

static void expect_rows(const schema *sc, const char *in, const char *want)
{
    expect_rows_n(sc, 1 << 20, in, strlen(in), want);
}

/* ---- the header ---- */

static void expect_header_error(const schema *sc, const char *in, size_t n, const char *part)
{
    csv_header h;
    size_t used = 99;
    ms_err e = {0};
    ms_code rc = csv_header_parse(sc, in, n, true, 1 << 20, &h, &used, &e);
    if (rc != MS_EINVAL) fail_msg("header accepted: %.*s", (int)n, in);
    if (!strstr(e.msg, part)) fail_msg("message \"%s\" lacks \"%s\"", e.msg, part);
    assert_int_equal(used, 0);
    assert_null(h.columns);
    csv_header_free(&h);
}

static void test_header(void **state)
{
    (void)state;
    schema sc;
    schema_default(&sc);
    csv_header h;
    size_t used;
    ms_err e = {0};
    const char *in = "\xEF\xBB\xBF\"Patient Name\",\"a,b\",\"x\"\"y\",\"two\r\nlines\", spaced \r\nrest";
    assert_int_equal(csv_header_parse(&sc, in, strlen(in), false, 1 << 20, &h, &used, &e), MS_OK);
    assert_int_equal(used, strlen(in) - 4);
    assert_int_equal(h.bytes, used);
    assert_int_equal(h.lines, 2);
    assert_int_equal(h.ncolumns, 5);
    assert_string_equal(h.columns[0].name, "Patient Name");
    assert_string_equal(h.columns[1].name, "a,b");
    assert_string_equal(h.columns[2].name, "x\"y");
    assert_string_equal(h.columns[3].name, "two\r\nlines");
    assert_string_equal(h.columns[4].name, " spaced "); /* names are taken exactly */
    assert_string_equal(h.columns[2].field, "x\"y");
    assert_int_equal(h.columns[0].type, CSV_STRING);
    csv_header_free(&h);

    /* not complete yet: more bytes wanted, nothing consumed */
    const char *partial[] = {"", "\xEF", "\xEF\xBB", "\xEF\xBB\xBF", "a,b", "a,\"b\n", "a,b\r", "\r"};
    for (size_t i = 0; i < sizeof partial / sizeof *partial; i++) {
        used = 7;
        assert_int_equal(csv_header_parse(&sc, partial[i], strlen(partial[i]), false, 1 << 20, &h, &used, &e), MS_OK);
        assert_int_equal(used, 0);
        csv_header_free(&h);
    }
    /* the last line of the input is the header */
    assert_int_equal(csv_header_parse(&sc, "a,b", 3, true, 1 << 20, &h, &used, &e), MS_OK);
    assert_int_equal(used, 3);
    assert_int_equal(h.ncolumns, 2);
    csv_header_free(&h);

    expect_header_error(&sc, "", 0, "CSV: no header row (the input is empty)");
    expect_header_error(&sc, "\xEF\xBB\xBF", 3, "no header row");
    expect_header_error(&sc, "\nname,dob\n", 10, "the first line is empty");
    expect_header_error(&sc, "\r\nname\n", 7, "the first line is empty");
    expect_header_error(&sc, "name,,dob\n", 10, "column 2 has no name");
    expect_header_error(&sc, "name,\"\",dob\n", 12, "column 2 has no name");
    expect_header_error(&sc, "name,dob,name\n", 14, "column 3 (\"name\") has the name of column 1");
    expect_header_error(&sc, "name,\"dob\n", 10, "column 2 has an unterminated quote");
    expect_header_error(&sc, "name,\"dob\"x\n", 12, "column 2 has text after its closing quote");
    expect_header_error(&sc, "name,d\"ob\n", 10, "column 2 has a quote inside an unquoted cell");
    expect_header_error(&sc, "name,d\rob\n", 10, "column 2 has a carriage return");
    expect_header_error(&sc, "name,d\xffob\n", 10, "column 2: its name is not valid UTF-8");
    expect_header_error(&sc, "name,d\0ob\n", 10, "column 2: its name holds a NUL byte");
    char longname[1100];
    memset(longname, 'n', 1025);
    memcpy(longname + 1025, "\n", 2);
    expect_header_error(&sc, longname, 1026, "column 1: its name is longer than 1024 bytes");
    buf many = {0};
    for (int i = 0; i <= CSV_MAX_COLUMNS; i++)
        buf_printf(&many, "%sc%d", i ? "," : "", i);
    buf_putc(&many, '\n');
    expect_header_error(&sc, many.data, many.len, "1025 columns; at most 1024");
    many.len = 0;
    for (int i = 0; i < CSV_MAX_COLUMNS; i++)
        buf_printf(&many, "%sc%d", i ? "," : "", i);
    assert_int_equal(csv_header_parse(&sc, many.data, many.len, true, 1 << 20, &h, &used, &e), MS_OK);
    assert_int_equal(h.ncolumns, CSV_MAX_COLUMNS);
    csv_header_free(&h);
    buf_free(&many);
    /* a header row over the record limit */
    assert_int_equal(csv_header_parse(&sc, "aaaaaaaaaa,bbbbbbbbbb\n", 22, true, 16, &h, &used, &e), MS_EINVAL);
    assert_non_null(strstr(e.msg, "longer than the record limit of 16 bytes"));
    csv_header_free(&h);
    schema_free(&sc);
}

/* The schema's column map and types shape the header. */
static void test_header_mapped(void **state)
{
    (void)state;
    schema sc;
    ms_err e = {0};
    const char *text = "{\"columns\":{\"Patient Name\":\"name\",\"Birth Date\":\"dob\",\"Wt\":\"weight\"},"
                       "\"types\":{\"weight\":\"number\",\"smoker\":\"boolean\",\"note\":\"string\"},"
                       "\"dob_format\":\"%m/%d/%Y\"}";
    if (schema_parse(&sc, text, strlen(text), &e) != MS_OK) fail_msg("schema: %s", e.msg);
    csv_header h;
    size_t used;
    const char *in = "Patient Name,Birth Date,Wt,smoker,note,dob2\n";
    assert_int_equal(csv_header_parse(&sc, in, strlen(in), true, 1 << 20, &h, &used, &e), MS_OK);
    assert_int_equal(h.ncolumns, 6);
    assert_string_equal(h.columns[0].field, "name");
    assert_string_equal(h.columns[1].field, "dob");
    assert_string_equal(h.columns[2].field, "weight");
    assert_string_equal(h.columns[2].name, "Wt");
    assert_string_equal(h.columns[3].field, "smoker");
    assert_int_equal(h.columns[0].type, CSV_STRING);
    assert_int_equal(h.columns[1].type, CSV_DATE);
    assert_int_equal(h.columns[2].type, CSV_NUMBER);
    assert_int_equal(h.columns[3].type, CSV_BOOLEAN);
    assert_int_equal(h.columns[4].type, CSV_STRING);
    assert_int_equal(h.columns[5].type, CSV_STRING);
    assert_string_equal(h.dob_format, "%m/%d/%Y");
    csv_header_free(&h);
    /* two columns that become one field */
    expect_header_error(&sc, "Patient Name,name\n", 18,
                        "column 1 (\"Patient Name\") and column 2 (\"name\") are both field \"name\"");
    expect_header_error(&sc, "dob,Birth Date\n", 15, "column 1 (\"dob\") and column 2 (\"Birth Date\") are both field");
    schema_free(&sc);
}

/* ---- rows ---- */

static void test_quoting(void **state)
{
    (void)state;
    schema sc;
    schema_default(&sc);
    /* BOM, CR LF and LF mixed, "" inside quotes, commas and line breaks in quotes, whitespace kept, empty
     * cells absent, an empty line skipped, the last row without its line end */
    const char *in = "\xEF\xBB\xBF"
                     "name,note,dob\r\n"                            /* line 1, 18 bytes with the BOM */
                     "\"Ann, Jr.\",\"say \"\"hi\"\"\",1990-01-31\n" /* line 2, 35 bytes */
                     "Bob,\"two\r\nlines\nmixed\",1980-02-29\r\n"   /* lines 3-5, 35 bytes */
                     "  Cy  ,,1970-12-01\n"                         /* line 6, 19 bytes */
                     "\n"                                           /* line 7 */
                     "\r\n"                                         /* line 8 */
                     "Dee,\"\",\"2000-01-01\"";                     /* line 9, 19 bytes */
    expect_rows(&sc, in,
                "2+1 @18/35 {\"name\":\"Ann, Jr.\",\"note\":\"say \\\"hi\\\"\",\"dob\":\"1990-01-31\"}\n"
                "3+3 @53/35 {\"name\":\"Bob\",\"note\":\"two\\r\\nlines\\nmixed\",\"dob\":\"1980-02-29\"}\n"
                "6+1 @88/19 {\"name\":\"  Cy  \",\"dob\":\"1970-12-01\"}\n"
                "9+1 @110/19 {\"name\":\"Dee\",\"dob\":\"2000-01-01\"}\n");
    /* a trailing line end or not, CR LF or LF: the same rows */
    expect_rows(&sc, "a,b\nx,y", "2+1 @4/3 {\"a\":\"x\",\"b\":\"y\"}\n");
    expect_rows(&sc, "a,b\nx,y\n", "2+1 @4/4 {\"a\":\"x\",\"b\":\"y\"}\n");
    expect_rows(&sc, "a,b\r\nx,y\r\n", "2+1 @5/5 {\"a\":\"x\",\"b\":\"y\"}\n");
    expect_rows(&sc, "a,b\r\nx,y\r", "2+1 @5/4 {\"a\":\"x\",\"b\":\"y\"}\n"); /* a CR at the very end ends it */
    /* a header and nothing else, or empty lines only */
    expect_rows(&sc, "a,b\n", "");
    expect_rows(&sc, "a,b", "");
    expect_rows(&sc, "a,b\n\n\r\n\n", "");
    /* every cell empty: {} (later stages reject it: no identity) */
    expect_rows(&sc, "a,b\n,\n\"\",\"\"\n", "2+1 @4/2 {}\n3+1 @6/6 {}\n");
    /* quotes: a doubled quote alone, a quoted comma, a cell of one quote, a quote at a line end */
    expect_rows(&sc, "a,b\n\"\"\"\",\",\"\n\"x\"\"\n\"\"\",\"\n\"\n",
                "2+1 @4/9 {\"a\":\"\\\"\",\"b\":\",\"}\n"
                "3+3 @13/13 {\"a\":\"x\\\"\\n\\\"\",\"b\":\"\\n\"}\n");
    /* escapes: controls, backslash, DEL and non-ASCII kept as UTF-8 */
    expect_rows(
        &sc, "a,b\n\"t\tb\bf\fx\x01\x1f\\\",\x7f\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\n",
        "2+1 @4/24 {\"a\":\"t\\tb\\bf\\fx\\u0001\\u001f\\\\\",\"b\":\"\x7f\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\"}\n");
    /* a long plain cell (the 8-byte paths) and a long quoted one with something to escape near its end */
    char longin[300], want[600];
    memcpy(longin, "a\n", 2);
    memset(longin + 2, 'x', 200);
    memcpy(longin + 202, "\n\"", 2);
    memset(longin + 204, 'y', 50);
    memcpy(longin + 254, "\"\"q\\\"", 6);
    snprintf(want, sizeof want, "2+1 @2/201 {\"a\":\"%.200s\"}\n3+1 @203/56 {\"a\":\"%.50s\\\"q\\\\\"}\n", longin + 2,
             longin + 204);
    expect_rows_n(&sc, 1 << 20, longin, 259, want);
    schema_free(&sc);
}

/* Rejections of a row whose extent is known: the row alone, with its column; the rows around it go on. */
static void test_bad_rows(void **state)
{
    (void)state;
    schema sc;
    schema_default(&sc);
    static const char in[] = "name,dob\n"
                             "Ann,1990-01-01\n"      /* 2 */
                             "Bob\n"                 /* 3: one cell */
                             "Cy,1990-01-01,extra\n" /* 4: three */
                             "Dee,\"x\ny\",z\n"      /* 5-6: three, over two lines */
                             "Ann\xff,1990-01-01\n"  /* 7: invalid UTF-8 */
                             "A\xC0\xAF,x\n"         /* 8: overlong */
                             "A,\xED\xA0\x80\n"      /* 9: a surrogate */
                             "A,\xE2\x82\n"          /* 10: a truncated sequence */
                             "A,\xF4\x90\x80\x80\n"  /* 11: past U+10FFFF */
                             "A\0b,x\n"              /* 12: NUL */
                             "A,b\"c\n"              /* 13: a quote inside an unquoted cell */
                             "A\rb,c\n"              /* 14: a CR that ends no line */
                             "Eve,1990-01-01\n";     /* 15 */
    expect_rows_n(&sc, 1 << 20, in, sizeof in - 1,
                  "2+1 @9/15 {\"name\":\"Ann\",\"dob\":\"1990-01-01\"}\n"
                  "3+1 @24/4 !cells col 0 cells 1\n"
                  "4+1 @28/20 !cells col 0 cells 3\n"
                  "5+2 @48/12 !cells_lines col 0 cells 3\n"
                  "7+1 @60/16 !utf8 col 1\n"
                  "8+1 @76/6 !utf8 col 1\n"
                  "9+1 @82/6 !utf8 col 2\n"
                  "10+1 @88/5 !utf8 col 2\n"
                  "11+1 @93/7 !utf8 col 2\n"
                  "12+1 @100/6 !nul col 1\n"
                  "13+1 @106/6 !quote_in_cell col 2\n"
                  "14+1 @112/6 !cr col 1\n"
                  "15+1 @118/15 {\"name\":\"Eve\",\"dob\":\"1990-01-01\"}\n");
    schema_free(&sc);
}

/* An unterminated quote, or text after a closing quote: a span up to the next line that is on its own a
 * well-formed row; the good rows after it are still converted. */
static void test_spans(void **state)
{
    (void)state;
    schema sc;
    schema_default(&sc);
    /* the quote runs to the end of the input: only its own line is lost */
    expect_rows(&sc,
                "name,dob\n"
                "Ann,1990-01-01\n"   /* 2 */
                "\"Bob,1980-01-01\n" /* 3 */
                "Cy,1970-01-01\n"    /* 4 */
                "Dee,2000-01-01\n",  /* 5 */
                "2+1 @9/15 {\"name\":\"Ann\",\"dob\":\"1990-01-01\"}\n"
                "3+1 @24/16 !unterminated col 1\n"
                "4+1 @40/14 {\"name\":\"Cy\",\"dob\":\"1970-01-01\"}\n"
                "5+1 @54/15 {\"name\":\"Dee\",\"dob\":\"2000-01-01\"}\n");
    /* text after a closing quote; the lines up to the next well-formed row are the span: one cell,
     * three cells, a quote that would go on past its line */
    expect_rows(&sc,
                "name,dob\n"
                "Ann,\"1990\n"      /* 2: opens a quote, closed on line 5 and followed by y */
                "junk\n"            /* 3 */
                "a,b,c\n"           /* 4 */
                "x,\"y\n"           /* 5 */
                "Bob,1980-01-01\n", /* 6 */
                "2+4 @9/26 !after_quote col 2\n"
                "6+1 @35/15 {\"name\":\"Bob\",\"dob\":\"1980-01-01\"}\n");
    /* to the end of the input, with and without a last line end; empty lines inside */
    expect_rows(&sc, "name,dob\nAnn,\"x\n\nfoo\n", "2+3 @9/12 !unterminated col 2\n");
    expect_rows(&sc, "name,dob\nAnn,\"x\nfoo", "2+2 @9/10 !unterminated col 2\n");
    expect_rows(&sc, "name,dob\nAnn,\"x", "2+1 @9/6 !unterminated col 2\n");
    expect_rows(&sc, "name,dob\nAnn,\"x\"y", "2+1 @9/8 !after_quote col 2\n");
    expect_rows(&sc, "name,dob\n\"a\"\rb,c\nd,e\n",
                "2+1 @9/8 !after_quote col 1\n3+1 @17/4 {\"name\":\"d\",\"dob\":\"e\"}\n");
    /* a good row that spans lines right after a broken one is inside the span (csv.h) */
    expect_rows(&sc,
                "name,dob\n"
                "\"a\"b,c\n"        /* 2 */
                "Ann,\"multi\n"     /* 3 */
                "line\"\n"          /* 4 */
                "Bob,1980-01-01\n", /* 5 */
                "2+3 @9/24 !after_quote col 1\n"
                "5+1 @33/15 {\"name\":\"Bob\",\"dob\":\"1980-01-01\"}\n");
    /* a stray quote that a later one closes: the row it makes has another number of cells than the
     * header, so it is taken as broken and the rows in between are read */
    expect_rows(&sc,
                "name,dob\n"
                "Ann,\"1990-01-01\n" /* 2 */
                "Bob,1980-01-01\n"   /* 3 */
                "\",x\n",            /* 4 */
                "2+1 @9/16 !cells_lines col 0 cells 3\n"
                "3+1 @25/15 {\"name\":\"Bob\",\"dob\":\"1980-01-01\"}\n"
                "4+1 @40/4 !unterminated col 1\n");
    /* the row that ends a span is a row like any other: rejected for its own reason */
    expect_rows(&sc, "name,dob\n\"a\"b,c\nA\xff,b\n", "2+1 @9/7 !after_quote col 1\n3+1 @16/5 !utf8 col 1\n");
    schema_free(&sc);
}

/* max_record bounds a row's input bytes (a span: the extent is unknown) and its JSON object (the row). */
static void test_limits(void **state)
{
    (void)state;
    schema sc;
    schema_default(&sc);
    char in[400];
    int n = snprintf(in, sizeof in, "a,b\n%0100d,x\ny,z\n", 7);
    expect_rows_n(&sc, 64, in, (size_t)n, "2+1 @4/103 !row_too_large col 0\n3+1 @107/4 {\"a\":\"y\",\"b\":\"z\"}\n");
    /* exactly at the limit: a header and a row of 64 bytes with their line ends are fine, 65 is not */
    buf b = {0};
    for (int i = 0; i < 32; i++)
        buf_printf(&b, "%c%c", i < 26 ? 'a' + i : 'A' + i - 26, i < 31 ? ',' : '\n');
    buf_puts(&b, ",,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,12345678901234567890123456789012\n");
    buf_puts(&b, ",,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,123456789012345678901234567890123\n");
    expect_rows_n(&sc, 64, b.data, b.len,
                  "2+1 @64/64 {\"F\":\"12345678901234567890123456789012\"}\n3+1 @128/65 !row_too_large col 0\n");
    buf_free(&b);
    /* a quoted cell over the limit, with line breaks: a span, resynchronized at the next good line */
    n = snprintf(in, sizeof in, "a,b\n\"%040d\n%040d\n%040d\",x\nc,d\n", 1, 2, 3);
    expect_rows_n(&sc, 64, in, (size_t)n, "2+3 @4/127 !row_too_large col 0\n5+1 @131/4 {\"a\":\"c\",\"b\":\"d\"}\n");
    /* the object over the limit: only that row */
    n = snprintf(in, sizeof in, "a_rather_long_column_name_1,a_rather_long_column_name_2\nxx,yy\n,z\n");
    expect_rows_n(&sc, 64, in, (size_t)n,
                  "2+1 @56/6 !too_big col 0\n3+1 @62/3 {\"a_rather_long_column_name_2\":\"z\"}\n");
    schema_free(&sc);
}

/* The schema's columns, types and dob_format. */
static void test_typed(void **state)
{
    (void)state;
    schema sc;
    ms_err e = {0};
    const char *text = "{\"columns\":{\"Patient Name\":\"name\",\"Birth Date\":\"dob\"},"
                       "\"types\":{\"weight\":\"number\",\"smoker\":\"boolean\"},\"dob_format\":\"%m/%d/%Y\"}";
    if (schema_parse(&sc, text, strlen(text), &e) != MS_OK) fail_msg("schema: %s", e.msg);
    expect_rows(&sc,
                "Patient Name,Birth Date,weight,smoker\n"
                "Ann,01/31/1990,70.5,TRUE\n"           /* 2 */
                "Bob,2/3/1980,-1e3,0\n"                /* 3 */
                "Cy,13/01/1990,70,true\n"              /* 4: month 13 */
                "Dee,1990-01-31,70,true\n"             /* 5: another format */
                "Eve,01/31/1990,70kg,true\n"           /* 6 */
                "Fay,01/31/1990,70,yes\n"              /* 7 */
                "Gus,01/31/1990,,\n"                   /* 8: empty typed cells are absent */
                "Hal,02/30/1990,1,1\n"                 /* 9 */
                "Ivy,\"01/31/1990\",\"7\",\"False\"\n" /* 10: quoted typed cells */
                "Jo,01/31/1990, 70,true\n"             /* 11: no spaces around a number */
                "Kim,01/31/1990,07,true\n"             /* 12: nor leading zeros (JSON numbers) */
                "Lu,01/31/1990,1,\"t\"\"\"\n"          /* 13 */
                "Mo,02/29/2000,0.0,FaLsE\n",           /* 14 */
                "2+1 @38/25 {\"name\":\"Ann\",\"dob\":\"1990-01-31\",\"weight\":70.5,\"smoker\":true}\n"
                "3+1 @63/20 {\"name\":\"Bob\",\"dob\":\"1980-02-03\",\"weight\":-1e3,\"smoker\":false}\n"
                "4+1 @83/22 !date col 2\n"
                "5+1 @105/23 !date_format col 2\n"
                "6+1 @128/25 !number col 3\n"
                "7+1 @153/22 !boolean col 4\n"
                "8+1 @175/17 {\"name\":\"Gus\",\"dob\":\"1990-01-31\"}\n"
                "9+1 @192/19 !date col 2\n"
                "10+1 @211/29 {\"name\":\"Ivy\",\"dob\":\"1990-01-31\",\"weight\":7,\"smoker\":false}\n"
                "11+1 @240/23 !number col 3\n"
                "12+1 @263/23 !number col 3\n"
                "13+1 @286/22 !boolean col 4\n"
                "14+1 @308/24 {\"name\":\"Mo\",\"dob\":\"2000-02-29\",\"weight\":0.0,\"smoker\":false}\n");
    schema_free(&sc);
    /* other formats; without a dob_format the cell is taken as it is */
    const char *formats[][3] = {{"%d.%m.%Y", "31.01.1990", "1990-01-31"},
                                {"%Y-%m-%d", "1990-01-31", "1990-01-31"},
                                {"%d %b %Y", "05 MAR 1990", "1990-03-05"},
                                {"%Y%m%d", "19900105", "1990-01-05"},
                                {"%%%Y/%m/%d", "%1990/1/5", "1990-01-05"}};
    for (size_t i = 0; i < sizeof formats / sizeof *formats; i++) {
        char schema_text[200], in[100], want[200];
        snprintf(schema_text, sizeof schema_text, "{\"dob_format\":\"%s\"}", formats[i][0]);
        if (schema_parse(&sc, schema_text, strlen(schema_text), &e) != MS_OK) fail_msg("schema: %s", e.msg);
        int n = snprintf(in, sizeof in, "dob\n%s\n", formats[i][1]);
        snprintf(want, sizeof want, "2+1 @4/%d {\"dob\":\"%s\"}\n", n - 4, formats[i][2]);
        expect_rows(&sc, in, want);
        schema_free(&sc);
    }
    schema_default(&sc);
    expect_rows(&sc, "dob\n01/31/1990\n", "2+1 @4/11 {\"dob\":\"01/31/1990\"}\n");
    schema_free(&sc);
}

/* Messages name the line(s), the byte offset and the column, never a value. */
static void test_messages(void **state)
{
    (void)state;
    schema sc;
    ms_err e = {0};
    const char *text =
        "{\"columns\":{\"Birth Date\":\"dob\"},\"types\":{\"weight\":\"number\"},\"dob_format\":\"%m/%d/%Y\"}";
    if (schema_parse(&sc, text, strlen(text), &e) != MS_OK) fail_msg("schema: %s", e.msg);
    const char *in = "name,Birth Date,weight\n"
                     "Zebulon,13/45/1990,70\n"      /* 2 */
                     "Zebulon,01/31/1990,Quixote\n" /* 3 */
                     "Zebulon,Quixote,70\n"         /* 4 */
                     "Zebulon\n"                    /* 5 */
                     "Zebulon,\"Quixote\n"          /* 6 */
                     "Quixote\n"                    /* 7 */
                     "Zeb\xffulon,01/31/1990,1\n";  /* 8 */
    run_state st;
    run_pieces(&sc, 1 << 20, in, strlen(in), NULL, 0, &st);
    const char *want[] = {
        "line 2, byte 23: column 2 (\"Birth Date\") is not a real date",
        "line 3, byte 45: column 3 (\"weight\") is not a number",
        "line 4, byte 72: column 2 (\"Birth Date\") does not match the date format %m/%d/%Y",
        "line 5, byte 91: 1 cells, the header has 3",
        "lines 6-7, byte 99: column 2 (\"Birth Date\") has an unterminated quote; these lines were skipped up to "
        "the next well-formed row",
        "line 8, byte 124: column 1 (\"name\") is not valid UTF-8",
    };
    assert_int_equal(st.b.n, 6);
    for (uint32_t i = 0; i < st.b.n; i++) {
        char msg[512];
        size_t n = csv_row_message(&st.h, &st.b.rows[i], msg, sizeof msg);
        assert_int_equal(n, strlen(msg));
        assert_string_equal(msg, want[i]);
        assert_null(strstr(msg, "Zeb"));
        assert_null(strstr(msg, "Quixote"));
        assert_null(strstr(msg, "70"));
    }
    /* cut to the buffer */
    char small[10];
    assert_int_equal(csv_row_message(&st.h, &st.b.rows[0], small, sizeof small), 9);
    assert_string_equal(small, "line 2, b");
    run_free(&st);
    /* a single-line span, and a row too large (no column) */
    const char *in2 =
        "name,Birth Date,weight\n\"a\"b,c,d\nx,1/1/1990,1\n01234567890123456789012345678901234567890123456789,x,y\n";
    run_pieces(&sc, 48, in2, strlen(in2), NULL, 0, &st);
    assert_int_equal(st.b.n, 3);
    char msg[512];
    csv_row_message(&st.h, &st.b.rows[0], msg, sizeof msg);
    assert_string_equal(msg,
                        "line 2, byte 23: column 1 (\"name\") has text after its closing quote; the line was skipped");
    assert_int_equal(st.b.rows[1].status, CSV_ROW_OK);
    csv_row_message(&st.h, &st.b.rows[2], msg, sizeof msg);
    assert_string_equal(msg, "line 4, byte 45: the row is larger than the record limit; the line was skipped");
    run_free(&st);
    /* a stray quote closed on a later line */
    const char *in3 = "name,Birth Date,weight\nZebulon,\"Quixote\nBob,1/1/1990,1\nx\",1,2\n";
    run_pieces(&sc, 1 << 20, in3, strlen(in3), NULL, 0, &st);
    assert_int_equal(st.b.n, 3);
    csv_row_message(&st.h, &st.b.rows[0], msg, sizeof msg);
    assert_string_equal(msg, "line 2, byte 23: a row whose quotes close on a later line has 4 cells, the header has 3 "
                             "(a stray quote?); the line was skipped");
    assert_null(strstr(msg, "Quixote"));
    run_free(&st);
    schema_free(&sc);
}

/* The batch's buffer: NDJSON, 4 KiB-aligned, zero-padded on request, reusable. */
static void test_batch(void **state)
{
    (void)state;
    schema sc;
    schema_default(&sc);
    run_state st;
    run_pieces(&sc, 1 << 20, "a,b\nx,y\nbad\nz,w\n", 16, NULL, 0, &st);
    assert_int_equal(st.b.n, 3);
    assert_int_equal(st.b.rejected, 1);
    assert_int_equal((uintptr_t)st.b.json % 4096, 0);
    assert_span_equal(st.b.json, st.b.json_len, "{\"a\":\"x\",\"b\":\"y\"}\n{\"a\":\"z\",\"b\":\"w\"}\n");
    size_t padded = csv_batch_padded(&st.b);
    assert_int_equal(padded, 4096);
    for (size_t i = st.b.json_len; i < padded; i++)
        assert_int_equal(st.b.json[i], 0);
    assert_int_equal(st.b.json_len, 36); /* padding is not content */
    csv_batch_reset(&st.b);
    assert_int_equal(st.b.n, 0);
    assert_int_equal(st.b.json_len, 0);
    csv_batch b = {0};
    assert_int_equal(csv_batch_padded(&b), 0);
    csv_batch_free(&b);
    run_free(&st);
    schema_free(&sc);
}

/* A checkpoint: an idle reader's position, resumed by another reader with csv_reader_seek. */
static void test_seek(void **state)
{
    (void)state;
    schema sc;
    schema_default(&sc);
    const char *in = "a,b\nx,y\n\"p\nq\",r\nz,w\n";
    csv_header h;
    size_t used;
    ms_err e;
    assert_int_equal(csv_header_parse(&sc, in, strlen(in), true, 1 << 20, &h, &used, &e), MS_OK);
    csv_reader r;
    csv_batch b = {0};
    csv_reader_init(&r, &h, 1 << 20);
    assert_int_equal(csv_convert(&r, in + used, 4, false, &b), 4); /* x,y\n */
    assert_true(csv_reader_idle(&r));
    uint64_t line = r.line, offset = r.offset;
    assert_int_equal(line, 3);
    assert_int_equal(offset, 8);
    csv_reader_free(&r);
    csv_reader_init(&r, &h, 1 << 20);
    csv_reader_seek(&r, line, offset);
    csv_batch_reset(&b);
    assert_int_equal(csv_convert(&r, in + offset, strlen(in) - offset, true, &b), strlen(in) - offset);
    assert_int_equal(b.n, 2);
    assert_int_equal(b.rows[0].line, 3);
    assert_int_equal(b.rows[0].nlines, 2);
    assert_int_equal(b.rows[0].offset, 8);
    assert_int_equal(b.rows[1].line, 5);
    assert_span_equal(b.json + b.rows[1].json, b.rows[1].json_len, "{\"a\":\"z\",\"b\":\"w\"}");
    csv_batch_free(&b);
    csv_reader_free(&r);
    csv_header_free(&h);
    schema_free(&sc);
}

/* record_prepare_csv: the rows become records (stages 1-3), lines kept, CSV rejections as messages. */
static void test_prepare(void **state)
{
    (void)state;
    schema sc;
    schema_default(&sc);
    scan_config cfg = unit_scan_config(&sc);
    const char *in = "name,dob,favorite_color\n"
                     "Zebulon Quixote,1990-05-07,red\n"   /* 2 */
                     "\"Zebulon\nQuixote\",1990-05-07,\n" /* 3-4: the name has a line break: stage 2 takes it */
                     "Zebulon Quixote,2990-05-07,red\n"   /* 5: in the future (stage 2) */
                     "Zebulon Quixote,1990-05-07\n"       /* 6: two cells */
                     "Zebulon Quixote,1990-05-07,blue\n"; /* 7 */
    run_state st;
    run_pieces(&sc, 1 << 20, in, strlen(in), NULL, 0, &st);
    record_batch rb = {0};
    record_prepare_csv(&cfg, &st.h, &st.b, &rb);
    assert_int_equal(rb.n, 5);
    assert_int_equal(rb.rejected, 2);
    uint32_t lines[] = {2, 3, 5, 6, 7};
    for (uint32_t i = 0; i < rb.n; i++)
        assert_int_equal(rb.records[i].line, lines[i]);
    assert_false(rb.records[0].rejected);
    assert_false(rb.records[1].rejected);
    assert_true(rb.records[2].rejected);
    assert_string_equal(rb.records[2].error, "line 5: field \"dob\" is in the future");
    assert_true(rb.records[3].rejected);
    assert_string_equal(rb.records[3].error, "line 6, byte 116: 2 cells, the header has 3");
    assert_false(rb.records[4].rejected);
    /* the same patient, and the records point into the batch's JSON */
    assert_int_equal(rb.records[0].identity_key_len, rb.records[4].identity_key_len);
    assert_memory_equal(rb.records[0].identity_key, rb.records[4].identity_key, rb.records[0].identity_key_len);
    assert_int_equal(rb.records[1].identity_key_len, rb.records[0].identity_key_len); /* whitespace collapsed */
    assert_true(rb.records[0].body >= st.b.json && rb.records[0].body < st.b.json + st.b.json_len);
    assert_span_equal(rb.records[4].body, rb.records[4].body_len,
                      "{\"name\":\"Zebulon Quixote\",\"dob\":\"1990-05-07\",\"favorite_color\":\"blue\"}");
    /* appended after what the batch held */
    record_prepare_csv(&cfg, &st.h, &st.b, &rb);
    assert_int_equal(rb.n, 10);
    assert_int_equal(rb.rejected, 4);
    assert_int_equal(rb.records[9].line, 7);
    record_batch_free(&rb);
    run_free(&st);
    schema_free(&sc);
}

/* ---- properties ---- */

/* Every way of cutting the input gives the rows of one call. */
static void check_splits(const schema *sc, size_t max_record, const char *in, size_t n, unit_rng *rng)
{
    run_state st;
    run_pieces(sc, max_record, in, n, NULL, 0, &st);
    char *whole = describe(&st);
    run_free(&st);
    size_t *cuts = malloc(sizeof(size_t) * (n + 1));
    for (size_t i = 0; i <= n; i++) { /* two pieces, cut at every byte */
        cuts[0] = i;
        run_pieces(sc, max_record, in, n, cuts, 1, &st);
        char *got = describe(&st);
        if (strcmp(got, whole) != 0)
            fail_msg("cut at %zu of %zu:\n%.*s\ngot:\n%s\nin one piece:\n%s", i, n, (int)n, in, got, whole);
        free(got);
        run_free(&st);
    }
    for (size_t i = 0; i < n; i++) /* a byte at a time */
        cuts[i] = i + 1;
    run_pieces(sc, max_record, in, n, cuts, n ? (int)n - 1 : 0, &st);
    char *got = describe(&st);
    if (strcmp(got, whole) != 0)
        fail_msg("a byte at a time:\n%.*s\ngot:\n%s\nin one piece:\n%s", (int)n, in, got, whole);
    free(got);
    run_free(&st);
    for (int k = 0; k < 8; k++) { /* random pieces, empty ones too */
        int ncuts = 0;
        size_t at = 0;
        while (at < n && ncuts < (int)n) {
            at += unit_below(rng, 8);
            if (at > n) at = n;
            cuts[ncuts++] = at;
        }
        run_pieces(sc, max_record, in, n, cuts, ncuts, &st);
        got = describe(&st);
        if (strcmp(got, whole) != 0)
            fail_msg("random pieces:\n%.*s\ngot:\n%s\nin one piece:\n%s", (int)n, in, got, whole);
        free(got);
        run_free(&st);
    }
    free(cuts);
    free(whole);
}

static void test_split_property(void **state)
{
    (void)state;
    schema sc;
    ms_err e;
    const char *text = "{\"types\":{\"n\":\"number\",\"b\":\"boolean\"},\"dob_format\":\"%d.%m.%Y\"}";
    assert_int_equal(schema_parse(&sc, text, strlen(text), &e), MS_OK);
#define CORPUS(s)                                                                                                      \
    {                                                                                                                  \
        s, sizeof s - 1                                                                                                \
    }
    static const struct {
        const char *text;
        size_t len;
    } corpus[] = {
        CORPUS("\xEF\xBB\xBFname,note,dob\r\n\"Ann, Jr.\",\"say \"\"hi\"\"\",31.01.1990\nBob,\"two\r\nlines\",x\r\n\n  "
               "Cy  ,,\n"),
        CORPUS("name,dob\nAnn,1990-01-01\n\"Bob,1980-01-01\nCy,1970-01-01\nDee,2000-01-01\n"),
        CORPUS("name,dob\nAnn,\"1990\njunk\na,b,c\nx,\"y\nBob,1980-01-01\n"),
        CORPUS("name,dob\nAnn,\"x\n\nfoo"),
        CORPUS("name,dob\n\"a\"\rb,c\r\nd,e\r"),
        CORPUS("n,b,dob\n1,true,01.02.2000\n-0.5e+3,FALSE,1.2.2000\nx,0,31.02.2000\n1,2,3\n,,\n"),
        CORPUS("a,b\nA\xff,b\nA\0b,c\nA,b\"c\nA\rb,c\n\xE2\x82\xAC,\xF0\x9F\x98\x80\n"),
        CORPUS("\"h\nx\",y\r\n1,2\r\n\"3\"\"\",\"4\r\n\"\r\n"),
        CORPUS("a,b\n\"\"\"\",\",\"\n\"x\"\"\n\"\"\",\"\n\"\n"),
        CORPUS("a,b\n0123456789012345678901234567890123456789,x\n\"0123456789\n0123456789\n01234567890123456789\",x\nc,"
               "d\n"),
        CORPUS("a,b\n\"x\"\""),
        CORPUS("a,b\n\"x\"\"\n"),
        CORPUS("a,b\r"),
        CORPUS("a,b\r\n\r"),
        CORPUS("a\n\"\n\"\n\"\n"),
        CORPUS("a,b\n\"0123456789012345678901234567890123456789"),
        CORPUS("a,b\nx,\"0123456789012345678901234567890123456789012345\"\ny,z\n\"p\"q,r\ns,t\rs\nu,v"),
    };
    unit_rng rng = {42};
    for (size_t i = 0; i < sizeof corpus / sizeof *corpus; i++) {
        check_splits(&sc, 1 << 20, corpus[i].text, corpus[i].len, &rng);
        check_splits(&sc, 40, corpus[i].text, corpus[i].len, &rng); /* the limit inside the corpus's rows */
    }
    schema_free(&sc);
}

/* The oracle: JSON made from the cell values themselves, as csv.h says it is written. */
static void oracle_string(buf *b, const char *s, size_t n)
{
    buf_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': buf_puts(b, "\\\""); break;
        case '\\': buf_puts(b, "\\\\"); break;
        case '\b': buf_puts(b, "\\b"); break;
        case '\f': buf_puts(b, "\\f"); break;
        case '\n': buf_puts(b, "\\n"); break;
        case '\r': buf_puts(b, "\\r"); break;
        case '\t': buf_puts(b, "\\t"); break;
        default:
            if (c < 0x20)
                buf_printf(b, "\\u%04x", c);
            else
                buf_putc(b, (char)c);
        }
    }
    buf_putc(b, '"');
}

static void test_oracle_property(void **state)
{
    (void)state;
    schema sc;
    schema_default(&sc);
    static const char *const atoms[] = {"a",
                                        "b",
                                        " ",
                                        ",",
                                        "\"",
                                        "\n",
                                        "\r",
                                        "\r\n",
                                        "\xC3\xA9",
                                        "\t",
                                        "\\",
                                        "\x01",
                                        "\xF0\x9F\x98\x80",
                                        "xyzxyzxyzxyz",
                                        "\b"};
    unit_rng rng = {7};
    uint32_t rows = 0;
    for (int iter = 0; iter < 400; iter++) {
        uint32_t ncols = 2 + unit_below(&rng, 4), nrows = unit_below(&rng, 6);
        buf in = {0}, want = {0};
        if (unit_below(&rng, 3) == 0) buf_puts(&in, "\xEF\xBB\xBF");
        for (uint32_t c = 0; c < ncols; c++)
            buf_printf(&in, "%sc%u", c ? "," : "", c);
        uint64_t line = 1;
        buf_puts(&in, unit_below(&rng, 2) ? "\r\n" : "\n");
        line++;
        for (uint32_t r = 0; r < nrows; r++) {
            uint64_t row_line = line, row_offset = in.len;
            buf obj = {0};
            buf_putc(&obj, '{');
            for (uint32_t c = 0; c < ncols; c++) {
                buf cellv = {0};
                uint32_t len = unit_below(&rng, 5);
                for (uint32_t k = 0; k < len; k++)
                    buf_puts(&cellv, atoms[unit_below(&rng, sizeof atoms / sizeof *atoms)]);
                const char *v = cellv.data ? cellv.data : "";
                bool must_quote = strpbrk(v, ",\"\n\r") != NULL;
                if (c) buf_putc(&in, ',');
                if (must_quote || unit_below(&rng, 4) == 0) {
                    buf_putc(&in, '"');
                    for (size_t k = 0; k < cellv.len; k++) {
                        if (v[k] == '\n') line++;
                        buf_putc(&in, v[k]);
                        if (v[k] == '"') buf_putc(&in, '"');
                    }
                    buf_putc(&in, '"');
                } else {
                    buf_put(&in, v, cellv.len);
                }
                if (cellv.len) {
                    if (obj.len > 1) buf_putc(&obj, ',');
                    buf_printf(&obj, "\"c%u\":", c);
                    oracle_string(&obj, v, cellv.len);
                }
                buf_free(&cellv);
            }
            buf_putc(&obj, '}');
            bool last = r + 1 == nrows;
            const char *eol = last && unit_below(&rng, 2) ? "" : unit_below(&rng, 2) ? "\r\n" : "\n";
            buf_puts(&in, eol);
            buf_printf(&want, "%llu+%llu @%llu/%llu %s\n", (unsigned long long)row_line,
                       (unsigned long long)(line - row_line + 1), (unsigned long long)row_offset,
                       (unsigned long long)(in.len - row_offset), obj.data);
            line++;
            rows++;
            buf_free(&obj);
        }
        if (!want.data) buf_puts(&want, "");
        expect_rows_n(&sc, 1 << 20, in.data, in.len, want.data);
        if (iter % 20 == 0) check_splits(&sc, 1 << 20, in.data, in.len, &rng);
        buf_free(&in);
        buf_free(&want);
    }
    assert_true(rows > 800);
    schema_free(&sc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header),          cmocka_unit_test(test_header_mapped),
        cmocka_unit_test(test_quoting),         cmocka_unit_test(test_bad_rows),
        cmocka_unit_test(test_spans),           cmocka_unit_test(test_limits),
        cmocka_unit_test(test_typed),           cmocka_unit_test(test_messages),
        cmocka_unit_test(test_batch),           cmocka_unit_test(test_seek),
        cmocka_unit_test(test_prepare),         cmocka_unit_test(test_split_property),
        cmocka_unit_test(test_oracle_property),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
