/*
 * export.c - one export's run (see export.h): check OUT, read the records at the instant in bounded
 * steps into per-partition spools, write each partition's part files, the patients of those records,
 * audit, then the manifest, and move it all into OUT.
 *
 * DESIGN: four phases. (1) scan: store_records_scan visits chunk_records record ids per read
 * transaction (ended between steps, so LMDB can reuse pages freed meanwhile) and resumes after the last
 * id; each live version at as_of that passes the filters becomes a row (PHI: its body; public: its public
 * copy at as_of) spooled under its partition, and its patient's number is marked in a bitmap. (2) write:
 * partitions in path order, each spool read back into part files, a new part once a file passes
 * file_bytes. (3) patients: the marked patients in number order, in steps of chunk_records per read
 * transaction, each as of the instant (PHI: version and merged fields; public: the public copy). (4)
 * publish: audit (req->audit, with the patient ids for PHI), manifest written in the temporary directory,
 * then records/ and patients/ renamed into OUT and manifest.json last.
 *
 * What it must never do: make a file visible before the audit succeeded, read a public row from the PHI
 * record's body, or leave the temporary directory behind after a failure it survives.
 */
#include "export/export.h"

#include "export/layout.h"
#include "export/manifest.h"
#include "export/out_file.h"
#include "export/part.h"
#include "export/rows.h"
#include "export/spool.h"
#include "read/query.h"
#include "base/timefmt.h"

#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const export_scope_names[] = {"public", "phi", NULL};
const char *const export_format_names[] = {"parquet", "ndjson", "csv", NULL};
const char *const export_compression_names[] = {"snappy", "zstd", "none", NULL}; /* pq_codec order */

const char *export_format_ext(export_format f)
{
    return f == EXPORT_PARQUET ? ".parquet" : f == EXPORT_NDJSON ? ".ndjson" : ".csv";
}

/* What dir is that --overwrite must never replace: "a medstream data directory", "a Parquet lake" (NULL:
 * neither). */
static const char *kept_dir_kind(const char *dir)
{
    static const struct {
        const char *marker, *kind;
    } kinds[] = {{"medstream.lock", "a medstream data directory"},
                 {"lmdb/data.mdb", "a medstream data directory"},
                 {"_medstream/commits", "a Parquet lake"}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, kinds[i].marker);
        if (access(path, F_OK) == 0) return kinds[i].kind;
    }
    return NULL;
}

/* --overwrite deletes what OUT holds: never a data directory (a slip of --data for --out deleted a running
 * server's store under it) nor a lake, nor a directory holding one. */
static ms_code check_overwrite(const char *out_dir, ms_err *e)
{
    const char *kind = kept_dir_kind(out_dir);
    if (kind)
        return ms_fail(e, MS_ECONFLICT, "%s is %s: --overwrite would delete it; export into another directory", out_dir,
                       kind);
    char up[PATH_MAX];
    if (realpath(out_dir, up)) {
        for (char *slash = strrchr(up, '/'); slash && slash > up; slash = strrchr(up, '/')) {
            *slash = 0;
            if ((kind = kept_dir_kind(up)))
                return ms_fail(e, MS_ECONFLICT,
                               "%s is inside %s, %s: --overwrite would delete part of it; export into another "
                               "directory",
                               out_dir, up, kind);
        }
    }
    DIR *d = opendir(out_dir);
    if (!d) return out_errno(e, errno, "reading", out_dir);
    ms_code rc = MS_OK;
    for (struct dirent *de; rc == MS_OK && (de = readdir(d));) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char child[4200];
        snprintf(child, sizeof child, "%s/%s", out_dir, de->d_name);
        if ((kind = kept_dir_kind(child)))
            rc =
                ms_fail(e, MS_ECONFLICT, "%s holds %s (%s): --overwrite would delete it; export into another directory",
                        out_dir, kind, de->d_name);
    }
    closedir(d);
    return rc;
}

