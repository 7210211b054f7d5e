/*
 * test_lake.c - the pure parts of the lake sink (src/sinks/lake_log.c): part and pending names, the
 * commits log's line (encode, parse, every kind of damage a crash or an editor can do to it), reading a
 * whole log (a torn last line is cut, damage before a whole line is corruption, positions must increase),
 * and the recovery decisions of a start from a last entry and a listing of _medstream/tmp.
 */
#include "unit.h"

#include "sinks/lake_log.h"

#include <zlib.h>

static void sha_of(int seed, unsigned char out[32])
{
    for (int i = 0; i < 32; i++)
        out[i] = (unsigned char)(seed * 31 + i * 7);
}

static lake_entry sample_entry(uint64_t from, uint64_t to)
{
    lake_entry en = {.from = from, .to = to, .commit_time_us = 1795993559786045LL};
    unsigned char sha[32];
    buf name = {0}, path = {0};
    const char *parts[] = {"records/type=lab/year=2026", "records/type=note%2Fx/year=__HIVE_DEFAULT_PARTITION__",
                           "records/type=caf\xc3\xa9 \"q\"/year=2025", "deletions"};
    for (uint32_t i = 0; i < 4; i++) {
        lake_part_name(from, i, &name);
        path.len = 0;
        buf_printf(&path, "%s/%s", parts[i], name.data);
        sha_of((int)i, sha);
        lake_entry_add(&en, path.data, 10 + i, 1000 + i, sha);
    }
    buf_free(&name);
    buf_free(&path);
    return en;
}

static void test_names(void **state)
{
    (void)state;
    buf n = {0}, p = {0};
    lake_part_name(12, 3, &n);
    assert_string_equal(n.data, "part-00000000000000000012-00003.parquet");
    lake_part_name(UINT64_MAX, 99999, &n);
    assert_string_equal(n.data, "part-18446744073709551615-99999.parquet");
    /* names sort in commit order */
    buf a = {0};
    lake_part_name(9, 0, &a);
    lake_part_name(10, 0, &n);
    assert_true(strcmp(a.data, n.data) < 0);
    lake_pending_name("records/type=lab/year=2026/part-00000000000000000012-00003.parquet", &p);
    assert_string_equal(p.data, "part-00000000000000000012-00003.parquet.pending");
    lake_pending_name("x.parquet", &p);
    assert_string_equal(p.data, "x.parquet.pending");
    buf_free(&a);
    buf_free(&n);
    buf_free(&p);
}

