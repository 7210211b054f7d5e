/*
 * fuzz_codec.c - libFuzzer target for the store's decoders of stored bytes: what a corrupted or tampered
 * data directory hands them must be refused or read within its bounds, never crash the server. The pure
 * decoders of store/codec.c (record versions, patient versions, identity entries, public record copies,
 * accounts, tokens, versioned keys) and the patient log's entries (store/plog.c, st_plog_decode). The
 * commit log entry (commit_log.c) and the audit chain's check (audit_chain.c) are parsed inside calls that
 * read LMDB, so they are not here.
 *
 * Input: the first byte picks the decoder (its value modulo the number of decoders, in the order of the
 * enum below); the rest is the value. For the two with a key (record versions, accounts) a length byte
 * splits it into key and value (255: the length is 255 + the next byte). Key and value are copied into
 * buffers of their exact size, so that ASan sees a read past either.
 *
 * Beyond "no crash, no sanitizer report", on every entry a decoder accepts:
 *   - every pointer it hands back lies inside the value, and lengths add up to the value's (no byte
 *     unaccounted for, where the layout says so); counts and lengths are within their maxima
 *     (PATIENT_STATE_MAX_FIELDS, RECORD_ID_MAX, type 64, STORE_ROLE_MAX, STORE_HASH_MAX, STORE_USER_MAX);
 *   - record versions: the record id is the key's, a format 2 entry's version and valid_from are the
 *     key's and its patient id is its number's; st_record_encode then st_record_decode under the key of
 *     the entry's own version gives the same version, and encoding that gives the same bytes;
 *   - patient versions (every format: none, PV_FORMAT_2, _3, _4, _5), decoded with mem = NULL and with mem =
 *     an arena: both accept or both refuse, with the same fields, the arena's strings at the same offsets
 *     in a copy; a format's promises (no format byte: ts and vf INT64_MIN, off 0; format 2: off 0; formats
 *     4 and 5: off <= pos; only format 5 holds values inline, each inside the value, at most
 *     ST_PV_INLINE_MAX bytes, its hash its XXH3-64), sealer = number + 1 exactly when off != 0;
 *     st_patient_encode gives format 5 (format 3 when some off > pos, its documented fallback), and that
 *     decodes to the same fields (key, pos, len, hash, ts, vf, off, inline value bytes), as does
 *     st_patient_encode_v3's (without the values); encoding again gives the same bytes;
 *   - identity entries: the three shapes (plain key, erased, sealed) and their sizes; a plain one encodes
 *     back (st_ident_encode_plain) to the same bytes;
 *   - public record copies and tokens encode back to the same bytes (tokens: when the user name has no
 *     NUL, which st_token_encode cannot write); st_token_user accepts whatever st_token_decode accepts,
 *     and agrees with it;
 *   - accounts: name, role and hash are the entry's bytes; encode then decode gives the same account;
 *   - versioned keys (12 bytes or more): st_key_version_read then st_key_versioned (st_key_record, when
 *     the key has the record id's NUL) gives the key back;
 *   - patient log entries (at the sequence number in the value's first 8 bytes): tag v, r, P or X, every
 *     back-pointer before the entry, the payload the value's tail; st_plog_encode then st_plog_decode
 *     gives the same entry.
 * Build and run: make fuzz-codec FUZZ_SECONDS=20 (seeds: fuzz/corpus_codec/).
 */
#define MS_STORE_INTERNAL
#include "fuzz_check.h"
#include "store/store_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* codec.c's format bytes (private to it; its comments give the layouts) */
#define RV_FORMAT_2 0xF2
#define PV_FORMAT_2 0xF2
#define PV_FORMAT_3 0xF3
#define PV_FORMAT_4 0xF4
#define PV_FORMAT_5 0xF6
#define PLOG_COMPACT 0x80 /* plog.c's TAG_COMPACT */

enum { K_RECORD, K_PATIENT, K_IDENT, K_PUBLIC, K_ACCOUNT, K_TOKEN, K_KEY, K_PLOG, K_KINDS };

