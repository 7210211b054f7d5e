/*
 * test_plog.c - the patient log (store/plog.c) against a reference model: random histories of patient
 * versions, restatements, public copies, records-index entries and erasures over patients whose numbers
 * fall in several chunks of heads, in transactions that commit, abort, or fail at their commit (an
 * injected fsync error); the store closed and opened again every few transactions with a checkpoint lag of
 * a few entries, so that reads go through checkpointed heads, replayed heads and both. After every
 * transaction every read of the patient side (as of every instant of its history, exact versions, the
 * history, public copies, the records index and its cursors) equals the model's answer; between
 * transactions, steps of the log's compaction move its old part into the compacted part (plog_compact.c),
 * so reads, erasures and reopens go through moved entries too.
 * Each version holds up to three state fields whose values are random bytes of 0-80 bytes, held by the
 * writer or not: the ones held and of at most ST_PV_INLINE_MAX (64) bytes are kept inline (format 5), and
 * every read of a version (as of an instant, exact, the writer's latest through the state cache) gives each
 * field's place, length, hash and event-time order back, and each inline value byte for byte, which
 * store_field_values then returns without reading a body (none was written: a read of one would fail).
 */
#include "unit_store.h"

#define MS_STORE_INTERNAL /* for ST_PV_INLINE_MAX, as test_codec.c */
#include "store/store_internal.h"

#include <stdlib.h>
#include <xxhash.h>

#define NP 12     /* patients, in 12 chunks of heads */
#define MAXV 200  /* versions (and public copies) per patient */
#define MAXR 120  /* records-index entries per patient */
#define TXNS 300  /* transactions per seed */
#define MAXF 3    /* state fields per version */
#define MAXVAL 80 /* a field's value bytes: inline up to ST_PV_INLINE_MAX (64), beyond it only its hash */

/* A state field as the writer gives it: its value at hand (held) or only in its record body. */
typedef struct {
    char key[2];
    uint32_t len, off; /* off: sealed under the patient's data key, the value's offset in its record */
    unsigned char val[MAXVAL];
    bool held;
    uint64_t pos;
    int64_t ts, vf;
} mfield;

typedef struct {
    int64_t vf;
    uint32_t ver;
    char text[24]; /* the version's cause record, or the copy's fields */
    mfield f[MAXF];
    int nf;
} mver;

typedef struct {
    int64_t ts;
    char rid[24];
} mrec;

typedef struct {
    patient_ref who;
    mver v[MAXV], p[MAXV]; /* (a public copy's fields are its text: its f[] stay empty) */
    int nv, np;
    mrec r[MAXR];
    int nr;
    bool erased;
} mpat;

typedef struct {
    unit_store u;
    store_options opt;
    mpat m[NP];
    uint32_t rseq;
    unsigned seed;
    uint64_t moved; /* entries the compaction moved */
} world;

static unsigned rnd(world *w, unsigned n) { return (unsigned)rand_r(&w->seed) % n; }

static void reopen(world *w)
{
    ms_err e = {0};
    store_close(w->u.s);
    w->u.s = NULL;
    assert_int_equal(store_open(&w->u.s, w->u.dir, &w->opt, &e), MS_OK);
}

/* ---- the model's answers ---- */

static const mver *model_at(const mpat *p, int64_t as_of, int64_t *valid_to)
{
    *valid_to = -1;
    for (int i = p->nv - 1; i >= 0; i--) {
        if (p->v[i].vf <= as_of) return &p->v[i];
        *valid_to = p->v[i].vf;
    }
    return NULL;
}

/* A version's fields as read (pv) equal the model's (want): keys, places, lengths, hashes, order, and the
 * inline values; then store_field_values of the inline ones returns those bytes from the version alone. */
