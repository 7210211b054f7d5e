/*
 * test_store.c - the embedded store (src/store.h) through its own API, on a real LMDB environment and
 * segment log in a temporary directory: write and read back every kind of entry, versions and as-of
 * reads, aborts and injected I/O faults that must leave the store as it was, reopening, segment
 * rollover, checksums, snapshots and the two indexes; accounts (both entry formats) and the revocation
 * of a user's tokens. The writer's use of the store is in test_writer.c.
 */
#include "unit.h"
#include "unit_store.h"

#include "store/segment_log.h"
#include "store/store.h"

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <openssl/sha.h>
#include <xxhash.h>

#define SEG_SIZE ((uint64_t)1 << 20)

typedef struct {
    char dir[64];
    store *s;
    store_options opt;
    arena mem;
    buf b;
} fixture;

static store *g_store; /* the fixture's store, for pid_of */

static int setup_opts(void **state, uint64_t cache)
{
    fixture *f = calloc(1, sizeof *f);
    unit_tmpdir(f->dir);
    f->opt = (store_options){.map_size = (size_t)1 << 30, .segment_size = SEG_SIZE, .body_cache = cache};
    ms_err e = {0};
    if (store_open(&f->s, f->dir, &f->opt, &e) != MS_OK) {
        fprintf(stderr, "store_open: %s\n", e.msg);
        unit_rmtree(f->dir);
        free(f);
        return -1;
    }
    *state = f;
    g_store = f->s;
    return 0;
}

static int setup(void **state) { return setup_opts(state, 0); }
static int setup_cached(void **state) { return setup_opts(state, (uint64_t)4 << 20); }

static int teardown(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    unit_rmtree(f->dir);
    arena_free(&f->mem);
    buf_free(&f->b);
    free(f);
    return 0;
}

static void reopen(fixture *f)
{
    store_close(f->s);
    f->s = NULL;
    ms_err e = {0};
    if (store_open(&f->s, f->dir, &f->opt, &e) != MS_OK) fail_msg("reopen: %s", e.msg);
    g_store = f->s;
}

/* Patient ids are the store's permutation of patient numbers: pid_of(n) is patient number n. */
static patient_id pid_of(int n)
{
    patient_id p;
    store_patient_id(g_store, (uint64_t)n, &p);
    return p;
}
static patient_ref ref_of(const patient_id *pid)
{
    patient_ref r = {*pid, 0};
    assert_true(store_patient_number(g_store, pid, &r.number));
    return r;
}

/* What one committed version wrote, for checking reads. */
typedef struct {
    int64_t vf;        /* valid_from (the commit's write time) */
    uint64_t body_pos; /* where the body went */
    uint64_t commit_pos;
} written;

/* Commit one record version of rid for patient pid: the body text, the record, a patient version whose
 * one state field "note" refers to the body's "note" value, a public patient copy, and the identity
 * (version 1). The body's "note" value must be a string. */
static written write_version(fixture *f, const char *rid, const patient_id *pid, uint32_t version, const char *text,
                             int64_t ts, const char *type, const char *ident)
{
    written out = {0};
    ms_err e = {0};
    store_write *w;
    if (store_write_begin(f->s, &w, &e) != MS_OK) fail_msg("begin: %s", e.msg);
    out.vf = store_write_time(w);
    size_t n = strlen(text), wl;
    char *body = unit_aligned_body(text, n, &wl);
    ms_code rc = store_append_body(f->s, body, wl, &out.body_pos, &e);
    free(body);
    if (rc != MS_OK) {
        store_write_abort(w);
        fail_msg("append: %s", e.msg);
    }
    record_version rv = {0};
    rv.record_id_len = (uint32_t)strlen(rid);
    memcpy(rv.record_id, rid, rv.record_id_len);
    rv.version = version;
    rv.valid_from = out.vf;
    rv.valid_to = -1;
    patient_ref ref = ref_of(pid);
    rv.pid = *pid;
    rv.patient_number = ref.number;
    rv.ts_us = ts;
    rv.type_len = (uint32_t)strlen(type);
    memcpy(rv.type, type, rv.type_len);
    rv.body_pos = out.body_pos;
    rv.body_len = (uint32_t)n;
    rv.body_hash = XXH3_64bits(text, n);
    XXH128_canonicalFromHash((XXH128_canonical_t *)rv.content_hash, XXH3_128bits(text, n));
    char pub[128];
    snprintf(pub, sizeof pub, "{\"type\":\"%s\"}", type);
    rc = store_record_put(w, &rv, time_year(ts), pub, strlen(pub), &e);
    const char *note = strstr(text, "\"note\":");
    state_field sf = {.key = "note", .key_len = 4};
    if (note) {
        const char *v = note + 7, *end = strchr(v + 1, '"') + 1;
        sf.pos = out.body_pos + (uint64_t)(v - text);
        sf.len = (uint32_t)(end - v);
        sf.hash = XXH3_64bits(v, sf.len);
    }
    patient_version pv = {.pid = *pid,
                          .number = ref.number,
                          .version = version,
                          .valid_from = out.vf,
                          .valid_to = -1,
                          .cause_record = rid,
                          .cause_record_len = (uint32_t)strlen(rid),
                          .source = "unit test",
                          .source_len = 9,
                          .fields = &sf,
                          .nfields = note ? 1 : 0};
    if (rc == MS_OK) rc = store_patient_put(w, &pv, &e);
    char ppub[64];
    snprintf(ppub, sizeof ppub, "{\"v\":%u}", version);
    if (rc == MS_OK) rc = store_public_patient_put(w, 1, &ref, version, ppub, strlen(ppub), &e);
    if (rc == MS_OK && ident) rc = store_ident_put(w, ident, strlen(ident) + 11, &ref, &e);
    if (rc != MS_OK) {
        store_write_abort(w);
        fail_msg("put: %s", e.msg);
    }
    if (store_write_commit(w, &out.commit_pos, &e) != MS_OK) fail_msg("commit: %s", e.msg);
    return out;
}

/* An identity key "name\0YYYY-MM-DD" in static storage: pass the name, get a pointer usable with
 * strlen(name) + 11 bytes. */
static const char *ident_key(const char *name, const char *dob)
{
    static char keys[8][64];
    static int next;
    char *k = keys[next++ % 8];
    size_t n = strlen(name);
    memcpy(k, name, n);
    k[n] = 0;
    memcpy(k + n + 1, dob, 10);
    return k;
}

static bool public_patient_at(fixture *f, const patient_id *pid, int64_t as_of, buf *out)
{
    store_read *r = unit_rbegin(f->s);
    bool found = false;
    ms_err e;
    out->len = 0;
    ms_code rc = store_public_patient_at(r, pid, as_of, out, &found, &e);
    store_read_end(r);
    if (rc != MS_OK) fail_msg("store_public_patient_at: %s", e.msg);
    return found;
}

static bool public_record_at(fixture *f, const char *rid, int64_t as_of, char *fields_out, size_t cap, int *year)
{
    store_read *r = unit_rbegin(f->s);
    bool found = false;
    ms_err e;
    public_record pr;
    ms_code rc = store_public_record_at(r, rid, strlen(rid), as_of, &pr, &found, &e);
    if (found) {
        snprintf(fields_out, cap, "%.*s", (int)pr.fields_len, pr.fields);
        *year = pr.year;
    }
    store_read_end(r);
    if (rc != MS_OK) fail_msg("store_public_record_at: %s", e.msg);
    return found;
}

static void expect_body(fixture *f, const record_version *rv, const char *text)
{
    ms_err e = {0};
    f->b.len = 0;
    if (store_record_body(f->s, rv, &f->b, &e) != MS_OK) fail_msg("store_record_body: %s", e.msg);
    assert_span_equal(f->b.data, f->b.len, text);
}

/* ---- tests ---- */

static void test_open_empty_and_id_key(void **state)
{
    fixture *f = *state;
    unsigned char key[32];
    memcpy(key, store_id_key(f->s), 32);
    unsigned char zero[32] = {0};
    assert_memory_not_equal(key, zero, 32);
    store_read *r = unit_rbegin(f->s);
    assert_int_equal(store_commit_pos(r), 0);
    assert_int_equal(store_patient_count(r), 0);
    assert_true(store_last_commit(r) == 0);
    patient_id pid;
    bool found = true;
    ms_err e;
    assert_int_equal(store_ident_lookup(r,
                                        "x\0"
                                        "2000-01-01",
                                        12, &pid, &found, &e),
                     MS_OK);
    assert_false(found);
    store_read_end(r);
    record_version rv;
    assert_false(unit_record_at(f->s, "nothing", INT64_MAX, &rv));
    assert_false(unit_record_at(f->s, "", INT64_MAX, &rv));
    /* the secret persists across reopen, and another store has another one */
    reopen(f);
    assert_memory_equal(store_id_key(f->s), key, 32);
    char dir2[64];
    unit_tmpdir(dir2);
    store *s2 = NULL;
    ms_code rc = store_open(&s2, dir2, &f->opt, &e);
    bool differ = rc == MS_OK && memcmp(store_id_key(s2), key, 32) != 0;
    store_close(s2);
    unit_rmtree(dir2);
    assert_int_equal(rc, MS_OK);
    assert_true(differ);
}

/* Meta value name of dir's LMDB file read (or, del, deleted) behind the store's back; the store must be closed.
 * be64 value, or -1 when absent. */
static int64_t raw_meta(const char *dir, const char *name, bool del)
{
    MDB_dbi dbi;
    MDB_txn *txn = unit_raw_begin(dir, "meta", &dbi);
    MDB_val k = {strlen(name), (void *)name}, v;
    int64_t out = -1;
    if (mdb_get(txn, dbi, &k, &v) == 0) {
        assert_int_equal(v.mv_size, 8);
        out = (int64_t)ms_get_be64(v.mv_data);
        if (del) assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
    }
    unit_raw_commit(txn);
    return out;
}

/* The store format (meta "store_format"): recorded by a new store, added by the first open for writing of a store
 * from before it was kept (never by a read-only one), and a newer one refused, naming both formats and the
 * directory, with nothing written. */
static void test_store_format(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    f->s = NULL;
    assert_int_equal(raw_meta(f->dir, "store_format", true), STORE_FORMAT); /* made by the new store; deleted */
    ms_err e = {0};
    store_options ro = f->opt;
    ro.read_only = true;
    store *s = NULL;
    assert_int_equal(store_open(&s, f->dir, &ro, &e), MS_OK); /* a store from before the format: opens */
    store_close(s);
    assert_int_equal(raw_meta(f->dir, "store_format", false), -1); /* a read-only open writes nothing */
    reopen(f);
    store_close(f->s);
    f->s = NULL;
    assert_int_equal(raw_meta(f->dir, "store_format", false), STORE_FORMAT); /* the first open for writing */
    unsigned char newer[8];
    ms_set_be64(newer, STORE_FORMAT + 1);
    unit_write_raw_entry(f->dir, "meta", "store_format", 12, newer, 8);
    for (int i = 0; i < 2; i++) {
        e = (ms_err){0};
        assert_int_equal(store_open(&s, f->dir, i ? &ro : &f->opt, &e), MS_ECONFLICT);
        char want[160];
        snprintf(want, sizeof want,
                 "%s was written by a newer medstream (store format %d; this medstream reads "
                 "formats up to %d)",
                 f->dir, STORE_FORMAT + 1, STORE_FORMAT);
        assert_true(unit_has_str(e.msg, want));
        assert_int_equal(raw_meta(f->dir, "store_format", false), STORE_FORMAT + 1);
    }
    ms_set_be64(newer, STORE_FORMAT);
    unit_write_raw_entry(f->dir, "meta", "store_format", 12, newer, 8);
    reopen(f);
}

