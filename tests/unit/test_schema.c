/*
 * test_schema.c - field roles and the public allow-list (src/schema.h): the default schema, schema_parse
 * of valid and invalid schema files, the rule that identity fields can never be public, and
 * schema_load_file.
 */
#include "unit.h"

static ms_code parse(schema *s, const char *text, ms_err *e) { return schema_parse(s, text, strlen(text), e); }

static void test_default_schema(void **state)
{
    (void)state;
    schema s;
    schema_default(&s);
    assert_string_equal(s.name_field, "name");
    assert_string_equal(s.dob_field, "dob");
    assert_string_equal(s.record_id_field, "record_id");
    assert_string_equal(s.type_field, "type");
    assert_string_equal(s.ts_field, "ts");
    assert_string_equal(s.default_type, "record");
    assert_int_equal(s.npub, 3);
    assert_string_equal(s.pub[0].field, "favorite_color");
    assert_int_equal(s.pub[0].transform, PUBLISH_COPY);
    assert_string_equal(s.pub[1].field, "type");
    assert_int_equal(s.pub[1].transform, PUBLISH_COPY);
    assert_string_equal(s.pub[2].field, "ts");
    assert_int_equal(s.pub[2].transform, PUBLISH_YEAR);
    /* the allow-list: exact, case-sensitive key matches only */
    assert_non_null(schema_public(&s, "favorite_color", 14));
    assert_ptr_equal(schema_public(&s, "ts", 2), &s.pub[2]);
    assert_null(schema_public(&s, "name", 4));
    assert_null(schema_public(&s, "dob", 3));
    assert_null(schema_public(&s, "ssn", 3));
    assert_null(schema_public(&s, "Favorite_Color", 14));
    assert_null(schema_public(&s, "favorite_colo", 13));
    assert_null(schema_public(&s, "favorite_colors", 15));
    assert_null(schema_public(&s, "t", 1));
    assert_null(schema_public(&s, "", 0));
    /* record-level fields */
    assert_true(schema_is_record_field(&s, "record_id", 9));
    assert_true(schema_is_record_field(&s, "type", 4));
    assert_true(schema_is_record_field(&s, "ts", 2));
    assert_false(schema_is_record_field(&s, "name", 4));
    assert_false(schema_is_record_field(&s, "favorite_color", 14));
    assert_false(schema_is_record_field(&s, "tsx", 3));
    assert_false(schema_is_record_field(&s, "record", 6));
    schema_free(&s);
    schema_free(&s); /* safe twice */
}

static void test_parse_full(void **state)
{
    (void)state;
    schema s;
    ms_err e = {0};
    const char *text =
        "{\"identity\":{\"name\":\"full_name\",\"dob\":\"birth_date\"},\"record_id\":\"rid\",\"type\":\"kind\","
        "\"event_time\":\"at\",\"default_type\":\"visit\",\"public\":{\"eye_color\":\"copy\",\"kind\":null,"
        "\"at\":\"year\",\"visit_date\":\"year\"}}";
    assert_int_equal(parse(&s, text, &e), MS_OK);
    assert_string_equal(s.name_field, "full_name");
    assert_string_equal(s.dob_field, "birth_date");
    assert_string_equal(s.record_id_field, "rid");
    assert_string_equal(s.type_field, "kind");
    assert_string_equal(s.ts_field, "at");
    assert_string_equal(s.default_type, "visit");
    assert_int_equal(s.npub, 4);
    assert_string_equal(s.pub[0].field, "eye_color");
    assert_int_equal(s.pub[0].transform, PUBLISH_COPY);
    assert_string_equal(s.pub[1].field, "kind");
    assert_int_equal(s.pub[1].transform, PUBLISH_COPY);
    assert_string_equal(s.pub[2].field, "at");
    assert_int_equal(s.pub[2].transform, PUBLISH_YEAR);
    assert_int_equal(s.pub[3].transform, PUBLISH_YEAR);
    assert_true(schema_is_record_field(&s, "rid", 3));
    assert_false(schema_is_record_field(&s, "record_id", 9));
    assert_null(schema_public(&s, "favorite_color", 14));
    schema_free(&s);
}

