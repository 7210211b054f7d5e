/*
 * test_deidentify.c - the public (de-identified) copies (src/deidentify.h).
 *
 * The heart of it is a property test: thousands of random records, with random extra fields (some
 * named like PHI: ssn, phone, address, mrn, email; some near misses of allow-listed names; some random)
 * holding random values (strings, numbers, nested objects and arrays), go through record_scan_one with
 * the default schema. Their public copy must hold only allow-listed keys, `ts` only as a 4-digit year,
 * and none of the values of name, dob, record_id or any other non-allow-listed field. Every PHI value
 * is built around a distinctive token (upper-case letters, or a number of 7+ digits) while allowed
 * values are lower-case words and small numbers, so a substring search cannot give false alarms.
 */
#include "unit.h"

#include "pipeline/deidentify.h"
#include "pipeline/merge.h"
#include "pipeline/identity.h"
#include "base/json_scan.h"

/* ---- the property test ---- */

typedef struct {
    unit_rng rng;
    buf text;      /* the record */
    char **tokens; /* PHI tokens that must never be public */
    size_t ntokens, cap;
    char keys[64][48];
    int nkeys;
} gen;

static void add_token(gen *g, const char *s, size_t n)
{
    if (g->ntokens == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 64;
        g->tokens = realloc(g->tokens, sizeof(char *) * g->cap);
    }
    g->tokens[g->ntokens++] = strndup(s, n);
}

static void clear_tokens(gen *g)
{
    for (size_t i = 0; i < g->ntokens; i++)
        free(g->tokens[i]);
    g->ntokens = 0;
    g->nkeys = 0;
}

static bool key_taken(gen *g, const char *k)
{
    static const char *const reserved[] = {"name", "dob", "record_id", "type", "ts", "favorite_color"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strcmp(k, reserved[i]) == 0) return true;
    for (int i = 0; i < g->nkeys; i++)
        if (strcmp(g->keys[i], k) == 0) return true;
    return false;
}

/* An upper-case token "PHI" + 9 letters, recorded, written (without quotes) to the record. */
static void put_phi_word(gen *g)
{
    char w[16] = "PHI";
    for (int i = 3; i < 12; i++)
        w[i] = (char)('A' + unit_below(&g->rng, 26));
    w[12] = 0;
    add_token(g, w, 12);
    /* the normalized (case-folded) form must not leak either */
    char lower[16];
    for (int i = 0; i < 13; i++)
        lower[i] = (char)(w[i] >= 'A' && w[i] <= 'Z' ? w[i] + 32 : w[i]);
    add_token(g, lower, 12);
    buf_put(&g->text, w, 12);
}

static void put_phi_string(gen *g)
{
    buf_putc(&g->text, '"');
    static const char *const extras[] = {"",         " ",  "\\n", "\\u00e9", "-", "@example.org", " \\\"quoted\\\" ",
                                         "\xC3\xA9", "\\/"};
    int words = 1 + (int)unit_below(&g->rng, 3);
    for (int i = 0; i < words; i++) {
        if (i) buf_puts(&g->text, extras[unit_below(&g->rng, sizeof extras / sizeof extras[0])]);
        put_phi_word(g);
    }
    buf_putc(&g->text, '"');
}

static void put_phi_number(gen *g)
{
    char n[40];
    int len = snprintf(n, sizeof n, "%s%llu", unit_below(&g->rng, 4) == 0 ? "-" : "",
                       1000000ULL + (unsigned long long)(unit_rand(&g->rng) % 9000000000ULL));
    add_token(g, n[0] == '-' ? n + 1 : n, (size_t)(n[0] == '-' ? len - 1 : len));
    buf_put(&g->text, n, (size_t)len);
    switch (unit_below(&g->rng, 4)) {
    case 0: buf_puts(&g->text, ".5"); break;
    case 1: buf_puts(&g->text, "e3"); break;
    default: break;
    }
}

