/*
 * writer.c - the single writer thread and group commit (see writer.h).
 */
#include "ingest/writer.h"

#include "base/json_write.h"

#include "base/log.h"
#include "pipeline/projection.h"
#include "pipeline/merge.h"
#include "base/metrics.h"
#include "store/record_sources.h"
#include "base/timefmt.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WRITER_GROUP_BYTES ((size_t)256 << 20)
#define WRITER_RETRY_S 1 /* while the store cannot commit: retry the queued audit entries this often */
/* Audit entries alone wait this long for a job to ride with before they are committed (writer.h). */
#define WRITER_AUDIT_WINDOW_MS 20

struct writer {
    store *store;
    const schema *schema;
    const schema *previous; /* the schema of the version in force while a re-projection to schema runs
                               (writer_set_previous_schema); NULL: schema */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    pthread_cond_t appended; /* a batch's body was written (writer_appended) */
    ingest_job *head, *tail;
    buf audit;                 /* pending audit entries (the members of each, NUL-separated), oldest first */
    struct timespec audit_due; /* CLOCK_REALTIME: the oldest of them is committed by then, job or not */
    bool stopping;
    bool failing;   /* the last commit failed: nothing can be made durable until one succeeds */
    ms_err failure; /* why */
    bool degraded;  /* the last batch could not be stored (commit or append): until one is, or a probe
                       says the store can take one of that size again */
    ms_err degraded_why;
    size_t degraded_bytes; /* body bytes of the batch that failed: what the probe asks room for */
};

const char *item_status_name(item_status s)
{
    switch (s) {
    case ITEM_CREATED: return "created";
    case ITEM_UPDATED: return "updated";
    case ITEM_DUPLICATE: return "duplicate";
    case ITEM_REJECTED: return "rejected";
    case ITEM_DELETED: return "deleted";
    case ITEM_FORWARDED: return "forwarded";
    }
    return "?";
}

/* ---- patient state ---- */

/* The state of patient `number` recomputed from its live records, leaving out record skip and adding
 * extra (a record of this commit, not stored yet; may be NULL). prev: the state it replaces. */
static ms_code recompute(writer *wr, store_write *sw, uint64_t number, const char *skip, size_t skip_len,
                         const merge_source *extra, const patient_version *prev, arena *mem, merge_result *out,
                         ms_err *e)
{
    /* prev holds every field of the live records (merge.h): the walk reads the newest until those are decided */
    record_sources g = {.store = wr->store,
                        .mem = mem,
                        .skip = skip,
                        .skip_len = skip_len,
                        .decide = prev ? prev->fields : NULL,
                        .ndecide = prev ? prev->nfields : 0,
                        .e = e};
    if (extra) record_sources_push(&g, extra);
    ms_code rc = store_write_live_records(sw, number, record_sources_add, &g, e);
    if (rc == MS_OK) rc = g.rc;
    record_sources_free(&g);
    if (rc != MS_OK) return rc;
    atomic_fetch_add(&g_metrics.state_recomputes, 1);
    atomic_fetch_add(&g_metrics.state_recompute_records, g.n - (extra ? 1 : 0));
    merge_records(wr->schema, g.src, g.n, prev ? prev->fields : NULL, prev ? prev->nfields : 0, mem, out);
    return MS_OK;
}

/* Whose public copy (projection.h) patient p's is under sch: the store's deid key and the patient's identity
 * key (ikey: the record's at hand; NULL: looked up in sw when sch has keyed transforms, its bytes in held). */
static ms_code projection_of(writer *wr, store_write *sw, const schema *sch, const patient_ref *p, const char *ikey,
                             size_t ikey_len, buf *held, projection_who *who, ms_err *e)
{
    *who = (projection_who){.deid_key = store_deid_key(wr->store), .identity_key = ikey, .identity_key_len = ikey_len};
    if (ikey || !deid_needs_keys(sch)) return MS_OK;
    bool found;
    ms_code rc = store_write_identity_key(sw, p, held, &found, e);
    if (rc == MS_OK && found) {
        who->identity_key = held->data;
        who->identity_key_len = held->len;
    }
    return rc;
}

/* The schema versions this transaction writes public copies under and the schema of each: the version in
 * force, and during a re-projection (store_write_schema) its target, under the writer's schema, while the
 * version in force keeps the previous one. Returns how many (1 or 2). */
static int projections(writer *wr, store_write *sw, uint32_t sv[2], const schema *sch[2])
{
    uint32_t in_force, target;
    store_write_schema(sw, &in_force, &target);
    sv[0] = in_force;
    sch[0] = wr->schema;
    if (!target) return 1;
    sch[0] = wr->previous ? wr->previous : wr->schema;
    sv[1] = target;
    sch[1] = wr->schema;
    return 2;
}

/* The public projection of a state under sch. Values held by cur (this commit's record, in memory) are
 * taken from it; the others are read back from the segment log. Age transforms count to the state's
 * latest event time; the keyed ones use the patient's keys (ikey: its identity key, or NULL to look it
 * up). */
