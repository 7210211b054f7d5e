/*
 * fuzz_wire.c - libFuzzer target for the decoders of bytes that reach a node from Kafka: anyone who can
 * write to the cluster's topics (T, T.by-shard, T.changelog, T.seed) can hand a node these bytes, so each
 * must be refused or read within its bounds, never crash the node nor break the node's promises:
 *   - a changelog message (ingest/cluster.c, cluster_restore): an identity entry (key 32 bytes, value 8:
 *     the test cluster_restore makes inline, mirrored here) learned into a node's shard ids
 *     (ingest/shard_ids.h), or a batch marker (pipeline/batch_marker.h: marker_key_decode,
 *     marker_value_decode, marker_holds_shards_of);
 *   - T.seed's messages (pipeline/seed_table.h: seed_chunk_key_decode, seed_table_put, seed_progress_decode),
 *     up to 16 in a row into one table, as cluster.c's seed_load reads them;
 *   - a run of changelog entries, mints and floors (T.seed's patient count) through one node's shard ids;
 *   - the headers of a record's message (pipeline/record_origin.h: record_origin_parse, record_origin_replay);
 *   - a whole message of T: its value and headers, read as ingest_kafka.c's message_origin reads them (static,
 *     over a librdkafka message: its few lines are mirrored in fuzz_message), then record_prepare_one
 *     (pipeline/prepare.h) with a schema whose public copy depends on the event time (ts as its year, dob
 *     as an age band).
 * Not here, as they need a Kafka handle or a store: cluster.c's learn_entry, take_marker and seed_load, and
 * ingest_kafka.c's message_origin themselves (the decoders they call are here).
 *
 * Input: the first byte picks the decoder (its value modulo the number of decoders, in the order of the
 * enum below); the rest is its input. Where a key and a value (or headers and a value) come from one input,
 * a length byte goes before each but the last (255: the length is 255 + the next byte); T.seed's values
 * take a be16 length. Every key, value and header is copied into a buffer of its exact size, so that ASan
 * sees a read past it.
 *
 * Beyond "no crash, no sanitizer report", on every input:
 *   - identity entries: learned (a number below 2^62, REAL_END, always), then shard_ids_get gives it back,
 *     a second number is refused, and the shard's next mint is in the shard, above it, never UINT64_MAX;
 *     refused: nothing learned;
 *   - marker keys: 'B', MARKER_KEY bytes, the partition the key's (never negative); marker_encode of the
 *     partition, topic and offset in it gives the same key;
 *   - marker values: the partition count (never 0) and every run are the value's bytes, none left over; a
 *     run's topic 0 or 1 (cluster.c indexes two-element arrays with it), 0 <= from < to; marker_encode of the
 *     runs' messages gives the same bytes when no run continues the one before it (same topic, not before
 *     its end: batch_marker.h, the encoder makes those one run), else the runs merged so, which decode and
 *     encode again to the same; marker_holds_shards_of only for p with p mod count == the source;
 *   - T.seed: a chunk key is 'L' and its first number (seed_chunk_key gives it back); a chunk put is whole
 *     be16 entries, at most SEED_CHUNK, at a multiple of SEED_CHUNK, not wrapping past 2^64, and
 *     seed_table_shard then gives every number it covers its entry's shard (its own for SEED_NO_SHARD and
 *     shards past SHARD_COUNT); a chunk refused changes nothing; a progress is the key "S" and SEED_PROGRESS
 *     bytes, identities <= patients, a done byte 0 or 1, and seed_progress_encode gives the same bytes;
 *   - shard ids (a model alongside): an identity keeps its first number (a second is refused), a new one
 *     below REAL_END is learned; a mint is in its shard, never UINT64_MAX, at or above every floor below
 *     REAL_END, above every number learned in its shard (so never one already learned); the count is the
 *     model's;
 *   - record origin headers: an accepted pair is 32 bytes of origin and 1-19 decimal digits of a line from
 *     1 to RECORD_LINE_MAX, and record_origin_line_format gives the text back when it has no leading zero;
 *     the replay header is exactly "1";
 *   - messages: a rejected record's error starts with "line 1: "; a valid one's body lies inside the value,
 *     its record id is 1-256 bytes without control characters or '/' (the header's when the body has none,
 *     else 32 lowercase hex digits derived), its event time the header's (else the ingest time) when the
 *     body has none, in the years 1 to 9999 (what RFC 3339 shows) and read back from its RFC 3339 text, and
 *     its public fields a JSON object.
 * Build and run: make -j2 build/fuzz/fuzz_wire, then (seeds: fuzz/corpus_wire/)
 *   mkdir -p build/fuzz/corpus_wire && cp fuzz/corpus_wire/seed_* build/fuzz/corpus_wire/
 *   build/fuzz/fuzz_wire -max_total_time=240 -max_len=4096 -timeout=5 -rss_limit_mb=2048 build/fuzz/corpus_wire
 */