static void check_fields(store *s, const patient_version *pv, const mver *want)
{
    assert_int_equal(pv->nfields, want->nf);
    const char *vals[MAXF];
    state_field inl[MAXF];
    uint32_t ninl = 0;
    for (int i = 0; i < want->nf; i++) {
        const state_field *f = &pv->fields[i];
        const mfield *m = &want->f[i];
        assert_int_equal(f->key_len, 1);
        assert_int_equal(f->key[0], m->key[0]);
        assert_int_equal(f->len, m->len);
        assert_true(f->pos == m->pos && f->ts == m->ts && f->vf == m->vf);
        assert_int_equal(f->off, m->off);
        assert_true(f->sealer == (m->off ? pv->number + 1 : 0));
        assert_true(f->hash == XXH3_64bits(m->val, m->len));
        bool inline_value = m->held && m->len <= ST_PV_INLINE_MAX;
        assert_int_equal(f->value != NULL, inline_value);
        if (!inline_value) continue;
        assert_memory_equal(f->value, m->val, m->len);
        inl[ninl++] = *f;
    }
    buf scratch = {0};
    ms_err e = {0};
    assert_int_equal(store_field_values(s, inl, ninl, vals, &scratch, &e), MS_OK);
    for (uint32_t i = 0; i < ninl; i++)
        assert_memory_equal(vals[i], inl[i].value, inl[i].len);
    buf_free(&scratch);
}

static int rec_cmp(const void *a, const void *b)
{
    const mrec *x = a, *y = b;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    return record_key_cmp(x->rid, strlen(x->rid), y->rid, strlen(y->rid));
}

/* ---- the store's answers, checked ---- */

typedef struct {
    mrec got[MAXR];
    int n;
    buf last_key;
} rec_list;

static bool take_rec(void *ctx, int64_t ts, const char *rid, size_t len, const void *key, size_t kl)
{
    rec_list *l = ctx;
    assert_true(l->n < MAXR && len < sizeof l->got[0].rid);
    l->got[l->n].ts = ts;
    memcpy(l->got[l->n].rid, rid, len);
    l->got[l->n].rid[len] = 0;
    l->n++;
    l->last_key.len = 0;
    buf_put(&l->last_key, key, kl);
    return l->n != 3; /* stop after 3: the cursor test goes on from there */
}

