/*
 * test_backup.c - store_backup (src/store/backup.c; src/store/README.md, invariant 7) on real stores in
 * temporary directories, with 64 KiB segments so that a few records span several segment files:
 *   - the copy is one instant: a body appended but not committed when the backup runs is not in it (the
 *     copy's last segment file ends at the log end LMDB recorded, before that body), every committed
 *     record reads back equal from the copy, and the copy opens for writing and appends past its end;
 *   - a backup through a read-only open with the default (1 GiB) segment size copies by the segment size
 *     the store recorded, not the one it was opened with;
 *   - refusals (an out directory that is not empty, a file, a missing parent) and a missing segment file
 *     below the end: MS_ECONFLICT, MS_EIO, MS_ECORRUPT, with nothing left behind by the failed call.
 * The backup beside a running server, and a server started on the copy, are tests/e2e/test_backup.py.
 */
#include "unit.h"
#include "unit_store.h"

#include "store/store.h"

#include <sys/stat.h>
#include <xxhash.h>

#define SEG ((uint64_t)64 << 10)

static store_options seg_options(bool read_only)
{
    return (store_options){.map_size = (size_t)1 << 30, .segment_size = SEG, .owner = "unit", .read_only = read_only};
}

static store *open_store(const char *dir, const store_options *opt)
{
    store *s = NULL;
    ms_err e = {0};
    if (store_open(&s, dir, opt, &e) != MS_OK) fail_msg("store_open %s: %s", dir, e.msg);
    return s;
}

/* The text of record i: about 20 KB, so that three fill a 64 KiB segment. */
static void record_text(int i, buf *out)
{
    out->len = 0;
    buf_printf(out, "{\"record_id\":\"bk-%d\",\"name\":\"Backup Unit\",\"dob\":\"1990-01-01\",\"notes\":\"", i);
    for (int k = 0; k < 20000; k++)
        buf_putc(out, (char)('a' + (i + k) % 26));
    buf_puts(out, "\"}");
}

static uint64_t append(store *s, const buf *text)
{
    size_t wl;
    char *body = unit_aligned_body(text->data, text->len, &wl);
    uint64_t pos = 0;
    ms_err e = {0};
    ms_code rc = store_append_body(s, body, wl, &pos, &e);
    free(body);
    if (rc != MS_OK) fail_msg("append: %s", e.msg);
    return pos;
}

/* Commit record i (its body appended first): returns the commit position. */
static uint64_t commit_record(store *s, int i)
{
    buf text = {0};
    record_text(i, &text);
    uint64_t pos = append(s, &text);
    ms_err e = {0};
    store_write *w;
    if (store_write_begin(s, &w, &e) != MS_OK) fail_msg("begin: %s", e.msg);
    record_version rv = {0};
    rv.record_id_len = (uint32_t)snprintf(rv.record_id, sizeof rv.record_id, "bk-%d", i);
    rv.version = 1;
    rv.valid_from = store_write_time(w);
    rv.valid_to = -1;
    store_patient_id(s, 0, &rv.pid);
    rv.ts_us = unit_now();
    memcpy(rv.type, "visit", 5);
    rv.type_len = 5;
    rv.body_pos = pos;
    rv.body_len = (uint32_t)text.len;
    rv.body_hash = XXH3_64bits(text.data, text.len);
    uint64_t cp = 0;
    ms_code rc = store_record_put(w, &rv, 2026, "{}", 2, &e);
    if (rc == MS_OK)
        rc = store_write_commit(w, &cp, &e);
    else
        store_write_abort(w);
    buf_free(&text);
    if (rc != MS_OK) fail_msg("commit: %s", e.msg);
    return cp;
}

/* Every record 0 .. n-1 reads back from s with its text. */
static void expect_records(store *s, int n)
{
    buf text = {0}, body = {0};
    for (int i = 0; i < n; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "bk-%d", i);
        record_version rv;
        assert_true(unit_record_at(s, rid, INT64_MAX, &rv));
        record_text(i, &text);
        body.len = 0;
        ms_err e = {0};
        if (store_record_body(s, &rv, &body, &e) != MS_OK) fail_msg("body of %s: %s", rid, e.msg);
        assert_int_equal(body.len, text.len);
        assert_memory_equal(body.data, text.data, text.len);
    }
    buf_free(&text);
    buf_free(&body);
}

static off_t file_size(const char *dir, const char *name)
{
    char path[256];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 ? st.st_size : -1;
}

