/*
 * test_schema_versions.c - schema versions (issue 15, item 4): the canonical text of a schema
 * (pipeline/schema_canon.h: reformatting is the same text, a real change another, the default's fixed text
 * parses to the default schema), the store's versions (store_schema_register: first, same, changed,
 * resumed, abandoned, numbers never reused), and a re-projection through the store's own steps: reads
 * stay under the version in force until the last step switches it, every record and patient version gets
 * its copy under the target (a changed schema never leaves an old copy behind), copies written meanwhile
 * under both versions survive, a step done again is harmless, and the clean-up deletes the old copies.
 * The writer's and the server's side are in tests/e2e/test_schema_versions.py. An empty object ("{}", the
 * default schema's file, or "public": {}) is canonical as it is, with no qsort of NULL members (UBSan,
 * found by fuzz/fuzz_files.c).
 */
#include "unit.h"
#include "unit_store.h"

#include "pipeline/schema_canon.h"
#include "store/store.h"

/* ---- canonical text ---- */

static char *canon(const char *text)
{
    buf out = {0};
    ms_err e = {0};
    if (schema_canonical(text, strlen(text), &out, &e) != MS_OK) fail_msg("canonical: %s", e.msg);
    return out.data; /* NUL-terminated by buf */
}

static void test_canonical_ignores_layout(void **state)
{
    (void)state;
    char *a =
        canon("{\"identity\":{\"name\":\"name\",\"dob\":\"dob\"},\"public\":{\"type\":\"copy\",\"ts\":\"year\"}}");
    char *b = canon("\xEF\xBB\xBF\n  { \"public\" : { \"ts\":\"y\\u0065ar\", \"type\" : \"copy\" },\r\n"
                    "\t\"identity\": {\"dob\": \"dob\", \"name\": \"name\"} }\n");
    assert_string_equal(a, b);
    assert_string_equal(a, "{\"identity\":{\"dob\":\"dob\",\"name\":\"name\"},\"public\":{\"ts\":\"year\",\"type\":"
                           "\"copy\"}}");
    /* a real change: another field, another transform, a number written otherwise stays as written */
    char *c =
        canon("{\"identity\":{\"name\":\"name\",\"dob\":\"dob\"},\"public\":{\"type\":\"copy\",\"ts\":\"copy\"}}");
    char *d =
        canon("{\"public\":{\"type\":\"copy\",\"ts\":\"year\",\"color\":\"copy\"},\"identity\":{\"name\":\"name\","
              "\"dob\":\"dob\"}}");
    assert_string_not_equal(a, c);
    assert_string_not_equal(a, d);
    char *n = canon("{\"x\":[1, 2.50, true, null, {\"b\":1,\"a\":[]}]}");
    assert_string_equal(n, "{\"x\":[1,2.50,true,null,{\"a\":[],\"b\":1}]}");
    free(a);
    free(b);
    free(c);
    free(d);
    free(n);
}

/* Empty objects have no members to sort: qsort(NULL, 0) was UB (glibc declares its base nonnull). */
static void test_canonical_empty_objects(void **state)
{
    (void)state;
    char *a = canon(" {} "), *b = canon("{\"public\":{},\"x\":[{}, {\"b\":{}}]}");
    assert_string_equal(a, "{}");
    assert_string_equal(b, "{\"public\":{},\"x\":[{},{\"b\":{}}]}");
    free(a);
    free(b);
}

static void test_canonical_errors(void **state)
{
    (void)state;
    const char *bad[] = {"", "   ", "[1]", "{\"a\":", "{\"a\":1} x", "\"text\"", "{\"a\":tru}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        buf out = {0};
        ms_err e = {0};
        assert_int_equal(schema_canonical(bad[i], strlen(bad[i]), &out, &e), MS_EINVAL);
        assert_true(strncmp(e.msg, "schema: ", 8) == 0);
        buf_free(&out);
    }
}

