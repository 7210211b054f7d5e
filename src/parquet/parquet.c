/*
 * parquet.c - the Parquet writer (parquet.h has the contract and what a file holds).
 *
 * Design: each column keeps the page it is building (definition levels as bytes, PLAIN values or
 * dictionary indices, the page's statistics) and the finished pages of its chunk (header + compressed
 * body, in memory). A page is finished once its values pass page_bytes or PQ_PAGE_MAX_ROWS rows. When
 * the row group's values pass row_group_bytes (counted as PLAIN bytes, a null as 1), every column's chunk
 * goes to the write function in schema order: the dictionary page first (it is complete only then), then
 * the data pages; the RowGroup's Thrift bytes (ColumnChunk + ColumnMetaData with offsets, sizes,
 * encodings, statistics) are appended to the footer being built, and the chunks' memory is reused. A
 * batch is cut into slices at the row where the row group fills, so a row group ends where its bytes
 * pass the limit whatever the batch sizes are. pq_writer_close writes the last row group and the
 * FileMetaData (schema, row groups, key-value metadata, created_by, column orders), its length, "PAR1".
 *
 * Departures from what a reader may expect: ColumnChunk.file_offset is 0, as parquet.thrift asks of a
 * writer that keeps no ColumnMetaData outside the footer (readers locate chunks by data_page_offset and
 * dictionary_page_offset). A dictionary column starts each chunk with a new dictionary (and may fall back
 * to PLAIN again in it). Data pages with no non-null value in a dictionary column are PLAIN (nothing to
 * index). Dictionary indices are written at bit width >= 1 (a one-entry dictionary included).
 */
#include "parquet/parquet.h"

#include <snappy-c.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "base/json_scan.h"
#include "parquet/encoding.h"
#include "parquet/thrift_compact.h"

/* parquet.thrift enums */
enum { ENC_PLAIN = 0, ENC_RLE = 3, ENC_RLE_DICTIONARY = 8 };
enum { PAGE_DATA = 0, PAGE_DICTIONARY = 2 };
enum { CODEC_UNCOMPRESSED = 0, CODEC_SNAPPY = 1, CODEC_ZSTD = 6 };
enum { REP_REQUIRED = 0, REP_OPTIONAL = 1 };
enum { CT_UTF8 = 0, CT_TIMESTAMP_MICROS = 10, CT_INT_64 = 18, CT_JSON = 19 };

#define PQ_DEFAULT_ROW_GROUP_BYTES ((uint64_t)128 << 20)
#define PQ_DEFAULT_PAGE_BYTES ((uint64_t)1 << 20)
#define PQ_MAX_PAGE_BYTES ((uint64_t)256 << 20)
#define PQ_DICT_MAX_BYTES ((size_t)1 << 20)
#define PQ_PAGE_MAX_ROWS 20000

typedef struct {
    pq_column def; /* name owned */
    int phys;

    /* the page being built */
    size_t page_rows; /* values, nulls included */
    buf page_levels;  /* one byte per row (optional columns): 1 present, 0 null */
    buf page_values;  /* PLAIN values (booleans bit-packed, page_bools of them) */
    size_t page_bools;
    uint32_t *page_idx; /* dictionary indices of the non-null values */
    size_t page_nidx, page_idx_cap;
    pq_stats page_stats;

    /* the chunk being built */
    bool dict_on; /* values go to the dictionary (until it passes PQ_DICT_MAX_BYTES) */
    pq_dict dict;
    buf chunk_pages; /* finished data pages: header + body each */
    uint64_t chunk_values, chunk_uncompressed, chunk_compressed;
    uint32_t pages_plain, pages_dict;
    pq_stats chunk_stats;
} pq_col;

typedef enum { W_OPEN, W_DONE, W_FAILED } w_state;

struct pq_writer {
    pq_col *cols;
    size_t ncols;
    pq_codec codec;
    int zstd_level;
    uint64_t row_group_bytes, page_bytes;
    char *created_by;
    char **kv; /* key, value, ..., NULL */
    size_t nkv;
    pq_write_fn write;
    void *ctx;
    w_state state;

    uint64_t offset;   /* bytes handed to write */
    uint64_t rg_rows;  /* rows of the row group being built */
    uint64_t rg_bytes; /* its values' PLAIN bytes */
    uint64_t rows;     /* rows of the file (row groups written) */
    uint32_t nrowgroups;
    buf rowgroups; /* the RowGroup structs written so far (Thrift) */

