/*
 * test_export.c - the pure parts of medstream export (src/export): partition paths for each scope, the
 * Hive escaping, the columns of each scope, rows cut from record and patient objects, the spool
 * encoding, NDJSON and CSV lines, column batches, the manifest, signed links, a tar round trip, and pax
 * extended headers: the record's self-counting length, a path ustar cannot hold written and read back (by
 * tar_extract, tar_extract_fd and Python's tarfile), unsafe or malformed pax records refused before anything
 * is written; tar_extract_fd streaming multi-MiB members from a file, freeing what it read, refusing a cut one;
 * and what fuzz/fuzz_tar.c found in the reader: size fields that are not octal numbers (base-256, junk, over
 * 8 GiB), a directory member over a file, a directory's size taken as data by tar_extract alone, names with
 * an empty component ("a//") or of a temporary file (".x.tmp"), each refusal naming its header's offset.
 *
 * The public-scope property test: records with random extra field names (and PHI-looking values) go
 * through the real stages 1-3 (prepare + deidentify), and the public row built from the public copy
 * must hold no key outside the allow-list and no PHI token, in any column, nor in its partition path.
 */
#include "unit.h"

#include "export/export_jobs.h"
#include "export/layout.h"
#include "export/manifest.h"
#include "export/out_file.h"
#include "export/rows.h"
#include "export/tar.h"
#include "pipeline/deidentify.h"
#include "base/json_scan.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_phi_partition(void **state)
{
    (void)state;
    buf p = {0};
    layout_phi_partition("lab", 3, unit_time(2026, 11, 29, 23, 59, 59), &p);
    assert_string_equal(p.data, "records/type=lab/date=2026-11-29");
    layout_phi_partition("a/b=c:d%", 8, unit_time(1969, 12, 31, 23, 0, 0), &p); /* before the epoch */
    assert_string_equal(p.data, "records/type=a%2Fb%3Dc%3Ad%25/date=1969-12-31");
    layout_phi_partition("", 0, 0, &p);
    assert_string_equal(p.data, "records/type=__HIVE_DEFAULT_PARTITION__/date=1970-01-01");
    layout_phi_partition("..", 2, 0, &p);
    assert_string_equal(p.data, "records/type=%2E%2E/date=1970-01-01");
    buf_free(&p);
}

static void test_public_partition(void **state)
{
    (void)state;
    schema s;
    schema_default(&s);
    buf p = {0};
    const char *f = "{\"favorite_color\":\"blue\",\"type\":\"lab\",\"ts\":\"2026\"}";
    layout_public_partition(&s, f, strlen(f), &p);
    assert_string_equal(p.data, "records/type=lab/year=2026");
    assert_string_equal(layout_date_key(&s, EXPORT_PUBLIC), "year");
    assert_string_equal(layout_date_key(&s, EXPORT_PHI), "date");
    f = "{\"favorite_color\":\"blue\"}"; /* no type, no ts in the public copy: null partitions */
    layout_public_partition(&s, f, strlen(f), &p);
    assert_string_equal(p.data, "records/type=__HIVE_DEFAULT_PARTITION__/year=__HIVE_DEFAULT_PARTITION__");
    f = "{\"type\":\"lab\",\"ts\":\"2026-11-29T10:00:00Z\"}"; /* a full time under a year transform: refused */
    layout_public_partition(&s, f, strlen(f), &p);
    assert_string_equal(p.data, "records/type=lab/year=__HIVE_DEFAULT_PARTITION__");
    schema_free(&s);
    /* a schema that copies ts: date partitions; one without ts public: no date at all */
    const char *copy = "{\"public\":{\"type\":\"copy\",\"ts\":\"copy\"}}";
    ms_err e;
    assert_int_equal(schema_parse(&s, copy, strlen(copy), &e), MS_OK);
    f = "{\"type\":\"lab\",\"ts\":\"2026-11-29T23:30:00-02:00\"}";
    layout_public_partition(&s, f, strlen(f), &p);
    assert_string_equal(p.data, "records/type=lab/date=2026-11-30");
    schema_free(&s);
    const char *none = "{\"public\":{\"favorite_color\":\"copy\"}}";
    assert_int_equal(schema_parse(&s, none, strlen(none), &e), MS_OK);
    f = "{\"favorite_color\":\"red\"}";
    layout_public_partition(&s, f, strlen(f), &p);
    assert_string_equal(p.data, "records/type=__HIVE_DEFAULT_PARTITION__/date=__HIVE_DEFAULT_PARTITION__");
    schema_free(&s);
    layout_part_name(7, EXPORT_PARQUET, &p);
    assert_string_equal(p.data, "part-00007.parquet");
    buf_free(&p);
}

static int col_index(const export_columns *c, const char *name)
{
    for (int k = 0; k < c->n; k++)
        if (!strcmp(c->col[k].name, name)) return k;
    return -1;
}

