/*
 * batch_marker.c - encode and decode a cluster batch's marker (see batch_marker.h).
 */
#include "pipeline/batch_marker.h"

#include <stdlib.h>

static void run_put(buf *v, const marker_run *r)
{
    unsigned char b[MARKER_RUN];
    b[0] = r->topic;
    ms_set_be64(b + 1, (uint64_t)r->from);
    ms_set_be64(b + 9, (uint64_t)r->to);
    buf_put(v, b, MARKER_RUN);
}

void marker_encode(int32_t p, uint32_t partitions, const uint8_t *topics, const int64_t *offsets, size_t n,
                   unsigned char key[MARKER_KEY], buf *value)
{
    key[0] = 'B';
    ms_set_be32(key + 1, (uint32_t)p);
    key[5] = topics[0];
    ms_set_be64(key + 6, (uint64_t)offsets[0]);
    buf_put_be32(value, partitions);
    marker_run r = {topics[0], offsets[0], offsets[0] + 1};
    for (size_t i = 1; i < n; i++) {
        if (topics[i] == r.topic && offsets[i] >= r.to) { /* the same topic, later: the run grows */
            r.to = offsets[i] + 1;
            continue;
        }
        run_put(value, &r);
        r = (marker_run){topics[i], offsets[i], offsets[i] + 1};
    }
    run_put(value, &r);
}

bool marker_key_decode(const void *key, size_t len, int32_t *p)
{
    const unsigned char *k = key;
    if (len != MARKER_KEY || k[0] != 'B') return false;
    *p = (int32_t)ms_get_be32(k + 1);
    return *p >= 0;
}

bool marker_value_decode(const void *value, size_t len, uint32_t *partitions, marker_run **runs, size_t *nruns)
{
    const unsigned char *v = value;
    if (len <= 4 || (len - 4) % MARKER_RUN) return false;
    *partitions = ms_get_be32(v);
    if (*partitions == 0) return false;
    size_t n = (len - 4) / MARKER_RUN;
    marker_run *r = ms_malloc(sizeof *r * n);
    v += 4;
    for (size_t i = 0; i < n; i++, v += MARKER_RUN) {
        r[i] = (marker_run){v[0], (int64_t)ms_get_be64(v + 1), (int64_t)ms_get_be64(v + 9)};
        if (r[i].topic > 1 || r[i].from < 0 || r[i].to <= r[i].from) {
            free(r);
            return false;
        }
    }
    *runs = r;
    *nruns = n;
    return true;
}

bool marker_holds_shards_of(int32_t source, uint32_t partitions, int32_t p)
{
    return partitions > 0 && p >= 0 && source >= 0 && (uint32_t)p % partitions == (uint32_t)source;
}
