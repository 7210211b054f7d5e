/*
 * cmd_export.c - `medstream export (--data DIR | --url URL --token T) --out DIR --format F`: its option
 * table, the rules between its options, the offline run (the store opened under its lock as owner
 * "export", the audit entry written as the OS user) and the run through a server (export/from_server.h).
 * export/export.h does the work; this file turns its outcomes into exit codes: 0 done, 1 failed or
 * stopped (nothing of it visible in OUT), 2 usage.
 *
 * Never prints a record's value: messages name paths, fields and counts.
 */
#include "commands.h"

#include "base/http_client.h"

#include "access/audit.h"
#include "base/options.h"
#include "base/timefmt.h"
#include "export/export.h"
#include "export/from_server.h"
#include "pipeline/schema.h"
#include "store/store.h"

#include <malloc.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- `medstream export (--data DIR | --url URL --token T) --out DIR --format F` ---- */

typedef struct {
    const char *data, *url, *token, *out, *schema, *as_of, *type, *since, *until;
    int format, scope, compression;
    bool overwrite;
    uint64_t chunk_records, file_bytes, row_group_bytes, poll_ms;
} export_settings;

/* "exp_" and 16 random hex digits. */
static void export_new_id(char out[24])
{
    unsigned char rnd[8] = {0};
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        uint64_t seed = (uint64_t)ms_now_us() ^ ((uint64_t)getpid() << 32);
        uint64_t x = ms_splitmix64(&seed);
        memcpy(rnd, &x, 8);
    }
    snprintf(out, 24, "exp_%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6],
             rnd[7]);
}

/* --since/--until: an RFC 3339 time (PHI), or a year YYYY (public: the public copy keeps years, and a
 * finer bound would reveal exact event times by bisection). until is exclusive; a year bound covers it. */
static bool export_time_bound(const char *v, bool year_only, bool upper, int64_t *out)
{
    if (!v) return true;
    size_t n = strlen(v);
    if (n == 4 && strspn(v, "0123456789") == 4) {
        int y = atoi(v) + (upper ? 1 : 0);
        *out = days_from_civil(y, 1, 1) * 86400000000LL;
        return true;
    }
    return !year_only && time_parse_rfc3339(v, n, out);
}

static const char *export_check(const export_settings *c)
{
    if (!c->data == !c->url) return "give --data DIR (offline) or --url URL --token T (a running server)";
    if (!c->url != !c->token) return "--url and --token go together";
    const char *bad_url = url_option_check(c->url);
    if (bad_url) return bad_url;
    if (c->schema && c->url) return "--schema is for --data (a server exports with its own schema)";
    if (c->as_of && c->scope == EXPORT_PUBLIC && strncmp(c->as_of, "snap_", 5) != 0)
        return "--as-of: a public export takes a snapshot id (POST /v1/snapshots), not a time";
    int64_t t;
    if (c->as_of && strncmp(c->as_of, "snap_", 5) != 0 && !time_parse_rfc3339(c->as_of, strlen(c->as_of), &t))
        return "--as-of: expected an RFC 3339 time (2026-11-29T12:00:00Z) or a snapshot id (snap_...)";
    bool years = c->scope == EXPORT_PUBLIC;
    if (!export_time_bound(c->since, years, false, &t) || !export_time_bound(c->until, years, true, &t))
        return years ? "--since/--until: a public export takes years (YYYY)"
                     : "--since/--until: expected an RFC 3339 time or a year (YYYY)";
    return NULL;
}

/* The offline export's audit entries: the OS user as local:USER, the patient ids a thousand an entry, all
 * in one commit before anything is made visible. */
typedef struct {
    store *s;
    const char *actor;
} export_audit_offline;