static void test_columns(void **state)
{
    (void)state;
    schema s;
    ms_err e;
    const char *text = "{\"public\":{\"type\":\"copy\",\"ts\":\"year\",\"weight\":\"copy\"},"
                       "\"types\":{\"weight\":\"number\",\"smoker\":\"boolean\",\"fields\":\"number\"}}";
    assert_int_equal(schema_parse(&s, text, strlen(text), &e), MS_OK);
    export_columns c;
    rows_record_columns(&s, EXPORT_PHI, &c);
    assert_int_equal(c.n, 8); /* patient_id record_id version recorded_at ts weight smoker fields */
    assert_int_equal(col_index(&c, "recorded_at"), 3);
    assert_int_equal(c.col[col_index(&c, "weight")].type, PQ_DOUBLE);
    assert_int_equal(c.col[col_index(&c, "smoker")].type, PQ_BOOLEAN);
    assert_int_equal(col_index(&c, "fields"), 7); /* a typed field named like a column stays in fields */
    rows_record_columns(&s, EXPORT_PUBLIC, &c);
    assert_int_equal(col_index(&c, "recorded_at"), -1); /* no system time in public */
    assert_int_equal(col_index(&c, "ts"), -1);          /* a year transform: the partition only */
    assert_true(col_index(&c, "weight") > 0);
    assert_int_equal(col_index(&c, "smoker"), -1); /* typed but not public */
    rows_patient_columns(&s, EXPORT_PHI, &c);
    assert_int_equal(col_index(&c, "name"), 3);
    rows_patient_columns(&s, EXPORT_PUBLIC, &c);
    assert_int_equal(c.n, 2);
    schema_free(&s);
}

static void test_rows_and_formats(void **state)
{
    (void)state;
    schema s;
    ms_err e;
    const char *text = "{\"types\":{\"weight\":\"number\",\"smoker\":\"boolean\"}}";
    assert_int_equal(schema_parse(&s, text, strlen(text), &e), MS_OK);
    export_columns c;
    rows_record_columns(&s, EXPORT_PHI, &c);
    record_version rv = {.version = 3, .valid_from = unit_time(2026, 11, 29, 12, 0, 0), .ts_us = unit_now()};
    memcpy(rv.record_id, "r-1", 3);
    rv.record_id_len = 3;
    const char *body =
        "{\"record_id\":\"r-1\",\"type\":\"lab\",\"ts\":\"2026-06-15T12:00:00Z\",\"name\":\"Ann, \\\"A\\\"\","
        "\"weight\":72.5,\"smoker\":\"maybe\",\"n\":{\"a\":[1,2]}}";
    row_builder b = {0};
    export_row row;
    assert_int_equal(rows_phi_record(&b, &c, &s, &rv, body, strlen(body), &row, &e), MS_OK);
    int w = col_index(&c, "weight"), sm = col_index(&c, "smoker"), f = col_index(&c, "fields");
    assert_true(row.v[w].present);
    assert_true(row.v[w].f64 == 72.5);
    assert_false(row.v[sm].present); /* "maybe" is no boolean: it stays in fields */
    assert_string_equal(b.fields.data, "{\"name\":\"Ann, \\\"A\\\"\",\"smoker\":\"maybe\",\"n\":{\"a\":[1,2]}}");
    assert_int_equal(row.v[f].len, b.fields.len);
    /* spool round trip */
    buf enc = {0};
    rows_encode(&c, &row, &enc);
    export_row back;
    size_t used;
    assert_true(rows_decode(&c, enc.data, enc.len, &back, &used));
    assert_int_equal(used, enc.len);
    assert_false(rows_decode(&c, enc.data, enc.len - 1, &back, &used)); /* cut short */
    buf nd = {0}, csv = {0};
    rows_ndjson(&c, &back, &nd);
    assert_true(unit_has_str(nd.data, "\"record_id\":\"r-1\",\"version\":3,\"recorded_at\":\"2026-11-29T12:00:00"));
    assert_true(unit_has_str(nd.data, "\"weight\":72.5,\"smoker\":null,\"fields\":{\"name\""));
    json_member m[16];
    json_error je;
    assert_int_equal(json_scan_object(nd.data, nd.len - 1, m, 16, &je), 8);
    rows_csv_header(&c, &csv);
    assert_string_equal(csv.data, "patient_id,record_id,version,recorded_at,ts,weight,smoker,fields\r\n");
    csv.len = 0;
    rows_csv(&c, &back, &csv);
    assert_true(unit_has_str(csv.data, ",r-1,3,2026-11-29T12:00:00.000000Z,2026-06-15T12:00:00.000000Z,72.5,,\""));
    assert_true(unit_has_str(csv.data, "\"{\"\"name\"\":\"\"Ann, \\\"\"A\\\"\"\"\",")); /* quotes doubled */
    /* batches */
    rows_batch bt = {0};
    for (int i = 0; i < 3000; i++)
        rows_batch_add(&bt, &c, &back);
    pq_values vals[EXPORT_MAX_COLUMNS];
    rows_batch_values(&bt, &c, vals);
    assert_int_equal(bt.n, 3000);
    assert_int_equal(vals[1].len[2999], 3);
    assert_memory_equal(vals[1].str[2999], "r-1", 3);
    assert_true(vals[w].present[10] && !vals[sm].present[10]);
    assert_null(vals[0].present); /* a required column: all present */
    assert_int_equal(vals[2].i64[5], 3);
    rows_batch_free(&bt);
    buf_free(&enc);
    buf_free(&nd);
    buf_free(&csv);
    row_builder_free(&b);
    schema_free(&s);
}