#include "fuzz_check.h"
#include "base/json_scan.h"
#include "base/timefmt.h"
#include "ingest/shard_ids.h"
#include "pipeline/batch_marker.h"
#include "pipeline/prepare.h"
#include "pipeline/record_origin.h"
#include "pipeline/schema.h"
#include "pipeline/seed_table.h"
#include "pipeline/shard.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { K_CHANGELOG, K_SEED, K_IDS, K_ORIGIN, K_MESSAGE, K_KINDS };

static schema g_schema;
static const unsigned char g_id_key[32] = "medstream fuzz wire id key 01234";
static const unsigned char g_deid_key[32] = "medstream fuzz wire deid key 012";
#define NOW_US 1767225600000000LL /* 2026-01-01T00:00:00Z: the ingest time */
#define DAY_US 86400000000LL
#define REAL_END ((uint64_t)1 << 62) /* patient numbers (and floors) below it: 2^50 a shard, real ones */

/* The next piece of the input, whose length the length byte(s) at *p say (clipped to what is left): a copy
 * of its exact size; *p and *n move past it, *len is its length. */
static unsigned char *take(const uint8_t **p, size_t *n, size_t *len)
{
    size_t l = fuzz_take_len(p, n);
    unsigned char *c = fuzz_copy(*p, l);
    *p += l, *n -= l;
    *len = l;
    return c;
}

/* ---- batch markers ---- */

static void check_marker_key(const unsigned char *key, size_t kl)
{
    int32_t p = -1;
    if (!marker_key_decode(key, kl, &p)) return;
    CHECK(kl == MARKER_KEY && key[0] == 'B' && p >= 0 && (uint32_t)p == ms_get_be32(key + 1));
    unsigned char again[MARKER_KEY];
    uint8_t topic = key[5];
    int64_t offset = (int64_t)ms_get_be64(key + 6);
    buf v = {0};
    marker_encode(p, 1, &topic, &offset, 1, again, &v);
    CHECK(!memcmp(again, key, MARKER_KEY));
    buf_free(&v);
}

/* Does run b continue run a (the encoder makes them one)? */
static bool continues(const marker_run *a, const marker_run *b) { return a->topic == b->topic && b->from >= a->to; }

/* The messages of runs (each run: its first and last offset), encoded as partition p's marker. */
static void encode_runs(int32_t p, uint32_t count, const marker_run *runs, size_t n, unsigned char key[MARKER_KEY],
                        buf *v)
{
    uint8_t *topics = malloc(2 * n);
    int64_t *offs = malloc(sizeof *offs * 2 * n);
    CHECK(topics && offs);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        topics[k] = runs[i].topic, offs[k++] = runs[i].from;
        if (runs[i].to - 1 > runs[i].from) topics[k] = runs[i].topic, offs[k++] = runs[i].to - 1;
    }
    v->len = 0;
    marker_encode(p, count, topics, offs, k, key, v);
    free(topics);
    free(offs);
}