    buf body, comp, hdr; /* scratch: a page's body, compressed body, header */
    ZSTD_CCtx *zctx;
};

static int phys_of(pq_type t)
{
    switch (t) {
    case PQ_STRING:
    case PQ_JSON: return PQ_PHYS_BYTE_ARRAY;
    case PQ_TIMESTAMP:
    case PQ_INT64: return PQ_PHYS_INT64;
    case PQ_DOUBLE: return PQ_PHYS_DOUBLE;
    case PQ_BOOLEAN: return PQ_PHYS_BOOLEAN;
    }
    return -1;
}

static const char *type_name(pq_type t)
{
    switch (t) {
    case PQ_STRING: return "string";
    case PQ_JSON: return "json";
    case PQ_TIMESTAMP: return "timestamp";
    case PQ_INT64: return "int64";
    case PQ_DOUBLE: return "double";
    case PQ_BOOLEAN: return "boolean";
    }
    return "?";
}

/* ---- output ---- */

static ms_code emit(pq_writer *w, const void *p, size_t n, ms_err *e)
{
    if (n == 0) return MS_OK;
    ms_err we = {0};
    ms_code rc = w->write(w->ctx, p, n, &we);
    if (rc != MS_OK) {
        w->state = W_FAILED;
        if (e) *e = we;
        if (e && e->code == MS_OK) e->code = rc;
        return rc;
    }
    w->offset += n;
    return MS_OK;
}

/* Compress w->body into w->comp (or point at body for no codec); *out, *out_len the page bytes. */
static ms_code compress_body(pq_writer *w, const char **out, size_t *out_len, ms_err *e)
{
    size_t n = w->body.len;
    const char *src = w->body.data ? w->body.data : "";
    switch (w->codec) {
    case PQ_UNCOMPRESSED:
        *out = src;
        *out_len = n;
        return MS_OK;
    case PQ_SNAPPY: {
        size_t cap = snappy_max_compressed_length(n);
        w->comp.len = 0;
        buf_reserve(&w->comp, cap);
        size_t got = cap;
        if (snappy_compress(src, n, w->comp.data, &got) != SNAPPY_OK)
            return ms_fail(e, MS_EIO, "parquet: snappy could not compress a page of %zu bytes", n);
        w->comp.len = got;
        break;
    }
    case PQ_ZSTD: {
        size_t cap = ZSTD_compressBound(n);
        w->comp.len = 0;
        buf_reserve(&w->comp, cap);
        size_t got = ZSTD_compressCCtx(w->zctx, w->comp.data, cap, src, n, w->zstd_level);
        if (ZSTD_isError(got))
            return ms_fail(e, MS_EIO, "parquet: zstd could not compress a page of %zu bytes: %s", n,
                           ZSTD_getErrorName(got));
        w->comp.len = got;
        break;
    }
    }
    *out = w->comp.data;
    *out_len = w->comp.len;
    return MS_OK;
}

/* A Statistics struct as field `id` of the open struct. */
static void put_statistics(tc_writer *t, int16_t id, const pq_stats *s, int phys)
{
    unsigned char lo_tmp[8], hi_tmp[8];
    const void *lo, *hi;
    size_t lo_n, hi_n;
    tc_field_struct(t, id);
    tc_field_i64(t, 3, (int64_t)s->null_count);
    if (pq_stats_bounds(s, phys, lo_tmp, hi_tmp, &lo, &lo_n, &hi, &hi_n)) {
        tc_field_binary(t, 5, hi, hi_n); /* max_value */
        tc_field_binary(t, 6, lo, lo_n); /* min_value */
        tc_field_bool(t, 7, true);       /* is_max_value_exact */
        tc_field_bool(t, 8, true);       /* is_min_value_exact */
    }
    if (phys == PQ_PHYS_DOUBLE) tc_field_i64(t, 9, (int64_t)s->nan_count);
    tc_struct_end(t);
}

/* ---- pages ---- */

static void page_reset(pq_col *c)
{
    c->page_rows = 0;
    c->page_levels.len = 0;
    c->page_values.len = 0;
    c->page_bools = 0;
    c->page_nidx = 0;
    pq_stats_reset(&c->page_stats);
}