static void put_phi_value(gen *g, int depth)
{
    unsigned kind = unit_below(&g->rng, depth < 3 ? 6 : 4);
    switch (kind) {
    case 0:
    case 1: put_phi_string(g); break;
    case 2: put_phi_number(g); break;
    case 3:
        /* literals carry no PHI of their own: pair them with a PHI string */
        buf_puts(&g->text, unit_below(&g->rng, 2) ? "[true,null," : "[false,");
        put_phi_string(g);
        buf_putc(&g->text, ']');
        break;
    case 4: { /* nested object, sometimes with allow-listed key names inside: nested is never public */
        static const char *const inner[] = {"favorite_color", "type", "ts", "line1", "city", "zip", "value"};
        int n = 1 + (int)unit_below(&g->rng, 3);
        buf_putc(&g->text, '{');
        for (int i = 0; i < n; i++) {
            if (i) buf_putc(&g->text, ',');
            buf_printf(&g->text, "\"%s\":", inner[unit_below(&g->rng, 7)]);
            put_phi_value(g, depth + 1);
        }
        buf_putc(&g->text, '}');
        break;
    }
    default: { /* array */
        int n = 1 + (int)unit_below(&g->rng, 3);
        buf_putc(&g->text, '[');
        for (int i = 0; i < n; i++) {
            if (i) buf_putc(&g->text, ',');
            put_phi_value(g, depth + 1);
        }
        buf_putc(&g->text, ']');
    }
    }
}

static void random_key(gen *g, char *out)
{
    static const char *const named[] = {"ssn",
                                        "phone",
                                        "address",
                                        "mrn",
                                        "email",
                                        "Name",
                                        "NAME",
                                        "DOB",
                                        "Dob",
                                        "full_name",
                                        "patient_name",
                                        "Favorite_Color",
                                        "favorite_colour",
                                        "favorite-color",
                                        "favorite_color ",
                                        " favorite_color",
                                        "favorite_colors",
                                        "favorite_colo",
                                        "Type",
                                        "types",
                                        "TS",
                                        "ts ",
                                        "tss",
                                        "timestamp",
                                        "record",
                                        "record_id_2",
                                        "public",
                                        "fields",
                                        "t",
                                        "s",
                                        "notes",
                                        "diagnosis",
                                        "insurance_id",
                                        "zip",
                                        "ip_address",
                                        "\\u0073sn",
                                        "n\\u00e4me"};
    if (unit_below(&g->rng, 2)) {
        strcpy(out, named[unit_below(&g->rng, sizeof named / sizeof named[0])]);
        return;
    }
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-. ";
    int len = 1 + (int)unit_below(&g->rng, 14);
    for (int i = 0; i < len; i++)
        out[i] = alphabet[unit_below(&g->rng, sizeof alphabet - 1)];
    out[len] = 0;
}

typedef struct {
    bool has_type, has_ts, has_color;
    char type[16];
    char color_raw[64];
    int ts_year;
} expected_public;

static const char *const colors[] = {
    "\"blue\"", "\"green\"", "\"red\"",         "42", "[\"teal\",\"navy\"]", "{\"hue\":\"amber\"}",
    "null",     "true",      "\"ultra violet\""};
static const char *const types[] = {"lab", "visit", "patient", "note", "x"};