/* ---- public rows: nothing outside the allow-list (property test) ---- */

static const char *const phi_like[] = {"ssn",      "phone", "address", "mrn",  "email",  "colour",
                                       "favorite", "Type",  "ts2",     "year", "fields", "name2"};

static void test_public_rows_allow_list(void **state)
{
    (void)state;
    schema s;
    schema_default(&s);
    scan_config cfg = unit_scan_config(&s);
    export_columns c;
    rows_record_columns(&s, EXPORT_PUBLIC, &c);
    unit_rng rng = {0x5eed};
    row_builder b = {0};
    for (int iter = 0; iter < 2000; iter++) {
        arena mem = {0};
        buf rec = {0}, tokens = {0};
        buf_printf(&rec,
                   "{\"name\":\"PHINAME%u\",\"dob\":\"1980-02-03\",\"type\":\"lab\",\"ts\":\"2026-05-0%uT01:02:03Z\","
                   "\"favorite_color\":\"blue\"",
                   (unsigned)unit_below(&rng, 100000), 1 + unit_below(&rng, 9));
        int extra = (int)unit_below(&rng, 6);
        for (int k = 0; k < extra; k++) {
            char key[40];
            if (unit_below(&rng, 2))
                snprintf(key, sizeof key, "%s", phi_like[unit_below(&rng, sizeof phi_like / sizeof *phi_like)]);
            else
                snprintf(key, sizeof key, "f%08x", (unsigned)unit_rand(&rng));
            char quoted[48];
            snprintf(quoted, sizeof quoted, "\"%s\":", key);
            if (unit_has_str(rec.data, quoted)) continue; /* a record's fields are unique */
            buf_printf(&rec, ",\"%s\":\"SECRET%u\"", key, (unsigned)k);
        }
        buf_putc(&rec, '}');
        parsed_record r = unit_scan_ok(&cfg, &mem, rec.data);
        public_record pr = {.fields = r.public_fields, .fields_len = r.public_fields_len};
        record_version rv = {.version = 1};
        memcpy(rv.record_id, "r", 1);
        rv.record_id_len = 1;
        export_row row;
        ms_err e;
        assert_int_equal(rows_public_record(&b, &c, &s, &rv, &pr, &row, &e), MS_OK);
        buf line = {0}, part = {0};
        rows_ndjson(&c, &row, &line);
        layout_public_partition(&s, pr.fields, pr.fields_len, &part);
        assert_false(unit_has_str(line.data, "SECRET"));
        assert_false(unit_has_str(line.data, "PHINAME"));
        assert_false(unit_has_str(line.data, "1980"));
        assert_false(unit_has_str(line.data, "05-0"));
        assert_false(unit_has_str(part.data, "05-0"));
        /* every key of the fields column is allow-listed */
        int fi = col_index(&c, "fields");
        json_member m[64];
        json_error je;
        int n = json_scan_object(row.v[fi].str, row.v[fi].len, m, 64, &je);
        assert_true(n >= 0);
        for (int i = 0; i < n; i++)
            assert_non_null(schema_public(&s, m[i].key, m[i].key_len));
        buf_free(&line);
        buf_free(&part);
        buf_free(&rec);
        buf_free(&tokens);
        arena_free(&mem);
    }
    row_builder_free(&b);
    schema_free(&s);
}

static void test_manifest(void **state)
{
    (void)state;
    schema s;
    schema_default(&s);
    export_columns rc, pc;
    rows_record_columns(&s, EXPORT_PHI, &rc);
    rows_patient_columns(&s, EXPORT_PHI, &pc);
    manifest_file files[2] = {{.path = "records/type=lab/date=2026-11-29/part-00000.ndjson", .rows = 2, .bytes = 10},
                              {.path = "patients/part-00000.ndjson", .rows = 1, .bytes = 5}};
    memset(files[0].sha256, 0xab, 32);
    manifest_info m = {.export_id = "exp_1",
                       .as_of = unit_time(2026, 11, 29, 12, 0, 0),
                       .scope = EXPORT_PHI,
                       .format = EXPORT_NDJSON,
                       .type = "lab",
                       .since = INT64_MIN,
                       .until = unit_time(2027, 1, 1, 0, 0, 0),
                       .date_key = "date",
                       .record_columns = &rc,
                       .patient_columns = &pc,
                       .record_rows = 2,
                       .patient_rows = 1,
                       .files = files,
                       .nfiles = 2};
    manifest_schema_hash(&s, m.schema_sha256);
    assert_int_equal(strlen(m.schema_sha256), 64);
    buf out = {0};
    manifest_json(&m, &out);
    json_member mm[32];
    json_error je;
    assert_true(json_scan_object(out.data, out.len, mm, 32, &je) > 10);
    assert_true(unit_has_str(out.data,
                             "\"as_of\":\"2026-11-29T12:00:00.000000Z\",\"snapshot_id\":null,\"scope\":\"phi\","
                             "\"format\":\"ndjson\""));
    assert_true(unit_has_str(out.data, "\"filters\":{\"type\":\"lab\",\"since\":null,\"until\":\"2027-01-01"));
    assert_true(unit_has_str(out.data, "\"partitioning\":[\"type\",\"date\"]"));
    assert_true(unit_has_str(out.data, "{\"path\":\"records/type=lab/date=2026-11-29/part-00000.ndjson\",\"rows\":2,"
                                       "\"bytes\":10,\"sha256\":\"abababab"));
    assert_true(unit_has_str(out.data, "\"rows\":{\"records\":2,\"patients\":1}"));
    /* the same meaning hashes the same; another allow-list does not */
    schema s2;
    ms_err e;
    const char *t = "{\"public\":{\"favorite_color\":\"copy\",\"type\":\"copy\"}}";
    assert_int_equal(schema_parse(&s2, t, strlen(t), &e), MS_OK);
    char h2[65];
    manifest_schema_hash(&s2, h2);
    assert_string_not_equal(h2, m.schema_sha256);
    schema_free(&s2);
    buf_free(&out);
    schema_free(&s);
}