static void check_patient(world *w, const mpat *p)
{
    store_read *r = unit_rbegin(w->u.s);
    arena mem = {0};
    ms_err e = {0};
    bool found;
    patient_version pv;
    /* as of every instant of the history, and just before each */
    for (int i = 0; i <= p->nv; i++) {
        int64_t instants[2] = {i < p->nv ? p->v[i].vf : INT64_MAX, i < p->nv ? p->v[i].vf - 1 : INT64_MAX - 1};
        for (int j = 0; j < 2; j++) {
            int64_t vt;
            const mver *want = model_at(p, instants[j], &vt);
            assert_int_equal(store_patient_at(r, &p->who.id, instants[j], &pv, &mem, &found, &e), MS_OK);
            assert_int_equal(found, want != NULL);
            if (!want) continue;
            assert_int_equal(pv.version, want->ver);
            assert_true(pv.valid_from == want->vf);
            assert_true(pv.valid_to == vt);
            assert_int_equal(pv.cause_record_len, strlen(want->text));
            assert_memory_equal(pv.cause_record, want->text, pv.cause_record_len);
            check_fields(w->u.s, &pv, want);
        }
    }
    /* exact versions (the sinks'), and one that is not there */
    for (int i = 0; i < p->nv; i++) {
        assert_int_equal(store_patient_version(r, &p->who.id, p->v[i].vf, p->v[i].ver, &pv, &mem, &found, &e), MS_OK);
        assert_true(found);
        assert_memory_equal(pv.cause_record, p->v[i].text, strlen(p->v[i].text));
        check_fields(w->u.s, &pv, &p->v[i]);
    }
    assert_int_equal(store_patient_version(r, &p->who.id, 5, 77777, &pv, &mem, &found, &e), MS_OK);
    assert_false(found);
    /* the history */
    patient_version *h;
    uint32_t n;
    assert_int_equal(store_patient_history(r, &p->who.id, &h, &n, &mem, &e), MS_OK);
    assert_int_equal(n, p->nv);
    for (uint32_t i = 0; i < n; i++) {
        assert_int_equal(h[i].version, p->v[i].ver);
        assert_true(h[i].valid_from == p->v[i].vf);
        assert_true(h[i].valid_to == (i + 1 < n ? p->v[i + 1].vf : -1));
    }
    /* public copies: the newest, as of each copy's instant, exactly */
    buf out = {0};
    for (int i = 0; i <= p->np; i++) {
        int64_t at = i < p->np ? p->p[i].vf : INT64_MAX;
        const mver *want = NULL;
        for (int j = p->np - 1; j >= 0 && !want; j--)
            if (p->p[j].vf <= at) want = &p->p[j];
        assert_int_equal(store_public_patient_at(r, &p->who.id, at, &out, &found, &e), MS_OK);
        assert_int_equal(found, want != NULL);
        if (want) assert_int_equal(record_key_cmp(out.data, out.len, want->text, strlen(want->text)), 0);
        if (i < p->np) {
            assert_int_equal(store_public_patient_version(r, &p->who.id, p->p[i].vf, p->p[i].ver, &out, &found, &e),
                             MS_OK);
            assert_true(found);
        }
    }
    /* the records index: sorted (the model holds each entry once: put_record); then a cursor after the third */
    mrec want[MAXR];
    memcpy(want, p->r, sizeof(mrec) * (size_t)p->nr);
    qsort(want, (size_t)p->nr, sizeof *want, rec_cmp);
    int nw = p->nr;
    rec_list l = {0};
    assert_int_equal(store_patient_records(r, &p->who.id, INT64_MIN, INT64_MAX, NULL, 0, take_rec, &l, &e), MS_OK);
    assert_int_equal(l.n, nw < 3 ? nw : 3);
    for (int i = 0; i < l.n; i++) {
        assert_true(l.got[i].ts == want[i].ts);
        assert_string_equal(l.got[i].rid, want[i].rid);
    }
    if (l.n == 3) {
        rec_list rest = {0};
        buf cursor = l.last_key;
        assert_int_equal(
            store_patient_records(r, &p->who.id, INT64_MIN, INT64_MAX, cursor.data, cursor.len, take_rec, &rest, &e),
            MS_OK);
        assert_int_equal(rest.n, nw - 3 < 3 ? nw - 3 : 3);
        for (int i = 0; i < rest.n; i++)
            assert_string_equal(rest.got[i].rid, want[3 + i].rid);
        buf_free(&rest.last_key);
    }
    buf_free(&l.last_key);
    buf_free(&out);
    arena_free(&mem);
    store_read_end(r);
}

/* ---- one random transaction ---- */

static void put_record(world *w, store_write *sw, mpat *p)
{
    ms_err e = {0};
    record_version rv = {0};
    char rid[24];
    snprintf(rid, sizeof rid, "r%u-%u", (unsigned)p->who.number, rnd(w, 8)); /* the same ids again and again */
    rv.record_id_len = (uint32_t)strlen(rid);
    memcpy(rv.record_id, rid, rv.record_id_len);
    rv.version = ++w->rseq; /* any version: the index does not look at it */
    rv.valid_from = store_write_time(sw);
    rv.valid_to = -1;
    rv.pid = p->who.id;
    rv.patient_number = p->who.number;
    rv.ts_us = 1700000000000000 + (int64_t)rnd(w, 5) * 1000; /* event times shared by several records */
    memcpy(rv.type, "lab", 3);
    rv.type_len = 3;
    assert_int_equal(store_record_put(sw, &rv, 2023, "{}", 2, &e), MS_OK);
    /* the model keeps each (event time, record id) once, as the index answers: 8 ids x 5 times at most */
    for (int i = 0; i < p->nr; i++)
        if (p->r[i].ts == rv.ts_us && strcmp(p->r[i].rid, rid) == 0) return;
    assert_true(p->nr < MAXR);
    p->r[p->nr].ts = rv.ts_us;
    memcpy(p->r[p->nr].rid, rid, rv.record_id_len + 1);
    p->nr++;
}

