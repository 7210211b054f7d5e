/*
 * test_merge.c - a patient's state as the field-by-field merge of its records in event-time order
 * (src/merge.h): fields added, changed, unchanged; an older record fills but never overrides; ties by
 * commit then position; record-level fields excluded; public_changed only for allow-listed fields; and a
 * property test: any arrival order gives the event-time merge (merge_records and a model agree).
 */
#include "unit.h"

#include "pipeline/merge.h"

#include <xxhash.h>

typedef struct {
    schema sc;
    scan_config cfg;
    arena mem;
    int64_t commits; /* each apply() is a later commit than the one before */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    schema_default(&f->sc);
    f->cfg = unit_scan_config(&f->sc);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    arena_free(&f->mem);
    schema_free(&f->sc);
    free(f);
    return 0;
}

static const state_field *find(const merge_result *m, const char *key)
{
    for (uint32_t i = 0; i < m->nfields; i++)
        if (m->fields[i].key_len == strlen(key) && memcmp(m->fields[i].key, key, m->fields[i].key_len) == 0)
            return &m->fields[i];
    return NULL;
}

static void expect_keys(const merge_result *m, const char *const *keys, uint32_t n)
{
    if (m->nfields != n) fail_msg("%u fields, expected %u", m->nfields, n);
    for (uint32_t i = 0; i < n; i++)
        assert_span_equal(m->fields[i].key, m->fields[i].key_len, keys[i]);
}

/* The state field refers to the value bytes of record r stored at body_pos. */
static void expect_ref(const state_field *sf, const parsed_record *r, uint64_t body_pos, const char *key,
                       const char *raw)
{
    assert_non_null(sf);
    const record_field *rf = record_field_get(r, key, strlen(key));
    assert_non_null(rf);
    assert_span_equal(rf->val, rf->val_len, raw);
    assert_true(sf->pos == body_pos + (uint64_t)(rf->val - r->body));
    assert_int_equal(sf->len, strlen(raw));
    assert_true(sf->hash == XXH3_64bits(raw, strlen(raw)));
}

/* Record r (stored at body_pos, committed at vf) merged into prev. */
static merge_source source_of(const parsed_record *r, uint64_t body_pos, int64_t vf)
{
    merge_source m = {.fields = r->fields,
                      .nfields = r->nfields,
                      .body = r->body,
                      .body_len = r->body_len,
                      .body_pos = body_pos,
                      .ts = r->ts_us,
                      .valid_from = vf};
    return m;
}

static merge_result apply(fixture *f, const merge_result *prev, const parsed_record *r, uint64_t body_pos)
{
    merge_source src = source_of(r, body_pos, ++f->commits);
    merge_result m;
    merge_apply(&f->sc, prev ? prev->fields : NULL, prev ? prev->nfields : 0, &src, &f->mem, &m);
    return m;
}

#define ID "\"name\":\"Ana\",\"dob\":\"1990-01-01\""

static void test_new_patient(void **state)
{
    fixture *f = *state;
    parsed_record r = unit_scan_ok(&f->cfg, &f->mem,
                                   "{\"record_id\":\"r1\",\"type\":\"visit\",\"ts\":\"2026-01-01T00:00:00Z\"," ID
                                   ",\"favorite_color\":\"blue\",\"allergy\":\"nuts\"}");
    merge_result m;
    m = apply(f, NULL, &r, 4096);
    const char *keys[] = {"allergy", "dob", "favorite_color", "name"}; /* sorted; no record_id, type, ts */
    expect_keys(&m, keys, 4);
    assert_int_equal(m.changed, 4);
    assert_true(m.public_changed);
    expect_ref(find(&m, "allergy"), &r, 4096, "allergy", "\"nuts\"");
    expect_ref(find(&m, "name"), &r, 4096, "name", "\"Ana\"");
    assert_null(find(&m, "record_id"));
    assert_null(find(&m, "type"));
    assert_null(find(&m, "ts"));
    /* a new patient without public fields: changed, but nothing public */
    parsed_record r2 = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"type\":\"lab\",\"ts\":\"2026-01-01T00:00:00Z\"}");
    m = apply(f, NULL, &r2, 0);
    assert_int_equal(m.nfields, 2);
    assert_int_equal(m.changed, 2);
    assert_false(m.public_changed);
}