static void test_write_and_read_back(void **state)
{
    fixture *f = *state;
    patient_id pid = pid_of(1);
    const char *text = "{\"name\":\"Ana\",\"dob\":\"1990-01-01\",\"note\":\"hello world\"}";
    int64_t ts = unit_time(2024, 3, 1, 10, 0, 0);
    written w = write_version(f, "rec-1", &pid, 1, text, ts, "lab", ident_key("ana", "1990-01-01"));
    assert_int_equal(w.commit_pos, 1);
    assert_int_equal(w.body_pos % 4096, 0);

    record_version rv;
    assert_true(unit_record_at(f->s, "rec-1", INT64_MAX, &rv));
    assert_string_equal(rv.record_id, "rec-1");
    assert_int_equal(rv.record_id_len, 5);
    assert_int_equal(rv.version, 1);
    assert_true(rv.valid_from == w.vf);
    assert_true(rv.valid_to < 0);
    assert_memory_equal(rv.pid.b, pid.b, 16);
    assert_true(rv.ts_us == ts);
    assert_string_equal(rv.type, "lab");
    assert_int_equal(rv.body_len, strlen(text));
    expect_body(f, &rv, text);
    assert_false(unit_record_at(f->s, "rec-", INT64_MAX, &rv)); /* no prefix matches */
    assert_false(unit_record_at(f->s, "rec-10", INT64_MAX, &rv));

    patient_version pv;
    assert_true(unit_patient_at(f->s, &f->mem, &pid, INT64_MAX, &pv));
    assert_int_equal(pv.version, 1);
    assert_true(pv.valid_from == w.vf);
    assert_true(pv.valid_to < 0);
    assert_span_equal(pv.cause_record, pv.cause_record_len, "rec-1");
    assert_span_equal(pv.source, pv.source_len, "unit test");
    assert_int_equal(pv.nfields, 1);
    assert_span_equal(pv.fields[0].key, pv.fields[0].key_len, "note");
    ms_err e;
    f->b.len = 0;
    assert_int_equal(store_field_value(f->s, &pv.fields[0], &f->b, &e), MS_OK);
    assert_span_equal(f->b.data, f->b.len, "\"hello world\"");

    buf pub = {0};
    bool found = public_patient_at(f, &pid, INT64_MAX, &pub);
    bool pub_ok = found && pub.len == 7 && memcmp(pub.data, "{\"v\":1}", 7) == 0;
    buf_free(&pub);
    assert_true(pub_ok);
    char fields[128];
    int year = 0;
    assert_true(public_record_at(f, "rec-1", INT64_MAX, fields, sizeof fields, &year));
    assert_string_equal(fields, "{\"type\":\"lab\"}");
    assert_int_equal(year, 2024);

    store_read *r = unit_rbegin(f->s);
    patient_id got;
    found = false;
    ms_code rc = store_ident_lookup(r, ident_key("ana", "1990-01-01"), 14, &got, &found, &e);
    uint64_t cp = store_commit_pos(r), patients = store_patient_count(r);
    int64_t last = store_last_commit(r);
    store_read_end(r);
    assert_int_equal(rc, MS_OK);
    assert_true(found);
    assert_memory_equal(got.b, pid.b, 16);
    assert_int_equal(cp, 1);
    assert_int_equal(patients, 1);
    assert_true(last == w.vf);
}

static void test_write_times_increase(void **state)
{
    fixture *f = *state;
    int64_t prev = 0;
    for (int i = 0; i < 5; i++) {
        ms_err e;
        store_write *w;
        assert_int_equal(store_write_begin(f->s, &w, &e), MS_OK);
        int64_t t = store_write_time(w);
        uint64_t cp;
        assert_int_equal(store_write_commit(w, &cp, &e), MS_OK);
        assert_true(t > prev);
        assert_int_equal(cp, (uint64_t)i + 1);
        prev = t;
    }
}

static void test_as_of_versions(void **state)
{
    fixture *f = *state;
    patient_id pid = pid_of(2);
    const char *t1 = "{\"note\":\"first\"}", *t2 = "{\"note\":\"second\"}";
    int64_t ts = unit_time(2025, 1, 1, 0, 0, 0);
    written w1 = write_version(f, "r", &pid, 1, t1, ts, "lab", ident_key("bo", "1980-02-02"));
    written w2 = write_version(f, "r", &pid, 2, t2, ts, "lab", NULL);
    assert_true(w2.vf > w1.vf);

    record_version rv;
    assert_false(unit_record_at(f->s, "r", w1.vf - 1, &rv)); /* before creation */
    assert_false(unit_record_at(f->s, "r", 0, &rv));
    assert_true(unit_record_at(f->s, "r", w1.vf, &rv));
    assert_int_equal(rv.version, 1);
    assert_true(rv.valid_to == w2.vf);
    expect_body(f, &rv, t1);
    assert_true(unit_record_at(f->s, "r", w2.vf - 1, &rv)); /* between the commits: the older version */
    assert_int_equal(rv.version, 1);
    assert_true(unit_record_at(f->s, "r", w2.vf, &rv));
    assert_int_equal(rv.version, 2);
    assert_true(rv.valid_to < 0);
    expect_body(f, &rv, t2);
    assert_true(unit_record_at(f->s, "r", INT64_MAX, &rv));
    assert_int_equal(rv.version, 2);

    patient_version pv;
    assert_false(unit_patient_at(f->s, &f->mem, &pid, w1.vf - 1, &pv));
    assert_true(unit_patient_at(f->s, &f->mem, &pid, w2.vf - 1, &pv));
    assert_int_equal(pv.version, 1);
    assert_true(pv.valid_to == w2.vf);
    ms_err e;
    f->b.len = 0;
    assert_int_equal(store_field_value(f->s, &pv.fields[0], &f->b, &e), MS_OK);
    assert_span_equal(f->b.data, f->b.len, "\"first\"");
    assert_true(unit_patient_at(f->s, &f->mem, &pid, w2.vf, &pv));
    assert_int_equal(pv.version, 2);
    f->b.len = 0;
    assert_int_equal(store_field_value(f->s, &pv.fields[0], &f->b, &e), MS_OK);
    assert_span_equal(f->b.data, f->b.len, "\"second\"");

    buf pub = {0};
    bool before = public_patient_at(f, &pid, w1.vf - 1, &pub);
    bool mid = public_patient_at(f, &pid, w2.vf - 1, &pub);
    bool mid_ok = pub.len == 7 && memcmp(pub.data, "{\"v\":1}", 7) == 0;
    bool now = public_patient_at(f, &pid, INT64_MAX, &pub);
    bool now_ok = pub.len == 7 && memcmp(pub.data, "{\"v\":2}", 7) == 0;
    buf_free(&pub);
    assert_false(before);
    assert_true(mid && mid_ok);
    assert_true(now && now_ok);
    char fields[64];
    int year;
    assert_false(public_record_at(f, "r", w1.vf - 1, fields, sizeof fields, &year));
    assert_true(public_record_at(f, "r", w1.vf, fields, sizeof fields, &year));

    /* history: oldest first, valid_to chained */
    store_read *r = unit_rbegin(f->s);
    patient_version *hist = NULL;
    uint32_t n = 0;
    ms_code rc = store_patient_history(r, &pid, &hist, &n, &f->mem, &e);
    store_read_end(r);
    assert_int_equal(rc, MS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(hist[0].version, 1);
    assert_int_equal(hist[1].version, 2);
    assert_true(hist[0].valid_from == w1.vf);
    assert_true(hist[0].valid_to == w2.vf);
    assert_true(hist[1].valid_to < 0);
    /* an unknown patient has no history */
    patient_id other = pid_of(99);
    r = unit_rbegin(f->s);
    rc = store_patient_history(r, &other, &hist, &n, &f->mem, &e);
    store_read_end(r);
    assert_int_equal(rc, MS_OK);
    assert_int_equal(n, 0);
}

/* store.h: a read "as of T" answers the newest version whose valid_from <= T. For T before the Unix
 * epoch (a negative time, e.g. as_of=1960-01-01T00:00:00Z, which the API accepts) that is nothing. */
static void test_as_of_before_epoch_finds_nothing(void **state)
{
    fixture *f = *state;
    patient_id pid = pid_of(3);
    write_version(f, "old", &pid, 1, "{\"note\":\"x\"}", unit_time(2020, 1, 1, 0, 0, 0), "lab",
                  ident_key("cy", "1970-01-01"));
    int64_t times[] = {-1, unit_time(1960, 1, 1, 0, 0, 0), INT64_MIN};
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        record_version rv;
        patient_version pv;
        buf pub = {0};
        char fields[64];
        int year;
        bool rec = unit_record_at(f->s, "old", times[i], &rv);
        bool pat = unit_patient_at(f->s, &f->mem, &pid, times[i], &pv);
        bool pp = public_patient_at(f, &pid, times[i], &pub);
        bool pr = public_record_at(f, "old", times[i], fields, sizeof fields, &year);
        buf_free(&pub);
        if (rec || pat || pp || pr)
            fail_msg(
                "as_of %lld (before the epoch) found a version created later: record %d patient %d public patient %d "
                "public record %d",
                (long long)times[i], rec, pat, pp, pr);
    }
}

static void test_abort_leaves_nothing(void **state)
{
    fixture *f = *state;
    ms_err e;
    store_write *w;
    assert_int_equal(store_write_begin(f->s, &w, &e), MS_OK);
    patient_id pid = pid_of(4);
    patient_ref ref = ref_of(&pid);
    const char *key = ident_key("dee", "1999-09-09");
    assert_int_equal(store_ident_put(w, key, 14, &ref, &e), MS_OK);
    record_version rv = {.record_id = "gone",
                         .record_id_len = 4,
                         .version = 1,
                         .valid_from = store_write_time(w),
                         .valid_to = -1,
                         .pid = pid,
                         .patient_number = ref.number,
                         .type = "x",
                         .type_len = 1};
    assert_int_equal(store_record_put(w, &rv, 2020, "{}", 2, &e), MS_OK);
    /* visible inside the transaction */
    bool found = false;
    record_version got;
    assert_int_equal(store_record_latest(w, "gone", 4, &got, &found, &e), MS_OK);
    assert_true(found);
    store_write_abort(w);
    assert_false(unit_record_at(f->s, "gone", INT64_MAX, &got));
    store_read *r = unit_rbegin(f->s);
    patient_id p;
    found = true;
    store_ident_lookup(r, key, 14, &p, &found, &e);
    uint64_t cp = store_commit_pos(r), pc = store_patient_count(r);
    store_read_end(r);
    assert_false(found);
    assert_int_equal(cp, 0);
    assert_int_equal(pc, 0);
    /* and the store goes on */
    written ok = write_version(f, "next", &pid, 1, "{\"note\":\"n\"}", 0, "lab", key);
    assert_int_equal(ok.commit_pos, 1);
}