static void test_backup_is_one_instant(void **state)
{
    (void)state;
    char dir[64], out[128];
    unit_tmpdir(dir);
    snprintf(out, sizeof out, "%s/copy", dir);
    char data[96];
    snprintf(data, sizeof data, "%s/data", dir);
    store_options opt = seg_options(false);
    store *s = open_store(data, &opt);
    uint64_t last = 0;
    for (int i = 0; i < 10; i++)
        last = commit_record(s, i);
    buf pending = {0};
    record_text(99, &pending);
    uint64_t pending_pos = append(s, &pending); /* appended, not committed: past the recorded end */
    buf_free(&pending);

    store_backup_info info;
    ms_err e = {0};
    assert_int_equal(store_backup(s, out, &info, &e), MS_OK);
    assert_int_equal(info.commit_pos, last);
    assert_int_equal(info.segment_size, SEG);
    assert_true(info.log_end <= pending_pos);
    assert_int_equal(info.log_end % 4096, 0);
    assert_int_equal(info.segments, (info.log_end + SEG - 1) / SEG);
    assert_true(info.segments >= 3);
    char segs[160], name[32];
    snprintf(segs, sizeof segs, "%s/segments", out);
    snprintf(name, sizeof name, "%012llu.seg", (unsigned long long)(info.segments - 1));
    assert_int_equal(file_size(segs, name), (off_t)(info.log_end - (info.segments - 1) * SEG));
    snprintf(name, sizeof name, "%012llu.seg", (unsigned long long)info.segments);
    assert_int_equal(file_size(segs, name), -1); /* none past the end (the pending body's segment) */
    assert_int_equal(file_size(out, "medstream.lock"), -1);
    store_close(s);

    /* the copy opens for writing, reads every committed record, and goes on past its end */
    store *c = open_store(out, &opt);
    store_read *r = unit_rbegin(c);
    assert_int_equal(store_commit_pos(r), last);
    store_read_end(r);
    expect_records(c, 10);
    record_version rv;
    assert_false(unit_record_at(c, "bk-99", INT64_MAX, &rv));
    commit_record(c, 10);
    store_close(c);
    c = open_store(out, &opt);
    expect_records(c, 11);
    store_close(c);
    unit_rmtree(dir);
}

static void test_backup_uses_the_recorded_segment_size(void **state)
{
    (void)state;
    char dir[64], data[96], out[128];
    unit_tmpdir(dir);
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(out, sizeof out, "%s/copy", dir);
    store_options opt = seg_options(false);
    store *s = open_store(data, &opt);
    for (int i = 0; i < 7; i++)
        commit_record(s, i);
    store_close(s);
    store_options ro = {.owner = "unit", .read_only = true}; /* the default segment size: 1 GiB */
    s = open_store(data, &ro);
    store_backup_info info;
    ms_err e = {0};
    assert_int_equal(store_backup(s, out, &info, &e), MS_OK);
    store_close(s);
    assert_int_equal(info.segment_size, SEG);
    assert_true(info.segments >= 2);
    store *c = open_store(out, &opt);
    expect_records(c, 7);
    store_close(c);
    unit_rmtree(dir);
}

static void test_backup_refusals_leave_nothing_behind(void **state)
{
    (void)state;
    char dir[64], data[96], path[160];
    unit_tmpdir(dir);
    snprintf(data, sizeof data, "%s/data", dir);
    store_options opt = seg_options(false);
    store *s = open_store(data, &opt);
    for (int i = 0; i < 4; i++)
        commit_record(s, i);
    ms_err e = {0};

    snprintf(path, sizeof path, "%s/taken", dir); /* not empty */
    assert_int_equal(mkdir(path, 0700), 0);
    FILE *f = fopen(strcat(path, "/keep"), "w");
    assert_non_null(f);
    fclose(f);
    snprintf(path, sizeof path, "%s/taken", dir);
    assert_int_equal(store_backup(s, path, NULL, &e), MS_ECONFLICT);
    assert_true(unit_has_str(e.msg, "exists and is not empty"));
    assert_int_equal(file_size(path, "lmdb"), -1);
    assert_true(file_size(path, "keep") == 0);

    snprintf(path, sizeof path, "%s/taken/keep", dir); /* a file */
    assert_int_equal(store_backup(s, path, NULL, &e), MS_ECONFLICT);
    snprintf(path, sizeof path, "%s/no/such/parent", dir);
    assert_int_equal(store_backup(s, path, NULL, &e), MS_EIO);

    /* a segment file missing below the end: MS_ECORRUPT, and the new directory is gone again */
    char seg0[160], moved[160];
    snprintf(seg0, sizeof seg0, "%s/segments/000000000001.seg", data);
    snprintf(moved, sizeof moved, "%s/moved.seg", dir);
    assert_int_equal(rename(seg0, moved), 0);
    snprintf(path, sizeof path, "%s/copy", dir);
    assert_int_equal(store_backup(s, path, NULL, &e), MS_ECORRUPT);
    assert_true(unit_has_str(e.msg, "missing"));
    struct stat st;
    assert_int_equal(stat(path, &st), -1);
    /* into an empty directory that was there before: it stays, empty */
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(store_backup(s, path, NULL, &e), MS_ECORRUPT);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(file_size(path, "lmdb"), -1);
    assert_int_equal(file_size(path, "segments"), -1);
    assert_int_equal(rename(moved, seg0), 0);
    assert_int_equal(store_backup(s, path, NULL, &e), MS_OK); /* and it works once the file is back */
    store_close(s);
    unit_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backup_is_one_instant),
        cmocka_unit_test(test_backup_uses_the_recorded_segment_size),
        cmocka_unit_test(test_backup_refusals_leave_nothing_behind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