/* Build one random record into g->text; returns what its public copy must be. */
static expected_public random_record(gen *g)
{
    expected_public want = {0};
    g->text.len = 0;
    clear_tokens(g);
    /* members in random order: collect them as separate strings, then shuffle */
    buf members[64];
    int n = 0;
    memset(members, 0, sizeof members);
    buf saved = g->text;

    /* name */
    g->text = members[n];
    buf_puts(&g->text, "\"name\":\"");
    put_phi_word(g);
    buf_putc(&g->text, ' ');
    put_phi_word(g);
    buf_putc(&g->text, '"');
    members[n++] = g->text;
    /* dob */
    g->text = members[n];
    int y = 1850 + (int)unit_below(&g->rng, 170), m = 1 + (int)unit_below(&g->rng, 12),
        d = 1 + (int)unit_below(&g->rng, 28);
    char dob[16];
    snprintf(dob, sizeof dob, "%04d-%02d-%02d", y, m, d);
    add_token(g, dob, 10);
    buf_printf(&g->text, "\"dob\":\"%s\"", dob);
    members[n++] = g->text;
    /* record_id: not public */
    if (unit_below(&g->rng, 2)) {
        g->text = members[n];
        buf_puts(&g->text, "\"record_id\":\"rid-");
        put_phi_word(g);
        buf_putc(&g->text, '"');
        members[n++] = g->text;
    }
    if (unit_below(&g->rng, 3)) {
        g->text = members[n];
        const char *t = types[unit_below(&g->rng, 5)];
        buf_printf(&g->text, "\"type\":\"%s\"", t);
        want.has_type = true;
        snprintf(want.type, sizeof want.type, "\"%s\"", t);
        members[n++] = g->text;
    }
    if (unit_below(&g->rng, 3)) {
        g->text = members[n];
        int ty = 1900 + (int)unit_below(&g->rng, 130);
        char ts[64];
        static const char *const zones[] = {"Z", "z", "+00:00", "-05:00", "+14:00", "+05:30"};
        const char *zone = zones[unit_below(&g->rng, 6)];
        snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d%s%s", ty, 1 + (int)unit_below(&g->rng, 12),
                 1 + (int)unit_below(&g->rng, 28), (int)unit_below(&g->rng, 24), (int)unit_below(&g->rng, 60),
                 (int)unit_below(&g->rng, 60), unit_below(&g->rng, 2) ? ".123456" : "", zone);
        int64_t us;
        assert_true(time_parse_rfc3339(ts, strlen(ts), &us));
        want.has_ts = true;
        want.ts_year = time_year(us);
        add_token(g, ts, 16);    /* the date and time down to the minute must not be public */
        add_token(g, ts + 4, 6); /* "-MM-DD" */
        buf_printf(&g->text, "\"ts\":\"%s\"", ts);
        members[n++] = g->text;
    }
    if (unit_below(&g->rng, 2)) {
        g->text = members[n];
        const char *c = colors[unit_below(&g->rng, sizeof colors / sizeof colors[0])];
        buf_printf(&g->text, "\"%s\":%s", unit_below(&g->rng, 4) ? "favorite_color" : "favorite\\u005fcolor", c);
        want.has_color = true;
        snprintf(want.color_raw, sizeof want.color_raw, "%s", c);
        members[n++] = g->text;
    }
    int extra = (int)unit_below(&g->rng, 13);
    for (int i = 0; i < extra && n < 60; i++) {
        char key[48];
        random_key(g, key);
        /* an escaped key is compared decoded: track the decoded form */
        char dec[48];
        size_t dl = json_string_decode(key, strlen(key), dec);
        dec[dl] = 0;
        if (key_taken(g, dec)) continue;
        strcpy(g->keys[g->nkeys++], dec);
        g->text = members[n];
        buf_printf(&g->text, "\"%s\":", key);
        put_phi_value(g, 0);
        members[n++] = g->text;
    }
    /* shuffle and join */
    for (int i = n - 1; i > 0; i--) {
        int j = (int)unit_below(&g->rng, (uint32_t)i + 1);
        buf t = members[i];
        members[i] = members[j];
        members[j] = t;
    }
    g->text = saved;
    g->text.len = 0;
    buf_putc(&g->text, '{');
    for (int i = 0; i < n; i++) {
        if (i) buf_puts(&g->text, unit_below(&g->rng, 4) ? "," : " ,\n\t");
        buf_put(&g->text, members[i].data, members[i].len);
        buf_free(&members[i]);
    }
    buf_putc(&g->text, '}');
    return want;
}

/* Check a public copy against the expectation; false with a reason in why. */
static bool public_ok(const char *pub, size_t n, const expected_public *want, gen *g, char *why, size_t cap)
{
    json_member m[8];
    json_error je;
    int k = json_scan_object(pub, n, m, 8, &je);
    if (k < 0) return snprintf(why, cap, "not a JSON object (%s): %.*s", je.msg, (int)n, pub), false;
    static const char *const order[] = {"favorite_color", "type", "ts"};
    int next = 0;
    bool seen_ts = false, seen_type = false, seen_color = false;
    for (int i = 0; i < k; i++) {
        int idx = -1;
        for (int j = 0; j < 3; j++)
            if (m[i].key_len == strlen(order[j]) && memcmp(m[i].key, order[j], m[i].key_len) == 0) idx = j;
        if (idx < 0)
            return snprintf(why, cap, "key \"%.*s\" is not allow-listed: %.*s", (int)m[i].key_len, m[i].key, (int)n,
                            pub),
                   false;
        if (idx < next) return snprintf(why, cap, "keys out of allow-list order or repeated: %.*s", (int)n, pub), false;
        next = idx + 1;
        const char *expect;
        char y[8];
        if (idx == 2) {
            seen_ts = true;
            snprintf(y, sizeof y, "\"%04d\"", want->ts_year);
            expect = y;
        } else if (idx == 1) {
            seen_type = true;
            expect = want->type;
        } else {
            seen_color = true;
            expect = want->color_raw;
        }
        if (m[i].val_len != strlen(expect) || memcmp(m[i].val, expect, m[i].val_len) != 0)
            return snprintf(why, cap, "%s published as %.*s, expected %s", order[idx], (int)m[i].val_len, m[i].val,
                            expect),
                   false;
    }
    if (seen_ts != want->has_ts || seen_type != want->has_type || seen_color != want->has_color)
        return snprintf(why, cap, "allow-listed fields missing or invented (ts %d/%d type %d/%d color %d/%d): %.*s",
                        seen_ts, want->has_ts, seen_type, want->has_type, seen_color, want->has_color, (int)n, pub),
               false;
    for (size_t i = 0; i < g->ntokens; i++)
        if (unit_has(pub, n, g->tokens[i]))
            return snprintf(why, cap, "PHI \"%s\" appears in the public copy %.*s", g->tokens[i], (int)n, pub), false;
    return true;
}