static ms_code public_projection(writer *wr, store_write *sw, const schema *sch, const patient_ref *who,
                                 const char *ikey, size_t ikey_len, const merge_result *m, const merge_source *cur,
                                 buf *out, ms_err *e)
{
    const char **vals = ms_calloc(m->nfields ? m->nfields : 1, sizeof *vals);
    state_field *need = ms_malloc(sizeof *need * (m->nfields ? m->nfields : 1));
    uint32_t *slot = ms_malloc(sizeof *slot * (m->nfields ? m->nfields : 1));
    uint32_t nneed = 0;
    for (uint32_t i = 0; i < m->nfields; i++) {
        const state_field *f = &m->fields[i];
        if (!projection_patient_reads(sch, f)) continue;
        if (cur && f->pos >= cur->body_pos && f->pos < cur->body_pos + cur->body_len) {
            vals[i] = cur->body + (f->pos - cur->body_pos);
        } else {
            need[nneed] = *f;
            slot[nneed++] = i;
        }
    }
    buf scratch = {0};
    const char **read = ms_calloc(nneed ? nneed : 1, sizeof *read);
    ms_code rc = nneed ? store_field_values(wr->store, need, nneed, read, &scratch, e) : MS_OK;
    buf held = {0};
    projection_who pw;
    if (rc == MS_OK) rc = projection_of(wr, sw, sch, who, ikey, ikey_len, &held, &pw, e);
    if (rc == MS_OK) {
        for (uint32_t k = 0; k < nneed; k++)
            vals[slot[k]] = read[k];
        projection_patient(sch, &pw, m->fields, m->nfields, vals, out);
    }
    buf_free(&held);
    buf_free(&scratch);
    free(read);
    free(slot);
    free(need);
    free(vals);
    return rc;
}

/* Whether a field public under sch (a patient field: not the record's id, type or event time) differs
 * between the state prev and m: merge's public_changed, for a schema merge did not run with (the version in
 * force's during a re-projection). Fields compare by their value's length and hash. */
static bool public_fields_differ(const schema *sch, const patient_version *prev, const merge_result *m)
{
    for (int pass = 0; pass < 2; pass++) {
        const state_field *from = pass ? prev->fields : m->fields, *in = pass ? m->fields : prev->fields;
        uint32_t nfrom = pass ? prev->nfields : m->nfields, nin = pass ? m->nfields : prev->nfields;
        for (uint32_t i = 0; i < nfrom; i++) {
            const state_field *a = &from[i], *b = NULL;
            if (!projection_patient_reads(sch, a)) continue;
            for (uint32_t j = 0; j < nin && !b; j++)
                if (in[j].key_len == a->key_len && memcmp(in[j].key, a->key, a->key_len) == 0) b = &in[j];
            if (!b || a->len != b->len || a->hash != b->hash) return true;
        }
    }
    return false;
}

/* Write the patient's next version (if the state changed) and its public copies (those that changed).
 * ikey: the patient's identity key, or NULL (looked up when the schema has keyed transforms). Known limit:
 * a restated version (values unchanged, only held by a later record) does not re-project, so an age of
 * the public copy counts to the latest event time of the last real change. */
static ms_code put_state(writer *wr, store_write *sw, const patient_ref *who, const char *ikey, size_t ikey_len,
                         const patient_version *prev, const merge_result *m, const merge_source *cur, const char *cause,
                         size_t cause_len, const char *source, ms_err *e)
{
    if (prev && !m->changed) {
        if (!m->moved) return MS_OK;
        patient_version same = *prev; /* only which records hold the values moved */
        same.fields = m->fields;
        same.nfields = m->nfields;
        return store_patient_restate(sw, &same, e);
    }
    patient_version next = {.pid = who->id,
                            .number = who->number,
                            .version = prev ? prev->version + 1 : 1,
                            .valid_from = store_write_time(sw),
                            .valid_to = -1,
                            .cause_record = cause,
                            .cause_record_len = (uint32_t)cause_len,
                            .source = source,
                            .source_len = (uint32_t)strlen(source),
                            .fields = m->fields,
                            .nfields = m->nfields};
    ms_code rc = store_patient_put(sw, &next, e);
    uint32_t sv[2];
    const schema *sch[2];
    int np = projections(wr, sw, sv, sch);
    if (rc != MS_OK) return rc;
    buf prev_pub = {0}, pub = {0};
    for (int i = 0; i < np && rc == MS_OK; i++) {
        /* merge's public_changed is the writer's schema's; the previous one's is compared here */
        /* an age depends on the state's latest event time, which any change may move */
        if (prev && !(sch[i] == wr->schema ? m->public_changed : public_fields_differ(sch[i], prev, m)) &&
            !schema_public_time_dependent(sch[i]))
            continue;
        bool have_pub;
        pub.len = 0;
        rc = store_public_patient_latest(sw, sv[i], who, &prev_pub, &have_pub, e);
        if (rc == MS_OK) rc = public_projection(wr, sw, sch[i], who, ikey, ikey_len, m, cur, &pub, e);
        if (rc == MS_OK && (!have_pub || pub.len != prev_pub.len || memcmp(pub.data, prev_pub.data, pub.len) != 0))
            rc = store_public_patient_put(sw, sv[i], who, next.version, pub.data, pub.len, e);
    }
    buf_free(&prev_pub);
    buf_free(&pub);
    return rc;
}