/* An injected ENOSPC makes the commit fail with MS_EFULL and leaves the store as it was; EIO gives
 * MS_EIO; after the fault is cleared the next commit works and earlier data is intact. */
static void test_fault_injection(void **state)
{
    fixture *f = *state;
    patient_id pid = pid_of(5);
    const char *t1 = "{\"note\":\"before the fault\"}";
    written w1 = write_version(f, "keep", &pid, 1, t1, 0, "lab", ident_key("eve", "1991-01-01"));

    int faults[] = {ENOSPC, EIO};
    ms_code want[] = {MS_EFULL, MS_EIO};
    for (int i = 0; i < 2; i++) {
        ms_err e = {0};
        /* a body appended before the fault: the commit's sync fails */
        size_t wl;
        char *body = unit_aligned_body("{\"note\":\"lost\"}", 15, &wl);
        uint64_t pos;
        ms_code arc = store_append_body(f->s, body, wl, &pos, &e);
        store_inject_fault(f->s, faults[i]);
        /* and a body appended under the fault fails at once */
        uint64_t pos2;
        ms_err e2 = {0};
        ms_code arc2 = store_append_body(f->s, body, wl, &pos2, &e2);
        free(body);
        assert_int_equal(arc, MS_OK);
        assert_int_equal(arc2, want[i]);
        store_write *w;
        assert_int_equal(store_write_begin(f->s, &w, &e), MS_OK);
        patient_id p2 = pid_of(6);
        patient_ref r2 = ref_of(&p2);
        assert_int_equal(store_ident_put(w, ident_key("fay", "1992-02-02"), 14, &r2, &e), MS_OK);
        record_version rv = {.record_id = "lost",
                             .record_id_len = 4,
                             .version = 1,
                             .valid_from = store_write_time(w),
                             .valid_to = -1,
                             .pid = p2,
                             .patient_number = r2.number,
                             .type = "x",
                             .type_len = 1,
                             .body_pos = pos,
                             .body_len = 15};
        assert_int_equal(store_record_put(w, &rv, 2020, "{}", 2, &e), MS_OK);
        uint64_t cp = 0;
        ms_code rc = store_write_commit(w, &cp, &e);
        assert_int_equal(rc, want[i]);
        assert_int_equal(e.code, want[i]);
        /* nothing of it is readable */
        record_version got;
        assert_false(unit_record_at(f->s, "lost", INT64_MAX, &got));
        store_read *r = unit_rbegin(f->s);
        bool found = true;
        patient_id p;
        store_ident_lookup(r, ident_key("fay", "1992-02-02"), 14, &p, &found, &e);
        uint64_t pos_now = store_commit_pos(r), pc = store_patient_count(r);
        int64_t last = store_last_commit(r);
        store_read_end(r);
        assert_false(found);
        assert_int_equal(pos_now, 1);
        assert_int_equal(pc, 1);
        assert_true(last == w1.vf);
        store_inject_fault(f->s, 0);
    }
    /* cleared: the store is clean and takes the next batch */
    const char *t2 = "{\"note\":\"after the fault\"}";
    written w2 = write_version(f, "after", &pid, 2, t2, 0, "lab", NULL);
    assert_int_equal(w2.commit_pos, 2);
    record_version rv;
    assert_true(unit_record_at(f->s, "keep", INT64_MAX, &rv));
    expect_body(f, &rv, t1);
    assert_true(unit_record_at(f->s, "after", INT64_MAX, &rv));
    expect_body(f, &rv, t2);
    reopen(f);
    assert_true(unit_record_at(f->s, "keep", INT64_MAX, &rv));
    expect_body(f, &rv, t1);
    assert_true(unit_record_at(f->s, "after", INT64_MAX, &rv));
    expect_body(f, &rv, t2);
    assert_false(unit_record_at(f->s, "lost", INT64_MAX, &rv));
}

static void test_reopen_persists(void **state)
{
    fixture *f = *state;
    patient_id p1 = pid_of(7), p2 = pid_of(8);
    const char *texts[] = {"{\"note\":\"one\"}", "{\"note\":\"two\"}", "{\"note\":\"three\"}"};
    written w1 = write_version(f, "a", &p1, 1, texts[0], 0, "lab", ident_key("gus", "1950-05-05"));
    write_version(f, "b", &p2, 1, texts[1], 0, "visit", ident_key("hal", "1960-06-06"));
    written w3 = write_version(f, "a", &p1, 2, texts[2], 0, "lab", NULL);
    unsigned char key[32];
    memcpy(key, store_id_key(f->s), 32);
    reopen(f);
    assert_memory_equal(store_id_key(f->s), key, 32);
    store_read *r = unit_rbegin(f->s);
    uint64_t cp = store_commit_pos(r), pc = store_patient_count(r);
    int64_t last = store_last_commit(r);
    store_read_end(r);
    assert_int_equal(cp, 3);
    assert_int_equal(pc, 2);
    assert_true(last == w3.vf);
    record_version rv;
    assert_true(unit_record_at(f->s, "a", INT64_MAX, &rv));
    assert_int_equal(rv.version, 2);
    expect_body(f, &rv, texts[2]);
    assert_true(unit_record_at(f->s, "a", w1.vf, &rv));
    expect_body(f, &rv, texts[0]);
    assert_true(unit_record_at(f->s, "b", INT64_MAX, &rv));
    expect_body(f, &rv, texts[1]);
    /* new commits after the reopen: later times, and new bodies do not overwrite the old ones */
    patient_id p3 = pid_of(9);
    written w4 = write_version(f, "c", &p3, 1, "{\"note\":\"four\"}", 0, "lab", ident_key("ian", "1970-07-07"));
    assert_true(w4.vf > w3.vf);
    assert_int_equal(w4.commit_pos, 4);
    for (const char *rid = "a"; rid; rid = rid[0] == 'a' ? "b" : NULL) {
        assert_true(unit_record_at(f->s, rid, INT64_MAX, &rv));
        expect_body(f, &rv, rid[0] == 'a' ? texts[2] : texts[1]);
    }
    assert_true(unit_record_at(f->s, "c", INT64_MAX, &rv));
    expect_body(f, &rv, "{\"note\":\"four\"}");
}

/* Bodies larger than a third of a segment: appends start the next segment when they do not fit, never
 * straddle two, and read back after a reopen. A body larger than a segment is refused. */
static void test_segment_rollover(void **state)
{
    fixture *f = *state;
    enum { N = 8 };
    size_t len = 300 * 1024;
    char *text = malloc(len + 1);
    patient_id pid = pid_of(10);
    uint64_t positions[N];
    for (int i = 0; i < N; i++) {
        memset(text, 'a' + i, len);
        memcpy(text, "{\"note\":\"", 9);
        memcpy(text + len - 2, "\"}", 2);
        text[len] = 0;
        char rid[16];
        snprintf(rid, sizeof rid, "big-%d", i);
        written w = write_version(f, rid, &pid, 1, text, 0, "lab", NULL);
        positions[i] = w.body_pos;
        uint64_t off = w.body_pos % SEG_SIZE;
        assert_true(off + len <= SEG_SIZE);
        if (i) assert_true(positions[i] > positions[i - 1]);
    }
    assert_true(positions[N - 1] / SEG_SIZE >= 2); /* several segments were used */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < N; i++) {
            char rid[16];
            snprintf(rid, sizeof rid, "big-%d", i);
            record_version rv;
            assert_true(unit_record_at(f->s, rid, INT64_MAX, &rv));
            assert_true(rv.body_pos == positions[i]);
            ms_err e = {0};
            f->b.len = 0;
            assert_int_equal(store_record_body(f->s, &rv, &f->b, &e), MS_OK);
            assert_int_equal(f->b.len, len);
            assert_int_equal(f->b.data[100], 'a' + i);
            assert_int_equal(f->b.data[len - 3], 'a' + i);
        }
        reopen(f);
    }
    free(text);
    /* larger than a segment */
    size_t huge = SEG_SIZE + 4096;
    void *p;
    assert_int_equal(posix_memalign(&p, 4096, huge), 0);
    memset(p, 'x', huge);
    uint64_t pos;
    ms_err e = {0};
    ms_code rc = store_append_body(f->s, p, huge, &pos, &e);
    free(p);
    assert_int_equal(rc, MS_EINVAL);
}

static void test_checksums(void **state)
{
    fixture *f = *state;
    patient_id pid = pid_of(11);
    const char *text = "{\"note\":\"checked\"}";
    write_version(f, "sum", &pid, 1, text, 0, "lab", NULL);
    record_version rv;
    assert_true(unit_record_at(f->s, "sum", INT64_MAX, &rv));
    expect_body(f, &rv, text);
    ms_err e = {0};
    rv.body_hash ^= 1;
    f->b.len = 0;
    assert_int_equal(store_record_body(f->s, &rv, &f->b, &e), MS_ECORRUPT);
    patient_version pv;
    assert_true(unit_patient_at(f->s, &f->mem, &pid, INT64_MAX, &pv));
    state_field bad = pv.fields[0];
    bad.hash ^= 1;
    f->b.len = 0;
    assert_int_equal(store_field_value(f->s, &bad, &f->b, &e), MS_ECORRUPT);
    bad = pv.fields[0];
    bad.pos += 1; /* the wrong bytes */
    f->b.len = 0;
    assert_int_equal(store_field_value(f->s, &bad, &f->b, &e), MS_ECORRUPT);
}

/* Item 2 of issue 17: a patient version holds its short values inline, so reading them touches no record
 * body (here: their references moved past the log's end still read), and they are still checked against their
 * hashes; a long value is read from its body. */
