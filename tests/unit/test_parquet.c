/*
 * test_parquet.c - the Parquet writer (src/parquet/): the Thrift compact encoder byte for byte (varints,
 * zigzag, field headers in short and long form, bool fields, lists short and long, binary, doubles,
 * nested structs), the RLE/bit-packed hybrid (the spec's own example, runs, literals padded only at the
 * end, and a decoder written here from Encodings.md over random sequences), and whole files written to
 * memory and read back through a Thrift compact decoder of this file: "PAR1" at both ends and the
 * footer length, the FileMetaData (version, schema with types, repetition, converted and logical types,
 * num_rows, key-value metadata, created_by, a column order per column), row groups cut by bytes and
 * never empty, every page header walked from the chunk's offsets (sizes add up to the chunk's, values
 * to num_values, dictionary page first), statistics that are true bounds (random values against an
 * oracle here: unsigned bytes, signed int64, doubles without NaN and with -0/+0, booleans, all-null
 * chunks without min/max, long strings without them), the dictionary's fall back to PLAIN, a 0-row
 * file, and the refusals (duplicate, empty names, a dictionary on a double, no created_by, a null in a
 * required column that keeps nothing of the batch, a missing value array, a failing write function).
 */
#include "unit.h"

#include <math.h>

#include "parquet/encoding.h"
#include "parquet/parquet.h"
#include "parquet/thrift_compact.h"

/* ---- byte comparison ---- */

static void assert_bytes(const buf *b, const unsigned char *want, size_t n)
{
    if (b->len != n || memcmp(b->data, want, n) != 0) {
        char got[512] = {0}, exp[512] = {0};
        for (size_t i = 0; i < b->len && i < 100; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%02x ", (unsigned char)b->data[i]);
        for (size_t i = 0; i < n && i < 100; i++)
            snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%02x ", want[i]);
        fail_msg("bytes differ\n got:  %s\n want: %s", got, exp);
    }
}

#define ASSERT_BYTES(b, ...)                                                                                           \
    do {                                                                                                               \
        const unsigned char want_[] = {__VA_ARGS__};                                                                   \
        assert_bytes((b), want_, sizeof want_);                                                                        \
    } while (0)

/* ---- Thrift compact encoder ---- */

static void test_varint_zigzag(void **state)
{
    (void)state;
    buf b = {0};
    tc_put_varint(&b, 0);
    tc_put_varint(&b, 1);
    tc_put_varint(&b, 127);
    tc_put_varint(&b, 128);
    tc_put_varint(&b, 300);
    tc_put_varint(&b, 50399); /* the spec's example */
    ASSERT_BYTES(&b, 0x00, 0x01, 0x7f, 0x80, 0x01, 0xac, 0x02, 0xdf, 0x89, 0x03);
    b.len = 0;
    tc_put_varint(&b, UINT64_MAX);
    ASSERT_BYTES(&b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01);

    assert_int_equal(tc_zigzag64(0), 0);
    assert_int_equal(tc_zigzag64(-1), 1);
    assert_int_equal(tc_zigzag64(1), 2);
    assert_int_equal(tc_zigzag64(-2), 3);
    assert_int_equal(tc_zigzag64(2), 4);
    assert_true(tc_zigzag64(INT64_MAX) == UINT64_MAX - 1);
    assert_true(tc_zigzag64(INT64_MIN) == UINT64_MAX);
    assert_true(tc_zigzag64(INT32_MIN) == 0xffffffffu);
    b.len = 0;
    tc_put_zigzag(&b, -64);
    tc_put_zigzag(&b, 64);
    ASSERT_BYTES(&b, 0x7f, 0x80, 0x01);
    buf_free(&b);
}

static void test_field_headers(void **state)
{
    (void)state;
    buf b = {0};
    tc_writer t;
    tc_init(&t, &b);
    tc_struct_begin(&t);
    tc_field_i32(&t, 1, 5);      /* delta 1, type 5: 0x15, zigzag 10 */
    tc_field_i64(&t, 3, -1);     /* delta 2, type 6: 0x26, zigzag 1 */
    tc_field_i32(&t, 18, 0);     /* delta 15: still short: 0xf5 */
    tc_field_i32(&t, 35, 1);     /* delta 17: long form 0x05, zigzag(35) = 70 = 0x46 */
    tc_field_i16(&t, 4, -3);     /* a smaller id: long form 0x04, zigzag(4) = 8, value zigzag(-3) = 5 */
    tc_field_bool(&t, 5, true);  /* bool in the type nibble: 0x11 */
    tc_field_bool(&t, 6, false); /* 0x12 */
    tc_field_i8(&t, 7, -2);      /* 0x13, one raw byte */
    tc_struct_end(&t);
    ASSERT_BYTES(&b, 0x15, 0x0a, 0x26, 0x01, 0xf5, 0x00, 0x05, 0x46, 0x02, 0x04, 0x08, 0x05, 0x11, 0x12, 0x13, 0xfe,
                 0x00);

    /* nested structs keep their own last id; the outer one resumes after */
    b.len = 0;
    tc_init(&t, &b);
    tc_struct_begin(&t);
    tc_field_i32(&t, 2, 1);        /* 0x25 0x02 */
    tc_field_struct(&t, 5);        /* 0x3c */
    tc_field_i32(&t, 1, 2);        /* inner: delta from 0: 0x15 0x04 */
    tc_field_empty_struct(&t, 16); /* delta 15 from 1: 0xfc, its stop 0x00 */
    tc_struct_end(&t);             /* 0x00 */
    tc_field_i32(&t, 6, 3);        /* outer: delta 1 from 5: 0x15 0x06 */
    tc_struct_end(&t);
    ASSERT_BYTES(&b, 0x25, 0x02, 0x3c, 0x15, 0x04, 0xfc, 0x00, 0x00, 0x15, 0x06, 0x00);

    /* binary, string, double (little-endian IEEE 754) */
    b.len = 0;
    tc_init(&t, &b);
    tc_struct_begin(&t);
    tc_field_binary(&t, 1, "abc", 3);
    tc_field_string(&t, 2, "");
    tc_field_double(&t, 3, 1.0);
    tc_struct_end(&t);
    ASSERT_BYTES(&b, 0x18, 0x03, 'a', 'b', 'c', 0x18, 0x00, 0x17, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x00);
    buf_free(&b);
}

static void test_lists(void **state)
{
    (void)state;
    buf b = {0};
    tc_writer t;
    tc_init(&t, &b);
    tc_struct_begin(&t);
    tc_field_list(&t, 1, TC_I32, 3); /* 0x19, then size 3 type 5: 0x35 */
    tc_elem_i32(&t, 0);
    tc_elem_i32(&t, -1);
    tc_elem_i32(&t, 8);
    tc_field_list(&t, 2, TC_BINARY, 1); /* 0x19, 0x18 */
    tc_elem_string(&t, "x");
    tc_field_list(&t, 3, TC_STRUCT, 2); /* 0x19, 0x2c */
    tc_struct_begin(&t);
    tc_field_i32(&t, 1, 1); /* element structs count ids from 0 */
    tc_struct_end(&t);
    tc_struct_begin(&t);
    tc_struct_end(&t);
    tc_field_list(&t, 4, TC_ELEM_BOOL, 2); /* bools in a list: a byte each, 1 and 0 */
    tc_elem_bool(&t, true);
    tc_elem_bool(&t, false);
    tc_struct_end(&t);
    ASSERT_BYTES(&b, 0x19, 0x35, 0x00, 0x01, 0x10, 0x19, 0x18, 0x01, 'x', 0x19, 0x2c, 0x15, 0x02, 0x00, 0x00, 0x19,
                 0x22, 0x01, 0x00, 0x00);

    b.len = 0;
    tc_list_header(&b, TC_I32, 14); /* the largest short form */
    tc_list_header(&b, TC_I32, 15); /* long form */
    tc_list_header(&b, TC_STRUCT, 300);
    tc_list_header(&b, TC_I64, 0);
    ASSERT_BYTES(&b, 0xe5, 0xf5, 0x0f, 0xfc, 0xac, 0x02, 0x06);
    buf_free(&b);
}

/* ---- RLE/bit-packed hybrid ---- */

static uint64_t read_uleb(const unsigned char **p, const unsigned char *end)
{
    uint64_t v = 0;
    int shift = 0;
    for (;;) {
        if (*p >= end) fail_msg("varint past the end");
        unsigned char c = *(*p)++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) return v;
        shift += 7;
        if (shift > 63) fail_msg("varint too long");
    }
}