static void test_link_signature(void **state)
{
    (void)state;
    unsigned char key[32] = {1, 2, 3};
    char a[65], b[65], c[65];
    export_link_sign(key, "exp_0011223344556677", 1900000000, a);
    export_link_sign(key, "exp_0011223344556677", 1900000001, b);
    key[0] = 9;
    export_link_sign(key, "exp_0011223344556677", 1900000000, c);
    assert_int_equal(strlen(a), 64);
    assert_string_not_equal(a, b);
    assert_string_not_equal(a, c);
}

static void test_tar_round_trip(void **state)
{
    (void)state;
    char dir[256], src[300], dst[300];
    unit_tmpdir(dir);
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(dst, sizeof dst, "%s/dst", dir);
    ms_err e;
    char deep[600];
    snprintf(deep, sizeof deep, "%s/records/type=%0120d/date=2026-11-29", src, 7); /* a path over 100 bytes */
    assert_int_equal(out_mkdirs(deep, &e), MS_OK);
    out_file *f;
    assert_int_equal(out_open(&f, deep, "part-00000.ndjson", 0600, &e), MS_OK);
    assert_int_equal(out_write(f, "{\"a\":1}\n", 8, &e), MS_OK);
    assert_int_equal(out_finish(f, NULL, &e), MS_OK);
    assert_int_equal(tar_write_dir(src, dir, "x.tar", &e), MS_OK);
    char tarp[300];
    snprintf(tarp, sizeof tarp, "%s/x.tar", dir);
    buf t = {0};
    assert_int_equal(buf_read_file(&t, tarp, &e), MS_OK);
    assert_int_equal(t.len % 512, 0);
    assert_int_equal(out_mkdirs(dst, &e), MS_OK);
    assert_int_equal(tar_extract(t.data, t.len, dst, &e), MS_OK);
    char got[700];
    snprintf(got, sizeof got, "%s/records/type=%0120d/date=2026-11-29/part-00000.ndjson", dst, 7);
    buf g = {0};
    assert_int_equal(buf_read_file(&g, got, &e), MS_OK);
    assert_string_equal(g.data, "{\"a\":1}\n");
    /* a member named ../x is refused */
    memcpy(t.data, "../evil", 8);
    assert_int_equal(tar_extract(t.data, t.len, dst, &e), MS_EINVAL);
    buf_free(&t);
    buf_free(&g);
    unit_rmtree(dir);
}

/* ---- pax extended headers: paths ustar cannot hold ---- */

static void test_tar_pax_record_length_counts_itself(void **state)
{
    (void)state;
    char v[1200];
    for (size_t n = 0; n < sizeof v - 1; n++) { /* crosses 9/10, 99/100 and 999/1000 bytes */
        memset(v, 'a', n);
        v[n] = 0;
        buf r = {0};
        tar_pax_record("path", v, &r);
        char *sp;
        unsigned long len = strtoul(r.data, &sp, 10);
        assert_int_equal(len, r.len); /* the number is the record's length, its own digits included */
        assert_true(*sp == ' ' && strncmp(sp + 1, "path=", 5) == 0);
        assert_int_equal(r.data[r.len - 1], '\n');
        assert_int_equal(r.len, (size_t)(sp - r.data) + 7 + n);
        buf_free(&r);
    }
    buf r = {0};
    tar_pax_record("path", "a", &r); /* POSIX's example shape: "LEN path=VALUE\n" */
    assert_string_equal(r.data, "9 path=a\n");
    r.len = 0;
    memset(v, 'b', 92);
    v[92] = 0;
    tar_pax_record("path", v, &r); /* 7 + 92 = 99 bytes with 2 digits would be 101: 3 digits, 102 */
    assert_int_equal(r.len, 102);
    assert_memory_equal(r.data, "102 path=", 9);
    buf_free(&r);
}