static void test_parse_partial_keeps_defaults(void **state)
{
    (void)state;
    schema s;
    ms_err e = {0};
    assert_int_equal(parse(&s, "{\"type\":\"kind\"}", &e), MS_OK);
    assert_string_equal(s.type_field, "kind");
    assert_string_equal(s.name_field, "name");
    assert_string_equal(s.dob_field, "dob");
    assert_string_equal(s.default_type, "record");
    assert_int_equal(s.npub, 0); /* no "public": nothing is public */
    assert_null(schema_public(&s, "favorite_color", 14));
    schema_free(&s);
    /* escaped keys and values are decoded */
    assert_int_equal(
        parse(&s, "{\"public\":{\"eye\\u005fcolor\":\"copy\"},\"identity\":{\"name\":\"n\\u0061me2\"}}", &e), MS_OK);
    assert_string_equal(s.pub[0].field, "eye_color");
    assert_string_equal(s.name_field, "name2");
    schema_free(&s);
}

static void expect_parse_error(const char *text, const char *msg_part)
{
    schema s;
    ms_err e = {0};
    ms_code rc = parse(&s, text, &e);
    if (rc != MS_EINVAL) fail_msg("schema accepted (rc %d): %s", rc, text);
    if (!strstr(e.msg, msg_part)) fail_msg("message \"%s\" lacks \"%s\"", e.msg, msg_part);
    /* left empty: schema_free is safe, and nothing dangles */
    assert_null(s.name_field);
    assert_int_equal(s.npub, 0);
    schema_free(&s);
}

static void test_parse_errors(void **state)
{
    (void)state;
    expect_parse_error("", "schema:");
    expect_parse_error("[]", "not an object");
    expect_parse_error("{\"public\":{\"x\":\"copy\"}", "schema:");
    expect_parse_error("{\"colour\":\"x\"}", "unknown key");
    expect_parse_error("{\"identity\":\"name\"}", "\"identity\" must be an object");
    expect_parse_error("{\"identity\":{\"name\":\"n\",\"ssn\":\"s\"}}", "unknown identity role");
    expect_parse_error("{\"identity\":{\"name\":\"\"}}", "identity.name");
    expect_parse_error("{\"identity\":{\"dob\":5}}", "identity.dob");
    expect_parse_error("{\"record_id\":\"\"}", "record_id");
    expect_parse_error("{\"type\":null}", "type");
    expect_parse_error("{\"event_time\":[\"ts\"]}", "event_time");
    expect_parse_error("{\"default_type\":\"a\\u0000b\"}", "NUL");
    expect_parse_error("{\"public\":[\"x\"]}", "\"public\" must be an object");
    expect_parse_error("{\"public\":{\"x\":\"hash\"}}", "transform");
    expect_parse_error("{\"public\":{\"x\":1}}", "transform");
    /* the messages name the field or key (schema field names are not PHI), not a member number */
    expect_parse_error("{\"public\":{\"type\":\"copy\",\"ssn\":\"hash\"}}",
                       "schema: public field \"ssn\": unknown transform");
    expect_parse_error("{\"identity\":{\"name\":\"n\"},\"publc\":{}}", "schema: unknown key \"publc\"");
    expect_parse_error("{\"identity\":{\"name\":\"n\",\"ssn\":\"s\"}}", "unknown identity role \"ssn\"");
    expect_parse_error("{\"public\":{\"a\\u00e9\\n\":\"x\"}}", "public field \"a\xC3\xA9?\"");
    char longkey[200];
    snprintf(longkey, sizeof longkey, "{\"%0100d\":1}", 7);
    expect_parse_error(longkey, "unknown key \"0000000000000000000000000000000000000000000000000000000000000000...\"");
}