static patient_id_key g_pk;
static const unsigned char g_id_key[32] = "medstream fuzz codec id key 0123";

/* ---- record versions ---- */

static bool same_record(const record_version *a, const record_version *b)
{
    return a->record_id_len == b->record_id_len && !memcmp(a->record_id, b->record_id, a->record_id_len + 1) &&
           a->version == b->version && a->valid_from == b->valid_from && a->valid_to == b->valid_to &&
           a->patient_number == b->patient_number && a->ts_us == b->ts_us && a->body_pos == b->body_pos &&
           a->body_len == b->body_len && a->body_hash == b->body_hash &&
           !memcmp(a->content_hash, b->content_hash, 16) && a->type_len == b->type_len &&
           !memcmp(a->type, b->type, a->type_len + 1) && a->deleted == b->deleted && a->sealed == b->sealed &&
           a->parent_id_len == b->parent_id_len && !memcmp(a->parent_id, b->parent_id, a->parent_id_len + 1);
}

static void fuzz_record(const uint8_t *d, size_t n)
{
    size_t kl = fuzz_take_len(&d, &n), vl = n - kl;
    unsigned char *key = fuzz_copy(d, kl), *val = fuzz_copy(d + kl, vl);
    MDB_val k = st_val(key, kl), v = st_val(val, vl);
    record_version rv;
    if (st_record_decode(&g_pk, &k, &v, &rv)) {
        CHECK(kl >= 14 && key[kl - 13] == 0 && vl >= 1);
        CHECK(rv.record_id_len == kl - 13 && rv.record_id_len <= RECORD_ID_MAX);
        CHECK(!memcmp(rv.record_id, key, rv.record_id_len) && rv.record_id[rv.record_id_len] == 0);
        CHECK(rv.type_len <= 64 && rv.type[rv.type_len] == 0);
        CHECK(rv.parent_id_len <= RECORD_ID_MAX && rv.parent_id[rv.parent_id_len] == 0);
        CHECK(rv.valid_to == -1);
        bool v2 = val[0] == RV_FORMAT_2;
        if (v2) {
            int64_t vf;
            uint32_t version;
            st_key_version_read(key, kl, &vf, &version);
            CHECK(rv.valid_from == vf && rv.version == version);
            patient_id pid;
            patient_id_from_number(&g_pk, rv.patient_number, &pid);
            CHECK(!memcmp(pid.b, rv.pid.b, 16));
        } else { /* format 1: the version and valid_from are the value's */
            CHECK(vl >= 81 && rv.version == ms_get_be32(val) && rv.valid_from == (int64_t)ms_get_be64(val + 4));
            CHECK(!memcmp(rv.pid.b, val + 12, 16));
        }
        /* format 2 under the key of the entry's own version: the same version back (the patient id is then
         * its number's, which a format 1 entry need not hold) */
        buf kb = {0}, a = {0}, b = {0};
        st_key_record(&kb, rv.record_id, rv.record_id_len, rv.valid_from, rv.version);
        st_record_encode(&a, &rv);
        unsigned char *ak = fuzz_copy((const uint8_t *)kb.data, kb.len),
                      *av = fuzz_copy((const uint8_t *)a.data, a.len);
        MDB_val k2 = st_val(ak, kb.len), v2v = st_val(av, a.len);
        record_version again;
        CHECK(st_record_decode(&g_pk, &k2, &v2v, &again));
        CHECK(same_record(&rv, &again));
        CHECK(!v2 || !memcmp(rv.pid.b, again.pid.b, 16));
        st_record_encode(&b, &again);
        CHECK(b.len == a.len && !memcmp(a.data, b.data, a.len));
        free(ak);
        free(av);
        buf_free(&kb);
        buf_free(&a);
        buf_free(&b);
    }
    free(key);
    free(val);
}

/* ---- patient versions ---- */

