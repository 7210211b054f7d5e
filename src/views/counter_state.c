/*
 * counter_state.c - the counters' state file: encoding, checks, durable atomic write (see counter_state.h).
 *
 * Must never: write the first format (MSCS1: no schema version), trust a byte past the checksummed length.
 */
#include "views/counter_state.h"

#include "export/out_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#define STATE_MAGIC "MSCS2\n"
#define STATE_MAGIC_V1 "MSCS1\n" /* before the schema version and the flags: still read, never written */
#define STATE_FILE "counters.state"

void counter_state_encode(buf *out, uint64_t position, int64_t commit_time, int64_t saved_at, uint32_t schema_version,
                          const counter_state_entry *entries, uint32_t n)
{
    out->len = 0;
    buf_put(out, STATE_MAGIC, 6);
    buf_put_be64(out, position);
    buf_put_be64(out, (uint64_t)commit_time);
    buf_put_be64(out, (uint64_t)saved_at);
    buf_put_be32(out, schema_version);
    buf_put_be32(out, n);
    for (uint32_t i = 0; i < n; i++) {
        buf_put_be32(out, (uint32_t)entries[i].def_len);
        buf_put(out, entries[i].def, entries[i].def_len);
        buf_put_be32(out, (uint32_t)entries[i].state_len);
        buf_put(out, entries[i].state, entries[i].state_len);
        buf_put_be64(out, entries[i].changes);
        buf_put_be32(out, entries[i].flags);
    }
    buf_put_be64(out, XXH3_64bits(out->data, out->len));
}

ms_code counter_state_write(const char *dir, const buf *bytes, ms_err *e)
{
    out_file *f;
    ms_code rc = out_open(&f, dir, STATE_FILE, 0600, e);
    if (rc != MS_OK) return rc;
    if ((rc = out_write(f, bytes->data, bytes->len, e)) != MS_OK) {
        out_abort(f);
        return rc;
    }
    return out_finish(f, NULL, e);
}

void counter_state_free(counter_state *st)
{
    free(st->entries);
    buf_free(&st->raw);
    memset(st, 0, sizeof *st);
}

ms_code counter_state_decode(counter_state *st, buf *bytes, ms_err *e)
{
    memset(st, 0, sizeof *st);
    st->raw = *bytes;
    *bytes = (buf){0};
    /* an empty file's data is NULL (buf_read_file): no arithmetic on it */
    const unsigned char *p = (const unsigned char *)st->raw.data, *end = st->raw.len ? p + st->raw.len : p;
    const char *why = NULL;
    bool v1 = st->raw.len >= 6 && memcmp(p, STATE_MAGIC_V1, 6) == 0;
    size_t head = v1 ? 28 : 32; /* position, commit time, saved at, (schema version,) n */
    if (st->raw.len < 6 + head + 8 || (!v1 && memcmp(p, STATE_MAGIC, 6) != 0)) {
        why = "not a counters state file";
        goto bad;
    }
    end -= 8;
    if (ms_get_be64(end) != XXH3_64bits(p, (size_t)(end - p))) {
        why = "its checksum does not match (a torn or damaged file)";
        goto bad;
    }
    p += 6;
    st->position = ms_get_be64(p);
    st->commit_time = (int64_t)ms_get_be64(p + 8);
    st->saved_at = (int64_t)ms_get_be64(p + 16);
    st->schema_version = v1 ? 0 : ms_get_be32(p + 24);
    st->n = ms_get_be32(p + head - 4);
    p += head;
    if (st->n > 100000) {
        why = "too many counters";
        goto bad;
    }
    st->entries = ms_calloc(st->n ? st->n : 1, sizeof *st->entries);
    for (uint32_t i = 0; i < st->n; i++) {
        counter_state_entry *x = &st->entries[i];
        if (end - p < 4 || (size_t)(end - p - 4) < ms_get_be32(p)) goto short_file;
        x->def_len = ms_get_be32(p);
        x->def = (const char *)p + 4;
        p += 4 + x->def_len;
        if (end - p < 4 || (size_t)(end - p - 4) < ms_get_be32(p)) goto short_file;
        x->state_len = ms_get_be32(p);
        x->state = p + 4;
        p += 4 + x->state_len;
        if (end - p < 8) goto short_file;
        x->changes = ms_get_be64(p);
        p += 8;
        if (!v1) {
            if (end - p < 4) goto short_file;
            x->flags = ms_get_be32(p);
            p += 4;
        }
    }
    if (p == end) return MS_OK;
short_file:
    why = "its entries do not fit its length";
bad:
    counter_state_free(st);
    return ms_fail(e, MS_ECORRUPT, "counters state: %s", why);
}

ms_code counter_state_read(const char *dir, counter_state *st, bool *found, ms_err *e)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, STATE_FILE);
    memset(st, 0, sizeof *st);
    *found = false;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT) return MS_OK;
        return ms_fail(e, MS_EIO, "counters state: %s: %s", path, strerror(errno));
    }
    buf b = {0};
    ms_code rc = buf_read_file(&b, path, e);
    if (rc != MS_OK) {
        buf_free(&b);
        return rc;
    }
    *found = true;
    return counter_state_decode(st, &b, e);
}