ms_code export_check_out_dir(const char *out_dir, bool overwrite, ms_err *e)
{
    struct stat st;
    if (stat(out_dir, &st) != 0) {
        if (errno == ENOENT) return MS_OK;
        return out_errno(e, errno, "reading", out_dir);
    }
    if (!S_ISDIR(st.st_mode)) return ms_fail(e, MS_EINVAL, "%s exists and is not a directory", out_dir);
    if (overwrite) return check_overwrite(out_dir, e);
    DIR *d = opendir(out_dir);
    if (!d) return out_errno(e, errno, "reading", out_dir);
    unsigned n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, EXPORT_TMP_DIR)) n++;
    closedir(d);
    if (n)
        return ms_fail(e, MS_ECONFLICT, "%s is not empty (%u entries): give --overwrite to replace them", out_dir, n);
    return MS_OK;
}

/* ---- the run's state ---- */

#define BODY_AHEAD 512 /* PHI bodies read ahead in phase 2 (~2.5 MB of 20 KB records in flight) */

typedef struct {
    record_version rv[BODY_AHEAD]; /* a ring: head is the oldest */
    size_t head, n;
} body_window;

typedef struct {
    const export_request *req;
    export_columns rcols, pcols;
    char *tmp; /* OUT/.medstream-export-tmp */
    spool_set *spool;
    row_builder rb;
    export_row row;
    buf enc, part, body;
    store_read *r;           /* the current step's read transaction */
    uint32_t schema_version; /* of the public copies read (the first step's; 0: none yet) */
    int64_t as_of;
    body_window ahead;
    uint64_t *marked; /* bitmap of patient numbers */
    size_t nmarked_words;
    manifest_file *files;
    size_t nfiles, capfiles;
    uint64_t record_rows, patient_rows, bytes;
    ms_code rc;
    ms_err *e;
} run;

static bool stopped(const run *x) { return x->req->stop && atomic_load(x->req->stop); }

/* A step's read transaction. The public copies of every step must be under one schema version (store.h,
 * "Schema versions"): a re-projection that completes during a public export fails it, to be run again. */
static ms_code step_begin(run *x)
{
    ms_code rc = store_read_begin(x->req->store, &x->r, x->e);
    if (rc != MS_OK || x->req->scope != EXPORT_PUBLIC) return rc;
    uint32_t v = store_read_schema_version(x->r);
    if (!x->schema_version) x->schema_version = v;
    if (v == x->schema_version) return MS_OK;
    store_read_end(x->r);
    x->r = NULL;
    return ms_fail(x->e, MS_ECONFLICT,
                   "the public copies were re-projected under schema version %u during the export: run it again", v);
}

static void progress_set(const run *x, export_phase ph)
{
    if (x->req->progress) atomic_store(&x->req->progress->phase, (int)ph);
}

static void progress_add(const run *x, _Atomic uint64_t *field, uint64_t n)
{
    if (x->req->progress) atomic_fetch_add(field, n);
}

static void mark(run *x, uint64_t number)
{
    size_t w = (size_t)(number / 64);
    if (w >= x->nmarked_words) {
        size_t n = x->nmarked_words ? x->nmarked_words : 1024;
        while (n <= w)
            n *= 2;
        x->marked = ms_realloc(x->marked, n * sizeof *x->marked);
        memset(x->marked + x->nmarked_words, 0, (n - x->nmarked_words) * sizeof *x->marked);
        x->nmarked_words = n;
    }
    x->marked[w] |= (uint64_t)1 << (number % 64);
}

/* ---- the spool's PHI entries: a record version (what store_record_body needs to read its body again) ---- */