static void test_default_canonical_is_the_default_schema(void **state)
{
    (void)state;
    schema d, p;
    ms_err e = {0};
    schema_default(&d);
    assert_int_equal(schema_parse(&p, SCHEMA_DEFAULT_CANONICAL, strlen(SCHEMA_DEFAULT_CANONICAL), &e), MS_OK);
    assert_string_equal(p.name_field, d.name_field);
    assert_string_equal(p.dob_field, d.dob_field);
    assert_string_equal(p.record_id_field, d.record_id_field);
    assert_string_equal(p.type_field, d.type_field);
    assert_string_equal(p.ts_field, d.ts_field);
    assert_string_equal(p.parent_field, d.parent_field);
    assert_string_equal(p.default_type, d.default_type);
    assert_int_equal(p.npub, d.npub);
    for (int i = 0; i < d.npub; i++) {
        const schema_public_field *f = schema_public(&p, d.pub[i].field, strlen(d.pub[i].field));
        assert_non_null(f);
        assert_int_equal(f->transform, d.pub[i].transform);
    }
    /* and it is canonical: canonicalizing it again changes nothing */
    char *again = canon(SCHEMA_DEFAULT_CANONICAL);
    assert_string_equal(again, SCHEMA_DEFAULT_CANONICAL);
    free(again);
    schema_free(&d);
    schema_free(&p);
}

/* ---- the store's versions ---- */

static store_schema_status reg(store *s, const char *text)
{
    store_schema_status st;
    ms_err e = {0};
    if (store_schema_register(s, text, strlen(text), &st, &e) != MS_OK) fail_msg("register: %s", e.msg);
    return st;
}

static void test_register_versions(void **state)
{
    (void)state;
    unit_store u;
    assert_true(unit_store_open(&u, NULL));
    store_schema_status st = reg(u.s, "{\"a\":1}");
    assert_int_equal(st.in_force, 1);
    assert_int_equal(st.target, 0);
    st = reg(u.s, "{\"a\":1}"); /* the same text: nothing */
    assert_int_equal(st.in_force, 1);
    assert_int_equal(st.target, 0);
    st = reg(u.s, "{\"a\":2}"); /* a change: version 2, re-projection due */
    assert_int_equal(st.in_force, 1);
    assert_int_equal(st.target, 2);
    st = reg(u.s, "{\"a\":2}"); /* the target again: resumes */
    assert_int_equal(st.target, 2);
    st = reg(u.s, "{\"a\":1}"); /* back to the version in force: abandoned */
    assert_int_equal(st.in_force, 1);
    assert_int_equal(st.target, 0);
    st = reg(u.s, "{\"a\":3}"); /* a new one never reuses the abandoned number */
    assert_int_equal(st.target, 3);
    store_read *r;
    ms_err e = {0};
    assert_int_equal(store_read_begin(u.s, &r, &e), MS_OK);
    buf t = {0};
    bool found;
    assert_int_equal(store_schema_text(r, 1, &t, &found, &e), MS_OK);
    assert_true(found);
    assert_true(t.len == 7 && memcmp(t.data, "{\"a\":1}", 7) == 0);
    assert_int_equal(store_schema_text(r, 3, &t, &found, &e), MS_OK);
    assert_true(found && t.len == 7 && memcmp(t.data, "{\"a\":3}", 7) == 0);
    assert_int_equal(store_schema_text(r, 9, &t, &found, &e), MS_OK);
    assert_false(found);
    assert_int_equal(store_read_schema_version(r), 1);
    buf_free(&t);
    store_read_end(r);
    /* kept across a reopen */
    store_close(u.s);
    assert_int_equal(store_open(&u.s, u.dir, NULL, &e), MS_OK);
    st = reg(u.s, "{\"a\":3}");
    assert_int_equal(st.in_force, 1);
    assert_int_equal(st.target, 3);
    unit_store_close(&u);
}

/* ---- a re-projection through the store's steps ---- */

#define NREC 9

/* The "schema" of the fake projection: the target's copies say which version they are. */
static ms_code fake_record(void *ctx, const record_version *rv, const char *ident, size_t ident_len, buf *fields,
                           ms_err *e)
{
    (void)ctx;
    (void)e;
    /* the identity entry's key is passed (put() creates each patient with its first record id as key) */
    assert_true(ident_len >= 5 && memcmp(ident, "rec-", 4) == 0);
    buf_printf(fields, "{\"v2\":\"%.*s\"}", (int)rv->record_id_len, rv->record_id);
    return MS_OK;
}

static ms_code fake_patient(void *ctx, const patient_version *pv, const char *ident, size_t ident_len, buf *fields,
                            ms_err *e)
{
    (void)e;
    assert_true(ident_len >= 5 && memcmp(ident, "rec-", 4) == 0);
    ++*(int *)ctx;
    buf_printf(fields, "{\"v2\":%u}", pv->version);
    return MS_OK;
}