static void check_marker_value(const unsigned char *val, size_t vl, int32_t source)
{
    uint32_t count = 0;
    marker_run *runs = NULL;
    size_t n = 0;
    if (!marker_value_decode(val, vl, &count, &runs, &n)) return;
    CHECK(vl > 4 && n >= 1 && vl == 4 + n * MARKER_RUN && count != 0 && count == ms_get_be32(val));
    bool canonical = true;
    for (size_t i = 0; i < n; i++) {
        const unsigned char *r = val + 4 + i * MARKER_RUN;
        CHECK(runs[i].topic <= 1 && runs[i].topic == r[0]);
        CHECK(runs[i].from >= 0 && runs[i].from < runs[i].to);
        CHECK(runs[i].from == (int64_t)ms_get_be64(r + 1) && runs[i].to == (int64_t)ms_get_be64(r + 9));
        if (i > 0 && continues(&runs[i - 1], &runs[i])) canonical = false;
    }
    /* the runs merged as the encoder merges them: a run that continues the one before it grows it */
    marker_run *merged = malloc(sizeof *merged * n);
    CHECK(merged != NULL);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m > 0 && continues(&merged[m - 1], &runs[i]))
            merged[m - 1].to = runs[i].to;
        else
            merged[m++] = runs[i];
    }
    CHECK(canonical == (m == n));
    unsigned char key[MARKER_KEY];
    buf v = {0};
    int32_t p = source >= 0 ? source : 7;
    encode_runs(p, count, runs, n, key, &v);
    CHECK(key[0] == 'B' && ms_get_be32(key + 1) == (uint32_t)p && key[5] == runs[0].topic);
    CHECK((int64_t)ms_get_be64(key + 6) == runs[0].from);
    if (canonical) CHECK(v.len == vl && !memcmp(v.data, val, vl));
    unsigned char *copy = fuzz_copy((const uint8_t *)v.data, v.len);
    uint32_t count2 = 0;
    marker_run *again = NULL;
    size_t n2 = 0;
    CHECK(marker_value_decode(copy, v.len, &count2, &again, &n2));
    CHECK(count2 == count && n2 == m);
    for (size_t i = 0; i < m; i++)
        CHECK(again[i].topic == merged[i].topic && again[i].from == merged[i].from && again[i].to == merged[i].to);
    buf v2 = {0};
    unsigned char key2[MARKER_KEY];
    encode_runs(p, count2, again, n2, key2, &v2);
    CHECK(v2.len == v.len && !memcmp(v2.data, v.data, v.len) && !memcmp(key, key2, MARKER_KEY));
    /* which partitions' shards it holds (cluster.c's take_marker): only those count maps to the source */
    if (source >= 0) {
        for (int32_t q = 0; q < 64; q++)
            CHECK(marker_holds_shards_of(source, count, q) == ((uint32_t)q % count == (uint32_t)source));
        int32_t far = (int32_t)(ms_get_be32(val) & 0x7FFFFFFF);
        CHECK(!marker_holds_shards_of(source, count, far) || (uint32_t)far % count == (uint32_t)source);
        CHECK(!marker_holds_shards_of(source, count, -1 - far));
    }
    free(again);
    free(copy);
    free(merged);
    free(runs);
    buf_free(&v);
    buf_free(&v2);
}

/* ---- the changelog: identity entries, markers ---- */