/* values: compare the values held inline too (b was written in a format that keeps them) */
static bool same_fields(const patient_version *a, const patient_version *b, bool values)
{
    if (a->version != b->version || a->valid_from != b->valid_from || a->valid_to != b->valid_to ||
        a->number != b->number || memcmp(a->pid.b, b->pid.b, 16) || a->cause_record_len != b->cause_record_len ||
        memcmp(a->cause_record, b->cause_record, a->cause_record_len) || a->source_len != b->source_len ||
        memcmp(a->source, b->source, a->source_len) || a->nfields != b->nfields)
        return false;
    for (uint32_t i = 0; i < a->nfields; i++) {
        const state_field *x = &a->fields[i], *y = &b->fields[i];
        if (x->key_len != y->key_len || memcmp(x->key, y->key, x->key_len) || x->pos != y->pos || x->len != y->len ||
            x->hash != y->hash || x->ts != y->ts || x->vf != y->vf || x->off != y->off || x->sealer != y->sealer)
            return false;
        if (values && (!x->value != !y->value || (x->value && memcmp(x->value, y->value, x->len)))) return false;
    }
    return true;
}

/* What an accepted entry of `format` (its first byte) promises, its strings inside [base, base + n). */
static void check_version(const patient_version *pv, const patient_ref *who, const unsigned char *base, size_t n)
{
    unsigned format = n ? base[0] : 0;
    CHECK(!memcmp(pv->pid.b, who->id.b, 16) && pv->number == who->number && pv->valid_to == -1);
    CHECK(pv->nfields <= PATIENT_STATE_MAX_FIELDS);
    CHECK(fuzz_inside(pv->cause_record, pv->cause_record_len, base, n) && pv->cause_record_len <= UINT16_MAX);
    CHECK(fuzz_inside(pv->source, pv->source_len, base, n) && pv->source_len <= UINT16_MAX);
    for (uint32_t i = 0; i < pv->nfields; i++) {
        const state_field *f = &pv->fields[i];
        CHECK(fuzz_inside(f->key, f->key_len, base, n) && f->key_len <= UINT16_MAX);
        CHECK(f->sealer == (f->off ? who->number + 1 : 0));
        CHECK(!f->value || (format == PV_FORMAT_5 && fuzz_inside(f->value, f->len, base, n) &&
                            f->len <= ST_PV_INLINE_MAX && f->hash == XXH3_64bits(f->value, f->len)));
        if (format == PV_FORMAT_4 || format == PV_FORMAT_5) {
            CHECK(f->off <= f->pos);
        } else if (format == PV_FORMAT_2) {
            CHECK(f->off == 0);
        } else if (format != PV_FORMAT_3) {
            CHECK(f->off == 0 && f->ts == INT64_MIN && f->vf == INT64_MIN);
        }
    }
}

/* Decode b's bytes (an exact copy) with mem = NULL: it must be accepted and equal pv (its values too when b is
 * format 5); encoding it again in b's kind of format gives what encoding pv does. */
static void expect_decodes_to(const buf *b, const patient_ref *who, const patient_version *pv)
{
    unsigned char *c = fuzz_copy((const uint8_t *)b->data, b->len);
    MDB_val v = st_val(c, b->len);
    patient_version again;
    CHECK(st_patient_decode(&v, who, &again, NULL));
    check_version(&again, who, c, b->len);
    bool values = b->data[0] == (char)PV_FORMAT_5;
    CHECK(same_fields(pv, &again, values));
    buf b2 = {0};
    (values ? st_patient_encode : st_patient_encode_v3)(&b2, &again);
    buf b1 = {0};
    (values ? st_patient_encode : st_patient_encode_v3)(&b1, pv);
    CHECK(b1.len == b2.len && !memcmp(b1.data, b2.data, b1.len));
    free(again.fields);
    free(c);
    buf_free(&b1);
    buf_free(&b2);
}

