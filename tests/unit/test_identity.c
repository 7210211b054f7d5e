/*
 * test_identity.c - name normalization, identity keys and patient ids (src/identity.h).
 */
#include "unit.h"

#include "pipeline/identity.h"

/* Normalize s; returns the length (or -1) and leaves the text NUL-terminated in out (257 bytes). */
static int norm(const char *s, char *out, const char **why)
{
    const char *w = NULL;
    char tmp[IDENTITY_NAME_MAX];
    int n = identity_normalize_name(s, strlen(s), tmp, &w);
    if (why) *why = w;
    if (n >= 0) {
        assert_in_range(n, 1, IDENTITY_NAME_MAX);
        memcpy(out, tmp, (size_t)n);
        out[n] = 0;
    } else {
        out[0] = 0;
        assert_non_null(w);
    }
    return n;
}

static void expect_norm(const char *in, const char *want)
{
    char out[IDENTITY_NAME_MAX + 1];
    const char *why;
    int n = norm(in, out, &why);
    if (n < 0) fail_msg("normalizing \"%s\" failed: %s", in, why);
    if (strcmp(out, want) != 0) fail_msg("\"%s\" normalized to \"%s\", expected \"%s\"", in, out, want);
}

static void expect_same(const char *a, const char *b)
{
    char x[IDENTITY_NAME_MAX + 1], y[IDENTITY_NAME_MAX + 1];
    const char *why;
    if (norm(a, x, &why) < 0) fail_msg("\"%s\": %s", a, why);
    if (norm(b, y, &why) < 0) fail_msg("\"%s\": %s", b, why);
    if (strcmp(x, y) != 0) fail_msg("\"%s\" -> \"%s\" but \"%s\" -> \"%s\"", a, x, b, y);
}

static void expect_reject(const char *in, size_t len, const char *reason)
{
    char out[IDENTITY_NAME_MAX];
    const char *why = NULL;
    int n = identity_normalize_name(in, len, out, &why);
    if (n != -1) fail_msg("accepted a name (%zu bytes) that should fail with \"%s\"", len, reason);
    assert_non_null(why);
    if (strcmp(why, reason) != 0) fail_msg("reason \"%s\", expected \"%s\"", why, reason);
}

static void test_whitespace_and_case(void **state)
{
    (void)state;
    expect_same("  Ana   MARÍA ", "ana maría");
    expect_norm("  Ana   MARÍA ", "ana mar\xC3\xAD"
                                  "a");
    expect_norm("Ana\tMaria\r\nLopez", "ana maria lopez");
    expect_norm("x", "x");
    expect_norm(" \t x \t ", "x");
    expect_same("JOSÉ", "josé");
    expect_same("ΣΊΣΥΦΟΣ", "σίσυφοσ"); /* final sigma folds to sigma */
}

static void test_nfkc(void **state)
{
    (void)state;
    expect_norm("\xEF\xBC\xA1\xEF\xBC\xAE\xEF\xBC\xA1", "ana"); /* fullwidth ＡＮＡ */
    expect_same("ＡＮＡ", "ana");
    expect_norm("\xEF\xAC\x81", "fi"); /* ligature ﬁ */
    expect_same("ﬁona", "Fiona");
    expect_same("e\xCC\x81", "\xC3\xA9");       /* combining acute vs precomposed é */
    expect_norm("Jose\xCC\x81", "jos\xC3\xA9"); /* composed after normalization */
    expect_norm("\xE2\x84\xAB", "\xC3\xA5");    /* Angstrom sign -> å */
    expect_same("Ana\xC2\xA0Mar\xC3\xAD"
                "a",
                "ana maría"); /* no-break space is a space after NFKC */
    expect_same("Ana\xE3\x80\x80Mar\xC3\xAD"
                "a",
                "ana maría"); /* ideographic space too */
    expect_same("Ana \xC2\xA0 \xC2\xA0Mar\xC3\xAD"
                "a",
                "ana maría");
}