static ms_code export_audit_local(void *ctx, const char *export_id, export_scope scope, const patient_id *pids,
                                  size_t npids, ms_err *e)
{
    export_audit_offline *a = ctx;
    store_write *w;
    ms_code rc = store_write_begin(a->s, &w, e);
    if (rc) return rc;
    char resource[96];
    snprintf(resource, sizeof resource, "export %s %s", export_id, export_scope_names[scope]);
    size_t at = 0;
    do {
        size_t n = npids - at > 1000 ? 1000 : npids - at;
        audit_event ev = {.time_us = ms_now_us(),
                          .user = a->actor,
                          .role = "",
                          .action = scope == EXPORT_PHI ? "patients:read" : "exports:create",
                          .resource = resource,
                          .outcome = "ok",
                          .client = "cli",
                          .patients = pids + at,
                          .npatients = (uint32_t)n};
        buf m = {0};
        audit_event_json(&ev, &m);
        rc = store_audit_append(w, m.data, m.len, e);
        buf_free(&m);
        at += n;
    } while (rc == MS_OK && at < npids);
    if (rc) {
        store_write_abort(w);
        return rc;
    }
    return store_write_commit(w, NULL, e);
}

static int export_offline(const export_settings *c)
{
    if (!data_dir_ready("export", c->data)) return 1;
    /* An export builds a Parquet row group or a part file's buffers of tens of MiB per partition, one
     * partition after another. glibc would map and unmap each (and fault its pages in afresh); kept in
     * the heap they are reused: 11 % less wall time measured on a 4 GB export (README, Performance). */
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    ms_err e = {0};
    if (export_check_out_dir(c->out, c->overwrite, &e) != MS_OK) {
        fprintf(stderr, "medstream export: %s\n", e.msg);
        return 1;
    }
    schema sc;
    if (c->schema) {
        if (schema_load_file(&sc, c->schema, &e) != MS_OK) {
            fprintf(stderr, "medstream export: %s\n", e.msg);
            return 1;
        }
    } else {
        schema_default(&sc);
    }
    store *s = NULL;
    int code = 1;
    /* the lock: the export writes its audit entries into the store (a server running on DIR refuses it:
     * export through that server with --url) */
    store_options so = {.body_cache = (uint64_t)16 << 20, .owner = "export"};
    if (store_open(&s, c->data, &so, &e) != MS_OK) {
        fprintf(stderr, "medstream export: %s%s\n", e.msg,
                e.code == MS_ECONFLICT ? " (export through that server with --url URL --token T)" : "");
        schema_free(&sc);
        return 1;
    }
    /* without --schema, never the default in place of the store's own: partitions and columns would not be
     * those of its public copies */
    if (!c->schema &&
        !store_schema_is_default(s, "export", "the files would be laid out and columned by the default schema"))
        goto out;
    char id[24], actor[96];
    export_new_id(id);
    local_actor(actor, sizeof actor);
    export_audit_offline aud = {s, actor};
    export_request req = {.store = s,
                          .schema = &sc,
                          .out_dir = c->out,
                          .export_id = id,
                          .scope = (export_scope)c->scope,
                          .format = (export_format)c->format,
                          .compression = c->compression,
                          .as_of = INT64_MAX,
                          .type = c->type,
                          .since = INT64_MIN,
                          .until = INT64_MAX,
                          .overwrite = c->overwrite,
                          .chunk_records = (uint32_t)c->chunk_records,
                          .file_bytes = c->file_bytes,
                          .row_group_bytes = c->row_group_bytes,
                          .created_by = "medstream version " VERSION,
                          .audit = export_audit_local,
                          .audit_ctx = &aud,
                          .stop = &command_stop};
    bool years = c->scope == EXPORT_PUBLIC;
    export_time_bound(c->since, years, false, &req.since);
    export_time_bound(c->until, years, true, &req.until);
    if (c->as_of && strncmp(c->as_of, "snap_", 5) == 0) {
        store_read *r;
        bool found = false;
        if (store_read_begin(s, &r, &e) == MS_OK) {
            store_snapshot_get(r, c->as_of, &req.as_of, &found, &e);
            store_read_end(r);
        }
        if (!found) {
            fprintf(stderr, "medstream export: --as-of: no such snapshot\n");
            goto out;
        }
        req.snapshot_id = c->as_of;
    } else if (c->as_of) {
        time_parse_rfc3339(c->as_of, strlen(c->as_of), &req.as_of);
        /* an instant still to come may yet get commits (once this export lets go of the lock): waited for when
         * it is at most a second ahead, refused further ahead, as the server's reads and exports do */
        store_read *r;
        ms_code rc = store_read_begin(s, &r, &e);
        if (rc == MS_OK) {
            rc = store_read_settle(r, req.as_of, &e);
            store_read_end(r);
        }
        if (rc != MS_OK) {
            fprintf(stderr, "medstream export: --as-of: %s\n", e.msg);
            if (rc == MS_EINVAL) code = 2;
            goto out;
        }
    }
    /* SIGINT, SIGTERM: stop at the next row and remove what was written; a second one ends the process at
     * once (the hidden temporary directory is then removed by the next export into OUT). */
    stop_on_signals();
    double t0 = ms_mono_s();
    export_result res;
    if (export_run(&req, &res, &e) != MS_OK) {
        fprintf(stderr, "medstream export: %s%s\n", e.msg,
                e.code == MS_ESTOPPED ? " (interrupted: nothing was written to the output directory)" : "");
        goto out;
    }
    char when[40];
    time_format_rfc3339(res.as_of, when, sizeof when);
    printf("export %s of %s into %s: %llu records and %llu patients in %llu files, %llu bytes, as of %s (%s, %s), "
           "%.1f s\n",
           id, c->data, c->out, (unsigned long long)res.record_rows, (unsigned long long)res.patient_rows,
           (unsigned long long)res.files, (unsigned long long)res.bytes, when, export_scope_names[c->scope],
           export_format_names[c->format], ms_mono_s() - t0);
    code = 0;
out:
    store_close(s);
    schema_free(&sc);
    return code;
}