static void put_version(world *w, store_write *sw, mpat *p, bool restate)
{
    ms_err e = {0};
    if (p->nv == MAXV || (restate && !p->nv)) return;
    mver *v = restate ? &p->v[p->nv - 1] : &p->v[p->nv];
    if (!restate) {
        v->ver = p->nv ? p->v[p->nv - 1].ver + 1 : 1;
        v->vf = store_write_time(sw);
    }
    snprintf(v->text, sizeof v->text, "c%u", rnd(w, 100000));
    /* fields "a" "b" "c", each or not; a field's value is random bytes, its place, times and seal random too */
    state_field sf[MAXF];
    v->nf = 0;
    for (int k = 0; k < MAXF; k++) {
        if (rnd(w, 3) == 0) continue;
        mfield *m = &v->f[v->nf];
        m->key[0] = (char)('a' + k);
        m->len = rnd(w, MAXVAL + 1);
        for (uint32_t b = 0; b < m->len; b++)
            m->val[b] = (unsigned char)rnd(w, 256);
        m->held = rnd(w, 4) != 0;
        m->off = rnd(w, 3) == 0 ? 1 + rnd(w, 500) : 0;
        m->pos = 1000 + (uint64_t)rnd(w, 1u << 30) * 64;
        m->ts = 1700000000000000 + (int64_t)rnd(w, 4) * 1000; /* fields of one record version share an origin */
        m->vf = v->vf - (int64_t)rnd(w, 3);
        sf[v->nf] = (state_field){.key = m->key,
                                  .key_len = 1,
                                  .pos = m->pos,
                                  .len = m->len,
                                  .hash = XXH3_64bits(m->val, m->len),
                                  .ts = m->ts,
                                  .vf = m->vf,
                                  .off = m->off,
                                  .sealer = m->off ? p->who.number + 1 : 0,
                                  .value = m->held ? (const char *)m->val : NULL};
        v->nf++;
    }
    patient_version pv = {.pid = p->who.id,
                          .number = p->who.number,
                          .version = v->ver,
                          .valid_from = v->vf,
                          .valid_to = -1,
                          .cause_record = v->text,
                          .cause_record_len = (uint32_t)strlen(v->text),
                          .source = "unit",
                          .source_len = 4,
                          .fields = sf,
                          .nfields = (uint32_t)v->nf};
    if (restate) {
        assert_int_equal(store_patient_restate(sw, &pv, &e), MS_OK);
    } else {
        assert_int_equal(store_patient_put(sw, &pv, &e), MS_OK);
        p->nv++;
    }
}

static void put_copy(world *w, store_write *sw, mpat *p)
{
    ms_err e = {0};
    if (p->np == MAXV) return;
    uint32_t ver = p->nv ? p->v[p->nv - 1].ver : 0;
    int64_t vf = store_write_time(sw);
    mver *c = &p->p[p->np];
    if (p->np && p->p[p->np - 1].vf == vf && p->p[p->np - 1].ver == ver)
        c = &p->p[p->np - 1]; /* same key: replaced */
    else
        p->np++;
    c->vf = vf, c->ver = ver;
    snprintf(c->text, sizeof c->text, "{\"n\":%u}", rnd(w, 100000));
    uint32_t in_force, target;
    store_write_schema(sw, &in_force, &target);
    assert_int_equal(store_public_patient_put(sw, in_force, &p->who, ver, c->text, strlen(c->text), &e), MS_OK);
}

/* The writer's read of a patient's latest version (store_patient_latest: the state cache, or the log when
 * the cache has no state under the patient's head or this transaction wrote to the patient) is the model's. */