/* Finish the page being built into the chunk's pages (nothing is written out yet). */
static ms_code finish_page(pq_writer *w, pq_col *c, ms_err *e)
{
    if (c->page_rows == 0) return MS_OK;
    w->body.len = 0;
    if (c->def.optional) {
        size_t at = w->body.len;
        pq_put_le32(&w->body, 0);
        pq_rle_hybrid_u8(&w->body, (const uint8_t *)c->page_levels.data, c->page_rows, 1);
        pq_set_le32(w->body.data + at, (uint32_t)(w->body.len - at - 4));
    }
    int encoding = ENC_PLAIN;
    if (c->page_nidx > 0) {
        encoding = ENC_RLE_DICTIONARY;
        int bw = pq_bit_width(c->dict.count - 1);
        if (bw < 1) bw = 1;
        buf_putc(&w->body, (char)bw);
        pq_rle_hybrid_u32(&w->body, c->page_idx, c->page_nidx, bw);
    } else {
        buf_put(&w->body, c->page_values.data, c->page_values.len);
    }
    size_t raw_len = w->body.len;
    const char *data;
    size_t data_len;
    ms_code rc = compress_body(w, &data, &data_len, e);
    if (rc != MS_OK) return rc;
    if (raw_len > INT32_MAX || data_len > INT32_MAX)
        return ms_fail(e, MS_EINVAL, "parquet: column %s: a page of %zu bytes is over the format's limit", c->def.name,
                       raw_len);

    w->hdr.len = 0;
    tc_writer t;
    tc_init(&t, &w->hdr);
    tc_struct_begin(&t);
    tc_field_i32(&t, 1, PAGE_DATA);
    tc_field_i32(&t, 2, (int32_t)raw_len);
    tc_field_i32(&t, 3, (int32_t)data_len);
    tc_field_struct(&t, 5); /* DataPageHeader */
    tc_field_i32(&t, 1, (int32_t)c->page_rows);
    tc_field_i32(&t, 2, encoding);
    tc_field_i32(&t, 3, ENC_RLE);
    tc_field_i32(&t, 4, ENC_RLE);
    put_statistics(&t, 5, &c->page_stats, c->phys);
    tc_struct_end(&t);
    tc_struct_end(&t);

    buf_put(&c->chunk_pages, w->hdr.data, w->hdr.len);
    buf_put(&c->chunk_pages, data, data_len);
    c->chunk_values += c->page_rows;
    c->chunk_uncompressed += w->hdr.len + raw_len;
    c->chunk_compressed += w->hdr.len + data_len;
    if (encoding == ENC_PLAIN)
        c->pages_plain++;
    else
        c->pages_dict++;
    pq_stats_merge(&c->chunk_stats, &c->page_stats, c->phys);
    page_reset(c);
    return MS_OK;
}

static size_t page_estimate(const pq_col *c)
{
    if (c->page_nidx > 0) {
        int bw = pq_bit_width(c->dict.count);
        return c->page_values.len + c->page_nidx * (size_t)(bw ? bw : 1) / 8;
    }
    return c->page_values.len;
}

/* Append rows [from, to) of v to column c. */
static ms_code column_append(pq_writer *w, pq_col *c, const pq_values *v, size_t from, size_t to, ms_err *e)
{
    for (size_t r = from; r < to; r++) {
        bool present = !v->present || v->present[r];
        if (c->def.optional) buf_putc(&c->page_levels, present ? 1 : 0);
        c->page_rows++;
        if (!present) {
            c->page_stats.null_count++;
        } else {
            switch (c->def.type) {
            case PQ_STRING:
            case PQ_JSON: {
                const char *p = v->len[r] ? v->str[r] : "";
                uint32_t n = v->len[r];
                pq_stats_add_bytes(&c->page_stats, p, n);
                if (c->dict_on) {
                    uint32_t idx = pq_dict_index(&c->dict, p, n, true);
                    if (c->page_nidx == c->page_idx_cap) {
                        c->page_idx_cap = c->page_idx_cap ? c->page_idx_cap * 2 : 1024;
                        c->page_idx = ms_realloc(c->page_idx, c->page_idx_cap * sizeof *c->page_idx);
                    }
                    c->page_idx[c->page_nidx++] = idx;
                } else {
                    pq_put_le32(&c->page_values, n);
                    buf_put(&c->page_values, p, n);
                }
                break;
            }
            case PQ_TIMESTAMP:
            case PQ_INT64: {
                int64_t x = v->i64[r];
                pq_stats_add_i64(&c->page_stats, x);
                if (c->dict_on) {
                    unsigned char le[8];
                    pq_set_le64(le, (uint64_t)x);
                    uint32_t idx = pq_dict_index(&c->dict, le, 8, false);
                    if (c->page_nidx == c->page_idx_cap) {
                        c->page_idx_cap = c->page_idx_cap ? c->page_idx_cap * 2 : 1024;
                        c->page_idx = ms_realloc(c->page_idx, c->page_idx_cap * sizeof *c->page_idx);
                    }
                    c->page_idx[c->page_nidx++] = idx;
                } else {
                    pq_put_le64(&c->page_values, (uint64_t)x);
                }
                break;
            }
            case PQ_DOUBLE: {
                double x = v->f64[r];
                uint64_t bits;
                memcpy(&bits, &x, 8);
                pq_stats_add_f64(&c->page_stats, x);
                pq_put_le64(&c->page_values, bits);
                break;
            }
            case PQ_BOOLEAN: {
                bool x = v->b[r];
                pq_stats_add_bool(&c->page_stats, x);
                if (c->page_bools % 8 == 0) buf_putc(&c->page_values, 0);
                if (x)
                    ((unsigned char *)c->page_values.data)[c->page_values.len - 1] |=
                        (unsigned char)(1u << (c->page_bools % 8));
                c->page_bools++;
                break;
            }
            }
        }
        bool fall_back = c->dict_on && c->dict.plain.len > PQ_DICT_MAX_BYTES;
        if (fall_back || c->page_rows >= PQ_PAGE_MAX_ROWS || page_estimate(c) >= w->page_bytes) {
            ms_code rc = finish_page(w, c, e);
            if (rc != MS_OK) return rc;
            if (fall_back) c->dict_on = false; /* PLAIN for the rest of this chunk */
        }
    }
    return MS_OK;
}