/* A record left patient `who` (moved away or deleted): if it held values of the state, recompute the
 * state from the records that remain. */
static ms_code record_left(writer *wr, store_write *sw, const record_version *gone, const char *source, arena *mem,
                           ms_err *e)
{
    patient_ref who = {gone->pid, gone->patient_number};
    patient_version pv;
    bool have;
    ms_code rc = store_patient_latest(sw, &who, &pv, mem, &have, e);
    if (rc != MS_OK || !have || !merge_contributes(pv.fields, pv.nfields, gone->body_pos, gone->body_len)) return rc;
    merge_result m;
    rc = recompute(wr, sw, who.number, gone->record_id, gone->record_id_len, NULL, &pv, mem, &m, e);
    if (rc == MS_OK)
        rc = put_state(wr, sw, &who, NULL, 0, &pv, &m, NULL, gone->record_id, gone->record_id_len, source, e);
    return rc;
}

/* ---- jobs ---- */

/* A record version with its public copies: r->public_fields (stage 3, the writer's schema) under the version
 * in force, or during a re-projection the previous schema's projection there and r->public_fields under
 * the target. r NULL: a tombstone (no fields). */
static ms_code put_record_copies(writer *wr, store_write *sw, const record_version *rv, const parsed_record *r,
                                 ms_err *e)
{
    uint32_t sv[2];
    const schema *sch[2];
    int np = projections(wr, sw, sv, sch);
    int year = time_year(rv->ts_us);
    if (!r) {
        ms_code rc = store_record_put(sw, rv, year, NULL, 0, e);
        if (rc == MS_OK && np == 2) rc = store_public_record_put(sw, sv[1], rv, year, NULL, 0, e);
        return rc;
    }
    if (np == 1 || sch[0] == sch[1]) {
        ms_code rc = store_record_put(sw, rv, year, r->public_fields, r->public_fields_len, e);
        if (rc == MS_OK && np == 2)
            rc = store_public_record_put(sw, sv[1], rv, year, r->public_fields, r->public_fields_len, e);
        return rc;
    }
    buf old = {0};
    projection_who pw = {store_deid_key(wr->store), r->identity_key, r->identity_key_len};
    projection_record(sch[0], &pw, r->ts_us, r->fields, r->nfields, &old);
    ms_code rc = store_record_put(sw, rv, year, old.data, old.len, e);
    buf_free(&old);
    if (rc == MS_OK) rc = store_public_record_put(sw, sv[1], rv, year, r->public_fields, r->public_fields_len, e);
    return rc;
}