/* A ustar header block written here, by the test (an archive the writer would never make). */
static void put_header(buf *t, const char *name, char type, size_t size)
{
    char h[512] = {0};
    memcpy(h, name, strlen(name) < 100 ? strlen(name) : 100);
    snprintf(h + 100, 8, "%07o", 0644);
    snprintf(h + 108, 8, "%07o", 0);
    snprintf(h + 116, 8, "%07o", 0);
    snprintf(h + 124, 12, "%011zo", size);
    snprintf(h + 136, 12, "%011o", 0);
    h[156] = type;
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += (unsigned char)h[i];
    snprintf(h + 148, 8, "%06o", sum);
    buf_put(t, h, 512);
}

static void put_data(buf *t, const char *d, size_t n)
{
    buf_put(t, d, n);
    while (t->len % 512)
        buf_putc(t, 0);
}

/* An archive of one pax header with the given records and one file "ok.txt" after it. */
static void pax_archive(buf *t, const char *records)
{
    t->len = 0;
    put_header(t, "PaxHeaders/ok.txt", 'x', strlen(records));
    put_data(t, records, strlen(records));
    put_header(t, "ok.txt", '0', 3);
    put_data(t, "hi\n", 3);
    char end[1024] = {0};
    buf_put(t, end, sizeof end);
}

static bool exists(const char *dir, const char *rel)
{
    char p[5000];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    struct stat st;
    return lstat(p, &st) == 0;
}

static void test_tar_long_path_round_trip_and_refusals(void **state)
{
    (void)state;
    char dir[256], src[300], dst[300], tarp[300];
    unit_tmpdir(dir);
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(dst, sizeof dst, "%s/dst", dir);
    snprintf(tarp, sizeof tarp, "%s/x.tar", dir);
    ms_err e;
    /* a type of 60 '#' (valid: 1-64 characters): escaped, the partition directory alone is 185 bytes */
    char type[64], rel[400], deep[700];
    memset(type, '#', 60);
    buf part = {0};
    layout_phi_partition(type, 60, unit_time(2025, 1, 1, 0, 0, 0), &part);
    assert_int_equal(part.len, strlen("records/type=") + 180 + strlen("/date=2025-01-01"));
    snprintf(rel, sizeof rel, "%s/part-00000.ndjson", part.data);
    snprintf(deep, sizeof deep, "%s/%s", src, part.data);
    assert_int_equal(out_mkdirs(deep, &e), MS_OK);
    out_file *f;
    assert_int_equal(out_open(&f, deep, "part-00000.ndjson", 0600, &e), MS_OK);
    assert_int_equal(out_write(f, "{\"a\":1}\n", 8, &e), MS_OK);
    assert_int_equal(out_finish(f, NULL, &e), MS_OK);
    assert_int_equal(tar_write_dir(src, dir, "x.tar", &e), MS_OK); /* was: "a path of 194 bytes does not fit ustar" */
    buf t = {0};
    assert_int_equal(buf_read_file(&t, tarp, &e), MS_OK);
    assert_int_equal(t.len % 512, 0);
    /* the file's member is preceded by an 'x' header whose one record is "LEN path=<the whole path>\n" */
    buf want = {0};
    tar_pax_record("path", rel, &want);
    bool seen = false;
    for (size_t at = 0; at + 1024 <= t.len && !seen; at += 512)
        if (t.data[at + 156] == 'x' && memcmp(t.data + at + 512, want.data, want.len) == 0) {
            seen = true;
            assert_int_equal(strtoul(t.data + at + 124, NULL, 8), want.len); /* its size: the records' bytes */
            size_t next = at + 512 + (want.len + 511) / 512 * 512;
            assert_int_equal(t.data[next + 156], '0'); /* then the member itself */
        }
    assert_true(seen);
    /* the project's reader, from the buffer and from the file */
    assert_int_equal(out_mkdirs(dst, &e), MS_OK);
    assert_int_equal(tar_extract(t.data, t.len, dst, &e), MS_OK);
    char got[900];
    snprintf(got, sizeof got, "%s/%s", dst, rel);
    buf g = {0};
    assert_int_equal(buf_read_file(&g, got, &e), MS_OK);
    assert_string_equal(g.data, "{\"a\":1}\n");
    unit_rmtree(dst);
    int fd = open(tarp, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(tar_extract_fd(fd, false, dst, &e), MS_OK);
    close(fd);
    g.len = 0;
    assert_int_equal(buf_read_file(&g, got, &e), MS_OK);
    assert_string_equal(g.data, "{\"a\":1}\n");
    /* an independent reader: Python's tarfile sees the whole name and the bytes */
    if (access("/usr/bin/python3", X_OK) == 0) {
        char cmd[2000];
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 -c 'import sys,tarfile\nt=tarfile.open(sys.argv[1])\n"
                 "assert sys.argv[2] in t.getnames(),t.getnames()\n"
                 "assert t.extractfile(sys.argv[2]).read()==b\"{\\\"a\\\":1}\\n\"\n"
                 "assert all(m.isdir() or m.isfile() for m in t.getmembers())' '%s' '%s'",
                 tarp, rel);
        assert_int_equal(system(cmd), 0);
    }
    /* refused: a pax path that is absolute or climbs out (the ustar name after it is harmless), before
     * anything is written; a malformed record; a header with no member after it */
    static const char *const bad_paths[] = {"../evil.txt", "/tmp/evil.txt", "a/../../b.txt", "a//b", "./", ".", ""};
    static const char *const bad_records[] = {"99 path=x.txt\n", "9 path=x.txt\n", "13 path=x.txt", "x path=a\n",
                                              "16 size=1000000\n"};
    size_t nbad = sizeof bad_paths / sizeof *bad_paths, nrec = sizeof bad_records / sizeof *bad_records;
    buf a = {0}, r = {0};
    for (size_t i = 0; i < nbad + nrec; i++) {
        char d2[400];
        snprintf(d2, sizeof d2, "%s/bad%zu", dir, i);
        assert_int_equal(out_mkdirs(d2, &e), MS_OK);
        r.len = 0;
        if (i < nbad)
            tar_pax_record("path", bad_paths[i], &r);
        else
            buf_puts(&r, bad_records[i - nbad]);
        pax_archive(&a, r.data);
        assert_int_equal(tar_extract(a.data, a.len, d2, &e), MS_EINVAL);
        assert_false(exists(d2, "ok.txt"));
        assert_false(exists(dir, "evil.txt"));
        assert_false(exists(dir, "b.txt"));
    }
    assert_false(exists("/tmp", "evil.txt"));
    r.len = 0;
    tar_pax_record("path", "sub/y.txt", &r);
    assert_string_equal(r.data, "18 path=sub/y.txt\n");
    pax_archive(&a, r.data); /* a good one: the pax path wins over the ustar name */
    assert_int_equal(tar_extract(a.data, a.len, dir, &e), MS_OK);
    assert_true(exists(dir, "sub/y.txt"));
    assert_false(exists(dir, "ok.txt"));
    a.len = 0;
    put_header(&a, "PaxHeaders/x", 'x', 12);
    put_data(&a, "12 path=x.t\n", 12);
    char end[1024] = {0};
    buf_put(&a, end, sizeof end);
    assert_int_equal(tar_extract(a.data, a.len, dir, &e), MS_EINVAL); /* dangling */
    buf_free(&a);
    buf_free(&r);
    buf_free(&want);
    buf_free(&part);
    buf_free(&t);
    buf_free(&g);
    unit_rmtree(dir);
}