/* Framed as the spool frames a row: a 4-byte big-endian length of what follows, then the fields. */
static void version_encode(const record_version *rv, buf *out)
{
    size_t at = out->len;
    buf_put_be32(out, 0);
    buf_put(out, &rv->record_id_len, sizeof rv->record_id_len);
    buf_put(out, rv->record_id, rv->record_id_len);
    buf_put(out, &rv->version, sizeof rv->version);
    buf_put(out, &rv->valid_from, sizeof rv->valid_from);
    buf_put(out, &rv->valid_to, sizeof rv->valid_to);
    buf_put(out, &rv->pid, sizeof rv->pid);
    buf_put(out, &rv->patient_number, sizeof rv->patient_number);
    buf_put(out, &rv->ts_us, sizeof rv->ts_us);
    buf_put(out, &rv->type_len, sizeof rv->type_len);
    buf_put(out, rv->type, rv->type_len);
    buf_put(out, &rv->body_pos, sizeof rv->body_pos);
    buf_put(out, &rv->body_len, sizeof rv->body_len);
    buf_put(out, &rv->body_hash, sizeof rv->body_hash);
    buf_put(out, rv->content_hash, sizeof rv->content_hash);
    buf_putc(out, rv->sealed ? 1 : 0);
    ms_set_be32(out->data + at, (uint32_t)(out->len - at - 4));
}

/* false: p is not exactly one encoded version (a damaged spool). */
static bool version_decode(const char *p, size_t n, record_version *rv)
{
    const char *end = p + n;
    memset(rv, 0, sizeof *rv);
    if (n < 4 || ms_get_be32(p) != n - 4) return false;
    p += 4;
#define TAKE(dst, len)                                                                                                 \
    do {                                                                                                               \
        if ((size_t)(end - p) < (size_t)(len)) return false;                                                           \
        memcpy((dst), p, (len));                                                                                       \
        p += (len);                                                                                                    \
    } while (0)
    TAKE(&rv->record_id_len, sizeof rv->record_id_len);
    if (rv->record_id_len > RECORD_ID_MAX) return false;
    TAKE(rv->record_id, rv->record_id_len);
    TAKE(&rv->version, sizeof rv->version);
    TAKE(&rv->valid_from, sizeof rv->valid_from);
    TAKE(&rv->valid_to, sizeof rv->valid_to);
    TAKE(&rv->pid, sizeof rv->pid);
    TAKE(&rv->patient_number, sizeof rv->patient_number);
    TAKE(&rv->ts_us, sizeof rv->ts_us);
    TAKE(&rv->type_len, sizeof rv->type_len);
    if (rv->type_len >= sizeof rv->type) return false;
    TAKE(rv->type, rv->type_len);
    TAKE(&rv->body_pos, sizeof rv->body_pos);
    TAKE(&rv->body_len, sizeof rv->body_len);
    TAKE(&rv->body_hash, sizeof rv->body_hash);
    TAKE(rv->content_hash, sizeof rv->content_hash);
    char sealed;
    TAKE(&sealed, 1);
    rv->sealed = sealed != 0;
#undef TAKE
    return p == end;
}

/* ---- phase 1: scan ---- */

static bool on_record(void *ctx, const record_version *rv)
{
    run *x = ctx;
    const export_request *q = x->req;
    if (x->req->progress) atomic_fetch_add(&x->req->progress->records_scanned, 1);
    if (stopped(x)) {
        x->rc = ms_fail(x->e, MS_ESTOPPED, "export stopped");
        return false;
    }
    if (q->type && (strlen(q->type) != rv->type_len || memcmp(q->type, rv->type, rv->type_len) != 0)) return true;
    if (rv->ts_us < q->since || rv->ts_us >= q->until) return true;
    x->enc.len = 0;
    if (q->scope == EXPORT_PHI) {
        /* The version, not its row: phase 2 reads the body again by its position, which never changes,
         * so the spool holds ~100 bytes a record instead of a copy of every body. */
        layout_phi_partition(rv->type, rv->type_len, rv->ts_us, &x->part);
        version_encode(rv, &x->enc);
    } else {
        public_record pr;
        bool found;
        x->rc = store_public_record_at(x->r, rv->record_id, rv->record_id_len, x->as_of, &pr, &found, x->e);
        if (x->rc) return false;
        if (!found || pr.deleted) return true;
        if ((x->rc = rows_public_record(&x->rb, &x->rcols, q->schema, rv, &pr, &x->row, x->e))) return false;
        layout_public_partition(q->schema, pr.fields, pr.fields_len, &x->part);
        rows_encode(&x->rcols, &x->row, &x->enc);
    }
    if ((x->rc = spool_append(x->spool, x->part.data, x->part.len, x->enc.data, x->enc.len, x->e))) return false;
    mark(x, rv->patient_number);
    x->record_rows++;
    progress_add(x, x->req->progress ? &x->req->progress->rows : NULL, 1);
    return true;
}

