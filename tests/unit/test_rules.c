/*
 * test_rules.c - the signal rules (notify/rules.h) driven directly over buffers: parsing and its refusals
 * (each naming the rule and the member), whole words, case, white space in phrases, non-ASCII letters,
 * regexes, the types filter, fields (strings and arrays of strings; other fields never match), Hyperscan's
 * compile errors as messages naming the rule, many rules in one set, a regex compiled alone (the bounded check's
 * step) and the cap on a set's phrases and regexes. An empty rules file (its buf's data
 * NULL, as the notifier reads it) is refused without arithmetic on the NULL pointer (fuzz/fuzz_files.c).
 */
#include "unit.h"

#include "notify/rules.h"

#include <string.h>

static rule_def parse_ok(const char *json)
{
    rule_def r;
    ms_err e = {0};
    if (rule_parse(json, strlen(json), &r, &e) != MS_OK) fail_msg("rule refused: %s (%s)", e.msg, json);
    return r;
}

static void refused(const char *json, const char *want)
{
    rule_def r;
    ms_err e = {0};
    if (rule_parse(json, strlen(json), &r, &e) == MS_OK) {
        rule_def_free(&r);
        fail_msg("rule accepted: %s", json);
    }
    assert_int_equal(e.code, MS_EINVAL);
    if (!strstr(e.msg, want)) fail_msg("message \"%s\" lacks \"%s\"", e.msg, want);
}

/* A set of the given rules (JSON texts, NULL-terminated), compiled. */
static rule_set *set_of(const char *const *json)
{
    rule_def defs[64];
    const rule_def *ptr[64] = {0};
    size_t n = 0;
    for (; json[n]; n++) {
        defs[n] = parse_ok(json[n]);
        ptr[n] = &defs[n];
    }
    rule_set *rs = NULL;
    ms_err e = {0};
    ms_code rc = rule_set_compile(ptr, n, &rs, &e);
    for (size_t i = 0; i < n; i++)
        rule_def_free(&defs[i]);
    if (rc != MS_OK) fail_msg("compile: %s", e.msg);
    return rs;
}

/* The hits of one record (type, JSON body) as "rule/field,rule/field". */
static const char *hits_of(const rule_set *rs, const char *type, const char *body)
{
    static char out[1024];
    rule_scratch *sc = rule_scratch_new();
    ms_err e;
    assert_int_equal(rule_scratch_fit(sc, rs, &e), MS_OK);
    const rule_hit *h;
    size_t n = rule_set_match_record(rs, sc, type, strlen(type), body, strlen(body), &h);
    out[0] = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(out);
        snprintf(out + l, sizeof out - l, "%s%s/%s", i ? "," : "", rule_set_rule(rs, h[i].rule)->name,
                 rule_set_field(rs, h[i].field));
    }
    rule_scratch_free(sc);
    return out;
}

static void test_parse_and_canonical_json(void **state)
{
    (void)state;
    rule_def r = parse_ok("{\"name\":\"sepsis\",\"fields\":[\"notes\"],\"any\":[\"sepsis\",\"septic shock\"],"
                          "\"regex\":\"lactate\\\\s*>\\\\s*4\",\"types\":[\"note\"]}");
    assert_string_equal(r.name, "sepsis");
    assert_int_equal(r.nany, 2);
    assert_int_equal(r.nregex, 1);
    assert_string_equal(r.regex[0], "lactate\\s*>\\s*4");
    assert_true(r.whole_words);
    buf b = {0};
    rule_def_json(&r, &b);
    assert_string_equal(b.data, "{\"name\":\"sepsis\",\"fields\":[\"notes\"],\"any\":[\"sepsis\",\"septic shock\"],"
                                "\"regex\":[\"lactate\\\\s*>\\\\s*4\"],\"types\":[\"note\"],\"whole_words\":true}");
    /* the canonical text parses back to the same rule */
    rule_def again = parse_ok(b.data);
    buf b2 = {0};
    rule_def_json(&again, &b2);
    assert_string_equal(b.data, b2.data);
    buf_free(&b);
    buf_free(&b2);
    rule_def_free(&again);
    rule_def_free(&r);
}

