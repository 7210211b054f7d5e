/*
 * test_merge.c - a patient's state as the field-by-field merge of its records (src/merge.h): fields
 * added, changed and unchanged (keeping the older value reference), record-level fields excluded,
 * public_changed only for allow-listed fields.
 */
#include "unit.h"

#include "merge.h"

#include <xxhash.h>

typedef struct {
    schema sc;
    scan_config cfg;
    arena mem;
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

#define ID "\"name\":\"Ana\",\"dob\":\"1990-01-01\""

static void test_new_patient(void **state)
{
    fixture *f = *state;
    parsed_record r = unit_scan_ok(&f->cfg, &f->mem,
                                   "{\"record_id\":\"r1\",\"type\":\"visit\",\"ts\":\"2026-01-01T00:00:00Z\"," ID
                                   ",\"favorite_color\":\"blue\",\"allergy\":\"nuts\"}");
    merge_result m;
    merge_patient_state(&f->sc, NULL, 0, &r, 4096, &f->mem, &m);
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
    merge_patient_state(&f->sc, NULL, 0, &r2, 0, &f->mem, &m);
    assert_int_equal(m.nfields, 2);
    assert_int_equal(m.changed, 2);
    assert_false(m.public_changed);
}

static void test_same_values_unchanged_keep_old_reference(void **state)
{
    fixture *f = *state;
    parsed_record r1 = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"favorite_color\":\"blue\",\"allergy\":\"nuts\"}");
    merge_result m1;
    merge_patient_state(&f->sc, NULL, 0, &r1, 0, &f->mem, &m1);
    /* the same values again in another record (other id, type, time, key order, whitespace) */
    parsed_record r2 =
        unit_scan_ok(&f->cfg, &f->mem,
                     "{ \"allergy\" : \"nuts\", \"record_id\":\"r2\",\"type\":\"lab\",\"ts\":\"2026-02-01T00:00:00Z\","
                     "\"favorite_color\":\"blue\", " ID "}");
    merge_result m2;
    merge_patient_state(&f->sc, m1.fields, m1.nfields, &r2, 1 << 20, &f->mem, &m2);
    assert_int_equal(m2.changed, 0);
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
    merge_patient_state(&f->sc, NULL, 0, &r1, 0, &f->mem, &m1);
    /* allergy changes, height is new, weight and favorite_color are absent (kept), name/dob same */
    parsed_record r2 = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"allergy\":\"penicillin\",\"height\":180}");
    merge_result m2;
    merge_patient_state(&f->sc, m1.fields, m1.nfields, &r2, 8192, &f->mem, &m2);
    const char *keys[] = {"allergy", "dob", "favorite_color", "height", "name", "weight"};
    expect_keys(&m2, keys, 6);
    assert_int_equal(m2.changed, 2);
    assert_false(m2.public_changed); /* neither allergy nor height is allow-listed */
    expect_ref(find(&m2, "allergy"), &r2, 8192, "allergy", "\"penicillin\"");
    expect_ref(find(&m2, "height"), &r2, 8192, "height", "180");
    expect_ref(find(&m2, "weight"), &r1, 0, "weight", "70");
    expect_ref(find(&m2, "favorite_color"), &r1, 0, "favorite_color", "\"blue\"");
    expect_ref(find(&m2, "name"), &r1, 0, "name", "\"Ana\""); /* unchanged: the older reference */

    /* a change of an allow-listed field sets public_changed */
    parsed_record r3 = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"favorite_color\":\"red\"}");
    merge_result m3;
    merge_patient_state(&f->sc, m2.fields, m2.nfields, &r3, 16384, &f->mem, &m3);
    assert_int_equal(m3.changed, 1);
    assert_true(m3.public_changed);
    expect_ref(find(&m3, "favorite_color"), &r3, 16384, "favorite_color", "\"red\"");
    assert_int_equal(m3.nfields, 6);

    /* the same public value again: not a public change */
    parsed_record r4 = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"favorite_color\":\"red\",\"note\":\"x\"}");
    merge_result m4;
    merge_patient_state(&f->sc, m3.fields, m3.nfields, &r4, 0, &f->mem, &m4);
    assert_int_equal(m4.changed, 1);
    assert_false(m4.public_changed);

    /* the same bytes of a different length or type are a change: "70" vs 70 */
    parsed_record r5 = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"weight\":\"70\"}");
    merge_result m5;
    merge_patient_state(&f->sc, m4.fields, m4.nfields, &r5, 0, &f->mem, &m5);
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
    merge_patient_state(&f->sc, NULL, 0, &r1, 0, &f->mem, &m1);
    const char *keys[] = {"a", "dob", "name", "recordz", "tsa", "tz", "u"};
    expect_keys(&m1, keys, 7);
    assert_int_equal(m1.changed, 7);
    /* only record-level fields change: no state change at all */
    parsed_record r2 = unit_scan_ok(&f->cfg, &f->mem,
                                    "{" ID ",\"record_id\":\"r2\",\"type\":\"visit\",\"ts\":\"2027-01-01T00:00:00Z\"}");
    merge_result m2;
    merge_patient_state(&f->sc, m1.fields, m1.nfields, &r2, 0, &f->mem, &m2);
    assert_int_equal(m2.changed, 0);
    assert_false(m2.public_changed);
    expect_keys(&m2, keys, 7);
    /* another schema: its record-level fields are different ones */
    schema other;
    ms_err e;
    const char *text = "{\"record_id\":\"rid\",\"type\":\"kind\",\"event_time\":\"at\",\"public\":{\"type\":\"copy\"}}";
    assert_int_equal(schema_parse(&other, text, strlen(text), &e), MS_OK);
    merge_result m3;
    merge_patient_state(&other, NULL, 0, &r1, 0, &f->mem, &m3);
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
    merge_patient_state(&f->sc, NULL, 0, &r1, 0, &f->mem, &m1);
    parsed_record r2 = unit_scan_ok(&f->cfg, &f->mem, "{" ID ",\"a\":2,\"c\":2,\"d\":2,\"g\":2,\"z\":2}");
    merge_result m2;
    merge_patient_state(&f->sc, m1.fields, m1.nfields, &r2, 0, &f->mem, &m2);
    const char *keys[] = {"a", "b", "c", "d", "dob", "f", "g", "h", "name", "z"};
    expect_keys(&m2, keys, 10);
    assert_int_equal(m2.changed, 5); /* a, c, g, z added; d changed */
    assert_int_equal(find(&m2, "b")->len, 1);
    assert_true(find(&m2, "d")->hash == XXH3_64bits("2", 1));
    assert_true(find(&m2, "b")->hash == XXH3_64bits("1", 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_new_patient, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_values_unchanged_keep_old_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changed_and_added_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_fields_never_merged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interleaved_keys_sorted, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