/* A UTF-8 byte-order mark at the start of a schema file is skipped. */
static void test_byte_order_mark(void **state)
{
    (void)state;
    schema s;
    ms_err e = {0};
    const char *text = "\xEF\xBB\xBF{\"identity\":{\"name\":\"patient\"},\"public\":{\"x\":\"year\"}}";
    if (schema_parse(&s, text, strlen(text), &e) != MS_OK) fail_msg("schema with a BOM: %s", e.msg);
    assert_string_equal(s.name_field, "patient");
    assert_int_equal(s.npub, 1);
    schema_free(&s);
}

/* PHI must never be allow-listed: the identity fields, under any of their names, by any spelling. */
static void test_identity_fields_cannot_be_public(void **state)
{
    (void)state;
    /* (issue 15: identity fields may be published through their transforms only: dob as year, age or
     * age_band, a name field as a pseudonym; test_transforms.c covers the allowed ones) */
    expect_parse_error("{\"public\":{\"name\":\"copy\"}}", "public field \"name\" is an identity field");
    expect_parse_error("{\"public\":{\"dob\":\"copy\"}}", "public field \"dob\" is an identity field");
    expect_parse_error("{\"public\":{\"n\\u0061me\":\"copy\"}}", "is an identity field");
    expect_parse_error("{\"identity\":{\"name\":\"full_name\"},\"public\":{\"full_name\":\"copy\"}}",
                       "is an identity field");
    /* the order of the members does not matter */
    expect_parse_error("{\"public\":{\"birth\":\"zip3\"},\"identity\":{\"dob\":\"birth\"}}",
                       "public field \"birth\" is an identity field");
    /* renaming the identity field away makes the old name an ordinary field */
    schema s;
    ms_err e;
    assert_int_equal(parse(&s, "{\"identity\":{\"name\":\"full_name\"},\"public\":{\"name\":\"copy\"}}", &e), MS_OK);
    schema_free(&s);
}

static void test_public_limit(void **state)
{
    (void)state;
    buf b = {0};
    buf_puts(&b, "{\"public\":{");
    for (int i = 0; i < SCHEMA_MAX_PUBLIC; i++)
        buf_printf(&b, "%s\"f%d\":\"copy\"", i ? "," : "", i);
    buf_puts(&b, "}}");
    schema s;
    ms_err e;
    assert_int_equal(schema_parse(&s, b.data, b.len, &e), MS_OK);
    assert_int_equal(s.npub, SCHEMA_MAX_PUBLIC);
    schema_free(&s);
    b.len -= 2;
    buf_puts(&b, ",\"one_more\":\"copy\"}}");
    assert_int_equal(schema_parse(&s, b.data, b.len, &e), MS_EINVAL);
    assert_non_null(strstr(e.msg, "at most"));
    schema_free(&s);
    buf_free(&b);
}

/* A schema file with the "public" member twice must not put more than SCHEMA_MAX_PUBLIC entries into
 * the fixed pub[] array: it is either refused or capped. Run in a child: the failure mode is a
 * buffer overflow. */
static bool parse_two_public_members(void *arg)
{
    (void)arg;
    buf b = {0};
    buf_puts(&b, "{\"public\":{");
    for (int i = 0; i < 40; i++)
        buf_printf(&b, "%s\"a%d\":\"copy\"", i ? "," : "", i);
    buf_puts(&b, "},\"public\":{");
    for (int i = 0; i < 40; i++)
        buf_printf(&b, "%s\"b%d\":\"copy\"", i ? "," : "", i);
    buf_puts(&b, "}}");
    struct {
        schema s;
        int canary[64];
    } holder;
    for (int i = 0; i < 64; i++)
        holder.canary[i] = 0x5A5A5A5A;
    ms_err e;
    ms_code rc = schema_parse(&holder.s, b.data, b.len, &e);
    bool ok = (rc == MS_EINVAL || (rc == MS_OK && holder.s.npub <= SCHEMA_MAX_PUBLIC));
    for (int i = 0; i < 64; i++)
        ok = ok && holder.canary[i] == 0x5A5A5A5A;
    if (ok) schema_free(&holder.s);
    buf_free(&b);
    return ok;
}

