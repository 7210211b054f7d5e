/*
 * fuzz_record.c - libFuzzer target for the pure stages: record_prepare_body over arbitrary request bodies with the
 * default schema (max_record 4096, a fixed ingest time and a fixed id key).
 *
 * Beyond "no crash, no sanitizer report", it checks the scanner's contract on every input:
 *   - only a body of nothing but whitespace (after an optional byte-order mark) is refused as a whole
 *     (MS_EINVAL, no records);
 *   - every record is either rejected with an error text that starts with "line N", "item N" or "body"
 *     or valid, and a valid one has its identity key, record id and public fields set;
 *   - a valid record's body is a slice of the input, its fields are strictly sorted and findable, its
 *     record id is 1-256 bytes without control characters (32 lowercase hex when derived), its identity
 *     key is "normalized name NUL YYYY-MM-DD" with a real date, and its public fields parse as a JSON
 *     object whose keys are allow-listed and whose ts, if present, is a 4-digit year string;
 *   - line numbers never decrease and the rejected count matches.
 * Build and run: make fuzz FUZZ_SECONDS=20 (seeds in fuzz/corpus/).
 */
#include "fuzz_check.h"
#include "base/json_scan.h"
#include "pipeline/prepare.h"
#include "pipeline/record_scan.h"
#include "pipeline/schema.h"
#include "base/timefmt.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static schema g_schema;
static const unsigned char g_id_key[32] = "medstream fuzz id key 0123456789";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    schema_default(&g_schema);
    return 0;
}

/* Nothing but whitespace, after an optional UTF-8 byte-order mark (which the scanner skips). */
static bool is_ws_only(const uint8_t *p, size_t n)
{
    if (n >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF) p += 3, n -= 3;
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && p[i] != '\r') return false;
    return true;
}

static void check_public(const parsed_record *r)
{
    json_member m[SCHEMA_MAX_PUBLIC];
    json_error je;
    int k = json_scan_object(r->public_fields, r->public_fields_len, m, SCHEMA_MAX_PUBLIC, &je);
    CHECK(k >= 0);
    for (int i = 0; i < k; i++) {
        const schema_public_field *pf = schema_public(&g_schema, m[i].key, m[i].key_len);
        CHECK(pf != NULL);
        CHECK(!m[i].key_escaped);
        CHECK(record_field_get(r, m[i].key, m[i].key_len) != NULL); /* published only what the record has */
        if (pf->transform == PUBLISH_YEAR) {
            CHECK(m[i].type == JSON_STRING && m[i].val_len == 6);
            for (int d = 1; d <= 4; d++)
                CHECK(m[i].val[d] >= '0' && m[i].val[d] <= '9');
        } else {
            const record_field *f = record_field_get(r, m[i].key, m[i].key_len);
            CHECK(f->val_len == m[i].val_len && memcmp(f->val, m[i].val, f->val_len) == 0);
        }
        for (int j = 0; j < i; j++)
            CHECK(m[j].key_len != m[i].key_len || memcmp(m[j].key, m[i].key, m[i].key_len) != 0);
    }
}

static void check_valid(const parsed_record *r, const char *body, size_t len)
{
    CHECK(r->error == NULL);
    CHECK(r->identity_key != NULL && r->record_id != NULL && r->public_fields != NULL && r->type != NULL);
    CHECK(r->body >= body && r->body + r->body_len <= body + len);
    CHECK(r->body_len >= 2 && r->body[0] == '{' && r->body[r->body_len - 1] == '}');
    CHECK(r->body_len <= 4096);
    /* fields: strictly sorted, each found by record_field_get, values inside the record */
    for (uint32_t i = 0; i < r->nfields; i++) {
        const record_field *f = &r->fields[i];
        if (i) CHECK(record_key_cmp(r->fields[i - 1].key, r->fields[i - 1].key_len, f->key, f->key_len) < 0);
        CHECK(record_field_get(r, f->key, f->key_len) == f);
        CHECK(f->val >= r->body && f->val + f->val_len <= r->body + r->body_len);
    }
    /* record id */
    CHECK(r->record_id_len >= 1 && r->record_id_len <= RECORD_ID_MAX);
    for (uint32_t i = 0; i < r->record_id_len; i++)
        CHECK((unsigned char)r->record_id[i] >= 0x20 && r->record_id[i] != 0x7f);
    if (r->record_id_derived) {
        CHECK(r->record_id_len == 32);
        for (int i = 0; i < 32; i++)
            CHECK(strchr("0123456789abcdef", r->record_id[i]) && r->record_id[i]);
    }
    /* type */
    CHECK(r->type_len >= 1 && r->type_len <= 64);
    /* identity key: name NUL YYYY-MM-DD, a real date not after the ingest day */
    CHECK(r->identity_key_len >= 12);
    const char *k = r->identity_key;
    size_t nl = r->identity_key_len - 11;
    CHECK(memchr(k, 0, nl) == NULL && k[nl] == 0);
    CHECK(k[0] != ' ' && k[nl - 1] != ' ');
    int y, mo, d;
    CHECK(date_parse(k + nl + 1, 10, &y, &mo, &d));
    CHECK(y >= 1850);
    check_public(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_schema.name_field) schema_default(&g_schema);
    /* 2026-06-15T12:00:00Z */
    scan_config cfg = {.schema = &g_schema, .max_record = 4096, .now_us = 1781524800000000LL, .id_key = g_id_key};
    record_batch b = {0};
    ms_err e = {0};
    const char *body = (const char *)data;
    ms_code rc = record_prepare_body(&cfg, body, size, &b, &e);
    if (rc != MS_OK) {
        CHECK(rc == MS_EINVAL);
        CHECK(b.n == 0);
        CHECK(is_ws_only(data, size));
    } else {
        CHECK(!is_ws_only(data, size));
    }
    uint32_t rejected = 0, last_line = 0;
    for (uint32_t i = 0; i < b.n; i++) {
        const parsed_record *r = &b.records[i];
        CHECK(r->line >= 1);
        CHECK(r->line >= last_line);
        last_line = r->line;
        if (r->rejected) {
            rejected++;
            CHECK(r->error != NULL);
            CHECK(strncmp(r->error, "line ", 5) == 0 || strncmp(r->error, "item ", 5) == 0 ||
                  strncmp(r->error, "body", 4) == 0);
        } else {
            check_valid(r, body, size);
        }
    }
    CHECK(rejected == b.rejected);
    record_batch_free(&b);
    return 0;
}