static void test_line_round_trip(void **state)
{
    (void)state;
    lake_entry en = sample_entry(5, 9);
    assert_int_equal(en.rows, 10 + 11 + 12 + 13);
    buf line = {0};
    lake_log_encode(&en, &line);
    assert_true(line.len > 0 && line.data[line.len - 1] == '\n');
    assert_null(memchr(line.data, '\n', line.len - 1)); /* one line, whatever the paths hold */
    lake_entry back;
    ms_err e;
    assert_int_equal(lake_log_parse_line(line.data, line.len - 1, &back, &e), MS_OK);
    assert_int_equal(back.from, 5);
    assert_int_equal(back.to, 9);
    assert_int_equal(back.commit_time_us, en.commit_time_us);
    assert_int_equal(back.rows, en.rows);
    assert_int_equal(back.nfiles, en.nfiles);
    for (size_t i = 0; i < en.nfiles; i++) {
        assert_string_equal(back.files[i].path, en.files[i].path);
        assert_int_equal(back.files[i].rows, en.files[i].rows);
        assert_int_equal(back.files[i].bytes, en.files[i].bytes);
        assert_memory_equal(back.files[i].sha256, en.files[i].sha256, 32);
    }
    lake_entry_free(&back);
    /* an entry without files (never logged by the sink, but well-formed) */
    lake_entry empty = {.from = 1, .to = 1, .commit_time_us = -5};
    line.len = 0;
    lake_log_encode(&empty, &line);
    assert_int_equal(lake_log_parse_line(line.data, line.len - 1, &back, &e), MS_OK);
    assert_int_equal(back.nfiles, 0);
    assert_int_equal(back.commit_time_us, -5);
    lake_entry_free(&back);
    /* an erasure's rewritten files: their own list, not counted in the line's rows; a line without them
     * is encoded as before (no member) */
    assert_null(strstr(line.data, "rewritten"));
    unsigned char sha[32];
    memset(sha, 0xab, 32);
    lake_entry_add_rewritten(&en, "records/type=lab/year=2026/part-00000000000000000001-00000.parquet", 3, 999, sha);
    lake_entry_add_rewritten(&en, "deletions/part-00000000000000000001-00001.parquet", 0, 120, sha);
    line.len = 0;
    lake_log_encode(&en, &line);
    assert_int_equal(lake_log_parse_line(line.data, line.len - 1, &back, &e), MS_OK);
    assert_int_equal(back.rows, en.rows);
    assert_int_equal(back.nfiles, en.nfiles);
    assert_int_equal(back.nrewritten, 2);
    assert_string_equal(back.rewritten[0].path, en.rewritten[0].path);
    assert_int_equal(back.rewritten[0].rows, 3);
    assert_int_equal(back.rewritten[0].bytes, 999);
    assert_int_equal(back.rewritten[1].rows, 0);
    assert_memory_equal(back.rewritten[1].sha256, sha, 32);
    lake_entry_free(&back);
    lake_entry_free(&en);
    buf_free(&line);
}

/* Any damage to a line is refused, never read as another entry. */
static void test_line_damage(void **state)
{
    (void)state;
    lake_entry en = sample_entry(5, 9), back;
    buf line = {0}, bad = {0};
    lake_log_encode(&en, &line);
    size_t n = line.len - 1;
    ms_err e;
    /* every proper prefix (a torn append) */
    for (size_t cut = 0; cut < n; cut++)
        assert_int_equal(lake_log_parse_line(line.data, cut, &back, &e), MS_ECORRUPT);
    /* every single flipped byte */
    unit_rng rng = {42};
    for (size_t i = 0; i < n; i++) {
        bad.len = 0;
        buf_put(&bad, line.data, n);
        bad.data[i] ^= (char)(1 + unit_below(&rng, 255));
        if (lake_log_parse_line(bad.data, n, &back, &e) == MS_OK) {
            /* only a change the crc cannot see could pass: none of a single byte does */
            fail_msg("a line with byte %zu changed was accepted", i);
        }
    }
    /* a well-formed line with a right crc but wrong contents: rows not the sum, a bad range, a bad path */
    const char *wrong[] = {
        "{\"from\":3,\"to\":4,\"commit_time_us\":1,\"rows\":5,\"files\":[]",
        "{\"from\":5,\"to\":4,\"commit_time_us\":1,\"rows\":0,\"files\":[]",
        "{\"from\":0,\"to\":4,\"commit_time_us\":1,\"rows\":0,\"files\":[]",
        "{\"from\":1,\"to\":4,\"commit_time_us\":1,\"rows\":1,\"files\":[{\"path\":\"../etc/x\",\"rows\":1,\"bytes\":1,"
        "\"sha256\":\"0000000000000000000000000000000000000000000000000000000000000000\"}]",
        "{\"from\":1,\"to\":4,\"commit_time_us\":1,\"rows\":1,\"files\":[{\"path\":\"records//"
        "x\",\"rows\":1,\"bytes\":1,"
        "\"sha256\":\"0000000000000000000000000000000000000000000000000000000000000000\"}]",
        "{\"from\":1,\"to\":4,\"commit_time_us\":1,\"rows\":1,\"files\":[{\"path\":\"other/x\",\"rows\":1,\"bytes\":1,"
        "\"sha256\":\"0000000000000000000000000000000000000000000000000000000000000000\"}]",
        "{\"from\":1,\"to\":4,\"commit_time_us\":1,\"rows\":1,\"files\":[{\"path\":\"records/"
        "x\",\"rows\":1,\"bytes\":1,"
        "\"sha256\":\"00\"}]",
        "{\"from\":1,\"to\":4,\"rows\":0,\"files\":[]",
        "{\"from\":1,\"to\":18446744073709551616,\"commit_time_us\":1,\"rows\":0,\"files\":[]",
        "{\"from\":1,\"to\":4,\"commit_time_us\":1,\"rows\":0,\"files\":[1]",
    };
    for (size_t k = 0; k < sizeof wrong / sizeof wrong[0]; k++) {
        bad.len = 0;
        buf_puts(&bad, wrong[k]);
        uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), (const Bytef *)bad.data, (uInt)bad.len);
        buf_printf(&bad, ",\"crc32\":\"%08x\"}", crc);
        assert_int_equal(lake_log_parse_line(bad.data, bad.len, &back, &e), MS_ECORRUPT);
    }
    lake_entry_free(&en);
    buf_free(&line);
    buf_free(&bad);
}