/* Decode n values of the hybrid (Encodings.md), checking that only the last run is padded and that
 * every byte is consumed. */
static void rle_decode(const unsigned char *p, size_t len, int bw, uint32_t *out, size_t n)
{
    const unsigned char *end = p + len;
    size_t got = 0;
    while (got < n) {
        uint64_t h = read_uleb(&p, end);
        if (h & 1) {
            size_t count = (size_t)(h >> 1) * 8;
            if ((size_t)(end - p) < (h >> 1) * (size_t)bw) fail_msg("bit-packed run past the end");
            uint64_t acc = 0;
            int nbits = 0;
            for (size_t i = 0; i < count; i++) {
                while (nbits < bw) {
                    acc |= (uint64_t)*p++ << nbits;
                    nbits += 8;
                }
                uint32_t v = (uint32_t)(acc & ((bw == 32) ? 0xffffffffu : ((1u << bw) - 1)));
                acc >>= bw;
                nbits -= bw;
                if (got < n)
                    out[got++] = v;
                else if (v != 0)
                    fail_msg("non-zero padding");
            }
            if (got == n && p != end) fail_msg("a padded bit-packed run is not the last");
        } else {
            size_t count = (size_t)(h >> 1);
            if (count == 0) fail_msg("empty RLE run");
            uint32_t v = 0;
            for (int i = 0; i < (bw + 7) / 8; i++) {
                if (p >= end) fail_msg("RLE value past the end");
                v |= (uint32_t)*p++ << (8 * i);
            }
            if (got + count > n) fail_msg("RLE run longer than the values");
            for (size_t i = 0; i < count; i++)
                out[got++] = v;
        }
    }
    if (p != end) fail_msg("%zu bytes left after the values", (size_t)(end - p));
}