static int export_online(const export_settings *c)
{
    ms_err e = {0};
    if (export_check_out_dir(c->out, c->overwrite, &e) != MS_OK) {
        fprintf(stderr, "medstream export: %s\n", e.msg);
        return 1;
    }
    /* SIGINT, SIGTERM: stop at the next row and remove what was written; a second one ends the process at
     * once (the hidden temporary directory is then removed by the next export into OUT). */
    stop_on_signals();
    export_client_request r = {.url = c->url,
                               .token = c->token,
                               .out_dir = c->out,
                               .overwrite = c->overwrite,
                               .scope = export_scope_names[c->scope],
                               .format = export_format_names[c->format],
                               .compression = export_compression_names[c->compression],
                               .as_of = c->as_of,
                               .type = c->type,
                               .since = c->since,
                               .until = c->until,
                               .poll_ms = (unsigned)c->poll_ms,
                               .stop = &command_stop,
                               .progress = isatty(2) ? stderr : NULL};
    export_client_result res;
    double t0 = ms_mono_s();
    if (export_from_server(&r, &res, &e) != MS_OK) {
        fprintf(stderr, "medstream export: %s\n", e.msg);
        return 1;
    }
    printf("export %s from %s into %s: %llu records and %llu patients in %llu files, %llu bytes, as of %s (%s, %s), "
           "%.1f s\n",
           res.export_id, c->url, c->out, (unsigned long long)res.record_rows, (unsigned long long)res.patient_rows,
           (unsigned long long)res.files, (unsigned long long)res.bytes, res.as_of, export_scope_names[c->scope],
           export_format_names[c->format], ms_mono_s() - t0);
    return 0;
}