static void fuzz_patient(const uint8_t *d, size_t n)
{
    unsigned char *val = fuzz_copy(d, n);
    MDB_val v = st_val(val, n);
    patient_ref who = {.number = 41};
    memset(who.id.b, 0xA5, 16);
    patient_version heap, in_arena;
    arena mem = {0};
    bool ok = st_patient_decode(&v, &who, &heap, NULL);
    bool ok_arena = st_patient_decode(&v, &who, &in_arena, &mem);
    CHECK(ok == ok_arena);
    if (ok) {
        check_version(&heap, &who, val, n);
        CHECK(same_fields(&heap, &in_arena, true));
        /* the arena's strings: at the same offsets in a copy of the value, not in the value itself */
        const char *copy = in_arena.cause_record - (heap.cause_record - (const char *)val);
        CHECK(copy != (const char *)val);
        CHECK(in_arena.source == copy + (heap.source - (const char *)val));
        for (uint32_t i = 0; i < heap.nfields; i++) {
            CHECK(in_arena.fields[i].key == copy + (heap.fields[i].key - (const char *)val));
            CHECK(!heap.fields[i].value ||
                  in_arena.fields[i].value == copy + (heap.fields[i].value - (const char *)val));
        }
        /* round trips: format 5 (3 when some off > pos) and format 3 (2 when nothing is sealed) */
        bool fallback = false, sealed = false;
        for (uint32_t i = 0; i < heap.nfields; i++) {
            fallback = fallback || heap.fields[i].off > heap.fields[i].pos;
            sealed = sealed || heap.fields[i].off != 0;
        }
        buf b = {0};
        st_patient_encode(&b, &heap);
        CHECK(b.len > 0 && (unsigned char)b.data[0] == (fallback ? PV_FORMAT_3 : PV_FORMAT_5));
        expect_decodes_to(&b, &who, &heap);
        st_patient_encode_v3(&b, &heap);
        CHECK(b.len > 0 && (unsigned char)b.data[0] == (sealed ? PV_FORMAT_3 : PV_FORMAT_2));
        expect_decodes_to(&b, &who, &heap);
        buf_free(&b);
    } else {
        CHECK(heap.fields == NULL); /* nothing left to free, nothing dangling */
    }
    free(heap.fields);
    arena_free(&mem);
    free(val);
}

/* ---- identity entries, public record copies ---- */

static void fuzz_ident(const uint8_t *d, size_t n)
{
    unsigned char *val = fuzz_copy(d, n);
    MDB_val v = st_val(val, n);
    ident_entry ie;
    if (st_ident_decode(&v, &ie)) {
        CHECK(n >= 28 && !memcmp(ie.pid.b, val, 16));
        if (ie.legacy) {
            CHECK(!ie.erased && val[16] != IDENT_FORMAT_2 && !ie.mac && !ie.sealed);
            CHECK((const unsigned char *)ie.key == val + 16 && ie.key_len == n - 16);
            buf b = {0};
            st_ident_encode_plain(&b, &ie.pid, ie.key, ie.key_len);
            CHECK(fuzz_same_bytes(&b, val, n));
            buf_free(&b);
        } else if (ie.erased) {
            CHECK(n == 66 && val[16] == IDENT_FORMAT_2 && (val[17] & IDENT_ERASED) && ie.mac == val + 18);
            CHECK(!ie.sealed && !ie.key && ie.erased_at == (int64_t)ms_get_be64(val + 50));
            CHECK(ie.erased_pos == ms_get_be64(val + 58));
        } else {
            CHECK(val[16] == IDENT_FORMAT_2 && !(val[17] & IDENT_ERASED) && ie.mac == val + 18 && !ie.key);
            CHECK(ie.sealed == val + 50 && 50 + 12 + ie.key_len + 16 == n && fuzz_inside(ie.mac, 32, val, n));
        }
    }
    free(val);
}