static void test_rle_hybrid(void **state)
{
    (void)state;
    assert_int_equal(pq_bit_width(0), 0);
    assert_int_equal(pq_bit_width(1), 1);
    assert_int_equal(pq_bit_width(2), 2);
    assert_int_equal(pq_bit_width(7), 3);
    assert_int_equal(pq_bit_width(8), 4);
    assert_int_equal(pq_bit_width(0xffffffffu), 32);

    buf b = {0};
    /* the example of Encodings.md: 0..7 at bit width 3 */
    uint32_t seq[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    pq_rle_hybrid_u32(&b, seq, 8, 3);
    ASSERT_BYTES(&b, 0x03, 0x88, 0xc6, 0xfa);

    /* 100 ones at width 1: one RLE run, header 100 << 1 = 200 */
    uint8_t ones[100];
    memset(ones, 1, sizeof ones);
    b.len = 0;
    pq_rle_hybrid_u8(&b, ones, 100, 1);
    ASSERT_BYTES(&b, 0xc8, 0x01, 0x01);

    /* 3 literals then 13 equal: 5 of the run complete the first group, 8 stay a run */
    uint8_t mixed[16] = {1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    b.len = 0;
    pq_rle_hybrid_u8(&b, mixed, 16, 1);
    ASSERT_BYTES(&b, 0x03, 0x05, 0x10, 0x00);

    /* 3 values: one padded bit-packed group */
    b.len = 0;
    pq_rle_hybrid_u8(&b, mixed, 3, 1);
    ASSERT_BYTES(&b, 0x03, 0x05);

    /* a value over one byte in an RLE run takes ceil(bw/8) bytes */
    uint32_t big[9] = {300, 300, 300, 300, 300, 300, 300, 300, 300};
    b.len = 0;
    pq_rle_hybrid_u32(&b, big, 9, 9);
    ASSERT_BYTES(&b, 0x12, 0x2c, 0x01);

    /* random sequences with runs, every width: decoded by the decoder above */
    unit_rng rng = {42};
    for (int iter = 0; iter < 2000; iter++) {
        int bw = 1 + (int)unit_below(&rng, 32);
        size_t n = unit_below(&rng, 300);
        uint32_t *v = malloc((n + 1) * sizeof *v), *back = malloc((n + 1) * sizeof *back);
        uint32_t mask = bw == 32 ? 0xffffffffu : (1u << bw) - 1;
        for (size_t i = 0; i < n;) {
            uint32_t x = (uint32_t)unit_rand(&rng) & mask;
            size_t run = unit_below(&rng, 4) == 0 ? unit_below(&rng, 40) : 1;
            for (size_t k = 0; k <= run && i < n; k++)
                v[i++] = x;
        }
        b.len = 0;
        pq_rle_hybrid_u32(&b, v, n, bw);
        rle_decode((const unsigned char *)b.data, b.len, bw, back, n);
        for (size_t i = 0; i < n; i++)
            if (back[i] != v[i]) fail_msg("iter %d bw %d: value %zu is %u, wrote %u", iter, bw, i, back[i], v[i]);
        free(v);
        free(back);
    }
    buf_free(&b);
}

/* ---- a Thrift compact decoder, for reading back what the writer made ---- */

typedef struct tval tval;
struct tval {
    int type; /* field type; TC_BOOL_TRUE for every bool, b holds the value */
    bool b;
    int64_t i;
    double d;
    const unsigned char *bin;
    size_t len;
    int16_t *ids; /* struct: field ids, values in elems */
    tval *elems;  /* struct fields or list elements */
    size_t n;
    int elem_type;
};

typedef struct {
    const unsigned char *p, *end;
    arena *mem;
} tdec;

static void t_value(tdec *d, int type, tval *out);

static void t_struct(tdec *d, tval *out)
{
    out->type = TC_STRUCT;
    size_t cap = 4;
    out->ids = arena_alloc(d->mem, cap * sizeof *out->ids);
    out->elems = arena_alloc(d->mem, cap * sizeof *out->elems);
    out->n = 0;
    int16_t last = 0;
    for (;;) {
        if (d->p >= d->end) fail_msg("struct past the end");
        unsigned char h = *d->p++;
        if (h == 0) return;
        int type = h & 0x0f, delta = h >> 4;
        int16_t id = delta ? (int16_t)(last + delta) : 0;
        if (!delta) {
            uint64_t z = read_uleb(&d->p, d->end);
            id = (int16_t)((z >> 1) ^ (~(z & 1) + 1));
        }
        last = id;
        if (out->n == cap) {
            int16_t *ids = arena_alloc(d->mem, cap * 2 * sizeof *ids);
            tval *el = arena_alloc(d->mem, cap * 2 * sizeof *el);
            memcpy(ids, out->ids, cap * sizeof *ids);
            memcpy(el, out->elems, cap * sizeof *el);
            out->ids = ids;
            out->elems = el;
            cap *= 2;
        }
        tval *v = &out->elems[out->n];
        memset(v, 0, sizeof *v);
        out->ids[out->n++] = id;
        if (type == TC_BOOL_TRUE || type == TC_BOOL_FALSE) {
            v->type = TC_BOOL_TRUE;
            v->b = type == TC_BOOL_TRUE;
        } else {
            t_value(d, type, v);
        }
    }
}

static void t_value(tdec *d, int type, tval *out)
{
    memset(out, 0, sizeof *out);
    out->type = type;
    switch (type) {
    case TC_ELEM_BOOL: /* in a list */
        if (d->p >= d->end) fail_msg("bool past the end");
        out->type = TC_BOOL_TRUE;
        out->b = *d->p++ == 1;
        break;
    case TC_I8:
        if (d->p >= d->end) fail_msg("i8 past the end");
        out->i = (int8_t)*d->p++;
        break;
    case TC_I16:
    case TC_I32:
    case TC_I64: {
        uint64_t z = read_uleb(&d->p, d->end);
        out->i = (int64_t)((z >> 1) ^ (~(z & 1) + 1));
        break;
    }
    case TC_DOUBLE: {
        if (d->end - d->p < 8) fail_msg("double past the end");
        uint64_t bits = 0;
        for (int i = 7; i >= 0; i--)
            bits = bits << 8 | d->p[i];
        memcpy(&out->d, &bits, 8);
        d->p += 8;
        break;
    }
    case TC_BINARY: {
        uint64_t n = read_uleb(&d->p, d->end);
        if ((uint64_t)(d->end - d->p) < n) fail_msg("binary past the end");
        out->bin = d->p;
        out->len = (size_t)n;
        d->p += n;
        break;
    }
    case TC_LIST:
    case TC_SET: {
        if (d->p >= d->end) fail_msg("list past the end");
        unsigned char h = *d->p++;
        size_t n = h >> 4;
        out->elem_type = h & 0x0f;
        if (n == 15) n = (size_t)read_uleb(&d->p, d->end);
        if (n > (size_t)(d->end - d->p) + 1) fail_msg("list of %zu elements past the end", n);
        out->n = n;
        out->elems = arena_alloc(d->mem, (n ? n : 1) * sizeof *out->elems);
        for (size_t i = 0; i < n; i++)
            t_value(d, out->elem_type, &out->elems[i]);
        break;
    }
    case TC_STRUCT: t_struct(d, out); break;
    default: fail_msg("unexpected Thrift type %d", type);
    }
}

static tval t_decode(arena *mem, const void *p, size_t n, size_t *used)
{
    tdec d = {p, (const unsigned char *)p + n, mem};
    tval v;
    t_struct(&d, &v);
    if (used) *used = (size_t)(d.p - (const unsigned char *)p);
    return v;
}

static const tval *tget(const tval *s, int16_t id)
{
    assert_int_equal(s->type, TC_STRUCT);
    for (size_t i = 0; i < s->n; i++)
        if (s->ids[i] == id) return &s->elems[i];
    return NULL;
}

static const tval *tmust(const tval *s, int16_t id)
{
    const tval *v = tget(s, id);
    if (!v) fail_msg("field %d missing", id);
    return v;
}

static int64_t tint(const tval *s, int16_t id) { return tmust(s, id)->i; }

static bool tstr_is(const tval *v, const char *s) { return v->len == strlen(s) && memcmp(v->bin, s, v->len) == 0; }

/* ---- writing files to memory ---- */

typedef struct {
    buf out;
    int calls;
    int fail_at; /* the call that fails (1-based), 0 never */
} sink;

static ms_code sink_write(void *ctx, const void *data, size_t len, ms_err *e)
{
    sink *s = ctx;
    s->calls++;
    if (s->fail_at && s->calls >= s->fail_at) return ms_fail(e, MS_EIO, "disk on fire");
    buf_put(&s->out, data, len);
    return MS_OK;
}

/* The file's FileMetaData, after checking its framing. */
static tval read_footer(arena *mem, const sink *s)
{
    const unsigned char *f = (const unsigned char *)s->out.data;
    size_t n = s->out.len;
    assert_true(n >= 12);
    assert_memory_equal(f, "PAR1", 4);
    assert_memory_equal(f + n - 4, "PAR1", 4);
    uint32_t flen = (uint32_t)f[n - 8] | (uint32_t)f[n - 7] << 8 | (uint32_t)f[n - 6] << 16 | (uint32_t)f[n - 5] << 24;
    assert_true(flen <= n - 12);
    size_t used = 0;
    tval meta = t_decode(mem, f + n - 8 - flen, flen, &used);
    assert_int_equal(used, flen); /* the footer length is exactly the FileMetaData */
    return meta;
}

/* Walk one column chunk's pages from its offsets; check sizes and counts against its metadata. Returns
 * the number of data pages. */
static int walk_chunk(arena *mem, const sink *s, const tval *md, int64_t *null_count_pages)
{
    const unsigned char *f = (const unsigned char *)s->out.data;
    int64_t data_off = tint(md, 9);
    const tval *dict_off = tget(md, 11);
    int64_t pos = dict_off ? dict_off->i : data_off;
    int64_t end = pos + tint(md, 7);
    int64_t values = 0, uncompressed = 0;
    int pages = 0;
    bool first = true;
    *null_count_pages = 0;
    while (pos < end) {
        size_t used = 0;
        tval ph = t_decode(mem, f + pos, (size_t)(end - pos), &used);
        int64_t type = tint(&ph, 1), csize = tint(&ph, 3);
        uncompressed += (int64_t)used + tint(&ph, 2);
        if (type == 2) {
            assert_true(first);                          /* the dictionary page comes first */
            assert_int_equal(tint(tmust(&ph, 7), 2), 0); /* PLAIN */
            assert_true(pos + (int64_t)used + csize == data_off);
        } else {
            assert_int_equal(type, 0);
            if (first) assert_true(pos == data_off);
            const tval *dh = tmust(&ph, 5);
            values += tint(dh, 1);
            assert_int_equal(tint(dh, 3), 3); /* RLE levels */
            assert_int_equal(tint(dh, 4), 3);
            *null_count_pages += tint(tmust(dh, 5), 3);
            pages++;
        }
        first = false;
        pos += (int64_t)used + csize;
    }
    assert_true(pos == end);
    assert_int_equal(values, tint(md, 5));
    assert_int_equal(uncompressed, tint(md, 6));
    return pages;
}

static void test_file_metadata(void **state)
{
    (void)state;
    pq_column cols[] = {
        {"id", PQ_STRING, false, false}, {"type", PQ_STRING, true, true}, {"ts", PQ_TIMESTAMP, false, false},
        {"n", PQ_INT64, true, false},    {"x", PQ_DOUBLE, true, false},   {"ok", PQ_BOOLEAN, false, false},
        {"doc", PQ_JSON, true, false},
    };
    const char *kv[] = {"medstream.as_of", "2026-11-29T18:00:00Z", "k2", "", NULL};
    pq_options opt = {.codec = PQ_SNAPPY, .created_by = "medstream version 0.12 (build test)", .key_values = kv};
    sink s = {0};
    pq_writer *w = NULL;
    ms_err e = {0};
    assert_int_equal(pq_writer_open(&w, cols, 7, &opt, sink_write, &s, &e), MS_OK);
    assert_int_equal(s.out.len, 4);
    assert_int_equal(pq_writer_bytes(w), 4);

    enum { N = 5 };
    const char *ids[N] = {"r1", "r2", "r3", "r4", "r5"};
    uint32_t id_len[N] = {2, 2, 2, 2, 2};
    const char *types[N] = {"lab", "visit", "lab", NULL, "lab"};
    uint32_t type_len[N] = {3, 5, 3, 0, 3};
    bool type_present[N] = {true, true, true, false, true};
    int64_t ts[N] = {1, 2, 3, 4, 5};
    int64_t nn[N] = {INT64_MIN, 0, INT64_MAX, 7, -7};
    double x[N] = {1.5, -0.0, 0.0, NAN, 2.5};
    bool ok[N] = {true, false, true, true, false};
    const char *doc[N] = {"{}", "{\"a\":1}", "[]", "null", "\"\""};
    uint32_t doc_len[N] = {2, 7, 2, 4, 2};
    pq_values v[7] = {
        {.str = ids, .len = id_len},
        {.present = type_present, .str = types, .len = type_len},
        {.i64 = ts},
        {.i64 = nn},
        {.f64 = x},
        {.b = ok},
        {.str = doc, .len = doc_len},
    };
    assert_int_equal(pq_writer_append(w, N, v, &e), MS_OK);
    uint64_t rows = 0;
    assert_int_equal(pq_writer_close(w, &rows, &e), MS_OK);
    assert_int_equal(rows, N);
    assert_int_equal(pq_writer_bytes(w), s.out.len);
    pq_writer_free(w);

    arena mem = {0};
    tval meta = read_footer(&mem, &s);
    assert_int_equal(tint(&meta, 1), 1); /* version */
    assert_int_equal(tint(&meta, 3), N); /* num_rows */
    const tval *schema = tmust(&meta, 2);
    assert_int_equal(schema->n, 8);
    assert_int_equal(tint(&schema->elems[0], 5), 7); /* the root's num_children */
    assert_null(tget(&schema->elems[0], 1));         /* the root has no type */
    /* type, repetition, converted type, logical type id of each leaf */
    const int want[7][4] = {{6, 0, 0, 1},   {6, 1, 0, 1},   {2, 0, 10, 8}, {2, 1, 18, 10},
                            {5, 1, -1, -1}, {0, 0, -1, -1}, {6, 1, 19, 12}};
    for (int i = 0; i < 7; i++) {
        const tval *el = &schema->elems[i + 1];
        assert_true(tstr_is(tmust(el, 4), cols[i].name));
        assert_int_equal(tint(el, 1), want[i][0]);
        assert_int_equal(tint(el, 3), want[i][1]);
        const tval *ct = tget(el, 6), *lt = tget(el, 10);
        if (want[i][2] < 0) {
            assert_null(ct);
            assert_null(lt);
            continue;
        }
        assert_int_equal(ct->i, want[i][2]);
        assert_int_equal(lt->n, 1); /* a union: one member */
        assert_int_equal(lt->ids[0], want[i][3]);
    }
    const tval *tsl = tmust(tmust(&schema->elems[3], 10), 8);
    assert_true(tmust(tsl, 1)->b);           /* isAdjustedToUTC */
    assert_non_null(tget(tmust(tsl, 2), 2)); /* MICROS */
    const tval *intl = tmust(tmust(&schema->elems[4], 10), 10);
    assert_int_equal(tint(intl, 1), 64);
    assert_true(tmust(intl, 2)->b);

    const tval *kvs = tmust(&meta, 5);
    assert_int_equal(kvs->n, 2);
    assert_true(tstr_is(tmust(&kvs->elems[0], 1), "medstream.as_of"));
    assert_true(tstr_is(tmust(&kvs->elems[0], 2), "2026-11-29T18:00:00Z"));
    assert_true(tstr_is(tmust(&kvs->elems[1], 2), ""));
    assert_true(tstr_is(tmust(&meta, 6), "medstream version 0.12 (build test)"));
    const tval *orders = tmust(&meta, 7);
    assert_int_equal(orders->n, 7);
    for (size_t i = 0; i < orders->n; i++)
        assert_non_null(tget(&orders->elems[i], 1)); /* TYPE_ORDER */

    const tval *rgs = tmust(&meta, 4);
    assert_int_equal(rgs->n, 1);
    const tval *rg = &rgs->elems[0];
    assert_int_equal(tint(rg, 3), N);
    assert_int_equal(tint(rg, 5), 4); /* the first chunk starts after "PAR1" */
    const tval *chunks = tmust(rg, 1);
    assert_int_equal(chunks->n, 7);
    int64_t sum_unc = 0, sum_cmp = 0;
    for (int i = 0; i < 7; i++) {
        const tval *md = tmust(&chunks->elems[i], 3);
        assert_int_equal(tint(md, 4), 1); /* SNAPPY */
        assert_int_equal(tint(md, 5), N);
        const tval *path = tmust(md, 3);
        assert_int_equal(path->n, 1);
        assert_true(tstr_is(&path->elems[0], cols[i].name));
        int64_t nulls = 0;
        assert_int_equal(walk_chunk(&mem, &s, md, &nulls), 1);
        const tval *st = tmust(md, 12);
        assert_int_equal(tint(st, 3), nulls);
        sum_unc += tint(md, 6);
        sum_cmp += tint(md, 7);
    }
    assert_int_equal(tint(rg, 2), sum_unc);
    assert_int_equal(tint(rg, 6), sum_cmp);
    /* the dictionary column: PLAIN dictionary page, RLE_DICTIONARY data page */
    const tval *tmd = tmust(&chunks->elems[1], 3);
    assert_non_null(tget(tmd, 11));
    const tval *encs = tmust(tmd, 2);
    bool has_rd = false;
    for (size_t i = 0; i < encs->n; i++)
        has_rd |= encs->elems[i].i == 8;
    assert_true(has_rd);
    assert_int_equal(tint(tmust(tmd, 12), 3), 1); /* one null */
    /* the double column: min -0.0, max 2.5, one NaN */
    const tval *xst = tmust(tmust(&chunks->elems[4], 3), 12);
    double lo, hi;
    assert_int_equal(tmust(xst, 6)->len, 8);
    memcpy(&lo, tmust(xst, 6)->bin, 8);
    memcpy(&hi, tmust(xst, 5)->bin, 8);
    assert_true(lo == 0 && signbit(lo));
    assert_true(hi == 2.5);
    assert_int_equal(tint(xst, 9), 1);
    /* int64 extremes */
    const tval *nst = tmust(tmust(&chunks->elems[3], 3), 12);
    int64_t ilo, ihi;
    memcpy(&ilo, tmust(nst, 6)->bin, 8);
    memcpy(&ihi, tmust(nst, 5)->bin, 8);
    assert_true(ilo == INT64_MIN && ihi == INT64_MAX);
    arena_free(&mem);
    buf_free(&s.out);
}

/* ---- statistics against an oracle ---- */

static int bytes_order(const char *a, size_t an, const char *b, size_t bn)
{
    for (size_t i = 0; i < an && i < bn; i++)
        if ((unsigned char)a[i] != (unsigned char)b[i]) return (unsigned char)a[i] < (unsigned char)b[i] ? -1 : 1;
    return an < bn ? -1 : an > bn;
}

static void test_statistics(void **state)
{
    (void)state;
    unit_rng rng = {7};
    for (int iter = 0; iter < 60; iter++) {
        pq_column cols[] = {{"s", PQ_STRING, true, iter % 2 == 0},
                            {"i", PQ_INT64, true, iter % 3 == 0},
                            {"d", PQ_DOUBLE, true, false},
                            {"b", PQ_BOOLEAN, true, false}};
        pq_options opt = {.codec = (pq_codec)(iter % 3), .created_by = "t", .page_bytes = 64 + iter * 10};
        sink s = {0};
        pq_writer *w = NULL;
        ms_err e = {0};
        assert_int_equal(pq_writer_open(&w, cols, 4, &opt, sink_write, &s, &e), MS_OK);
        size_t n = 1 + unit_below(&rng, 400);
        int null_pct = iter % 5 == 4 ? 100 : (int)unit_below(&rng, 60);
        char **strs = calloc(n, sizeof *strs);
        uint32_t *lens = calloc(n, sizeof *lens);
        int64_t *ints = calloc(n, sizeof *ints);
        double *dbls = calloc(n, sizeof *dbls);
        bool *bools = calloc(n, sizeof *bools), *present = calloc(n, sizeof *present);
        const char *smin = NULL, *smax = NULL;
        size_t sminn = 0, smaxn = 0;
        int64_t imin = INT64_MAX, imax = INT64_MIN;
        double dmin = INFINITY, dmax = -INFINITY;
        int bmin = 2, bmax = -1;
        int64_t nulls = 0, nans = 0;
        bool any_d = false;
        for (size_t r = 0; r < n; r++) {
            present[r] = (int)unit_below(&rng, 100) >= null_pct;
            lens[r] = unit_below(&rng, 6);
            strs[r] = malloc(lens[r] + 1);
            for (uint32_t k = 0; k < lens[r]; k++) /* bytes over 0x7f too: unsigned order matters */
                strs[r][k] =
                    (char)(unit_below(&rng, 3) == 0 ? 0x80 + unit_below(&rng, 0x80) : 'a' + unit_below(&rng, 3));
            strs[r][lens[r]] = 0;
            ints[r] = (int64_t)unit_rand(&rng) >> unit_below(&rng, 64);
            uint32_t dk = unit_below(&rng, 10);
            dbls[r] = dk == 0 ? NAN : dk == 1 ? -0.0 : dk == 2 ? 0.0 : dk == 3 ? -INFINITY : ((double)ints[r] / 1e6);
            bools[r] = unit_below(&rng, 2);
            if (!present[r]) {
                nulls++;
                continue;
            }
            if (!smin || bytes_order(strs[r], lens[r], smin, sminn) < 0) smin = strs[r], sminn = lens[r];
            if (!smax || bytes_order(strs[r], lens[r], smax, smaxn) > 0) smax = strs[r], smaxn = lens[r];
            if (ints[r] < imin) imin = ints[r];
            if (ints[r] > imax) imax = ints[r];
            if (isnan(dbls[r])) {
                nans++;
            } else {
                any_d = true;
                if (dbls[r] < dmin) dmin = dbls[r];
                if (dbls[r] > dmax) dmax = dbls[r];
            }
            if (bools[r] < bmin) bmin = bools[r];
            if (bools[r] > bmax) bmax = bools[r];
        }
        pq_values v[4] = {{.present = present, .str = (const char *const *)strs, .len = lens},
                          {.present = present, .i64 = ints},
                          {.present = present, .f64 = dbls},
                          {.present = present, .b = bools}};
        /* in a few batches */
        size_t done = 0;
        while (done < n) {
            size_t k = 1 + unit_below(&rng, (uint32_t)(n - done));
            pq_values part[4];
            for (int c = 0; c < 4; c++) {
                part[c] = v[c];
                part[c].present = present + done;
            }
            part[0].str = (const char *const *)strs + done;
            part[0].len = lens + done;
            part[1].i64 = ints + done;
            part[2].f64 = dbls + done;
            part[3].b = bools + done;
            assert_int_equal(pq_writer_append(w, k, part, &e), MS_OK);
            done += k;
        }
        assert_int_equal(pq_writer_close(w, NULL, &e), MS_OK);
        pq_writer_free(w);

        arena mem = {0};
        tval meta = read_footer(&mem, &s);
        const tval *chunks = tmust(&tmust(&meta, 4)->elems[0], 1);
        for (int c = 0; c < 4; c++) {
            const tval *md = tmust(&chunks->elems[c], 3);
            int64_t page_nulls = 0;
            walk_chunk(&mem, &s, md, &page_nulls);
            const tval *st = tmust(md, 12);
            assert_int_equal(tint(st, 3), nulls);
            assert_int_equal(page_nulls, nulls);
            const tval *lo = tget(st, 6), *hi = tget(st, 5);
            bool want_minmax = c == 2 ? any_d : nulls < (int64_t)n;
            if (!want_minmax) {
                assert_null(lo);
                assert_null(hi);
                continue;
            }
            assert_non_null(lo);
            assert_non_null(hi);
            if (c == 0) {
                assert_true(lo->len == sminn && memcmp(lo->bin, smin, sminn) == 0);
                assert_true(hi->len == smaxn && memcmp(hi->bin, smax, smaxn) == 0);
            } else if (c == 1) {
                int64_t a, b;
                memcpy(&a, lo->bin, 8);
                memcpy(&b, hi->bin, 8);
                assert_true(a == imin && b == imax);
            } else if (c == 2) {
                double a, b;
                memcpy(&a, lo->bin, 8);
                memcpy(&b, hi->bin, 8);
                assert_true(a == dmin && b == dmax);
                if (a == 0) assert_true(signbit(a));  /* a zero min is -0.0 */
                if (b == 0) assert_false(signbit(b)); /* a zero max is +0.0 */
                assert_int_equal(tint(st, 9), nans);
            } else {
                assert_int_equal(lo->len, 1);
                assert_int_equal(lo->bin[0], bmin);
                assert_int_equal(hi->bin[0], bmax);
            }
        }
        arena_free(&mem);
        for (size_t r = 0; r < n; r++)
            free(strs[r]);
        free(strs), free(lens), free(ints), free(dbls), free(bools), free(present);
        buf_free(&s.out);
    }

    /* a string longer than PQ_STATS_MAX_BYTES: no min/max, null_count still there */
    pq_column col = {"s", PQ_STRING, false, false};
    pq_options opt = {.codec = PQ_ZSTD, .created_by = "t"};
    sink s = {0};
    pq_writer *w = NULL;
    ms_err e = {0};
    assert_int_equal(pq_writer_open(&w, &col, 1, &opt, sink_write, &s, &e), MS_OK);
    char *big = malloc(PQ_STATS_MAX_BYTES + 1);
    memset(big, 'z', PQ_STATS_MAX_BYTES + 1);
    const char *strs[2] = {"a", big};
    uint32_t lens[2] = {1, PQ_STATS_MAX_BYTES + 1};
    pq_values v = {.str = strs, .len = lens};
    assert_int_equal(pq_writer_append(w, 2, &v, &e), MS_OK);
    assert_int_equal(pq_writer_close(w, NULL, &e), MS_OK);
    pq_writer_free(w);
    arena mem = {0};
    tval meta = read_footer(&mem, &s);
    const tval *st = tmust(tmust(&tmust(&tmust(&meta, 4)->elems[0], 1)->elems[0], 3), 12);
    assert_int_equal(tint(st, 3), 0);
    assert_null(tget(st, 5));
    assert_null(tget(st, 6));
    arena_free(&mem);
    free(big);
    buf_free(&s.out);
}

/* The chunk statistics of one double column holding x[0..n). */
static void double_bounds(const double *x, size_t n, double *lo, double *hi, bool *has)
{
    pq_column col = {"x", PQ_DOUBLE, false, false};
    pq_options opt = {.codec = PQ_UNCOMPRESSED, .created_by = "t"};
    sink s = {0};
    pq_writer *w = NULL;
    ms_err e = {0};
    assert_int_equal(pq_writer_open(&w, &col, 1, &opt, sink_write, &s, &e), MS_OK);
    pq_values v = {.f64 = x};
    assert_int_equal(pq_writer_append(w, n, &v, &e), MS_OK);
    assert_int_equal(pq_writer_close(w, NULL, &e), MS_OK);
    pq_writer_free(w);
    arena mem = {0};
    tval meta = read_footer(&mem, &s);
    const tval *st = tmust(tmust(&tmust(&tmust(&meta, 4)->elems[0], 1)->elems[0], 3), 12);
    *has = tget(st, 6) != NULL;
    if (*has) {
        memcpy(lo, tmust(st, 6)->bin, 8);
        memcpy(hi, tmust(st, 5)->bin, 8);
    }
    arena_free(&mem);
    buf_free(&s.out);
}

static void test_double_zeros(void **state)
{
    (void)state;
    double lo, hi;
    bool has;
    const double a[] = {0.0, 1.0, -0.0}; /* +0.0 seen first: the min is still written -0.0 */
    double_bounds(a, 3, &lo, &hi, &has);
    assert_true(has && lo == 0 && signbit(lo) && hi == 1.0);
    const double b[] = {-0.0, -1.0, 0.0}; /* -0.0 seen first: the max is still written +0.0 */
    double_bounds(b, 3, &lo, &hi, &has);
    assert_true(has && lo == -1.0 && hi == 0 && !signbit(hi));
    const double c[] = {NAN, 0.0};
    double_bounds(c, 2, &lo, &hi, &has);
    assert_true(has && signbit(lo) && !signbit(hi));
    const double d[] = {NAN, -NAN};
    double_bounds(d, 2, &lo, &hi, &has);
    assert_false(has); /* all NaN: no min/max */
    const double e[] = {-INFINITY, INFINITY, NAN};
    double_bounds(e, 3, &lo, &hi, &has);
    assert_true(has && lo == -INFINITY && hi == INFINITY);
}

/* ---- row groups, pages, dictionary fall-back ---- */

static void test_row_groups(void **state)
{
    (void)state;
    pq_column cols[] = {{"k", PQ_INT64, false, false}, {"name", PQ_STRING, true, true}};
    pq_options opt = {.codec = PQ_ZSTD, .created_by = "t", .row_group_bytes = 100000, .page_bytes = 4096};
    sink s = {0};
    pq_writer *w = NULL;
    ms_err e = {0};
    assert_int_equal(pq_writer_open(&w, cols, 2, &opt, sink_write, &s, &e), MS_OK);
    enum { N = 30000 };
    int64_t *k = malloc(N * sizeof *k);
    const char **names = malloc(N * sizeof *names);
    uint32_t *lens = malloc(N * sizeof *lens);
    bool *present = malloc(N);
    char(*text)[40] = malloc(N * sizeof *text);
    for (size_t r = 0; r < N; r++) {
        k[r] = (int64_t)r;
        snprintf(text[r], sizeof text[r], "name-%zu", r < N / 2 ? r % 10 : r * 7919); /* then high cardinality */
        names[r] = text[r];
        lens[r] = (uint32_t)strlen(text[r]);
        present[r] = r % 13 != 0;
    }
    /* batches of 1000 rows */
    for (size_t r = 0; r < N; r += 1000) {
        pq_values v[2] = {{.i64 = k + r}, {.present = present + r, .str = names + r, .len = lens + r}};
        assert_int_equal(pq_writer_append(w, 1000, v, &e), MS_OK);
    }
    uint64_t rows = 0;
    assert_int_equal(pq_writer_close(w, &rows, &e), MS_OK);
    assert_int_equal(rows, N);
    pq_writer_free(w);

    arena mem = {0};
    tval meta = read_footer(&mem, &s);
    const tval *rgs = tmust(&meta, 4);
    assert_true(rgs->n >= 3);
    int64_t total = 0, prev_end = 4;
    for (size_t g = 0; g < rgs->n; g++) {
        const tval *rg = &rgs->elems[g];
        int64_t nr = tint(rg, 3);
        assert_true(nr > 0); /* never an empty row group */
        total += nr;
        assert_int_equal(tint(rg, 7), (int64_t)g); /* ordinal */
        assert_int_equal(tint(rg, 5), prev_end);   /* row groups follow each other */
        const tval *chunks = tmust(rg, 1);
        for (int c = 0; c < 2; c++) {
            const tval *md = tmust(&chunks->elems[c], 3);
            int64_t nulls = 0;
            int pages = walk_chunk(&mem, &s, md, &nulls);
            assert_true(pages >= 1);
            const tval *dict = tget(md, 11);
            int64_t start = dict ? dict->i : tint(md, 9);
            assert_int_equal(start, prev_end);
            prev_end = start + tint(md, 7);
            if (c == 1) {
                bool plain = false, rd = false;
                const tval *encs = tmust(md, 2);
                for (size_t i = 0; i < encs->n; i++) {
                    plain |= encs->elems[i].i == 0;
                    rd |= encs->elems[i].i == 8;
                }
                assert_true(rd);
                assert_non_null(dict);
                (void)plain;
            }
        }
        assert_true(tint(rg, 2) > 0); /* total_byte_size */
    }
    assert_int_equal(total, N);
    assert_int_equal(tint(&meta, 3), N);
    arena_free(&mem);
    buf_free(&s.out);

    /* a dictionary past 1 MiB falls back to PLAIN in the same chunk */
    pq_column big = {"u", PQ_STRING, false, true};
    pq_options bopt = {.codec = PQ_SNAPPY, .created_by = "t"};
    sink s2 = {0};
    assert_int_equal(pq_writer_open(&w, &big, 1, &bopt, sink_write, &s2, &e), MS_OK);
    for (size_t r = 0; r < N; r += 1000) {
        for (size_t i = 0; i < 1000; i++) {
            snprintf(text[i], sizeof text[i], "%036zu", r + i); /* 40 bytes a dictionary entry */
            names[i] = text[i];
            lens[i] = 36;
        }
        pq_values v = {.str = names, .len = lens};
        assert_int_equal(pq_writer_append(w, 1000, &v, &e), MS_OK);
    }
    assert_int_equal(pq_writer_close(w, NULL, &e), MS_OK);
    pq_writer_free(w);
    tval m2 = read_footer(&mem, &s2);
    assert_int_equal(tmust(&m2, 4)->n, 1);
    const tval *md = tmust(&tmust(&tmust(&m2, 4)->elems[0], 1)->elems[0], 3);
    const tval *encs = tmust(md, 2);
    assert_int_equal(encs->n, 3); /* PLAIN, RLE, RLE_DICTIONARY */
    assert_int_equal(encs->elems[0].i, 0);
    assert_int_equal(encs->elems[2].i, 8);
    const tval *es = tmust(md, 13); /* encoding stats: the dictionary page, PLAIN and dictionary data pages */
    assert_int_equal(es->n, 3);
    int64_t nulls = 0;
    walk_chunk(&mem, &s2, md, &nulls);
    /* the dictionary holds what passed 1 MiB, no more than one entry beyond */
    const unsigned char *f = (const unsigned char *)s2.out.data;
    size_t used = 0;
    tval dph = t_decode(&mem, f + tint(md, 11), s2.out.len - (size_t)tint(md, 11), &used);
    int64_t entries = tint(tmust(&dph, 7), 1);
    assert_true(entries * 40 > (1 << 20) && (entries - 1) * 40 <= (1 << 20));
    assert_true(entries < N);
    arena_free(&mem);
    buf_free(&s2.out);
    free(k), free(names), free(lens), free(present), free(text);
}

static void test_zero_rows(void **state)
{
    (void)state;
    pq_column cols[] = {{"a", PQ_STRING, true, true}, {"b", PQ_TIMESTAMP, false, false}};
    pq_options opt = {.created_by = "t"};
    sink s = {0};
    pq_writer *w = NULL;
    ms_err e = {0};
    assert_int_equal(pq_writer_open(&w, cols, 2, &opt, sink_write, &s, &e), MS_OK);
    pq_values v[2] = {{0}, {0}};
    assert_int_equal(pq_writer_append(w, 0, v, &e), MS_OK); /* an empty batch is nothing */
    uint64_t rows = 99;
    assert_int_equal(pq_writer_close(w, &rows, &e), MS_OK);
    assert_int_equal(rows, 0);
    pq_writer_free(w);
    arena mem = {0};
    tval meta = read_footer(&mem, &s);
    assert_int_equal(tint(&meta, 3), 0);
    assert_int_equal(tmust(&meta, 4)->n, 0);
    assert_int_equal(tmust(&meta, 2)->n, 3);
    arena_free(&mem);
    buf_free(&s.out);
}

static void test_refusals(void **state)
{
    (void)state;
    sink s = {0};
    pq_writer *w = NULL;
    ms_err e = {0};
    pq_options opt = {.created_by = "t"};
    pq_column dup[] = {{"a", PQ_STRING, false, false}, {"a", PQ_INT64, false, false}};
    assert_int_equal(pq_writer_open(&w, dup, 2, &opt, sink_write, &s, &e), MS_EINVAL);
    assert_null(w);
    assert_true(unit_has_str(e.msg, "twice"));
    pq_column empty = {"", PQ_STRING, false, false};
    assert_int_equal(pq_writer_open(&w, &empty, 1, &opt, sink_write, &s, &e), MS_EINVAL);
    pq_column badutf8 = {"\xff", PQ_STRING, false, false};
    assert_int_equal(pq_writer_open(&w, &badutf8, 1, &opt, sink_write, &s, &e), MS_EINVAL);
    pq_column dbl_dict = {"d", PQ_DOUBLE, false, true};
    assert_int_equal(pq_writer_open(&w, &dbl_dict, 1, &opt, sink_write, &s, &e), MS_EINVAL);
    assert_int_equal(pq_writer_open(&w, dup, 0, &opt, sink_write, &s, &e), MS_EINVAL);
    pq_options no_creator = {0};
    assert_int_equal(pq_writer_open(&w, dup, 1, &no_creator, sink_write, &s, &e), MS_EINVAL);
    pq_options bad_level = {.codec = PQ_ZSTD, .zstd_level = 99, .created_by = "t"};
    assert_int_equal(pq_writer_open(&w, dup, 1, &bad_level, sink_write, &s, &e), MS_EINVAL);
    const char *odd_kv[] = {"k", NULL};
    pq_options bad_kv = {.created_by = "t", .key_values = odd_kv};
    assert_int_equal(pq_writer_open(&w, dup, 1, &bad_kv, sink_write, &s, &e), MS_EINVAL);
    assert_int_equal(s.out.len, 0); /* nothing written by a refused open */

    /* a null in a required column: the batch is refused whole, the writer goes on */
    pq_column cols[] = {{"opt", PQ_INT64, true, false}, {"req", PQ_STRING, false, false}};
    assert_int_equal(pq_writer_open(&w, cols, 2, &opt, sink_write, &s, &e), MS_OK);
    int64_t iv[3] = {1, 2, 3};
    const char *sv[3] = {"xq1", "yq2", "zq3"};
    uint32_t sl[3] = {3, 3, 3};
    bool pres[3] = {true, false, true};
    pq_values bad[2] = {{.i64 = iv}, {.present = pres, .str = sv, .len = sl}};
    memset(&e, 0, sizeof e);
    assert_int_equal(pq_writer_append(w, 3, bad, &e), MS_EINVAL);
    assert_true(unit_has_str(e.msg, "req") && unit_has_str(e.msg, "row 2"));
    assert_false(unit_has_str(e.msg, "yq2")); /* never a value */
    pq_values missing[2] = {{.present = pres, .i64 = NULL}, {.str = sv, .len = sl}};
    assert_int_equal(pq_writer_append(w, 3, missing, &e), MS_EINVAL);
    pq_values good[2] = {{.present = pres, .i64 = iv}, {.str = sv, .len = sl}};
    assert_int_equal(pq_writer_append(w, 3, good, &e), MS_OK);
    uint64_t rows = 0;
    assert_int_equal(pq_writer_close(w, &rows, &e), MS_OK);
    assert_int_equal(rows, 3);                                     /* only the good batch */
    assert_int_equal(pq_writer_append(w, 3, good, &e), MS_EINVAL); /* closed */
    assert_int_equal(pq_writer_close(w, &rows, &e), MS_EINVAL);
    pq_writer_free(w);

    /* a failing write function: the error comes back and the writer is failed */
    sink f = {.fail_at = 1};
    assert_int_equal(pq_writer_open(&w, cols, 2, &opt, sink_write, &f, &e), MS_EIO);
    assert_null(w);
    sink g = {.fail_at = 2};
    assert_int_equal(pq_writer_open(&w, cols, 2, &opt, sink_write, &g, &e), MS_OK);
    assert_int_equal(pq_writer_append(w, 3, good, &e), MS_OK);
    memset(&e, 0, sizeof e);
    assert_int_equal(pq_writer_close(w, NULL, &e), MS_EIO);
    assert_true(unit_has_str(e.msg, "disk on fire"));
    assert_int_equal(pq_writer_append(w, 3, good, &e), MS_EINVAL);
    pq_writer_free(w);
    pq_writer_free(NULL);
    buf_free(&s.out);
    buf_free(&f.out);
    buf_free(&g.out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_varint_zigzag), cmocka_unit_test(test_field_headers), cmocka_unit_test(test_lists),
        cmocka_unit_test(test_rle_hybrid),    cmocka_unit_test(test_file_metadata), cmocka_unit_test(test_statistics),
        cmocka_unit_test(test_double_zeros),  cmocka_unit_test(test_row_groups),    cmocka_unit_test(test_zero_rows),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
