/*
 * audit_chain.c - the audit log's storage: an append-only chain of entries, each carrying the SHA-256 of
 * the entry before it, numbered 1, 2, ... in the audit sub-database. What an entry says (who, what,
 * outcome) is access/audit.c's; the store numbers, chains, keeps and re-walks them.
 *
 * DESIGN: an entry is the text {"seq":N,"prev":"<hex SHA-256 of entry N-1, zeros for the first>", then
 * the caller's JSON members}. Appending is part of a store_write, so an entry is durable in the same
 * commit as what it describes; the chain's end (number and hash) lives on the store, extended on the
 * store_write and adopted by the store only when that commit succeeds. The end is also kept in meta
 * ("audit_end": be64(number) and the SHA-256 of that entry), written by every commit that appends, and it is what
 * an open continues the chain from: an entry's hash is only checked by the entry after it, so without a
 * recorded end an edit of the last entry, or the deletion of the last entries, left a chain that verified,
 * and the next entries appended made it permanent. Verification re-reads every entry from one read
 * transaction and checks numbers and hashes, then that the chain ends where meta says: an edit, a
 * deletion or a reordering breaks the chain at the first entry affected, the last ones too. (A store
 * written before "audit_end" has none until its next append; its end is checked from then on.)
 *
 * Contract: store.h ("The audit chain"). Must never: rewrite or delete an entry, append outside a
 * store_write, let the chain's end move for a transaction that did not commit.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

#define AUDIT_END_KEY "audit_end" /* meta: be64(the last entry's number), SHA-256 of its bytes */

/* The chain's end as meta records it; *found false for a store written before it was recorded. */
static int end_get(MDB_txn *txn, const store *s, uint64_t *seq, unsigned char hash[32], bool *found)
{
    MDB_val k = st_val(AUDIT_END_KEY, strlen(AUDIT_END_KEY)), v;
    int rc = mdb_get(txn, s->dbi[DB_META], &k, &v);
    *found = rc == 0 && v.mv_size == 40;
    if (*found) {
        *seq = ms_get_be64(v.mv_data);
        memcpy(hash, (const unsigned char *)v.mv_data + 8, 32);
    }
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* The chain's end: the one meta records, else (a store written before it was recorded, or entries added
 * past it, which an append could not follow) the last entry's number and the SHA-256 of its bytes. */
ms_code st_audit_head_load(store *s, ms_err *e)
{
    MDB_txn *txn;
    MDB_cursor *c;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc) return st_mdb_fail(e, rc, "begin read");
    if ((rc = mdb_cursor_open(txn, s->dbi[DB_AUDIT], &c))) {
        mdb_txn_abort(txn);
        return st_mdb_fail(e, rc, "cursor");
    }
    MDB_val k, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    if (rc == 0 && k.mv_size == 8) {
        s->audit_seq = ms_get_be64(k.mv_data);
        SHA256(v.mv_data, v.mv_size, s->audit_head);
    }
    mdb_cursor_close(c);
    uint64_t end_seq = 0;
    unsigned char end_hash[32];
    bool recorded = false;
    if (rc == 0 || rc == MDB_NOTFOUND) rc = end_get(txn, s, &end_seq, end_hash, &recorded);
    if (rc == 0 && recorded && end_seq >= s->audit_seq) { /* entries deleted or edited at the end stay missing */
        s->audit_seq = end_seq;
        memcpy(s->audit_head, end_hash, 32);
    }
    mdb_txn_abort(txn);
    return rc && rc != MDB_NOTFOUND ? st_mdb_fail(e, rc, "audit head") : MS_OK;
}

static void hex32(const unsigned char h[32], char out[65])
{
    static const char d[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++)
        out[2 * i] = d[h[i] >> 4], out[2 * i + 1] = d[h[i] & 15];
    out[64] = 0;
}

ms_code store_audit_append(store_write *w, const char *members, size_t len, ms_err *e)
{
    char prev[65];
    hex32(w->audit_head, prev);
    uint64_t seq = w->audit_seq + 1;
    buf v = {0};
    buf_printf(&v, "{\"seq\":%llu,\"prev\":\"%s\",", (unsigned long long)seq, prev);
    buf_put(&v, members, len);
    buf_putc(&v, '}');
    unsigned char kb[8];
    ms_set_be64(kb, seq);
    MDB_val k = st_val(kb, 8), mv = st_val(v.data, v.len);
    int rc = mdb_put(w->txn, w->s->dbi[DB_AUDIT], &k, &mv, MDB_APPEND);
    if (!rc) {
        SHA256((const unsigned char *)v.data, v.len, w->audit_head);
        w->audit_seq = seq;
    }
    buf_free(&v);
    return rc ? st_mdb_fail(e, rc, "audit append") : MS_OK;
}