static void test_log_read(void **state)
{
    (void)state;
    buf log = {0};
    lake_log_state st;
    ms_err e;
    assert_int_equal(lake_log_read("", 0, &st, &e), MS_OK); /* a new lake */
    assert_int_equal(st.entries, 0);
    assert_false(st.torn);
    lake_entry a = sample_entry(1, 4), b = sample_entry(5, 5), c = sample_entry(9, 20);
    lake_log_encode(&a, &log);
    lake_log_encode(&b, &log);
    size_t two = log.len;
    lake_log_encode(&c, &log);
    size_t three = log.len;
    assert_int_equal(lake_log_read(log.data, log.len, &st, &e), MS_OK);
    assert_int_equal(st.entries, 3);
    assert_int_equal(st.valid_len, three);
    assert_false(st.torn);
    assert_int_equal(st.last.from, 9);
    assert_int_equal(st.last.to, 20);
    assert_int_equal(st.last.nfiles, 4);
    lake_log_state_free(&st);
    /* the third line torn at every length: two entries, cut back to the end of the second */
    for (size_t cut = two + 1; cut < three; cut++) {
        assert_int_equal(lake_log_read(log.data, cut, &st, &e), MS_OK);
        assert_int_equal(st.entries, 2);
        assert_int_equal(st.valid_len, two);
        assert_true(st.torn);
        assert_int_equal(st.last.to, 5);
        lake_log_state_free(&st);
    }
    /* a damaged last line (its '\n' written, its bytes not): torn too */
    buf bad = {0};
    buf_put(&bad, log.data, three);
    bad.data[three - 5] ^= 0x20;
    assert_int_equal(lake_log_read(bad.data, bad.len, &st, &e), MS_OK);
    assert_true(st.torn);
    assert_int_equal(st.valid_len, two);
    lake_log_state_free(&st);
    /* damage in the middle, with a whole line after it: corruption, not a torn line */
    bad.len = 0;
    buf_put(&bad, log.data, three);
    bad.data[two - 5] ^= 0x20;
    assert_int_equal(lake_log_read(bad.data, bad.len, &st, &e), MS_ECORRUPT);
    assert_non_null(strstr(e.msg, "line 2"));
    /* positions that go back */
    bad.len = 0;
    lake_log_encode(&a, &bad);
    lake_log_encode(&c, &bad);
    lake_log_encode(&b, &bad);
    assert_int_equal(lake_log_read(bad.data, bad.len, &st, &e), MS_ECORRUPT);
    assert_non_null(strstr(e.msg, "line 3"));
    bad.len = 0;
    lake_log_encode(&a, &bad);
    lake_log_encode(&a, &bad); /* the same roll twice */
    assert_int_equal(lake_log_read(bad.data, bad.len, &st, &e), MS_ECORRUPT);
    lake_entry_free(&a);
    lake_entry_free(&b);
    lake_entry_free(&c);
    buf_free(&log);
    buf_free(&bad);
}