/* r2 is about an earlier time (2026-02-01) than r1 (no ts: the ingest time, 2026-06-15): equal values
 * from it change nothing, not even which record holds them. */
static void test_same_values_from_an_earlier_record_keep_the_reference(void **state)
{
    fixture *f = *state;
    parsed_record r1 = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"favorite_color\":\"blue\",\"allergy\":\"nuts\"}");
    merge_result m1;
    m1 = apply(f, NULL, &r1, 0);
    /* the same values again in another record (other id, type, time, key order, whitespace) */
    parsed_record r2 =
        unit_scan_ok(&f->cfg, &f->mem,
                     "{ \"allergy\" : \"nuts\", \"record_id\":\"r2\",\"type\":\"lab\",\"ts\":\"2026-02-01T00:00:00Z\","
                     "\"favorite_color\":\"blue\", " ID "}");
    merge_result m2;
    m2 = apply(f, &m1, &r2, 1 << 20);
    assert_int_equal(m2.changed, 0);
    assert_int_equal(m2.moved, 0);
    assert_false(m2.public_changed);
    assert_int_equal(m2.nfields, m1.nfields);
    for (uint32_t i = 0; i < m1.nfields; i++) {
        /* same key, and the OLD reference: position, length and hash of the first record's bytes */
        assert_int_equal(m2.fields[i].key_len, m1.fields[i].key_len);
        assert_memory_equal(m2.fields[i].key, m1.fields[i].key, m1.fields[i].key_len);
        assert_true(m2.fields[i].pos == m1.fields[i].pos);
        assert_int_equal(m2.fields[i].len, m1.fields[i].len);
        assert_true(m2.fields[i].hash == m1.fields[i].hash);
        assert_true(m2.fields[i].pos < (1 << 20));
    }
}

static void test_changed_and_added_fields(void **state)
{
    fixture *f = *state;
    parsed_record r1 =
        unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"favorite_color\":\"blue\",\"allergy\":\"nuts\",\"weight\":70}");
    merge_result m1;
    m1 = apply(f, NULL, &r1, 0);
    /* allergy changes, height is new, weight and favorite_color are absent (kept), name/dob same */
    parsed_record r2 = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"allergy\":\"penicillin\",\"height\":180}");
    merge_result m2;
    m2 = apply(f, &m1, &r2, 8192);
    const char *keys[] = {"allergy", "dob", "favorite_color", "height", "name", "weight"};
    expect_keys(&m2, keys, 6);
    assert_int_equal(m2.changed, 2);
    assert_int_equal(m2.moved, 2);   /* name and dob: same values, now held by the later record */
    assert_false(m2.public_changed); /* neither allergy nor height is allow-listed */
    expect_ref(find(&m2, "allergy"), &r2, 8192, "allergy", "\"penicillin\"");
    expect_ref(find(&m2, "height"), &r2, 8192, "height", "180");
    expect_ref(find(&m2, "weight"), &r1, 0, "weight", "70");
    expect_ref(find(&m2, "favorite_color"), &r1, 0, "favorite_color", "\"blue\"");
    expect_ref(find(&m2, "name"), &r2, 8192, "name", "\"Ana\""); /* same value: the later record holds it */

    /* a change of an allow-listed field sets public_changed */
    parsed_record r3 = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"favorite_color\":\"red\"}");
    merge_result m3;
    m3 = apply(f, &m2, &r3, 16384);
    assert_int_equal(m3.changed, 1);
    assert_true(m3.public_changed);
    expect_ref(find(&m3, "favorite_color"), &r3, 16384, "favorite_color", "\"red\"");
    assert_int_equal(m3.nfields, 6);

    /* the same public value again: not a public change */
    parsed_record r4 = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"favorite_color\":\"red\",\"note\":\"x\"}");
    merge_result m4;
    m4 = apply(f, &m3, &r4, 0);
    assert_int_equal(m4.changed, 1);
    assert_false(m4.public_changed);

    /* the same bytes of a different length or type are a change: "70" vs 70 */
    parsed_record r5 = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"weight\":\"70\"}");
    merge_result m5;
    m5 = apply(f, &m4, &r5, 0);
    assert_int_equal(m5.changed, 1);
    assert_int_equal(find(&m5, "weight")->len, 4);
}