/* ---- row groups ---- */

static void chunk_reset(pq_col *c)
{
    c->dict_on = c->def.dictionary;
    pq_dict_clear(&c->dict);
    c->chunk_pages.len = 0;
    c->chunk_values = c->chunk_uncompressed = c->chunk_compressed = 0;
    c->pages_plain = c->pages_dict = 0;
    pq_stats_reset(&c->chunk_stats);
}

static int codec_id(pq_codec codec)
{
    switch (codec) {
    case PQ_SNAPPY: return CODEC_SNAPPY;
    case PQ_ZSTD: return CODEC_ZSTD;
    case PQ_UNCOMPRESSED: return CODEC_UNCOMPRESSED;
    }
    return CODEC_UNCOMPRESSED;
}

/* Write every column's chunk of the row group being built, and its RowGroup struct into w->rowgroups. */
static ms_code flush_row_group(pq_writer *w, ms_err *e)
{
    if (w->rg_rows == 0) return MS_OK;
    for (size_t i = 0; i < w->ncols; i++) {
        ms_code rc = finish_page(w, &w->cols[i], e);
        if (rc != MS_OK) return rc;
    }
    tc_writer t;
    tc_init(&t, &w->rowgroups);
    tc_struct_begin(&t); /* RowGroup */
    tc_field_list(&t, 1, TC_STRUCT, (uint32_t)w->ncols);
    uint64_t rg_start = w->offset, total_uncompressed = 0, total_compressed = 0;
    for (size_t i = 0; i < w->ncols; i++) {
        pq_col *c = &w->cols[i];
        uint64_t chunk_start = w->offset;
        bool has_dict = c->pages_dict > 0;
        uint64_t dict_uncompressed = 0, dict_compressed = 0;
        if (has_dict) {
            w->body.len = 0;
            buf_put(&w->body, c->dict.plain.data, c->dict.plain.len);
            const char *data;
            size_t data_len;
            ms_code rc = compress_body(w, &data, &data_len, e);
            if (rc != MS_OK) return rc;
            w->hdr.len = 0;
            tc_writer h;
            tc_init(&h, &w->hdr);
            tc_struct_begin(&h);
            tc_field_i32(&h, 1, PAGE_DICTIONARY);
            tc_field_i32(&h, 2, (int32_t)w->body.len);
            tc_field_i32(&h, 3, (int32_t)data_len);
            tc_field_struct(&h, 7); /* DictionaryPageHeader */
            tc_field_i32(&h, 1, (int32_t)c->dict.count);
            tc_field_i32(&h, 2, ENC_PLAIN);
            tc_struct_end(&h);
            tc_struct_end(&h);
            dict_uncompressed = w->hdr.len + w->body.len;
            dict_compressed = w->hdr.len + data_len;
            if ((rc = emit(w, w->hdr.data, w->hdr.len, e)) != MS_OK) return rc;
            if ((rc = emit(w, data, data_len, e)) != MS_OK) return rc;
        }
        uint64_t data_start = w->offset;
        ms_code rc = emit(w, c->chunk_pages.data, c->chunk_pages.len, e);
        if (rc != MS_OK) return rc;
        uint64_t unc = c->chunk_uncompressed + dict_uncompressed;
        uint64_t cmp = c->chunk_compressed + dict_compressed;
        total_uncompressed += unc;
        total_compressed += cmp;

        tc_struct_begin(&t);    /* ColumnChunk */
        tc_field_i64(&t, 2, 0); /* file_offset: no ColumnMetaData outside the footer */
        tc_field_struct(&t, 3); /* ColumnMetaData */
        tc_field_i32(&t, 1, c->phys);
        bool plain_used = has_dict || c->pages_plain > 0;
        uint32_t nenc = (plain_used ? 1 : 0) + 1 + (has_dict ? 1 : 0);
        tc_field_list(&t, 2, TC_I32, nenc);
        if (plain_used) tc_elem_i32(&t, ENC_PLAIN);
        tc_elem_i32(&t, ENC_RLE);
        if (has_dict) tc_elem_i32(&t, ENC_RLE_DICTIONARY);
        tc_field_list(&t, 3, TC_BINARY, 1);
        tc_elem_string(&t, c->def.name);
        tc_field_i32(&t, 4, codec_id(w->codec));
        tc_field_i64(&t, 5, (int64_t)c->chunk_values);
        tc_field_i64(&t, 6, (int64_t)unc);
        tc_field_i64(&t, 7, (int64_t)cmp);
        tc_field_i64(&t, 9, (int64_t)data_start);
        if (has_dict) tc_field_i64(&t, 11, (int64_t)chunk_start);
        put_statistics(&t, 12, &c->chunk_stats, c->phys);
        uint32_t nstats = (has_dict ? 1u : 0u) + (c->pages_plain ? 1u : 0u) + (c->pages_dict ? 1u : 0u);
        tc_field_list(&t, 13, TC_STRUCT, nstats); /* encoding_stats */
        if (has_dict) {
            tc_struct_begin(&t);
            tc_field_i32(&t, 1, PAGE_DICTIONARY);
            tc_field_i32(&t, 2, ENC_PLAIN);
            tc_field_i32(&t, 3, 1);
            tc_struct_end(&t);
        }
        if (c->pages_plain) {
            tc_struct_begin(&t);
            tc_field_i32(&t, 1, PAGE_DATA);
            tc_field_i32(&t, 2, ENC_PLAIN);
            tc_field_i32(&t, 3, (int32_t)c->pages_plain);
            tc_struct_end(&t);
        }
        if (c->pages_dict) {
            tc_struct_begin(&t);
            tc_field_i32(&t, 1, PAGE_DATA);
            tc_field_i32(&t, 2, ENC_RLE_DICTIONARY);
            tc_field_i32(&t, 3, (int32_t)c->pages_dict);
            tc_struct_end(&t);
        }
        tc_struct_end(&t); /* ColumnMetaData */
        tc_struct_end(&t); /* ColumnChunk */
        chunk_reset(c);
    }
    tc_field_i64(&t, 2, (int64_t)total_uncompressed);
    tc_field_i64(&t, 3, (int64_t)w->rg_rows);
    tc_field_i64(&t, 5, (int64_t)rg_start);
    tc_field_i64(&t, 6, (int64_t)total_compressed);
    if (w->nrowgroups <= INT16_MAX) tc_field_i16(&t, 7, (int16_t)w->nrowgroups);
    tc_struct_end(&t);
    w->nrowgroups++;
    w->rows += w->rg_rows;
    w->rg_rows = 0;
    w->rg_bytes = 0;
    return MS_OK;
}