static void fuzz_public(const uint8_t *d, size_t n)
{
    unsigned char *val = fuzz_copy(d, n);
    MDB_val v = st_val(val, n);
    public_record pr;
    if (st_public_record_decode(&v, &pr)) {
        CHECK(n >= 19);
        size_t tl = val[18];
        CHECK(tl <= 64 && n >= 19 + tl); /* the type: 64 bytes at most (public_record.type) */
        CHECK(!memcmp(pr.type, val + 19, tl) && pr.type[tl] == 0);
        CHECK(!memcmp(pr.pid.b, val, 16) && pr.year == (int)ms_get_be16(val + 16));
        CHECK((const unsigned char *)pr.fields == val + 19 + tl && pr.fields_len == n - 19 - tl);
        CHECK(pr.deleted == (pr.fields_len == 0));
        record_version rv;
        memset(&rv, 0, sizeof rv);
        rv.pid = pr.pid;
        memcpy(rv.type, pr.type, tl + 1);
        rv.type_len = (uint32_t)tl;
        buf b = {0};
        st_public_record_encode(&b, &rv, pr.year, pr.deleted ? NULL : pr.fields, pr.fields_len);
        CHECK(fuzz_same_bytes(&b, val, n));
        buf_free(&b);
    }
    free(val);
}

/* ---- accounts, tokens ---- */

static void fuzz_account(const uint8_t *d, size_t n)
{
    size_t kl = fuzz_take_len(&d, &n), vl = n - kl;
    unsigned char *key = fuzz_copy(d, kl), *val = fuzz_copy(d + kl, vl);
    MDB_val k = st_val(key, kl), v = st_val(val, vl);
    store_account a;
    if (st_account_decode(&k, &v, &a)) {
        CHECK(kl >= 1 && kl < STORE_USER_MAX && !memcmp(a.name, key, kl) && a.name[kl] == 0);
        size_t rl = strnlen(a.role, STORE_ROLE_MAX), hl = strnlen(a.hash, STORE_HASH_MAX);
        CHECK(rl >= 1 && rl < STORE_ROLE_MAX && hl < STORE_HASH_MAX);
        size_t head = vl >= 18 && val[0] == 0x01 ? 18 : 0; /* codec.c's ACCOUNT_FORMAT head, or none */
        CHECK(head + rl + 1 + hl == vl && !memcmp(val + head, a.role, rl) && val[head + rl] == 0);
        CHECK(!memcmp(val + head + rl + 1, a.hash, hl));
        CHECK(head || (!a.disabled && a.created == 0 && a.changed == 0));
        buf b = {0};
        st_account_encode(&b, &a);
        unsigned char *c = fuzz_copy((const uint8_t *)b.data, b.len);
        MDB_val v2 = st_val(c, b.len);
        store_account again;
        CHECK(st_account_decode(&k, &v2, &again));
        CHECK(!strcmp(a.name, again.name) && !strcmp(a.role, again.role) && !strcmp(a.hash, again.hash));
        CHECK(a.disabled == again.disabled && a.created == again.created && a.changed == again.changed);
        free(c);
        buf_free(&b);
    }
    free(key);
    free(val);
}

static void fuzz_token(const uint8_t *d, size_t n)
{
    unsigned char *val = fuzz_copy(d, n);
    MDB_val v = st_val(val, n);
    int64_t exp_full = 0, exp_user = 0;
    char user[STORE_USER_MAX], role[STORE_ROLE_MAX];
    const char *u = NULL;
    size_t ul = 0;
    bool full = st_token_decode(&v, &exp_full, user, role);
    bool name = st_token_user(&v, &exp_user, &u, &ul);
    CHECK(!full || name);
    if (name) {
        CHECK(n > 8 && fuzz_inside(u, ul, val, n) && (const unsigned char *)u + ul == val + n);
        CHECK((const unsigned char *)u > val + 8 && u[-1] == 0 && exp_user == (int64_t)ms_get_be64(val));
        CHECK(!memchr(val + 8, 0, (size_t)((const unsigned char *)u - 1 - (val + 8)))); /* the first NUL */
    }
    if (full) {
        size_t rl = strnlen(role, STORE_ROLE_MAX);
        CHECK(rl < STORE_ROLE_MAX && val + 8 + rl == (const unsigned char *)u - 1 && !memcmp(role, val + 8, rl));
        CHECK(exp_full == exp_user && ul < STORE_USER_MAX && !memcmp(user, u, ul) && user[ul] == 0);
        if (!memchr(u, 0, ul)) {
            buf b = {0};
            st_token_encode(&b, exp_full, user, role);
            CHECK(fuzz_same_bytes(&b, val, n));
            buf_free(&b);
        }
    }
    free(val);
}