/* A record version (no body: the fake projection needs none) with its v1 copy, and its patient's next
 * version with a v1 copy; during a re-projection also the target's copies, as the writer does. */
static void put(store *s, const char *rid, patient_ref *who, uint32_t pver, bool create)
{
    store_write *w;
    ms_err e = {0};
    assert_int_equal(store_write_begin(s, &w, &e), MS_OK);
    char ident[64]; /* an identity key's shape: name NUL YYYY-MM-DD */
    int il = snprintf(ident, sizeof ident, "%s person", rid);
    memcpy(ident + il + 1, "1970-01-01", 10);
    if (create) {
        unsigned char dk[32];
        bool bound;
        assert_int_equal(store_data_key(s, ident, (size_t)il + 11, dk, &e), MS_OK);
        assert_int_equal(store_patient_create(w, ident, (size_t)il + 11, dk, who, &bound, &e), MS_OK);
        assert_true(bound);
    }
    record_version rv = {0};
    rv.record_id_len = (uint32_t)strlen(rid);
    memcpy(rv.record_id, rid, rv.record_id_len);
    rv.version = 1;
    rv.valid_from = store_write_time(w);
    rv.valid_to = -1;
    rv.pid = who->id;
    rv.patient_number = who->number;
    rv.ts_us = 1700000000000000;
    memcpy(rv.type, "lab", 3);
    rv.type_len = 3;
    uint32_t in_force, target;
    store_write_schema(w, &in_force, &target);
    assert_int_equal(store_record_put(w, &rv, 2023, "{\"v1\":1}", 8, &e), MS_OK);
    if (target) assert_int_equal(store_public_record_put(w, target, &rv, 2023, "{\"live\":2}", 10, &e), MS_OK);
    patient_version pv = {.pid = who->id,
                          .number = who->number,
                          .version = pver,
                          .valid_from = store_write_time(w),
                          .valid_to = -1,
                          .cause_record = rid,
                          .cause_record_len = rv.record_id_len,
                          .source = "unit",
                          .source_len = 4};
    assert_int_equal(store_patient_put(w, &pv, &e), MS_OK);
    assert_int_equal(store_public_patient_put(w, in_force, who, pver, "{\"p1\":1}", 8, &e), MS_OK);
    if (target) assert_int_equal(store_public_patient_put(w, target, who, pver, "{\"live\":2}", 10, &e), MS_OK);
    uint64_t pos;
    assert_int_equal(store_write_commit(w, &pos, &e), MS_OK);
}

/* The public copy of rid and of who's patient as a reader sees them now, and the version in force. */
static uint32_t read_copies(store *s, const char *rid, const patient_ref *who, buf *rec, buf *pat)
{
    store_read *r;
    ms_err e = {0};
    assert_int_equal(store_read_begin(s, &r, &e), MS_OK);
    public_record pr;
    bool found;
    assert_int_equal(store_public_record_at(r, rid, strlen(rid), INT64_MAX, &pr, &found, &e), MS_OK);
    assert_true(found);
    rec->len = 0;
    buf_put(rec, pr.fields, pr.fields_len);
    buf_putc(rec, 0);
    assert_int_equal(store_public_patient_at(r, &who->id, INT64_MAX, pat, &found, &e), MS_OK);
    assert_true(found);
    buf_putc(pat, 0);
    uint32_t v = store_read_schema_version(r);
    store_read_end(r);
    return v;
}

/* Everything a reader can see of a patient: each version (valid_from, version, cause, fields) and its public
 * copy under the version in force as of the version's valid_from; one line per version. */
static void patient_view(store *s, const patient_ref *who, buf *out)
{
    store_read *r;
    ms_err e = {0};
    arena mem = {0};
    patient_version *h;
    uint32_t n;
    out->len = 0;
    assert_int_equal(store_read_begin(s, &r, &e), MS_OK);
    assert_int_equal(store_patient_history(r, &who->id, &h, &n, &mem, &e), MS_OK);
    assert_true(n > 0);
    buf pub = {0};
    for (uint32_t i = 0; i < n; i++) {
        bool found;
        assert_int_equal(store_public_patient_at(r, &who->id, h[i].valid_from, &pub, &found, &e), MS_OK);
        buf_printf(out, "%lld %u %.*s %u [%.*s]\n", (long long)h[i].valid_from, h[i].version,
                   (int)h[i].cause_record_len, h[i].cause_record, h[i].nfields, found ? (int)pub.len : 0,
                   found ? pub.data : "");
        pub.len = 0;
    }
    buf_free(&pub);
    arena_free(&mem);
    store_read_end(r);
}

