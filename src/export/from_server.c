/*
 * from_server.c - an export done by a running server, fetched into OUT (see from_server.h).
 *
 * DESIGN: POST, then poll the status on one keep-alive connection; the archive is streamed by the HTTP
 * client to an unlinked file in OUT/.medstream-export-tmp, then read back by the streaming tar reader
 * (tar_extract_fd, which frees the archive's bytes as it goes) into the same directory, checked against the
 * manifest and published. Memory stays a few buffers whatever the export's size.
 */
#include "export/from_server.h"

#include "export/export.h"
#include "export/out_file.h"
#include "export/tar.h"
#include "base/http_client.h"
#include "base/http_client_url.h"
#include "base/json_scan.h"
#include "base/json_write.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The value of a top-level member as a decoded string (strings) or its text (other scalars), into out. */
static bool member(const char *json, size_t len, const char *key, buf *out)
{
    json_member m[48];
    json_error je;
    int n = json_scan_object(json, len, m, 48, &je);
    for (int i = 0; i < n; i++) {
        if (m[i].key_len != strlen(key) || memcmp(m[i].key, key, m[i].key_len) != 0) continue;
        out->len = 0;
        if (m[i].type == JSON_STRING) {
            buf_reserve(out, m[i].val_len);
            out->len = json_string_decode(m[i].val + 1, m[i].val_len - 2, out->data);
            out->data[out->len] = 0;
        } else {
            buf_put(out, m[i].val, m[i].val_len);
        }
        return true;
    }
    return false;
}

static uint64_t member_u64(const char *json, size_t len, const char *key)
{
    buf v = {0};
    uint64_t x = member(json, len, key, &v) ? strtoull(v.data, NULL, 10) : 0;
    buf_free(&v);
    return x;
}

static ms_code answer_error(const http_client_response *resp, const char *what, ms_err *e)
{
    buf msg = {0};
    if (!member(resp->body, resp->body_len, "error", &msg)) buf_puts(&msg, "no error message");
    ms_code rc = ms_fail(e,
                         resp->status == 409  ? MS_ECONFLICT
                         : resp->status < 500 ? MS_EINVAL
                                              : MS_EIO,
                         "%s: HTTP %d: %.160s", what, resp->status, msg.data);
    buf_free(&msg);
    return rc;
}

/* Every file of the manifest is there with its bytes and SHA-256. */
static ms_code check_manifest(const char *dir, export_client_result *res, ms_err *e)
{
    buf path = {0}, text = {0};
    buf_printf(&path, "%s/manifest.json", dir);
    ms_code rc = buf_read_file(&text, path.data, e);
    json_member m[32];
    json_error je;
    int n = rc == MS_OK ? json_scan_object(text.data, text.len, m, 32, &je) : 0;
    if (rc == MS_OK && n < 0) rc = ms_fail(e, MS_ECORRUPT, "the export's manifest.json is not JSON");
    for (int i = 0; rc == MS_OK && i < n; i++) {
        if (m[i].key_len != 5 || memcmp(m[i].key, "files", 5) != 0 || m[i].type != JSON_ARRAY) continue;
        const char *p = json_skip_ws(m[i].val + 1, m[i].val + m[i].val_len);
        const char *end = m[i].val + m[i].val_len - 1;
        while (rc == MS_OK && p < end) {
            json_type t;
            const char *next = json_scan_value(m[i].val, p, end, &t, &je);
            if (!next || t != JSON_OBJECT) {
                rc = ms_fail(e, MS_ECORRUPT, "the export's manifest.json has a bad file entry");
                break;
            }
            buf fpath = {0}, sha = {0}, full = {0};
            member(p, (size_t)(next - p), "path", &fpath);
            member(p, (size_t)(next - p), "sha256", &sha);
            uint64_t bytes = member_u64(p, (size_t)(next - p), "bytes");
            buf_printf(&full, "%s/%s", dir, fpath.data ? fpath.data : "");
            unsigned char d[32];
            char hex[65];
            uint64_t size;
            rc = out_sha256_file(full.data, d, &size, e);
            if (rc == MS_OK) {
                out_hex(d, 32, hex);
                if (size != bytes || !sha.data || strcmp(hex, sha.data) != 0)
                    rc = ms_fail(e, MS_ECORRUPT, "%.200s: its bytes or SHA-256 differ from the manifest's",
                                 fpath.data ? fpath.data : "?");
            }
            res->files++;
            res->bytes += size;
            buf_free(&fpath);
            buf_free(&sha);
            buf_free(&full);
            p = json_skip_ws(next, end);
            if (p < end && *p == ',') p = json_skip_ws(p + 1, end);
        }
    }
    buf_free(&path);
    buf_free(&text);
    return rc;
}