static void test_short_values_read_without_the_body(void **state)
{
    fixture *f = *state;
    patient_id pid = pid_of(12);
    patient_ref ref = ref_of(&pid);
    char text[256];
    snprintf(text, sizeof text, "{\"dob\":\"1970-01-02\",\"note\":\"%0100d\"}", 7);
    ms_err e = {0};
    store_write *w;
    if (store_write_begin(f->s, &w, &e) != MS_OK) fail_msg("begin: %s", e.msg);
    size_t n = strlen(text), wl;
    char *body = unit_aligned_body(text, n, &wl);
    uint64_t at;
    if (store_append_body(f->s, body, wl, &at, &e) != MS_OK) fail_msg("append: %s", e.msg);
    const char *dob = strstr(text, "\"1970"), *note = strstr(text, "\"000");
    state_field sf[2] = {{.key = "dob",
                          .key_len = 3,
                          .pos = at + (uint64_t)(dob - text),
                          .len = 12,
                          .hash = XXH3_64bits(dob, 12),
                          .value = dob},
                         {.key = "note",
                          .key_len = 4,
                          .pos = at + (uint64_t)(note - text),
                          .len = 102,
                          .hash = XXH3_64bits(note, 102),
                          .value = note}};
    patient_version pv = {.pid = pid,
                          .number = ref.number,
                          .version = 1,
                          .valid_from = store_write_time(w),
                          .valid_to = -1,
                          .cause_record = "r",
                          .cause_record_len = 1,
                          .source = "unit test",
                          .source_len = 9,
                          .fields = sf,
                          .nfields = 2};
    if (store_patient_put(w, &pv, &e) != MS_OK) fail_msg("put: %s", e.msg);
    free(body);
    char note_was[102];
    memcpy(note_was, note, sizeof note_was);
    memset(text, 'x', n); /* the version keeps its own copy of a value, not the caller's bytes */
    uint64_t cp;
    if (store_write_commit(w, &cp, &e) != MS_OK) fail_msg("commit: %s", e.msg);
    for (int round = 0; round < 2; round++) { /* as written, and from the disk after a reopen */
        patient_version got;
        assert_true(unit_patient_at(f->s, &f->mem, &pid, INT64_MAX, &got));
        assert_int_equal(got.nfields, 2);
        assert_non_null(got.fields[0].value); /* dob: 12 bytes, inline */
        assert_null(got.fields[1].value);     /* note: 102 bytes, in its body only */
        const char *vals[2];
        buf scratch = {0};
        assert_int_equal(store_field_values(f->s, got.fields, 2, vals, &scratch, &e), MS_OK);
        assert_memory_equal(vals[0], "\"1970-01-02\"", 12);
        assert_memory_equal(vals[1], note_was, 102);
        state_field moved[2] = {got.fields[0], got.fields[1]};
        moved[0].pos = (uint64_t)1 << 50; /* nowhere in the log: not read */
        assert_int_equal(store_field_values(f->s, moved, 1, vals, &scratch, &e), MS_OK);
        assert_memory_equal(vals[0], "\"1970-01-02\"", 12);
        moved[1].pos = (uint64_t)1 << 50; /* a value in its body only is read from there */
        assert_int_not_equal(store_field_values(f->s, moved + 1, 1, vals, &scratch, &e), MS_OK);
        moved[0].hash ^= 1; /* an inline value is checked against its hash too */
        assert_int_equal(store_field_values(f->s, moved, 1, vals, &scratch, &e), MS_ECORRUPT);
        buf_free(&scratch);
        reopen(f);
    }
}

/* A read that sees a commit sees all of it: a reader that finds a record the writer has just committed, in the
 * same read transaction, finds the record's patient. The patient log's in-memory heads are applied just after
 * LMDB's commit makes the entries visible; a read in between must wait for them, not answer from the heads
 * before (a new patient "not found", an old one's previous version). A reader thread polls for each next
 * record as the writer commits them, one new patient each. */
typedef struct {
    fixture *f;
    int n;
    int missed; /* records found whose patient was not */
    char error[300];
} race_reader;

static void *race_read(void *arg)
{
    race_reader *rr = arg;
    for (int k = 0; k < rr->n && !rr->error[0];) {
        char rid[32];
        snprintf(rid, sizeof rid, "race-%d", k);
        store_read *r;
        ms_err e = {0};
        if (store_read_begin(rr->f->s, &r, &e) != MS_OK) {
            snprintf(rr->error, sizeof rr->error, "read begin: %s", e.msg);
            break;
        }
        record_version rv;
        bool found = false;
        if (store_record_at(r, rid, strlen(rid), INT64_MAX, &rv, &found, &e) != MS_OK)
            snprintf(rr->error, sizeof rr->error, "record: %s", e.msg);
        if (found) { /* committed: its patient must be there in the same snapshot */
            arena mem = {0};
            patient_version pv;
            bool have = false;
            if (store_patient_at(r, &rv.pid, INT64_MAX, &pv, &mem, &have, &e) != MS_OK)
                snprintf(rr->error, sizeof rr->error, "patient: %s", e.msg);
            if (!have) rr->missed++;
            arena_free(&mem);
            k++;
        }
        store_read_end(r);
    }
    return NULL;
}

static void test_a_read_sees_a_commit_whole(void **state)
{
    fixture *f = *state;
    race_reader rr = {.f = f, .n = 1500};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, race_read, &rr), 0);
    for (int k = 0; k < rr.n; k++) {
        char rid[32];
        snprintf(rid, sizeof rid, "race-%d", k);
        patient_id pid = pid_of(100 + k);
        write_version(f, rid, &pid, 1, "{\"note\":\"x\"}", 0, "lab", NULL);
    }
    pthread_join(t, NULL);
    if (rr.error[0]) fail_msg("%s", rr.error);
    assert_int_equal(rr.missed, 0);
}

static void test_snapshots(void **state)
{
    fixture *f = *state;
    patient_id pid = pid_of(12);
    written w1 = write_version(f, "s", &pid, 1, "{\"note\":\"v1\"}", 0, "lab", NULL);
    ms_err e = {0};
    int64_t as_of = 0;
    assert_int_equal(store_snapshot_create(f->s, "snap-1", &as_of, &e), MS_OK);
    assert_true(as_of > w1.vf);
    written w2 = write_version(f, "s", &pid, 2, "{\"note\":\"v2\"}", 0, "lab", NULL);
    assert_true(w2.vf > as_of); /* strictly between the two commits */
    int64_t again;
    assert_int_not_equal(store_snapshot_create(f->s, "snap-1", &again, &e), MS_OK); /* ids are unique */
    reopen(f);
    store_read *r = unit_rbegin(f->s);
    bool found = false;
    int64_t got = 0;
    ms_code rc = store_snapshot_get(r, "snap-1", &got, &found, &e);
    bool found2 = true;
    int64_t unused;
    store_snapshot_get(r, "snap-2", &unused, &found2, &e);
    store_read_end(r);
    assert_int_equal(rc, MS_OK);
    assert_true(found);
    assert_true(got == as_of);
    assert_false(found2);
    record_version rv;
    assert_true(unit_record_at(f->s, "s", got, &rv));
    assert_int_equal(rv.version, 1);
}

typedef struct {
    int n, stop_after;
    int64_t ts[16];
    char rid[16][32];
    unsigned char key[16][128];
    size_t key_len[16];
} collected;

static bool collect_record(void *ctx, int64_t ts, const char *rid, size_t rid_len, const void *key, size_t key_len)
{
    collected *c = ctx;
    if (c->n >= 16) return false;
    c->ts[c->n] = ts;
    snprintf(c->rid[c->n], 32, "%.*s", (int)rid_len, rid);
    memcpy(c->key[c->n], key, key_len < 128 ? key_len : 128);
    c->key_len[c->n] = key_len;
    c->n++;
    return c->stop_after == 0 || c->n < c->stop_after;
}

static void patient_records(fixture *f, const patient_id *pid, int64_t since, int64_t until, const void *after,
                            size_t after_len, collected *c)
{
    store_read *r = unit_rbegin(f->s);
    ms_err e;
    ms_code rc = store_patient_records(r, pid, since, until, after, after_len, collect_record, c, &e);
    store_read_end(r);
    if (rc != MS_OK) fail_msg("store_patient_records: %s", e.msg);
}

static void test_patient_records_index(void **state)
{
    fixture *f = *state;
    patient_id pid = pid_of(13), other = pid_of(14);
    int64_t t1960 = unit_time(1960, 1, 1, 0, 0, 0), t2020 = unit_time(2020, 1, 1, 0, 0, 0),
            t2021 = unit_time(2021, 1, 1, 0, 0, 0), t2022 = unit_time(2022, 1, 1, 0, 0, 0);
    write_version(f, "r2021", &pid, 1, "{\"note\":\"a\"}", t2021, "lab", NULL);
    write_version(f, "r1960", &pid, 1, "{\"note\":\"b\"}", t1960, "lab", NULL);
    write_version(f, "r2020", &pid, 1, "{\"note\":\"c\"}", t2020, "visit", NULL);
    write_version(f, "r2022", &pid, 1, "{\"note\":\"d\"}", t2022, "lab", NULL);
    write_version(f, "x2020", &other, 1, "{\"note\":\"e\"}", t2020, "lab", NULL);
    collected c = {0};
    patient_records(f, &pid, INT64_MIN, INT64_MAX, NULL, 0, &c);
    assert_int_equal(c.n, 4); /* ordered by event time, negative times first; the other patient not */
    assert_string_equal(c.rid[0], "r1960");
    assert_string_equal(c.rid[1], "r2020");
    assert_string_equal(c.rid[2], "r2021");
    assert_string_equal(c.rid[3], "r2022");
    assert_true(c.ts[0] == t1960);
    /* since inclusive, until exclusive */
    memset(&c, 0, sizeof c);
    patient_records(f, &pid, t2020, t2022, NULL, 0, &c);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.rid[0], "r2020");
    assert_string_equal(c.rid[1], "r2021");
    /* a callback returning false stops; the cursor continues after the last key */
    memset(&c, 0, sizeof c);
    c.stop_after = 2;
    patient_records(f, &pid, INT64_MIN, INT64_MAX, NULL, 0, &c);
    assert_int_equal(c.n, 2);
    collected rest = {0};
    patient_records(f, &pid, INT64_MIN, INT64_MAX, c.key[1], c.key_len[1], &rest);
    assert_int_equal(rest.n, 2);
    assert_string_equal(rest.rid[0], "r2021");
    assert_string_equal(rest.rid[1], "r2022");
}

static bool collect_public(void *ctx, int year, const char *rid, size_t rid_len, const void *key, size_t key_len)
{
    return collect_record(ctx, year, rid, rid_len, key, key_len);
}

/* The public index of type (NULL: all) for [from, to] (by_id: in record id order), after the key `after` when given;
 * c->stop_after kept. */
static void public_index_by(fixture *f, const char *type, int from, int to, bool by_id, const void *after,
                            size_t after_len, collected *c)
{
    int stop_after = c->stop_after;
    memset(c, 0, sizeof *c);
    c->stop_after = stop_after;
    store_read *r = unit_rbegin(f->s);
    ms_err e;
    ms_code rc = store_public_index(r, type, from, to, by_id, after, after_len, collect_public, c, &e);
    store_read_end(r);
    if (rc != MS_OK) fail_msg("store_public_index: %s", e.msg);
}

static void public_index_after(fixture *f, const char *type, int from, int to, const void *after, size_t after_len,
                               collected *c)
{
    public_index_by(f, type, from, to, false, after, after_len, c);
}