static void check_latest(store *s, store_write *sw, const mpat *p)
{
    ms_err e = {0};
    patient_version pv;
    bool found;
    arena mem = {0};
    ms_code rc = store_patient_latest(sw, &p->who, &pv, &mem, &found, &e);
    if (p->erased) {
        assert_true(rc != MS_OK || !found);
    } else {
        assert_int_equal(rc, MS_OK);
        assert_int_equal(found, p->nv > 0);
        if (found) {
            const mver *v = &p->v[p->nv - 1];
            assert_int_equal(pv.version, v->ver);
            assert_int_equal(pv.valid_from, v->vf);
            assert_int_equal(pv.valid_to, -1);
            assert_int_equal(pv.cause_record_len, strlen(v->text));
            assert_memory_equal(pv.cause_record, v->text, pv.cause_record_len);
            check_fields(s, &pv, v);
        }
    }
    arena_free(&mem);
}

static void one_txn(world *w)
{
    mpat *saved = ms_malloc(sizeof w->m); /* (~2 MB: not on the stack) */
    memcpy(saved, w->m, sizeof w->m);
    store_write *sw;
    ms_err e = {0};
    assert_int_equal(store_write_begin(w->u.s, &sw, &e), MS_OK);
    for (int i = 0; i < NP; i++)
        check_latest(w->u.s, sw, &w->m[i]); /* (run_seed created them all) */
    unsigned ops = 1 + rnd(w, 8);
    bool erased_one = false;
    for (unsigned i = 0; i < ops; i++) {
        mpat *p = &w->m[rnd(w, NP)];
        if (p->erased) continue;
        unsigned k = rnd(w, 100);
        if (k < 35)
            put_record(w, sw, p);
        else if (k < 65)
            put_version(w, sw, p, false);
        else if (k < 75)
            put_version(w, sw, p, true);
        else if (k < 99)
            put_copy(w, sw, p);
        else if (!erased_one) {
            erase_report rep;
            assert_int_equal(store_patient_erase(sw, &p->who.id, &rep, &e), MS_OK);
            p->nv = p->np = p->nr = 0;
            p->erased = erased_one = true;
        }
        check_latest(w->u.s, sw, &w->m[rnd(w, NP)]); /* one written to in this transaction, or not */
    }
    unsigned fate = rnd(w, 20);
    if (fate == 0) {
        store_write_abort(sw);
        memcpy(w->m, saved, sizeof w->m);
    } else if (fate == 1) { /* the commit's fsync fails: nothing of it is stored */
        store_inject_fault(w->u.s, 5 /* EIO */);
        assert_int_not_equal(store_write_commit(sw, NULL, &e), MS_OK);
        store_inject_fault(w->u.s, 0);
        memcpy(w->m, saved, sizeof w->m);
    } else {
        assert_int_equal(store_write_commit(sw, NULL, &e), MS_OK);
    }
    free(saved);
}

/* A world on a fresh store: the generator's seed, the checkpoint lag and chunks a commit (0: defaults). */
static world *world_open(unsigned seed, uint64_t lag, uint32_t chunks)
{
    world *w = ms_calloc(1, sizeof *w);
    w->seed = seed;
    /* a state cache with room for a few of the patients' states beside its table of 1,024 slots (56 bytes each): hits,
     * misses, reheads and evictions */
    w->opt = (store_options){.owner = "test_plog",
                             .plog_checkpoint_lag = lag,
                             .plog_checkpoint_chunks = chunks,
                             .state_cache = 1024 * 56 + 6 * 130};
    assert_true(unit_store_open(&w->u, &w->opt));
    return w;
}

static void world_close(world *w)
{
    unit_store_close(&w->u);
    free(w);
}

/* Patient i of the model ("person i", born 1970-01-01) created in sw, numbered `number` (UINT64_MAX: the
 * store's next number). */
static void create_patient(world *w, store_write *sw, int i, uint64_t number)
{
    ms_err e = {0};
    char ident[32];
    int il = snprintf(ident, sizeof ident, "person %d", i);
    memcpy(ident + il + 1, "1970-01-01", 10);
    unsigned char dk[32], mac[32];
    bool bound;
    assert_int_equal(store_data_key(w->u.s, ident, (size_t)il + 11, dk, &e), MS_OK);
    store_identity_mac(w->u.s, ident, (size_t)il + 11, mac);
    assert_int_equal(store_patient_create_mac(sw, ident, (size_t)il + 11, mac, dk, number, &w->m[i].who, &bound, &e),
                     MS_OK);
    assert_true(bound);
}