/* tar_extract_fd: members of several MiB read a chunk at a time from a file, the same bytes back; with release,
 * what was read is freed from the disk (where the file system punches holes); a cut archive is refused. */
static void test_tar_extract_fd_streams_and_releases(void **state)
{
    (void)state;
    char dir[256], src[300], dst[300], tarp[300];
    unit_tmpdir(dir);
    snprintf(src, sizeof src, "%s/src/records", dir);
    snprintf(dst, sizeof dst, "%s/dst", dir);
    snprintf(tarp, sizeof tarp, "%s/x.tar", dir);
    ms_err e;
    assert_int_equal(out_mkdirs(src, &e), MS_OK);
    size_t n = (5u << 20) + 123; /* 5 MiB and a bit: chunks, and a last one cut mid-block */
    char *data = malloc(n);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++)
        data[i] = (char)(i * 131 + (i >> 12));
    for (int k = 0; k < 2; k++) {
        out_file *f;
        assert_int_equal(out_open(&f, src, k ? "b.bin" : "a.bin", 0600, &e), MS_OK);
        assert_int_equal(out_write(f, data, n, &e), MS_OK);
        assert_int_equal(out_finish(f, NULL, &e), MS_OK);
    }
    snprintf(src, sizeof src, "%s/src", dir);
    assert_int_equal(tar_write_dir(src, dir, "x.tar", &e), MS_OK);
    struct stat st;
    assert_int_equal(stat(tarp, &st), 0);
    off_t tar_size = st.st_size;
    char probe[300]; /* whether this file system punches holes at all */
    snprintf(probe, sizeof probe, "%s/probe", dir);
    int fd = open(probe, O_RDWR | O_CREAT, 0600);
    assert_true(fd >= 0 && write(fd, data, 8192) == 8192);
    bool punches = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0;
    close(fd);
    fd = open(tarp, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(tar_extract_fd(fd, true, dst, &e), MS_OK);
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, tar_size); /* holes, not a shorter file */
    if (punches) assert_true((off_t)st.st_blocks * 512 < tar_size / 4);
    close(fd);
    for (int k = 0; k < 2; k++) {
        char p[400];
        snprintf(p, sizeof p, "%s/records/%s", dst, k ? "b.bin" : "a.bin");
        buf g = {0};
        assert_int_equal(buf_read_file(&g, p, &e), MS_OK);
        assert_int_equal(g.len, n);
        assert_memory_equal(g.data, data, n);
        buf_free(&g);
    }
    /* the same archive cut inside its second member: refused, and that member is not left behind */
    buf t = {0};
    unit_rmtree(tarp);
    assert_int_equal(tar_write_dir(src, dir, "x.tar", &e), MS_OK);
    assert_int_equal(buf_read_file(&t, tarp, &e), MS_OK);
    assert_int_equal(truncate(tarp, (off_t)t.len - 3 * 1024 * 1024), 0);
    unit_rmtree(dst);
    fd = open(tarp, O_RDONLY);
    assert_int_equal(tar_extract_fd(fd, false, dst, &e), MS_EINVAL);
    assert_true(unit_has_str(e.msg, "cut short"));
    close(fd);
    assert_false(exists(dst, "records/b.bin"));
    buf_free(&t);
    free(data);
    unit_rmtree(dir);
}

