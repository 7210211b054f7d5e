/*
 * h_records.c - the record routes: POST /v1/records (ingest), GET /v1/records/{record_id},
 * DELETE /v1/records/{record_id} and GET /v1/records/{record_id}/children.
 *
 * DESIGN: ingest hands the request's body (4 KiB-aligned and zero-padded by http_server.c) to the one
 * ingest path (ingest/ingest.c), which stores the body, submits the batch to the writer and returns
 * once it is durable; the answer lists every line's outcome. A CSV body (text/csv) is first converted by
 * the pipeline's CSV reader (pipeline/csv.h) into record objects, and what is stored is that NDJSON (the
 * batch's own 4 KiB-aligned buffer), so that a record reads back the same however it came; each item's
 * line is then the row's physical line in the CSV, and a row the reader rejected is a rejected item
 * whose error names its line, byte offset and column. The converted body is held beside the request's
 * (outside the edge's budget of bodies in flight) and may be at most twice --max-body, the most a segment
 * of the body log is sure to take. A deletion is a writer job of its own: the
 * tombstone version and its audit entry commit together. A record read is one read transaction
 * (read/query.c) and an audit entry naming the patient, if the record is known. The children of a
 * record (the schema's parent role) are a page of the parent's index in event-time order, read as of an
 * instant like the patient's records list, and audited like a record read with the patient of every child
 * answered; the parent itself need not exist (a child may arrive first).
 *
 * A body may name the file its lines come from (import_origin, import_line, import_replay: medstream import
 * --url): its records without a record_id are then named by file and line, as the offline importer names
 * them, and a replay's rows that match any version of their record are duplicates (writer.h).
 *
 * What it must never do: answer before the batch is durable, put a rejected line's values into its
 * error (only field names, columns, line numbers and byte offsets), or read a record without auditing
 * the read.
 */
#include "api/handlers.h"
#include "api/params.h"

#include "access/audit.h"
#include "base/json_write.h"
#include "ingest/ingest.h"
#include "pipeline/prepare.h"

#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>

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

/* Store a prepared batch whose records point into body (body_write_len bytes, 4 KiB-aligned and
 * zero-padded), wait until it is durable, and answer every item. Frees nothing. */
