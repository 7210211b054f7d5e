/*
 * test_writer.c - the single writer and group commit (src/writer.h) over a real store in a temporary
 * directory (1 MiB segments): statuses created / updated / duplicate / rejected, one patient id per
 * identity, record and patient versions with as-of reads and history, the public copies, reopening,
 * injected disk-full faults (nothing of the batch stored, the store stays clean), concurrent submitters,
 * and segment rollover.
 *
 * Bodies are prepared as http_server.c and api_routes.c do: a 4 KiB-aligned buffer zero-padded to a
 * multiple of 4 KiB, scanned with record_scan_body, then stored through the one ingest path
 * (ingest_store: append, then submit).
 */
#include "unit.h"
#include "unit_store.h"

#include "base/metrics.h"
#include "pipeline/identity.h"
#include "ingest/ingest.h"
#include "pipeline/prepare.h"
#include "ingest/writer.h"
#include "read/query.h"

#include <pthread.h>

#define SEG_SIZE ((uint64_t)1 << 20)
#define MAX_SUBS 128
#define a_code_any ((ms_code)-1) /* submit_mode: accept whatever code the job ends with */

typedef struct {
    char *body;
    size_t len, wlen;
    record_batch batch;
    item_result *res;
    ingest_job job;
} submission;

typedef struct {
    char dir[64];
    store_options opt;
    store *s;
    schema sc;
    writer *w;
    submission *subs[MAX_SUBS];
    int nsubs;
    arena mem;
    buf b;
} fixture;

static void start(fixture *f)
{
    ms_err e = {0};
    if (store_open(&f->s, f->dir, &f->opt, &e) != MS_OK) fail_msg("store_open: %s", e.msg);
    if (writer_start(&f->w, f->s, &f->sc, &e) != MS_OK) fail_msg("writer_start: %s", e.msg);
}