static void public_index(fixture *f, const char *type, int from, int to, collected *c)
{
    c->stop_after = 0;
    public_index_after(f, type, from, to, NULL, 0, c);
}

static void assert_listed(const collected *c, int n, const char *const *rids)
{
    assert_int_equal(c->n, n);
    for (int i = 0; i < n; i++)
        assert_string_equal(c->rid[i], rids[i]);
}

static void test_public_index(void **state)
{
    fixture *f = *state;
    patient_id pid = pid_of(15);
    write_version(f, "l2019", &pid, 1, "{\"note\":\"a\"}", unit_time(2019, 6, 1, 0, 0, 0), "lab", NULL);
    write_version(f, "l2021", &pid, 1, "{\"note\":\"b\"}", unit_time(2021, 6, 1, 0, 0, 0), "lab", NULL);
    write_version(f, "v2020", &pid, 1, "{\"note\":\"c\"}", unit_time(2020, 6, 1, 0, 0, 0), "visit", NULL);
    write_version(f, "lx", &pid, 1, "{\"note\":\"d\"}", unit_time(2020, 6, 1, 0, 0, 0), "labx", NULL);
    collected c;
    public_index(f, "lab", 0, 9999, &c);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.rid[0], "l2019");
    assert_true(c.ts[0] == 2019);
    assert_string_equal(c.rid[1], "l2021");
    public_index(f, "lab", 2020, 2021, &c);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.rid[0], "l2021");
    public_index(f, "none", 0, 9999, &c);
    assert_int_equal(c.n, 0);
    /* all types: the types' ranges merged by (year, record id) */
    public_index(f, NULL, 2020, 2020, &c);
    assert_listed(&c, 2, (const char *[]){"lx", "v2020"});
    public_index(f, NULL, 0, 9999, &c);
    assert_listed(&c, 4, (const char *[]){"l2019", "lx", "v2020", "l2021"});
    assert_true(c.ts[1] == 2020);
    /* a record whose type changed has an entry under both types: listed once */
    write_version(f, "moved", &pid, 1, "{\"note\":\"e\"}", unit_time(2020, 7, 1, 0, 0, 0), "lab", NULL);
    write_version(f, "moved", &pid, 2, "{\"note\":\"f\"}", unit_time(2020, 7, 1, 0, 0, 0), "visit", NULL);
    public_index(f, NULL, 0, 9999, &c);
    const char *all[] = {"l2019", "lx", "moved", "v2020", "l2021"};
    assert_listed(&c, 5, all);
    /* pages: stopped after 2, the rest from the second one's key, across the types */
    for (int page = 1; page <= 4; page++) {
        collected first = {.stop_after = page}, rest = {0};
        public_index_after(f, NULL, 0, 9999, NULL, 0, &first);
        assert_int_equal(first.n, page);
        public_index_after(f, NULL, 0, 9999, first.key[page - 1], first.key_len[page - 1], &rest);
        assert_listed(&rest, 5 - page, all + page);
    }
    /* a store from before the merge also holds a "*" entry for every record: each still listed once */
    store_close(f->s);
    f->s = NULL;
    for (int i = 0; i < 5; i++) {
        char key[64];
        int year = i == 0 ? 2019 : i == 4 ? 2021 : 2020;
        size_t rl = strlen(all[i]);
        memcpy(key, "T*\0", 3);
        key[3] = (char)(year >> 8), key[4] = (char)year;
        memcpy(key + 5, all[i], rl);
        unit_write_raw_entry(f->dir, "public", key, 5 + rl, "", 0);
    }
    reopen(f);
    public_index(f, NULL, 0, 9999, &c);
    assert_listed(&c, 5, all);
    public_index(f, "lab", 0, 9999, &c);
    assert_listed(&c, 3, (const char *[]){"l2019", "moved", "l2021"});
}

/* By record id (the schema does not publish the year): every type's and year's entries in (record id, year) order,
 * the keys handed out with year 0, a cursor from one continuing after its record id, one with a year refused. */
static void test_public_index_by_record_id(void **state)
{
    fixture *f = *state;
    patient_id pid = pid_of(16);
    write_version(f, "l2019", &pid, 1, "{\"note\":\"a\"}", unit_time(2019, 6, 1, 0, 0, 0), "lab", NULL);
    write_version(f, "l2021", &pid, 1, "{\"note\":\"b\"}", unit_time(2021, 6, 1, 0, 0, 0), "lab", NULL);
    write_version(f, "v2020", &pid, 1, "{\"note\":\"c\"}", unit_time(2020, 6, 1, 0, 0, 0), "visit", NULL);
    write_version(f, "moved", &pid, 1, "{\"note\":\"d\"}", unit_time(2020, 7, 1, 0, 0, 0), "lab", NULL);
    write_version(f, "moved", &pid, 2, "{\"note\":\"e\"}", unit_time(2020, 7, 1, 0, 0, 0), "visit", NULL);
    write_version(f, "shift", &pid, 1, "{\"note\":\"f\"}", unit_time(2024, 7, 1, 0, 0, 0), "visit", NULL);
    write_version(f, "shift", &pid, 2, "{\"note\":\"g\"}", unit_time(2018, 7, 1, 0, 0, 0), "visit", NULL);
    const char *all[] = {"l2019", "l2021", "moved", "shift", "shift", "v2020"};
    const int years[] = {2019, 2021, 2020, 2018, 2024, 2020};
    collected c = {0};
    public_index_by(f, NULL, 0, 9999, true, NULL, 0, &c);
    assert_listed(&c, 6, all);
    for (int i = 0; i < 6; i++) {
        assert_true(c.ts[i] == years[i]); /* the entry's year, for the caller's check of its version */
        assert_int_equal(c.key_len[i], 3 + 2 + strlen(all[i]));
        assert_memory_equal(c.key[i], "T*\0\0\0", 5);
    }
    public_index_by(f, "visit", 0, 9999, true, NULL, 0, &c);
    assert_listed(&c, 4, (const char *[]){"moved", "shift", "shift", "v2020"});
    /* pages: the rest after a key, whose record id is done */
    collected first = {.stop_after = 3}, rest = {0};
    public_index_by(f, NULL, 0, 9999, true, NULL, 0, &first);
    public_index_by(f, NULL, 0, 9999, true, first.key[2], first.key_len[2], &rest);
    assert_listed(&rest, 3, all + 3);
    first = (collected){.stop_after = 4};
    public_index_by(f, NULL, 0, 9999, true, NULL, 0, &first);
    public_index_by(f, NULL, 0, 9999, true, first.key[3], first.key_len[3], &rest);
    assert_listed(&rest, 1, all + 5);
    /* a cursor with a year (a listing by year's) is not one of this listing */
    store_read *r = unit_rbegin(f->s);
    ms_err e;
    assert_int_equal(store_public_index(r, NULL, 0, 9999, true, "T*\0\x07\xe3l2019", 10, collect_public, &c, &e),
                     MS_EINVAL);
    store_read_end(r);
}

/* With a body cache, reads of recent bodies come from memory: they must be the same bytes. */
static void test_body_cache_reads(void **state)
{
    fixture *f = *state;
    patient_id pid = pid_of(16);
    char text[9000];
    for (int i = 0; i < 6; i++) {
        size_t len = 100 + (size_t)i * 1500;
        memset(text, '0' + i, len);
        memcpy(text, "{\"note\":\"", 9);
        memcpy(text + len - 2, "\"}", 3);
        char rid[16];
        snprintf(rid, sizeof rid, "c%d", i);
        write_version(f, rid, &pid, 1, text, 0, "lab", NULL);
        record_version rv;
        assert_true(unit_record_at(f->s, rid, INT64_MAX, &rv));
        expect_body(f, &rv, text);
    }
    reopen(f);
    record_version rv;
    assert_true(unit_record_at(f->s, "c5", INT64_MAX, &rv));
    expect_body(f, &rv, text);
}

/* A small cache and bodies of many sizes: recent reads (from memory, across the ring's wrap-around)
 * and older reads (evicted: from the file) give the same bytes. */
static void test_small_cache_wraparound(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    f->s = NULL;
    f->opt.body_cache = 64 * 1024;
    reopen(f);
    patient_id pid = pid_of(17);
    enum { N = 24 };
    static char texts[N][20000];
    for (int i = 0; i < N; i++) {
        size_t len = 50 + (size_t)((i * 7919) % 19000);
        char *t = texts[i];
        memset(t, 'A' + i % 26, len);
        memcpy(t, "{\"note\":\"", 9);
        t[len - 2] = '"';
        t[len - 1] = '}';
        t[len] = 0;
        char rid[16];
        snprintf(rid, sizeof rid, "w%d", i);
        write_version(f, rid, &pid, 1, texts[i], 0, "lab", NULL);
        for (int j = i; j >= 0 && j >= i - 3; j--) { /* the newest few: still in the ring */
            snprintf(rid, sizeof rid, "w%d", j);
            record_version rv;
            assert_true(unit_record_at(f->s, rid, INT64_MAX, &rv));
            expect_body(f, &rv, texts[j]);
        }
    }
    for (int i = 0; i < N; i++) { /* all of them, most evicted by now */
        char rid[16];
        snprintf(rid, sizeof rid, "w%d", i);
        record_version rv;
        assert_true(unit_record_at(f->s, rid, INT64_MAX, &rv));
        expect_body(f, &rv, texts[i]);
    }
}

/* store_options.body_cache is `serve --body-cache`: a body larger than the cache must still be
 * appended and read back correctly (and without writing past the cache). Run in a child: the failure
 * mode is a heap overflow. */
typedef struct {
    const char *dir;
} big_body_arg;

/* Append text and read it back whole and in slices (start, middle, end) as state fields do. */
static bool append_and_read(store *s, const char *text, size_t len)
{
    size_t wl;
    char *body = unit_aligned_body(text, len, &wl);
    uint64_t pos = 0;
    ms_err e = {0};
    bool ok = store_append_body(s, body, wl, &pos, &e) == MS_OK;
    free(body);
    record_version rv = {.body_pos = pos, .body_len = (uint32_t)len, .body_hash = XXH3_64bits(text, len)};
    buf out = {0};
    ok = ok && store_record_body(s, &rv, &out, &e) == MS_OK && out.len == len && memcmp(out.data, text, len) == 0;
    size_t offs[3] = {0, len / 2, len - 100};
    for (int i = 0; i < 3 && ok; i++) {
        state_field sf = {
            .key = "k", .key_len = 1, .pos = pos + offs[i], .len = 100, .hash = XXH3_64bits(text + offs[i], 100)};
        out.len = 0;
        ok = store_field_value(s, &sf, &out, &e) == MS_OK && out.len == 100 &&
             memcmp(out.data, text + offs[i], 100) == 0;
        if (!ok) fprintf(stderr, "slice at %zu of a %zu-byte body: %s\n", offs[i], len, e.msg);
    }
    buf_free(&out);
    return ok;
}