static void test_record_fields_never_merged(void **state)
{
    fixture *f = *state;
    /* keys sorting before, between and after the record-level fields */
    parsed_record r1 =
        unit_scan_ok(&f->cfg, &f->mem,
                     "{" ID ",\"record_id\":\"r1\",\"type\":\"lab\",\"ts\":\"2026-01-01T00:00:00Z\",\"a\":1,"
                     "\"recordz\":2,\"tsa\":3,\"tz\":4,\"u\":5}");
    merge_result m1;
    m1 = apply(f, NULL, &r1, 0);
    const char *keys[] = {"a", "dob", "name", "recordz", "tsa", "tz", "u"};
    expect_keys(&m1, keys, 7);
    assert_int_equal(m1.changed, 7);
    /* only record-level fields change: no state change at all */
    parsed_record r2 = unit_scan_ok(&f->cfg, &f->mem,
                                    "{" ID ",\"record_id\":\"r2\",\"type\":\"visit\",\"ts\":\"2027-01-01T00:00:00Z\"}");
    merge_result m2;
    m2 = apply(f, &m1, &r2, 0);
    assert_int_equal(m2.changed, 0);
    assert_false(m2.public_changed);
    expect_keys(&m2, keys, 7);
    /* another schema: its record-level fields are different ones */
    schema other;
    ms_err e;
    const char *text = "{\"record_id\":\"rid\",\"type\":\"kind\",\"event_time\":\"at\",\"public\":{\"type\":\"copy\"}}";
    assert_int_equal(schema_parse(&other, text, strlen(text), &e), MS_OK);
    merge_result m3;
    {
        merge_source src = source_of(&r1, 0, 1);
        merge_apply(&other, NULL, 0, &src, &f->mem, &m3);
    }
    bool has_type = find(&m3, "type") != NULL, has_record_id = find(&m3, "record_id") != NULL;
    bool pub = m3.public_changed;
    schema_free(&other);
    assert_true(has_type); /* "type" is an ordinary field under this schema ... */
    assert_true(has_record_id);
    assert_true(pub); /* ... and allow-listed there */
    assert_int_equal(m3.nfields, 10);
}

/* The merged list stays sorted and complete when previous and new keys interleave. */
static void test_interleaved_keys_sorted(void **state)
{
    fixture *f = *state;
    parsed_record r1 = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"b\":1,\"d\":1,\"f\":1,\"h\":1}");
    merge_result m1;
    m1 = apply(f, NULL, &r1, 0);
    parsed_record r2 = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"a\":2,\"c\":2,\"d\":2,\"g\":2,\"z\":2}");
    merge_result m2;
    m2 = apply(f, &m1, &r2, 0);
    const char *keys[] = {"a", "b", "c", "d", "dob", "f", "g", "h", "name", "z"};
    expect_keys(&m2, keys, 10);
    assert_int_equal(m2.changed, 5); /* a, c, g, z added; d changed */
    assert_int_equal(find(&m2, "b")->len, 1);
    assert_true(find(&m2, "d")->hash == XXH3_64bits("2", 1));
    assert_true(find(&m2, "b")->hash == XXH3_64bits("1", 1));
}