int cmd_export(int argc, char **argv)
{
    export_settings c;
    /* clang-format off */
    const option opts[] = {
        {.name = "--config", .type = OPT_CONFIG, .metavar = "FILE",
         .help = "read these options from FILE, one `key = value` a line (docs/options.md)"},
        {.name = "--data", .type = OPT_STRING, .target = &c.data, .metavar = "DIR",
         .help = "export from this data directory, offline (no server may run on it: its lock is taken)"},
        {.name = "--url", .type = OPT_STRING, .target = &c.url, .metavar = "URL",
         .help = "export through the server at this http:// URL instead (POST /v1/exports; with --token)"},
        {.name = "--token", .type = OPT_STRING, .target = &c.token, .metavar = "TOKEN",
         .help = "bearer token for --url (exports:create; a phi export needs patients:read too)"},
        {.name = "--out", .type = OPT_STRING, .target = &c.out, .required = true, .metavar = "DIR",
         .help = "output directory: absent or empty (or --overwrite); files appear there only once complete"},
        {.name = "--format", .type = OPT_ENUM, .target = &c.format, .required = true,
         .choices = export_format_names, .help = "file format"},
        {.name = "--compression", .type = OPT_ENUM, .target = &c.compression, .def = "snappy",
         .choices = export_compression_names, .help = "Parquet compression: snappy (read everywhere), zstd (smaller) or none"},
        {.name = "--scope", .type = OPT_ENUM, .target = &c.scope, .def = "public", .choices = export_scope_names,
         .help = "public: the allow-listed fields after their transforms; phi: everything (audited)"},
        {.name = "--as-of", .type = OPT_STRING, .target = &c.as_of, .metavar = "TIME|SNAPSHOT",
         .help = "the instant: an RFC 3339 time or a snapshot id (public: a snapshot id); default the last commit"},
        {.name = "--type", .type = OPT_STRING, .target = &c.type, .metavar = "TYPE",
         .help = "only records of this type"},
        {.name = "--since", .type = OPT_STRING, .target = &c.since, .metavar = "TIME|YYYY",
         .help = "only records whose event time is at or after this (public: a year)"},
        {.name = "--until", .type = OPT_STRING, .target = &c.until, .metavar = "TIME|YYYY",
         .help = "only records whose event time is before this time, or in or before this year"},
        {.name = "--overwrite", .type = OPT_FLAG, .target = &c.overwrite,
         .help = "replace what the output directory holds, once the new export is complete (never a data "
                 "directory or a lake, nor a directory holding or inside one)"},
        {.name = "--schema", .type = OPT_STRING, .target = &c.schema, .metavar = "FILE",
         .help = "schema file (JSON), as the server of --data is run with (without it: the default schema, refused "
                 "when the store's is another)"},
        {.name = "--chunk-records", .type = OPT_UINT, .target = &c.chunk_records, .def = "10000", .min = 1,
         .max = 10000000, .help = "record ids read per LMDB read transaction (--data)"},
        {.name = "--file-bytes", .type = OPT_BYTES, .target = &c.file_bytes, .def = "1GiB", .min = 4096,
         .help = "start another part file of a partition past this size (--data)"},
        {.name = "--row-group-bytes", .type = OPT_BYTES, .target = &c.row_group_bytes, .def = "128MiB",
         .min = 65536, .help = "Parquet row group size (--data)"},
        {.name = "--poll-interval", .type = OPT_MILLIS, .target = &c.poll_ms, .def = "200", .min = 10,
         .max = 60000, .help = "--url: how often the export's progress is asked for"},
        {0},
    };
    /* clang-format on */
    const options_command cmd = {
        "export", "medstream export (--data DIR | --url URL --token T) --out DIR --format F [options]",
        "Export the records and their patients as of one instant into DIR: Hive-style partitions\n"
        "records/type=T/date=YYYY-MM-DD/part-00000.EXT (public: the date no finer than the schema\n"
        "publishes, e.g. year=YYYY), patients/part-00000.EXT and manifest.json (rows, bytes, sha256\n"
        "of every file). Everything is written under DIR/.medstream-export-tmp and moved into DIR\n"
        "at the end: a failed or interrupted export leaves nothing visible. Offline (--data, taking\n"
        "the directory's lock: the export's audit entry is written into the store) or through a\n"
        "running server (--url: POST /v1/exports, progress polled, the archive downloaded).",
        opts};
    options_args a;
    int code;
    if (options_parse_command(&cmd, argc, argv, 2, 0, &a, stdout, stderr, &code)) {
        const char *bad = export_check(&c);
        code = bad ? usage_error("export", bad) : c.data ? export_offline(&c) : export_online(&c);
    }
    options_args_free(&a);
    return code;
}