static void fuzz_changelog(const uint8_t *d, size_t n)
{
    size_t kl, vl;
    unsigned char *key = take(&d, &n, &kl);
    unsigned char *val = fuzz_copy(d, n);
    vl = n;
    if (kl == 32 && vl == 8) { /* cluster_restore's identity entry: key the MAC, value the number */
        uint64_t number = ms_get_be64(val), got = 0;
        shard_ids *ids = shard_ids_new();
        if (shard_ids_learn(ids, key, number)) {
            CHECK(shard_ids_get(ids, key, &got) && got == number && shard_ids_count(ids) == 1);
            CHECK(shard_ids_learn(ids, key, number) && !shard_ids_learn(ids, key, number + 1));
            unsigned char other[32];
            memcpy(other, key, 32);
            other[0] ^= 1;
            uint32_t shard = shard_of_number(number);
            uint64_t next = shard_ids_mint(ids, other, shard);
            CHECK(shard_of_number(next) == shard && next > number && next != UINT64_MAX);
            CHECK(shard_ids_get(ids, other, &got) && got == next && shard_ids_count(ids) == 2);
        } else { /* refused: nothing learned, and never a number a real shard holds */
            CHECK(number >= REAL_END && !shard_ids_get(ids, key, &got) && shard_ids_count(ids) == 0);
        }
        shard_ids_free(ids);
    } else {
        int32_t p = -1;
        check_marker_key(key, kl);
        if (!marker_key_decode(key, kl, &p)) p = -1;
        check_marker_value(val, vl, p);
    }
    free(key);
    free(val);
}

/* ---- T.seed ---- */

typedef struct {
    uint64_t first;
    unsigned char *v; /* the last chunk put, to see it still in the table */
    size_t len;
} chunk_seen;

/* Does the table give every number of the chunk its entry's shard? */
static void check_chunk(const seed_table *t, const chunk_seen *c)
{
    for (size_t i = 0; i < c->len / 2; i++) {
        uint16_t s = ms_get_be16(c->v + 2 * i);
        uint64_t number = c->first + i;
        CHECK(seed_table_shard(t, number) == (s < SHARD_COUNT ? s : shard_of_number(number)));
    }
}

static void fuzz_seed(const uint8_t *d, size_t n)
{
    seed_table t = {0};
    chunk_seen last = {0};
    for (int msg = 0; msg < 16 && n > 0; msg++) {
        size_t kl;
        unsigned char *key = take(&d, &n, &kl);
        size_t vl = n >= 2 ? ms_get_be16(d) : 0;
        d += n >= 2 ? 2 : n, n -= n >= 2 ? 2 : n;
        if (vl > n) vl = n;
        unsigned char *val = fuzz_copy(d, vl);
        d += vl, n -= vl;
        uint64_t first = 0;
        seed_progress at;
        if (seed_chunk_key_decode(key, kl, &first)) {
            CHECK(kl == SEED_CHUNK_KEY && key[0] == 'L' && first == ms_get_be64(key + 1));
            unsigned char again[SEED_CHUNK_KEY];
            seed_chunk_key(first, again);
            CHECK(!memcmp(again, key, SEED_CHUNK_KEY));
            seed_table before = t;
            if (seed_table_put(&t, first, val, vl)) {
                CHECK(vl > 0 && vl % 2 == 0 && vl / 2 <= SEED_CHUNK && first % SEED_CHUNK == 0);
                CHECK(first + vl / 2 > first && t.n >= first + vl / 2 && t.n >= before.n && t.cap >= t.n);
                free(last.v);
                last = (chunk_seen){first, val, vl};
                val = NULL;
                check_chunk(&t, &last);
                CHECK(seed_table_shard(&t, t.n) == shard_of_number(t.n)); /* past every chunk: its own */
            } else {
                CHECK(t.shard == before.shard && t.n == before.n && t.cap == before.cap);
                if (last.v) check_chunk(&t, &last);
            }
        } else if (seed_progress_decode(key, kl, val, vl, &at)) {
            CHECK(kl == 1 && key[0] == 'S' && vl == SEED_PROGRESS && at.identities <= at.patients);
            CHECK(at.patients == ms_get_be64(val) && at.identities == ms_get_be64(val + 8));
            CHECK(at.next_pos == ms_get_be64(val + 16) && at.done == (val[24] == 1) && val[24] <= 1);
            unsigned char again[SEED_PROGRESS];
            seed_progress_encode(&at, again);
            CHECK(!memcmp(again, val, SEED_PROGRESS));
        }
        free(key);
        free(val);
    }
    free(last.v);
    seed_table_free(&t);
}

/* ---- a node's shard ids, fed by changelog entries, mints and floors ---- */