/* The case: a 2019 admission loaded after 2026 records fills what the patient lacks but never
 * overrides the 2026 address and phone. */
static void test_older_record_fills_but_never_overrides(void **state)
{
    fixture *f = *state;
    parsed_record now = unit_scan_ok(&f->cfg, &f->mem,
                                     "{" ID ",\"ts\":\"2026-03-01T00:00:00Z\",\"address\":\"2026 street\","
                                     "\"phone\":\"555-2026\"}");
    merge_result m1 = apply(f, NULL, &now, 0);
    parsed_record old = unit_scan_ok(&f->cfg, &f->mem,
                                     "{" ID ",\"ts\":\"2019-05-01T00:00:00Z\",\"address\":\"2019 road\","
                                     "\"phone\":\"555-2019\",\"blood_type\":\"A+\",\"favorite_color\":\"red\"}");
    merge_result m2 = apply(f, &m1, &old, 1 << 20);
    expect_ref(find(&m2, "address"), &now, 0, "address", "\"2026 street\"");
    expect_ref(find(&m2, "phone"), &now, 0, "phone", "\"555-2026\"");
    expect_ref(find(&m2, "blood_type"), &old, 1 << 20, "blood_type", "\"A+\""); /* filled */
    expect_ref(find(&m2, "favorite_color"), &old, 1 << 20, "favorite_color", "\"red\"");
    assert_int_equal(m2.changed, 2);
    assert_true(m2.public_changed);
    /* the state fields carry their place in the order: the record's event time and commit */
    assert_true(find(&m2, "address")->ts == unit_time(2026, 3, 1, 0, 0, 0));
    assert_true(find(&m2, "blood_type")->ts == unit_time(2019, 5, 1, 0, 0, 0));
    assert_true(find(&m2, "blood_type")->vf == 2 && find(&m2, "address")->vf == 1);
    /* a 2027 record overrides */
    parsed_record later =
        unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"ts\":\"2027-01-01T00:00:00Z\",\"phone\":\"555-2027\"}");
    merge_result m3 = apply(f, &m2, &later, 2 << 20);
    expect_ref(find(&m3, "phone"), &later, 2 << 20, "phone", "\"555-2027\"");
    assert_int_equal(m3.changed, 1);
}

/* Equal event times: the later commit wins; in one commit, the record stored later in the log. */
static void test_ties_by_commit_then_position(void **state)
{
    fixture *f = *state;
    parsed_record a = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"ts\":\"2026-01-01T00:00:00Z\",\"x\":\"a\"}");
    parsed_record b = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"ts\":\"2026-01-01T00:00:00Z\",\"x\":\"b\"}");
    merge_source sa = source_of(&a, 1 << 20, 5), sb = source_of(&b, 0, 6);
    merge_result m1, m2;
    merge_apply(&f->sc, NULL, 0, &sa, &f->mem, &m1);
    merge_apply(&f->sc, m1.fields, m1.nfields, &sb, &f->mem, &m2); /* later commit, lower position */
    expect_ref(find(&m2, "x"), &b, 0, "x", "\"b\"");
    /* the same two in one commit (valid_from 7): the higher position wins, whatever the order applied */
    sa = source_of(&a, 1 << 20, 7), sb = source_of(&b, 0, 7);
    merge_apply(&f->sc, NULL, 0, &sb, &f->mem, &m1);
    merge_apply(&f->sc, m1.fields, m1.nfields, &sa, &f->mem, &m2);
    expect_ref(find(&m2, "x"), &a, 1 << 20, "x", "\"a\"");
    merge_apply(&f->sc, NULL, 0, &sa, &f->mem, &m1);
    merge_apply(&f->sc, m1.fields, m1.nfields, &sb, &f->mem, &m2);
    expect_ref(find(&m2, "x"), &a, 1 << 20, "x", "\"a\"");
    assert_int_equal(m2.changed, 0);
}