/* Compaction steps of at most max entries to the end; their sums. */
static store_compact_stats compact_all(store *s, uint32_t max)
{
    store_compact_stats sum = {0}, st;
    bool finished = false;
    ms_err e = {0};
    for (int steps = 0; !finished; steps++) {
        assert_true(steps < 10000);
        assert_int_equal(store_plog_compact_step(s, max, &finished, &st, &e), MS_OK);
        assert_true(st.looked <= max);
        sum.looked += st.looked, sum.moved += st.moved, sum.dropped += st.dropped;
        sum.stubbed += st.stubbed, sum.bytes += st.bytes;
    }
    return sum;
}

static void test_reprojection_steps(void **state)
{
    (void)state;
    unit_store u;
    /* heads checkpointed at every commit: the log's floor follows the writes, so the compaction moves */
    store_options opt = {.plog_checkpoint_lag = 1};
    assert_true(unit_store_open(&u, &opt));
    reg(u.s, "{\"s\":1}");
    patient_ref who[3];
    char rid[16];
    for (int i = 0; i < NREC; i++) {
        snprintf(rid, sizeof rid, "rec-%d", i);
        put(u.s, rid, &who[i % 3], 1 + (uint32_t)(i / 3), i < 3);
    }
    store_schema_status st = reg(u.s, "{\"s\":2}");
    assert_int_equal(st.target, 2);
    int patients_done = 0;
    store_reproject_fns fns = {fake_record, fake_patient, &patients_done};
    buf rec = {0}, pat = {0};
    bool finished = false;
    ms_err e = {0};
    int steps = 0;
    /* two steps, then a record written meanwhile (copies under both versions), then the rest */
    for (; steps < 2; steps++) {
        assert_int_equal(store_reproject_step(u.s, 2, &fns, 2, &finished, &st, &e), MS_OK);
        assert_false(finished);
        assert_int_equal(read_copies(u.s, "rec-0", &who[0], &rec, &pat), 1);
        assert_string_equal(rec.data, "{\"v1\":1}");
        assert_string_equal(pat.data, "{\"p1\":1}");
        assert_true(st.done > 0 && st.done < st.total);
    }
    put(u.s, "rec-new", &who[0], 1 + NREC / 3, false);
    /* a step done again (a crash before its commit) is harmless: restart from a stored cursor */
    while (!finished) {
        assert_int_equal(store_reproject_step(u.s, 2, &fns, 2, &finished, &st, &e), MS_OK);
        assert_true(++steps < 100);
        if (!finished) assert_int_equal(read_copies(u.s, "rec-0", &who[0], &rec, &pat), 1);
    }
    assert_int_equal(st.in_force, 2);
    assert_int_equal(st.target, 0);
    assert_true(patients_done >= NREC); /* every patient version (3 patients x 3 versions) */
    /* every record under the new version: the re-projected ones and the one written meanwhile */
    for (int i = 0; i < NREC; i++) {
        snprintf(rid, sizeof rid, "rec-%d", i);
        assert_int_equal(read_copies(u.s, rid, &who[i % 3], &rec, &pat), 2);
        char want[64];
        snprintf(want, sizeof want, "{\"v2\":\"%s\"}", rid);
        assert_string_equal(rec.data, want);
    }
    assert_int_equal(read_copies(u.s, "rec-new", &who[0], &rec, &pat), 2);
    assert_true(strstr(rec.data, "v2") || strstr(rec.data, "live")); /* under version 2 either way */
    assert_string_equal(pat.data, strstr(pat.data, "live") ? "{\"live\":2}" : "{\"v2\":4}");
    assert_int_equal(read_copies(u.s, "rec-4", &who[1], &rec, &pat), 2);
    assert_string_equal(pat.data, "{\"v2\":3}");
    /* the clean-up: the version 1 copies go (NREC + 1 records), then nothing; its patient copies were written
     * while it was in force, into the patient log, which keeps them (unread) until compaction */
    bool clean;
    uint64_t deleted, total = 0;
    do {
        assert_int_equal(store_schema_drop_step(u.s, 4, &clean, &deleted, &e), MS_OK);
        total += deleted;
    } while (!clean);
    assert_int_equal(total, NREC + 1);
    assert_int_equal(store_schema_drop_step(u.s, 4, &clean, &deleted, &e), MS_OK);
    assert_true(clean);
    assert_int_equal(deleted, 0);
    assert_int_equal(read_copies(u.s, "rec-1", &who[1], &rec, &pat), 2);
    /* the log's compaction, in windows of 5 entries: every entry (all before the floor) moves into the
     * compacted part but the version 1 copies there (one per patient version: NREC, and rec-new's), which
     * are dropped, except each patient's newest entry (put() writes the copy last), kept as its stub; every
     * version, its history and its copies read as before; done again it finds nothing */
    buf before[3] = {{0}}, after = {0};
    for (int i = 0; i < 3; i++)
        patient_view(u.s, &who[i], &before[i]);
    store_compact_stats cs = compact_all(u.s, 5);
    assert_int_equal(cs.dropped, NREC + 1 - 3);
    assert_int_equal(cs.stubbed, 3);
    assert_int_equal(cs.moved, cs.looked - cs.dropped);
    assert_true(cs.moved > 2 * NREC);        /* versions and records-index entries at least */
    assert_true(cs.bytes >= (NREC + 1) * 8); /* each copy's fields, {"p1":1}, at least */
    for (int i = 0; i < 3; i++) {
        patient_view(u.s, &who[i], &after);
        assert_string_equal(after.data, before[i].data);
    }
    assert_int_equal(read_copies(u.s, "rec-1", &who[1], &rec, &pat), 2);
    assert_string_equal(pat.data, "{\"v2\":3}");
    cs = compact_all(u.s, 5);
    assert_int_equal(cs.looked, 0);                   /* no version retired since: no walk at all */
    put(u.s, "rec-v2", &who[1], 1 + NREC / 3, false); /* a patient copy under version 2, in the log */
    /* a later change is version 3, its copies 'V'-prefixed too; a stale step for 2 does nothing */
    st = reg(u.s, "{\"s\":3}");
    assert_int_equal(st.target, 3);
    assert_int_equal(store_reproject_step(u.s, 2, &fns, 2, &finished, &st, &e), MS_OK);
    assert_true(finished);
    do
        assert_int_equal(store_reproject_step(u.s, 3, &fns, 50, &finished, &st, &e), MS_OK);
    while (!finished);
    assert_int_equal(read_copies(u.s, "rec-2", &who[2], &rec, &pat), 3);
    total = 0;
    do {
        assert_int_equal(store_schema_drop_step(u.s, 1000, &clean, &deleted, &e), MS_OK);
        total += deleted;
    } while (!clean);
    assert_int_equal(total, (NREC + 2) + (NREC + 1)); /* rec-v2's patient copy was in the log */
    assert_int_equal(read_copies(u.s, "rec-2", &who[2], &rec, &pat), 3);
    /* version 2 retired: its one copy in the log (rec-v2's) goes; the version 1 stubs of the other two
     * patients stay (still their newest entries) */
    for (int i = 0; i < 3; i++)
        patient_view(u.s, &who[i], &before[i]);
    cs = compact_all(u.s, 1000);
    assert_int_equal(cs.stubbed, 1); /* rec-v2's copy: who[1]'s newest entry, moved as its stub */
    assert_int_equal(cs.dropped, 1); /* and who[1]'s version 1 stub, which no longer is */
    for (int i = 0; i < 3; i++) {
        patient_view(u.s, &who[i], &after);
        assert_string_equal(after.data, before[i].data);
        buf_free(&before[i]);
    }
    buf_free(&after);
    buf_free(&rec);
    buf_free(&pat);
    unit_store_close(&u);
}