static ms_code scan(run *x)
{
    const export_request *q = x->req;
    uint32_t chunk = q->chunk_records ? q->chunk_records : 10000;
    buf after = {0}, last = {0};
    bool more = true;
    ms_code rc = MS_OK;
    while (more && rc == MS_OK) {
        if ((rc = step_begin(x))) break;
        rc = store_records_scan(x->r, after.data, after.len, x->as_of, chunk, on_record, x, &last, &more, x->e);
        if (rc == MS_OK) rc = x->rc;
        store_read_end(x->r);
        x->r = NULL;
        after.len = 0;
        buf_put(&after, last.data, last.len);
        if (rc == MS_OK && stopped(x)) rc = ms_fail(x->e, MS_ESTOPPED, "export stopped");
    }
    buf_free(&after);
    buf_free(&last);
    return rc;
}

/* ---- phase 2: part files ---- */

typedef struct {
    run *x;
    const export_columns *cols;
    char *dir; /* absolute directory of the partition */
    char *rel; /* its path relative to OUT */
    part_writer *w;
    uint32_t next_part;
} part_state;

static ms_code add_file(run *x, const char *rel_dir, const char *name, uint64_t rows, uint64_t bytes,
                        const unsigned char sha[32])
{
    if (x->nfiles == x->capfiles) {
        x->capfiles = x->capfiles ? x->capfiles * 2 : 64;
        x->files = ms_realloc(x->files, x->capfiles * sizeof *x->files);
    }
    buf p = {0};
    buf_printf(&p, "%s/%s", rel_dir, name);
    manifest_file *f = &x->files[x->nfiles++];
    f->path = buf_take(&p);
    f->rows = rows;
    f->bytes = bytes;
    memcpy(f->sha256, sha, 32);
    x->bytes += bytes;
    if (x->req->progress) {
        atomic_fetch_add(&x->req->progress->files, 1);
        atomic_fetch_add(&x->req->progress->bytes, bytes);
    }
    return MS_OK;
}

static ms_code part_finish(part_state *ps)
{
    if (!ps->w) return MS_OK;
    uint64_t rows, bytes;
    unsigned char sha[32];
    buf name = {0};
    layout_part_name(ps->next_part - 1, ps->x->req->format, &name);
    ms_code rc = part_close(ps->w, &rows, &bytes, sha, ps->x->e);
    ps->w = NULL;
    if (rc == MS_OK) rc = add_file(ps->x, ps->rel, name.data, rows, bytes, sha);
    buf_free(&name);
    return rc;
}

/* The partition's next part file, open in ps->w. */
static ms_code part_start(part_state *ps)
{
    run *x = ps->x;
    const export_request *q = x->req;
    buf name = {0};
    layout_part_name(ps->next_part++, q->format, &name);
    char as_of[40];
    time_format_rfc3339(x->as_of, as_of, sizeof as_of);
    const char *kv[] = {"medstream.export_id",
                        q->export_id ? q->export_id : "",
                        "medstream.scope",
                        export_scope_names[q->scope],
                        "medstream.as_of",
                        as_of,
                        NULL};
    part_options po = {.format = q->format,
                       .compression = q->compression,
                       .columns = ps->cols,
                       .row_group_bytes = q->row_group_bytes,
                       .created_by = q->created_by,
                       .key_values = kv,
                       .mode = q->scope == EXPORT_PHI ? 0600 : 0644};
    ms_code rc = part_open(&ps->w, &po, ps->dir, name.data, x->e);
    buf_free(&name);
    return rc;
}

