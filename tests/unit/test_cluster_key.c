/*
 * test_cluster_key.c - the cluster key (src/base/cluster_key.h): the key file's text (what is accepted,
 * what is refused and that no message carries the text), the file's mode check, and what the store does
 * with it (store_options.cluster_key): a store created with it has it as its id key, another key is
 * refused naming the directory, every store has its own node id that survives a reopen.
 */
#include "unit.h"
#include "unit_store.h"

#include "base/cluster_key.h"

#include <sys/stat.h>

static const char KEY_HEX[] = "00112233445566778899aabbccddeeff0123456789ABCDEFfedcba9876543210";

static void expect_refused(const char *text, size_t len, const char *want)
{
    unsigned char key[CLUSTER_KEY_BYTES];
    ms_err e = {0};
    if (cluster_key_parse(text, len, key, &e) != MS_EINVAL) fail_msg("accepted: \"%.*s\"", (int)len, text);
    if (!strstr(e.msg, want)) fail_msg("refusal of \"%.*s\" says \"%s\", want \"%s\"", (int)len, text, e.msg, want);
    for (size_t i = 0; i < CLUSTER_KEY_BYTES; i++)
        assert_int_equal(key[i], 0);      /* nothing half-parsed left behind */
    for (size_t i = 0; i + 8 <= len; i++) /* no 8 characters of the text in the message */
        if (memmem(e.msg, strlen(e.msg), text + i, 8)) fail_msg("the message quotes the text: %s", e.msg);
}

static void test_parse_accepts_one_line_of_64_hex(void **state)
{
    (void)state;
    unsigned char key[CLUSTER_KEY_BYTES];
    ms_err e = {0};
    char text[80];
    const char *ends[] = {"", "\n", "\r\n"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(text, sizeof text, "%s%s", KEY_HEX, ends[i]);
        if (cluster_key_parse(text, strlen(text), key, &e) != MS_OK) fail_msg("refused (end %zu): %s", i, e.msg);
        assert_int_equal(key[0], 0x00);
        assert_int_equal(key[1], 0x11);
        assert_int_equal(key[15], 0xff);
        assert_int_equal(key[20], 0x89);
        assert_int_equal(key[21], 0xab); /* upper case too */
        assert_int_equal(key[31], 0x10);
    }
}

static void test_parse_refuses_anything_else(void **state)
{
    (void)state;
    char t[160];
    expect_refused("", 0, "found 0 characters");
    expect_refused("\n", 1, "found 0 characters");
    expect_refused(KEY_HEX, 62, "found 62 characters");
    snprintf(t, sizeof t, "%s00\n", KEY_HEX);
    expect_refused(t, strlen(t), "found 66 characters (something follows the key)");
    snprintf(t, sizeof t, "%s\n\n", KEY_HEX);
    expect_refused(t, strlen(t), "found 65 characters");
    snprintf(t, sizeof t, " %s", KEY_HEX);
    expect_refused(t, strlen(t), "character 1 is a space");
    snprintf(t, sizeof t, "%.32s\n%s\n", KEY_HEX, KEY_HEX + 32);
    expect_refused(t, strlen(t), "character 33 is a line end");
    snprintf(t, sizeof t, "%.40sg%s", KEY_HEX, KEY_HEX + 41);
    expect_refused(t, strlen(t), "character 41 is not hexadecimal");
    snprintf(t, sizeof t, "%.10s%c%s", KEY_HEX, 0, KEY_HEX + 11); /* a NUL inside */
    expect_refused(t, 64, "character 11 is not hexadecimal");
    snprintf(t, sizeof t, "%s %s", KEY_HEX, "# comment");
    expect_refused(t, strlen(t), "found 74 characters");
    memset(t, '0', 64);
    expect_refused(t, 64, "all zeros");
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static void test_load_checks_the_mode(void **state)
{
    (void)state;
    char dir[64], path[128], text[80];
    unit_tmpdir(dir);
    snprintf(path, sizeof path, "%s/key", dir);
    snprintf(text, sizeof text, "%s\n", KEY_HEX);
    unsigned char key[CLUSTER_KEY_BYTES];
    ms_err e = {0};
    const mode_t refused[] = {0644, 0640, 0604, 0660, 0602, 0620};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        write_file(path, text, refused[i]);
        assert_int_equal(cluster_key_load(path, key, &e), MS_EINVAL);
        char mode[16];
        snprintf(mode, sizeof mode, "mode %04o", (unsigned)refused[i]);
        if (!strstr(e.msg, mode) || !strstr(e.msg, path)) fail_msg("refusal: %s", e.msg);
    }
    write_file(path, text, 0600);
    if (cluster_key_load(path, key, &e) != MS_OK) fail_msg("0600 refused: %s", e.msg);
    assert_int_equal(key[1], 0x11);
    write_file(path, text, 0400);
    assert_int_equal(cluster_key_load(path, key, &e), MS_OK);
    write_file(path, "not a key\n", 0600);
    assert_int_equal(cluster_key_load(path, key, &e), MS_EINVAL);
    if (!strstr(e.msg, path) || !strstr(e.msg, "not hexadecimal")) fail_msg("malformed: %s", e.msg);
    assert_int_equal(cluster_key_load(dir, key, &e), MS_EINVAL); /* a directory */
    assert_non_null(strstr(e.msg, "not a regular file"));
    snprintf(path, sizeof path, "%s/absent", dir);
    assert_int_equal(cluster_key_load(path, key, &e), MS_EIO);
    assert_non_null(strstr(e.msg, "absent"));
    unit_rmtree(dir);
}