/* A world (seed, checkpoint lag) whose patient 0 was created with one version, committed. */
static world *world_one_patient(unsigned seed, uint64_t lag)
{
    world *w = world_open(seed, lag, 0);
    ms_err e = {0};
    store_write *sw;
    assert_int_equal(store_write_begin(w->u.s, &sw, &e), MS_OK);
    create_patient(w, sw, 0, UINT64_MAX);
    put_version(w, sw, &w->m[0], false);
    assert_int_equal(store_write_commit(sw, NULL, &e), MS_OK);
    return w;
}

static void run_seed(unsigned seed, uint64_t lag, uint32_t chunks)
{
    world *w = world_open(seed, lag, chunks);
    ms_err e = {0};
    store_write *sw;
    assert_int_equal(store_write_begin(w->u.s, &sw, &e), MS_OK);
    for (int i = 0; i < NP; i++) /* numbers in several chunks of 4,096 heads, two patients sharing one */
        create_patient(w, sw, i, (uint64_t)i * 4099 + (uint64_t)(i == 1));
    assert_int_equal(store_write_commit(sw, NULL, &e), MS_OK);
    bool compacting = false;
    for (int t = 0; t < TXNS; t++) {
        one_txn(w);
        if (rnd(w, 12) == 0) reopen(w);
        if (!compacting && rnd(w, 15) == 0) { /* the log's compaction: its old part moves, between commits */
            assert_int_equal(store_plog_compact_begin(w->u.s, &e), MS_OK);
            compacting = true;
        }
        for (unsigned n = compacting ? rnd(w, 4) : 0; n > 0 && compacting; n--) {
            store_compact_stats st;
            bool finished;
            assert_int_equal(store_plog_compact_step(w->u.s, 1 + rnd(w, 40), &finished, &st, &e), MS_OK);
            assert_int_equal(st.dropped + st.stubbed, 0); /* one schema version: nothing retired */
            w->moved += st.moved;
            compacting = !finished;
        }
        for (int i = 0; i < NP; i++)
            check_patient(w, &w->m[i]);
    }
    reopen(w); /* and once more after the last */
    for (int i = 0; i < NP; i++)
        check_patient(w, &w->m[i]);
    if (lag) assert_true(w->moved > 0); /* a short lag: reads went through moved entries too */
    world_close(w);
}

static void test_model_checkpoint_often(void **state)
{
    (void)state;
    for (unsigned seed = 1; seed <= 3; seed++)
        run_seed(seed, 5, seed == 1 ? 0 : seed); /* all dirty chunks at once; 2 or 3 a commit */
}

static void test_model_no_checkpoint(void **state)
{
    (void)state;
    run_seed(11, 0, 0); /* the default lag: every open replays the whole log */
}

/* A reader whose snapshot began before a patient's newest entries follows the chain back to what it holds. */
static void test_reader_older_than_head(void **state)
{
    (void)state;
    world *w = world_one_patient(7, 0);
    ms_err e = {0};
    store_write *sw;
    store_read *old = unit_rbegin(w->u.s);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(store_write_begin(w->u.s, &sw, &e), MS_OK);
        put_version(w, sw, &w->m[0], false);
        put_copy(w, sw, &w->m[0]);
        assert_int_equal(store_write_commit(sw, NULL, &e), MS_OK);
    }
    arena mem = {0};
    patient_version pv;
    bool found;
    assert_int_equal(store_patient_at(old, &w->m[0].who.id, INT64_MAX, &pv, &mem, &found, &e), MS_OK);
    assert_true(found);
    assert_int_equal(pv.version, 1); /* its snapshot's newest, not the log's */
    buf out = {0};
    assert_int_equal(store_public_patient_at(old, &w->m[0].who.id, INT64_MAX, &out, &found, &e), MS_OK);
    assert_false(found);
    store_read_end(old);
    check_patient(w, &w->m[0]);
    buf_free(&out);
    arena_free(&mem);
    world_close(w);
}