/* ---- what fuzz/fuzz_tar.c found in the reader (each test fails without its fix in tar.c) ---- */

/* The size field of the header at t->data + at set to the 12 bytes of field, and its checksum made right. */
static void set_size_field(buf *t, size_t at, const char field[12])
{
    char *h = t->data + at;
    memcpy(h + 124, field, 12);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += (unsigned char)h[i];
    snprintf(h + 148, 8, "%06o", sum);
}

static void end_marker(buf *t)
{
    char end[1024] = {0};
    buf_put(t, end, sizeof end);
}

/* tar_extract and tar_extract_fd (from a file, after 100 bytes that are not the archive's) of t into dir/a and
 * dir/b: both must give want, and the same message. */
static void extract_both(const buf *t, const char *dir, ms_code want, ms_err *e)
{
    char a[300], b[300], file[300];
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    snprintf(file, sizeof file, "%s/archive.tar", dir);
    unit_rmtree(a);
    unit_rmtree(b);
    assert_int_equal(out_mkdirs(a, e), MS_OK);
    assert_int_equal(out_mkdirs(b, e), MS_OK);
    assert_int_equal(tar_extract(t->data, t->len, a, e), want);
    char first[sizeof e->msg];
    snprintf(first, sizeof first, "%s", want ? e->msg : "");
    int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    char before[100];
    memset(before, 'z', sizeof before);
    assert_int_equal(write(fd, before, sizeof before), (ssize_t)sizeof before);
    assert_int_equal(write(fd, t->data, t->len), (ssize_t)t->len);
    assert_int_equal(lseek(fd, sizeof before, SEEK_SET), (off_t)sizeof before);
    assert_int_equal(tar_extract_fd(fd, false, b, e), want);
    close(fd);
    unlink(file);
    if (want) assert_string_equal(e->msg, first);
}

/* A size field is an octal number or the member is refused: GNU tar's base-256 form (a member over 8 GiB) was
 * read as 0, so the member's own bytes were read as members and a file hidden in them extracted; junk after
 * the digits was ignored; a 12-digit size over 8 GiB was taken. */
static void test_tar_size_field_is_an_octal_number_or_refused(void **state)
{
    (void)state;
    char dir[256];
    unit_tmpdir(dir);
    ms_err e;
    buf inner = {0}, t = {0};
    put_header(&inner, "smuggled.txt", '0', 3);
    put_data(&inner, "hi\n", 3);
    put_header(&t, "big.bin", '0', 0);
    char base256[12] = {(char)0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x04, 0}; /* 1024: GNU's binary number */
    set_size_field(&t, 0, base256);
    buf_put(&t, inner.data, inner.len); /* the member's 1024 bytes: a header and its data */
    end_marker(&t);
    extract_both(&t, dir, MS_EINVAL, &e);
    assert_true(unit_has_str(e.msg, "a size field that is not an octal number (the header at byte 0)"));
    assert_false(exists(dir, "a/smuggled.txt") || exists(dir, "b/smuggled.txt"));
    assert_false(exists(dir, "a/big.bin") || exists(dir, "b/big.bin"));
    /* junk after the digits: "3x" was read as 3 */
    t.len = 0;
    put_header(&t, "x.txt", '0', 3);
    set_size_field(&t, 0, "00000000003x");
    put_data(&t, "abc", 3);
    end_marker(&t);
    extract_both(&t, dir, MS_EINVAL, &e);
    assert_false(exists(dir, "a/x.txt") || exists(dir, "b/x.txt"));
    /* 12 digits, over 8 GiB: refused for its size, not read until the archive runs out */
    t.len = 0;
    put_header(&t, "huge.bin", '0', 0);
    set_size_field(&t, 0, "100000000000");
    put_data(&t, "abc", 3);
    end_marker(&t);
    extract_both(&t, dir, MS_EINVAL, &e);
    assert_true(unit_has_str(e.msg, "a member over 8 GiB"));
    /* what stays taken: a space-padded field (old tars), a NUL-ended one, one that fills the field, and (for
     * the second member) one of NULs only: 0 */
    static const char *const good[] = {"          3 ", "00000000003\0", "           3"};
    for (size_t i = 0; i < 3; i++) {
        t.len = 0;
        put_header(&t, "x.txt", '0', 3);
        set_size_field(&t, 0, good[i]);
        put_data(&t, "abc", 3);
        put_header(&t, "empty.txt", '0', 0);
        char none[12] = {0};
        set_size_field(&t, 1024, none);
        end_marker(&t);
        extract_both(&t, dir, MS_OK, &e);
        assert_true(exists(dir, "b/x.txt") && exists(dir, "a/empty.txt"));
    }
    buf_free(&inner);
    buf_free(&t);
    unit_rmtree(dir);
}

