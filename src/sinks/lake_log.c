/*
 * lake_log.c - the lake's commits log: line encoding and parsing, reading a whole log, and the recovery
 * plan of a start (see lake_log.h).
 *
 * DESIGN: a line is written by hand in a fixed member order (jw_string for the paths) and read back with
 * json_scan (the object, then the files array element by element). The crc32 (zlib) covers the bytes
 * before `,"crc32"`; a line whose check fails is whole garbage to this module, whatever it looks like.
 */
#include "sinks/lake_log.h"

#include "base/json_scan.h"
#include "base/json_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define CRC_TAIL ",\"crc32\":\""
#define CRC_TAIL_LEN (sizeof CRC_TAIL - 1 + 8 + 2) /* ,"crc32":"XXXXXXXX"} */

void lake_entry_add(lake_entry *en, const char *path, uint64_t rows, uint64_t bytes, const unsigned char sha256[32])
{
    en->files = ms_realloc(en->files, (en->nfiles + 1) * sizeof *en->files);
    lake_file *f = &en->files[en->nfiles++];
    f->path = ms_strndup(path, strlen(path));
    f->rows = rows;
    f->bytes = bytes;
    memcpy(f->sha256, sha256, 32);
    en->rows += rows;
}

void lake_entry_add_rewritten(lake_entry *en, const char *path, uint64_t rows, uint64_t bytes,
                              const unsigned char sha256[32])
{
    en->rewritten = ms_realloc(en->rewritten, (en->nrewritten + 1) * sizeof *en->rewritten);
    lake_file *f = &en->rewritten[en->nrewritten++];
    f->path = ms_strndup(path, strlen(path));
    f->rows = rows;
    f->bytes = bytes;
    memcpy(f->sha256, sha256, 32);
}

void lake_entry_free(lake_entry *en)
{
    for (size_t i = 0; i < en->nfiles; i++)
        free(en->files[i].path);
    free(en->files);
    for (size_t i = 0; i < en->nrewritten; i++)
        free(en->rewritten[i].path);
    free(en->rewritten);
    *en = (lake_entry){0};
}

void lake_part_name(uint64_t from, uint32_t n, buf *out)
{
    out->len = 0;
    buf_printf(out, "part-%020llu-%05u.parquet", (unsigned long long)from, n);
}

void lake_pending_name(const char *path, buf *out)
{
    const char *slash = strrchr(path, '/');
    out->len = 0;
    buf_puts(out, slash ? slash + 1 : path);
    buf_puts(out, LAKE_PENDING_SUFFIX);
}

static uint32_t line_crc(const char *p, size_t n)
{
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), (const Bytef *)p, (uInt)n);
}

static void encode_files(const lake_file *files, size_t n, buf *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        const lake_file *f = &files[i];
        buf_puts(out, i ? ",{\"path\":" : "{\"path\":");
        jw_cstr(out, f->path);
        buf_printf(out, ",\"rows\":%llu,\"bytes\":%llu,\"sha256\":\"", (unsigned long long)f->rows,
                   (unsigned long long)f->bytes);
        for (int k = 0; k < 32; k++) {
            buf_putc(out, hex[f->sha256[k] >> 4]);
            buf_putc(out, hex[f->sha256[k] & 15]);
        }
        buf_puts(out, "\"}");
    }
    buf_putc(out, ']');
}

void lake_log_encode(const lake_entry *en, buf *out)
{
    size_t start = out->len;
    buf_printf(out, "{\"from\":%llu,\"to\":%llu,\"commit_time_us\":%lld,\"rows\":%llu,\"files\":[",
               (unsigned long long)en->from, (unsigned long long)en->to, (long long)en->commit_time_us,
               (unsigned long long)en->rows);
    encode_files(en->files, en->nfiles, out);
    if (en->nrewritten) {
        buf_puts(out, ",\"rewritten\":[");
        encode_files(en->rewritten, en->nrewritten, out);
    }
    uint32_t crc = line_crc(out->data + start, out->len - start);
    buf_printf(out, CRC_TAIL "%08x\"}\n", crc);
}