int st_audit_end_put(store_write *w)
{
    if (w->audit_seq == w->s->audit_seq) return 0; /* no entry appended: the end is where it was */
    unsigned char end[40];
    ms_set_be64(end, w->audit_seq);
    memcpy(end + 8, w->audit_head, 32);
    MDB_val k = st_val(AUDIT_END_KEY, strlen(AUDIT_END_KEY)), v = st_val(end, sizeof end);
    return mdb_put(w->txn, w->s->dbi[DB_META], &k, &v, 0);
}

ms_code store_audit_scan(store_read *r, uint64_t after, store_audit_fn fn, void *ctx, ms_err *e)
{
    int rc = st_seq_scan(r->txn, r->s->dbi[DB_AUDIT], after, fn, ctx);
    return rc ? st_mdb_fail(e, rc, "audit scan") : MS_OK;
}

typedef struct {
    uint64_t expect;
    unsigned char prev[32];
    uint64_t bad;
    char *why;
    size_t why_cap;
    bool recorded; /* meta records the chain's end: entry end_seq, whose SHA-256 is end_hash */
    uint64_t end_seq;
    unsigned char end_hash[32];
} verify_state;

static bool verify_entry(void *ctx, uint64_t seq, const char *v, size_t len)
{
    verify_state *st = ctx;
    char head[96], prev[65];
    hex32(st->prev, prev);
    int n = snprintf(head, sizeof head, "{\"seq\":%llu,\"prev\":\"%s\",", (unsigned long long)seq, prev);
    if (seq != st->expect) {
        st->bad = st->expect;
        snprintf(st->why, st->why_cap, "entry %llu is missing (the next entry is %llu): deleted or reordered",
                 (unsigned long long)st->expect, (unsigned long long)seq);
        return false;
    }
    if (len < (size_t)n + 1 || memcmp(v, head, (size_t)n) != 0 || v[len - 1] != '}') {
        st->bad = seq;
        snprintf(st->why, st->why_cap,
                 "entry %llu does not carry the hash of entry %llu (it, or an earlier entry, was edited, "
                 "removed or moved)",
                 (unsigned long long)seq, (unsigned long long)seq - 1);
        return false;
    }
    unsigned char h[32];
    SHA256((const unsigned char *)v, len, h);
    if (st->recorded && seq == st->end_seq && memcmp(h, st->end_hash, 32) != 0) {
        st->bad = seq;
        snprintf(st->why, st->why_cap, "entry %llu is not the one the chain ends with (it was edited)",
                 (unsigned long long)seq);
        return false;
    }
    memcpy(st->prev, h, 32);
    st->expect++;
    return true;
}

ms_code store_audit_verify(store *s, uint64_t *entries, unsigned char head[32], uint64_t *bad, char *why,
                           size_t why_cap, ms_err *e)
{
    store_read *r;
    ms_code rc = store_read_begin(s, &r, e);
    if (rc != MS_OK) return rc;
    verify_state st = {.expect = 1, .why = why, .why_cap = why_cap};
    why[0] = 0;
    int mrc = end_get(r->txn, s, &st.end_seq, st.end_hash, &st.recorded);
    if (mrc == 0) rc = store_audit_scan(r, 0, verify_entry, &st, e);
    store_read_end(r);
    if (mrc) return st_mdb_fail(e, mrc, "audit end");
    uint64_t last = st.expect - 1;
    if (rc == MS_OK && !st.bad && st.recorded && last < st.end_seq) {
        st.bad = last + 1;
        snprintf(why, why_cap, "entry %llu is missing: the chain ends at entry %llu (the last entries were deleted)",
                 (unsigned long long)last + 1, (unsigned long long)st.end_seq);
    } else if (rc == MS_OK && !st.bad && st.recorded && last > st.end_seq) {
        st.bad = st.end_seq + 1;
        snprintf(why, why_cap, "entry %llu is past the chain's end, entry %llu (added outside medstream)",
                 (unsigned long long)st.end_seq + 1, (unsigned long long)st.end_seq);
        last = st.end_seq;
        memcpy(st.prev, st.end_hash, 32);
    }
    *bad = st.bad;
    *entries = last;
    memcpy(head, st.prev, 32);
    return rc;
}