/* A partition's end: its last part file made visible if rc is MS_OK, else removed. */
static ms_code part_end(part_state *ps, ms_code rc)
{
    if (rc == MS_OK) return part_finish(ps);
    part_abort(ps->w);
    ps->w = NULL;
    return rc;
}

static ms_code part_put(part_state *ps, const export_row *row)
{
    run *x = ps->x;
    const export_request *q = x->req;
    uint64_t cap = q->file_bytes ? q->file_bytes : ((uint64_t)1 << 30);
    ms_code rc;
    if (ps->w && part_bytes(ps->w) >= cap && (rc = part_finish(ps))) return rc;
    if (!ps->w && (rc = part_start(ps))) return rc;
    return part_row(ps->w, row, x->e);
}

/* A PHI row: the version's body read again and made a row. */
static ms_code put_version(part_state *ps, const record_version *rv, ms_err *e)
{
    run *x = ps->x;
    x->body.len = 0;
    ms_code rc = store_record_body(x->req->store, rv, &x->body, e);
    if (rc == MS_OK) rc = rows_phi_record(&x->rb, &x->rcols, x->req->schema, rv, x->body.data, x->body.len, &x->row, e);
    if (rc == MS_OK && stopped(x)) rc = ms_fail(e, MS_ESTOPPED, "export stopped");
    return rc ? rc : part_put(ps, &x->row);
}

/* PHI rows go through a window of the next BODY_AHEAD versions whose bodies are being read ahead
 * (store_record_prefetch): a partition's bodies lie apart in the segment log, and from a cold page cache
 * reading them one after another would leave the disk idle while the rows are encoded. */
static ms_code on_spooled(void *ctx, const char *row, size_t len, ms_err *e)
{
    part_state *ps = ctx;
    run *x = ps->x;
    if (x->req->scope == EXPORT_PHI) {
        body_window *bw = &x->ahead;
        record_version *rv = &bw->rv[(bw->head + bw->n) % BODY_AHEAD];
        if (!version_decode(row, len, rv)) return ms_fail(e, MS_ECORRUPT, "export: a spooled version does not decode");
        store_record_prefetch(x->req->store, rv);
        if (++bw->n < BODY_AHEAD) return MS_OK;
        ms_code rc = put_version(ps, &bw->rv[bw->head], e);
        bw->head = (bw->head + 1) % BODY_AHEAD;
        bw->n--;
        return rc;
    }
    size_t used;
    if (!rows_decode(ps->cols, row, len, &x->row, &used) || used != len)
        return ms_fail(e, MS_ECORRUPT, "export: a spooled row does not decode");
    if (stopped(x)) return ms_fail(e, MS_ESTOPPED, "export stopped");
    return part_put(ps, &x->row);
}

/* The versions still in the window at a partition's end (rc: how its spool's reading ended). */
static ms_code drain_window(part_state *ps, ms_code rc)
{
    body_window *bw = &ps->x->ahead;
    for (; rc == MS_OK && bw->n; bw->n--, bw->head = (bw->head + 1) % BODY_AHEAD)
        rc = put_version(ps, &bw->rv[bw->head], ps->x->e);
    bw->head = bw->n = 0;
    return rc;
}

static ms_code write_partitions(run *x)
{
    const char *const *paths = spool_sorted(x->spool);
    ms_code rc = MS_OK;
    for (size_t i = 0; paths[i] && rc == MS_OK; i++) {
        buf dir = {0};
        buf_printf(&dir, "%s/%s", x->tmp, paths[i]);
        part_state ps = {.x = x, .cols = &x->rcols, .dir = dir.data, .rel = (char *)paths[i]};
        rc = out_mkdirs(dir.data, x->e);
        if (rc == MS_OK) rc = spool_read(x->spool, paths[i], on_spooled, &ps, x->e);
        rc = drain_window(&ps, rc);
        rc = part_end(&ps, rc);
        buf_free(&dir);
    }
    return rc;
}