/* The public projection of the state made of records recs[0..n) merged in that order (each a later
 * event than the one before); record i's body stands at position i MiB of the log. */
static void project_records(const schema *sc, const parsed_record *recs, int n, arena *mem, buf *out)
{
    merge_result m = {0};
    for (int i = 0; i < n; i++) {
        merge_source src = {.fields = recs[i].fields,
                            .nfields = recs[i].nfields,
                            .body = recs[i].body,
                            .body_len = recs[i].body_len,
                            .body_pos = (uint64_t)i << 20,
                            .ts = i,
                            .valid_from = i};
        merge_result next;
        merge_apply(sc, m.fields, m.nfields, &src, mem, &next);
        m = next;
    }
    const char **vals = calloc(m.nfields ? m.nfields : 1, sizeof *vals);
    for (uint32_t j = 0; j < m.nfields; j++)
        vals[j] = recs[m.fields[j].pos >> 20].body + (m.fields[j].pos & ((1u << 20) - 1));
    deid_patient_fields(sc, NULL, m.fields, m.nfields, vals, out);
    free(vals);
}

typedef struct {
    int records, with_type, with_ts, with_color, many_extras, failures;
    char first_failure[1024];
} property_stats;

/* Run the property over `iterations` random records with schema sc. */
static void run_property(const schema *sc, int iterations, uint64_t seed, property_stats *st)
{
    scan_config cfg = unit_scan_config(sc);
    gen g = {.rng = {seed}};
    arena mem = {0};
    memset(st, 0, sizeof *st);
    for (int it = 0; it < iterations; it++) {
        expected_public want = random_record(&g);
        parsed_record r;
        record_prepare_one(&cfg, g.text.data, g.text.len, 1, &mem, &r);
        char why[400];
        bool ok = true;
        if (r.rejected) {
            snprintf(why, sizeof why, "generated record rejected (%s)", r.error);
            ok = false;
        } else {
            ok = public_ok(r.public_fields, r.public_fields_len, &want, &g, why, sizeof why);
            /* the patient projection of the same record for a new patient: only favorite_color */
            buf pp = {0};
            project_records(sc, &r, 1, &mem, &pp);
            expected_public pw = want;
            pw.has_ts = pw.has_type = false;
            if (ok && !public_ok(pp.data, pp.len, &pw, &g, why, sizeof why)) ok = false;
            buf_free(&pp);
        }
        st->records++;
        st->with_type += want.has_type;
        st->with_ts += want.has_ts;
        st->with_color += want.has_color;
        st->many_extras += g.nkeys >= 5;
        if (!ok && st->failures++ == 0)
            snprintf(st->first_failure, sizeof st->first_failure, "iteration %d: %s; record %.200s", it, why,
                     g.text.data);
        if (it % 256 == 255) arena_free(&mem);
    }
    arena_free(&mem);
    clear_tokens(&g);
    free(g.tokens);
    buf_free(&g.text);
}

static void test_public_copy_property(void **state)
{
    (void)state;
    schema sc;
    schema_default(&sc);
    property_stats st;
    run_property(&sc, 5000, 0x5eed, &st);
    schema_free(&sc);
    if (st.failures)
        fail_msg("%d of %d records broke the property; first: %s", st.failures, st.records, st.first_failure);
    /* the generator covers what it should */
    assert_int_equal(st.records, 5000);
    assert_true(st.with_type > 2500 && st.with_ts > 2500 && st.with_color > 1500 && st.many_extras > 1000);
}

/* The property check itself can fail: with a schema that publishes ts raw and copies ssn, it must
 * find violations. */