static void test_parse_refusals_name_the_problem(void **state)
{
    (void)state;
    refused("[]", "rule:");
    refused("{\"fields\":[\"notes\"],\"any\":[\"x\"]}", "name: required");
    refused("{\"name\":\"a b\",\"fields\":[\"notes\"],\"any\":[\"x\"]}", "name: 1-64 characters");
    /* a URL path segment that clients resolve away (RFC 3986): /v1/rules/.. was /v1/ to curl, fetch and the console */
    refused("{\"name\":\"..\",\"fields\":[\"notes\"],\"any\":[\"x\"]}", "name: \".\" and \"..\"");
    refused("{\"name\":\".\",\"fields\":[\"notes\"],\"any\":[\"x\"]}", "name: \".\" and \"..\"");
    refused("{\"name\":\"r\",\"any\":[\"x\"]}", "rule \"r\": fields: at least one");
    refused("{\"name\":\"r\",\"fields\":[]}", "rule \"r\": fields: at least one");
    refused("{\"name\":\"r\",\"fields\":[\"notes\"]}", "rule \"r\": at least one phrase");
    refused("{\"name\":\"r\",\"fields\":\"notes\",\"any\":[\"x\"]}", "rule \"r\": fields: expected an array");
    refused("{\"name\":\"r\",\"fields\":[\"notes\"],\"any\":[\"x\",3]}", "rule \"r\": any 2: not a string");
    refused("{\"name\":\"r\",\"fields\":[\"notes\"],\"any\":[\"  \"]}", "rule \"r\": any 1: empty");
    refused("{\"name\":\"r\",\"fields\":[\"notes\"],\"any\":[\"x\"],\"anyy\":[\"y\"]}", "unknown member \"anyy\"");
    refused("{\"name\":\"r\",\"fields\":[\"notes\"],\"any\":[\"x\"],\"whole_words\":1}", "whole_words: expected");
    refused("{\"name\":\"r\",\"fields\":[\"notes\"],\"any\":[\"x\"],\"any\":[\"y\"]}", "any: given twice");
    refused("{\"name\":\"r\",\"fields\":[\"notes\"],\"any\":[\"a\\u0000b\"]}", "NUL");
    char big[400];
    snprintf(big, sizeof big, "{\"name\":\"r\",\"fields\":[\"n\"],\"any\":[\"%0300d\"]}", 0);
    refused(big, "any 1: longer than 256 bytes");
}

static void test_whole_words_case_and_space(void **state)
{
    (void)state;
    const char *rules[] = {"{\"name\":\"cp\",\"fields\":[\"notes\"],\"any\":[\"chest pain\"]}", NULL};
    rule_set *rs = set_of(rules);
    assert_string_equal(hits_of(rs, "note", "{\"notes\":\"Pt reports CHEST PAIN since noon\"}"), "cp/notes");
    assert_string_equal(hits_of(rs, "note", "{\"notes\":\"chest pain\"}"), "cp/notes"); /* at both ends */
    assert_string_equal(hits_of(rs, "note", "{\"notes\":\"chest\\n   pain.\"}"), "cp/notes");
    assert_string_equal(hits_of(rs, "note", "{\"notes\":\"(Chest Pain)\"}"), "cp/notes");
    assert_string_equal(hits_of(rs, "note", "{\"notes\":\"chest painful\"}"), "");
    assert_string_equal(hits_of(rs, "note", "{\"notes\":\"heartchest pain\"}"), "");
    assert_string_equal(hits_of(rs, "note", "{\"notes\":\"chest_pain\"}"), "");
    assert_string_equal(hits_of(rs, "note", "{\"notes\":\"chestpain\"}"), "");
    assert_string_equal(hits_of(rs, "note", "{\"notes\":\"nothing to see\"}"), "");
    rule_set_free(rs);

    const char *sub[] = {"{\"name\":\"cp\",\"fields\":[\"notes\"],\"any\":[\"chest pain\"],\"whole_words\":false}",
                         NULL};
    rs = set_of(sub);
    assert_string_equal(hits_of(rs, "note", "{\"notes\":\"chest painful\"}"), "cp/notes");
    rule_set_free(rs);
}

