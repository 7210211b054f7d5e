/*
 * encoding.h - the value encodings and statistics of the Parquet writer (parquet.c), as pure functions
 * over buffers: the RLE/bit-packed hybrid (definition levels, dictionary indices), PLAIN helpers, the
 * dictionary of a column chunk, and the min/max/null statistics of a page or chunk.
 *
 * The RLE/bit-packed hybrid (parquet-format Encodings.md) is a sequence of runs, each starting with a
 * ULEB128 varint header: (count << 1) for an RLE run of `count` copies of one value, written in
 * ceil(bit_width / 8) bytes little-endian; ((groups << 1) | 1) for a bit-packed run of groups of 8
 * values, each value in bit_width bits, least significant bit first. Only the last bit-packed run may
 * hold padding (zeros) past the real values: a reader knows how many values to take.
 *
 * Statistics (parquet.thrift Statistics, ColumnOrder TYPE_ORDER): min/max are true bounds of the
 * non-null values: BYTE_ARRAY by unsigned bytes (memcmp, a prefix first), INT64 signed, DOUBLE
 * numerically with NaN left out (nan_count counts it) and a zero min written as -0.0, a zero max as
 * +0.0 (so that either sign is inside the bounds), BOOLEAN false < true. No min/max when no value counts
 * (all null, or all NaN), and none for a BYTE_ARRAY chunk whose min or max is longer than
 * PQ_STATS_MAX_BYTES (a bound of a 20 KB JSON document helps no reader and bloats every page header).
 *
 * Contract: pure; allocation failure is fatal (ms_oom). What it must never do: write a min above a
 * value or a max below one; put padding anywhere but at the end of the last bit-packed run.
 */
#ifndef MS_PARQUET_ENCODING_H
#define MS_PARQUET_ENCODING_H

#include "base/util.h"

/* Parquet physical types (parquet.thrift Type) of the columns this writer makes. */
enum { PQ_PHYS_BOOLEAN = 0, PQ_PHYS_INT64 = 2, PQ_PHYS_DOUBLE = 5, PQ_PHYS_BYTE_ARRAY = 6 };

/* A BYTE_ARRAY chunk or page whose min or max is longer than this gets no min/max. */
#define PQ_STATS_MAX_BYTES 4096

/* Bits needed to write every value in 0..max (0 for max 0). */
int pq_bit_width(uint64_t max);

/* Append the RLE/bit-packed hybrid of values[0..n) at bit_width 1..32 (every value must fit) to out,
 * without a length prefix. The _u8 form takes bytes (definition levels). */
void pq_rle_hybrid_u32(buf *out, const uint32_t *values, size_t n, int bit_width);
void pq_rle_hybrid_u8(buf *out, const uint8_t *values, size_t n, int bit_width);

static inline void pq_put_le32(buf *b, uint32_t v)
{
    unsigned char le[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                           (unsigned char)(v >> 24)};
    buf_put(b, le, 4);
}

static inline void pq_set_le32(void *p, uint32_t v)
{
    unsigned char *b = p;
    for (int i = 0; i < 4; i++, v >>= 8)
        b[i] = (unsigned char)v;
}

static inline void pq_set_le64(void *p, uint64_t v)
{
    unsigned char *b = p;
    for (int i = 0; i < 8; i++, v >>= 8)
        b[i] = (unsigned char)v;
}

static inline void pq_put_le64(buf *b, uint64_t v)
{
    unsigned char le[8];
    pq_set_le64(le, v);
    buf_put(b, le, 8);
}

/* A column chunk's dictionary: its PLAIN-encoded page body (a BYTE_ARRAY entry is a 4-byte length and
 * the bytes, an INT64 entry 8 bytes little-endian) and a hash table from value bytes to entry index. */
typedef struct {
    buf plain;
    uint64_t *off;  /* entry i's value bytes start at plain.data + off[i] */
    uint32_t *len;  /* ... and are len[i] long */
    uint64_t *hash; /* XXH3-64 of the value bytes */
    uint32_t count, cap;
    uint32_t *slots; /* entry index + 1; 0 is empty; nslots a power of two, at most half full */
    uint32_t nslots;
} pq_dict;

/* The index of the value p[0..n) (its bytes: a string's, or an int64's 8 bytes little-endian), added
 * at the end if new; with_length: the PLAIN entry has a 4-byte length (BYTE_ARRAY). */
uint32_t pq_dict_index(pq_dict *d, const void *p, size_t n, bool with_length);
/* Forget every entry (memory kept for the next chunk). */
void pq_dict_clear(pq_dict *d);
void pq_dict_free(pq_dict *d);

typedef struct {
    uint64_t null_count;
    uint64_t nan_count;
    bool has_minmax;      /* a value that counts for min/max was seen */
    int64_t i_min, i_max; /* INT64; BOOLEAN as 0/1 */
    double d_min, d_max;
    buf s_min, s_max; /* BYTE_ARRAY */
} pq_stats;

/* Back to no value seen (buffers kept). */
void pq_stats_reset(pq_stats *s);
void pq_stats_free(pq_stats *s);
void pq_stats_add_i64(pq_stats *s, int64_t v);
void pq_stats_add_f64(pq_stats *s, double v);
void pq_stats_add_bool(pq_stats *s, bool v);
void pq_stats_add_bytes(pq_stats *s, const void *p, size_t n);
/* Fold `from` (of physical type phys) into `into`. */
void pq_stats_merge(pq_stats *into, const pq_stats *from, int phys);

/* The PLAIN bytes of min and max (BYTE_ARRAY without a length) for a Statistics struct, in min_tmp
 * and max_tmp for fixed-size types; false when there are none to write. */
bool pq_stats_bounds(const pq_stats *s, int phys, unsigned char min_tmp[8], unsigned char max_tmp[8], const void **min,
                     size_t *min_len, const void **max, size_t *max_len);

#endif