static void test_property_detects_leaks(void **state)
{
    (void)state;
    const char *leaky[] = {
        "{\"public\":{\"favorite_color\":\"copy\",\"type\":\"copy\",\"ts\":\"copy\"}}",
        "{\"public\":{\"favorite_color\":\"copy\",\"type\":\"copy\",\"ts\":\"year\",\"ssn\":\"copy\","
        "\"phone\":\"copy\",\"record_id\":\"copy\"}}"};
    for (size_t i = 0; i < 2; i++) {
        schema sc;
        ms_err e;
        assert_int_equal(schema_parse(&sc, leaky[i], strlen(leaky[i]), &e), MS_OK);
        property_stats st;
        run_property(&sc, 300, 99 + i, &st);
        schema_free(&sc);
        assert_true(st.failures > 30);
    }
}

/* ---- deid_record_fields with transforms ---- */

typedef struct {
    schema sc;
    scan_config cfg;
    arena mem;
    buf out;
} fixture;

static int setup_custom(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    const char *text =
        "{\"public\":{\"visit_date\":\"year\",\"eye_color\":\"copy\",\"type\":\"copy\",\"ts\":\"year\"}}";
    ms_err e;
    if (schema_parse(&f->sc, text, strlen(text), &e) != MS_OK) return -1;
    f->cfg = unit_scan_config(&f->sc);
    *state = f;
    return 0;
}

static int setup_default(void **state)
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
    buf_free(&f->out);
    schema_free(&f->sc);
    free(f);
    return 0;
}

#define ID "\"name\":\"Ana\",\"dob\":\"1990-01-01\""

static void expect_record_public(fixture *f, const char *record, const char *want)
{
    parsed_record r = unit_scan_ok(&f->cfg, &f->mem, record);
    assert_span_equal(r.public_fields, r.public_fields_len, want);
    f->out.len = 0;
    deid_ctx cx = {.event_us = r.ts_us};
    deid_record_fields(&f->sc, &cx, r.fields, r.nfields, &f->out);
    assert_span_equal(f->out.data, f->out.len, want);
}

static void test_record_transforms(void **state)
{
    fixture *f = *state;
    expect_record_public(f, "{" ID ",\"visit_date\":\"2024-03-01\",\"eye_color\":\"green\"}",
                         "{\"visit_date\":\"2024\",\"eye_color\":\"green\"}");
    expect_record_public(f, "{" ID ",\"visit_date\":\"2024-03-01T10:00:00Z\"}", "{\"visit_date\":\"2024\"}");
    expect_record_public(f, "{" ID ",\"visit_date\":\"1999-12-31T10:00:00.5-05:00\"}", "{\"visit_date\":\"1999\"}");
    /* a value the transform cannot handle is left out, never copied raw; the JSON stays well-formed */
    expect_record_public(f, "{" ID ",\"visit_date\":\"March 2024\",\"eye_color\":\"green\"}",
                         "{\"eye_color\":\"green\"}");
    expect_record_public(f, "{" ID ",\"visit_date\":\"2024-02-30\",\"eye_color\":\"green\"}",
                         "{\"eye_color\":\"green\"}");
    expect_record_public(f, "{" ID ",\"visit_date\":20240301}", "{}");
    expect_record_public(f, "{" ID ",\"visit_date\":{\"y\":\"2024-03-01\"}}", "{}");
    expect_record_public(f, "{" ID ",\"visit_date\":\"\"}", "{}");
    expect_record_public(f, "{" ID ",\"visit_date\":\"2024\"}", "{}");
    expect_record_public(f, "{" ID ",\"visit_date\":null,\"type\":\"lab\"}", "{\"type\":\"lab\"}");
    /* copy keeps any JSON value as is; allow-list order, not input order */
    expect_record_public(
        f, "{\"ts\":\"2020-05-05T05:05:05Z\",\"eye_color\":{\"l\": \"blue\", \"r\": [1, 2]}," ID ",\"type\":\"lab\"}",
        "{\"eye_color\":{\"l\": \"blue\", \"r\": [1, 2]},\"type\":\"lab\",\"ts\":\"2020\"}");
    /* nothing allow-listed: an empty object */
    expect_record_public(f, "{" ID ",\"ssn\":\"123-45-6789\"}", "{}");
}