/* A compaction whose cursor is past the checkpoint floor from its first window (the default lag: nothing
 * checkpointed yet) moves nothing and drops nothing: every retired copy becomes a stub where it is, so that
 * the chains keep all of them (README.md, "Compaction"). */
static void test_compaction_past_the_floor_keeps_stubs(void **state)
{
    (void)state;
    unit_store u;
    assert_true(unit_store_open(&u, NULL));
    reg(u.s, "{\"s\":1}");
    patient_ref who[2];
    for (int i = 0; i < 6; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "rec-%d", i);
        put(u.s, rid, &who[i % 2], 1 + (uint32_t)(i / 2), i < 2);
    }
    assert_int_equal(reg(u.s, "{\"s\":2}").target, 2);
    int n = 0;
    store_reproject_fns fns = {fake_record, fake_patient, &n};
    bool finished;
    store_schema_status st;
    ms_err e = {0};
    do
        assert_int_equal(store_reproject_step(u.s, 2, &fns, 4, &finished, &st, &e), MS_OK);
    while (!finished);
    buf before[2] = {{0}}, after = {0};
    for (int i = 0; i < 2; i++)
        patient_view(u.s, &who[i], &before[i]);
    store_compact_stats cs = compact_all(u.s, 4);
    assert_int_equal(cs.moved + cs.dropped, 0);
    assert_int_equal(cs.stubbed, 6); /* one version 1 copy a patient version */
    uint64_t entries = cs.looked;
    for (int i = 0; i < 2; i++) {
        patient_view(u.s, &who[i], &after);
        assert_string_equal(after.data, before[i].data);
        buf_free(&before[i]);
    }
    /* an erasure still finds every entry of the patient, stubs included (its 3 versions, 3 records-index
     * entries and 3 copies), and leaves its mark */
    store_write *w;
    erase_report rep;
    assert_int_equal(store_write_begin(u.s, &w, &e), MS_OK);
    assert_int_equal(store_patient_erase(w, &who[0].id, &rep, &e), MS_OK);
    uint64_t pos;
    assert_int_equal(store_write_commit(w, &pos, &e), MS_OK);
    assert_int_equal(store_plog_compact_begin(u.s, &e), MS_OK);
    cs = compact_all(u.s, 100);
    assert_int_equal(cs.stubbed + cs.dropped, 0);
    assert_int_equal(cs.looked, entries - 9 + 1);
    buf_free(&after);
    unit_store_close(&u);
}