/* A value repeated by a later record moves to it, so that a late-arriving record between the two in
 * event time still loses: A (2020, X), B (2026, X), then C (2023, Y) -> X. */
static void test_repeated_value_keeps_its_place(void **state)
{
    fixture *f = *state;
    parsed_record a = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"ts\":\"2020-01-01T00:00:00Z\",\"phone\":\"X\"}");
    parsed_record b = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"ts\":\"2026-01-01T00:00:00Z\",\"phone\":\"X\"}");
    parsed_record c = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"ts\":\"2023-01-01T00:00:00Z\",\"phone\":\"Y\"}");
    merge_result m1 = apply(f, NULL, &a, 0);
    merge_result m2 = apply(f, &m1, &b, 1 << 20);
    assert_int_equal(m2.changed, 0);
    assert_int_equal(m2.moved, 3); /* name, dob, phone: held by b now */
    merge_result m3 = apply(f, &m2, &c, 2 << 20);
    expect_ref(find(&m3, "phone"), &b, 1 << 20, "phone", "\"X\"");
    assert_int_equal(m3.changed, 0);
}

static void test_contributes_and_supersedes(void **state)
{
    fixture *f = *state;
    parsed_record a = unit_scan_ok(
        &f->cfg, &f->mem, "{" ID ",\"ts\":\"2026-01-01T00:00:00Z\",\"phone\":\"1\",\"hiv_status\":\"positive\"}");
    parsed_record b = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"ts\":\"2025-01-01T00:00:00Z\",\"phone\":\"2\"}");
    merge_result m1 = apply(f, NULL, &a, 0);
    merge_result m2 = apply(f, &m1, &b, 1 << 20);
    assert_true(merge_contributes(m2.fields, m2.nfields, 0, a.body_len));
    assert_false(merge_contributes(m2.fields, m2.nfields, 1 << 20, b.body_len)); /* b won nothing */
    /* a new version of a carrying every field a holds, later: supersedes; without hiv_status: not */
    parsed_record a2 = unit_scan_ok(
        &f->cfg, &f->mem, "{" ID ",\"ts\":\"2026-02-01T00:00:00Z\",\"phone\":\"3\",\"hiv_status\":\"negative\"}");
    parsed_record a3 = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"ts\":\"2026-02-01T00:00:00Z\",\"phone\":\"3\"}");
    parsed_record a4 = unit_scan_ok(
        &f->cfg, &f->mem, "{" ID ",\"ts\":\"2024-01-01T00:00:00Z\",\"phone\":\"3\",\"hiv_status\":\"negative\"}");
    merge_source s2 = source_of(&a2, 2 << 20, 10), s3 = source_of(&a3, 3 << 20, 10), s4 = source_of(&a4, 4 << 20, 10);
    assert_true(merge_supersedes(m2.fields, m2.nfields, 0, a.body_len, &s2));
    assert_false(merge_supersedes(m2.fields, m2.nfields, 0, a.body_len, &s3));
    assert_false(merge_supersedes(m2.fields, m2.nfields, 0, a.body_len, &s4)); /* earlier in event time */
    /* replacing a: recomputed when the new version gives up a value a won; replacing b (won nothing): never */
    assert_false(merge_replacing_recomputes(m2.fields, m2.nfields, 0, a.body_len, &s2));
    assert_true(merge_replacing_recomputes(m2.fields, m2.nfields, 0, a.body_len, &s3));
    assert_true(merge_replacing_recomputes(m2.fields, m2.nfields, 0, a.body_len, &s4));
    assert_false(merge_replacing_recomputes(m2.fields, m2.nfields, 1 << 20, b.body_len, &s3));
}

/* Property: for random sets of records with distinct event times, merging them one by one in ANY
 * arrival order (each a later commit) gives the state of merge_records, which is the merge in event-time
 * order: for each field, the value of the record with the latest event time that has it. */