static void test_record_fields_default_schema(void **state)
{
    fixture *f = *state;
    expect_record_public(
        f, "{" ID ",\"favorite_color\":\"blue\",\"type\":\"visit\",\"ts\":\"2026-01-01T00:00:00Z\",\"mrn\":\"M-1\"}",
        "{\"favorite_color\":\"blue\",\"type\":\"visit\",\"ts\":\"2026\"}");
    /* the default ts (ingest time) is not a field of the record: not published */
    expect_record_public(f, "{" ID ",\"type\":\"visit\"}", "{\"type\":\"visit\"}");
    /* an escaped key that decodes to an allow-listed name is that field */
    expect_record_public(f, "{" ID ",\"favorite\\u005fcolor\":\"red\"}", "{\"favorite_color\":\"red\"}");
    /* near misses are PHI */
    expect_record_public(
        f, "{" ID ",\"Favorite_Color\":\"red\",\"favorite_color \":\"red\",\"TS\":\"2026-01-01T00:00:00Z\"}", "{}");
}

/* ---- deid_patient_fields ---- */

/* The projection of the state after `records` (NULL-terminated, oldest event first). */
static void expect_patient_public(fixture *f, const char *const *records, const char *want)
{
    parsed_record r[8];
    int n = 0;
    while (records[n])
        r[n] = unit_scan_ok(&f->cfg, &f->mem, records[n]), n++;
    f->out.len = 0;
    project_records(&f->sc, r, n, &f->mem, &f->out);
    if (f->out.len != strlen(want) || memcmp(f->out.data, want, f->out.len) != 0)
        fail_msg("records %s ... -> %.*s, expected %s", records[0], (int)f->out.len, f->out.data ? f->out.data : "",
                 want);
}

#define RECORDS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_patient_fields_default_schema(void **state)
{
    fixture *f = *state;
    /* a new patient: record-level fields (type, ts) are not patient state */
    expect_patient_public(
        f, RECORDS("{" ID ",\"favorite_color\":\"blue\",\"type\":\"lab\",\"ts\":\"2026-01-01T00:00:00Z\"}"),
        "{\"favorite_color\":\"blue\"}");
    expect_patient_public(f, RECORDS("{" ID ",\"type\":\"lab\"}"), "{}");
    /* a record without the field keeps the previous value; a record with it replaces it */
    expect_patient_public(f, RECORDS("{" ID ",\"favorite_color\":\"blue\"}", "{" ID ",\"allergy\":\"PHI\"}"),
                          "{\"favorite_color\":\"blue\"}");
    expect_patient_public(f, RECORDS("{" ID ",\"favorite_color\":\"blue\"}", "{" ID ",\"favorite_color\":\"red\"}"),
                          "{\"favorite_color\":\"red\"}");
    expect_patient_public(f, RECORDS("{" ID ",\"favorite_color\":\"blue\"}", "{" ID ",\"favorite_color\":null}"),
                          "{\"favorite_color\":null}");
    /* PHI fields of the state never appear */
    expect_patient_public(f, RECORDS("{" ID ",\"favorite_color\":\"blue\",\"ssn\":\"1\"}", "{" ID "}"),
                          "{\"favorite_color\":\"blue\"}");
}

static void test_patient_fields_transforms(void **state)
{
    fixture *f = *state;
    const char *prev = "{" ID ",\"visit_date\":\"2020-05-05\",\"eye_color\":\"green\"}";
    expect_patient_public(f, RECORDS(prev, "{" ID ",\"visit_date\":\"2024-03-01\"}"),
                          "{\"visit_date\":\"2024\",\"eye_color\":\"green\"}");
    expect_patient_public(f, RECORDS(prev, "{" ID ",\"eye_color\":\"brown\"}"),
                          "{\"visit_date\":\"2020\",\"eye_color\":\"brown\"}");
    /* the record sets the field to a value that cannot be published: the old public value is gone too
     * (the patient's value is now the new one), and the raw value is not copied */
    expect_patient_public(f, RECORDS(prev, "{" ID ",\"visit_date\":\"last March\"}"), "{\"eye_color\":\"green\"}");
    expect_patient_public(f, RECORDS(prev, "{" ID ",\"type\":\"lab\",\"ts\":\"2021-01-01T00:00:00Z\"}"),
                          "{\"visit_date\":\"2020\",\"eye_color\":\"green\"}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_public_copy_property),
        cmocka_unit_test(test_property_detects_leaks),
        cmocka_unit_test_setup_teardown(test_record_transforms, setup_custom, teardown),
        cmocka_unit_test_setup_teardown(test_record_fields_default_schema, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_patient_fields_default_schema, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_patient_fields_transforms, setup_custom, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