static void test_duplicate_public_member_does_not_overflow(void **state)
{
    (void)state;
    assert_true(unit_run_isolated(parse_two_public_members, NULL));
}

/* The CSV keys: "columns", "types", "dob_format" (csv.h). */
static void test_parse_csv_keys(void **state)
{
    (void)state;
    schema s;
    ms_err e = {0};
    const char *text =
        "{\"identity\":{\"name\":\"full_name\"},"
        "\"columns\":{\"Patient Name\":\"full_name\",\"Birth Date\":\"dob\",\"W\\u00e9ight\":\"weight\"},"
        "\"types\":{\"weight\":\"number\",\"smoker\":\"boolean\",\"note\":\"string\",\"full_name\":\"string\"},"
        "\"dob_format\":\"%m/%d/%Y\"}";
    if (parse(&s, text, &e) != MS_OK) fail_msg("schema: %s", e.msg);
    assert_int_equal(s.ncolumns, 3);
    assert_string_equal(s.columns[0].column, "Patient Name");
    assert_string_equal(s.columns[0].field, "full_name");
    assert_string_equal(s.columns[2].column, "W\xC3\xA9ight");
    assert_string_equal(schema_column_field(&s, "Birth Date", 10), "dob");
    assert_null(schema_column_field(&s, "birth date", 10)); /* exact, case-sensitive */
    assert_null(schema_column_field(&s, "Birth Dat", 9));
    assert_int_equal(s.ntypes, 4);
    assert_int_equal(schema_field_type_of(&s, "weight", 6), FIELD_NUMBER);
    assert_int_equal(schema_field_type_of(&s, "smoker", 6), FIELD_BOOLEAN);
    assert_int_equal(schema_field_type_of(&s, "note", 4), FIELD_STRING);
    assert_int_equal(schema_field_type_of(&s, "other", 5), FIELD_STRING);
    assert_int_equal(schema_field_type_of(&s, "Weight", 6), FIELD_STRING);
    assert_string_equal(s.dob_format, "%m/%d/%Y");
    schema_free(&s);
    /* none of them: no map, every field a string, the dob taken as it is */
    schema_default(&s);
    assert_int_equal(s.ncolumns, 0);
    assert_int_equal(s.ntypes, 0);
    assert_null(s.dob_format);
    assert_null(schema_column_field(&s, "name", 4));
    assert_int_equal(schema_field_type_of(&s, "weight", 6), FIELD_STRING);
    schema_free(&s);
    /* formats */
    const char *good[] = {"%d.%m.%Y", "%Y-%m-%d", "%d %b %Y", "%Y%m%d", "%%%Y/%m/%d", "%b %d, %Y"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        char t[100];
        snprintf(t, sizeof t, "{\"dob_format\":\"%s\"}", good[i]);
        if (parse(&s, t, &e) != MS_OK) fail_msg("%s: %s", good[i], e.msg);
        schema_free(&s);
    }
}

