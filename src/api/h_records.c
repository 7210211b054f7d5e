/*
 * h_records.c - the record routes: POST /v1/records (ingest), GET /v1/records/{record_id} and
 * DELETE /v1/records/{record_id}.
 *
 * DESIGN: ingest hands the request's body (4 KiB-aligned and zero-padded by http_server.c) to the one
 * ingest path (ingest/ingest.c), which stores the body, submits the batch to the writer and returns
 * once it is durable; the answer lists every line's outcome. A deletion is a writer job of its own: the
 * tombstone version and its audit entry commit together. A record read is one read transaction
 * (read/query.c) and an audit entry naming the patient, if the record is known.
 *
 * A body may name the file its lines come from (import_origin, import_line: medstream import --url): its
 * records without a record_id are then named by file and line, as the offline importer names them.
 *
 * What it must never do: answer before the batch is durable, put a rejected line's values into its
 * error (only field names and line numbers), or read a record without auditing the read.
 */
#include "api/handlers.h"
#include "api/params.h"

#include "base/json_write.h"
#include "ingest/ingest.h"
#include "pipeline/prepare.h"

#include <stdlib.h>
#include <string.h>

/* import_origin (64 hex digits), import_line (1..2^62) and import_replay (1 or 0): the file a body's lines
 * come from (medstream import --url), so that records without an id get the ids the offline importer gives
 * them, and whether they may have been stored before (writer.h, ingest_job.replay). false: answered 400
 * (the message names the parameter, never echoes it). */
static bool get_import_origin(http_request *req, http_response *res, unsigned char origin[32], uint64_t *line,
                              bool *given, bool *replay)
{
    const char *hex = http_arg_get(req, "import_origin"), *first = http_arg_get(req, "import_line");
    const char *again = http_arg_get(req, "import_replay");
    *given = hex != NULL;
    *line = 1;
    *replay = false;
    if (!hex) {
        if (first || again) http_error(res, 400, "import_line and import_replay need import_origin");
        return !first && !again;
    }
    if (again) {
        if (strcmp(again, "1") != 0 && strcmp(again, "0") != 0) {
            http_error(res, 400, "import_replay must be 1 or 0");
            return false;
        }
        *replay = again[0] == '1';
    }
    static const char digits[] = "0123456789abcdef";
    bool ok = strlen(hex) == 64;
    for (int i = 0; ok && i < 32; i++) {
        const char *hi = strchr(digits, hex[2 * i]), *lo = strchr(digits, hex[2 * i + 1]);
        ok = hi && lo && *hi && *lo;
        if (ok) origin[i] = (unsigned char)(((hi - digits) << 4) | (lo - digits));
    }
    if (!ok) {
        http_error(res, 400, "import_origin must be 64 lowercase hex digits");
        return false;
    }
    if (first) {
        char *end;
        unsigned long long v = strtoull(first, &end, 10);
        if (!*first || *end || first[0] == '-' || v < 1 || v > ((unsigned long long)1 << 62)) {
            http_error(res, 400, "import_line must be a whole number from 1 to 2^62");
            return false;
        }
        *line = v;
    }
    return true;
}