/* ---- parsing ---- */

static bool member_is(const json_member *m, const char *name)
{
    return !m->key_escaped && m->key_len == strlen(name) && memcmp(m->key, name, m->key_len) == 0;
}

static bool parse_u64(const json_member *m, uint64_t *v)
{
    if (m->type != JSON_NUMBER || m->val_len == 0 || m->val_len > 20) return false;
    uint64_t x = 0;
    for (size_t i = 0; i < m->val_len; i++) {
        unsigned d = (unsigned)(m->val[i] - '0');
        if (d > 9 || x > (UINT64_MAX - d) / 10) return false;
        x = x * 10 + d;
    }
    *v = x;
    return true;
}

static bool parse_i64(const json_member *m, int64_t *v)
{
    json_member t = *m;
    bool neg = t.val_len > 0 && t.val[0] == '-';
    if (neg) t.val++, t.val_len--;
    uint64_t u;
    if (!parse_u64(&t, &u) || u > (uint64_t)INT64_MAX) return false;
    *v = neg ? -(int64_t)u : (int64_t)u;
    return true;
}

static int hexval(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; }

static bool parse_sha(const json_member *m, unsigned char out[32])
{
    if (m->type != JSON_STRING || m->val_len != 66) return false;
    for (int k = 0; k < 32; k++) {
        int hi = hexval(m->val[1 + 2 * k]), lo = hexval(m->val[2 + 2 * k]);
        if (hi < 0 || lo < 0) return false;
        out[k] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

/* A file's path: a relative path of the lake's own shape (no empty, "." or ".." component, no NUL). */
static bool path_ok(const char *p, size_t n)
{
    if (n == 0 || p[0] == '/' || memchr(p, 0, n)) return false;
    const char *c = p, *end = p + n;
    while (c <= end) {
        const char *s = memchr(c, '/', (size_t)(end - c));
        if (!s) s = end;
        size_t l = (size_t)(s - c);
        if (l == 0 || (l == 1 && c[0] == '.') || (l == 2 && c[0] == '.' && c[1] == '.')) return false;
        c = s + 1;
    }
    return strncmp(p, "records/", 8) == 0 || strncmp(p, "deletions/", 10) == 0;
}

static ms_code parse_file(const char *p, size_t n, lake_entry *en, ms_err *e)
{
    json_member m[8];
    json_error je;
    int nm = json_scan_object(p, n, m, 8, &je);
    if (nm < 0) return ms_fail(e, MS_ECORRUPT, "a file entry is not a JSON object (%s)", je.msg);
    bool has_path = false, has_rows = false, has_bytes = false, has_sha = false;
    uint64_t rows = 0, bytes = 0;
    unsigned char sha[32];
    buf path = {0};
    for (int i = 0; i < nm; i++) {
        if (member_is(&m[i], "path") && m[i].type == JSON_STRING) {
            buf_reserve(&path, m[i].val_len);
            path.len = json_string_decode(m[i].val + 1, m[i].val_len - 2, path.data);
            path.data[path.len] = 0;
            has_path = path_ok(path.data, path.len);
        } else if (member_is(&m[i], "rows")) {
            has_rows = parse_u64(&m[i], &rows);
        } else if (member_is(&m[i], "bytes")) {
            has_bytes = parse_u64(&m[i], &bytes);
        } else if (member_is(&m[i], "sha256")) {
            has_sha = parse_sha(&m[i], sha);
        }
    }
    ms_code rc = MS_OK;
    if (!has_path || !has_rows || !has_bytes || !has_sha)
        rc = ms_fail(e, MS_ECORRUPT, "a file entry lacks a valid %s",
                     !has_path    ? "path"
                     : !has_rows  ? "rows"
                     : !has_bytes ? "bytes"
                                  : "sha256");
    else
        lake_entry_add(en, path.data, rows, bytes, sha);
    buf_free(&path);
    return rc;
}

static ms_code parse_files(const char *p, size_t n, lake_entry *en, ms_err *e)
{
    const char *end = p + n, *c = json_skip_ws(p, end);
    if (c == end || *c != '[') return ms_fail(e, MS_ECORRUPT, "files is not an array");
    c = json_skip_ws(c + 1, end);
    if (c < end && *c == ']') return MS_OK;
    while (c < end) {
        json_type t;
        json_error je;
        const char *after = json_scan_value(p, c, end, &t, &je);
        if (!after || t != JSON_OBJECT) return ms_fail(e, MS_ECORRUPT, "files holds something else than objects");
        ms_code rc = parse_file(c, (size_t)(after - c), en, e);
        if (rc) return rc;
        c = json_skip_ws(after, end);
        if (c < end && *c == ']') return MS_OK;
        if (c == end || *c != ',') break;
        c = json_skip_ws(c + 1, end);
    }
    return ms_fail(e, MS_ECORRUPT, "files is not a well-formed array");
}

ms_code lake_log_parse_line(const char *line, size_t len, lake_entry *en, ms_err *e)
{
    *en = (lake_entry){0};
    if (len < CRC_TAIL_LEN || memcmp(line + len - CRC_TAIL_LEN, CRC_TAIL, sizeof CRC_TAIL - 1) != 0 ||
        line[len - 1] != '}' || line[len - 2] != '"')
        return ms_fail(e, MS_ECORRUPT, "no crc32 at the end of the line");
    uint32_t want = 0;
    const char *hx = line + len - 10;
    for (int i = 0; i < 8; i++) {
        int v = hexval(hx[i]);
        if (v < 0) return ms_fail(e, MS_ECORRUPT, "a bad crc32");
        want = want << 4 | (uint32_t)v;
    }
    if (line_crc(line, len - CRC_TAIL_LEN) != want) return ms_fail(e, MS_ECORRUPT, "the crc32 does not match");
    json_member m[8];
    json_error je;
    int nm = json_scan_object(line, len, m, 8, &je);
    if (nm < 0) return ms_fail(e, MS_ECORRUPT, "not a JSON object (%s at %zu)", je.msg, je.offset);
    bool has_from = false, has_to = false, has_time = false, has_rows = false, has_files = false;
    uint64_t rows = 0;
    ms_code rc = MS_OK;
    for (int i = 0; i < nm && rc == MS_OK; i++) {
        if (member_is(&m[i], "from")) {
            has_from = parse_u64(&m[i], &en->from);
        } else if (member_is(&m[i], "to")) {
            has_to = parse_u64(&m[i], &en->to);
        } else if (member_is(&m[i], "commit_time_us")) {
            has_time = parse_i64(&m[i], &en->commit_time_us);
        } else if (member_is(&m[i], "rows")) {
            has_rows = parse_u64(&m[i], &rows);
        } else if (member_is(&m[i], "files") && m[i].type == JSON_ARRAY && !has_files) {
            rc = parse_files(m[i].val, m[i].val_len, en, e);
            has_files = rc == MS_OK;
        } else if (member_is(&m[i], "rewritten") && m[i].type == JSON_ARRAY && !en->nrewritten) {
            lake_entry rw = {0};
            rc = parse_files(m[i].val, m[i].val_len, &rw, e);
            en->rewritten = rw.files;
            en->nrewritten = rw.nfiles;
        }
    }
    if (rc == MS_OK && (!has_from || !has_to || !has_time || !has_rows || !has_files))
        rc = ms_fail(e, MS_ECORRUPT, "the line lacks a valid %s",
                     !has_from   ? "from"
                     : !has_to   ? "to"
                     : !has_time ? "commit_time_us"
                     : !has_rows ? "rows"
                                 : "files");
    if (rc == MS_OK && (en->from == 0 || en->from > en->to))
        rc = ms_fail(e, MS_ECORRUPT, "positions %llu..%llu are not a range", (unsigned long long)en->from,
                     (unsigned long long)en->to);
    if (rc == MS_OK && rows != en->rows) rc = ms_fail(e, MS_ECORRUPT, "rows is not the sum of its files' rows");
    if (rc) lake_entry_free(en);
    return rc;
}

ms_code lake_log_read(const char *text, size_t len, lake_log_state *st, ms_err *e)
{
    *st = (lake_log_state){0};
    size_t at = 0;
    uint64_t line_no = 0;
    while (at < len) {
        const char *nl = memchr(text + at, '\n', len - at);
        line_no++;
        if (!nl) { /* unterminated: a crash mid-append */
            st->torn = true;
            return MS_OK;
        }
        size_t n = (size_t)(nl - (text + at));
        lake_entry en;
        ms_err why;
        if (lake_log_parse_line(text + at, n, &en, &why) != MS_OK) {
            if (memchr(nl + 1, '\n', len - (size_t)(nl + 1 - text))) {
                lake_log_state_free(st);
                return ms_fail(e, MS_ECORRUPT, "line %llu: %s (and whole lines follow it)", (unsigned long long)line_no,
                               why.msg);
            }
            st->torn = true; /* the last line: torn */
            return MS_OK;
        }
        if (st->entries && en.from <= st->last.to) {
            lake_entry_free(&en);
            lake_log_state_free(st);
            return ms_fail(e, MS_ECORRUPT, "line %llu: positions go back (%llu after %llu)",
                           (unsigned long long)line_no, (unsigned long long)en.from, (unsigned long long)st->last.to);
        }
        lake_entry_free(&st->last);
        st->last = en;
        st->entries++;
        at += n + 1;
        st->valid_len = at;
    }
    return MS_OK;
}

void lake_log_state_free(lake_log_state *st)
{
    lake_entry_free(&st->last);
    *st = (lake_log_state){0};
}

/* ---- recovery ---- */

ms_code lake_recovery_plan(const lake_entry *last, const char *const *tmp_names, size_t ntmp,
                           bool (*exists)(void *ctx, const char *path), void *ctx, lake_plan *plan, ms_err *e)
{
    *plan = (lake_plan){0};
    size_t nfiles = last ? last->nfiles : 0;
    plan->rename_from = ms_calloc(nfiles + 1, sizeof *plan->rename_from);
    plan->rename_to = ms_calloc(nfiles + 1, sizeof *plan->rename_to);
    plan->remove = ms_calloc(ntmp + 1, sizeof *plan->remove);
    bool *keep = ms_calloc(ntmp + 1, sizeof *keep);
    size_t *offs = ms_calloc(nfiles + 1, sizeof *offs);
    buf pending = {0};
    ms_code rc = MS_OK;
    for (size_t i = 0; i < nfiles && rc == MS_OK; i++) {
        const char *path = last->files[i].path;
        lake_pending_name(path, &pending);
        size_t at = SIZE_MAX;
        for (size_t k = 0; k < ntmp && at == SIZE_MAX; k++)
            if (strcmp(tmp_names[k], pending.data) == 0) at = k;
        if (exists(ctx, path)) continue; /* visible already (a pending copy as well would be removed below) */
        if (at == SIZE_MAX) {
            rc = ms_fail(e, MS_ECORRUPT,
                         "lake: %s, named in the commits log's last entry, is neither in place nor pending", path);
            break;
        }
        keep[at] = true;
        offs[plan->nrename] = plan->names.len;
        buf_put(&plan->names, pending.data, pending.len + 1);
        plan->rename_to[plan->nrename++] = path;
    }
    for (size_t k = 0; k < plan->nrename; k++)
        plan->rename_from[k] = plan->names.data + offs[k];
    for (size_t k = 0; k < ntmp && rc == MS_OK; k++)
        if (!keep[k]) plan->remove[plan->nremove++] = tmp_names[k];
    free(keep);
    free(offs);
    buf_free(&pending);
    if (rc) lake_plan_free(plan);
    return rc;
}

void lake_plan_free(lake_plan *plan)
{
    free(plan->rename_from);
    free(plan->rename_to);
    free(plan->remove);
    buf_free(&plan->names);
    *plan = (lake_plan){0};
}
