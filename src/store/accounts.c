/*
 * accounts.c - users and bearer tokens: the accounts (name -> role, Argon2id hash, disabled flag, commit
 * times) and the tokens (SHA-256 of a bearer token -> expiry, role at login, user name).
 *
 * DESIGN: the store keeps what it is given; what a valid name, role or password is, and the rule that
 * some enabled account must be able to manage accounts, are access/users.c's. Account changes are part
 * of a store_write (the writer's transaction, or an offline command's), so each is durable with its
 * audit entry. Tokens are small writes of their own from request threads: a login (store_token_put)
 * checks in the same write transaction that the account exists, is enabled and still has the password
 * hash the login was checked against, so a login racing a deletion, a disabling or a password change
 * cannot leave a token behind, and deletes the tokens expired for a day among the few after its
 * own (TOKEN_SWEEP_LOOK), so that expired tokens do not pile up; revoking a user's tokens scans the tokens
 * sub-database and drops expired tokens of anyone on the way.
 *
 * Contract: store.h ("Accounts and tokens"). Must never: store or return a password (only its hash), put
 * a hash or a token into an error message.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <string.h>

/* ---- accounts ---- */

static ms_code account_get(MDB_txn *txn, MDB_dbi dbi, const char *name, store_account *a, bool *found, ms_err *e)
{
    *found = false;
    size_t n = strlen(name);
    if (n == 0 || n >= STORE_USER_MAX) return MS_OK; /* no such name can be stored */
    MDB_val k = st_val(name, n), v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND) return MS_OK;
    if (rc) return st_mdb_fail(e, rc, "user lookup");
    if (!st_account_decode(&k, &v, a)) return ms_fail(e, MS_ECORRUPT, "store: bad user entry");
    *found = true;
    return MS_OK;
}

static ms_code account_list(MDB_txn *txn, MDB_dbi dbi, store_account_fn fn, void *ctx, ms_err *e)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, dbi, &c);
    if (rc) return st_mdb_fail(e, rc, "cursor");
    MDB_val k, v;
    store_account a;
    ms_code code = MS_OK;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (!st_account_decode(&k, &v, &a)) {
            code = ms_fail(e, MS_ECORRUPT, "store: bad user entry");
            break;
        }
        if (!fn(ctx, &a)) break;
    }
    mdb_cursor_close(c);
    if (code == MS_OK && rc && rc != MDB_NOTFOUND) code = st_mdb_fail(e, rc, "user list");
    return code;
}

ms_code store_user_get(store_read *r, const char *name, char role[STORE_ROLE_MAX], char hash[STORE_HASH_MAX],
                       bool *found, ms_err *e)
{
    store_account a;
    ms_code rc = account_get(r->txn, r->s->dbi[DB_USERS], name, &a, found, e);
    if (rc == MS_OK && *found) {
        memcpy(role, a.role, STORE_ROLE_MAX);
        memcpy(hash, a.hash, STORE_HASH_MAX);
    }
    return rc;
}

ms_code store_account_get(store_read *r, const char *name, store_account *a, bool *found, ms_err *e)
{
    return account_get(r->txn, r->s->dbi[DB_USERS], name, a, found, e);
}

ms_code store_account_list(store_read *r, store_account_fn fn, void *ctx, ms_err *e)
{
    return account_list(r->txn, r->s->dbi[DB_USERS], fn, ctx, e);
}

ms_code store_write_account_get(store_write *w, const char *name, store_account *a, bool *found, ms_err *e)
{
    return account_get(w->txn, w->s->dbi[DB_USERS], name, a, found, e);
}

ms_code store_write_account_list(store_write *w, store_account_fn fn, void *ctx, ms_err *e)
{
    return account_list(w->txn, w->s->dbi[DB_USERS], fn, ctx, e);
}

ms_code store_account_put(store_write *w, const store_account *a, ms_err *e)
{
    size_t nl = strnlen(a->name, STORE_USER_MAX), rl = strnlen(a->role, STORE_ROLE_MAX);
    size_t hl = strnlen(a->hash, STORE_HASH_MAX);
    if (nl == 0 || nl == STORE_USER_MAX || rl == 0 || rl == STORE_ROLE_MAX || hl == STORE_HASH_MAX)
        return ms_fail(e, MS_EINVAL, "store: account name, role or hash missing or too long");
    buf v = {0};
    st_account_encode(&v, a);
    MDB_val k = st_val(a->name, nl), mv = st_val(v.data, v.len);
    int rc = mdb_put(w->txn, w->s->dbi[DB_USERS], &k, &mv, 0);
    buf_free(&v);
    return rc ? st_mdb_fail(e, rc, "user write") : MS_OK;
}

ms_code store_account_delete(store_write *w, const char *name, ms_err *e)
{
    MDB_val k = st_val(name, strlen(name));
    int rc = k.mv_size ? mdb_del(w->txn, w->s->dbi[DB_USERS], &k, NULL) : MDB_NOTFOUND;
    if (rc == MDB_NOTFOUND) return ms_fail(e, MS_ENOTFOUND, "no such user");
    return rc ? st_mdb_fail(e, rc, "user delete") : MS_OK;
}

/* ---- tokens ---- */