static void test_case_fold(void **state)
{
    (void)state;
    expect_norm("Straße", "strasse");
    expect_same("STRASSE", "straße");
    expect_same("ß", "SS");
    expect_same("ẞ", "ss"); /* capital sharp s */
}

static void test_ignorables(void **state)
{
    (void)state;
    expect_same("a\xE2\x80\x8Bna", "ana"); /* zero-width space */
    expect_same("a\xC2\xADna", "ana");     /* soft hyphen */
    expect_same("\xEF\xBB\xBF"
                "ana",
                "ana");                    /* BOM / ZWNBSP */
    expect_same("a\xE2\x80\x8Dna", "ana"); /* zero-width joiner */
}

static void test_rejections(void **state)
{
    (void)state;
    expect_reject("", 0, "is empty");
    expect_reject("   \t\r\n ", 7, "is empty");
    expect_reject("ana\0b", 5, "contains a control character"); /* NUL */
    expect_reject("\xE2\x80\x8B", 3, "is empty");               /* only an ignorable code point */
    expect_reject("ana\x01"
                  "b",
                  5, "contains a control character");
    expect_reject("ana\x1f", 4, "contains a control character");
    expect_reject("ana\x7f", 4, "contains a control character");
    expect_reject("\x07", 1, "contains a control character");
    expect_reject("ana\xff", 4, "is not valid Unicode");
    expect_reject("ana\xC0\x80", 5, "is not valid Unicode");
    expect_reject("ana\xED\xA0\x80", 6, "is not valid Unicode");
    expect_reject("ana\xC3", 4, "is not valid Unicode");
}

/* Unicode whitespace beyond ASCII that NFKC leaves alone (NEL U+0085, LINE SEPARATOR U+2028, PARAGRAPH
 * SEPARATOR U+2029) must not survive as part of a name: either it is whitespace (collapsed like a
 * space) or it is refused. And the other C1 controls (U+0080..U+009F) are control characters. */
static void test_unicode_whitespace_and_c1_controls(void **state)
{
    (void)state;
    const char *ws[] = {"ana\xC2\x85maria", "ana\xE2\x80\xA8maria", "ana\xE2\x80\xA9maria"};
    for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
        char out[IDENTITY_NAME_MAX + 1];
        const char *why;
        int n = norm(ws[i], out, &why);
        if (n >= 0 && strcmp(out, "ana maria") != 0)
            fail_msg("case %zu: a Unicode line break was kept inside the normalized name (%d bytes, not \"ana maria\")",
                     i, n);
    }
    expect_reject("ana\xC2\x80", 5, "contains a control character");
    expect_reject("ana\xC2\x9F", 5, "contains a control character");
}