/* ---- phase 3: patients ---- */

/* A patient's row to its part file; PHI: pv's fields read from the log (their bytes asked for earlier). */
static ms_code put_patient(run *x, part_state *ps, const patient_id *pid, const patient_version *pv, const char *fields,
                           size_t len)
{
    ms_code rc = pv ? rows_patient(&x->rb, &x->pcols, x->req->schema, pid, pv->version, pv->valid_from, fields, len,
                                   &x->row, x->e)
                    : rows_patient(&x->rb, &x->pcols, x->req->schema, pid, 0, 0, fields, len, &x->row, x->e);
    if (rc == MS_OK) rc = part_put(ps, &x->row);
    if (rc == MS_OK) {
        x->patient_rows++;
        progress_add(x, x->req->progress ? &x->req->progress->rows : NULL, 1);
    }
    return rc;
}

static ms_code put_phi_patient(run *x, part_state *ps, const patient_version *pv)
{
    buf fields = {0};
    ms_code rc = query_patient_fields(x->req->store, pv, &fields, x->e);
    if (rc == MS_OK) rc = put_patient(x, ps, &pv->pid, pv, fields.data, fields.len);
    buf_free(&fields);
    return rc;
}

/* PHI patients go through a window like phase 2's: a patient's state is read (LMDB), its fields' bytes
 * are asked for (store_field_prefetch), and its row is made PATIENTS_AHEAD patients later. */
#define PATIENTS_AHEAD 256

static ms_code patient_row(run *x, part_state *ps, uint64_t number, arena *mem, patient_version *ring, size_t *n)
{
    const export_request *q = x->req;
    patient_id pid;
    store_patient_id(q->store, number, &pid);
    bool found;
    ms_code rc;
    if (q->scope == EXPORT_PHI) {
        patient_version *pv = &ring[*n % PATIENTS_AHEAD];
        rc = store_patient_at(x->r, &pid, x->as_of, pv, mem, &found, x->e);
        if (rc || !found) return rc;
        store_field_prefetch(q->store, pv->fields, pv->nfields);
        if (++*n < PATIENTS_AHEAD) return MS_OK;
        return put_phi_patient(x, ps, &ring[*n % PATIENTS_AHEAD]); /* the oldest, its slot free again */
    }
    buf fields = {0};
    rc = store_public_patient_at(x->r, &pid, x->as_of, &fields, &found, x->e);
    if (rc == MS_OK && found) rc = put_patient(x, ps, &pid, NULL, fields.data, fields.len);
    buf_free(&fields);
    return rc;
}

static ms_code write_patients(run *x)
{
    const export_request *q = x->req;
    uint32_t chunk = q->chunk_records ? q->chunk_records : 10000;
    buf dir = {0};
    buf_printf(&dir, "%s/patients", x->tmp);
    part_state ps = {.x = x, .cols = &x->pcols, .dir = dir.data, .rel = "patients"};
    ms_code rc = out_mkdirs(dir.data, x->e);
    uint64_t total = (uint64_t)x->nmarked_words * 64, number = 0;
    patient_version *ring = ms_malloc(PATIENTS_AHEAD * sizeof *ring);
    while (rc == MS_OK && number < total) {
        if ((rc = step_begin(x))) break;
        arena mem = {0};
        size_t n = 0; /* patients staged in ring this step; the last min(n, PATIENTS_AHEAD) are waiting */
        for (uint32_t k = 0; rc == MS_OK && k < chunk && number < total; number++) {
            if (!(x->marked[number / 64] >> (number % 64) & 1)) continue;
            k++;
            rc = patient_row(x, &ps, number, &mem, ring, &n);
            if (rc == MS_OK && stopped(x)) rc = ms_fail(x->e, MS_ESTOPPED, "export stopped");
        }
        /* the step's waiting patients, before its read transaction and memory go */
        for (size_t i = n >= PATIENTS_AHEAD ? n - PATIENTS_AHEAD + 1 : 0; rc == MS_OK && i < n; i++)
            rc = put_phi_patient(x, &ps, &ring[i % PATIENTS_AHEAD]);
        arena_free(&mem);
        store_read_end(x->r);
        x->r = NULL;
    }
    free(ring);
    /* an export with no patient rows still has its (empty) patients file, with its header or schema */
    if (rc == MS_OK && !ps.w) rc = part_start(&ps);
    rc = part_end(&ps, rc);
    buf_free(&dir);
    return rc;
}

