/*
 * encoding.c - RLE/bit-packed hybrid, the chunk dictionary and statistics (encoding.h has the formats).
 *
 * Design of the hybrid encoder: one pass over the values. A run of at least 8 equal values becomes an
 * RLE run, except that its first values may first complete the pending literals to a multiple of 8 (a
 * bit-packed run in the middle must hold whole groups); everything else gathers into literals, written
 * as one bit-packed run, the last one padded with zeros. The dictionary is open addressing with linear
 * probing over XXH3-64 hashes, grown at half load.
 */
#include "parquet/encoding.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "parquet/thrift_compact.h"

int pq_bit_width(uint64_t max)
{
    int w = 0;
    while (max) {
        w++;
        max >>= 1;
    }
    return w;
}

/* The values are read through one accessor so that the u8 and u32 forms share the encoder. */
typedef struct {
    const uint8_t *v8;
    const uint32_t *v32;
} level_src;

static inline uint32_t src_at(level_src s, size_t i) { return s.v8 ? s.v8[i] : s.v32[i]; }

/* A bit-packed run of values [from, from+count), padded with zeros to whole groups of 8. */
static void put_bitpacked(buf *out, level_src s, size_t from, size_t count, int bw)
{
    size_t groups = (count + 7) / 8;
    tc_put_varint(out, ((uint64_t)groups << 1) | 1);
    buf_reserve(out, groups * (size_t)bw);
    uint64_t acc = 0;
    int nbits = 0;
    for (size_t i = 0; i < groups * 8; i++) {
        uint64_t v = i < count ? src_at(s, from + i) : 0;
        acc |= v << nbits;
        nbits += bw;
        while (nbits >= 8) {
            buf_putc(out, (char)(unsigned char)acc);
            acc >>= 8;
            nbits -= 8;
        }
    }
}

static void put_rle(buf *out, uint32_t value, size_t count, int bw)
{
    tc_put_varint(out, (uint64_t)count << 1);
    int bytes = (bw + 7) / 8;
    for (int i = 0; i < bytes; i++, value >>= 8)
        buf_putc(out, (char)(unsigned char)value);
}

static void rle_hybrid(buf *out, level_src s, size_t n, int bw)
{
    size_t lit_start = 0, i = 0; /* pending literals: [lit_start, i) */
    while (i < n) {
        uint32_t v = src_at(s, i);
        size_t run = 1;
        while (i + run < n && src_at(s, i + run) == v)
            run++;
        size_t lit = i - lit_start;
        size_t pad = (8 - lit % 8) % 8;
        if (run >= pad + 8) {
            if (lit + pad > 0) put_bitpacked(out, s, lit_start, lit + pad, bw);
            i += pad;
            run -= pad;
            put_rle(out, v, run, bw);
            i += run;
            lit_start = i;
        } else {
            i += run;
        }
    }
    if (i > lit_start) put_bitpacked(out, s, lit_start, i - lit_start, bw);
}

void pq_rle_hybrid_u32(buf *out, const uint32_t *values, size_t n, int bit_width)
{
    level_src s = {NULL, values};
    rle_hybrid(out, s, n, bit_width);
}

void pq_rle_hybrid_u8(buf *out, const uint8_t *values, size_t n, int bit_width)
{
    level_src s = {values, NULL};
    rle_hybrid(out, s, n, bit_width);
}

/* ---- dictionary ---- */

static void dict_grow_slots(pq_dict *d)
{
    uint32_t nslots = d->nslots ? d->nslots * 2 : 1024;
    uint32_t *slots = ms_calloc(nslots, sizeof *slots);
    for (uint32_t e = 0; e < d->count; e++) {
        uint32_t i = (uint32_t)d->hash[e] & (nslots - 1);
        while (slots[i])
            i = (i + 1) & (nslots - 1);
        slots[i] = e + 1;
    }
    free(d->slots);
    d->slots = slots;
    d->nslots = nslots;
}

uint32_t pq_dict_index(pq_dict *d, const void *p, size_t n, bool with_length)
{
    if ((uint64_t)(d->count + 1) * 2 > d->nslots) dict_grow_slots(d);
    uint64_t h = XXH3_64bits(p, n);
    uint32_t mask = d->nslots - 1;
    uint32_t i = (uint32_t)h & mask;
    while (d->slots[i]) {
        uint32_t e = d->slots[i] - 1;
        if (d->hash[e] == h && d->len[e] == n && (n == 0 || memcmp(d->plain.data + d->off[e], p, n) == 0)) return e;
        i = (i + 1) & mask;
    }
    if (d->count == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 256;
        d->off = ms_realloc(d->off, d->cap * sizeof *d->off);
        d->len = ms_realloc(d->len, d->cap * sizeof *d->len);
        d->hash = ms_realloc(d->hash, d->cap * sizeof *d->hash);
    }
    uint32_t e = d->count++;
    if (with_length) pq_put_le32(&d->plain, (uint32_t)n);
    d->off[e] = d->plain.len;
    d->len[e] = (uint32_t)n;
    d->hash[e] = h;
    buf_put(&d->plain, p, n);
    d->slots[i] = e + 1;
    return e;
}

