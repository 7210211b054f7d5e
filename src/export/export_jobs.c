/*
 * export_jobs.c - background exports of the server (see export_jobs.h).
 *
 * DESIGN: a list of jobs under one mutex and one worker thread that takes the oldest queued job, runs
 * export_run into DATA/exports/<id> outside the lock (progress in atomics the status reads), archives
 * it, and marks it done or failed. The stop flag of export_run is the jobs' own: export_jobs_stop sets
 * it, so a running export cleans up and the thread ends.
 */
#include "export/export_jobs.h"

#include "export/out_file.h"
#include "export/tar.h"
#include "base/json_write.h"
#include "base/timefmt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED } job_state;
static const char *const state_names[] = {"queued", "running", "done", "failed"};
#define WITHDRAWN "withdrawn: a patient it held was erased (export again)"
static const char *const phase_names[] = {"queued", "scanning", "writing", "patients", "publishing"};

typedef struct job {
    char id[24];
    export_job_spec spec;
    char *snapshot_id, *type, *user, *role, *client;
    job_state state;
    export_progress progress;
    export_result result;
    char error[240];
    bool withdrawn; /* a patient it may hold was erased while it ran (export_jobs_withdraw) */
    struct job *next;
} job;

struct export_jobs {
    export_jobs_options o;
    char *dir;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    job *jobs; /* oldest first */
    atomic_bool stop;
};

static char *dup_or_null(const char *s) { return s ? ms_strndup(s, strlen(s)) : NULL; }

static void job_paths(const export_jobs *j, const job *jb, buf *dir, buf *tar)
{
    if (dir) buf_printf(dir, "%s/%s", j->dir, jb->id);
    if (tar) buf_printf(tar, "%s/%s.tar", j->dir, jb->id);
}

/* A job's memory (its files are job_free's). */
static void job_release(job *jb)
{
    free(jb->snapshot_id);
    free(jb->type);
    free(jb->user);
    free(jb->role);
    free(jb->client);
    free(jb);
}

/* A job's directory and archive, removed. */
static void job_remove_files(export_jobs *j, job *jb)
{
    buf d = {0}, t = {0};
    job_paths(j, jb, &d, &t);
    ms_err ignored;
    out_remove_tree(d.data, &ignored);
    unlink(t.data);
    buf_free(&d);
    buf_free(&t);
}

static void job_free(export_jobs *j, job *jb)
{
    job_remove_files(j, jb);
    job_release(jb);
}

typedef struct {
    export_jobs *j;
    job *jb;
} audit_ctx;

static ms_code job_audit(void *ctx, const char *export_id, export_scope scope, const patient_id *pids, size_t n,
                         ms_err *e)
{
    audit_ctx *a = ctx;
    return a->j->o.audit(a->j->o.audit_ctx, a->jb->user, a->jb->role, a->jb->client, export_id, scope, pids, n, e);
}

static void run_job(export_jobs *j, job *jb)
{
    buf dir = {0};
    job_paths(j, jb, &dir, NULL);
    audit_ctx ac = {j, jb};
    export_request req = {.store = j->o.store,
                          .schema = j->o.schema,
                          .out_dir = dir.data,
                          .export_id = jb->id,
                          .scope = jb->spec.scope,
                          .format = jb->spec.format,
                          .compression = jb->spec.compression,
                          .as_of = jb->spec.as_of,
                          .snapshot_id = jb->snapshot_id,
                          .type = jb->type,
                          .since = jb->spec.since,
                          .until = jb->spec.until,
                          .created_by = j->o.created_by,
                          .audit = job_audit,
                          .audit_ctx = &ac,
                          .stop = &j->stop,
                          .progress = &jb->progress};
    ms_err e = {0};
    export_result res;
    ms_code rc = export_run(&req, &res, &e);
    if (rc == MS_OK) {
        buf name = {0};
        buf_printf(&name, "%s.tar", jb->id);
        rc = tar_write_dir(dir.data, j->dir, name.data, &e);
        buf_free(&name);
    }
    pthread_mutex_lock(&j->mu);
    if (jb->withdrawn) {
        job_remove_files(j, jb);
        snprintf(jb->error, sizeof jb->error, "%s", WITHDRAWN);
        jb->state = JOB_FAILED;
    } else if (rc == MS_OK) {
        jb->result = res;
        jb->state = JOB_DONE;
    } else {
        snprintf(jb->error, sizeof jb->error, "%s", e.msg);
        jb->state = JOB_FAILED;
    }
    pthread_mutex_unlock(&j->mu);
    buf_free(&dir);
}