static void test_store_takes_the_cluster_key(void **state)
{
    (void)state;
    unsigned char key[CLUSTER_KEY_BYTES], other[CLUSTER_KEY_BYTES];
    ms_err e = {0};
    assert_int_equal(cluster_key_parse(KEY_HEX, 64, key, &e), MS_OK);
    memcpy(other, key, sizeof other);
    other[31] ^= 1;
    store_options with = {.map_size = (size_t)1 << 28, .cluster_key = key};
    unit_store a, b, plain;
    assert_true(unit_store_open(&a, &with));
    assert_true(unit_store_open(&b, &with));
    assert_true(unit_store_open(&plain, &(store_options){.map_size = (size_t)1 << 28}));
    assert_memory_equal(store_id_key(a.s), key, 32); /* one cluster: one id key */
    assert_memory_equal(store_id_key(b.s), key, 32);
    assert_memory_not_equal(store_id_key(plain.s), key, 32);
    unsigned char id_a[STORE_NODE_ID], zero[STORE_NODE_ID] = {0};
    memcpy(id_a, store_node_id(a.s), STORE_NODE_ID);
    assert_memory_not_equal(id_a, zero, STORE_NODE_ID);
    assert_memory_not_equal(id_a, store_node_id(b.s), STORE_NODE_ID); /* two nodes told apart */
    store_close(a.s);
    a.s = NULL;
    /* another key, or a store made without one: refused naming the directory; the same key: opens */
    store *s = NULL;
    with.cluster_key = other;
    assert_int_equal(store_open(&s, a.dir, &with, &e), MS_ECONFLICT);
    if (!strstr(e.msg, a.dir) || !strstr(e.msg, "was created with another key")) fail_msg("refusal: %s", e.msg);
    with.cluster_key = key;
    store_close(plain.s);
    plain.s = NULL;
    assert_int_equal(store_open(&s, plain.dir, &with, &e), MS_ECONFLICT);
    assert_non_null(strstr(e.msg, plain.dir));
    if (store_open(&s, a.dir, &with, &e) != MS_OK) fail_msg("reopen with the key: %s", e.msg);
    assert_memory_equal(store_node_id(s), id_a, STORE_NODE_ID); /* kept */
    store_close(s);
    /* without a key: any store opens as it is (it keeps its id key) */
    if (store_open(&s, a.dir, &(store_options){.map_size = (size_t)1 << 28}, &e) != MS_OK) fail_msg("%s", e.msg);
    assert_memory_equal(store_id_key(s), key, 32);
    store_close(s);
    unit_store_close(&a);
    unit_store_close(&b);
    unit_store_close(&plain);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_accepts_one_line_of_64_hex),
        cmocka_unit_test(test_parse_refuses_anything_else),
        cmocka_unit_test(test_load_checks_the_mode),
        cmocka_unit_test(test_store_takes_the_cluster_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