static void test_metacharacters_are_literal(void **state)
{
    (void)state;
    const char *rules[] = {"{\"name\":\"m\",\"fields\":[\"notes\"],\"any\":[\"a.b (c)*\",\"c++\"]}", NULL};
    rule_set *rs = set_of(rules);
    assert_string_equal(hits_of(rs, "x", "{\"notes\":\"see a.b (c)* here\"}"), "m/notes");
    assert_string_equal(hits_of(rs, "x", "{\"notes\":\"see axb (c) here\"}"), "");
    assert_string_equal(hits_of(rs, "x", "{\"notes\":\"write c++ code\"}"), "m/notes");
    assert_string_equal(hits_of(rs, "x", "{\"notes\":\"write c+ code\"}"), "");
    rule_set_free(rs);

    /* whole words at a phrase's edges that are not word characters too: neither preceded nor followed by one */
    const char *edges[] = {"{\"name\":\"e\",\"fields\":[\"notes\"],\"any\":[\"c++\",\"#covid\"]}", NULL};
    rs = set_of(edges);
    assert_string_equal(hits_of(rs, "x", "{\"notes\":\"c++\"}"), "e/notes");
    assert_string_equal(hits_of(rs, "x", "{\"notes\":\"(c++, #covid)\"}"), "e/notes");
    assert_string_equal(hits_of(rs, "x", "{\"notes\":\"c++x\"}"), "");
    assert_string_equal(hits_of(rs, "x", "{\"notes\":\"c++é\"}"), "");
    assert_string_equal(hits_of(rs, "x", "{\"notes\":\"a#covid\"}"), "");
    assert_string_equal(hits_of(rs, "x", "{\"notes\":\"_#covid\"}"), "");
    rule_set_free(rs);
}

static void test_non_ascii_letters(void **state)
{
    (void)state;
    const char *rules[] = {"{\"name\":\"fr\",\"fields\":[\"notes\"],\"any\":[\"fièvre\",\"caf\"]}", NULL};
    rule_set *rs = set_of(rules);
    assert_string_equal(hits_of(rs, "x", "{\"notes\":\"forte FIÈVRE ce matin\"}"), "fr/notes");
    assert_string_equal(hits_of(rs, "x", "{\"notes\":\"Fièvre\"}"), "fr/notes");
    assert_string_equal(hits_of(rs, "x", "{\"notes\":\"un café\"}"), "");              /* é is a word character */
    assert_string_equal(hits_of(rs, "x", "{\"notes\":\"fi\\u00e8vre\"}"), "fr/notes"); /* JSON escapes decoded */
    rule_set_free(rs);
}

static void test_regex_types_and_fields(void **state)
{
    (void)state;
    const char *rules[] = {
        "{\"name\":\"lact\",\"fields\":[\"notes\",\"summary\"],\"regex\":[\"lactate\\\\s*[>=]\\\\s*[4-9]\"]}",
        "{\"name\":\"notes_only\",\"fields\":[\"notes\"],\"any\":[\"sepsis\"],\"types\":[\"note\",\"discharge\"]}",
        "{\"name\":\"codes\",\"fields\":[\"codes\"],\"any\":[\"A41\"]}", NULL};
    rule_set *rs = set_of(rules);
    assert_int_equal(rule_set_field_count(rs), 3);
    assert_string_equal(hits_of(rs, "lab", "{\"notes\":\"LACTATE > 5 mmol\"}"), "lact/notes");
    assert_string_equal(hits_of(rs, "lab", "{\"summary\":\"lactate=7\",\"notes\":\"lactate 2\"}"), "lact/summary");
    /* types: sepsis in a lab record does not count, in a note it does */
    assert_string_equal(hits_of(rs, "lab", "{\"notes\":\"sepsis\"}"), "");
    assert_string_equal(hits_of(rs, "note", "{\"notes\":\"sepsis\"}"), "notes_only/notes");
    assert_string_equal(hits_of(rs, "discharge", "{\"notes\":\"sepsis; lactate >9\"}"), "lact/notes,notes_only/notes");
    /* a field the rule does not name never matches, even with the words in it */
    assert_string_equal(hits_of(rs, "note", "{\"other\":\"sepsis\",\"summary\":\"sepsis\"}"), "");
    /* arrays of strings: each string; other values never */
    assert_string_equal(hits_of(rs, "x", "{\"codes\":[\"I10\",\"a41\"]}"), "codes/codes");
    assert_string_equal(hits_of(rs, "x", "{\"codes\":{\"x\":\"A41\"}}"), "");
    assert_string_equal(hits_of(rs, "x", "{\"codes\":41}"), "");
    /* a field in both notes and summary gives one hit per field */
    assert_string_equal(hits_of(rs, "x", "{\"notes\":\"lactate>8\",\"summary\":\"lactate 9 lactate>8\"}"),
                        "lact/notes,lact/summary");
    /* not a JSON object: nothing */
    assert_string_equal(hits_of(rs, "x", "not json sepsis"), "");
    rule_set_free(rs);
}