/* ---- the writer ---- */

static void col_free(pq_col *c)
{
    free((char *)c->def.name);
    buf_free(&c->page_levels);
    buf_free(&c->page_values);
    free(c->page_idx);
    pq_stats_free(&c->page_stats);
    pq_dict_free(&c->dict);
    buf_free(&c->chunk_pages);
    pq_stats_free(&c->chunk_stats);
}

void pq_writer_free(pq_writer *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->ncols; i++)
        col_free(&w->cols[i]);
    free(w->cols);
    free(w->created_by);
    for (size_t i = 0; i < w->nkv * 2; i++)
        free(w->kv[i]);
    free(w->kv);
    buf_free(&w->rowgroups);
    buf_free(&w->body);
    buf_free(&w->comp);
    buf_free(&w->hdr);
    if (w->zctx) ZSTD_freeCCtx(w->zctx);
    free(w);
}

static ms_code check_schema(const pq_column *columns, size_t ncolumns, const pq_options *opt, ms_err *e)
{
    if (!opt) return ms_fail(e, MS_EINVAL, "parquet: no options");
    if (ncolumns == 0 || !columns) return ms_fail(e, MS_EINVAL, "parquet: a schema needs at least one column");
    if (ncolumns > INT32_MAX / 2) return ms_fail(e, MS_EINVAL, "parquet: too many columns (%zu)", ncolumns);
    for (size_t i = 0; i < ncolumns; i++) {
        const pq_column *c = &columns[i];
        if (!c->name || !c->name[0]) return ms_fail(e, MS_EINVAL, "parquet: column %zu has no name", i + 1);
        size_t n = strlen(c->name);
        if (utf8_check(c->name, n) != n)
            return ms_fail(e, MS_EINVAL, "parquet: column %zu: its name is not UTF-8", i + 1);
        if (phys_of(c->type) < 0) return ms_fail(e, MS_EINVAL, "parquet: column %s: unknown type", c->name);
        if (c->dictionary && (c->type == PQ_DOUBLE || c->type == PQ_BOOLEAN))
            return ms_fail(e, MS_EINVAL, "parquet: column %s: no dictionary encoding for %s", c->name,
                           type_name(c->type));
        for (size_t j = 0; j < i; j++)
            if (strcmp(columns[j].name, c->name) == 0)
                return ms_fail(e, MS_EINVAL, "parquet: column name %s appears twice", c->name);
    }
    if (!opt->created_by || !opt->created_by[0]) return ms_fail(e, MS_EINVAL, "parquet: created_by is required");
    if (opt->codec != PQ_SNAPPY && opt->codec != PQ_ZSTD && opt->codec != PQ_UNCOMPRESSED)
        return ms_fail(e, MS_EINVAL, "parquet: unknown codec %d", (int)opt->codec);
    if (opt->codec == PQ_ZSTD && opt->zstd_level != 0 &&
        (opt->zstd_level < ZSTD_minCLevel() || opt->zstd_level > ZSTD_maxCLevel()))
        return ms_fail(e, MS_EINVAL, "parquet: zstd level %d outside %d..%d", opt->zstd_level, ZSTD_minCLevel(),
                       ZSTD_maxCLevel());
    if (opt->page_bytes > PQ_MAX_PAGE_BYTES)
        return ms_fail(e, MS_EINVAL, "parquet: page_bytes %llu over %llu", (unsigned long long)opt->page_bytes,
                       (unsigned long long)PQ_MAX_PAGE_BYTES);
    if (opt->key_values)
        for (size_t i = 0; opt->key_values[i]; i += 2)
            if (!opt->key_values[i + 1])
                return ms_fail(e, MS_EINVAL, "parquet: key-value metadata %s has no value", opt->key_values[i]);
    return MS_OK;
}

