/*
 * audit_chain.c - the audit log's storage: an append-only chain of entries, each carrying the SHA-256 of
 * the entry before it, numbered 1, 2, ... in the audit sub-database. What an entry says (who, what,
 * outcome) is access/audit.c's; the store numbers, chains, keeps and re-walks them.
 *
 * DESIGN: an entry is the text {"seq":N,"prev":"<hex SHA-256 of entry N-1, zeros for the first>", then
 * the caller's JSON members}. Appending is part of a store_write, so an entry is durable in the same
 * commit as what it describes; the chain's end (number and hash) lives on the store, extended on the
 * store_write and adopted by the store only when that commit succeeds. Verification re-reads every entry
 * from one read transaction and checks numbers and hashes: an edit, a deletion or a reordering breaks the
 * chain at the first entry affected.
 *
 * Contract: store.h ("The audit chain"). Must never: rewrite or delete an entry, append outside a
 * store_write, let the chain's end move for a transaction that did not commit.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

/* The chain's end: the last entry's number and the SHA-256 of its bytes. */
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
    SHA256((const unsigned char *)v, len, st->prev);
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
    rc = store_audit_scan(r, 0, verify_entry, &st, e);
    store_read_end(r);
    *bad = st.bad;
    *entries = st.expect - 1;
    memcpy(head, st.prev, 32);
    return rc;
}