uint32_t export_jobs_withdraw(export_jobs *j)
{
    uint32_t n = 0;
    pthread_mutex_lock(&j->mu);
    for (job *jb = j->jobs; jb; jb = jb->next) {
        if (jb->state == JOB_RUNNING) {
            jb->withdrawn = true; /* run_job removes its files when it ends */
            n++;
        }
        if (jb->state != JOB_DONE) continue;
        n++;
        job_remove_files(j, jb);
        snprintf(jb->error, sizeof jb->error, "%s", WITHDRAWN);
        jb->state = JOB_FAILED;
    }
    pthread_mutex_unlock(&j->mu);
    return n;
}

static void *worker(void *arg)
{
    export_jobs *j = arg;
    pthread_mutex_lock(&j->mu);
    while (!atomic_load(&j->stop)) {
        job *next = NULL;
        for (job *jb = j->jobs; jb && !next; jb = jb->next)
            if (jb->state == JOB_QUEUED) next = jb;
        if (!next) {
            pthread_cond_wait(&j->cv, &j->mu);
            continue;
        }
        next->state = JOB_RUNNING;
        pthread_mutex_unlock(&j->mu);
        run_job(j, next);
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

ms_code export_jobs_remove_left(const char *data_dir, uint32_t *removed, ms_err *e)
{
    buf d = {0};
    buf_printf(&d, "%s/exports", data_dir);
    uint32_t n = 0;
    DIR *dir = opendir(d.data);
    if (dir) { /* an export is its directory, its archive, or both (killed while archiving): counted once */
        for (struct dirent *de; (de = readdir(dir));) {
            size_t len = strlen(de->d_name);
            bool tar = len > 4 && strcmp(de->d_name + len - 4, ".tar") == 0;
            if (strncmp(de->d_name, "exp_", 4) != 0) continue;
            if (!tar) {
                n++;
            } else {
                buf twin = {0};
                buf_printf(&twin, "%s/%.*s", d.data, (int)(len - 4), de->d_name);
                struct stat st;
                if (lstat(twin.data, &st) != 0) n++;
                buf_free(&twin);
            }
        }
        closedir(dir);
    }
    ms_code rc = out_remove_tree(d.data, e);
    buf_free(&d);
    if (removed) *removed = rc == MS_OK ? n : 0;
    return rc;
}

ms_code export_jobs_start(export_jobs **out, const export_jobs_options *o, ms_err *e)
{
    export_jobs *j = ms_calloc(1, sizeof *j);
    j->o = *o;
    if (!j->o.keep) j->o.keep = 8;
    if (!j->o.link_ttl_s) j->o.link_ttl_s = 300;
    buf d = {0};
    buf_printf(&d, "%s/exports", o->data_dir);
    j->dir = buf_take(&d);
    ms_code rc = export_jobs_remove_left(o->data_dir, NULL, e); /* earlier runs': their links died with them */
    if (rc == MS_OK) rc = out_mkdirs(j->dir, e);
    if (rc) {
        free(j->dir);
        free(j);
        return rc;
    }
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    if (pthread_create(&j->thread, NULL, worker, j) != 0) {
        free(j->dir);
        free(j);
        return ms_fail(e, MS_EIO, "exports: cannot start a thread");
    }
    *out = j;
    return MS_OK;
}

void export_jobs_stop(export_jobs *j)
{
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    atomic_store(&j->stop, true);
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    pthread_join(j->thread, NULL);
    while (j->jobs) {
        job *n = j->jobs->next;
        job_free(j, j->jobs);
        j->jobs = n;
    }
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j->dir);
    free(j);
}

ms_code export_jobs_submit(export_jobs *j, const export_job_spec *s, char id[24], ms_err *e)
{
    unsigned char rnd[8];
    if (RAND_bytes(rnd, sizeof rnd) != 1) return ms_fail(e, MS_EIO, "random number generator failed");
    job *jb = ms_calloc(1, sizeof *jb);
    snprintf(jb->id, sizeof jb->id, "exp_%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4],
             rnd[5], rnd[6], rnd[7]);
    jb->spec = *s;
    jb->snapshot_id = dup_or_null(s->snapshot_id);
    jb->type = dup_or_null(s->type);
    jb->user = dup_or_null(s->user ? s->user : "");
    jb->role = dup_or_null(s->role ? s->role : "");
    jb->client = dup_or_null(s->client ? s->client : "");
    pthread_mutex_lock(&j->mu);
    uint32_t n = 0;
    for (job *x = j->jobs; x; x = x->next)
        n++;
    while (n >= j->o.keep) { /* push out the oldest finished export */
        job **pp = &j->jobs;
        while (*pp && (*pp)->state != JOB_DONE && (*pp)->state != JOB_FAILED)
            pp = &(*pp)->next;
        if (!*pp) break;
        job *old = *pp;
        *pp = old->next;
        job_free(j, old);
        n--;
    }
    if (n >= j->o.keep) {
        pthread_mutex_unlock(&j->mu);
        job_release(jb);
        return ms_fail(e, MS_ESTOPPED, "%u exports are queued or running: try again once one is done", n);
    }
    job **tail = &j->jobs;
    while (*tail)
        tail = &(*tail)->next;
    *tail = jb;
    memcpy(id, jb->id, sizeof jb->id);
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return MS_OK;
}

void export_link_sign(const unsigned char id_key[32], const char *id, int64_t exp, char hex[65])
{
    static const char label[] = "medstream export link";
    unsigned char k[32], d[32];
    unsigned int kl = 32, dl = 32;
    HMAC(EVP_sha256(), id_key, 32, (const unsigned char *)label, sizeof label - 1, k, &kl);
    char msg[96];
    int n = snprintf(msg, sizeof msg, "%s\n%lld", id, (long long)exp);
    HMAC(EVP_sha256(), k, 32, (const unsigned char *)msg, (size_t)n, d, &dl);
    out_hex(d, 32, hex);
}

static job *find(export_jobs *j, const char *id)
{
    for (job *jb = j->jobs; jb; jb = jb->next)
        if (strcmp(jb->id, id) == 0) return jb;
    return NULL;
}

static void put_time_or_null(buf *out, int64_t us)
{
    if (us == INT64_MIN || us == INT64_MAX)
        buf_puts(out, "null");
    else
        jw_time(out, us);
}

ms_code export_jobs_status(export_jobs *j, const char *id, bool full, buf *out, export_scope *scope, ms_err *e)
{
    pthread_mutex_lock(&j->mu);
    job *jb = find(j, id);
    if (!jb) {
        pthread_mutex_unlock(&j->mu);
        return ms_fail(e, MS_ENOTFOUND, "no such export (exports are kept while the server runs, %u at most)",
                       j->o.keep);
    }
    *scope = jb->spec.scope;
    buf_puts(out, "{\"export_id\":");
    jw_cstr(out, jb->id);
    buf_puts(out, ",\"state\":");
    jw_cstr(out, state_names[jb->state]);
    int ph = atomic_load(&jb->progress.phase);
    buf_puts(out, ",\"phase\":");
    jw_cstr(out, jb->state == JOB_DONE ? "done" : phase_names[ph >= 0 && ph <= 4 ? ph : 0]);
    buf_puts(out, ",\"scope\":");
    jw_cstr(out, export_scope_names[jb->spec.scope]);
    buf_puts(out, ",\"format\":");
    jw_cstr(out, export_format_names[jb->spec.format]);
    buf_puts(out, ",\"compression\":");
    jw_cstr(out, export_compression_names[jb->spec.compression]);
    buf_puts(out, ",\"as_of\":");
    put_time_or_null(out, jb->spec.as_of);
    buf_puts(out, ",\"snapshot_id\":");
    if (jb->snapshot_id)
        jw_cstr(out, jb->snapshot_id);
    else
        buf_puts(out, "null");
    buf_printf(out,
               ",\"records_scanned\":%llu,\"rows\":%llu,\"files_written\":%llu,\"bytes\":%llu,\"record_rows\":%llu,"
               "\"patient_rows\":%llu,\"error\":",
               (unsigned long long)atomic_load(&jb->progress.records_scanned),
               (unsigned long long)atomic_load(&jb->progress.rows),
               (unsigned long long)atomic_load(&jb->progress.files),
               (unsigned long long)atomic_load(&jb->progress.bytes), (unsigned long long)jb->result.record_rows,
               (unsigned long long)jb->result.patient_rows);
    if (jb->state == JOB_FAILED)
        jw_cstr(out, jb->error);
    else
        buf_puts(out, "null");
    buf_puts(out, ",\"download\":");
    if (jb->state == JOB_DONE && full) {
        int64_t exp = ms_now_us() / 1000000 + j->o.link_ttl_s;
        char sig[65];
        export_link_sign(store_id_key(j->o.store), jb->id, exp, sig);
        buf_printf(out, "\"/v1/exports/%s/download?exp=%lld&sig=%s\",\"download_expires_at\":", jb->id, (long long)exp,
                   sig);
        jw_time(out, exp * 1000000);
    } else {
        buf_puts(out, "null,\"download_expires_at\":null");
    }
    buf_puts(out, ",\"manifest\":");
    buf man = {0};
    ms_err ignored;
    if (jb->state == JOB_DONE && full) {
        buf p = {0};
        job_paths(j, jb, &p, NULL);
        buf_puts(&p, "/manifest.json");
        if (buf_read_file(&man, p.data, &ignored) != MS_OK) man.len = 0;
        buf_free(&p);
        while (man.len && (man.data[man.len - 1] == '\n'))
            man.len--;
    }
    if (man.len)
        buf_put(out, man.data, man.len);
    else
        buf_puts(out, "null");
    buf_free(&man);
    buf_putc(out, '}');
    pthread_mutex_unlock(&j->mu);
    return MS_OK;
}

ms_code export_jobs_download(export_jobs *j, const char *id, const char *exp, const char *sig, int *fd, uint64_t *size,
                             export_scope *scope, char user[72], ms_err *e)
{
    char want[65];
    char *end;
    long long x = strtoll(exp ? exp : "", &end, 10);
    if (!exp || !*exp || *end || !sig || strlen(sig) != 64 || strlen(id) > 40)
        return ms_fail(e, MS_EINVAL, "download link: exp and sig are required (ask GET /v1/exports/{id} for a link)");
    export_link_sign(store_id_key(j->o.store), id, x, want);
    if (CRYPTO_memcmp(want, sig, 64) != 0) return ms_fail(e, MS_EINVAL, "download link: bad signature");
    if (x < ms_now_us() / 1000000)
        return ms_fail(e, MS_EINVAL, "download link: expired (ask GET /v1/exports/{id} for a new one)");
    pthread_mutex_lock(&j->mu);
    job *jb = find(j, id);
    ms_code rc = MS_OK;
    if (!jb || jb->state != JOB_DONE) {
        rc = ms_fail(e, MS_ENOTFOUND, "no such finished export");
    } else {
        buf t = {0};
        job_paths(j, jb, NULL, &t);
        *fd = open(t.data, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (*fd < 0 || fstat(*fd, &st) != 0) {
            rc = out_errno(e, errno, "opening", "the export's archive");
            if (*fd >= 0) close(*fd);
            *fd = -1;
        } else {
            *size = (uint64_t)st.st_size;
            *scope = jb->spec.scope;
            snprintf(user, 72, "%s", jb->user);
        }
        buf_free(&t);
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}