ms_code pq_writer_open(pq_writer **out, const pq_column *columns, size_t ncolumns, const pq_options *opt,
                       pq_write_fn write, void *ctx, ms_err *e)
{
    *out = NULL;
    ms_code rc = check_schema(columns, ncolumns, opt, e);
    if (rc != MS_OK) return rc;
    if (!write) return ms_fail(e, MS_EINVAL, "parquet: no write function");
    pq_writer *w = ms_calloc(1, sizeof *w);
    w->cols = ms_calloc(ncolumns, sizeof *w->cols);
    w->ncols = ncolumns;
    for (size_t i = 0; i < ncolumns; i++) {
        pq_col *c = &w->cols[i];
        c->def = columns[i];
        c->def.name = ms_strndup(columns[i].name, strlen(columns[i].name));
        c->phys = phys_of(c->def.type);
        c->dict_on = c->def.dictionary;
    }
    w->codec = opt->codec;
    w->zstd_level = opt->zstd_level ? opt->zstd_level : 3;
    w->row_group_bytes = opt->row_group_bytes ? opt->row_group_bytes : PQ_DEFAULT_ROW_GROUP_BYTES;
    w->page_bytes = opt->page_bytes ? opt->page_bytes : PQ_DEFAULT_PAGE_BYTES;
    w->created_by = ms_strndup(opt->created_by, strlen(opt->created_by));
    if (opt->key_values) {
        while (opt->key_values[w->nkv * 2])
            w->nkv++;
        w->kv = ms_calloc(w->nkv * 2 + 1, sizeof *w->kv);
        for (size_t i = 0; i < w->nkv * 2; i++)
            w->kv[i] = ms_strndup(opt->key_values[i], strlen(opt->key_values[i]));
    }
    w->write = write;
    w->ctx = ctx;
    if (w->codec == PQ_ZSTD) {
        w->zctx = ZSTD_createCCtx();
        if (!w->zctx) ms_oom();
    }
    w->state = W_OPEN;
    if ((rc = emit(w, "PAR1", 4, e)) != MS_OK) {
        pq_writer_free(w);
        return rc;
    }
    *out = w;
    return MS_OK;
}