static void test_length_limit(void **state)
{
    (void)state;
    char in[1024], out[IDENTITY_NAME_MAX + 1];
    const char *why;
    memset(in, 'a', IDENTITY_NAME_MAX);
    in[IDENTITY_NAME_MAX] = 0;
    assert_int_equal(norm(in, out, &why), IDENTITY_NAME_MAX);
    memset(in, 'a', IDENTITY_NAME_MAX + 1);
    in[IDENTITY_NAME_MAX + 1] = 0;
    expect_reject(in, IDENTITY_NAME_MAX + 1, "is too long");
    /* the limit is on the normalized text: surrounding whitespace does not count ... */
    memset(in, ' ', 100);
    memset(in + 100, 'b', IDENTITY_NAME_MAX);
    memset(in + 100 + IDENTITY_NAME_MAX, ' ', 100);
    in[200 + IDENTITY_NAME_MAX] = 0;
    assert_int_equal(norm(in, out, &why), IDENTITY_NAME_MAX);
    /* ... collapsed runs count once ... */
    size_t o = 0;
    in[o++] = 'c';
    for (int i = 1; i < 128; i++)
        in[o++] = ' ', in[o++] = '\t', in[o++] = 'c'; /* 128 c, 127 runs of 2 */
    in[o] = 0;
    assert_int_equal(norm(in, out, &why), 255);
    in[o++] = ' ', in[o++] = ' ', in[o++] = 'c';
    in[o] = 0;
    expect_reject(in, o, "is too long"); /* 129 + 128 = 257 */
    /* ... and expansions count in full: ß is 2 bytes but normalizes to "ss" (2 bytes); ﬃ is 3 -> "ffi" */
    o = 0;
    for (int i = 0; i < 128; i++)
        in[o++] = '\xC3', in[o++] = '\x9F';
    in[o] = 0;
    assert_int_equal(norm(in, out, &why), 256);
    in[o++] = '\xC3', in[o++] = '\x9F';
    in[o] = 0;
    expect_reject(in, o, "is too long");
    o = 0;
    for (int i = 0; i < 86; i++)
        in[o++] = '\xEF', in[o++] = '\xAC', in[o++] = '\x83'; /* 86 x "ffi" = 258 */
    expect_reject(in, o, "is too long");
    /* a long name is rejected without touching out beyond IDENTITY_NAME_MAX */
    char guard[IDENTITY_NAME_MAX + 32];
    memset(guard, 0x5A, sizeof guard);
    memset(in, 'd', 600);
    const char *w;
    assert_int_equal(identity_normalize_name(in, 600, guard, &w), -1);
    for (size_t i = IDENTITY_NAME_MAX; i < sizeof guard; i++)
        assert_int_equal((unsigned char)guard[i], 0x5A);
}

/* One name through both paths: the same length (or -1), the same bytes, the same reason. */
static void expect_paths_agree(const char *in, size_t len)
{
    char a[IDENTITY_NAME_MAX], b[IDENTITY_NAME_MAX];
    const char *wa = NULL, *wb = NULL;
    int na = identity_normalize_name(in, len, a, &wa), nb = identity_normalize_name_unicode(in, len, b, &wb);
    if (na != nb) fail_msg("a %zu-byte ASCII name: %d bytes on the fast path, %d through utf8proc", len, na, nb);
    if (na < 0) {
        if (strcmp(wa, wb) != 0) fail_msg("a %zu-byte ASCII name: \"%s\" against \"%s\"", len, wa, wb);
    } else if (memcmp(a, b, (size_t)na) != 0) {
        fail_msg("a %zu-byte ASCII name: \"%.*s\" against \"%.*s\"", len, na, a, nb, b);
    }
}

/* ASCII names skip utf8proc_map: every ASCII byte alone and between letters, and random ASCII names (letters
 * of both cases, digits, punctuation, every kind of ASCII space, now and then a control byte, past the name
 * limit too), give what the utf8proc path gives. */
static void test_ascii_path_is_utf8proc(void **state)
{
    (void)state;
    for (int c = 0; c < 128; c++) {
        char one[1] = {(char)c}, mid[3] = {'A', (char)c, 'z'};
        expect_paths_agree(one, 1);
        expect_paths_agree(mid, 3);
    }
    uint64_t x = 0x9E3779B97F4A7C15u;
    char name[700];
    for (int round = 0; round < 20000; round++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t len = round % 100 == 0 ? 300 + x % 400 : x % 48;
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            unsigned pick = (unsigned)(x % 64);
            name[i] = pick < 20   ? (char)('A' + x / 64 % 26)
                      : pick < 40 ? (char)('a' + x / 64 % 26)
                      : pick < 48 ? " \t\n\r\v\f  "[x / 64 % 8]
                      : pick < 63 ? (char)(0x21 + x / 64 % 94)
                                  : (char)(x / 64 % 128);
        }
        expect_paths_agree(name, len);
    }
}