static void test_match_texts(void **state)
{
    (void)state;
    const char *rules[] = {"{\"name\":\"a\",\"fields\":[\"f\"],\"any\":[\"alpha\"]}",
                           "{\"name\":\"b\",\"fields\":[\"f\",\"g\"],\"any\":[\"beta\"]}", NULL};
    rule_set *rs = set_of(rules);
    rule_scratch *sc = rule_scratch_new();
    ms_err e;
    assert_int_equal(rule_scratch_fit(sc, rs, &e), MS_OK);
    rule_text t[] = {{"f", 1, "alpha and beta", 14}, {"g", 1, "beta", 4}, {"h", 1, "alpha", 5}, {"f", 1, "beta", 4}};
    const rule_hit *h;
    size_t n = rule_set_match_texts(rs, sc, "x", 1, t, 4, &h);
    assert_int_equal(n, 3); /* a/f, b/f (once, though twice in f), b/g */
    assert_int_equal(h[0].rule, 0);
    assert_int_equal(h[1].rule, 1);
    assert_string_equal(rule_set_field(rs, h[1].field), "f");
    assert_string_equal(rule_set_field(rs, h[2].field), "g");
    assert_true(rule_scratch_scanned(sc) >= 14 + 4 + 4);
    rule_scratch_free(sc);
    rule_set_free(rs);
}

static void compile_refused(const char *json, const char *want)
{
    rule_def r = parse_ok(json);
    const rule_def *p = &r;
    rule_set *rs = NULL;
    ms_err e = {0};
    ms_code rc = rule_set_compile(&p, 1, &rs, &e);
    rule_def_free(&r);
    if (rc == MS_OK) {
        rule_set_free(rs);
        fail_msg("compiled: %s", json);
    }
    assert_int_equal(rc, MS_EINVAL);
    if (!strstr(e.msg, want)) fail_msg("message \"%s\" lacks \"%s\"", e.msg, want);
}

static void test_hyperscan_compile_errors(void **state)
{
    (void)state;
    compile_refused("{\"name\":\"bad\",\"fields\":[\"n\"],\"any\":[\"ok\"],\"regex\":[\"fine\",\"a(\"]}",
                    "rule \"bad\": regex 2: Missing close parenthesis");
    compile_refused("{\"name\":\"bref\",\"fields\":[\"n\"],\"regex\":\"(a)\\\\1\"}", "rule \"bref\": regex 1: Back");
    compile_refused("{\"name\":\"lb\",\"fields\":[\"n\"],\"regex\":\"(?<!x)abc\"}", "rule \"lb\": regex 1:");
    compile_refused("{\"name\":\"empty\",\"fields\":[\"n\"],\"regex\":\"x?\"}", "rule \"empty\": regex 1:");
    compile_refused("{\"name\":\"rep\",\"fields\":[\"n\"],\"regex\":\"a{1,100000}\"}", "rule \"rep\": regex 1:");
    /* two rules of one name */
    rule_def a = parse_ok("{\"name\":\"same\",\"fields\":[\"n\"],\"any\":[\"x\"]}");
    const rule_def *two[] = {&a, &a};
    rule_set *rs;
    ms_err e;
    assert_int_equal(rule_set_compile(two, 2, &rs, &e), MS_EINVAL);
    assert_non_null(strstr(e.msg, "rule \"same\": defined twice"));
    rule_def_free(&a);
    /* the empty set compiles and matches nothing */
    assert_int_equal(rule_set_compile(NULL, 0, &rs, &e), MS_OK);
    assert_string_equal(hits_of(rs, "x", "{\"notes\":\"x\"}"), "");
    rule_set_free(rs);
}