static void test_any_arrival_order_gives_the_event_time_merge(void **state)
{
    (void)state;
    schema sc;
    schema_default(&sc);
    scan_config cfg = unit_scan_config(&sc);
    unit_rng rng = {20261129};
    arena mem = {0};
    for (int round = 0; round < 300; round++) {
        enum { MAXR = 12 };
        uint32_t n = 1 + unit_below(&rng, MAXR);
        parsed_record recs[MAXR];
        uint32_t order[MAXR];
        for (uint32_t i = 0; i < n; i++) {
            char text[512];
            int len = snprintf(text, sizeof text, "{" ID ",\"ts\":\"20%02u-01-01T00:00:%02uZ\"", 10 + i, i);
            for (int k = 0; k < 5; k++) /* each field present with probability 1/2, from 3 values */
                if (unit_below(&rng, 2))
                    len += snprintf(text + len, sizeof text - (size_t)len, ",\"f%d\":%u", k, unit_below(&rng, 3));
            snprintf(text + len, sizeof text - (size_t)len, "}");
            recs[i] = unit_scan_ok(&cfg, &mem, arena_strndup(&mem, text, strlen(text)));
            order[i] = i;
        }
        for (uint32_t i = n - 1; i > 0; i--) { /* a random arrival order */
            uint32_t j = unit_below(&rng, i + 1), t = order[i];
            order[i] = order[j], order[j] = t;
        }
        merge_result acc = {0};
        for (uint32_t k = 0; k < n; k++) {
            uint32_t i = order[k];
            merge_source src = source_of(&recs[i], (uint64_t)i << 20, k + 1);
            merge_result next;
            merge_apply(&sc, acc.fields, acc.nfields, &src, &mem, &next);
            acc = next;
        }
        merge_source srcs[MAXR];
        for (uint32_t i = 0; i < n; i++)
            srcs[i] = source_of(&recs[order[i]], (uint64_t)order[i] << 20, i + 1);
        merge_result whole;
        merge_records(&sc, srcs, n, acc.fields, acc.nfields, &mem, &whole);
        if (whole.changed)
            fail_msg("round %d: merge_records differs from the incremental merge in %u fields", round, whole.changed);
        /* and both equal the model: per field, the value of the latest-ts record that has it (records are
         * numbered in ts order) */
        for (int k = 0; k < 5; k++) {
            char key[16];
            snprintf(key, sizeof key, "f%d", k);
            const record_field *want = NULL;
            uint32_t from = 0;
            for (uint32_t i = 0; i < n; i++) {
                const record_field *rf = record_field_get(&recs[i], key, 2);
                if (rf) want = rf, from = i;
            }
            const state_field *got = NULL;
            for (uint32_t i = 0; i < acc.nfields; i++)
                if (acc.fields[i].key_len == 2 && memcmp(acc.fields[i].key, key, 2) == 0) got = &acc.fields[i];
            if (!want != !got) fail_msg("round %d: field %s present %d, expected %d", round, key, !!got, !!want);
            if (want && got->pos != ((uint64_t)from << 20) + (uint64_t)(want->val - recs[from].body))
                fail_msg("round %d: field %s not from record %u (the latest in event time)", round, key, from);
        }
        if (round % 50 == 49) arena_free(&mem);
    }
    arena_free(&mem);
    schema_free(&sc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_new_patient, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_values_from_an_earlier_record_keep_the_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(test_older_record_fills_but_never_overrides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ties_by_commit_then_position, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repeated_value_keeps_its_place, setup, teardown),
        cmocka_unit_test_setup_teardown(test_contributes_and_supersedes, setup, teardown),
        cmocka_unit_test(test_any_arrival_order_gives_the_event_time_merge),
        cmocka_unit_test_setup_teardown(test_changed_and_added_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_fields_never_merged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interleaved_keys_sorted, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