static void stop(fixture *f)
{
    writer_stop(f->w);
    f->w = NULL;
    store_close(f->s);
    f->s = NULL;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    unit_tmpdir(f->dir);
    f->opt = (store_options){.map_size = (size_t)1 << 30, .segment_size = SEG_SIZE, .body_cache = 0};
    schema_default(&f->sc);
    ms_err e = {0};
    if (store_open(&f->s, f->dir, &f->opt, &e) != MS_OK || writer_start(&f->w, f->s, &f->sc, &e) != MS_OK) {
        fprintf(stderr, "setup: %s\n", e.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static void submission_free(submission *s)
{
    record_batch_free(&s->batch);
    free(s->res);
    free(s->body);
    free(s);
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->w) writer_stop(f->w);
    if (f->s) store_close(f->s);
    for (int i = 0; i < f->nsubs; i++)
        submission_free(f->subs[i]);
    schema_free(&f->sc);
    arena_free(&f->mem);
    buf_free(&f->b);
    unit_rmtree(f->dir);
    free(f);
    return 0;
}

/* Scan text into a new submission (owned by the caller). */
static submission *prepare(const schema *sc, store *st, const char *text)
{
    submission *s = calloc(1, sizeof *s);
    s->len = strlen(text);
    s->body = unit_aligned_body(text, s->len, &s->wlen);
    scan_config cfg = {.schema = sc, .max_record = (size_t)1 << 20, .now_us = ms_now_us(), .id_key = store_id_key(st)};
    ms_err e = {0};
    if (record_prepare_body(&cfg, s->body, s->len, &s->batch, &e) != MS_OK) {
        fprintf(stderr, "record_scan_body: %s\n", e.msg);
        abort();
    }
    s->res = calloc(s->batch.n ? s->batch.n : 1, sizeof(item_result));
    s->job = (ingest_job){.body = s->body,
                          .body_len = s->len,
                          .body_write_len = s->wlen,
                          .body_pos = UINT64_MAX,
                          .batch = &s->batch,
                          .may_update = true,
                          .source = "unit test",
                          .received_at = ms_mono_s(),
                          .results = s->res};
    return s;
}

/* The one ingest path (ingest.h): append the body, then submit. Returns the job's code. */
static ms_code run(store *st, writer *w, submission *s)
{
    ingest_ctx in = {.store = st, .writer = w};
    ms_code rc = ingest_store(&in, &s->job, &s->job.err);
    return s->job.rc = rc;
}

static submission *submit_mode(fixture *f, const char *text, ms_code want)
{
    if (f->nsubs == MAX_SUBS) fail_msg("too many submissions in one test");
    submission *s = prepare(&f->sc, f->s, text);
    f->subs[f->nsubs++] = s;
    ms_code rc = run(f->s, f->w, s);
    if (want != a_code_any && rc != want) fail_msg("submit: code %d (%s), expected %d", rc, s->job.err.msg, want);
    return s;
}

static submission *submit(fixture *f, const char *text) { return submit_mode(f, text, MS_OK); }

static void expect_item(const submission *s, uint32_t i, item_status st, uint32_t version)
{
    assert_true(i < s->batch.n);
    if (s->res[i].status != st)
        fail_msg("item %u: %s, expected %s (%s)", i, item_status_name(s->res[i].status), item_status_name(st),
                 s->batch.records[i].error ? s->batch.records[i].error : "");
    if (st != ITEM_REJECTED) assert_int_equal(s->res[i].version, version);
}

static bool same_pid(const patient_id *a, const patient_id *b) { return memcmp(a->b, b->b, 16) == 0; }

/* The raw value of a patient state field, NUL-terminated in f->b; NULL if the field is absent. */
static const char *state_value(fixture *f, const patient_version *pv, const char *key)
{
    for (uint32_t i = 0; i < pv->nfields; i++) {
        if (pv->fields[i].key_len != strlen(key) || memcmp(pv->fields[i].key, key, pv->fields[i].key_len) != 0)
            continue;
        ms_err e;
        f->b.len = 0;
        if (store_field_value(f->s, &pv->fields[i], &f->b, &e) != MS_OK) fail_msg("store_field_value: %s", e.msg);
        return f->b.data;
    }
    return NULL;
}

static const char *body_of(fixture *f, const record_version *rv)
{
    ms_err e;
    f->b.len = 0;
    if (store_record_body(f->s, rv, &f->b, &e) != MS_OK) fail_msg("store_record_body: %s", e.msg);
    return f->b.data;
}

static bool ident_lookup(fixture *f, const char *name, int y, int m, int d, patient_id *pid)
{
    char norm[IDENTITY_NAME_MAX], key[IDENTITY_KEY_MAX + 1];
    const char *why;
    int n = identity_normalize_name(name, strlen(name), norm, &why);
    assert_true(n > 0);
    size_t kl = identity_key(norm, (size_t)n, y, m, d, key);
    store_read *r = unit_rbegin(f->s);
    bool found = false;
    ms_err e;
    ms_code rc = store_ident_lookup(r, key, kl, pid, &found, &e);
    store_read_end(r);
    assert_int_equal(rc, MS_OK);
    return found;
}

static void counts(fixture *f, uint64_t *commit_pos, uint64_t *patients)
{
    store_read *r = unit_rbegin(f->s);
    *commit_pos = store_commit_pos(r);
    *patients = store_patient_count(r);
    store_read_end(r);
}

#define ANA "\"name\":\"Ana Mar\\u00eda\",\"dob\":\"1990-01-01\""

/* ---- tests ---- */

static void test_statuses(void **state)
{
    fixture *f = *state;
    const char *v1 = "{\"record_id\":\"r1\"," ANA ",\"allergy\":\"nuts\"}";
    submission *a = submit(f, v1);
    expect_item(a, 0, ITEM_CREATED, 1);
    submission *b = submit(f, v1);
    expect_item(b, 0, ITEM_DUPLICATE, 1);
    assert_true(same_pid(&a->res[0].pid, &b->res[0].pid));
    /* the same content in another key order and spacing is the same record */
    submission *b2 = submit(f, "{ \"allergy\" : \"nuts\" , " ANA ", \"record_id\" : \"r1\" }");
    expect_item(b2, 0, ITEM_DUPLICATE, 1);
    submission *c = submit(f, "{\"record_id\":\"r1\"," ANA ",\"allergy\":\"penicillin\"}");
    expect_item(c, 0, ITEM_UPDATED, 2);
    assert_true(same_pid(&a->res[0].pid, &c->res[0].pid));
    /* all four in one batch, with a rejected line in the middle */
    submission *d = submit(f, "{\"record_id\":\"r2\"," ANA ",\"x\":1}\n"
                              "{\"record_id\":\"r2\"," ANA ",\"x\":1}\n"
                              "{\"record_id\":\"r2\",\"name\":\"Ana\"}\n"
                              "{\"record_id\":\"r2\"," ANA ",\"x\":2}\n"
                              "{\"record_id\":\"r1\"," ANA ",\"allergy\":\"penicillin\"}\n");
    expect_item(d, 0, ITEM_CREATED, 1);
    expect_item(d, 1, ITEM_DUPLICATE, 1);
    expect_item(d, 2, ITEM_REJECTED, 0);
    expect_item(d, 3, ITEM_UPDATED, 2);
    expect_item(d, 4, ITEM_DUPLICATE, 2);
    for (int i = 0; i < 5; i++)
        if (i != 2) assert_true(same_pid(&d->res[i].pid, &a->res[0].pid));
    assert_string_equal(item_status_name(ITEM_CREATED), "created");
    assert_string_equal(item_status_name(ITEM_UPDATED), "updated");
    assert_string_equal(item_status_name(ITEM_DUPLICATE), "duplicate");
    assert_string_equal(item_status_name(ITEM_REJECTED), "rejected");
    /* a batch of rejected lines only: answered, nothing stored */
    uint64_t cp0, pc0;
    counts(f, &cp0, &pc0);
    submission *e = submit_mode(f, "{\"name\":\"No Dob\"}\nnot json\n", MS_OK);
    expect_item(e, 0, ITEM_REJECTED, 0);
    expect_item(e, 1, ITEM_REJECTED, 0);
    uint64_t cp1, pc1;
    counts(f, &cp1, &pc1);
    assert_int_equal(pc1, pc0);
}

static bool count_entry(void *ctx, uint64_t seq, const char *entry, size_t len)
{
    (void)seq, (void)entry, (void)len;
    ++*(int *)ctx;
    return true;
}

/* The source position stored under (source, partition), -1 when none. */
static int64_t position(fixture *f, const char *source, int32_t partition)
{
    store_read *r = unit_rbegin(f->s);
    int64_t next = -1;
    bool found = false;
    ms_err e;
    assert_int_equal(store_source_offset_get(r, source, partition, &next, &found, &e), MS_OK);
    store_read_end(r);
    return found ? next : -1;
}

static int audit_entries(fixture *f)
{
    store_read *r = unit_rbegin(f->s);
    int n = 0;
    ms_err e;
    assert_int_equal(store_audit_scan(r, 0, count_entry, &n, &e), MS_OK);
    store_read_end(r);
    return n;
}

/* ingest.h: a batch of only rejected lines that carries source positions commits them (an import's bad
 * rows, a topic's dead letters), with no body and no audit entry; so does a batch of no lines. */
static void test_rejected_batch_commits_positions(void **state)
{
    fixture *f = *state;
    source_offset at[] = {{"import:unit", 0, 4096}, {"import:unit", 1, 12}};
    submission *bad = prepare(&f->sc, f->s, "{\"name\":\"No Dob\"}\nnot json\n");
    f->subs[f->nsubs++] = bad;
    bad->job.offsets = at;
    bad->job.noffsets = 2;
    uint64_t cp0, pc0;
    counts(f, &cp0, &pc0);
    int audited = audit_entries(f);
    assert_int_equal(run(f->s, f->w, bad), MS_OK);
    expect_item(bad, 0, ITEM_REJECTED, 0);
    expect_item(bad, 1, ITEM_REJECTED, 0);
    assert_int_equal(bad->job.body_pos, UINT64_MAX); /* nothing appended */
    assert_int_equal(position(f, "import:unit", 0), 4096);
    assert_int_equal(position(f, "import:unit", 1), 12);
    uint64_t cp1, pc1;
    counts(f, &cp1, &pc1);
    assert_int_equal(cp1, cp0 + 1); /* one commit, no patient */
    assert_int_equal(pc1, pc0);
    assert_int_equal(audit_entries(f), audited);
    /* no lines at all, positions only */
    record_batch none = {0};
    source_offset end[] = {{"import:unit", 0, 8192}};
    ingest_job job = {.batch = &none, .body_pos = UINT64_MAX, .offsets = end, .noffsets = 1, .source = "unit test"};
    ingest_ctx in = {.store = f->s, .writer = f->w};
    ms_err e;
    assert_int_equal(ingest_store(&in, &job, &e), MS_OK);
    assert_int_equal(position(f, "import:unit", 0), 8192);
    assert_int_equal(audit_entries(f), audited);
    /* without positions a rejected batch still commits nothing */
    submission *plain = submit(f, "not json\n");
    expect_item(plain, 0, ITEM_REJECTED, 0);
    uint64_t cp2, pc2;
    counts(f, &cp2, &pc2);
    assert_int_equal(cp2, cp1 + 1);
}

/* writer.h, ingest_job.replay: a file read again whose rows hold two versions of one record stores
 * neither again (each matches a version it made); without replay the older one would come back as a new
 * version. New content is still a new version. */
static void test_replay_matches_any_version(void **state)
{
    fixture *f = *state;
    const char *v1 = "{\"record_id\":\"rp\"," ANA ",\"allergy\":\"nuts\"}\n";
    const char *v2 = "{\"record_id\":\"rp\"," ANA ",\"allergy\":\"dust\"}\n";
    char both[512];
    snprintf(both, sizeof both, "%s%s", v1, v2);
    submission *first = submit(f, both);
    expect_item(first, 0, ITEM_CREATED, 1);
    expect_item(first, 1, ITEM_UPDATED, 2);
    submission *again = prepare(&f->sc, f->s, both);
    f->subs[f->nsubs++] = again;
    again->job.replay = true;
    assert_int_equal(run(f->s, f->w, again), MS_OK);
    expect_item(again, 0, ITEM_DUPLICATE, 1); /* the version it made */
    expect_item(again, 1, ITEM_DUPLICATE, 2);
    assert_true(same_pid(&again->res[0].pid, &first->res[0].pid));
    submission *changed = prepare(&f->sc, f->s, "{\"record_id\":\"rp\"," ANA ",\"allergy\":\"pollen\"}\n");
    f->subs[f->nsubs++] = changed;
    changed->job.replay = true;
    assert_int_equal(run(f->s, f->w, changed), MS_OK);
    expect_item(changed, 0, ITEM_UPDATED, 3);
    /* without replay, the older content is a new version (a client may restore it on purpose) */
    submission *restore = submit(f, v1);
    expect_item(restore, 0, ITEM_UPDATED, 4);
}

typedef struct {
    int records, patients;
    char rids[8][16];
} log_seen;

static bool on_log_item(void *ctx, const log_item *it)
{
    log_seen *seen = ctx;
    if (it->kind == 'r') {
        if (seen->records < 8) snprintf(seen->rids[seen->records], 16, "%.*s:%u", (int)it->id_len, it->id, it->version);
        seen->records++;
    } else if (it->kind == 'p') {
        assert_int_equal(it->id_len, 16);
        seen->patients++;
    }
    return true;
}

/* The commit log lists, per committed batch, exactly the versions it wrote (duplicates and rejected
 * lines write nothing), at consecutive positions, for sinks to follow. */
static void test_commit_log(void **state)
{
    fixture *f = *state;
    uint64_t cp0, pc0;
    counts(f, &cp0, &pc0);
    submit(f, "{\"record_id\":\"L1\"," ANA ",\"a\":1}\n{\"record_id\":\"L2\"," ANA ",\"a\":2}\n"
              "{\"record_id\":\"L1\"," ANA ",\"a\":1}\nbad\n");
    submit(f, "{\"record_id\":\"L1\"," ANA ",\"a\":3}");
    uint64_t cp1, pc1;
    counts(f, &cp1, &pc1);
    assert_int_equal(cp1, cp0 + 2);
    store_read *r = unit_rbegin(f->s);
    ms_err e;
    bool found;
    int64_t t1, t2, t3;
    log_seen a = {0}, b = {0}, c = {0};
    assert_int_equal(store_log_entry(r, cp0 + 1, &t1, on_log_item, &a, &found, &e), MS_OK);
    assert_true(found);
    assert_int_equal(store_log_entry(r, cp0 + 2, &t2, on_log_item, &b, &found, &e), MS_OK);
    assert_true(found);
    assert_int_equal(store_log_entry(r, cp0 + 3, &t3, on_log_item, &c, &found, &e), MS_OK);
    assert_false(found); /* caught up */
    store_read_end(r);
    assert_true(t2 > t1);
    assert_int_equal(a.records, 2);
    assert_string_equal(a.rids[0], "L1:1");
    assert_string_equal(a.rids[1], "L2:1");
    assert_int_equal(a.patients, 2); /* the patient changed twice: a=1, then a=2 */
    assert_int_equal(b.records, 1);
    assert_string_equal(b.rids[0], "L1:2");
    assert_int_equal(b.patients, 1);
}

/* What a sink reads for each commit-log item: the exact version that commit wrote (by its commit time
 * and version, also when one commit wrote two versions of a patient), its public copy, and for a new
 * patient the identity key; a version the commit did not write is not found. */
typedef struct {
    store_read *r;
    int64_t t;
    int records, patients, new_patients;
} exact_seen;

static bool on_exact_item(void *ctx, const log_item *it)
{
    exact_seen *x = ctx;
    ms_err e;
    bool found;
    if (it->kind == 'r') {
        record_version rv;
        public_record pr;
        assert_int_equal(store_record_version(x->r, it->id, it->id_len, x->t, it->version, &rv, &found, &e), MS_OK);
        assert_true(found);
        assert_int_equal(rv.version, it->version);
        assert_int_equal(rv.valid_from, x->t);
        assert_int_equal(store_record_version(x->r, it->id, it->id_len, x->t, it->version + 1, &rv, &found, &e), MS_OK);
        assert_false(found);
        assert_int_equal(store_public_record_version(x->r, it->id, it->id_len, x->t, it->version, &pr, &found, &e),
                         MS_OK);
        assert_true(found);
        assert_null(memmem(pr.fields, pr.fields_len, "Ana", 3)); /* the public copy has no name */
        x->records++;
    } else {
        patient_id pid;
        memcpy(pid.b, it->id, 16);
        patient_version pv;
        arena mem = {0};
        assert_int_equal(store_patient_version(x->r, &pid, x->t, it->version, &pv, &mem, &found, &e), MS_OK);
        assert_true(found);
        assert_int_equal(pv.version, it->version);
        assert_int_equal(store_patient_version(x->r, &pid, x->t - 1, it->version, &pv, &mem, &found, &e), MS_OK);
        assert_false(found); /* another commit time: not this commit's version */
        arena_free(&mem);
        if (it->version == 1) {
            buf key = {0};
            assert_int_equal(store_identity_key(x->r, &pid, &key, &found, &e), MS_OK);
            assert_true(found);
            const char want[] = "ana mar\xc3\xad"
                                "a\0"
                                "1990-01-01";
            assert_int_equal(key.len, sizeof want - 1);
            assert_memory_equal(key.data, want, key.len);
            buf_free(&key);
            x->new_patients++;
        }
        x->patients++;
    }
    return true;
}

static void test_exact_versions_for_sinks(void **state)
{
    fixture *f = *state;
    uint64_t cp0, pc0;
    counts(f, &cp0, &pc0);
    submit(f, "{\"record_id\":\"X1\"," ANA ",\"favorite_color\":\"red\"}\n"
              "{\"record_id\":\"X2\"," ANA ",\"favorite_color\":\"blue\"}\n");
    submit(f, "{\"record_id\":\"X1\"," ANA ",\"favorite_color\":\"green\"}");
    exact_seen x = {0};
    ms_err e;
    bool found;
    x.r = unit_rbegin(f->s);
    for (uint64_t pos = cp0 + 1; pos <= cp0 + 2; pos++) {
        assert_int_equal(store_log_entry(x.r, pos, &x.t, on_exact_item, &x, &found, &e), MS_OK);
        assert_true(found);
    }
    store_read_end(x.r);
    assert_int_equal(x.records, 3);
    assert_int_equal(x.patients, 3); /* versions 1 and 2 in the first commit, 3 in the second */
    assert_int_equal(x.new_patients, 1);
}

static void test_same_identity_same_patient(void **state)
{
    fixture *f = *state;
    submission *a = submit(f, "{\"name\":\"Ana Mar\\u00eda\",\"dob\":\"1990-01-01\",\"n\":1}");
    submission *b = submit(f, "{\"name\":\"  ana   MAR\\u00cdA \",\"dob\":\"1990-01-01\",\"n\":2}\n"
                              "{\"name\":\"\\uff21\\uff2e\\uff21 mari\\u0301a\",\"dob\":\"1990-01-01\",\"n\":3}\n"
                              "{\"name\":\"Ana Mar\\u00eda\",\"dob\":\"1990-01-02\",\"n\":4}\n"
                              "{\"name\":\"Ana Maria\",\"dob\":\"1990-01-01\",\"n\":5}\n");
    expect_item(a, 0, ITEM_CREATED, 1);
    for (int i = 0; i < 4; i++)
        expect_item(b, (uint32_t)i, ITEM_CREATED, 1);
    assert_true(same_pid(&a->res[0].pid, &b->res[0].pid));
    assert_true(same_pid(&a->res[0].pid, &b->res[1].pid));  /* NFKC, case fold, combining accent */
    assert_false(same_pid(&a->res[0].pid, &b->res[2].pid)); /* another date of birth */
    assert_false(same_pid(&a->res[0].pid, &b->res[3].pid)); /* "maria" is not "maría" */
    assert_false(same_pid(&b->res[2].pid, &b->res[3].pid));
    /* a later batch still gets the same id */
    submission *c = submit(f, "{\"name\":\"ANA MARÍA\",\"dob\":\"1990-01-02\",\"n\":6}");
    assert_true(same_pid(&c->res[0].pid, &b->res[2].pid));
    patient_id pid;
    assert_true(ident_lookup(f, "ana maría", 1990, 1, 1, &pid));
    assert_true(same_pid(&pid, &a->res[0].pid));
    assert_false(ident_lookup(f, "ana maría", 1990, 1, 3, &pid));
    uint64_t cp, pc;
    counts(f, &cp, &pc);
    assert_int_equal(pc, 3);
    assert_int_equal(cp, 3);
    /* ids are version-4 UUIDs, not derived from the identity */
    char text[PATIENT_ID_TEXT];
    patient_id_format(&a->res[0].pid, text);
    assert_int_equal(text[14], '4');
}

static void test_versions_and_as_of(void **state)
{
    fixture *f = *state;
    const char *t1 =
        "{\"record_id\":\"r1\"," ANA ",\"allergy\":\"nuts\",\"type\":\"lab\",\"ts\":\"2024-05-01T10:00:00Z\"}";
    const char *t2 =
        "{\"record_id\":\"r1\"," ANA ",\"allergy\":\"penicillin\",\"type\":\"lab\",\"ts\":\"2024-05-01T10:00:00Z\"}";
    submission *a = submit(f, t1);
    record_version rv1;
    assert_true(unit_record_at(f->s, "r1", INT64_MAX, &rv1));
    int64_t vf1 = rv1.valid_from;
    assert_string_equal(body_of(f, &rv1), t1);
    assert_string_equal(rv1.type, "lab");
    assert_true(rv1.ts_us == unit_time(2024, 5, 1, 10, 0, 0));
    assert_true(same_pid(&rv1.pid, &a->res[0].pid));
    submission *b = submit(f, t2);
    expect_item(b, 0, ITEM_UPDATED, 2);
    record_version rv;
    assert_true(unit_record_at(f->s, "r1", INT64_MAX, &rv));
    int64_t vf2 = rv.valid_from;
    assert_true(vf2 > vf1);
    assert_int_equal(rv.version, 2);
    assert_true(rv.valid_to < 0);
    assert_string_equal(body_of(f, &rv), t2);
    /* as of a time between the two commits: the older version, with valid_to = the newer's valid_from */
    assert_true(unit_record_at(f->s, "r1", vf2 - 1, &rv));
    assert_int_equal(rv.version, 1);
    assert_true(rv.valid_to == vf2);
    assert_string_equal(body_of(f, &rv), t1);
    assert_true(unit_record_at(f->s, "r1", vf1, &rv));
    assert_int_equal(rv.version, 1);
    assert_false(unit_record_at(f->s, "r1", vf1 - 1, &rv)); /* before creation */
    /* the patient, likewise */
    patient_id pid = a->res[0].pid;
    patient_version pv;
    assert_true(unit_patient_at(f->s, &f->mem, &pid, INT64_MAX, &pv));
    assert_int_equal(pv.version, 2);
    assert_string_equal(state_value(f, &pv, "allergy"), "\"penicillin\"");
    assert_string_equal(state_value(f, &pv, "name"), "\"Ana Mar\\u00eda\"");
    assert_null(state_value(f, &pv, "record_id"));
    assert_null(state_value(f, &pv, "type"));
    assert_null(state_value(f, &pv, "ts"));
    assert_true(unit_patient_at(f->s, &f->mem, &pid, vf2 - 1, &pv));
    assert_int_equal(pv.version, 1);
    assert_true(pv.valid_to == vf2);
    assert_string_equal(state_value(f, &pv, "allergy"), "\"nuts\"");
    assert_false(unit_patient_at(f->s, &f->mem, &pid, vf1 - 1, &pv));
}

static void test_history(void **state)
{
    fixture *f = *state;
    submit(f, "{\"record_id\":\"h1\"," ANA ",\"allergy\":\"nuts\"}");
    submit(f, "{\"record_id\":\"h2\"," ANA ",\"weight\":70}");
    submit(f, "{\"record_id\":\"h3\"," ANA ",\"allergy\":\"none\"}");
    /* a record that changes nothing of the patient's state: a new record, no new patient version */
    submission *d = submit(f, "{\"record_id\":\"h4\"," ANA ",\"weight\":70,\"type\":\"visit\"}");
    expect_item(d, 0, ITEM_CREATED, 1);
    patient_id pid = d->res[0].pid;
    store_read *r = unit_rbegin(f->s);
    patient_version *h = NULL;
    uint32_t n = 0;
    ms_err e;
    ms_code rc = store_patient_history(r, &pid, &h, &n, &f->mem, &e);
    store_read_end(r);
    assert_int_equal(rc, MS_OK);
    assert_int_equal(n, 3);
    const char *causes[] = {"h1", "h2", "h3"};
    for (uint32_t i = 0; i < n; i++) {
        assert_int_equal(h[i].version, i + 1);
        assert_span_equal(h[i].cause_record, h[i].cause_record_len, causes[i]);
        assert_span_equal(h[i].source, h[i].source_len, "unit test");
        if (i) assert_true(h[i].valid_from > h[i - 1].valid_from);
        if (i + 1 < n) assert_true(h[i].valid_to == h[i + 1].valid_from);
    }
    assert_true(h[2].valid_to < 0);
    assert_string_equal(state_value(f, &h[0], "allergy"), "\"nuts\"");
    assert_null(state_value(f, &h[0], "weight"));
    assert_string_equal(state_value(f, &h[1], "weight"), "70");
    assert_string_equal(state_value(f, &h[1], "allergy"), "\"nuts\"");
    assert_string_equal(state_value(f, &h[2], "allergy"), "\"none\"");
    assert_string_equal(state_value(f, &h[2], "weight"), "70");
}

static bool public_patient(fixture *f, const patient_id *pid, int64_t as_of, char *out, size_t cap)
{
    store_read *r = unit_rbegin(f->s);
    buf b = {0};
    bool found = false;
    ms_err e;
    ms_code rc = store_public_patient_at(r, pid, as_of, &b, &found, &e);
    store_read_end(r);
    snprintf(out, cap, "%.*s", (int)b.len, b.data ? b.data : "");
    buf_free(&b);
    assert_int_equal(rc, MS_OK);
    return found;
}

static void test_public_copies(void **state)
{
    fixture *f = *state;
    submission *a = submit(f, "{\"record_id\":\"p1\"," ANA ",\"favorite_color\":\"blue\",\"type\":\"lab\","
                              "\"ts\":\"2024-05-01T10:00:00Z\",\"ssn\":\"123-45-6789\"}");
    patient_id pid = a->res[0].pid;
    char pub[256];
    assert_true(public_patient(f, &pid, INT64_MAX, pub, sizeof pub));
    assert_string_equal(pub, "{\"favorite_color\":\"blue\"}");
    store_read *r = unit_rbegin(f->s);
    public_record pr;
    bool found = false;
    ms_err e;
    ms_code rc = store_public_record_at(r, "p1", 2, INT64_MAX, &pr, &found, &e);
    char fields[256];
    snprintf(fields, sizeof fields, "%.*s", (int)pr.fields_len, found ? pr.fields : "");
    int year = pr.year;
    bool pid_ok = found && same_pid(&pr.pid, &pid);
    bool type_ok = found && strcmp(pr.type, "lab") == 0;
    store_read_end(r);
    assert_int_equal(rc, MS_OK);
    assert_true(found && pid_ok && type_ok);
    assert_string_equal(fields, "{\"favorite_color\":\"blue\",\"type\":\"lab\",\"ts\":\"2024\"}");
    assert_int_equal(year, 2024);
    record_version rv;
    assert_true(unit_record_at(f->s, "p1", INT64_MAX, &rv));
    int64_t vf1 = rv.valid_from;
    /* a change of a PHI field: the public patient copy stays as it was */
    submit(f, "{\"record_id\":\"p2\"," ANA ",\"ssn\":\"987-65-4321\"}");
    assert_true(public_patient(f, &pid, INT64_MAX, pub, sizeof pub));
    assert_string_equal(pub, "{\"favorite_color\":\"blue\"}");
    /* a change of an allow-listed field: a new public version; as of before it, the old one */
    submit(f, "{\"record_id\":\"p3\"," ANA ",\"favorite_color\":\"red\"}");
    assert_true(unit_record_at(f->s, "p3", INT64_MAX, &rv));
    assert_true(public_patient(f, &pid, INT64_MAX, pub, sizeof pub));
    assert_string_equal(pub, "{\"favorite_color\":\"red\"}");
    assert_true(public_patient(f, &pid, rv.valid_from - 1, pub, sizeof pub));
    assert_string_equal(pub, "{\"favorite_color\":\"blue\"}");
    assert_false(public_patient(f, &pid, vf1 - 1, pub, sizeof pub));
}

static void test_derived_ids_and_retries(void **state)
{
    fixture *f = *state;
    const char *t = "{" ANA ",\"note\":\"retry me\"}";
    submission *a = submit(f, t);
    expect_item(a, 0, ITEM_CREATED, 1);
    assert_true(a->batch.records[0].record_id_derived);
    submission *b = submit(f, "{\"note\":\"retry me\", " ANA "}");
    expect_item(b, 0, ITEM_DUPLICATE, 1);
    assert_string_equal(a->batch.records[0].record_id, b->batch.records[0].record_id);
    submission *c = submit(f, "{" ANA ",\"note\":\"other\"}");
    expect_item(c, 0, ITEM_CREATED, 1);
    record_version rv;
    assert_true(unit_record_at(f->s, a->batch.records[0].record_id, INT64_MAX, &rv));
    assert_string_equal(body_of(f, &rv), t);
}

static void test_reopen(void **state)
{
    fixture *f = *state;
    const char *t1 = "{\"record_id\":\"k1\"," ANA ",\"allergy\":\"nuts\"}";
    const char *t2 = "{" ANA ",\"allergy\":\"dust\",\"note\":\"derived id\"}";
    const char *t3 = "{\"record_id\":\"k3\",\"name\":\"Bo\",\"dob\":\"1980-02-02\"}";
    submission *a = submit(f, t1);
    submission *b = submit(f, t2);
    submission *c = submit(f, t3);
    patient_id ana = a->res[0].pid, bo = c->res[0].pid;
    char derived[64];
    snprintf(derived, sizeof derived, "%s", b->batch.records[0].record_id);
    stop(f);
    start(f);
    record_version rv;
    assert_true(unit_record_at(f->s, "k1", INT64_MAX, &rv));
    assert_string_equal(body_of(f, &rv), t1);
    assert_true(unit_record_at(f->s, derived, INT64_MAX, &rv));
    assert_string_equal(body_of(f, &rv), t2);
    assert_true(unit_record_at(f->s, "k3", INT64_MAX, &rv));
    assert_string_equal(body_of(f, &rv), t3);
    patient_id pid;
    assert_true(ident_lookup(f, "Ana María", 1990, 1, 1, &pid));
    assert_true(same_pid(&pid, &ana));
    assert_true(ident_lookup(f, "bo", 1980, 2, 2, &pid));
    assert_true(same_pid(&pid, &bo));
    patient_version pv;
    assert_true(unit_patient_at(f->s, &f->mem, &ana, INT64_MAX, &pv));
    assert_int_equal(pv.version, 2);
    assert_string_equal(state_value(f, &pv, "allergy"), "\"dust\"");
    uint64_t cp, pc;
    counts(f, &cp, &pc);
    assert_int_equal(cp, 3);
    assert_int_equal(pc, 2);
    /* after the restart: the retried derived-id record is still a duplicate, the identity still resolves */
    submission *d = submit(f, t2);
    expect_item(d, 0, ITEM_DUPLICATE, 1);
    submission *e =
        submit(f, "{\"record_id\":\"k1\"," ANA ",\"allergy\":\"none\"}\n{\"name\":\"BO\",\"dob\":\"1980-02-02\"}");
    expect_item(e, 0, ITEM_UPDATED, 2);
    assert_true(same_pid(&e->res[0].pid, &ana));
    expect_item(e, 1, ITEM_CREATED, 1);
    assert_true(same_pid(&e->res[1].pid, &bo));
    assert_true(unit_patient_at(f->s, &f->mem, &ana, INT64_MAX, &pv));
    assert_int_equal(pv.version, 3);
}

/* A disk-full commit fails the batch with MS_EFULL and stores nothing of it; once the disk has room
 * again the same batch goes through, and everything before is intact. */
static void test_fault_injection(void **state)
{
    fixture *f = *state;
    const char *t0 = "{\"record_id\":\"ok\"," ANA ",\"allergy\":\"nuts\"}";
    submission *a = submit(f, t0);
    uint64_t cp0, pc0;
    counts(f, &cp0, &pc0);
    const char *batch = "{\"record_id\":\"f1\",\"name\":\"Cy Fault\",\"dob\":\"1970-03-03\",\"x\":1}\n"
                        "{\"record_id\":\"ok\"," ANA ",\"allergy\":\"changed\"}\n";
    for (int mode = 0; mode < 2; mode++) {
        submission *s = prepare(&f->sc, f->s, batch);
        f->subs[f->nsubs++] = s;
        ms_code rc;
        if (mode == 0) {
            /* the request thread appended its body, then the disk filled up: the commit's sync fails */
            ms_err e;
            ingest_ctx in = {.store = f->s, .writer = f->w};
            assert_int_equal(ingest_append(&in, &s->job, &e), MS_OK);
            store_inject_fault(f->s, ENOSPC);
            writer_submit(f->w, &s->job);
            rc = s->job.rc;
        } else {
            /* the append (ingest_store) fails: the writer never sees the batch */
            store_inject_fault(f->s, ENOSPC);
            rc = run(f->s, f->w, s);
        }
        store_inject_fault(f->s, 0);
        assert_int_equal(rc, MS_EFULL);
        assert_int_equal(s->job.err.code, MS_EFULL);
        record_version rv;
        assert_false(unit_record_at(f->s, "f1", INT64_MAX, &rv));
        assert_true(unit_record_at(f->s, "ok", INT64_MAX, &rv));
        assert_int_equal(rv.version, 1);
        assert_string_equal(body_of(f, &rv), t0);
        patient_id pid;
        assert_false(ident_lookup(f, "cy fault", 1970, 3, 3, &pid));
        patient_version pv;
        assert_true(unit_patient_at(f->s, &f->mem, &a->res[0].pid, INT64_MAX, &pv));
        assert_int_equal(pv.version, 1);
        assert_string_equal(state_value(f, &pv, "allergy"), "\"nuts\"");
        uint64_t cp, pc;
        counts(f, &cp, &pc);
        assert_int_equal(cp, cp0);
        assert_int_equal(pc, pc0);
    }
    /* room again: the same batch is stored as new (not a duplicate of the failed attempt) */
    submission *ok = submit(f, batch);
    expect_item(ok, 0, ITEM_CREATED, 1);
    expect_item(ok, 1, ITEM_UPDATED, 2);
    record_version rv;
    assert_true(unit_record_at(f->s, "f1", INT64_MAX, &rv));
    assert_string_equal(body_of(f, &rv), "{\"record_id\":\"f1\",\"name\":\"Cy Fault\",\"dob\":\"1970-03-03\",\"x\":1}");
    stop(f);
    start(f);
    assert_true(unit_record_at(f->s, "f1", INT64_MAX, &rv));
    assert_true(unit_record_at(f->s, "ok", INT64_MAX, &rv));
    assert_int_equal(rv.version, 2);
    assert_string_equal(body_of(f, &rv), "{\"record_id\":\"ok\"," ANA ",\"allergy\":\"changed\"}");
    uint64_t cp, pc;
    counts(f, &cp, &pc);
    assert_int_equal(cp, cp0 + 1);
    assert_int_equal(pc, pc0 + 1);
}

/* A disk that fills up in the middle of a body's write (SQLite's "short write": part of the bytes land,
 * then ENOSPC): the batch fails with MS_EFULL and nothing of it is stored. After a restart the log goes
 * on from its durable end, over the partial bytes, and every record reads back hash-checked. */
static void test_short_write(void **state)
{
    fixture *f = *state;
    const char *t0 = "{\"record_id\":\"ok\"," ANA ",\"allergy\":\"nuts\"}";
    submit(f, t0);
    uint64_t cp0, pc0;
    counts(f, &cp0, &pc0);
    buf text = {0}; /* one record of ~12 KB: three blocks, of which the disk takes one */
    buf_puts(&text, "{\"record_id\":\"big\",\"name\":\"Di Short\",\"dob\":\"1980-02-02\",\"notes\":\"");
    for (int i = 0; i < 12000; i++)
        buf_putc(&text, (char)('a' + i % 26));
    buf_puts(&text, "\"}");
    submission *s = prepare(&f->sc, f->s, text.data);
    f->subs[f->nsubs++] = s;
    store_inject_short_write(f->s, 4096);
    assert_int_equal(run(f->s, f->w, s), MS_EFULL);
    assert_int_equal(s->job.err.code, MS_EFULL);
    record_version rv;
    assert_false(unit_record_at(f->s, "big", INT64_MAX, &rv));
    patient_id pid;
    assert_false(ident_lookup(f, "di short", 1980, 2, 2, &pid));
    uint64_t cp, pc;
    counts(f, &cp, &pc);
    assert_int_equal(cp, cp0);
    assert_int_equal(pc, pc0);
    stop(f); /* as after a crash: nothing of the failed append is referenced */
    start(f);
    submission *again = submit(f, text.data);
    expect_item(again, 0, ITEM_CREATED, 1);
    assert_true(unit_record_at(f->s, "big", INT64_MAX, &rv));
    assert_string_equal(body_of(f, &rv), text.data);
    assert_true(unit_record_at(f->s, "ok", INT64_MAX, &rv));
    assert_string_equal(body_of(f, &rv), t0);
    stop(f);
    start(f);
    assert_true(unit_record_at(f->s, "big", INT64_MAX, &rv));
    assert_string_equal(body_of(f, &rv), text.data);
    buf_free(&text);
}

/* Several threads submit at once: every job is answered, one identity gets one id, every record is
 * stored once. */
enum { THREADS = 4, JOBS = 6, PER_JOB = 4 };

typedef struct {
    fixture *f;
    int t;
    submission *subs[JOBS];
    ms_code rc[JOBS];
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    for (int j = 0; j < JOBS; j++) {
        buf b = {0};
        for (int k = 0; k < PER_JOB; k++)
            buf_printf(
                &b, "{\"record_id\":\"t%d-j%d-k%d\",\"name\":\"Person %d %d %d\",\"dob\":\"1960-01-0%d\",\"v\":%d}\n",
                a->t, j, k, a->t, j, k, 1 + k, k);
        buf_printf(&b, "{\"record_id\":\"shared-t%d-j%d\",\"name\":\"Shared Person\",\"dob\":\"1955-05-05\"}\n", a->t,
                   j);
        a->subs[j] = prepare(&a->f->sc, a->f->s, b.data);
        buf_free(&b);
        a->rc[j] = run(a->f->s, a->f->w, a->subs[j]);
    }
    return NULL;
}

static void test_concurrent_submitters(void **state)
{
    fixture *f = *state;
    worker_arg args[THREADS];
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) {
        args[t] = (worker_arg){.f = f, .t = t};
        assert_int_equal(pthread_create(&th[t], NULL, worker, &args[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    /* hand the submissions to the fixture for cleanup before asserting */
    for (int t = 0; t < THREADS; t++)
        for (int j = 0; j < JOBS; j++)
            f->subs[f->nsubs++] = args[t].subs[j];
    patient_id shared;
    bool have_shared = false;
    int created = 0;
    for (int t = 0; t < THREADS; t++) {
        for (int j = 0; j < JOBS; j++) {
            submission *s = args[t].subs[j];
            assert_int_equal(args[t].rc[j], MS_OK);
            assert_int_equal(s->batch.n, PER_JOB + 1);
            for (uint32_t i = 0; i < s->batch.n; i++) {
                assert_int_equal(s->res[i].status, ITEM_CREATED);
                created++;
            }
            if (!have_shared) shared = s->res[PER_JOB].pid, have_shared = true;
            assert_true(same_pid(&shared, &s->res[PER_JOB].pid));
        }
    }
    assert_int_equal(created, THREADS * JOBS * (PER_JOB + 1));
    uint64_t cp, pc;
    counts(f, &cp, &pc);
    assert_int_equal(pc, THREADS * JOBS * PER_JOB + 1);
    assert_true(cp >= 1 && cp <= THREADS * JOBS); /* group commit may join jobs */
    /* every record is readable with its own body */
    for (int t = 0; t < THREADS; t++) {
        for (int j = 0; j < JOBS; j++) {
            char rid[48];
            snprintf(rid, sizeof rid, "t%d-j%d-k%d", t, j, PER_JOB - 1);
            record_version rv;
            assert_true(unit_record_at(f->s, rid, INT64_MAX, &rv));
            const char *body = body_of(f, &rv);
            assert_non_null(strstr(body, rid));
            assert_int_equal(body[0], '{');
            assert_int_equal(body[strlen(body) - 1], '}');
        }
    }
    patient_version pv;
    assert_true(unit_patient_at(f->s, &f->mem, &shared, INT64_MAX, &pv));
    assert_int_equal(pv.version, 1); /* the shared person's state never changed after creation */
}

/* Bodies of 400 KB fill 1 MiB segments: later batches go to new segments; all read back,
 * also after a restart. */
static void test_segment_rollover(void **state)
{
    fixture *f = *state;
    enum { N = 6 };
    size_t note = 400 * 1024;
    char *pad = malloc(note + 1);
    for (int i = 0; i < N; i++) {
        memset(pad, 'a' + i, note);
        pad[note] = 0;
        buf b = {0};
        buf_printf(&b, "{\"record_id\":\"big-%d\"," ANA ",\"note\":\"%s\"}\n", i, pad);
        submission *s = submit_mode(f, b.data, MS_OK);
        buf_free(&b);
        expect_item(s, 0, ITEM_CREATED, 1);
    }
    free(pad);
    uint64_t last_pos = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < N; i++) {
            char rid[16];
            snprintf(rid, sizeof rid, "big-%d", i);
            record_version rv;
            assert_true(unit_record_at(f->s, rid, INT64_MAX, &rv));
            const char *body = body_of(f, &rv);
            assert_int_equal(strlen(body), rv.body_len);
            assert_int_equal(body[200], 'a' + i);
            assert_true(rv.body_pos % SEG_SIZE + rv.body_len <= SEG_SIZE);
            if (pass == 0 && i == N - 1) last_pos = rv.body_pos;
        }
        stop(f);
        start(f);
    }
    assert_true(last_pos / SEG_SIZE >= 2);
    patient_version pv;
    submission *s = f->subs[f->nsubs - 1];
    assert_true(unit_patient_at(f->s, &f->mem, &s->res[0].pid, INT64_MAX, &pv));
    assert_int_equal(pv.version, N);
    assert_int_equal(strlen(state_value(f, &pv, "note")), 400 * 1024 + 2);
}

/* A record with a field key longer than 65535 bytes (keys have no limit of their own; a record may be
 * 1 MiB) must not poison its patient: either it is rejected, or it is stored and the patient's later
 * records still go through and the state reads back. */
static void test_long_field_key_does_not_poison_patient(void **state)
{
    fixture *f = *state;
    size_t kl = 70000;
    buf b = {0};
    buf_puts(&b, "{\"record_id\":\"long\"," ANA ",\"");
    for (size_t i = 0; i < kl; i++)
        buf_putc(&b, 'k');
    buf_puts(&b, "\":1}");
    submission *a = submit_mode(f, b.data, a_code_any);
    buf_free(&b);
    (void)a;
    submission *next = submit_mode(f, "{\"record_id\":\"after\"," ANA ",\"allergy\":\"nuts\"}", MS_OK);
    expect_item(next, 0, ITEM_CREATED, 1);
    patient_version pv;
    assert_true(unit_patient_at(f->s, &f->mem, &next->res[0].pid, INT64_MAX, &pv));
    assert_string_equal(state_value(f, &pv, "allergy"), "\"nuts\"");
}

/* ---- corrections: permission for new versions, moves, deletions, event time ---- */

#define LIAM "\"name\":\"Liam Ode\",\"dob\":\"1985-07-07\""

static void test_new_version_needs_update_permission(void **state)
{
    fixture *f = *state;
    submit(f, "{\"record_id\":\"u1\"," ANA ",\"allergy\":\"nuts\"}");
    submission *s = prepare(&f->sc, f->s,
                            "{\"record_id\":\"u1\"," LIAM ",\"allergy\":\"none\"}\n"  /* a new version: refused */
                            "{\"record_id\":\"u1\"," ANA ",\"allergy\":\"nuts\"}\n"   /* the same: a duplicate */
                            "{\"record_id\":\"u2\"," ANA ",\"allergy\":\"eggs\"}\n"); /* new: created */
    f->subs[f->nsubs++] = s;
    s->job.may_update = false;
    assert_int_equal(run(f->s, f->w, s), MS_OK);
    expect_item(s, 0, ITEM_REJECTED, 0);
    assert_non_null(s->res[0].error);
    assert_string_equal(s->res[0].error, "record u1 exists; a new version needs records:update");
    expect_item(s, 1, ITEM_DUPLICATE, 1);
    expect_item(s, 2, ITEM_CREATED, 1);
    record_version rv;
    assert_true(unit_record_at(f->s, "u1", INT64_MAX, &rv));
    assert_int_equal(rv.version, 1); /* not overwritten, not moved */
    patient_id liam;
    assert_false(ident_lookup(f, "Liam Ode", 1985, 7, 7, &liam));
}

/* The misfiled record: hiv_status filed under Aisha, re-sent with Liam's identity. */
static void test_moved_record_leaves_the_old_patient(void **state)
{
    fixture *f = *state;
    submission *a = submit(f, "{\"record_id\":\"lab-7\"," ANA ",\"ts\":\"2026-01-02T00:00:00Z\","
                              "\"hiv_status\":\"positive\",\"phone\":\"1\"}");
    submit(f, "{\"record_id\":\"adm-1\"," ANA ",\"ts\":\"2026-01-01T00:00:00Z\",\"phone\":\"0\",\"blood\":\"A\"}");
    patient_id aisha = a->res[0].pid;
    patient_version pv;
    assert_true(unit_patient_at(f->s, &f->mem, &aisha, INT64_MAX, &pv));
    assert_string_equal(state_value(f, &pv, "hiv_status"), "\"positive\"");
    assert_string_equal(state_value(f, &pv, "phone"), "\"1\"");
    uint32_t before = pv.version;
    int64_t t_before = ms_now_us();
    submission *m = submit(f, "{\"record_id\":\"lab-7\"," LIAM ",\"ts\":\"2026-01-02T00:00:00Z\","
                              "\"hiv_status\":\"positive\",\"phone\":\"1\"}");
    expect_item(m, 0, ITEM_UPDATED, 2);
    assert_false(same_pid(&m->res[0].pid, &aisha));
    /* Aisha: a new version recomputed from her remaining record */
    assert_true(unit_patient_at(f->s, &f->mem, &aisha, INT64_MAX, &pv));
    assert_int_equal(pv.version, before + 1);
    assert_null(state_value(f, &pv, "hiv_status"));
    assert_string_equal(state_value(f, &pv, "phone"), "\"0\"");
    assert_string_equal(state_value(f, &pv, "blood"), "\"A\"");
    assert_span_equal(pv.cause_record, pv.cause_record_len, "lab-7");
    /* history keeps what was true before */
    assert_true(unit_patient_at(f->s, &f->mem, &aisha, t_before, &pv));
    assert_string_equal(state_value(f, &pv, "hiv_status"), "\"positive\"");
    /* Liam has it */
    assert_true(unit_patient_at(f->s, &f->mem, &m->res[0].pid, INT64_MAX, &pv));
    assert_string_equal(state_value(f, &pv, "hiv_status"), "\"positive\"");
}

/* A new version of a record that drops a field: the field leaves the state (recomputed). The new version is
 * a record of 4 KiB or more, so its batch asks for d0's body before the writer recomputes (ingest.c): over
 * HTTP while it is sealed (ingest_store), or, as Kafka's and import's batches, once appended (ingest_append)
 * and before it is stored. */
static void dropping_a_field(fixture *f, bool appended_first)
{
    submission *a = submit(f, "{\"record_id\":\"d1\"," ANA ",\"ts\":\"2026-01-02T00:00:00Z\",\"allergy\":\"nuts\"}");
    submit(f, "{\"record_id\":\"d0\"," ANA ",\"ts\":\"2026-01-01T00:00:00Z\",\"allergy\":\"eggs\"}");
    uint64_t recomputes = atomic_load(&g_metrics.state_recomputes);
    uint64_t asked = atomic_load(&g_metrics.recompute_prefetches);
    char big[6000];
    snprintf(big, sizeof big,
             "{\"record_id\":\"d1\"," ANA ",\"ts\":\"2026-01-02T00:00:00Z\",\"weight\":70,\"note\":\"%4500s\"}", "");
    if (appended_first) {
        submission *s = prepare(&f->sc, f->s, big);
        f->subs[f->nsubs++] = s;
        ingest_ctx in = {.store = f->s, .writer = f->w};
        assert_int_equal(ingest_append(&in, &s->job, &s->job.err), MS_OK);
        assert_int_equal(atomic_load(&g_metrics.recompute_prefetches) - asked, 1); /* before the writer has it */
        assert_int_equal(run(f->s, f->w, s), MS_OK);
    } else {
        submit(f, big);
    }
    assert_int_equal(atomic_load(&g_metrics.state_recomputes) - recomputes, 1);
    assert_int_equal(atomic_load(&g_metrics.recompute_prefetches) - asked, 1); /* d0 once, not d1 itself */
    patient_version pv;
    assert_true(unit_patient_at(f->s, &f->mem, &a->res[0].pid, INT64_MAX, &pv));
    assert_string_equal(state_value(f, &pv, "allergy"), "\"eggs\""); /* d0's value returns */
    assert_string_equal(state_value(f, &pv, "weight"), "70");
}

static void test_new_version_dropping_a_field(void **state) { dropping_a_field(*state, false); }

static void test_appended_batch_asks_for_the_bodies_too(void **state) { dropping_a_field(*state, true); }

static ms_code delete_record(fixture *f, const char *rid, item_result *res)
{
    ingest_job job = {.delete_id = rid,
                      .delete_id_len = strlen(rid),
                      .source = "unit test",
                      .results = res,
                      .received_at = ms_mono_s()};
    writer_submit(f->w, &job);
    return job.rc;
}

static void test_delete_is_a_tombstone(void **state)
{
    fixture *f = *state;
    submission *a =
        submit(f, "{\"record_id\":\"x1\"," ANA ",\"ts\":\"2026-03-01T00:00:00Z\",\"favorite_color\":\"red\","
                  "\"type\":\"lab\",\"secret\":\"s\"}");
    submit(f, "{\"record_id\":\"x0\"," ANA ",\"ts\":\"2026-01-01T00:00:00Z\",\"favorite_color\":\"blue\"}");
    patient_id pid = a->res[0].pid;
    char pub[256];
    assert_true(public_patient(f, &pid, INT64_MAX, pub, sizeof pub));
    assert_string_equal(pub, "{\"favorite_color\":\"red\"}");
    int64_t before = ms_now_us();
    item_result res = {0};
    assert_int_equal(delete_record(f, "x1", &res), MS_OK);
    assert_int_equal(res.status, ITEM_DELETED);
    assert_int_equal(res.version, 2);
    assert_true(same_pid(&res.pid, &pid));
    record_version rv;
    assert_true(unit_record_at(f->s, "x1", INT64_MAX, &rv));
    assert_true(rv.deleted);
    assert_int_equal(rv.version, 2);
    assert_true(unit_record_at(f->s, "x1", before, &rv)); /* the old version, as of before the deletion */
    assert_false(rv.deleted);
    /* its values left the patient's state and the public copies */
    patient_version pv;
    assert_true(unit_patient_at(f->s, &f->mem, &pid, INT64_MAX, &pv));
    assert_null(state_value(f, &pv, "secret"));
    assert_string_equal(state_value(f, &pv, "favorite_color"), "\"blue\"");
    assert_true(public_patient(f, &pid, INT64_MAX, pub, sizeof pub));
    assert_string_equal(pub, "{\"favorite_color\":\"blue\"}");
    store_read *r = unit_rbegin(f->s);
    public_record pr;
    bool found = false;
    ms_err e;
    assert_int_equal(store_public_record_at(r, "x1", 2, INT64_MAX, &pr, &found, &e), MS_OK);
    store_read_end(r);
    assert_true(found && pr.deleted);
    /* deleting again, or a record that never existed: not found, nothing written */
    uint64_t pos0, pos1, n;
    counts(f, &pos0, &n);
    assert_int_equal(delete_record(f, "x1", &res), MS_OK);
    assert_int_equal(res.status, ITEM_REJECTED);
    assert_int_equal(delete_record(f, "nope", &res), MS_OK);
    assert_int_equal(res.status, ITEM_REJECTED);
    counts(f, &pos1, &n);
    assert_true(pos1 >= pos0); /* audit entries only */
    /* sent again afterwards: a new version (3) of the record */
    submission *again = submit(f, "{\"record_id\":\"x1\"," ANA ",\"ts\":\"2026-03-01T00:00:00Z\",\"secret\":\"s\"}");
    expect_item(again, 0, ITEM_UPDATED, 3);
}

/* writer.h: audit entries with no job to ride with wait WRITER_AUDIT_WINDOW_MS for one. Entries queued
 * together are committed together (one commit, not one each), and without any job they are still
 * committed when the window ends; a job submitted within the window takes the waiting entry along in
 * its own commit. (The "together" assertions hold when this thread was not descheduled for the window's
 * length between the calls: timed, and skipped with a note otherwise.) */
static void test_audit_entries_share_a_commit(void **state)
{
    fixture *f = *state;
    audit_event ev = {.time_us = ms_now_us(),
                      .user = "unit",
                      .role = "admin",
                      .action = "patients:read",
                      .resource = "/v1/patients/x",
                      .outcome = "ok",
                      .client = "test"};
    uint64_t cp0, cp1, cp2, n;
    counts(f, &cp0, &n);
    int audited = audit_entries(f);
    double t0 = ms_mono_s();
    for (int i = 0; i < 5; i++)
        writer_audit(f->w, &ev);
    bool together = ms_mono_s() - t0 < 0.010;
    for (int i = 0; i < 500 && audit_entries(f) < audited + 5; i++) /* no job comes: the window ends */
        usleep(10000);
    assert_int_equal(audit_entries(f), audited + 5);
    counts(f, &cp1, &n);
    if (together)
        assert_int_equal(cp1, cp0 + 1);
    else
        print_message("five audit entries took >= 10 ms to queue: one-commit check skipped\n");
    /* a job within the window: one commit for both */
    submission *s = prepare(&f->sc, f->s, "{\"record_id\":\"a1\"," ANA "}");
    f->subs[f->nsubs++] = s;
    t0 = ms_mono_s();
    writer_audit(f->w, &ev);
    assert_int_equal(run(f->s, f->w, s), MS_OK);
    bool within = ms_mono_s() - t0 < 0.015;
    expect_item(s, 0, ITEM_CREATED, 1);
    assert_int_equal(audit_entries(f), audited + 5 + 2); /* the read's entry and the batch's */
    counts(f, &cp2, &n);
    if (within)
        assert_int_equal(cp2, cp1 + 1);
    else
        print_message("the batch took >= 15 ms: ride-along check skipped\n");
}

/* The children index (store_children): a version with a parent is indexed under it in its own commit;
 * a child before its parent; a move to another parent and a deletion leave the list from their commit
 * on, as-of reads before still see them; the parent is kept in the version (and its tombstone), and
 * store_record_before gives the version each one replaced. */
typedef struct {
    store_read *r;
    int64_t as_of;
    const char *parent;
    char ids[16][16];
    int n;
} kids;

static bool on_child(void *ctx, int64_t ts, const char *rid, size_t len, const void *key, size_t key_len)
{
    (void)key, (void)key_len;
    kids *k = ctx;
    record_version rv;
    bool found;
    ms_err e;
    assert_int_equal(store_record_at(k->r, rid, len, k->as_of, &rv, &found, &e), MS_OK);
    if (!found || rv.deleted || rv.ts_us != ts || strcmp(rv.parent_id, k->parent) != 0) return true;
    snprintf(k->ids[k->n++], 16, "%.*s", (int)len, rid);
    return k->n < 16;
}

static int children_of(fixture *f, const char *parent, int64_t as_of, kids *k)
{
    memset(k, 0, sizeof *k);
    k->r = unit_rbegin(f->s);
    k->as_of = as_of;
    k->parent = parent;
    ms_err e;
    assert_int_equal(store_children(k->r, parent, strlen(parent), INT64_MIN, INT64_MAX, NULL, 0, on_child, k, &e),
                     MS_OK);
    store_read_end(k->r);
    return k->n;
}

static void test_children_index(void **state)
{
    fixture *f = *state;
    kids k;
    submit(f, "{\"record_id\":\"lab1\"," ANA ",\"ts\":\"2026-03-02T00:00:00Z\",\"parent_id\":\"visit1\"}");
    submit(f, "{\"record_id\":\"lab0\"," ANA ",\"ts\":\"2026-03-01T00:00:00Z\",\"parent_id\":\"visit1\"}");
    assert_int_equal(children_of(f, "visit1", INT64_MAX, &k), 2); /* before the parent exists */
    assert_string_equal(k.ids[0], "lab0");                        /* event-time order */
    submit(f, "{\"record_id\":\"visit1\"," ANA ",\"ts\":\"2026-02-28T00:00:00Z\",\"type\":\"visit\"}");
    int64_t before_move = ms_now_us();
    submit(f, "{\"record_id\":\"lab1\"," ANA ",\"ts\":\"2026-03-02T00:00:00Z\",\"parent_id\":\"visit2\"}");
    assert_int_equal(children_of(f, "visit1", INT64_MAX, &k), 1);
    assert_string_equal(k.ids[0], "lab0");
    assert_int_equal(children_of(f, "visit2", INT64_MAX, &k), 1);
    assert_int_equal(children_of(f, "visit1", before_move, &k), 2);
    int64_t before_delete = ms_now_us();
    item_result res = {0};
    assert_int_equal(delete_record(f, "lab0", &res), MS_OK);
    assert_int_equal(children_of(f, "visit1", INT64_MAX, &k), 0);
    assert_int_equal(children_of(f, "visit1", before_delete, &k), 1);
    /* null, or no parent field: none; a parent that is not a record id: rejected, naming the field */
    submission *s = submit(f, "{\"record_id\":\"lab2\"," ANA ",\"parent_id\":null}\n{\"record_id\":\"lab3\"," ANA
                              ",\"parent_id\":7}\n{\"record_id\":\"lab4\"," ANA ",\"parent_id\":\"a/b\"}");
    expect_item(s, 0, ITEM_CREATED, 1);
    expect_item(s, 1, ITEM_REJECTED, 0);
    assert_true(strstr(s->batch.records[1].error, "parent_id") != NULL);
    expect_item(s, 2, ITEM_REJECTED, 0);
    /* the parent in the versions, the tombstone's too, and the version each replaced */
    record_version rv, before;
    assert_true(unit_record_at(f->s, "lab0", INT64_MAX, &rv));
    assert_true(rv.deleted);
    assert_string_equal(rv.parent_id, "visit1");
    store_read *r = unit_rbegin(f->s);
    bool found;
    ms_err e;
    assert_int_equal(store_record_before(r, "lab0", 4, rv.valid_from, rv.version, &before, &found, &e), MS_OK);
    assert_true(found && !before.deleted && before.version == 1);
    assert_int_equal(store_record_before(r, "lab0", 4, before.valid_from, 1, &before, &found, &e), MS_OK);
    assert_false(found);
    store_read_end(r);
    assert_true(unit_record_at(f->s, "lab2", INT64_MAX, &rv));
    assert_int_equal(rv.parent_id_len, 0);
}

/* A recompute reads the patient's newest records until every field of its state is decided, not its whole
 * history (record_sources.h): 200 records holding the same fields, the newest replaced by a version about an
 * older time, read 1 body (the next newest, which decides them all); a field that only the replaced version
 * held keeps the walk going to the oldest record (199). The state is the merge of all in both. */
static void test_recompute_reads_the_newest_records(void **state)
{
    fixture *f = *state;
    enum { N = 200 };
    buf text = {0};
    for (int i = 0; i < N; i++)
        buf_printf(&text, "{\"record_id\":\"v%d\"," ANA ",\"ts\":\"2026-01-01T%02d:%02d:00Z\",\"pulse\":%d}\n", i,
                   i / 60, i % 60, 60 + i % 50);
    submit(f, text.data);
    buf_free(&text);
    uint64_t read0 = atomic_load(&g_metrics.state_recompute_records);
    uint64_t recomputes = atomic_load(&g_metrics.state_recomputes);
    /* v199 (the newest, pulse 109) now about midnight: v198 (pulse 108) decides pulse */
    submission *s = submit(f, "{\"record_id\":\"v199\"," ANA ",\"ts\":\"2026-01-01T00:00:30Z\",\"pulse\":120}");
    expect_item(s, 0, ITEM_UPDATED, 2);
    assert_int_equal(atomic_load(&g_metrics.state_recomputes) - recomputes, 1);
    assert_int_equal(atomic_load(&g_metrics.state_recompute_records) - read0, 1);
    patient_version pv;
    assert_true(unit_patient_at(f->s, &f->mem, &s->res[0].pid, INT64_MAX, &pv));
    assert_string_equal(state_value(f, &pv, "pulse"), "108");
    /* v198 gains a field no other record holds, then gives it up: the walk reads every other record */
    submit(f, "{\"record_id\":\"v198\"," ANA ",\"ts\":\"2026-01-01T03:18:00Z\",\"pulse\":108,\"sepsis\":true}");
    read0 = atomic_load(&g_metrics.state_recompute_records);
    s = submit(f, "{\"record_id\":\"v198\"," ANA ",\"ts\":\"2026-01-01T03:18:00Z\",\"pulse\":108}");
    expect_item(s, 0, ITEM_UPDATED, 3);
    assert_int_equal(atomic_load(&g_metrics.state_recompute_records) - read0, N - 1);
    assert_true(unit_patient_at(f->s, &f->mem, &s->res[0].pid, INT64_MAX, &pv));
    assert_null(state_value(f, &pv, "sepsis"));
    assert_string_equal(state_value(f, &pv, "pulse"), "108");
}

/* The fields of a query_patient answer: "fN":V for each field of the model, or absent. */
static void expect_fields(const char *json, const int *want, int nfield, const char *what)
{
    for (int k = 0; k < nfield; k++) {
        char key[16], pair[32];
        snprintf(key, sizeof key, "\"f%d\":", k);
        snprintf(pair, sizeof pair, "\"f%d\":%d", k, want[k]);
        const char *at = strstr(json, want[k] < 0 ? key : pair);
        bool ends = at && (at[strlen(pair)] == ',' || at[strlen(pair)] == '}');
        if (want[k] < 0 && at) fail_msg("%s: f%d present, expected absent in %s", what, k, json);
        if (want[k] >= 0 && !ends) fail_msg("%s: f%d is not %d in %s", what, k, want[k], json);
    }
}

/* Property: records of one patient sent in random arrival order, with new versions, moves to another
 * patient and deletions mixed in, leave a current state equal to the merge by event time of the
 * records that remain (the model), both for the patient and for the one records moved to; and a read of
 * the state up to an event time (event_at) equal to the merge of those records up to it. Event times often
 * tie (then the later commit wins: one record a commit here), and the patients hold up to 24 records, so
 * that the merges that stop at the newest records that decide every field (record_sources.h) stop early, at
 * a tie, or read everything. */
static void test_event_time_state_property(void **state)
{
    fixture *f = *state;
    unit_rng rng = {77};
    enum { NREC = 24, NFIELD = 4, ROUNDS = 12, STEPS = 64, READS = 6 };
    query_ctx q = {.store = f->s, .schema = &f->sc};
    for (int round = 0; round < ROUNDS; round++) {
        /* the model: each record id's live version (owner 0 = Ana, 1 = Liam, -1 = gone), event time (seconds), the
         * step that committed it, and fields */
        struct {
            int owner;
            int ts, step;
            int val[NFIELD]; /* -1: absent */
        } model[NREC];
        for (int i = 0; i < NREC; i++)
            model[i].owner = -1;
        patient_id who[2];
        bool have_who[2] = {false, false};
        for (int step = 0; step < STEPS; step++) {
            int i = (int)unit_below(&rng, NREC);
            char rid[32];
            snprintf(rid, sizeof rid, "p%d-r%d", round, i);
            if (model[i].owner >= 0 && unit_below(&rng, 6) == 0) {
                item_result res = {0};
                assert_int_equal(delete_record(f, rid, &res), MS_OK);
                assert_int_equal(res.status, ITEM_DELETED);
                model[i].owner = -1;
                continue;
            }
            int owner = unit_below(&rng, 5) == 0 ? 1 : 0;
            int ts = unit_below(&rng, 3) == 0 ? (int)unit_below(&rng, 4) : (int)unit_below(&rng, 600);
            char text[512];
            int len =
                snprintf(text, sizeof text,
                         "{\"record_id\":\"%s\",\"name\":\"%s Round%d\",\"dob\":\"%s\","
                         "\"ts\":\"2020-01-01T00:%02d:%02dZ\"",
                         rid, owner ? "Liam" : "Ana", round, owner ? "1985-07-07" : "1990-01-01", ts / 60, ts % 60);
            model[i].owner = owner;
            model[i].ts = ts;
            model[i].step = step;
            for (int k = 0; k < NFIELD; k++) {
                model[i].val[k] = unit_below(&rng, 3) ? (int)unit_below(&rng, 4) : -1;
                if (model[i].val[k] >= 0)
                    len += snprintf(text + len, sizeof text - (size_t)len, ",\"f%d\":%d", k, model[i].val[k]);
            }
            snprintf(text + len, sizeof text - (size_t)len, "}");
            submission *sub = prepare(&f->sc, f->s, text);
            assert_int_equal(run(f->s, f->w, sub), MS_OK);
            if (sub->res[0].status == ITEM_REJECTED) fail_msg("%s rejected: %s", text, sub->batch.records[0].error);
            who[owner] = sub->res[0].pid;
            have_who[owner] = true;
            submission_free(sub);
        }
        for (int o = 0; o < 2; o++) {
            if (!have_who[o]) continue;
            for (int read = 0; read <= READS; read++) {
                /* read 0: the state now; then event_at reads at random event times, some on a tie */
                int upto = read == 0 ? INT32_MAX : read % 2 ? (int)unit_below(&rng, 4) : (int)unit_below(&rng, 600);
                int want[NFIELD];
                for (int k = 0; k < NFIELD; k++) {
                    int best = -1, best_step = -1;
                    want[k] = -1;
                    for (int i = 0; i < NREC; i++) {
                        if (model[i].owner != o || model[i].val[k] < 0 || model[i].ts > upto) continue;
                        if (model[i].ts > best || (model[i].ts == best && model[i].step > best_step))
                            best = model[i].ts, best_step = model[i].step, want[k] = model[i].val[k];
                    }
                }
                char what[64];
                snprintf(what, sizeof what, "round %d patient %d event_at %d", round, o, upto);
                if (read == 0) {
                    patient_version pv;
                    assert_true(unit_patient_at(f->s, &f->mem, &who[o], INT64_MAX, &pv));
                    for (int k = 0; k < NFIELD; k++) {
                        char key[16], wanted[16];
                        snprintf(key, sizeof key, "f%d", k);
                        snprintf(wanted, sizeof wanted, "%d", want[k]);
                        const char *got = state_value(f, &pv, key);
                        if (want[k] < 0 && got) fail_msg("%s: %s = %s, expected absent", what, key, got);
                        if (want[k] >= 0 && (!got || strcmp(got, wanted) != 0))
                            fail_msg("%s: %s = %s, expected %s", what, key, got ? got : "(absent)", wanted);
                    }
                    continue;
                }
                store_read *r;
                ms_err e = {0};
                buf out = {0};
                assert_int_equal(store_read_begin(f->s, &r, &e), MS_OK);
                int64_t at = (days_from_civil(2020, 1, 1) * 86400 + upto) * 1000000;
                ms_code rc = query_patient(&q, r, &who[o], INT64_MAX, at, &out, &e);
                store_read_end(r);
                if (rc != MS_OK) fail_msg("%s: %s", what, e.msg);
                buf_putc(&out, 0);
                expect_fields(out.data, want, NFIELD, what);
                buf_free(&out);
            }
        }
        arena_free(&f->mem);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_new_version_needs_update_permission, setup, teardown),
        cmocka_unit_test_setup_teardown(test_moved_record_leaves_the_old_patient, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_version_dropping_a_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_appended_batch_asks_for_the_bodies_too, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_is_a_tombstone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_children_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_entries_share_a_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rejected_batch_commits_positions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_matches_any_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_time_state_property, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recompute_reads_the_newest_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exact_versions_for_sinks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_identity_same_patient, setup, teardown),
        cmocka_unit_test_setup_teardown(test_versions_and_as_of, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_public_copies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_derived_ids_and_retries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_injection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_submitters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_segment_rollover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_field_key_does_not_poison_patient, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