/* ---- phase 4: audit, manifest, publish ---- */

static ms_code audit(run *x)
{
    const export_request *q = x->req;
    if (q->scope != EXPORT_PHI) return q->audit(q->audit_ctx, q->export_id, q->scope, NULL, 0, x->e);
    size_t n = 0, cap = 1024;
    patient_id *pids = ms_malloc(cap * sizeof *pids);
    for (uint64_t number = 0; number < (uint64_t)x->nmarked_words * 64; number++) {
        if (!(x->marked[number / 64] >> (number % 64) & 1)) continue;
        if (n == cap) pids = ms_realloc(pids, (cap *= 2) * sizeof *pids);
        store_patient_id(q->store, number, &pids[n++]);
    }
    ms_code rc = q->audit(q->audit_ctx, q->export_id, q->scope, pids, n, x->e);
    free(pids);
    return rc;
}

/* Move OUT's visible entries aside (overwrite), then the new ones in, manifest.json last. */
ms_code export_publish(const char *out_dir, const char *tmp, bool overwrite, ms_err *e)
{
    ms_code rc = MS_OK;
    buf a = {0}, b = {0};
    if (overwrite) {
        buf_printf(&a, "%s/.replaced", tmp);
        if ((rc = out_mkdirs(a.data, e))) goto out;
        DIR *d = opendir(out_dir);
        if (!d) {
            rc = out_errno(e, errno, "reading", out_dir);
            goto out;
        }
        struct dirent *de;
        while (rc == MS_OK && (de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || !strcmp(de->d_name, EXPORT_TMP_DIR)) continue;
            a.len = b.len = 0;
            buf_printf(&a, "%s/%s", out_dir, de->d_name);
            buf_printf(&b, "%s/.replaced/%s", tmp, de->d_name);
            if (rename(a.data, b.data) != 0) rc = out_errno(e, errno, "moving aside", a.data);
        }
        closedir(d);
        if (rc) goto out;
    }
    static const char *const entries[] = {"records", "patients", "manifest.json"};
    for (int i = 0; i < 3 && rc == MS_OK; i++) {
        a.len = b.len = 0;
        buf_printf(&a, "%s/%s", tmp, entries[i]);
        buf_printf(&b, "%s/%s", out_dir, entries[i]);
        struct stat st;
        if (stat(a.data, &st) != 0) continue; /* no records at all: no records/ */
        if (rename(a.data, b.data) != 0) rc = out_errno(e, errno, "moving into place", b.data);
        if (rc == MS_OK && i == 1) rc = out_fsync_dir(out_dir, e); /* the data before the manifest */
    }
    if (rc == MS_OK) rc = out_fsync_dir(out_dir, e);
out:
    buf_free(&a);
    buf_free(&b);
    return rc;
}