static void test_many_rules(void **state)
{
    (void)state;
    /* 300 rules of one word each, plus a regex: each word finds its own rule only */
    enum { N = 300 };
    rule_def defs[N + 1];
    const rule_def *ptr[N + 1];
    char json[256];
    for (int i = 0; i < N; i++) {
        snprintf(json, sizeof json, "{\"name\":\"r%d\",\"fields\":[\"notes\"],\"any\":[\"word%dx\"]}", i, i);
        defs[i] = parse_ok(json);
        ptr[i] = &defs[i];
    }
    defs[N] = parse_ok("{\"name\":\"rx\",\"fields\":[\"notes\"],\"regex\":\"\\\\bq[0-9]{3}z\\\\b\"}");
    ptr[N] = &defs[N];
    rule_set *rs;
    ms_err e;
    assert_int_equal(rule_set_compile(ptr, N + 1, &rs, &e), MS_OK);
    for (int i = 0; i < N + 1; i++)
        rule_def_free(&defs[i]);
    assert_int_equal(rule_set_count(rs), N + 1);
    assert_true(rule_set_bytes(rs) > 0);
    assert_int_equal(rule_set_find(rs, "r17"), 17);
    assert_int_equal(rule_set_find(rs, "nope"), -1);
    assert_string_equal(hits_of(rs, "x", "{\"notes\":\"a WORD17X b word170x q123z\"}"),
                        "r17/notes,r170/notes,rx/notes");
    assert_string_equal(hits_of(rs, "x", "{\"notes\":\"word17 word17xx q12z\"}"), "");
    rule_set_free(rs);
}

/* A regex compiled alone with the set's flags (what the notifier's bounded check runs in its helper); and the
 * cap on a set's phrases and regexes, refused before Hyperscan compiles anything. */
static void test_regex_alone_and_the_set_cap(void **state)
{
    (void)state;
    char why[256] = "";
    assert_true(rule_regex_compiles("\\bsep(sis|tic)\\b", why, sizeof why));
    assert_false(rule_regex_compiles("a(", why, sizeof why));
    assert_non_null(strstr(why, "Missing close parenthesis"));
    assert_false(rule_regex_compiles("x*", why, sizeof why)); /* matches the empty string, as in a set */
    /* 11 rules of 1,000 phrases: over RULE_SET_EXPRS_MAX together, each fine alone */
    buf json = {0};
    buf_puts(&json, "{\"name\":\"big\",\"fields\":[\"n\"],\"any\":[");
    for (int i = 0; i < RULE_PHRASES_MAX; i++)
        buf_printf(&json, "%s\"w%d\"", i ? "," : "", i);
    buf_puts(&json, "]}");
    rule_def one;
    ms_err e = {0};
    assert_int_equal(rule_parse(json.data, json.len, &one, &e), MS_OK);
    buf_free(&json);
    enum { N = RULE_SET_EXPRS_MAX / RULE_PHRASES_MAX + 1 };
    rule_def defs[N];
    const rule_def *ptr[N];
    for (int i = 0; i < N; i++) {
        rule_def_copy(&defs[i], &one);
        snprintf(defs[i].name, sizeof defs[i].name, "big%d", i);
        ptr[i] = &defs[i];
    }
    rule_set *rs = NULL;
    assert_int_equal(rule_set_compile(ptr, N, &rs, &e), MS_EINVAL);
    assert_null(rs);
    assert_non_null(
        strstr(e.msg, "rules: at most 10000 phrases and regexes in all the rules in force (these have 11000)"));
    for (int i = 0; i < N; i++)
        rule_def_free(&defs[i]);
    rule_def_free(&one);
}

/* An empty --rules file: buf_read_file gives no bytes (data NULL), which rules_parse_list refuses as it refuses
 * any text that is not an array, with no pointer arithmetic on NULL (UBSan, found by fuzz/fuzz_files.c). */
static void test_empty_rules_file(void **state)
{
    (void)state;
    rule_def *v = NULL;
    size_t n = 0;
    ms_err e = {0};
    assert_int_equal(rules_parse_list(NULL, 0, &v, &n, &e), MS_EINVAL);
    assert_string_equal(e.msg, "expected a JSON array of rules");
    assert_null(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_canonical_json),
        cmocka_unit_test(test_parse_refusals_name_the_problem),
        cmocka_unit_test(test_whole_words_case_and_space),
        cmocka_unit_test(test_metacharacters_are_literal),
        cmocka_unit_test(test_non_ascii_letters),
        cmocka_unit_test(test_regex_types_and_fields),
        cmocka_unit_test(test_match_texts),
        cmocka_unit_test(test_hyperscan_compile_errors),
        cmocka_unit_test(test_many_rules),
        cmocka_unit_test(test_regex_alone_and_the_set_cap),
        cmocka_unit_test(test_empty_rules_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