void pq_dict_clear(pq_dict *d)
{
    d->plain.len = 0;
    if (d->plain.data) d->plain.data[0] = 0;
    d->count = 0;
    if (d->slots) memset(d->slots, 0, d->nslots * sizeof *d->slots);
}

void pq_dict_free(pq_dict *d)
{
    buf_free(&d->plain);
    free(d->off);
    free(d->len);
    free(d->hash);
    free(d->slots);
    memset(d, 0, sizeof *d);
}

/* ---- statistics ---- */

void pq_stats_reset(pq_stats *s)
{
    s->null_count = 0;
    s->nan_count = 0;
    s->has_minmax = false;
    s->s_min.len = 0;
    s->s_max.len = 0;
}

void pq_stats_free(pq_stats *s)
{
    buf_free(&s->s_min);
    buf_free(&s->s_max);
    memset(s, 0, sizeof *s);
}

void pq_stats_add_i64(pq_stats *s, int64_t v)
{
    if (!s->has_minmax) {
        s->i_min = s->i_max = v;
        s->has_minmax = true;
        return;
    }
    if (v < s->i_min) s->i_min = v;
    if (v > s->i_max) s->i_max = v;
}

void pq_stats_add_bool(pq_stats *s, bool v) { pq_stats_add_i64(s, v ? 1 : 0); }

void pq_stats_add_f64(pq_stats *s, double v)
{
    if (isnan(v)) {
        s->nan_count++;
        return;
    }
    if (!s->has_minmax) {
        s->d_min = s->d_max = v;
        s->has_minmax = true;
        return;
    }
    if (v < s->d_min) s->d_min = v;
    if (v > s->d_max) s->d_max = v;
}

/* memcmp order with a prefix first. */
static int bytes_cmp(const void *a, size_t an, const void *b, size_t bn)
{
    size_t m = an < bn ? an : bn;
    int c = m ? memcmp(a, b, m) : 0;
    if (c) return c;
    return an < bn ? -1 : an > bn ? 1 : 0;
}

static void set_bytes(buf *b, const void *p, size_t n)
{
    b->len = 0;
    buf_put(b, p, n);
}

void pq_stats_add_bytes(pq_stats *s, const void *p, size_t n)
{
    if (!s->has_minmax) {
        set_bytes(&s->s_min, p, n);
        set_bytes(&s->s_max, p, n);
        s->has_minmax = true;
        return;
    }
    if (bytes_cmp(p, n, s->s_min.data, s->s_min.len) < 0)
        set_bytes(&s->s_min, p, n);
    else if (bytes_cmp(p, n, s->s_max.data, s->s_max.len) > 0)
        set_bytes(&s->s_max, p, n);
}

void pq_stats_merge(pq_stats *into, const pq_stats *from, int phys)
{
    into->null_count += from->null_count;
    into->nan_count += from->nan_count;
    if (!from->has_minmax) return;
    switch (phys) {
    case PQ_PHYS_BYTE_ARRAY:
        pq_stats_add_bytes(into, from->s_min.data, from->s_min.len);
        pq_stats_add_bytes(into, from->s_max.data, from->s_max.len);
        break;
    case PQ_PHYS_DOUBLE:
        pq_stats_add_f64(into, from->d_min);
        pq_stats_add_f64(into, from->d_max);
        break;
    default:
        pq_stats_add_i64(into, from->i_min);
        pq_stats_add_i64(into, from->i_max);
        break;
    }
}

bool pq_stats_bounds(const pq_stats *s, int phys, unsigned char min_tmp[8], unsigned char max_tmp[8], const void **min,
                     size_t *min_len, const void **max, size_t *max_len)
{
    if (!s->has_minmax) return false;
    switch (phys) {
    case PQ_PHYS_BYTE_ARRAY:
        if (s->s_min.len > PQ_STATS_MAX_BYTES || s->s_max.len > PQ_STATS_MAX_BYTES) return false;
        /* an empty buffer may have no storage yet: point at the constant "" */
        *min = s->s_min.data ? (const void *)s->s_min.data : (const void *)"";
        *min_len = s->s_min.len;
        *max = s->s_max.data ? (const void *)s->s_max.data : (const void *)"";
        *max_len = s->s_max.len;
        return true;
    case PQ_PHYS_DOUBLE: {
        double lo = s->d_min == 0 ? -0.0 : s->d_min;
        double hi = s->d_max == 0 ? 0.0 : s->d_max;
        uint64_t bits;
        memcpy(&bits, &lo, 8);
        pq_set_le64(min_tmp, bits);
        memcpy(&bits, &hi, 8);
        pq_set_le64(max_tmp, bits);
        *min_len = *max_len = 8;
        break;
    }
    case PQ_PHYS_BOOLEAN:
        min_tmp[0] = (unsigned char)s->i_min;
        max_tmp[0] = (unsigned char)s->i_max;
        *min_len = *max_len = 1;
        break;
    default:
        pq_set_le64(min_tmp, (uint64_t)s->i_min);
        pq_set_le64(max_tmp, (uint64_t)s->i_max);
        *min_len = *max_len = 8;
        break;
    }
    *min = min_tmp;
    *max = max_tmp;
    return true;
}