static bool append_body_larger_than_cache(void *p)
{
    big_body_arg *a = p;
    store_options opt = {.map_size = (size_t)1 << 30, .segment_size = SEG_SIZE, .body_cache = 64 * 1024};
    store *s = NULL;
    ms_err e = {0};
    if (store_open(&s, a->dir, &opt, &e) != MS_OK) return false;
    size_t len = 300 * 1024;
    char *text = malloc(len);
    for (size_t i = 0; i < len; i++)
        text[i] = (char)('a' + (i * 31 + i / 4096) % 26);
    bool ok = append_and_read(s, text, len);          /* the first append since open */
    ok = ok && append_and_read(s, text + 1000, 2000); /* a small one */
    ok = ok && append_and_read(s, text + 7, len - 7); /* a big one later */
    free(text);
    store_close(s);
    return ok;
}

static void test_body_larger_than_cache(void **state)
{
    fixture *f = *state;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/small-cache", f->dir);
    big_body_arg a = {dir};
    assert_true(unit_run_isolated(append_body_larger_than_cache, &a));
}

/* Whatever store_patient_put accepts, store_patient_at must read back: a state field key longer than
 * 65535 bytes (a record may be 1 MiB, and keys have no other limit), and a state of more than 65536
 * fields (the merge of many records). Either the put refuses, or the version reads back intact. */
static void put_and_read_patient(fixture *f, const patient_id *pid, state_field *fields, uint32_t n, const char *what)
{
    ms_err e = {0};
    store_write *w;
    assert_int_equal(store_write_begin(f->s, &w, &e), MS_OK);
    patient_version pv = {.pid = *pid,
                          .number = ref_of(pid).number,
                          .version = 1,
                          .valid_from = store_write_time(w),
                          .valid_to = -1,
                          .cause_record = "c",
                          .cause_record_len = 1,
                          .source = "unit",
                          .source_len = 4,
                          .fields = fields,
                          .nfields = n};
    ms_code rc = store_patient_put(w, &pv, &e);
    if (rc != MS_OK) {
        store_write_abort(w);
        return; /* refused: fine, as long as nothing unreadable was written */
    }
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
    store_read *r = unit_rbegin(f->s);
    patient_version got;
    bool found = false;
    rc = store_patient_at(r, pid, INT64_MAX, &got, &f->mem, &found, &e);
    store_read_end(r);
    if (rc != MS_OK) fail_msg("%s: stored, but reading it back fails: %s", what, e.msg);
    assert_true(found);
    assert_int_equal(got.nfields, n);
    assert_int_equal(got.fields[n - 1].key_len, fields[n - 1].key_len);
    assert_memory_equal(got.fields[n - 1].key, fields[n - 1].key, fields[n - 1].key_len);
}

static void test_patient_version_long_key(void **state)
{
    fixture *f = *state;
    size_t kl = 70000;
    char *key = arena_alloc(&f->mem, kl);
    memset(key, 'k', kl);
    state_field sf = {.key = key, .key_len = (uint32_t)kl, .pos = 0, .len = 1, .hash = 1};
    patient_id pid = pid_of(18);
    put_and_read_patient(f, &pid, &sf, 1, "a 70000-byte field key");
}

static void test_patient_version_many_fields(void **state)
{
    fixture *f = *state;
    uint32_t n = 65537;
    state_field *fields = arena_alloc(&f->mem, sizeof(state_field) * n);
    char *keys = arena_alloc(&f->mem, (size_t)n * 8);
    for (uint32_t i = 0; i < n; i++) {
        snprintf(keys + (size_t)i * 8, 8, "f%06u", i);
        fields[i] = (state_field){.key = keys + (size_t)i * 8, .key_len = 7, .pos = 0, .len = 1, .hash = 1};
    }
    patient_id pid = pid_of(19);
    put_and_read_patient(f, &pid, fields, n, "a state of 65537 fields");
}

/* ---- the data directory's lock (one writing process at a time) ---- */

static store *open_as(const char *dir, const char *owner, bool read_only, ms_code *rc, ms_err *e)
{
    store_options opt = {.map_size = (size_t)1 << 30, .segment_size = SEG_SIZE, .owner = owner, .read_only = read_only};
    store *s = NULL;
    *rc = store_open(&s, dir, &opt, e);
    return *rc == MS_OK ? s : NULL;
}

/* A second open for writing is refused naming the holder; a read-only open is not, says who writes,
 * and cannot write; closing releases the lock. */
static void test_lock_refuses_a_second_writer(void **state)
{
    (void)state;
    char dir[64];
    unit_tmpdir(dir);
    ms_code rc;
    ms_err e = {0};
    store *a = open_as(dir, "serve", false, &rc, &e);
    if (!a) fail_msg("first open: %s", e.msg);
    char want[128];
    snprintf(want, sizeof want, "%s is in use by medstream pid %ld (serve, since ", dir, (long)getpid());
    for (int i = 0; i < 2; i++) { /* the refusal leaves the holder's lock in place */
        ms_err e2 = {0};
        store *b = open_as(dir, "user", false, &rc, &e2);
        assert_null(b);
        assert_int_equal(rc, MS_ECONFLICT);
        if (!unit_has_str(e2.msg, want) || !unit_has_str(e2.msg, "Z)")) fail_msg("refusal: %s", e2.msg);
    }
    /* read-only: opens, names the running writer, refuses every write */
    store *ro = open_as(dir, "audit", true, &rc, &e);
    if (!ro) fail_msg("read-only open beside a writer: %s", e.msg);
    assert_true(store_read_only(ro));
    snprintf(want, sizeof want, "pid %ld (serve, since ", (long)getpid());
    assert_non_null(store_live_writer(ro));
    if (!unit_has_str(store_live_writer(ro), want)) fail_msg("live writer: %s", store_live_writer(ro));
    store_write *w;
    assert_int_equal(store_write_begin(ro, &w, &e), MS_EINVAL);
    size_t wl;
    char *body = unit_aligned_body("{}", 2, &wl);
    uint64_t pos;
    assert_int_equal(store_append_body(ro, body, wl, &pos, &e), MS_EINVAL);
    free(body);
    assert_int_equal(store_sink_position_set(ro, "x", 1, &e), MS_EINVAL);
    assert_int_equal(store_probe(ro, 0, &e), MS_EINVAL);
    store_read *r;
    assert_int_equal(store_read_begin(ro, &r, &e), MS_OK);
    store_read_end(r);
    store_close(ro);
    /* the writer is unaffected by the refusals and the reader */
    assert_int_equal(store_write_begin(a, &w, &e), MS_OK);
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
    store_close(a);
    /* released: a read-only open sees no writer, and the next writer gets in */
    ro = open_as(dir, "audit", true, &rc, &e);
    if (!ro) fail_msg("read-only open: %s", e.msg);
    assert_null(store_live_writer(ro));
    store_close(ro);
    store *c = open_as(dir, NULL, false, &rc, &e);
    if (!c) fail_msg("open after close: %s", e.msg);
    store_close(c);
    unit_rmtree(dir);
}

/* The lock belongs to the process: a holder killed with SIGKILL (no store_close) leaves nothing that
 * refuses the next open. */
static void test_lock_dies_with_its_process(void **state)
{
    (void)state;
    char dir[64];
    unit_tmpdir(dir);
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        store_options opt = {.map_size = (size_t)1 << 30, .segment_size = SEG_SIZE, .owner = "serve"};
        store *s;
        ms_err e;
        char ok = store_open(&s, dir, &opt, &e) == MS_OK ? 'y' : 'n';
        if (write(ready[1], &ok, 1) != 1) _exit(3);
        for (;;)
            pause();
    }
    char ok = 0;
    assert_int_equal(read(ready[0], &ok, 1), 1);
    close(ready[0]);
    close(ready[1]);
    ms_code rc;
    ms_err e = {0};
    store *s = open_as(dir, "serve", false, &rc, &e);
    char want[96];
    snprintf(want, sizeof want, "in use by medstream pid %ld (serve, since ", (long)child);
    bool refused = s == NULL && rc == MS_ECONFLICT && unit_has_str(e.msg, want);
    store_close(s);
    kill(child, SIGKILL);
    int status;
    waitpid(child, &status, 0);
    assert_int_equal(ok, 'y');
    if (!refused) fail_msg("open while the child holds the lock: %s", e.msg);
    s = open_as(dir, "serve", false, &rc, &e);
    if (!s) fail_msg("open right after the holder was killed: %s", e.msg);
    store_close(s);
    unit_rmtree(dir);
}

/* ---- preallocation of the segment log in steps ---- */

static uint64_t segment_file_size(const char *dir, int seg, uint64_t *allocated)
{
    char path[128];
    snprintf(path, sizeof path, "%s/segments/%012d.seg", dir, seg);
    struct stat st;
    if (stat(path, &st) != 0) fail_msg("stat %s: %s", path, strerror(errno));
    if (allocated) *allocated = (uint64_t)st.st_blocks * 512;
    return (uint64_t)st.st_size;
}

static void append_n(store *s, size_t len, uint64_t *pos)
{
    size_t wl;
    char *body = unit_aligned_body("{\"x\":1}", 7, &wl);
    char *big = NULL;
    if (len > wl) {
        if (posix_memalign((void **)&big, 4096, len) != 0) abort();
        memset(big, ' ', len);
        memcpy(big, "{\"x\":1}", 7);
    }
    ms_err e = {0};
    ms_code rc = store_append_body(s, big ? big : body, big ? len : wl, pos, &e);
    free(body);
    free(big);
    if (rc != MS_OK) fail_msg("append of %zu bytes: %s", len, e.msg);
}

/* With the default segment size (1 GiB), a new log takes one step of disk, not a whole segment; the
 * file grows a step ahead of the appends, and never past the segment size. */