/* A walk of one kind reads that kind only: the newest version behind thousands of records-index entries is
 * a couple of reads, and the records index does not read the versions (the first chain format, one pointer
 * for all kinds, walked them all: 200 B records at ~0.05 M/min in the flatness benchmark). */
static void test_walks_read_one_kind(void **state)
{
    (void)state;
    world *w = world_open(3, 0, 0);
    ms_err e = {0};
    store_write *sw;
    assert_int_equal(store_write_begin(w->u.s, &sw, &e), MS_OK);
    create_patient(w, sw, 0, UINT64_MAX);
    mpat *p = &w->m[0];
    put_version(w, sw, p, false);
    put_copy(w, sw, p);
    assert_int_equal(store_write_commit(sw, NULL, &e), MS_OK);
    for (int c = 0; c < 20; c++) { /* 2,000 records-index entries after the only version */
        assert_int_equal(store_write_begin(w->u.s, &sw, &e), MS_OK);
        for (int i = 0; i < 100; i++)
            put_record(w, sw, p);
        assert_int_equal(store_write_commit(sw, NULL, &e), MS_OK);
    }
    store_read *r = unit_rbegin(w->u.s);
    arena mem = {0};
    patient_version pv;
    bool found;
    buf out = {0};
    uint64_t before = store_patient_log_reads(w->u.s);
    assert_int_equal(store_patient_at(r, &p->who.id, INT64_MAX, &pv, &mem, &found, &e), MS_OK);
    assert_true(found);
    assert_int_equal(store_public_patient_at(r, &p->who.id, INT64_MAX, &out, &found, &e), MS_OK);
    assert_true(found);
    assert_true(store_patient_log_reads(w->u.s) - before <= 4); /* the head, then the version; again */
    before = store_patient_log_reads(w->u.s);
    rec_list l = {0};
    assert_int_equal(store_patient_records(r, &p->who.id, INT64_MIN, INT64_MAX, NULL, 0, take_rec, &l, &e), MS_OK);
    assert_true(store_patient_log_reads(w->u.s) - before <= 2000 + 1);
    store_read_end(r);
    buf_free(&l.last_key);
    buf_free(&out);
    arena_free(&mem);
    world_close(w);
}

/* store_open_time: an open says what it read. Entries past the checkpoint are replayed one by one (all 301
 * of them with the default lag, none checkpointed); with a lag of 100, the commits past it checkpoint the
 * patient's chunk of heads, and the next open loads that chunk and replays only what follows the floor. */
static void test_open_counts_what_it_read(void **state)
{
    (void)state;
    for (int lagged = 0; lagged < 2; lagged++) {
        world *w = world_one_patient(4, lagged ? 100 : 0);
        ms_err e = {0};
        store_write *sw;
        for (int c = 0; c < 30; c++) {
            assert_int_equal(store_write_begin(w->u.s, &sw, &e), MS_OK);
            for (int i = 0; i < 10; i++)
                put_record(w, sw, &w->m[0]);
            assert_int_equal(store_write_commit(sw, NULL, &e), MS_OK);
        }
        reopen(w);
        store_open_times t = store_open_time(w->u.s);
        if (!lagged) {
            assert_int_equal(t.head_chunks, 0);
            assert_int_equal(t.replayed, 301); /* the version and 300 records-index entries */
        } else {
            assert_int_equal(t.head_chunks, 1);
            assert_true(t.replayed < 301);
        }
        assert_true(t.total_s >= t.heads_s + t.replay_s + t.keys_s + t.identities_s);
        check_patient(w, &w->m[0]);
        world_close(w);
    }
}