/* ---- recovery decisions ---- */

typedef struct {
    const char *const *visible;
} fake_dir;

static bool fake_exists(void *ctx, const char *path)
{
    const fake_dir *d = ctx;
    for (const char *const *v = d->visible; *v; v++)
        if (strcmp(*v, path) == 0) return true;
    return false;
}

static bool has(const char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0) return true;
    return false;
}

static void test_recovery_plan(void **state)
{
    (void)state;
    lake_entry last = sample_entry(7, 9);
    buf pend[4] = {{0}};
    for (int i = 0; i < 4; i++)
        lake_pending_name(last.files[i].path, &pend[i]);
    /* files 0 and 1 in place (1 also still pending: a rename made durable in both directories' views),
     * 2 and 3 pending; tmp also holds a pending file of an unlogged roll and out_file's partial file */
    const char *visible[] = {last.files[0].path, last.files[1].path, NULL};
    fake_dir d = {visible};
    const char *tmp[] = {pend[1].data, pend[2].data, pend[3].data, "part-00000000000000000010-00000.parquet.pending",
                         ".part-00000000000000000010-00001.parquet.pending.tmp"};
    lake_plan plan;
    ms_err e;
    assert_int_equal(lake_recovery_plan(&last, tmp, 5, fake_exists, &d, &plan, &e), MS_OK);
    assert_int_equal(plan.nrename, 2);
    assert_string_equal(plan.rename_from[0], pend[2].data);
    assert_string_equal(plan.rename_to[0], last.files[2].path);
    assert_string_equal(plan.rename_from[1], pend[3].data);
    assert_string_equal(plan.rename_to[1], last.files[3].path);
    assert_int_equal(plan.nremove, 3);
    assert_true(has(plan.remove, plan.nremove, pend[1].data)); /* in place already: the pending copy goes */
    assert_true(has(plan.remove, plan.nremove, "part-00000000000000000010-00000.parquet.pending"));
    assert_true(has(plan.remove, plan.nremove, ".part-00000000000000000010-00001.parquet.pending.tmp"));
    assert_false(has(plan.remove, plan.nremove, pend[2].data)); /* never a file the log names */
    assert_false(has(plan.remove, plan.nremove, pend[3].data));
    lake_plan_free(&plan);

    /* everything in place: nothing to rename; an empty tmp: nothing to remove */
    const char *all[] = {last.files[0].path, last.files[1].path, last.files[2].path, last.files[3].path, NULL};
    fake_dir full = {all};
    assert_int_equal(lake_recovery_plan(&last, NULL, 0, fake_exists, &full, &plan, &e), MS_OK);
    assert_int_equal(plan.nrename, 0);
    assert_int_equal(plan.nremove, 0);
    lake_plan_free(&plan);

    /* no log yet: whatever is in tmp goes */
    const char *none[] = {NULL};
    fake_dir empty = {none};
    assert_int_equal(lake_recovery_plan(NULL, tmp, 5, fake_exists, &empty, &plan, &e), MS_OK);
    assert_int_equal(plan.nrename, 0);
    assert_int_equal(plan.nremove, 5);
    lake_plan_free(&plan);

    /* a logged file neither in place nor pending: lost, refused (never silently skipped) */
    const char *tmp2[] = {pend[2].data};
    assert_int_equal(lake_recovery_plan(&last, tmp2, 1, fake_exists, &d, &plan, &e), MS_ECORRUPT);
    assert_non_null(strstr(e.msg, last.files[3].path));
    for (int i = 0; i < 4; i++)
        buf_free(&pend[i]);
    lake_entry_free(&last);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),    cmocka_unit_test(test_line_round_trip), cmocka_unit_test(test_line_damage),
        cmocka_unit_test(test_log_read), cmocka_unit_test(test_recovery_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