static void test_identity_key(void **state)
{
    (void)state;
    char key[IDENTITY_KEY_MAX + 16];
    const char *name = "ana mar\xC3\xAD"
                       "a";
    size_t n = identity_key(name, strlen(name), 1990, 5, 7, key);
    assert_int_equal(n, strlen(name) + 1 + 10);
    assert_memory_equal(key,
                        "ana mar\xC3\xAD"
                        "a\0"
                        "1990-05-07",
                        n);
    n = identity_key("x", 1, 1850, 1, 1, key);
    assert_memory_equal(key,
                        "x\0"
                        "1850-01-01",
                        n);
    /* same name, other date: other key; no prefix collisions between names */
    char k2[IDENTITY_KEY_MAX + 16];
    size_t n2 = identity_key("x", 1, 1850, 1, 2, k2);
    assert_int_equal(n, n2);
    assert_memory_not_equal(key, k2, n);
    char k3[IDENTITY_KEY_MAX + 16];
    size_t n3 = identity_key("x 1850", 6, 1850, 1, 1, k3);
    assert_true(n3 != n || memcmp(key, k3, n) != 0);
}

/* identity.h: out holds IDENTITY_KEY_MAX bytes. With a name of the maximum length the key must still
 * fit: nothing may be written at out[IDENTITY_KEY_MAX] or beyond. */
static void test_identity_key_max_name_fits(void **state)
{
    (void)state;
    char name[IDENTITY_NAME_MAX];
    memset(name, 'n', sizeof name);
    unsigned char out[IDENTITY_KEY_MAX + 16];
    memset(out, 0xA5, sizeof out);
    size_t n = identity_key(name, IDENTITY_NAME_MAX, 2001, 12, 31, (char *)out);
    assert_int_equal(n, IDENTITY_KEY_MAX);
    assert_memory_equal(out + IDENTITY_NAME_MAX,
                        "\0"
                        "2001-12-31",
                        11);
    for (size_t i = IDENTITY_KEY_MAX; i < sizeof out; i++)
        if (out[i] != 0xA5)
            fail_msg("identity_key wrote byte %zu (0x%02x) past IDENTITY_KEY_MAX (%d)", i, out[i], IDENTITY_KEY_MAX);
}

/* ---- patient ids ---- */

static void test_patient_id_format_parse(void **state)
{
    (void)state;
    static const unsigned char raw[PATIENT_ID_KEY] = "unit-test patient id key 32 byte";
    patient_id_key key;
    patient_id_key_init(&key, raw);
    for (int i = 0; i < 200; i++) {
        patient_id id, back;
        patient_id_from_number(&key, (uint64_t)i * 7919u, &id);
        char text[PATIENT_ID_TEXT];
        patient_id_format(&id, text);
        assert_int_equal(strlen(text), 36);
        assert_int_equal(text[8], '-');
        assert_int_equal(text[13], '-');
        assert_int_equal(text[18], '-');
        assert_int_equal(text[23], '-');
        for (int j = 0; j < 36; j++) {
            if (j == 8 || j == 13 || j == 18 || j == 23) continue;
            assert_non_null(strchr("0123456789abcdef", text[j]));
        }
        assert_int_equal(text[14], '4');           /* version 4 */
        assert_non_null(strchr("89ab", text[19])); /* RFC 4122 variant */
        assert_int_equal(id.b[6] >> 4, 4);
        assert_int_equal(id.b[8] >> 6, 2);
        assert_true(patient_id_parse(text, 36, &back));
        assert_memory_equal(id.b, back.b, 16);
        /* uppercase parses to the same id */
        char upper[PATIENT_ID_TEXT];
        for (int j = 0; j < 37; j++)
            upper[j] = (char)((text[j] >= 'a' && text[j] <= 'f') ? text[j] - 32 : text[j]);
        memset(&back, 0, sizeof back);
        assert_true(patient_id_parse(upper, 36, &back));
        assert_memory_equal(id.b, back.b, 16);
    }
    patient_id fixed = {
        {0x6f, 0x0c, 0x12, 0x34, 0xab, 0xcd, 0x4e, 0xf0, 0x81, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}};
    char text[PATIENT_ID_TEXT];
    patient_id_format(&fixed, text);
    assert_string_equal(text, "6f0c1234-abcd-4ef0-8123-456789abcdef");
}