/* One record through resolution, versioning, merge and the public copies. */
static ms_code apply_record(writer *wr, store_write *sw, ingest_job *job, const parsed_record *r, item_result *res,
                            arena *mem, ms_err *e)
{
    ms_code rc;
    record_version prev;
    bool have_prev;
    if ((rc = store_record_latest(sw, r->record_id, r->record_id_len, &prev, &have_prev, e))) return rc;
    if (have_prev && !prev.deleted && memcmp(prev.content_hash, r->content_hash, 16) == 0) {
        res->status = ITEM_DUPLICATE;
        res->pid = prev.pid;
        res->version = prev.version;
        return MS_OK;
    }
    if (have_prev && (job->replay || r->replay)) { /* stored before as an older version: that is this row */
        record_version seen;
        bool was;
        if ((rc = store_record_with_content(sw, r->record_id, r->record_id_len, r->content_hash, &seen, &was, e)))
            return rc;
        if (was) {
            res->status = ITEM_DUPLICATE;
            res->pid = seen.pid;
            res->version = seen.version;
            return MS_OK;
        }
    }
    if (have_prev && prev.deleted) { /* an erased patient's record (erase.c) is not stored again by a replay */
        patient_ref owner = {.id = prev.pid, .number = prev.patient_number};
        buf ikey = {0};
        bool alive;
        rc = store_write_identity_key(sw, &owner, &ikey, &alive, e);
        buf_free(&ikey);
        if (rc) return rc;
        if (!alive) {
            res->status = ITEM_REJECTED;
            res->error = arena_printf(&job->batch->mem,
                                      "record %.*s was erased with its patient: it is not stored again (a new "
                                      "record needs a new record id)",
                                      (int)r->record_id_len, r->record_id);
            return MS_OK;
        }
    }
    if (have_prev && !job->may_update) {
        res->status = ITEM_REJECTED;
        res->denied = true;
        res->pid = prev.pid;
        res->error = arena_printf(&job->batch->mem, "record %.*s exists; a new version needs records:update",
                                  (int)r->record_id_len, r->record_id);
        return MS_OK;
    }
    bool prev_live = have_prev && !prev.deleted;
    /* resolve the patient */
    patient_ref who;
    bool known;
    /* the body was sealed under a data key before this: it must be the patient's (keys.c); the seal item
     * has the identity's MAC too */
    const seal_item *seal = &job->seals[r - job->batch->records];
    if ((rc = store_ident_find(sw, seal->mac, &who, &known, e))) return rc;
    bool bound;
    uint64_t number = job->numbers ? job->numbers[r - job->batch->records] : UINT64_MAX;
    if (known && number != UINT64_MAX && who.number != number) { /* never: one identity, one id (shard.h) */
        res->status = ITEM_REJECTED;
        res->error = arena_printf(&job->batch->mem, "the identity is patient number %llu here, %llu in the cluster",
                                  (unsigned long long)who.number, (unsigned long long)number);
        return MS_OK;
    }
    if (!known)
        rc = store_patient_create_mac(sw, r->identity_key, r->identity_key_len, seal->mac, seal->key, number, &who,
                                      &bound, e);
    else
        rc = store_patient_key_bind(sw, &who, r->identity_key, r->identity_key_len, seal->key, &bound, e);
    if (rc != MS_OK) return rc;
    if (!bound) {
        res->status = ITEM_REJECTED;
        res->error = "the patient was erased while this record was on its way: send it again";
        return MS_OK;
    }
    int64_t now = store_write_time(sw);
    merge_source cur = {.fields = r->fields,
                        .nfields = r->nfields,
                        .body = r->body,
                        .body_len = r->body_len,
                        .body_pos = job->body_pos + seal->offset,
                        .ts = r->ts_us,
                        .valid_from = now,
                        .sealer = who.number + 1};
    patient_version pv;
    bool have_pv = false;
    if (known && (rc = store_patient_latest(sw, &who, &pv, mem, &have_pv, e))) return rc;
    merge_result m;
    if (have_pv && prev_live && prev.patient_number == who.number &&
        merge_replacing_recomputes(pv.fields, pv.nfields, prev.body_pos, prev.body_len, &cur)) {
        /* the version it replaces held values this one does not override: recompute without it */
        if ((rc = recompute(wr, sw, who.number, r->record_id, r->record_id_len, &cur, &pv, mem, &m, e))) return rc;
    } else {
        merge_apply(wr->schema, have_pv ? pv.fields : NULL, have_pv ? pv.nfields : 0, &cur, mem, &m);
    }
    if (m.nfields > PATIENT_MAX_FIELDS) {
        res->status = ITEM_REJECTED;
        res->error = "the patient would have more than 4096 distinct fields";
        return MS_OK;
    }

    record_version rv = {0};
    memcpy(rv.record_id, r->record_id, r->record_id_len);
    rv.record_id_len = r->record_id_len;
    rv.version = have_prev ? prev.version + 1 : 1;
    rv.valid_from = now;
    rv.valid_to = -1;
    rv.pid = who.id;
    rv.patient_number = who.number;
    rv.ts_us = r->ts_us;
    memcpy(rv.type, r->type, r->type_len);
    rv.type_len = r->type_len;
    rv.body_pos = cur.body_pos;
    rv.sealed = true;
    rv.body_len = r->body_len;
    rv.body_hash = 0; /* sealed: its AES-GCM tag authenticates the body (store.h) */
    memcpy(rv.content_hash, r->content_hash, 16);
    if (r->parent_id_len) memcpy(rv.parent_id, r->parent_id, r->parent_id_len); /* indexed under it */
    rv.parent_id_len = r->parent_id_len;
    if ((rc = put_record_copies(wr, sw, &rv, r, e))) return rc;
    if ((rc = put_state(wr, sw, &who, r->identity_key, r->identity_key_len, have_pv ? &pv : NULL, &m, &cur,
                        r->record_id, r->record_id_len, job->source, e)))
        return rc;
    /* moved to another patient: its values leave the old one's state */
    if (prev_live && prev.patient_number != who.number && (rc = record_left(wr, sw, &prev, job->source, mem, e)))
        return rc;
    res->status = have_prev ? ITEM_UPDATED : ITEM_CREATED;
    res->pid = who.id;
    res->version = rv.version;
    return MS_OK;
}

/* DELETE /v1/records/{id}: a tombstone version; the record's values leave its patient's state. */
static ms_code apply_delete(writer *wr, store_write *sw, ingest_job *job, arena *mem, ms_err *e)
{
    item_result *res = &job->results[0];
    record_version prev;
    bool have;
    ms_code rc = store_record_latest(sw, job->delete_id, job->delete_id_len, &prev, &have, e);
    if (rc != MS_OK) return rc;
    if (!have || prev.deleted) {
        res->status = ITEM_REJECTED;
        res->error = "record not found";
        return MS_OK;
    }
    record_version tomb = prev;
    tomb.version = prev.version + 1;
    tomb.valid_from = store_write_time(sw);
    tomb.valid_to = -1;
    tomb.body_pos = 0;
    tomb.body_len = 0;
    tomb.body_hash = 0;
    memset(tomb.content_hash, 0, sizeof tomb.content_hash);
    tomb.deleted = true;
    tomb.sealed = false;
    if ((rc = put_record_copies(wr, sw, &tomb, NULL, e))) return rc;
    if ((rc = record_left(wr, sw, &prev, job->source, mem, e))) return rc;
    res->status = ITEM_DELETED;
    res->pid = prev.pid;
    res->version = tomb.version;
    return MS_OK;
}