/* The identity index is rebuilt at open by several threads, each over a range of patient numbers
 * (identities.c). Numbers spread unevenly (31 i^2), so the ranges hold different counts and their edges
 * fall between patients: every identity is found again with its number and id, and the erased ones (in
 * each range) are not. A patient made after the reopen gets a new number. */
static void test_identities_rebuilt_in_parts(void **state)
{
    (void)state;
    enum { N = 400 };
    world *w = world_open(5, 0, 0);
    ms_err e = {0};
    store_write *sw;
    patient_ref who[N];
    char ident[N][32];
    size_t len[N];
    bool erased[N] = {0};
    assert_int_equal(store_write_begin(w->u.s, &sw, &e), MS_OK);
    for (int i = 0; i < N; i++) {
        int il = snprintf(ident[i], sizeof ident[i], "someone %d", i);
        memcpy(ident[i] + il + 1, "1980-02-02", 10);
        len[i] = (size_t)il + 11;
        unsigned char dk[32], mac[32];
        bool bound;
        assert_int_equal(store_data_key(w->u.s, ident[i], len[i], dk, &e), MS_OK);
        store_identity_mac(w->u.s, ident[i], len[i], mac);
        assert_int_equal(
            store_patient_create_mac(sw, ident[i], len[i], mac, dk, 1000 + (uint64_t)i * i * 31, &who[i], &bound, &e),
            MS_OK);
    }
    assert_int_equal(store_write_commit(sw, NULL, &e), MS_OK);
    assert_int_equal(store_write_begin(w->u.s, &sw, &e), MS_OK);
    const int gone[] = {1, N / 4, N / 2, 3 * N / 4 + 1, N - 2}; /* the first and last numbers live */
    for (size_t g = 0; g < sizeof gone / sizeof gone[0]; g++) {
        erase_report rep;
        assert_int_equal(store_patient_erase(sw, &who[gone[g]].id, &rep, &e), MS_OK);
        erased[gone[g]] = true;
    }
    assert_int_equal(store_write_commit(sw, NULL, &e), MS_OK);
    patient_ref fresh = {0};
    for (int round = 0; round < 2; round++) {
        reopen(w);
        assert_int_equal(store_write_begin(w->u.s, &sw, &e), MS_OK);
        for (int i = 0; i < N; i++) {
            patient_ref p;
            bool found;
            assert_int_equal(store_ident_get(sw, ident[i], len[i], &p, &found, &e), MS_OK);
            assert_int_equal(found, !erased[i]);
            if (!found) continue;
            assert_int_equal(p.number, who[i].number);
            assert_memory_equal(&p.id, &who[i].id, sizeof p.id);
        }
        /* a new patient after the reopen: a number no one else has */
        unsigned char dk[32];
        bool bound, found;
        patient_ref again;
        assert_int_equal(store_data_key(w->u.s,
                                        "newcomer\0"
                                        "1990-01-01",
                                        19, dk, &e),
                         MS_OK);
        assert_int_equal(store_ident_get(sw,
                                         "newcomer\0"
                                         "1990-01-01",
                                         19, &again, &found, &e),
                         MS_OK);
        if (round == 0) {
            assert_false(found);
            assert_int_equal(store_patient_create(sw,
                                                  "newcomer\0"
                                                  "1990-01-01",
                                                  19, dk, &fresh, &bound, &e),
                             MS_OK);
            for (int i = 0; i < N; i++)
                assert_true(fresh.number != who[i].number);
            assert_int_equal(store_write_commit(sw, NULL, &e), MS_OK);
        } else {
            assert_true(found); /* and it came back from the last range */
            assert_int_equal(again.number, fresh.number);
            store_write_abort(sw);
        }
    }
    world_close(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_checkpoint_often),   cmocka_unit_test(test_model_no_checkpoint),
        cmocka_unit_test(test_reader_older_than_head),   cmocka_unit_test(test_walks_read_one_kind),
        cmocka_unit_test(test_open_counts_what_it_read), cmocka_unit_test(test_identities_rebuilt_in_parts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