void h_ingest(api *a, http_request *req, http_response *res)
{
    ingest_ctx in = {a->store, a->writer, a->schema, a->max_record};
    record_batch batch = {0};
    scan_config cfg = ingest_scan_config(&in);
    unsigned char origin[32];
    bool from_file, replay;
    if (!get_import_origin(req, res, origin, &cfg.origin_line, &from_file, &replay)) return;
    if (from_file) cfg.origin = origin;
    ms_err e;
    if (record_prepare_body(&cfg, req->body ? req->body : "", req->body_len, &batch, &e) != MS_OK) {
        http_error(res, 400, "%s", e.msg);
        record_batch_free(&batch);
        return;
    }
    char source[192];
    snprintf(source, sizeof source, "user %s via http %s", req->user, req->client);
    ingest_job job = {.body = req->body,
                      .body_len = req->body_len,
                      .body_write_len = ingest_padded_len(req->body_len), /* http_server zero-pads to 4 KiB */
                      .body_pos = UINT64_MAX,
                      .batch = &batch,
                      .may_update = access_allows(req->role, "records:update"),
                      .replay = replay,
                      .source = source,
                      .user = req->user,
                      .role = req->role,
                      .client = req->client,
                      .resource = req->path,
                      .received_at = req->received_at,
                      .results = ms_calloc(batch.n ? batch.n : 1, sizeof(item_result))};
    if (ingest_store(&in, &job, &e) != MS_OK) {
        http_error(res, status_for(e.code), "nothing of this batch was stored: %s", e.msg);
        free(job.results);
        record_batch_free(&batch);
        return;
    }
    buf *o = &res->body;
    o->len = 0;
    buf_reserve(o, (size_t)batch.n * 140 + 32);
    buf_printf(o, "{\"errors\":%s,\"items\":[", batch.rejected ? "true" : "false");
    for (uint32_t i = 0; i < batch.n; i++) {
        const parsed_record *r = &batch.records[i];
        const item_result *it = &job.results[i];
        if (i) buf_putc(o, ',');
        buf_printf(o, "{\"line\":%u,\"status\":\"%s\"", r->line, item_status_name(it->status));
        if (it->status == ITEM_REJECTED) {
            buf_puts(o, ",\"error\":");
            if (r->error)
                jw_cstr(o, r->error);
            else
                buf_printf(o, "\"line %u: %s\"", r->line, it->error ? it->error : "rejected");
        } else {
            char pid[PATIENT_ID_TEXT];
            patient_id_format(&it->pid, pid);
            buf_puts(o, ",\"record_id\":");
            jw_string(o, r->record_id, r->record_id_len);
            buf_printf(o, ",\"patient_id\":\"%s\",\"version\":%u", pid, it->version);
        }
        buf_putc(o, '}');
    }
    buf_puts(o, "]}");
    res->status = 200;
    free(job.results);
    record_batch_free(&batch);
}

void h_record_get(api *a, http_request *req, http_response *res)
{
    double t0 = ms_mono_s();
    store_read *r;
    int64_t as_of;
    if (!begin_read_at(a, req, res, false, &r, &as_of)) return;
    query_ctx q = {a->store, a->schema};
    buf out = {0};
    ms_err e;
    patient_id touched;
    memset(&touched, 0, sizeof touched);
    ms_code rc = query_record(&q, r, req->params[0], strlen(req->params[0]), as_of, &out, &touched, &e);
    bool known = rc == MS_OK || (rc == MS_ENOTFOUND && memcmp(&touched, &(patient_id){0}, sizeof touched) != 0);
    finish_read(r, rc, &e, &out, res, t0);
    audit_request(a, req, "records:read", known ? &touched : NULL, outcome_of(rc));
}

void h_record_delete(api *a, http_request *req, http_response *res)
{
    const char *rid = req->params[0];
    char source[192];
    snprintf(source, sizeof source, "user %s via http %s (delete)", req->user, req->client);
    item_result item = {0};
    ingest_job job = {.delete_id = rid,
                      .delete_id_len = strlen(rid),
                      .source = source,
                      .user = req->user,
                      .role = req->role,
                      .client = req->client,
                      .resource = req->path,
                      .received_at = ms_mono_s(),
                      .results = &item};
    writer_submit(a->writer, &job); /* the audit entry (records:delete) is in the same commit */
    if (job.rc != MS_OK) {
        http_error(res, status_for(job.rc), "the record was not deleted: %s", job.err.msg);
        return;
    }
    if (item.status != ITEM_DELETED) {
        http_error(res, 404, "record not found");
        return;
    }
    char pid[PATIENT_ID_TEXT];
    patient_id_format(&item.pid, pid);
    res->status = 200;
    res->body.len = 0;
    buf_puts(&res->body, "{\"record_id\":");
    jw_cstr(&res->body, rid);
    buf_printf(&res->body, ",\"patient_id\":\"%s\",\"version\":%u,\"deleted\":true,\"valid_from\":", pid, item.version);
    jw_time(&res->body, job.commit_time);
    buf_putc(&res->body, '}');
}