static int pid_cmp(const void *a, const void *b) { return memcmp(a, b, sizeof(patient_id)); }

/* One audit entry of the job: action and outcome, and the distinct patients of its items that are (denied)
 * or are not (!denied) new versions refused for want of records:update. */
static ms_code audit_entry(store_write *sw, const ingest_job *j, const char *action, const char *outcome, bool denied,
                           ms_err *e)
{
    uint32_t n_items = j->batch ? j->batch->n : 1;
    patient_id *pids = ms_malloc(sizeof *pids * (n_items ? n_items : 1));
    uint32_t n = 0;
    for (uint32_t i = 0; i < n_items; i++)
        if (denied ? j->results[i].denied : j->results[i].status != ITEM_REJECTED) pids[n++] = j->results[i].pid;
    qsort(pids, n, sizeof *pids, pid_cmp);
    uint32_t d = 0;
    for (uint32_t i = 0; i < n; i++)
        if (!d || memcmp(&pids[d - 1], &pids[i], sizeof *pids) != 0) pids[d++] = pids[i];
    audit_event ev = {.time_us = ms_now_us(),
                      .user = j->user,
                      .role = j->role,
                      .action = action,
                      .resource = j->resource,
                      .outcome = outcome,
                      .client = j->client,
                      .patients = pids,
                      .npatients = d};
    buf m = {0};
    audit_event_json(&ev, &m);
    ms_code rc = store_audit_append(sw, m.data, m.len, e);
    buf_free(&m);
    free(pids);
    return rc;
}

/* The job's audit entries: who, the distinct patients it touched, the outcome; and, when it sent new versions
 * without records:update, a denied records:update naming the patients of the records it tried to change (an
 * entry of their own: the batch's entry says "ok" for what it stored). */
static ms_code audit_job(store_write *sw, const ingest_job *j, ms_err *e)
{
    bool deletion = j->delete_id != NULL;
    uint32_t denied = 0, tried = j->batch ? j->batch->n - j->batch->rejected : 1;
    for (uint32_t i = 0; j->batch && i < j->batch->n; i++)
        denied += j->results[i].denied;
    ms_code rc = MS_OK;
    if (denied < tried)
        rc = audit_entry(sw, j, deletion ? "records:delete" : "records:create",
                         deletion && j->results[0].status != ITEM_DELETED ? "not_found" : "ok", false, e);
    if (rc == MS_OK && denied) rc = audit_entry(sw, j, "records:update", "denied", true, e);
    return rc;
}

static ms_code run_job(writer *wr, store_write *sw, ingest_job *j, arena *mem, ms_err *e)
{
    ms_code rc = MS_OK;
    if (j->apply) return j->apply(j->apply_ctx, sw, e);
    if (j->delete_id) {
        memset(&j->results[0], 0, sizeof j->results[0]);
        rc = apply_delete(wr, sw, j, mem, e);
    } else if (j->batch) {
        if (j->body_pos == UINT64_MAX && j->batch->rejected < j->batch->n) /* ingest.h: appended before submit */
            return ms_fail(e, MS_EINVAL, "writer: a batch submitted before its body was appended");
        for (uint32_t i = 0; i < j->batch->n && rc == MS_OK; i++) {
            const parsed_record *r = &j->batch->records[i];
            item_result *res = &j->results[i];
            memset(res, 0, sizeof *res);
            if (r->rejected) {
                res->status = j->numbers && j->numbers[i] == JOB_FORWARDED ? ITEM_FORWARDED : ITEM_REJECTED;
                continue;
            }
            rc = apply_record(wr, sw, j, r, res, mem, e);
        }
    } else {
        return MS_OK; /* a barrier: nothing but the audit entries queued before it */
    }
    /* audited: every batch the writer had records of (a line it rejects, such as an update without
     * records:update, is a denied attempt); not a batch of only scan-rejected lines, which touched nothing
     * and comes here only to commit its source positions */
    if (rc == MS_OK && (!j->batch || j->batch->rejected < j->batch->n)) rc = audit_job(sw, j, e);
    if (rc == MS_OK && j->also) rc = j->also(j->also_ctx, sw, e);
    for (int i = 0; rc == MS_OK && i < j->noffsets; i++)
        rc = store_source_offset_put(sw, j->offsets[i].topic, j->offsets[i].partition, j->offsets[i].next, e);
    return rc;
}

/* Wait until the bodies of the group's batches are written (writer_appended); the first failure among
 * them, MS_OK if none. */
static ms_code appended(writer *wr, ingest_job *group, ms_err *e)
{
    ms_code rc = MS_OK;
    pthread_mutex_lock(&wr->lock);
    for (ingest_job *j = group; j; j = j->next) {
        while (j->appending)
            pthread_cond_wait(&wr->appended, &wr->lock);
        if (rc == MS_OK && j->append_rc != MS_OK && !j->dropped) {
            rc = j->append_rc;
            *e = j->append_err;
        }
    }
    pthread_mutex_unlock(&wr->lock);
    return rc;
}