/* The PLAIN bytes of row r of column c (a null: 1, for its definition level). */
static uint64_t value_bytes(const pq_col *c, const pq_values *v, size_t r)
{
    if (v->present && !v->present[r]) return 1;
    switch (c->def.type) {
    case PQ_STRING:
    case PQ_JSON: return 4 + (uint64_t)v->len[r];
    case PQ_BOOLEAN: return 1;
    default: return 8;
    }
}

/* A batch is refused whole, before anything of it is kept. */
static ms_code check_batch(const pq_writer *w, size_t n, const pq_values *cols, ms_err *e)
{
    for (size_t i = 0; i < w->ncols; i++) {
        const pq_col *c = &w->cols[i];
        const pq_values *v = &cols[i];
        size_t nulls = 0;
        if (v->present)
            for (size_t r = 0; r < n; r++)
                if (!v->present[r]) {
                    if (!c->def.optional)
                        return ms_fail(e, MS_EINVAL,
                                       "parquet: column %s: row %zu of the batch is null in a required column",
                                       c->def.name, r + 1);
                    nulls++;
                }
        if (nulls == n) continue;
        const char *missing = NULL;
        switch (c->def.type) {
        case PQ_STRING:
        case PQ_JSON:
            if (!v->str || !v->len) missing = "strings";
            break;
        case PQ_TIMESTAMP:
        case PQ_INT64:
            if (!v->i64) missing = "int64 values";
            break;
        case PQ_DOUBLE:
            if (!v->f64) missing = "doubles";
            break;
        case PQ_BOOLEAN:
            if (!v->b) missing = "booleans";
            break;
        }
        if (missing) return ms_fail(e, MS_EINVAL, "parquet: column %s: no %s given", c->def.name, missing);
        if (c->def.type == PQ_STRING || c->def.type == PQ_JSON)
            for (size_t r = 0; r < n; r++) {
                if (v->present && !v->present[r]) continue;
                if (v->len[r] > PQ_MAX_VALUE_BYTES)
                    return ms_fail(e, MS_EINVAL, "parquet: column %s: row %zu of the batch is %u bytes, over %u",
                                   c->def.name, r + 1, v->len[r], (unsigned)PQ_MAX_VALUE_BYTES);
                if (v->len[r] && !v->str[r])
                    return ms_fail(e, MS_EINVAL, "parquet: column %s: row %zu of the batch has no bytes", c->def.name,
                                   r + 1);
            }
    }
    return MS_OK;
}

ms_code pq_writer_append(pq_writer *w, size_t n, const pq_values *cols, ms_err *e)
{
    if (w->state != W_OPEN)
        return ms_fail(e, MS_EINVAL, "parquet: the writer is %s", w->state == W_DONE ? "closed" : "failed");
    if (n == 0) return MS_OK;
    if (!cols) return ms_fail(e, MS_EINVAL, "parquet: no column values");
    ms_code rc = check_batch(w, n, cols, e);
    if (rc != MS_OK) return rc;
    size_t from = 0;
    while (from < n) {
        uint64_t budget = w->row_group_bytes - w->rg_bytes, acc = 0;
        size_t to = from;
        while (to < n && acc < budget) {
            for (size_t i = 0; i < w->ncols; i++)
                acc += value_bytes(&w->cols[i], &cols[i], to);
            to++;
        }
        for (size_t i = 0; i < w->ncols; i++) {
            rc = column_append(w, &w->cols[i], &cols[i], from, to, e);
            if (rc != MS_OK) {
                w->state = W_FAILED;
                return rc;
            }
        }
        w->rg_rows += to - from;
        w->rg_bytes += acc;
        if (w->rg_bytes >= w->row_group_bytes && (rc = flush_row_group(w, e)) != MS_OK) {
            w->state = W_FAILED;
            return rc;
        }
        from = to;
    }
    return MS_OK;
}