#define IDS_MACS 8

static void fuzz_ids(const uint8_t *d, size_t n)
{
    shard_ids *ids = shard_ids_new();
    unsigned char mac[IDS_MACS][32];
    bool known[IDS_MACS] = {false};
    uint64_t number[IDS_MACS] = {0}, floor = 0, count = 0;
    for (int i = 0; i < IDS_MACS; i++) {
        memset(mac[i], 0x5A, 32);
        mac[i][0] = (unsigned char)i;
    }
    while (n >= 2) {
        unsigned op = d[0] % 3, m = d[1] % IDS_MACS;
        d += 2, n -= 2;
        if (op == 0 && n >= 8) { /* an entry of the changelog: (MAC, number) */
            uint64_t x = ms_get_be64(d);
            d += 8, n -= 8;
            bool ok = shard_ids_learn(ids, mac[m], x);
            if (known[m]) CHECK(ok == (number[m] == x));
            /* a new identity: learned, or refused with nothing changed (never a number a real shard holds) */
            CHECK(known[m] || ok || x >= REAL_END);
            if (!known[m] && ok) known[m] = true, number[m] = x, count++;
        } else if (op == 1 && n >= 2) { /* a new identity of a shard (cluster_route: only an unknown one) */
            uint32_t shard = ms_get_be16(d) % SHARD_COUNT;
            d += 2, n -= 2;
            if (known[m]) continue;
            uint64_t x = shard_ids_mint(ids, mac[m], shard);
            CHECK(shard_of_number(x) == shard && x >= floor && x != UINT64_MAX);
            for (int i = 0; i < IDS_MACS; i++)
                CHECK(!known[i] || shard_of_number(number[i]) != shard || x > number[i]);
            known[m] = true, number[m] = x, count++;
        } else if (op == 2 && n >= 8) { /* a seed's patient count (T.seed's progress) */
            uint64_t f = ms_get_be64(d);
            d += 8, n -= 8;
            shard_ids_floor(ids, f);
            if (f > floor && f < REAL_END) floor = f; /* (one past any real count may be ignored) */
        } else {
            break;
        }
        uint64_t got = 0;
        CHECK(shard_ids_get(ids, mac[m], &got) == known[m] && (!known[m] || got == number[m]));
        CHECK(shard_ids_count(ids) == count);
    }
    shard_ids_free(ids);
}

/* ---- a record's headers ---- */

static void fuzz_origin(const uint8_t *d, size_t n)
{
    size_t ol;
    unsigned char *origin = take(&d, &n, &ol);
    unsigned char *line = fuzz_copy(d, n);
    uint64_t at = 0;
    if (record_origin_parse(origin, ol, line, n, &at)) {
        CHECK(ol == 32 && n >= 1 && n <= 19 && at >= 1 && at <= RECORD_LINE_MAX);
        for (size_t i = 0; i < n; i++)
            CHECK(line[i] >= '0' && line[i] <= '9');
        char text[RECORD_LINE_TEXT];
        int tl = record_origin_line_format(at, text);
        CHECK(tl >= 1 && tl < RECORD_LINE_TEXT);
        if (line[0] != '0') CHECK((size_t)tl == n && !memcmp(text, line, n));
        uint64_t back = 0;
        CHECK(record_origin_parse(origin, 32, text, (size_t)tl, &back) && back == at);
    }
    if (record_origin_replay(line, n)) CHECK(n == 1 && line[0] == '1');
    free(origin);
    free(line);
}

/* ---- a whole message of T ---- */

enum { H_ORIGIN, H_LINE, H_ID, H_TS, H_REPLAY, H_COUNT };

static bool is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