static void store_and_answer(api *a, http_request *req, http_response *res, const char *body, size_t body_len,
                             size_t body_write_len, record_batch *batch, bool replay)
{
    ingest_ctx in = {a->store, a->writer, a->schema, a->max_record};
    ms_err e;
    char source[192];
    snprintf(source, sizeof source, "user %s via http %s", req->user, req->client);
    ingest_job job = {.body = body,
                      .body_len = body_len,
                      .body_write_len = body_write_len,
                      .body_pos = UINT64_MAX,
                      .batch = batch,
                      .may_update = access_allows(req->role, "records:update"),
                      .replay = replay,
                      .source = source,
                      .user = req->user,
                      .role = req->role,
                      .client = req->client,
                      .resource = req->path,
                      .received_at = req->received_at,
                      .results = ms_calloc(batch->n ? batch->n : 1, sizeof(item_result))};
    if (ingest_store(&in, &job, &e) != MS_OK) {
        http_error(res, status_for(e.code), "nothing of this batch was stored: %s", e.msg);
        free(job.results);
        return;
    }
    buf *o = &res->body;
    o->len = 0;
    buf_reserve(o, (size_t)batch->n * 140 + 32);
    bool errors = batch->rejected > 0; /* the parser's rejections, and the writer's (a patient erased meanwhile) */
    for (uint32_t i = 0; i < batch->n && !errors; i++)
        errors = job.results[i].status == ITEM_REJECTED;
    buf_printf(o, "{\"errors\":%s,\"items\":[", errors ? "true" : "false");
    for (uint32_t i = 0; i < batch->n; i++) {
        const parsed_record *r = &batch->records[i];
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
}

/* Is the request's Content-Type text/csv? Then *refusal is NULL, or the reason for a 415: a charset other
 * than UTF-8 (or its subset US-ASCII), or header=absent (RFC 4180's parameter: the header row names the
 * fields, so it is needed). */
static bool csv_content_type(const char *ct, const char **refusal)
{
    *refusal = NULL;
    if (!ct) return false;
    while (*ct == ' ')
        ct++;
    if (strncasecmp(ct, "text/csv", 8) != 0) return false;
    const char *p = ct + 8;
    while (*p == ' ')
        p++;
    if (*p && *p != ';') return false;
    while (*p == ';') {
        p++;
        while (*p == ' ')
            p++;
        const char *name = p;
        while (*p && *p != '=' && *p != ';')
            p++;
        size_t name_len = (size_t)(p - name);
        while (name_len && name[name_len - 1] == ' ')
            name_len--;
        const char *value = *p == '=' ? ++p : p;
        while (*p && *p != ';')
            p++;
        size_t value_len = (size_t)(p - value);
        while (value_len && value[value_len - 1] == ' ')
            value_len--;
        if (value_len >= 2 && value[0] == '"' && value[value_len - 1] == '"') value++, value_len -= 2;
        bool is_charset = name_len == 7 && strncasecmp(name, "charset", 7) == 0;
        bool is_header = name_len == 6 && strncasecmp(name, "header", 6) == 0;
        if (is_charset && !((value_len == 5 && strncasecmp(value, "utf-8", 5) == 0) ||
                            (value_len == 8 && strncasecmp(value, "us-ascii", 8) == 0)))
            *refusal = "text/csv must be UTF-8 (charset=utf-8)";
        else if (is_header && value_len == 6 && strncasecmp(value, "absent", 6) == 0)
            *refusal = "text/csv needs its header row (header=present): it names the fields";
    }
    return true;
}

/* POST /v1/records with a CSV body: converted row by row (pipeline/csv.h), then stored like NDJSON. */
static void ingest_csv(api *a, http_request *req, http_response *res, scan_config cfg, bool replay)
{
    const char *body = req->body ? req->body : "";
    csv_header h;
    csv_reader r;
    csv_batch rows = {0};
    record_batch batch = {0};
    size_t used;
    ms_err e;
    if (csv_header_parse(a->schema, body, req->body_len, true, a->max_record, &h, &used, &e) != MS_OK) {
        http_error(res, 400, "%s", e.msg);
        csv_header_free(&h);
        return;
    }
    csv_reader_init(&r, &h, a->max_record);
    csv_convert(&r, body + used, req->body_len - used, true, &rows);
    size_t write_len = csv_batch_padded(&rows);
    size_t most = a->max_body ? (2 * a->max_body) & ~(size_t)(STORE_BODY_ALIGN - 1) : SIZE_MAX;
    if (rows.n == 0) {
        http_error(res, 400, "empty body: a CSV header row and no records");
    } else if (write_len > most) {
        http_error(
            res, 413,
            "the CSV body makes %zu bytes of records, more than %zu (twice --max-body); send fewer rows a request",
            rows.json_len, most);
    } else {
        record_prepare_csv(&cfg, &h, &rows, &batch);
        store_and_answer(a, req, res, rows.json, rows.json_len, write_len, &batch, replay);
    }
    record_batch_free(&batch);
    csv_batch_free(&rows);
    csv_reader_free(&r);
    csv_header_free(&h);
}

void h_ingest(api *a, http_request *req, http_response *res)
{
    if (atomic_load(&a->cluster)) { /* a shard's numbers are minted by its owner, in Kafka's order */
        http_error(res, 409, "this node is one of a cluster: records come in through the cluster's Kafka topic");
        return;
    }
    ingest_ctx in = {a->store, a->writer, a->schema, a->max_record};
    scan_config cfg = ingest_scan_config(&in);
    unsigned char origin[32];
    bool from_file, replay;
    if (!get_import_origin(req, res, origin, &cfg.origin_line, &from_file, &replay)) return;
    if (from_file) cfg.origin = origin;
    const char *refusal;
    if (csv_content_type(req->content_type, &refusal)) {
        if (refusal)
            http_error(res, 415, "%s", refusal);
        else
            ingest_csv(a, req, res, cfg, replay);
        return;
    }
    record_batch batch = {0};
    ms_err e;
    if (record_prepare_body(&cfg, req->body ? req->body : "", req->body_len, &batch, &e) != MS_OK) {
        http_error(res, 400, "%s", e.msg);
        record_batch_free(&batch);
        return;
    }
    /* http_server.c hands the body 4 KiB-aligned and zero-padded: it is stored as it is */
    store_and_answer(a, req, res, req->body, req->body_len, ingest_padded_len(req->body_len), &batch, replay);
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
    if (atomic_load(&a->cluster)) {
        http_error(res, 409, "this node is one of a cluster: deleting a record across the cluster is not built yet");
        return;
    }
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

void h_record_children(api *a, http_request *req, http_response *res)
{
    double t0 = ms_mono_s();
    list_params p;
    cursor_buf c;
    store_read *r;
    if (!begin_list_read(a, req, res, &p, &c, &r)) return;
    query_ctx q = {a->store, a->schema};
    buf out = {0};
    ms_err e;
    patient_id *pids = NULL;
    uint32_t npids = 0;
    ms_code rc = query_children(&q, r, req->params[0], strlen(req->params[0]), &p, &out, &pids, &npids, &e);
    finish_read(r, rc, &e, &out, res, t0);
    /* audited as GET /v1/records/{id} is, with the patient of every child answered */
    audit_event ev = {.time_us = ms_now_us(),
                      .user = req->user,
                      .role = req->role,
                      .action = "records:read",
                      .resource = req->path,
                      .outcome = outcome_of(rc),
                      .client = req->client,
                      .patients = pids,
                      .npatients = rc == MS_OK ? npids : 0};
    writer_audit(a->writer, &ev);
    free(pids);
}