static ms_code write_manifest(run *x)
{
    const export_request *q = x->req;
    manifest_info m = {.export_id = q->export_id,
                       .created_by = q->created_by,
                       .snapshot_id = q->snapshot_id,
                       .as_of = x->as_of,
                       .scope = q->scope,
                       .format = q->format,
                       .type = q->type,
                       .since = q->since,
                       .until = q->until,
                       .date_key = layout_date_key(q->schema, q->scope),
                       .record_columns = &x->rcols,
                       .patient_columns = &x->pcols,
                       .record_rows = x->record_rows,
                       .patient_rows = x->patient_rows,
                       .files = x->files,
                       .nfiles = x->nfiles,
                       .schema_version = x->schema_version};
    manifest_schema_hash(q->schema, m.schema_sha256);
    buf text = {0};
    manifest_json(&m, &text);
    out_file *f;
    ms_code rc = out_open(&f, x->tmp, "manifest.json", q->scope == EXPORT_PHI ? 0600 : 0644, x->e);
    if (rc == MS_OK) {
        rc = out_write(f, text.data, text.len, x->e);
        if (rc == MS_OK)
            rc = out_finish(f, NULL, x->e);
        else
            out_abort(f);
    }
    buf_free(&text);
    return rc;
}

ms_code export_run(const export_request *req, export_result *res, ms_err *e)
{
    if (!req->audit) return ms_fail(e, MS_EINVAL, "export: no audit");
    if (req->since >= req->until) return ms_fail(e, MS_EINVAL, "since: must be before until");
    ms_code rc = export_check_out_dir(req->out_dir, req->overwrite, e);
    if (rc) return rc;
    struct stat st;
    bool created_out = stat(req->out_dir, &st) != 0;
    run x = {.req = req, .e = e};
    buf t = {0};
    buf_printf(&t, "%s/%s", req->out_dir, EXPORT_TMP_DIR);
    x.tmp = buf_take(&t);
    rows_record_columns(req->schema, req->scope, &x.rcols);
    rows_patient_columns(req->schema, req->scope, &x.pcols);
    /* a leftover of a crashed export into OUT goes first */
    if ((rc = out_mkdirs(req->out_dir, e)) || (rc = out_remove_tree(x.tmp, e))) goto out;
    buf sp = {0};
    buf_printf(&sp, "%s/.spool", x.tmp);
    rc = out_mkdirs(sp.data, e);
    spool_open(&x.spool, sp.data);
    buf_free(&sp);
    if (rc) goto out;
    x.as_of = req->as_of;
    if (x.as_of == INT64_MAX) {
        store_read *r;
        if ((rc = store_read_begin(req->store, &r, e))) goto out;
        x.as_of = store_last_commit(r);
        store_read_end(r);
    }
    if (req->scope == EXPORT_PUBLIC) { /* the version of the copies it will read (step_begin holds it) */
        store_read *r;
        if ((rc = store_read_begin(req->store, &r, e))) goto out;
        x.schema_version = store_read_schema_version(r);
        store_read_end(r);
    }
    progress_set(&x, EXPORT_PHASE_SCANNING);
    if ((rc = scan(&x))) goto out;
    progress_set(&x, EXPORT_PHASE_WRITING);
    if ((rc = write_partitions(&x))) goto out;
    progress_set(&x, EXPORT_PHASE_PATIENTS);
    if ((rc = write_patients(&x))) goto out;
    progress_set(&x, EXPORT_PHASE_PUBLISHING);
    if (stopped(&x)) {
        rc = ms_fail(e, MS_ESTOPPED, "export stopped");
        goto out;
    }
    spool_free(x.spool);
    x.spool = NULL;
    if ((rc = audit(&x)) || (rc = write_manifest(&x)) || (rc = export_publish(req->out_dir, x.tmp, req->overwrite, e)))
        goto out;
    if (res)
        *res = (export_result){.as_of = x.as_of,
                               .record_rows = x.record_rows,
                               .patient_rows = x.patient_rows,
                               .files = x.nfiles,
                               .bytes = x.bytes};
out:
    spool_free(x.spool);
    ms_err ignored;
    out_remove_tree(x.tmp, &ignored);
    if (rc && created_out) rmdir(req->out_dir);
    row_builder_free(&x.rb);
    buf_free(&x.enc);
    buf_free(&x.part);
    buf_free(&x.body);
    free(x.marked);
    for (size_t i = 0; i < x.nfiles; i++)
        free(x.files[i].path);
    free(x.files);
    free(x.tmp);
    return rc;
}