/* One store transaction for the group's jobs and the audit entries queued before them. */
static ms_code process_group(writer *wr, ingest_job *group, const buf *audit, ms_err *e)
{
    double t0 = ms_mono_s();
    store_write *sw = NULL;
    ms_code rc = store_write_begin(wr->store, &sw, e);
    arena mem = {0};
    for (size_t at = 0; rc == MS_OK && at < audit->len;) { /* entries of reads since the last commit */
        size_t n = strlen(audit->data + at);
        rc = store_audit_append(sw, audit->data + at, n, e);
        at += n + 1;
    }
    for (ingest_job *j = group; j && rc == MS_OK; j = j->next)
        if (!j->dropped) rc = run_job(wr, sw, j, &mem, e);
    arena_free(&mem);
    double t_applied = ms_mono_s();
    ms_err ae;
    ms_code arc = appended(wr, group, &ae); /* nothing is committed before its bodies are written */
    double t_appended = ms_mono_s();
    if (rc == MS_OK && arc != MS_OK) {
        rc = arc;
        *e = ae;
    }
    uint64_t pos = 0;
    int64_t commit_time = sw ? store_write_time(sw) : 0;
    if (rc == MS_OK)
        rc = store_write_commit(sw, &pos, e);
    else if (sw)
        store_write_abort(sw);
    double t1 = ms_mono_s();
    if (rc == MS_OK) {
        histogram_observe(&g_metrics.commit_seconds, t1 - t0);
        store_commit_times ct = store_last_commit_times(wr->store);
        atomic_fetch_add(&g_metrics.commit_apply_us, (uint64_t)((t_applied - t0) * 1e6));
        atomic_fetch_add(&g_metrics.commit_bodies_us, (uint64_t)((t_appended - t_applied) * 1e6));
        atomic_fetch_add(&g_metrics.commit_sync_us, (uint64_t)(ct.sync_s * 1e6));
        atomic_fetch_add(&g_metrics.commit_lmdb_us, (uint64_t)(ct.lmdb_s * 1e6));
        atomic_fetch_add(&g_metrics.commits, 1);
        atomic_store(&g_metrics.commit_position, pos);
    } else if (arc == MS_OK) { /* (a body that could not be written was counted by writer_note_failure) */
        atomic_fetch_add(&g_metrics.commit_failures, 1);
    }
    for (ingest_job *j = group; j; j = j->next) {
        if (j->dropped) continue;
        j->rc = rc;
        j->err = *e;
        j->commit_pos = pos;
        j->commit_time = commit_time;
        if (rc != MS_OK || !j->batch) continue;
        histogram_observe(&g_metrics.freshness_seconds, t1 - j->received_at);
        atomic_fetch_add(&g_metrics.batches, 1);
        atomic_fetch_add(&g_metrics.ingest_bytes, j->body_len);
        for (uint32_t i = 0; i < j->batch->n; i++) {
            switch (j->results[i].status) {
            case ITEM_CREATED: atomic_fetch_add(&g_metrics.records_created, 1); break;
            case ITEM_UPDATED: atomic_fetch_add(&g_metrics.records_updated, 1); break;
            case ITEM_DUPLICATE: atomic_fetch_add(&g_metrics.records_duplicate, 1); break;
            case ITEM_REJECTED: atomic_fetch_add(&g_metrics.records_rejected, 1); break;
            case ITEM_DELETED:
            case ITEM_FORWARDED: break;
            }
        }
    }
    return rc;
}

/* process_group; when it failed because the body of a batch of the group could not be written, that batch
 * fails alone, with its own error, and the rest of the group (and the audit entries) go again without it.
 * A group of nothing else: MS_OK, nothing committed (writer_note_failure has told the failure). */
static ms_code commit_group(writer *wr, ingest_job *group, const buf *audit, ms_err *e)
{
    for (;;) {
        ms_code rc = process_group(wr, group, audit, e);
        if (rc == MS_OK) return rc;
        bool dropped = false, left = audit->len > 0;
        for (ingest_job *j = group; j; j = j->next) { /* (appended() saw every append end) */
            if (j->dropped) continue;
            if (j->append_rc == MS_OK) {
                left = true;
                continue;
            }
            j->dropped = true;
            j->rc = j->append_rc;
            j->err = j->append_err;
            dropped = true;
        }
        if (!dropped) return rc;
        if (!left) return MS_OK;
    }
}

/* Nothing queued while the store cannot commit: can it now? (store_probe: a block of the segment log
 * and a tiny LMDB commit, which also tells that audit entries could be stored) */
static ms_code probe(writer *wr, size_t bytes, ms_err *e)
{
    ms_code rc = store_probe(wr->store, bytes, e);
    if (rc != MS_OK) atomic_fetch_add(&g_metrics.commit_failures, 1);
    return rc;
}

/* Body bytes of the group's batches (0: none). */
static size_t batch_bytes(const ingest_job *group)
{
    size_t n = 0;
    for (const ingest_job *j = group; j; j = j->next)
        if (j->batch && !j->dropped) n += j->body_write_len ? j->body_write_len : 1;
    return n;
}