static void fuzz_message(const uint8_t *d, size_t n)
{
    if (n == 0) return;
    unsigned flags = d[0];
    d++, n--;
    unsigned char *h[H_COUNT] = {NULL};
    size_t hl[H_COUNT] = {0};
    for (int i = 0; i < H_COUNT; i++)
        if (flags & (1u << i)) h[i] = take(&d, &n, &hl[i]);
    unsigned char *val = fuzz_copy(d, n);
    /* message_origin (ingest_kafka.c), over the headers present */
    scan_config cfg = {
        .schema = &g_schema, .max_record = 4096, .now_us = NOW_US, .id_key = g_id_key, .deid_key = g_deid_key};
    uint64_t line = 0;
    if (h[H_ORIGIN] && h[H_LINE] && record_origin_parse(h[H_ORIGIN], hl[H_ORIGIN], h[H_LINE], hl[H_LINE], &line))
        record_origin_apply(&cfg, h[H_ORIGIN], line, 1);
    if (h[H_ID]) {
        cfg.record_id = (const char *)h[H_ID];
        cfg.record_id_len = (uint32_t)hl[H_ID];
    }
    if (h[H_TS] && hl[H_TS] == 8) cfg.default_ts_us = (int64_t)ms_get_be64(h[H_TS]);
    if (h[H_REPLAY] && record_origin_replay(h[H_REPLAY], hl[H_REPLAY])) CHECK(hl[H_REPLAY] == 1);
    arena mem = {0};
    parsed_record r;
    record_prepare_one(&cfg, (const char *)val, n, 1, &mem, &r);
    if (r.rejected) {
        CHECK(r.error != NULL && !strncmp(r.error, "line 1: ", 8));
    } else {
        CHECK(r.error == NULL && fuzz_inside(r.body, r.body_len, val, n));
        CHECK(r.record_id && r.record_id_len >= 1 && r.record_id_len <= RECORD_ID_MAX);
        for (uint32_t i = 0; i < r.record_id_len; i++)
            CHECK((unsigned char)r.record_id[i] >= 0x20 && r.record_id[i] != 0x7f && r.record_id[i] != '/');
        if (!record_field_get(&r, "record_id", 9)) {
            if (cfg.record_id) {
                CHECK(!r.record_id_derived && r.record_id_len == cfg.record_id_len);
                CHECK(!memcmp(r.record_id, cfg.record_id, cfg.record_id_len));
            } else {
                CHECK(r.record_id_derived && r.record_id_len == 32 && is_lower_hex(r.record_id, 32));
            }
        }
        if (!record_field_get(&r, "ts", 2)) CHECK(r.ts_us == (cfg.default_ts_us ? cfg.default_ts_us : NOW_US));
        /* an event time the store can show, as a body's must be (RFC 3339: years 1 to 9999), and read back */
        CHECK(r.ts_us >= days_from_civil(1, 1, 1) * DAY_US && r.ts_us < days_from_civil(10000, 1, 1) * DAY_US);
        char shown[40];
        int64_t back = 0;
        time_format_rfc3339(r.ts_us, shown, sizeof shown);
        CHECK(time_parse_rfc3339(shown, strlen(shown), &back) && back == r.ts_us);
        json_member m[SCHEMA_MAX_PUBLIC];
        json_error je;
        CHECK(json_scan_object(r.public_fields, r.public_fields_len, m, SCHEMA_MAX_PUBLIC, &je) >= 0);
    }
    arena_free(&mem);
    for (int i = 0; i < H_COUNT; i++)
        free(h[i]);
    free(val);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    /* public fields that depend on the event time: ts as its year, dob as an age band at that time */
    static const char text[] =
        "{\"public\":{\"favorite_color\":\"copy\",\"type\":\"copy\",\"ts\":\"year\",\"dob\":\"age_band\"}}";
    ms_err e = {0};
    CHECK(schema_parse(&g_schema, text, sizeof text - 1, &e) == MS_OK);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] % K_KINDS) {
    case K_CHANGELOG: fuzz_changelog(p, n); break;
    case K_SEED: fuzz_seed(p, n); break;
    case K_IDS: fuzz_ids(p, n); break;
    case K_ORIGIN: fuzz_origin(p, n); break;
    default: fuzz_message(p, n); break;
    }
    return 0;
}