static int id_cmp(const void *a, const void *b) { return memcmp(a, b, 16); }

static void test_patient_ids_distinct(void **state)
{
    (void)state;
    enum { N = 1000 };
    patient_id *ids = malloc(sizeof(patient_id) * N);
    static const unsigned char raw[PATIENT_ID_KEY] = "unit-test patient id key 32 byte";
    patient_id_key key;
    patient_id_key_init(&key, raw);
    for (int i = 0; i < N; i++)
        patient_id_from_number(&key, (uint64_t)i, &ids[i]); /* consecutive numbers */
    qsort(ids, N, sizeof(patient_id), id_cmp);
    int dups = 0;
    for (int i = 1; i < N; i++)
        dups += memcmp(ids[i - 1].b, ids[i].b, 16) == 0;
    /* and the random bits are not stuck: every byte position takes many values */
    int stuck = 0;
    for (int byte = 0; byte < 16; byte++) {
        bool seen[256] = {0};
        int distinct = 0;
        for (int i = 0; i < N; i++)
            distinct += !seen[ids[i].b[byte]], seen[ids[i].b[byte]] = true;
        int expect = byte == 6 ? 16 : byte == 8 ? 64 : 200; /* fixed version / variant bits */
        if (distinct < expect / 2 || (byte == 6 && distinct > 16) || (byte == 8 && distinct > 64)) stuck++;
    }
    free(ids);
    assert_int_equal(dups, 0);
    assert_int_equal(stuck, 0);
}

/* The permutation is invertible under its key, numbers of any size round-trip, another key gives
 * other ids, and made-up ids (random v4 UUIDs) decode to no number. */
static void test_patient_id_number_round_trip(void **state)
{
    (void)state;
    static const unsigned char raw[PATIENT_ID_KEY] = "unit-test patient id key 32 byte";
    patient_id_key key;
    patient_id_key_init(&key, raw);
    static const unsigned char other_raw[PATIENT_ID_KEY] = "another store's key, 32 bytes ok";
    patient_id_key other;
    patient_id_key_init(&other, other_raw);
    const uint64_t numbers[] = {
        0,         1, 2, 41, 1000000, UINT64_C(1) << 40, UINT64_C(1) << 61, (UINT64_C(1) << 61) - 1, UINT64_MAX - 1,
        UINT64_MAX};
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        patient_id id, id2;
        uint64_t back = 12345;
        patient_id_from_number(&key, numbers[i], &id);
        assert_int_equal(id.b[6] >> 4, 4);
        assert_int_equal(id.b[8] >> 6, 2);
        assert_true(patient_id_to_number(&key, &id, &back));
        assert_true(back == numbers[i]);
        patient_id_from_number(&other, numbers[i], &id2);
        assert_memory_not_equal(id.b, id2.b, 16);
    }
    /* ids from a random source almost never decode (1 in 2^58) */
    uint64_t st = 99;
    int decoded = 0;
    for (int i = 0; i < 5000; i++) {
        patient_id id;
        for (int j = 0; j < 16; j++) {
            st = st * 6364136223846793005ULL + 1442695040888963407ULL;
            id.b[j] = (unsigned char)(st >> 56);
        }
        id.b[6] = (unsigned char)((id.b[6] & 0x0F) | 0x40);
        id.b[8] = (unsigned char)((id.b[8] & 0x3F) | 0x80);
        uint64_t n;
        decoded += patient_id_to_number(&key, &id, &n);
    }
    assert_int_equal(decoded, 0);
    /* a wrong version nibble is not one of ours */
    patient_id id;
    uint64_t n;
    patient_id_from_number(&key, 7, &id);
    id.b[6] = (unsigned char)((id.b[6] & 0x0F) | 0x10);
    assert_false(patient_id_to_number(&key, &id, &n));
}

/* Ids never change: the ids of these numbers under this key, as the first release computed them (with
 * OpenSSL's one-shot HMAC), are the ids every later release computes. A store's patients keep their ids
 * across upgrades only while this holds. */