/* A SchemaElement leaf for column c. */
static void put_schema_leaf(tc_writer *t, const pq_col *c)
{
    tc_struct_begin(t);
    tc_field_i32(t, 1, c->phys);
    tc_field_i32(t, 3, c->def.optional ? REP_OPTIONAL : REP_REQUIRED);
    tc_field_string(t, 4, c->def.name);
    switch (c->def.type) {
    case PQ_STRING:
        tc_field_i32(t, 6, CT_UTF8);
        tc_field_struct(t, 10);
        tc_field_empty_struct(t, 1); /* STRING */
        tc_struct_end(t);
        break;
    case PQ_JSON:
        tc_field_i32(t, 6, CT_JSON);
        tc_field_struct(t, 10);
        tc_field_empty_struct(t, 12); /* JSON */
        tc_struct_end(t);
        break;
    case PQ_TIMESTAMP:
        tc_field_i32(t, 6, CT_TIMESTAMP_MICROS);
        tc_field_struct(t, 10);
        tc_field_struct(t, 8);       /* TIMESTAMP */
        tc_field_bool(t, 1, true);   /* isAdjustedToUTC */
        tc_field_struct(t, 2);       /* unit */
        tc_field_empty_struct(t, 2); /* MICROS */
        tc_struct_end(t);
        tc_struct_end(t);
        tc_struct_end(t);
        break;
    case PQ_INT64:
        tc_field_i32(t, 6, CT_INT_64);
        tc_field_struct(t, 10);
        tc_field_struct(t, 10);    /* INTEGER */
        tc_field_i8(t, 1, 64);     /* bitWidth */
        tc_field_bool(t, 2, true); /* isSigned */
        tc_struct_end(t);
        tc_struct_end(t);
        break;
    case PQ_DOUBLE:
    case PQ_BOOLEAN: break;
    }
    tc_struct_end(t);
}

ms_code pq_writer_close(pq_writer *w, uint64_t *rows, ms_err *e)
{
    if (w->state != W_OPEN)
        return ms_fail(e, MS_EINVAL, "parquet: the writer is %s", w->state == W_DONE ? "closed" : "failed");
    ms_code rc = flush_row_group(w, e);
    if (rc != MS_OK) {
        w->state = W_FAILED;
        return rc;
    }
    buf footer = {0};
    tc_writer t;
    tc_init(&t, &footer);
    tc_struct_begin(&t);    /* FileMetaData */
    tc_field_i32(&t, 1, 1); /* version */
    tc_field_list(&t, 2, TC_STRUCT, (uint32_t)(w->ncols + 1));
    tc_struct_begin(&t); /* the root */
    tc_field_string(&t, 4, "schema");
    tc_field_i32(&t, 5, (int32_t)w->ncols);
    tc_struct_end(&t);
    for (size_t i = 0; i < w->ncols; i++)
        put_schema_leaf(&t, &w->cols[i]);
    tc_field_i64(&t, 3, (int64_t)w->rows);
    tc_field_list(&t, 4, TC_STRUCT, w->nrowgroups);
    buf_put(&footer, w->rowgroups.data, w->rowgroups.len);
    if (w->nkv) {
        tc_field_list(&t, 5, TC_STRUCT, (uint32_t)w->nkv);
        for (size_t i = 0; i < w->nkv; i++) {
            tc_struct_begin(&t);
            tc_field_string(&t, 1, w->kv[2 * i]);
            tc_field_string(&t, 2, w->kv[2 * i + 1]);
            tc_struct_end(&t);
        }
    }
    tc_field_string(&t, 6, w->created_by);
    tc_field_list(&t, 7, TC_STRUCT, (uint32_t)w->ncols);
    for (size_t i = 0; i < w->ncols; i++) {
        tc_struct_begin(&t);          /* ColumnOrder */
        tc_field_empty_struct(&t, 1); /* TYPE_ORDER */
        tc_struct_end(&t);
    }
    tc_struct_end(&t);
    if (footer.len > UINT32_MAX) {
        buf_free(&footer);
        w->state = W_FAILED;
        return ms_fail(e, MS_EINVAL, "parquet: a footer of %zu bytes", footer.len);
    }
    pq_put_le32(&footer, (uint32_t)footer.len);
    buf_put(&footer, "PAR1", 4);
    rc = emit(w, footer.data, footer.len, e);
    buf_free(&footer);
    if (rc != MS_OK) return rc;
    w->state = W_DONE;
    if (rows) *rows = w->rows;
    return MS_OK;
}

uint64_t pq_writer_bytes(const pq_writer *w) { return w->offset; }
