/*
 * checkpoint.c - an import's position as source positions or as a checkpoint file (see checkpoint.h).
 */
#include "import/checkpoint.h"

#include "base/fd_io.h"
#include "base/json_scan.h"
#include "base/json_write.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++)
        out[2 * i] = digits[in[i] >> 4], out[2 * i + 1] = digits[in[i] & 15];
    out[2 * n] = 0;
}

void import_source_name(const unsigned char identity[32], char out[IMPORT_SOURCE_MAX])
{
    char h[65];
    hex(identity, 32, h);
    snprintf(out, IMPORT_SOURCE_MAX, "import:%s", h);
}

void import_position_offsets(const import_position *p, const char *source, source_offset *out)
{
    const uint64_t v[IMPORT_POSITION_PARTS] = {p->offset,        p->line, p->rows,        p->rejected,
                                               p->rejects_bytes, p->done, p->replay_until};
    for (int i = 0; i < IMPORT_POSITION_PARTS; i++)
        out[i] = (source_offset){source, i, (int64_t)(v[i] > IMPORT_REPLAY_ALL ? IMPORT_REPLAY_ALL : v[i])};
}

bool import_position_from_parts(const int64_t parts[IMPORT_POSITION_PARTS], const bool found[IMPORT_POSITION_PARTS],
                                import_position *p)
{
    *p = IMPORT_POSITION_START;
    for (int i = 0; i < IMPORT_POSITION_PARTS; i++)
        if ((!found[i] && i != 6) || (found[i] && parts[i] < 0)) return false;
    if (parts[1] < 1 || parts[5] > 1) return false;
    *p = (import_position){(uint64_t)parts[0],
                           (uint64_t)parts[1],
                           (uint64_t)parts[2],
                           (uint64_t)parts[3],
                           (uint64_t)parts[4],
                           parts[5] == 1,
                           found[6] ? (uint64_t)parts[6] : 0};
    return true;
}

/* ---- the checkpoint file ---- */

static bool member_u64(const json_member *m, uint64_t *out)
{
    if (m->type != JSON_NUMBER || m->val_len == 0 || m->val_len > 19) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < m->val_len; i++) {
        if (m->val[i] < '0' || m->val[i] > '9') return false;
        v = v * 10 + (uint64_t)(m->val[i] - '0');
    }
    *out = v;
    return true;
}

static bool member_is(const json_member *m, const char *key)
{
    return !m->key_escaped && m->key_len == strlen(key) && memcmp(m->key, key, m->key_len) == 0;
}

/* The text of a JSON string member, decoded into out (cap bytes); false if it is not one or too long. */
static bool member_string(const json_member *m, char *out, size_t cap)
{
    if (m->type != JSON_STRING || m->val_len - 2 >= cap) return false;
    size_t n = json_string_decode(m->val + 1, m->val_len - 2, out);
    out[n] = 0;
    return strlen(out) == n;
}

ms_code checkpoint_file_load(const char *path, const unsigned char identity[32], const char *url, import_position *p,
                             bool *found, char *why, size_t why_cap, ms_err *e)
{
    *found = false;
    *p = IMPORT_POSITION_START;
    why[0] = 0;
    buf text = {0};
    if (access(path, F_OK) != 0) return MS_OK;
    ms_code rc = buf_read_file(&text, path, e);
    if (rc != MS_OK) {
        buf_free(&text);
        return rc;
    }
    json_member m[16];
    json_error je;
    int n = json_scan_object(text.data, text.len, m, 16, &je);
    char id_hex[65], seen_id[80] = "", seen_url[2048] = "";
    hex(identity, 32, id_hex);
    uint64_t v[IMPORT_POSITION_PARTS] = {0};
    bool have[IMPORT_POSITION_PARTS] = {false};
    static const char *const keys[IMPORT_POSITION_PARTS] = {"offset",        "line", "rows",        "rejected",
                                                            "rejects_bytes", "done", "replay_until"};
    for (int i = 0; i < n; i++) {
        if (member_is(&m[i], "identity")) member_string(&m[i], seen_id, sizeof seen_id);
        if (member_is(&m[i], "url")) member_string(&m[i], seen_url, sizeof seen_url);
        for (int k = 0; k < IMPORT_POSITION_PARTS; k++)
            if (member_is(&m[i], keys[k])) have[k] = member_u64(&m[i], &v[k]);
    }
    buf_free(&text);
    bool complete = n > 0;
    for (int k = 0; k < IMPORT_POSITION_PARTS; k++)
        complete = complete && (have[k] || k == 6);
    if (!complete || v[1] < 1 || v[5] > 1) {
        snprintf(why, why_cap, "%s does not parse as a checkpoint", path);
    } else if (strcmp(seen_id, id_hex) != 0) {
        snprintf(why, why_cap, "%s is the checkpoint of another file (or of this one before it changed)", path);
    } else if (strcmp(seen_url, url) != 0) {
        snprintf(why, why_cap, "%s is the checkpoint of an import to another server (%.200s)", path, seen_url);
    } else {
        *p = (import_position){v[0], v[1], v[2], v[3], v[4], v[5] == 1, v[6]};
        *found = true;
    }
    return MS_OK;
}

ms_code checkpoint_file_save(const char *path, const unsigned char identity[32], const char *url,
                             const import_position *p, ms_err *e)
{
    char id_hex[65];
    hex(identity, 32, id_hex);
    buf b = {0};
    buf_printf(&b, "{\"identity\":\"%s\",\"url\":", id_hex);
    jw_cstr(&b, url);
    buf_printf(&b,
               ",\"offset\":%llu,\"line\":%llu,\"rows\":%llu,\"rejected\":%llu,\"rejects_bytes\":%llu,\"done\":%d,"
               "\"replay_until\":%llu}\n",
               (unsigned long long)p->offset, (unsigned long long)p->line, (unsigned long long)p->rows,
               (unsigned long long)p->rejected, (unsigned long long)p->rejects_bytes, p->done ? 1 : 0,
               (unsigned long long)(p->replay_until > IMPORT_REPLAY_ALL ? IMPORT_REPLAY_ALL : p->replay_until));
    buf tmp = {0};
    buf_printf(&tmp, "%s.tmp", path);
    ms_code rc = MS_OK;
    int fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = ms_fail(e, MS_EIO, "checkpoint %s: %s", tmp.data, strerror(errno));
    } else {
        int err = ms_write_full(fd, b.data, b.len, -1, NULL);
        if (err) rc = ms_fail(e, err == ENOSPC ? MS_EFULL : MS_EIO, "checkpoint %s: %s", tmp.data, strerror(err));
        if (rc == MS_OK && fdatasync(fd) != 0)
            rc = ms_fail(e, MS_EIO, "checkpoint %s: fdatasync: %s", tmp.data, strerror(errno));
        close(fd);
        if (rc == MS_OK && rename(tmp.data, path) != 0)
            rc = ms_fail(e, MS_EIO, "checkpoint %s: rename: %s", path, strerror(errno));
        if (rc != MS_OK) unlink(tmp.data);
    }
    buf_free(&tmp);
    buf_free(&b);
    return rc;
}