static void test_patient_id_known_answers(void **state)
{
    (void)state;
    unsigned char raw[PATIENT_ID_KEY];
    for (int i = 0; i < PATIENT_ID_KEY; i++)
        raw[i] = (unsigned char)i;
    patient_id_key key;
    patient_id_key_init(&key, raw);
    static const struct {
        uint64_t n;
        const char *id;
    } kat[] = {{0, "7ce55288-7e7c-44dc-b7ff-4d49c3870b9c"},
               {1, "d39024ca-d0b3-45d6-b21e-a5c33259af10"},
               {7, "6eba7a6e-90ae-4556-b665-40fae01fe8e1"},
               {UINT64_C(1) << 40, "9ea5905d-bc33-488c-97f5-cfdbadc4d0ef"},
               {UINT64_MAX, "3ac13459-01f5-4cdb-9dd5-3239c86999a6"}};
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        patient_id id;
        char text[PATIENT_ID_TEXT];
        patient_id_from_number(&key, kat[i].n, &id);
        patient_id_format(&id, text);
        assert_string_equal(text, kat[i].id);
        uint64_t back = 0;
        assert_true(patient_id_to_number(&key, &id, &back));
        assert_true(back == kat[i].n);
    }
}

static void test_patient_id_parse_rejects(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "6f0c1234-abcd-4ef0-8123-456789abcde",   /* 35 */
        "6f0c1234-abcd-4ef0-8123-456789abcdef0", /* 37 */
        "6f0c1234abcd-4ef0-8123-456789abcdef0",  /* dash missing, still 36 */
        "6f0c1234-abcd-4ef0-8123_456789abcdef",
        "6f0c123-4abcd-4ef0-8123-456789abcdef", /* dash misplaced */
        "6f0c1234-abcd-4ef0-81234-56789abcdef",
        "6f0c1234-abcd-4ef0-8123-456789abcdeg", /* not hex */
        "6f0c1234-abcd-4ef0-8123-45678 abcdef",
        "-6f0c1234abcd-4ef0-8123-456789abcdef",
        "{6f0c1234-abcd-4ef0-8123-456789abcde}",
        "6f0c1234-abcd-4ef0-8123-456789abcd-f",
        "6f0c1234--bcd-4ef0-8123-456789abcdef",
        "6f0c1234abcd4ef08123456789abcdef", /* 32 hex, no dashes */
        "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
        "6f0c1234-abcd-4ef0-8123-456789abcdeé",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        patient_id id;
        if (patient_id_parse(bad[i], strlen(bad[i]), &id)) fail_msg("accepted \"%s\"", bad[i]);
    }
    /* an embedded NUL in an otherwise valid shape */
    patient_id id;
    assert_false(patient_id_parse("6f0c1234-abcd-4ef0-8123-456789ab\0def", 36, &id));
    /* the length decides: a valid id followed by more text */
    assert_false(patient_id_parse("6f0c1234-abcd-4ef0-8123-456789abcdefXX", 38, &id));
    assert_true(patient_id_parse("6f0c1234-abcd-4ef0-8123-456789abcdefXX", 36, &id));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whitespace_and_case),
        cmocka_unit_test(test_nfkc),
        cmocka_unit_test(test_case_fold),
        cmocka_unit_test(test_ignorables),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_unicode_whitespace_and_c1_controls),
        cmocka_unit_test(test_length_limit),
        cmocka_unit_test(test_ascii_path_is_utf8proc),
        cmocka_unit_test(test_identity_key),
        cmocka_unit_test(test_identity_key_max_name_fits),
        cmocka_unit_test(test_patient_id_format_parse),
        cmocka_unit_test(test_patient_ids_distinct),
        cmocka_unit_test(test_patient_id_number_round_trip),
        cmocka_unit_test(test_patient_id_parse_rejects),
        cmocka_unit_test(test_patient_id_known_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