/* A re-projection abandoned (a start with the schema in force again): its copies are cleaned up, the
 * version in force keeps answering, and the next change gets a new number. */
static void test_abandoned_reprojection_is_cleaned_up(void **state)
{
    (void)state;
    unit_store u;
    assert_true(unit_store_open(&u, NULL));
    reg(u.s, "{\"s\":1}");
    patient_ref who;
    put(u.s, "rec-a", &who, 1, true);
    put(u.s, "rec-b", &who, 2, false);
    assert_int_equal(reg(u.s, "{\"s\":2}").target, 2);
    int n = 0;
    store_reproject_fns fns = {fake_record, fake_patient, &n};
    bool finished;
    store_schema_status st;
    ms_err e = {0};
    assert_int_equal(store_reproject_step(u.s, 2, &fns, 1, &finished, &st, &e), MS_OK); /* one copy under 2 */
    assert_false(finished);
    st = reg(u.s, "{\"s\":1}");
    assert_int_equal(st.in_force, 1);
    assert_int_equal(st.target, 0);
    assert_int_equal(store_reproject_step(u.s, 2, &fns, 1, &finished, &st, &e), MS_OK); /* stale: nothing */
    assert_true(finished);
    bool clean;
    uint64_t deleted;
    assert_int_equal(store_schema_drop_step(u.s, 100, &clean, &deleted, &e), MS_OK);
    assert_true(clean);
    assert_int_equal(deleted, 1); /* the abandoned version's one copy; never version 1's */
    buf rec = {0}, pat = {0};
    assert_int_equal(read_copies(u.s, "rec-a", &who, &rec, &pat), 1);
    assert_string_equal(rec.data, "{\"v1\":1}");
    assert_string_equal(pat.data, "{\"p1\":1}");
    /* the abandoned version's copies were keyed: the log has nothing to compact, and is not walked */
    store_compact_stats cs = compact_all(u.s, 2);
    assert_int_equal(cs.looked, 0);
    assert_int_equal(read_copies(u.s, "rec-b", &who, &rec, &pat), 1);
    assert_string_equal(pat.data, "{\"p1\":1}");
    assert_int_equal(reg(u.s, "{\"s\":4}").target, 3);
    buf_free(&rec);
    buf_free(&pat);
    unit_store_close(&u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canonical_ignores_layout),
        cmocka_unit_test(test_canonical_empty_objects),
        cmocka_unit_test(test_canonical_errors),
        cmocka_unit_test(test_default_canonical_is_the_default_schema),
        cmocka_unit_test(test_register_versions),
        cmocka_unit_test(test_reprojection_steps),
        cmocka_unit_test(test_compaction_past_the_floor_keeps_stubs),
        cmocka_unit_test(test_abandoned_reprojection_is_cleaned_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