static void test_parse_csv_errors(void **state)
{
    (void)state;
    expect_parse_error("{\"columns\":[\"a\"]}", "\"columns\" must be an object");
    expect_parse_error("{\"columns\":{\"A\":1}}", "schema: columns: column \"A\" must map to a field name");
    expect_parse_error("{\"columns\":{\"A\":\"\"}}", "column \"A\" must map to a field name");
    expect_parse_error("{\"columns\":{\"\":\"a\"}}", "schema: columns: a column name must be 1-1024 bytes");
    expect_parse_error("{\"columns\":{\"A\":\"a\",\"A\":\"b\"}}", "schema: columns: column \"A\" is mapped twice");
    expect_parse_error("{\"types\":\"number\"}", "\"types\" must be an object");
    expect_parse_error("{\"types\":{\"w\":\"int\"}}",
                       "schema: types: field \"w\": the type must be \"string\", \"number\" or \"boolean\"");
    expect_parse_error("{\"types\":{\"w\":\"number\",\"w\":\"boolean\"}}", "field \"w\" is typed twice");
    expect_parse_error("{\"types\":{\"dob\":\"number\"}}",
                       "field \"dob\" is the date of birth (identity): it is a string");
    expect_parse_error("{\"types\":{\"name\":\"boolean\"}}", "field \"name\" is the name (identity)");
    expect_parse_error("{\"types\":{\"record_id\":\"number\"}}", "the record id");
    expect_parse_error("{\"types\":{\"type\":\"number\"}}", "the record type");
    expect_parse_error("{\"types\":{\"at\":\"number\"},\"event_time\":\"at\"}", "field \"at\" is the event time");
    expect_parse_error("{\"dob_format\":5}", "\"dob_format\" must be a non-empty string");
    expect_parse_error("{\"dob_format\":\"%m/%d/%y\"}", "schema: \"dob_format\" has %y: a two-digit year");
    expect_parse_error("{\"dob_format\":\"%m/%d\"}", "needs exactly one year (%Y), one month (%m or %b) and one day");
    expect_parse_error("{\"dob_format\":\"%Y %Y %m %d\"}", "needs exactly one year");
    expect_parse_error("{\"dob_format\":\"%Y-%m-%d %H\"}", "has a directive other than");
    expect_parse_error("{\"dob_format\":\"%Y-%m-%d%\"}", "ends with a lone %");
    expect_parse_error("{\"dob_format\":\"%Y-%m-%d                              \"}", "longer than 32 bytes");
    /* renaming the identity field makes the old name typeable */
    schema s;
    ms_err e;
    assert_int_equal(parse(&s, "{\"identity\":{\"dob\":\"born\"},\"types\":{\"dob\":\"number\"}}", &e), MS_OK);
    schema_free(&s);
}

static void test_load_file(void **state)
{
    (void)state;
    char dir[64], path[128];
    unit_tmpdir(dir);
    snprintf(path, sizeof path, "%s/schema.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\n  \"identity\": {\"name\": \"patient_name\", \"dob\": \"birth\"},\n  \"public\": {\"blood_type\": "
          "\"copy\"}\n}\n",
          f);
    fclose(f);
    schema s;
    ms_err e = {0};
    ms_code rc = schema_load_file(&s, path, &e);
    snprintf(path, sizeof path, "%s/missing.json", dir);
    schema s2;
    ms_err e2 = {0};
    ms_code rc2 = schema_load_file(&s2, path, &e2);
    unit_rmtree(dir);
    assert_int_equal(rc, MS_OK);
    assert_string_equal(s.name_field, "patient_name");
    assert_string_equal(s.dob_field, "birth");
    assert_int_equal(s.npub, 1);
    assert_string_equal(s.pub[0].field, "blood_type");
    schema_free(&s);
    assert_int_equal(rc2, MS_EIO);
    /* the path and the reason */
    char want[200];
    snprintf(want, sizeof want, "cannot open %s: No such file or directory", path);
    assert_string_equal(e2.msg, want);
    schema s3;
    ms_err e3 = {0};
    assert_int_equal(schema_load_file(&s3, "/", &e3), MS_EIO);
    assert_string_equal(e3.msg, "cannot read /: Is a directory");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_schema),
        cmocka_unit_test(test_parse_full),
        cmocka_unit_test(test_parse_partial_keeps_defaults),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_identity_fields_cannot_be_public),
        cmocka_unit_test(test_public_limit),
        cmocka_unit_test(test_duplicate_public_member_does_not_overflow),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_byte_order_mark),
        cmocka_unit_test(test_parse_csv_keys),
        cmocka_unit_test(test_parse_csv_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