static void *writer_main(void *arg)
{
    writer *w = arg;
    pthread_setname_np(pthread_self(), "ms-writer");
    pthread_mutex_lock(&w->lock);
    for (;;) {
        bool retry = false;
        while (!w->head && !w->audit.len && !w->stopping && !retry) {
            if (!w->failing && !w->degraded) {
                pthread_cond_wait(&w->wake, &w->lock);
                continue;
            }
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += WRITER_RETRY_S;
            retry = pthread_cond_timedwait(&w->wake, &w->lock, &until) == ETIMEDOUT;
        }
        if (!w->head && !w->audit.len && w->stopping) break;
        /* audit entries alone: a job that comes within the window takes them along */
        while (!w->head && w->audit.len && !w->stopping && !w->failing && !retry)
            if (pthread_cond_timedwait(&w->wake, &w->lock, &w->audit_due) == ETIMEDOUT) break;
        /* take a group: every job waiting, up to the byte budget, and every pending audit entry */
        ingest_job *group = w->head, *last = group;
        if (group) {
            size_t bytes = group->body_len;
            while (last->next && bytes + last->next->body_len <= WRITER_GROUP_BYTES) {
                last = last->next;
                bytes += last->body_len;
            }
            w->head = last->next;
            if (!w->head) w->tail = NULL;
            last->next = NULL;
        }
        buf audit = w->audit;
        bool audit_taken = audit.len > 0;
        w->audit = (buf){0};
        pthread_mutex_unlock(&w->lock);
        ms_err e = {0};
        size_t probe_bytes = w->degraded_bytes;
        ms_code rc = group || audit.len ? commit_group(w, group, &audit, &e) : probe(w, probe_bytes, &e);
        pthread_mutex_lock(&w->lock);
        if (rc != MS_OK && audit.len) { /* not durable: back to the front of the queue, never dropped */
            buf_put(&audit, w->audit.data, w->audit.len);
            buf_free(&w->audit);
            w->audit = audit;
            audit = (buf){0};
        }
        buf_free(&audit);
        w->failing = rc != MS_OK;
        if (w->failing) w->failure = e;
        size_t bytes = batch_bytes(group);
        if (rc != MS_OK && (bytes || w->degraded)) {
            w->degraded = true;
            w->degraded_why = e;
            if (bytes) w->degraded_bytes = bytes;
        } else if (rc == MS_OK && (bytes || (!group && !audit_taken))) {
            w->degraded = false; /* a batch was stored, or the probe found room for the one that failed */
        }
        for (ingest_job *j = group; j; j = j->next)
            j->done = true;
        pthread_cond_broadcast(&w->done);
        if (w->failing && w->stopping && !w->head) break; /* what cannot be stored now is lost at exit: say so */
    }
    if (w->audit.len)
        ms_log(LOG_ERROR, "writer.audit_lost", "%zu bytes of audit entries could not be stored before stopping: %s",
               w->audit.len, w->failure.msg);
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* The store's part of /healthz: degraded, with the reason, while it cannot take batches. */
static bool store_health(void *ctx, buf *out)
{
    ms_err why;
    if (writer_healthy(ctx, &why)) return true;
    buf_puts(out, ",\"store\":");
    jw_cstr(out, why.msg); /* names the cause (disk full, I/O error), never data */
    return false;
}

static void store_metrics(void *ctx, buf *out)
{
    state_cache_stats st = store_state_cache_stats(((writer *)ctx)->store);
    metrics_counter(out, "medstream_state_cache_hits_total",
                    "Records merged into a patient's latest state found in the state cache.", st.hits);
    metrics_counter(out, "medstream_state_cache_misses_total",
                    "Latest states read from the patient log (not in the state cache, or written since).", st.misses);
    metrics_counter(out, "medstream_state_cache_evictions_total", "States evicted from the state cache to fit it.",
                    st.evictions);
    metrics_counter(out, "medstream_state_cache_probes_total",
                    "Slots of the state cache's table looked at (lookups, inserts, deletions' shifts).", st.probes);
    metrics_gauge(out, "medstream_state_cache_entries", "Patients' states in the state cache.", st.entries);
    metrics_gauge(out, "medstream_state_cache_bytes", "Bytes the state cache holds (the states and their overhead).",
                  st.bytes);
}

ms_code writer_start(writer **out, store *s, const schema *sc, ms_err *e)
{
    /* the gauge the followers (sinks, notifications, counters) and /metrics read: the store's position
     * from the start, not 0 until this run's first commit */
    store_read *r;
    if (store_read_begin(s, &r, e) != MS_OK) return e->code;
    atomic_store(&g_metrics.commit_position, store_commit_pos(r));
    store_read_end(r);
    writer *w = ms_calloc(1, sizeof *w);
    w->store = s;
    w->schema = sc;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    pthread_cond_init(&w->done, NULL);
    pthread_cond_init(&w->appended, NULL);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        free(w);
        return ms_fail(e, MS_EIO, "cannot start the writer thread");
    }
    subsystem_register(&(subsystem){"store", store_metrics, store_health, w});
    *out = w;
    return MS_OK;
}