static void test_segment_preallocated_in_steps(void **state)
{
    (void)state;
    char dir[64];
    unit_tmpdir(dir);
    store *s;
    ms_err e = {0};
    store_options def = {.owner = "unit"}; /* default sizes */
    if (store_open(&s, dir, &def, &e) != MS_OK) fail_msg("open: %s", e.msg);
    uint64_t pos, blocks;
    append_n(s, 4096, &pos);
    uint64_t size = segment_file_size(dir, 0, &blocks);
    store_close(s);
    if (size != 4096 + SEGLOG_PREALLOC_STEP || blocks > 4096 + SEGLOG_PREALLOC_STEP)
        fail_msg("after one 4 KiB append to a new log: file of %llu bytes, %llu allocated (want one step: %llu)",
                 (unsigned long long)size, (unsigned long long)blocks,
                 (unsigned long long)(4096 + SEGLOG_PREALLOC_STEP));
    unit_rmtree(dir);

    /* segments of 96 MiB, appends of 8 MiB */
    unit_tmpdir(dir);
    store_options opt = {.segment_size = (uint64_t)96 << 20, .owner = "unit"};
    if (store_open(&s, dir, &opt, &e) != MS_OK) fail_msg("open: %s", e.msg);
    const size_t chunk = (size_t)8 << 20;
    append_n(s, chunk, &pos);
    assert_int_equal(segment_file_size(dir, 0, NULL), chunk + SEGLOG_PREALLOC_STEP); /* 72 MiB */
    for (int i = 1; i < 9; i++) { /* to 72 MiB: within the first step */
        append_n(s, chunk, &pos);
        assert_int_equal(pos, (uint64_t)i * chunk);
    }
    assert_int_equal(segment_file_size(dir, 0, NULL), chunk + SEGLOG_PREALLOC_STEP);
    append_n(s, chunk, &pos); /* to 80 MiB: the next step, cut at the segment's end */
    assert_int_equal(segment_file_size(dir, 0, NULL), opt.segment_size);
    append_n(s, chunk, &pos);
    append_n(s, chunk, &pos); /* 96 MiB: full */
    append_n(s, chunk, &pos); /* the next segment */
    assert_int_equal(pos, opt.segment_size);
    assert_int_equal(segment_file_size(dir, 0, NULL), opt.segment_size);
    assert_int_equal(segment_file_size(dir, 1, NULL), chunk + SEGLOG_PREALLOC_STEP);
    /* what was written reads back, across the steps */
    buf out = {0};
    state_field sf = {.key = "x", .key_len = 1, .pos = 9 * chunk + 5, .len = 1, .hash = XXH3_64bits("1", 1)};
    assert_int_equal(store_field_value(s, &sf, &out, &e), MS_OK);
    buf_free(&out);
    /* a reopened log goes on from the file's size (a step ahead already) */
    store_close(s);
    if (store_open(&s, dir, &opt, &e) != MS_OK) fail_msg("reopen: %s", e.msg);
    store_close(s);
    /* an opener that leaves the size to the store (segment_size 0) gets the recorded 96 MiB, not the
     * default: after a commit past the first file, the next append goes on in the second file and the
     * first stays whole */
    store_options recorded = {.owner = "unit"};
    if (store_open(&s, dir, &recorded, &e) != MS_OK) fail_msg("reopen with the recorded size: %s", e.msg);
    for (int i = 0; i < 13; i++) /* to 104 MiB */
        append_n(s, chunk, &pos);
    store_write *w;
    assert_int_equal(store_write_begin(s, &w, &e), MS_OK);
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK); /* the log's end, 104 MiB, recorded */
    store_close(s);
    if (store_open(&s, dir, &recorded, &e) != MS_OK) fail_msg("reopen with the recorded size: %s", e.msg);
    append_n(s, chunk, &pos);
    assert_int_equal(pos, 13 * chunk);
    assert_int_equal(segment_file_size(dir, 0, NULL), opt.segment_size);
    store_close(s);
    unit_rmtree(dir);
}

typedef struct {
    char dir[64];
} dir_arg;

static void set_file_size_limit(rlim_t bytes)
{
    struct rlimit rl;
    getrlimit(RLIMIT_FSIZE, &rl);
    rl.rlim_cur = bytes;
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) abort();
}

/* In a child (the file-size limit is per process): with room for less than a step, an append still
 * gets exactly what it needs; one that does not fit is MS_EFULL "disk full" and moves nothing; once the
 * room is back, appends work again without reopening. (RLIMIT_FSIZE stands in for a full disk: EFBIG.) */
static bool fallback_and_recovery(void *p)
{
    dir_arg *a = p;
    signal(SIGXFSZ, SIG_IGN);
    store *s;
    ms_err e = {0};
    store_options opt = {.owner = "unit"};
    if (store_open(&s, a->dir, &opt, &e) != MS_OK) return false;
    set_file_size_limit((rlim_t)8 << 20);
    bool ok = true;
    uint64_t pos = 1, pos2 = 1;
    size_t wl;
    char *small = unit_aligned_body("{\"x\":1}", 7, &wl);
    char *big = NULL;
    if (posix_memalign((void **)&big, 4096, (size_t)16 << 20) != 0) abort();
    memset(big, ' ', (size_t)16 << 20);
    ok = ok && store_append_body(s, small, wl, &pos, &e) == MS_OK && pos == 0;
    if (!ok) fprintf(stderr, "small append near a full disk: %s\n", e.msg);
    ok = ok && segment_file_size(a->dir, 0, NULL) == 4096;
    ms_err full = {0};
    ok = ok && store_append_body(s, big, (size_t)16 << 20, &pos2, &full) == MS_EFULL;
    ok = ok && unit_has_str(full.msg, "segment log: preallocate: disk full (File too large)");
    if (!ok) fprintf(stderr, "big append near a full disk: %s\n", full.msg);
    ok = ok && store_probe(s, 0, &e) == MS_OK; /* a small batch still fits */
    if (!ok) fprintf(stderr, "probe with room for a small batch: %s\n", e.msg);
    set_file_size_limit((rlim_t)4 << 20);
    ms_err pe = {0};
    ok = ok && store_probe(s, 0, &pe) == MS_OK; /* the probe's room was preallocated above */
    set_file_size_limit(RLIM_INFINITY);
    ok = ok && store_append_body(s, big, (size_t)16 << 20, &pos2, &e) == MS_OK && pos2 == 4096;
    if (!ok) fprintf(stderr, "append once there is room again: %s\n", e.msg);
    ok = ok && segment_file_size(a->dir, 0, NULL) == 4096 + ((uint64_t)16 << 20) + SEGLOG_PREALLOC_STEP;
    free(small);
    free(big);
    store_close(s);
    return ok;
}

static void test_segment_full_disk_fallback_and_recovery(void **state)
{
    (void)state;
    dir_arg a;
    unit_tmpdir(a.dir);
    bool ok = unit_run_isolated(fallback_and_recovery, &a);
    unit_rmtree(a.dir);
    assert_true(ok);
}

/* ---- LMDB on a full disk, and store_probe ---- */

static void put_records(store *s, int n, const char *tag, ms_code *rc, ms_err *e)
{
    store_write *w;
    if (store_write_begin(s, &w, e) != MS_OK) fail_msg("begin: %s", e->msg);
    patient_id pid;
    store_patient_id(s, 0, &pid);
    *rc = MS_OK;
    for (int i = 0; i < n && *rc == MS_OK; i++) {
        record_version rv = {.version = 1, .valid_from = store_write_time(w), .valid_to = -1, .pid = pid};
        rv.record_id_len = (uint32_t)snprintf(rv.record_id, sizeof rv.record_id, "%s-%06d-%0100d", tag, i, 0);
        memcpy(rv.type, "lab", 3);
        rv.type_len = 3;
        *rc = store_record_put(w, &rv, 2020, "{}", 2, e);
    }
    if (*rc == MS_OK)
        *rc = store_write_commit(w, NULL, e);
    else
        store_write_abort(w);
}

/* LMDB turns a short page write (what a full disk gives) into EIO: on a file system with little left
 * that is MS_EFULL "disk full"; with plenty left it stays MS_EIO. Either way the store stays clean.
 * (RLIMIT_FSIZE makes the short write; the free space the check sees is injected.) */
static bool lmdb_short_write(void *p)
{
    dir_arg *a = p;
    signal(SIGXFSZ, SIG_IGN);
    store *s;
    ms_err e = {0};
    store_options opt = {.map_size = (size_t)1 << 30, .segment_size = SEG_SIZE, .owner = "unit"};
    if (store_open(&s, a->dir, &opt, &e) != MS_OK) return false;
    ms_code rc;
    put_records(s, 10, "first", &rc, &e);
    bool ok = rc == MS_OK;
    char path[128];
    snprintf(path, sizeof path, "%s/lmdb/data.mdb", a->dir);
    struct stat st;
    ok = ok && stat(path, &st) == 0;
    const char *names[2] = {"little room", "plenty of room"};
    int64_t free_space[2] = {(int64_t)3 << 20, (int64_t)100 << 30};
    ms_code want[2] = {MS_EFULL, MS_EIO};
    for (int k = 0; k < 2 && ok; k++) {
        store_inject_free_space(s, free_space[k]);
        set_file_size_limit((rlim_t)st.st_size + 3 * 4096 + 100); /* a commit of many new pages runs past it */
        put_records(s, 2000, names[k], &rc, &e);
        set_file_size_limit(RLIM_INFINITY);
        if (rc != want[k] ||
            (k == 0 && !unit_has_str(e.msg, "store: commit: disk full (Input/output error with 3 MiB "
                                            "left on the file system)")) ||
            (k == 1 && !unit_has_str(e.msg, "store: commit: Input/output error"))) {
            fprintf(stderr, "commit past the file-size limit, %s: %s (%s)\n", names[k], ms_code_name(rc), e.msg);
            ok = false;
        }
    }
    store_inject_free_space(s, -1);
    put_records(s, 2000, "later", &rc, &e); /* nothing of the failed commits stays; the next one works */
    ok = ok && rc == MS_OK;
    store_read *r;
    ok = ok && store_read_begin(s, &r, &e) == MS_OK;
    if (ok) {
        ok = store_commit_pos(r) == 2;
        record_version rv;
        bool found = true;
        store_record_at(r, "little room-000000", 18, INT64_MAX, &rv, &found, &e);
        ok = ok && !found;
        store_read_end(r);
    }
    store_close(s);
    return ok;
}

static void test_lmdb_short_write_on_a_full_disk(void **state)
{
    (void)state;
    dir_arg a;
    unit_tmpdir(a.dir);
    bool ok = unit_run_isolated(lmdb_short_write, &a);
    unit_rmtree(a.dir);
    assert_true(ok);
}

/* store_probe: a healthy store can commit; an injected full disk says so; the probe commits nothing
 * that readers or sinks see. */
static void test_probe(void **state)
{
    fixture *f = *state;
    ms_err e = {0};
    assert_int_equal(store_probe(f->s, 0, &e), MS_OK);
    store_inject_fault(f->s, ENOSPC);
    assert_int_equal(store_probe(f->s, 0, &e), MS_EFULL);
    if (!unit_has_str(e.msg, "disk full (No space left on device)")) fail_msg("probe: %s", e.msg);
    store_inject_fault(f->s, EIO);
    assert_int_equal(store_probe(f->s, 0, &e), MS_EIO);
    store_inject_fault(f->s, 0);
    assert_int_equal(store_probe(f->s, 0, &e), MS_OK);
    store_read *r = unit_rbegin(f->s);
    uint64_t pos = store_commit_pos(r);
    int64_t last = store_last_commit(r);
    store_read_end(r);
    assert_int_equal(pos, 0);
    assert_int_equal(last, 0);
}

/* ---- accounts ---- */

static void account_write(fixture *f, const store_account *a, bool del)
{
    store_write *w;
    ms_err e = {0};
    if (store_write_begin(f->s, &w, &e) != MS_OK) fail_msg("begin: %s", e.msg);
    ms_code rc = del ? store_account_delete(w, a->name, &e) : store_account_put(w, a, &e);
    if (rc != MS_OK) {
        store_write_abort(w);
        fail_msg("account write: %s", e.msg);
    }
    if (store_write_commit(w, NULL, &e) != MS_OK) fail_msg("commit: %s", e.msg);
}