/* ---- versioned keys, patient log entries ---- */

static void fuzz_key(const uint8_t *d, size_t n)
{
    if (n < 12) return; /* st_key_version_read's precondition: the caller checks the length */
    unsigned char *key = fuzz_copy(d, n);
    int64_t vf;
    uint32_t version;
    st_key_version_read(key, n, &vf, &version);
    buf b = {0};
    st_key_versioned(&b, key, n - 12, vf, version);
    CHECK(fuzz_same_bytes(&b, key, n));
    if (n >= 13 && key[n - 13] == 0) {
        st_key_record(&b, (const char *)key, n - 13, vf, version);
        CHECK(fuzz_same_bytes(&b, key, n));
    }
    buf_free(&b);
    free(key);
}

static bool same_entry(const plog_entry *a, const plog_entry *b)
{
    return a->seq == b->seq && a->number == b->number && a->last[0] == b->last[0] && a->last[1] == b->last[1] &&
           a->last[2] == b->last[2] && a->tag == b->tag && a->valid_from == b->valid_from && a->version == b->version &&
           a->sv == b->sv && a->ts == b->ts && a->len == b->len && (a->len == 0 || !memcmp(a->data, b->data, a->len));
}

static void fuzz_plog(const uint8_t *d, size_t n)
{
    if (n < 8) return;
    uint64_t seq = ms_get_be64(d);
    unsigned char *val = fuzz_copy(d + 8, n - 8);
    n -= 8;
    MDB_val v = st_val(val, n);
    plog_entry en;
    if (st_plog_decode(seq, &v, &en)) {
        CHECK(n >= 1 && en.seq == seq && en.tag && strchr("vrPX", en.tag));
        CHECK(en.tag == (char)(val[0] & ~PLOG_COMPACT));
        for (int k = 0; k < 3; k++)
            CHECK(en.last[k] == 0 || en.last[k] < seq);
        CHECK(fuzz_inside(en.data, en.len, val, n) && (const unsigned char *)en.data + en.len == val + n);
        buf a = {0}, b = {0};
        st_plog_encode(&a, &en);
        CHECK(a.len > 0 && (unsigned char)a.data[0] == ((unsigned char)en.tag | PLOG_COMPACT));
        unsigned char *c = fuzz_copy((const uint8_t *)a.data, a.len);
        MDB_val v2 = st_val(c, a.len);
        plog_entry again;
        CHECK(st_plog_decode(seq, &v2, &again));
        CHECK(same_entry(&en, &again));
        st_plog_encode(&b, &again);
        CHECK(b.len == a.len && !memcmp(a.data, b.data, a.len));
        free(c);
        buf_free(&a);
        buf_free(&b);
    }
    free(val);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        patient_id_key_init(&g_pk, g_id_key);
        ready = true;
    }
    if (size < 1) return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] % K_KINDS) {
    case K_RECORD: fuzz_record(p, n); break;
    case K_PATIENT: fuzz_patient(p, n); break;
    case K_IDENT: fuzz_ident(p, n); break;
    case K_PUBLIC: fuzz_public(p, n); break;
    case K_ACCOUNT: fuzz_account(p, n); break;
    case K_TOKEN: fuzz_token(p, n); break;
    case K_KEY: fuzz_key(p, n); break;
    default: fuzz_plog(p, n); break;
    }
    return 0;
}