/* A directory member where a file of the same name was extracted is refused: mkdir -p took the file as the
 * directory, and the extraction succeeded with a file where the archive ends with a directory. */
static void test_tar_directory_member_over_a_file_is_refused(void **state)
{
    (void)state;
    char dir[256];
    unit_tmpdir(dir);
    ms_err e;
    buf t = {0};
    put_header(&t, "a", '0', 3);
    put_data(&t, "abc", 3);
    put_header(&t, "a/", '5', 0);
    end_marker(&t);
    extract_both(&t, dir, MS_EINVAL, &e);
    assert_true(unit_has_str(e.msg, "a directory member over a file of the same name (the header at byte 1024)"));
    buf_free(&t);
    unit_rmtree(dir);
}

/* A directory's size field is no data (as GNU tar and Python's tarfile read it): tar_extract refused a
 * directory whose size went past the archive's end as "cut short", while tar_extract_fd extracted it. */
static void test_tar_directory_size_is_no_data_in_both_readers(void **state)
{
    (void)state;
    char dir[256];
    unit_tmpdir(dir);
    ms_err e;
    buf t = {0};
    put_header(&t, "d/", '5', 65536);
    put_header(&t, "d/f.txt", '0', 3);
    put_data(&t, "abc", 3);
    end_marker(&t);
    extract_both(&t, dir, MS_OK, &e);
    assert_true(exists(dir, "a/d/f.txt") && exists(dir, "b/d/f.txt"));
    buf_free(&t);
    unit_rmtree(dir);
}

/* Names: "a//" has an empty component (it was taken as the directory a); a member named like the extractor's
 * temporary file of another (".x.tmp" beside "x") is refused: extracting x wrote over it, and the extraction
 * succeeded without it. A refusal says where its header is. */
static void test_tar_names_with_an_empty_component_or_a_temporary_files_are_refused(void **state)
{
    (void)state;
    char dir[256];
    unit_tmpdir(dir);
    ms_err e;
    buf t = {0};
    put_header(&t, "ok/", '5', 0);
    put_header(&t, "a//", '5', 0);
    end_marker(&t);
    extract_both(&t, dir, MS_EINVAL, &e);
    assert_true(unit_has_str(e.msg, "member name refused (absolute or with ..) (the header at byte 512)"));
    assert_false(exists(dir, "a/a") || exists(dir, "b/a"));
    t.len = 0;
    put_header(&t, "d/.x.tmp", '0', 5);
    put_data(&t, "first", 5);
    put_header(&t, "d/x", '0', 6);
    put_data(&t, "second", 6);
    end_marker(&t);
    extract_both(&t, dir, MS_EINVAL, &e);
    assert_true(unit_has_str(e.msg, "a member named like a temporary file (.NAME.tmp) (the header at byte 0)"));
    t.len = 0;
    put_header(&t, ".x.tmp/", '5', 0); /* as a directory: x could not be extracted at all */
    put_header(&t, "x", '0', 1);
    put_data(&t, "1", 1);
    end_marker(&t);
    extract_both(&t, dir, MS_EINVAL, &e);
    t.len = 0; /* names that only look close are taken */
    put_header(&t, ".tmp", '0', 1);
    put_data(&t, "1", 1);
    put_header(&t, "x.tmp", '0', 1);
    put_data(&t, "2", 1);
    put_header(&t, ".x.tmp.1", '0', 1);
    put_data(&t, "3", 1);
    end_marker(&t);
    extract_both(&t, dir, MS_OK, &e);
    assert_true(exists(dir, "a/.tmp") && exists(dir, "a/x.tmp") && exists(dir, "b/.x.tmp.1"));
    buf_free(&t);
    unit_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_phi_partition),
        cmocka_unit_test(test_public_partition),
        cmocka_unit_test(test_columns),
        cmocka_unit_test(test_rows_and_formats),
        cmocka_unit_test(test_public_rows_allow_list),
        cmocka_unit_test(test_manifest),
        cmocka_unit_test(test_link_signature),
        cmocka_unit_test(test_tar_round_trip),
        cmocka_unit_test(test_tar_pax_record_length_counts_itself),
        cmocka_unit_test(test_tar_long_path_round_trip_and_refusals),
        cmocka_unit_test(test_tar_extract_fd_streams_and_releases),
        cmocka_unit_test(test_tar_size_field_is_an_octal_number_or_refused),
        cmocka_unit_test(test_tar_directory_member_over_a_file_is_refused),
        cmocka_unit_test(test_tar_directory_size_is_no_data_in_both_readers),
        cmocka_unit_test(test_tar_names_with_an_empty_component_or_a_temporary_files_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