void writer_stop(writer *w)
{
    if (!w) return;
    subsystem_unregister(w);
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    buf_free(&w->audit);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->wake);
    pthread_cond_destroy(&w->done);
    pthread_cond_destroy(&w->appended);
    free(w);
}

void writer_audit(writer *w, const audit_event *ev)
{
    buf m = {0};
    audit_event_json(ev, &m);
    pthread_mutex_lock(&w->lock);
    if (!w->audit.len) w->audit_due = ms_deadline(CLOCK_REALTIME, WRITER_AUDIT_WINDOW_MS);
    buf_put(&w->audit, m.data, m.len + 1); /* with its NUL: entries are NUL-separated */
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    buf_free(&m);
}

void writer_note_failure(writer *w, const ms_err *e, size_t bytes)
{
    atomic_fetch_add(&g_metrics.commit_failures, 1);
    pthread_mutex_lock(&w->lock);
    w->degraded = true;
    w->degraded_why = *e;
    w->degraded_bytes = bytes;
    pthread_cond_signal(&w->wake); /* start probing */
    pthread_mutex_unlock(&w->lock);
}

bool writer_healthy(writer *w, ms_err *why)
{
    pthread_mutex_lock(&w->lock);
    bool ok = !w->failing && !w->degraded;
    if (!ok && why) *why = w->failing ? w->failure : w->degraded_why;
    pthread_mutex_unlock(&w->lock);
    return ok;
}

bool writer_audit_ok(writer *w, ms_err *why)
{
    pthread_mutex_lock(&w->lock);
    bool ok = !w->failing && w->audit.len <= WRITER_AUDIT_BACKLOG_MAX;
    if (!ok && why) {
        if (w->failing)
            *why = w->failure;
        else
            ms_fail(why, MS_EFULL, "%zu bytes of audit entries wait for a commit", w->audit.len);
    }
    pthread_mutex_unlock(&w->lock);
    return ok;
}

static void enqueue(writer *w, ingest_job *job, bool appending)
{
    job->done = false;
    job->next = NULL;
    job->appending = appending;
    job->append_rc = MS_OK;
    job->dropped = false;
    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        pthread_mutex_unlock(&w->lock);
        job->appending = false;
        job->done = true;
        job->rc = ms_fail(&job->err, MS_ESTOPPED, "server is shutting down");
        return;
    }
    if (w->tail)
        w->tail->next = job;
    else
        w->head = job;
    w->tail = job;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
}

void writer_enqueue(writer *w, ingest_job *job) { enqueue(w, job, true); }

void writer_appended(writer *w, ingest_job *job, ms_code rc, const ms_err *e)
{
    pthread_mutex_lock(&w->lock);
    job->append_rc = rc;
    if (rc != MS_OK) job->append_err = *e;
    job->appending = false;
    pthread_cond_broadcast(&w->appended);
    pthread_mutex_unlock(&w->lock);
}

void writer_wait(writer *w, ingest_job *job)
{
    pthread_mutex_lock(&w->lock);
    while (!job->done)
        pthread_cond_wait(&w->done, &w->lock);
    pthread_mutex_unlock(&w->lock);
}

void writer_submit(writer *w, ingest_job *job)
{
    enqueue(w, job, false);
    writer_wait(w, job);
}

void writer_set_previous_schema(writer *w, const schema *previous)
{
    pthread_mutex_lock(&w->lock);
    w->previous = previous;
    pthread_mutex_unlock(&w->lock);
}

ms_code writer_apply(writer *w, writer_apply_fn fn, void *ctx, ms_err *e)
{
    ingest_job job = {.apply = fn, .apply_ctx = ctx, .received_at = ms_mono_s()};
    writer_submit(w, &job);
    if (job.rc != MS_OK && e) *e = job.err;
    return job.rc;
}

ms_code writer_sync(writer *w, ms_err *e)
{
    ingest_job job = {.received_at = ms_mono_s()};
    writer_submit(w, &job);
    if (job.rc != MS_OK && e) *e = job.err;
    return job.rc;
}

/* ---- named definitions with their audit entry ---- */

typedef struct {
    const char *kind, *name, *value;
    size_t len;
    audit_event ev;
} def_change;

static ms_code def_apply(void *ctx, store_write *w, ms_err *e)
{
    def_change *c = ctx;
    ms_code rc = c->value ? store_definition_put(w, c->kind, c->name, c->value, c->len, e)
                          : store_definition_delete(w, c->kind, c->name, NULL, e);
    if (rc != MS_OK) return rc;
    c->ev.time_us = store_write_time(w);
    buf m = {0};
    audit_event_json(&c->ev, &m);
    rc = store_audit_append(w, m.data, m.len, e);
    buf_free(&m);
    return rc;
}

ms_code writer_definition(writer *w, const char *kind, const char *name, const char *value, size_t len,
                          const audit_event *ev, ms_err *e)
{
    def_change c = {.kind = kind, .name = name, .value = value, .len = len, .ev = *ev};
    return writer_apply(w, def_apply, &c, e);
}