/* The file the archive is downloaded into: created in tmp (OUT's file system, where its members go) and
 * unlinked at once, so that it is gone when its descriptor closes, however the run ends. */
static ms_code open_download(const char *tmp, int *fd, ms_err *e)
{
    buf p = {0};
    buf_printf(&p, "%s/.download.tar", tmp);
    *fd = open(p.data, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ms_code rc = *fd < 0 ? out_errno(e, errno, "creating", p.data) : MS_OK;
    if (rc == MS_OK && unlink(p.data) != 0) {
        rc = out_errno(e, errno, "removing", p.data);
        close(*fd);
        *fd = -1;
    }
    buf_free(&p);
    return rc;
}

ms_code export_from_server(const export_client_request *r, export_client_result *res, ms_err *e)
{
    *res = (export_client_result){0};
    ms_code rc = export_check_out_dir(r->out_dir, r->overwrite, e);
    if (rc) return rc;
    http_client_url u;
    char why[200];
    if (http_client_url_parse(r->url, &u, why, sizeof why) != HTTP_CLIENT_OK)
        return ms_fail(e, MS_EINVAL, "--url: %s", why);
    /* JSON answers (a status with its manifest) within the default bound; the archive streams to a file */
    http_client_conn *conn = http_client_conn_new(u.host, u.port, 120000, 0);
    if (!conn) return ms_fail(e, MS_EINVAL, "--url: bad host or port");
    buf auth = {0}, body = {0}, path = {0}, v = {0};
    buf_printf(&auth, "Bearer %s", r->token);
    http_client_header hdrs[] = {{"Authorization", auth.data}, {"Content-Type", "application/json"}, {NULL, NULL}};
    http_client_response resp;
    http_client_response_init(&resp);
    const char *keys[] = {"scope", "format", "compression", "as_of", "type", "since", "until"};
    const char *vals[] = {r->scope, r->format, r->compression, r->as_of, r->type, r->since, r->until};
    buf_putc(&body, '{');
    bool first = true;
    for (int i = 0; i < 7; i++)
        if (vals[i]) {
            jw_key(&body, &first, keys[i]);
            jw_cstr(&body, vals[i]);
        }
    buf_putc(&body, '}');
    buf_printf(&path, "%s/v1/exports", u.base_path);
    bool created_out = access(r->out_dir, F_OK) != 0;
    char *tmp = NULL;
    http_client_err he = http_client_request(conn, "POST", path.data, hdrs, body.data, body.len, &resp);
    if (he != HTTP_CLIENT_OK) {
        rc = ms_fail(e, MS_EIO, "%s", http_client_conn_error(conn));
        goto out;
    }
    if (resp.status != 202 || !member(resp.body, resp.body_len, "export_id", &v) || v.len >= sizeof res->export_id) {
        rc = answer_error(&resp, "POST /v1/exports", e);
        goto out;
    }
    snprintf(res->export_id, sizeof res->export_id, "%s", v.data);
    path.len = 0;
    buf_printf(&path, "%s/v1/exports/%s", u.base_path, res->export_id);
    buf download = {0};
    for (;;) {
        if (r->stop && atomic_load(r->stop)) {
            rc = ms_fail(e, MS_ESTOPPED, "interrupted: nothing was written to %s (export %s goes on in the server)",
                         r->out_dir, res->export_id);
            break;
        }
        he = http_client_request(conn, "GET", path.data, hdrs, NULL, 0, &resp);
        if (he != HTTP_CLIENT_OK) {
            rc = ms_fail(e, MS_EIO, "%s", http_client_conn_error(conn));
            break;
        }
        if (resp.status != 200) {
            rc = answer_error(&resp, "GET /v1/exports/{id}", e);
            break;
        }
        member(resp.body, resp.body_len, "state", &v);
        if (r->progress)
            fprintf(r->progress, "\rexport %s: %s, %llu rows   ", res->export_id, v.data,
                    (unsigned long long)member_u64(resp.body, resp.body_len, "rows"));
        if (strcmp(v.data, "failed") == 0) {
            buf err = {0};
            member(resp.body, resp.body_len, "error", &err);
            rc = ms_fail(e, MS_EIO, "the server's export %s failed: %.160s", res->export_id, err.data ? err.data : "");
            buf_free(&err);
            break;
        }
        if (strcmp(v.data, "done") == 0) {
            member(resp.body, resp.body_len, "download", &download);
            res->record_rows = member_u64(resp.body, resp.body_len, "record_rows");
            res->patient_rows = member_u64(resp.body, resp.body_len, "patient_rows");
            if (member(resp.body, resp.body_len, "as_of", &v)) snprintf(res->as_of, sizeof res->as_of, "%s", v.data);
            break;
        }
        struct timespec ts = {(time_t)(r->poll_ms / 1000), (long)(r->poll_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (r->progress) fputc('\n', r->progress);
    int fd = -1;
    if (rc == MS_OK) {
        buf t = {0};
        buf_printf(&t, "%s/%s", r->out_dir, EXPORT_TMP_DIR);
        tmp = buf_take(&t);
        if ((rc = out_mkdirs(r->out_dir, e)) == MS_OK && (rc = out_remove_tree(tmp, e)) == MS_OK &&
            (rc = out_mkdirs(tmp, e)) == MS_OK)
            rc = open_download(tmp, &fd, e);
    }
    if (rc == MS_OK) {
        path.len = 0;
        buf_printf(&path, "%s%s", u.base_path, download.data ? download.data : "");
        /* the link needs no token; the archive goes to the file, never into memory */
        he = http_client_request_to_fd(conn, "GET", path.data, NULL, NULL, 0, fd, UINT64_MAX, NULL, &resp);
        if (he == HTTP_CLIENT_E_WRITE)
            rc = out_errno(e, http_client_conn_errno(conn) ? http_client_conn_errno(conn) : EIO,
                           "downloading the archive into", tmp);
        else if (he != HTTP_CLIENT_OK)
            rc = ms_fail(e, MS_EIO, "%s", http_client_conn_error(conn));
        else if (resp.status != 200)
            rc = answer_error(&resp, "GET /v1/exports/{id}/download", e);
        else if (lseek(fd, 0, SEEK_SET) != 0)
            rc = out_errno(e, errno, "reading", "the downloaded archive");
    }
    buf_free(&download);
    if (rc == MS_OK && (rc = tar_extract_fd(fd, true, tmp, e)) == MS_OK && (rc = check_manifest(tmp, res, e)) == MS_OK)
        rc = export_publish(r->out_dir, tmp, r->overwrite, e);
    if (fd >= 0) close(fd);
out:
    if (tmp) {
        ms_err ignored;
        out_remove_tree(tmp, &ignored);
        free(tmp);
    }
    if (rc && created_out) rmdir(r->out_dir);
    http_client_response_free(&resp);
    http_client_conn_free(conn);
    buf_free(&auth);
    buf_free(&body);
    buf_free(&path);
    buf_free(&v);
    return rc;
}
