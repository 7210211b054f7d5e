/*
 * test_log.c - the log line formatter and writer (src/base/log.h): exact text and JSON lines, JSON
 * escaping of every awkward byte (quotes, backslashes, control characters, invalid UTF-8) so that each
 * line parses, text lines that stay one line, fields hidden from text, and whole lines under
 * concurrent writers.
 */
#include "unit.h"

#include "base/json_scan.h"
#include "base/log.h"

#include <pthread.h>

static const int64_t T = 1781524800123456LL; /* 2026-06-15T12:00:00.123456Z */

static char *line_of(log_format format, const char *prefix, log_level level, const char *event, const char *msg,
                     const log_field *f, size_t n)
{
    buf b = {0};
    log_format_line(&b, format, prefix, T, level, event, msg, f, n);
    return buf_take(&b);
}

/* One JSON object and a '\n', nothing else. */
static void assert_json_line(const char *line)
{
    size_t n = strlen(line);
    assert_true(n > 0 && line[n - 1] == '\n');
    assert_null(memchr(line, '\n', n - 1));
    json_member m[32];
    json_error je;
    assert_true(json_scan_object(line, n - 1, m, 32, &je) >= 4);
}

static void test_time_is_as_expected(void **state)
{
    (void)state;
    assert_int_equal(T, unit_time(2026, 6, 15, 12, 0, 0) + 123456);
}

static void test_json_line_exact(void **state)
{
    (void)state;
    log_field f[] = {LOG_STR("route", "/v1/records/{}"),
                     LOG_INT("status", -1),
                     LOG_UINT("bytes", 42),
                     LOG_MS("ms", 1.23456),
                     LOG_STR("user", NULL),
                     LOG_STR_J("method", "GET")};
    char *s = line_of(LOG_FORMAT_JSON, "medstream", LOG_WARN, "http.request", "hello", f, LOG_NFIELDS(f));
    assert_string_equal(s, "{\"time\":\"2026-06-15T12:00:00.123456Z\",\"level\":\"warn\",\"event\":\"http.request\","
                           "\"msg\":\"hello\",\"route\":\"/v1/records/{}\",\"status\":-1,\"bytes\":42,\"ms\":1.235,"
                           "\"user\":\"-\",\"method\":\"GET\"}\n");
    assert_json_line(s);
    free(s);
}

static void test_json_escaping(void **state)
{
    (void)state;
    /* quote, backslash, newline, CR, tab, other control bytes, DEL, valid multi-byte, invalid bytes */
    const char *msg = "a\"b\\c\nd\re\tf\x01g\x1f\x7fh \xc3\xa9 \xff\xfe \xe2\x82";
    log_field f[] = {LOG_STR("why", "x\"\n\x02\xc0\xaf")};
    char *s = line_of(LOG_FORMAT_JSON, "medstream", LOG_ERROR, "t.e", msg, f, 1);
    assert_json_line(s);
    /* (a truncated sequence at the end: each of its bytes is replaced) */
    assert_non_null(strstr(s, "\"msg\":\"a\\\"b\\\\c\\nd\\re\\tf\\u0001g\\u001f\x7fh \xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd "
                              "\xef\xbf\xbd\xef\xbf\xbd\","));
    assert_non_null(strstr(s, "\"why\":\"x\\\"\\n\\u0002\xef\xbf\xbd\xef\xbf\xbd\"}"));
    /* the decoded message is valid UTF-8 */
    assert_int_equal(utf8_check(s, strlen(s)), strlen(s));
    free(s);
}

static void test_json_non_finite_ms(void **state)
{
    (void)state;
    log_field f[] = {LOG_MS("ms", 0.0 / 0.0)};
    char *s = line_of(LOG_FORMAT_JSON, "medstream", LOG_INFO, "e", "m", f, 1);
    assert_non_null(strstr(s, "\"ms\":null}"));
    assert_json_line(s);
    free(s);
}

static void test_text_line(void **state)
{
    (void)state;
    log_field f[] = {LOG_STR_J("method", "GET"), LOG_UINT("bytes", 7),      LOG_MS("ms", 0.5),
                     LOG_STR("user", "alice"),   LOG_STR("q", "two words"), LOG_STR("e", ""),
                     LOG_STR("nl", "a\nb"),      LOG_STR("eq", "k=v"),      LOG_STR("none", NULL)};
    char *s = line_of(LOG_FORMAT_TEXT, "medstream", LOG_INFO, "http.request", "GET /x 200", f, LOG_NFIELDS(f));
    assert_string_equal(s, "medstream: GET /x 200 bytes=7 ms=0.500 user=alice q=\"two words\" e=\"\" nl=\"a\\nb\" "
                           "eq=\"k=v\" none=-\n");
    free(s);
    /* today's lines: the prefix, the message, nothing else; control characters never split the line */
    s = line_of(LOG_FORMAT_TEXT, "medstream serve", LOG_ERROR, "serve.failed", "line one\nline two\r\x01!", NULL, 0);
    assert_string_equal(s, "medstream serve: line one line two  !\n");
    free(s);
}

static void test_parse_and_levels(void **state)
{
    (void)state;
    log_format f = LOG_FORMAT_TEXT;
    assert_true(log_format_parse("json", &f));
    assert_int_equal(f, LOG_FORMAT_JSON);
    assert_true(log_format_parse("text", &f));
    assert_int_equal(f, LOG_FORMAT_TEXT);
    assert_false(log_format_parse("JSON", &f));
    assert_false(log_format_parse("", &f));
    assert_string_equal(log_level_name(LOG_DEBUG), "debug");
    assert_string_equal(log_level_name(LOG_ERROR), "error");
}

/* ---- the writer: whole lines from many threads ---- */

#define THREADS 4
#define LINES 500

static void *log_many(void *arg)
{
    int id = (int)(intptr_t)arg;
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    for (int i = 0; i < LINES; i++) {
        log_field f[] = {LOG_INT("thread", id), LOG_INT("i", i), LOG_STR("pad", i % 7 ? "short" : big)};
        ms_log_fields(LOG_INFO, "test.line", f, LOG_NFIELDS(f), "line \"%d\"\n of %d", i, id);
    }
    return NULL;
}

static void test_concurrent_lines_stay_whole(void **state)
{
    (void)state;
    char path[] = "/tmp/medstream-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    log_set_fd(fd);
    log_configure(LOG_FORMAT_JSON, LOG_INFO);
    ms_log(LOG_DEBUG, "test.hidden", "below the level: not written");
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, log_many, (void *)(intptr_t)i), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    log_set_fd(2);
    log_configure(LOG_FORMAT_TEXT, LOG_INFO);
    buf b = {0};
    ms_err e;
    assert_int_equal(buf_read_file(&b, path, &e), MS_OK);
    close(fd);
    unlink(path);
    int lines = 0;
    for (char *p = b.data, *nl; p < b.data + b.len; p = nl + 1) {
        nl = memchr(p, '\n', (size_t)(b.data + b.len - p));
        assert_non_null(nl);
        json_member m[16];
        json_error je;
        assert_int_equal(json_scan_object(p, (size_t)(nl - p), m, 16, &je), 7);
        assert_null(strstr(p, "test.hidden"));
        lines++;
    }
    assert_int_equal(lines, THREADS * LINES);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_is_as_expected),
        cmocka_unit_test(test_json_line_exact),
        cmocka_unit_test(test_json_escaping),
        cmocka_unit_test(test_json_non_finite_ms),
        cmocka_unit_test(test_text_line),
        cmocka_unit_test(test_parse_and_levels),
        cmocka_unit_test(test_concurrent_lines_stay_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