/* How many tokens a login looks at beside its own, deleting the expired ones among them. A token's key is
 * the SHA-256 of a random token, so each login looks at the table at a random place: where a share x of the
 * entries has expired (a day ago: TOKEN_SWEEP_GRACE_US), a login deletes about TOKEN_SWEEP_LOOK * x of them
 * while it adds one, and the expired entries settle at about 1 / TOKEN_SWEEP_LOOK of the table. Before,
 * expired tokens stayed until their account changed: a service signing in every minute left 525,600
 * entries a year. */
#define TOKEN_SWEEP_LOOK 8
/* A token is swept only this long after it expired: until then its holder is told "expired token" (the
 * console signs in again on that), not "unknown or revoked token". */
#define TOKEN_SWEEP_GRACE_US (24LL * 3600 * 1000000)

/* Delete the tokens expired for TOKEN_SWEEP_GRACE_US among the TOKEN_SWEEP_LOOK entries after hash's (the
 * table read as a ring), in txn. An entry that does not decode ends the look (store_token_get reports it);
 * an LMDB error is returned (the transaction is then to be aborted). */
static int sweep_near(MDB_txn *txn, MDB_dbi dbi, const unsigned char hash[32], int64_t now)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, dbi, &c);
    if (rc) return rc;
    MDB_val k = st_val(hash, 32), v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_KEY);
    bool wrapped = false;
    for (int looked = 0; rc == 0 && looked < TOKEN_SWEEP_LOOK; looked++) {
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        if (rc == MDB_NOTFOUND && !wrapped) {
            wrapped = true;
            rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
        }
        if (rc || (k.mv_size == 32 && memcmp(k.mv_data, hash, 32) == 0)) break; /* the end, or round to its own */
        int64_t expires;
        const char *owner;
        size_t owner_len;
        if (!st_token_user(&v, &expires, &owner, &owner_len)) break;
        if (expires <= now - TOKEN_SWEEP_GRACE_US) rc = mdb_cursor_del(c, 0);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

ms_code store_token_put(store *s, const unsigned char hash[32], int64_t expires, const char *user, const char *role,
                        const char *password_hash, ms_err *e)
{
    buf v = {0};
    st_token_encode(&v, expires, user, role);
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) {
        buf_free(&v);
        return st_mdb_fail(e, rc, "token");
    }
    store_account a;
    bool found = false;
    ms_code code = account_get(txn, s->dbi[DB_USERS], user, &a, &found, e);
    if (code == MS_OK && (!found || a.disabled))
        code = ms_fail(e, MS_ENOTFOUND, "token: the account is %s", found ? "disabled" : "gone");
    else if (code == MS_OK && password_hash && strcmp(a.hash, password_hash) != 0)
        code = ms_fail(e, MS_ENOTFOUND, "token: the account's password was changed since it was checked");
    if (code == MS_OK) {
        MDB_val k = st_val(hash, 32), mv = st_val(v.data, v.len);
        rc = mdb_put(txn, s->dbi[DB_TOKENS], &k, &mv, MDB_NOOVERWRITE);
        if (!rc) rc = sweep_near(txn, s->dbi[DB_TOKENS], hash, ms_now_us());
        if (!rc) {
            rc = mdb_txn_commit(txn);
            txn = NULL;
        }
        if (rc)
            code = rc == MDB_KEYEXIST ? ms_fail(e, MS_ECONFLICT, "token: already exists") : st_mdb_fail(e, rc, "token");
    }
    if (txn) mdb_txn_abort(txn);
    buf_free(&v);
    return code;
}

ms_code store_token_delete(store *s, const unsigned char hash[32], ms_err *e)
{
    return st_small_write(s, DB_TOKENS, hash, 32, NULL, 0, 0, true, "token", e);
}

ms_code store_token_get(store_read *r, const unsigned char hash[32], int64_t *expires, char user[STORE_USER_MAX],
                        char role[STORE_ROLE_MAX], bool *found, ms_err *e)
{
    MDB_val k = st_val(hash, 32), v;
    *found = false;
    int rc = mdb_get(r->txn, r->s->dbi[DB_TOKENS], &k, &v);
    if (rc == MDB_NOTFOUND) return MS_OK;
    if (rc) return st_mdb_fail(e, rc, "token lookup");
    if (!st_token_decode(&v, expires, user, role)) return ms_fail(e, MS_ECORRUPT, "store: bad token entry");
    *found = true;
    return MS_OK;
}

ms_code store_tokens_revoke_user(store_write *w, const char *user, const unsigned char *keep, uint64_t *revoked,
                                 ms_err *e)
{
    *revoked = 0;
    MDB_cursor *c;
    int rc = mdb_cursor_open(w->txn, w->s->dbi[DB_TOKENS], &c);
    if (rc) return st_mdb_fail(e, rc, "cursor");
    int64_t now = ms_now_us();
    size_t ul = strlen(user);
    MDB_val k, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        int64_t expires;
        const char *owner;
        size_t owner_len;
        if (!st_token_user(&v, &expires, &owner, &owner_len)) {
            rc = MDB_CORRUPTED;
            break;
        }
        bool expired = expires <= now;
        bool theirs = owner_len == ul && memcmp(owner, user, ul) == 0 &&
                      !(keep && k.mv_size == 32 && memcmp(k.mv_data, keep, 32) == 0);
        if (!expired && !theirs) continue;
        if ((rc = mdb_cursor_del(c, 0))) break;
        if (theirs && !expired) ++*revoked;
    }
    mdb_cursor_close(c);
    return rc && rc != MDB_NOTFOUND ? st_mdb_fail(e, rc, "token revocation") : MS_OK;
}