static bool account_read(fixture *f, const char *name, store_account *a)
{
    store_read *r = unit_rbegin(f->s);
    bool found = false;
    ms_err e;
    ms_code rc = store_account_get(r, name, a, &found, &e);
    store_read_end(r);
    if (rc != MS_OK) fail_msg("store_account_get: %s", e.msg);
    return found;
}

typedef struct {
    char names[8][STORE_USER_MAX];
    int n;
} name_list;

static bool collect_name(void *ctx, const store_account *a)
{
    name_list *l = ctx;
    if (l->n < 8) snprintf(l->names[l->n++], STORE_USER_MAX, "%s", a->name);
    return true;
}

static void test_accounts(void **state)
{
    fixture *f = *state;
    store_account a = {.name = "zoe", .role = "analyst", .hash = "$argon2id$zoe", .created = 5, .changed = 6};
    account_write(f, &a, false);
    store_account b = {
        .name = "amir", .role = "admin", .hash = "$argon2id$amir", .disabled = true, .created = 7, .changed = 7};
    account_write(f, &b, false);
    store_account got;
    assert_true(account_read(f, "zoe", &got));
    assert_string_equal(got.role, "analyst");
    assert_string_equal(got.hash, "$argon2id$zoe");
    assert_false(got.disabled);
    assert_int_equal(got.created, 5);
    assert_int_equal(got.changed, 6);
    assert_true(account_read(f, "amir", &got));
    assert_true(got.disabled);
    assert_false(account_read(f, "nobody", &got));
    /* an entry of an older version: enabled, times unknown; its role and hash as written */
    store_close(f->s);
    f->s = NULL;
    unit_write_old_user_entry(f->dir, "legacy", "clinician", "$argon2id$legacy");
    reopen(f);
    assert_true(account_read(f, "legacy", &got));
    assert_string_equal(got.role, "clinician");
    assert_string_equal(got.hash, "$argon2id$legacy");
    assert_false(got.disabled);
    assert_int_equal(got.created, 0);
    assert_int_equal(got.changed, 0);
    char role[STORE_ROLE_MAX], hash[STORE_HASH_MAX];
    bool found = false;
    store_read *r = unit_rbegin(f->s);
    ms_err e;
    assert_int_equal(store_user_get(r, "legacy", role, hash, &found, &e), MS_OK);
    assert_true(found);
    assert_string_equal(role, "clinician");
    /* listed in name order, both formats */
    name_list l = {0};
    assert_int_equal(store_account_list(r, collect_name, &l, &e), MS_OK);
    store_read_end(r);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.names[0], "amir");
    assert_string_equal(l.names[1], "legacy");
    assert_string_equal(l.names[2], "zoe");
    /* rewritten, the old entry takes the new format and keeps what it had */
    got.disabled = true;
    got.changed = 9;
    account_write(f, &got, false);
    assert_true(account_read(f, "legacy", &got));
    assert_true(got.disabled);
    assert_int_equal(got.changed, 9);
    assert_string_equal(got.hash, "$argon2id$legacy");
    /* deleted: gone; deleting again is not found */
    account_write(f, &a, true);
    assert_false(account_read(f, "zoe", &got));
    store_write *w;
    assert_int_equal(store_write_begin(f->s, &w, &e), MS_OK);
    assert_int_equal(store_account_delete(w, "zoe", &e), MS_ENOTFOUND);
    store_account too_long = {.role = "analyst", .hash = "$argon2id$x"};
    memset(too_long.name, 'n', sizeof too_long.name); /* no NUL inside */
    assert_int_equal(store_account_put(w, &too_long, &e), MS_EINVAL);
    store_write_abort(w);
}

/* A token is stored only for an account that exists and is enabled, and (for a login) still has the password
 * hash the login checked, all in the same transaction. */
static void test_tokens_need_an_account(void **state)
{
    fixture *f = *state;
    unsigned char h[32] = {1};
    ms_err e;
    assert_int_equal(store_token_put(f->s, h, ms_now_us() + 1000000, "ghost", "admin", NULL, &e), MS_ENOTFOUND);
    store_account a = {.name = "sam", .role = "analyst", .hash = "$argon2id$sam", .disabled = true};
    account_write(f, &a, false);
    assert_int_equal(store_token_put(f->s, h, ms_now_us() + 1000000, "sam", "analyst", NULL, &e), MS_ENOTFOUND);
    a.disabled = false;
    account_write(f, &a, false);
    /* a login checked against a password changed since (a reset racing it) gets no token */
    assert_int_equal(store_token_put(f->s, h, ms_now_us() + 1000000, "sam", "analyst", "$argon2id$old", &e),
                     MS_ENOTFOUND);
    assert_int_equal(store_token_put(f->s, h, ms_now_us() + 1000000, "sam", "analyst", "$argon2id$sam", &e), MS_OK);
    h[0] = 2;
    assert_int_equal(store_token_put(f->s, h, ms_now_us() + 1000000, "sam", "analyst", NULL, &e), MS_OK);
}

static bool token_hash_present(fixture *f, const unsigned char h[32])
{
    int64_t exp;
    char u[STORE_USER_MAX], ro[STORE_ROLE_MAX];
    bool found = false;
    ms_err e;
    store_read *r = unit_rbegin(f->s);
    assert_int_equal(store_token_get(r, h, &exp, u, ro, &found, &e), MS_OK);
    store_read_end(r);
    return found;
}

static bool token_present(fixture *f, unsigned char id)
{
    unsigned char h[32] = {id};
    return token_hash_present(f, h);
}

/* Revoking a user's tokens: every one of theirs but the one kept, none of another user's live ones, and
 * every expired token of anyone (pruned on the way). */
static void test_revoke_user_tokens(void **state)
{
    fixture *f = *state;
    store_account a = {.name = "ann", .role = "analyst", .hash = "$argon2id$a"};
    store_account b = {.name = "annie", .role = "analyst", .hash = "$argon2id$b"}; /* a name with ann's prefix */
    account_write(f, &a, false);
    account_write(f, &b, false);
    ms_err e;
    int64_t later = ms_now_us() + 3600LL * 1000000, soon = ms_now_us() + 200000;
    for (unsigned char id = 1; id <= 4; id++) { /* ann: 1 2 3 live, 4 expiring */
        unsigned char h[32] = {id};
        assert_int_equal(store_token_put(f->s, h, id == 4 ? soon : later, "ann", "analyst", NULL, &e), MS_OK);
    }
    for (unsigned char id = 5; id <= 6; id++) { /* annie: 5 live, 6 expiring */
        unsigned char h[32] = {id};
        assert_int_equal(store_token_put(f->s, h, id == 6 ? soon : later, "annie", "analyst", NULL, &e), MS_OK);
    }
    usleep(300000); /* 4 and 6 expire */
    unsigned char keep[32] = {2};
    store_write *w;
    uint64_t revoked = 99;
    assert_int_equal(store_write_begin(f->s, &w, &e), MS_OK);
    assert_int_equal(store_tokens_revoke_user(w, "ann", keep, &revoked, &e), MS_OK);
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
    assert_int_equal(revoked, 2); /* 1 and 3; 4 had expired (pruned, not counted) */
    assert_false(token_present(f, 1));
    assert_true(token_present(f, 2));
    assert_false(token_present(f, 3));
    assert_false(token_present(f, 4));
    assert_true(token_present(f, 5));
    assert_false(token_present(f, 6)); /* another user's expired token: pruned */
    assert_int_equal(store_write_begin(f->s, &w, &e), MS_OK);
    assert_int_equal(store_tokens_revoke_user(w, "ann", NULL, &revoked, &e), MS_OK);
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
    assert_int_equal(revoked, 1);
    assert_false(token_present(f, 2));
    assert_true(token_present(f, 5));
}

/* A hash of its own for the n-th token of a kind (deterministic: the same ring every run). */
static void token_hash(const char *kind, int n, unsigned char h[32])
{
    char text[32];
    int len = snprintf(text, sizeof text, "%s-%d", kind, n);
    SHA256((const unsigned char *)text, (size_t)len, h);
}

/* Expired tokens do not pile up while nobody's account changes: each login deletes the ones expired for a
 * day among the few entries after its own. 200 tokens that expired two days ago and 50 an hour ago, then 100
 * logins: at most a few of the first are left (without the sweep, all 200); the last 50 (still answered
 * "expired token") and every live token stay. */
static void test_logins_sweep_expired_tokens(void **state)
{
    fixture *f = *state;
    store_account a = {.name = "svc", .role = "ingest", .hash = "$argon2id$svc"};
    account_write(f, &a, false);
    ms_err e;
    unsigned char h[32];
    int64_t past = ms_now_us() - 48 * 3600LL * 1000000, recent = ms_now_us() - 3600LL * 1000000,
            later = ms_now_us() + 3600LL * 1000000;
    for (int i = 0; i < 200; i++) {
        token_hash("expired", i, h);
        assert_int_equal(store_token_put(f->s, h, past, "svc", "ingest", NULL, &e), MS_OK);
    }
    for (int i = 0; i < 50; i++) {
        token_hash("recent", i, h);
        assert_int_equal(store_token_put(f->s, h, recent, "svc", "ingest", NULL, &e), MS_OK);
    }
    for (int i = 0; i < 100; i++) {
        token_hash("live", i, h);
        assert_int_equal(store_token_put(f->s, h, later, "svc", "ingest", NULL, &e), MS_OK);
    }
    int expired_left = 0;
    for (int i = 0; i < 200; i++) {
        token_hash("expired", i, h);
        expired_left += token_hash_present(f, h);
    }
    for (int i = 0; i < 100; i++) {
        token_hash("live", i, h);
        assert_true(token_hash_present(f, h));
    }
    for (int i = 0; i < 50; i++) {
        token_hash("recent", i, h);
        assert_true(token_hash_present(f, h));
    }
    assert_true(expired_left <= 40);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_empty_and_id_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logins_sweep_expired_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_and_read_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_times_increase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_as_of_versions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_as_of_before_epoch_finds_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_injection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_persists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_segment_rollover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checksums, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_values_read_without_the_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_read_sees_a_commit_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_patient_records_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_public_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_public_index_by_record_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_cache_reads, setup_cached, teardown),
        cmocka_unit_test_setup_teardown(test_small_cache_wraparound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_larger_than_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_patient_version_long_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_patient_version_many_fields, setup, teardown),
        cmocka_unit_test(test_lock_refuses_a_second_writer),
        cmocka_unit_test(test_lock_dies_with_its_process),
        cmocka_unit_test(test_segment_preallocated_in_steps),
        cmocka_unit_test(test_segment_full_disk_fallback_and_recovery),
        cmocka_unit_test(test_lmdb_short_write_on_a_full_disk),
        cmocka_unit_test_setup_teardown(test_probe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_accounts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tokens_need_an_account, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoke_user_tokens, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
