/*
 * cmd_import.c - `medstream import FILE... (--data DIR | --url URL --token T | --kafka BROKERS --topic T)`:
 * its option table, the rules between its options, and the run over the files (import/import.h does the
 * work: this file opens the store or names the server or topic, sets up signals and turns outcomes into
 * exit codes).
 *
 * Exit codes: 0 every file read to its end, 1 one stopped (Ctrl-C, --max-rejects, an error), 2 usage.
 * Never prints a row's value (import.h's progress and summary carry counts and reason classes only).
 */
#include "commands.h"

#include "base/http_client.h"

#include "base/options.h"
#include "import/import.h"
#include "ingest/reproject.h"
#include "ingest/writer.h"
#include "pipeline/schema.h"
#include "store/store.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- `medstream import FILE... (--data DIR | --url URL --token T | --kafka BROKERS --topic T)` ---- */

/* import's settings: one field per option of its table. */
typedef struct {
    const char *data, *url, *token, *schema, *rejects, *checkpoint, *kafka, *topic;
    opt_list kafka_config;
    int format, progress; /* indexes in import_format_names (-1: by the file's name), progress_names */
    uint64_t max_record, max_rejects, batch, batch_bytes, parallel, progress_every_s;
    bool dry_run, restart;
} import_settings;

static const char *const import_format_names[] = {"ndjson", "csv", NULL};           /* in import_format's order */
static const char *const progress_names[] = {"auto", "bar", "plain", "none", NULL}; /* progress_mode's order */

/* Is the file at path (which may not exist yet) inside the directory dir, whatever links either is named
 * through? */
static bool file_inside(const char *path, const char *dir)
{
    char parent[PATH_MAX];
    ms_path_parent(path, parent, sizeof parent);
    return ms_path_inside(parent, dir);
}

/* The files import writes (cut back to their checkpointed length, then appended): never an input, which
 * would be truncated before it is read, nor a file of the data directory (the key file, LMDB's). */
static const char *written_file_check(const import_settings *c, const options_args *a, const char *flag,
                                      const char *path, char *why, size_t cap)
{
    struct stat w, in;
    for (int i = 0; i < a->npos && stat(path, &w) == 0; i++) {
        if (stat(a->pos[i], &in) == 0 && in.st_dev == w.st_dev && in.st_ino == w.st_ino) {
            snprintf(why, cap, "%s %.400s is the input file %.400s: it would be overwritten", flag, path, a->pos[i]);
            return why;
        }
    }
    if (c->data && file_inside(path, c->data)) {
        snprintf(why, cap, "%s %.400s is inside the data directory %.400s: write it elsewhere", flag, path, c->data);
        return why;
    }
    return NULL;
}

/* The rules between import's options (NULL when they hold), and each file's format into formats. */
static const char *import_check(const import_settings *c, const options_args *a, import_format *formats)
{
    static char why[1000];
    if (a->npos == 0) return "expected one or more files to import";
    int dests = !!c->data + !!c->url + !!c->kafka;
    if (c->dry_run ? dests > 1 : dests != 1)
        return "give --data DIR (offline, the server stopped), --url URL --token T (a running server) or --kafka "
               "BROKERS --topic T (a cluster's topic)";
    if (!c->url != !c->token) return "--url and --token go together";
    const char *bad_url = url_option_check(c->url);
    if (bad_url) return bad_url;
    if (!c->kafka != !c->topic) return "--kafka and --topic go together";
    if (c->kafka_config.n && !c->kafka) return "--kafka-config is for --kafka";
    if (c->checkpoint && !c->url && !c->kafka)
        return "--checkpoint is for --url and --kafka (offline, the position is kept in the store)";
    if (c->schema && c->url)
        return "--schema is for --data, --kafka and --dry-run (a server imports with its own schema)";
    if (c->rejects && a->npos > 1)
        return "--rejects names one file's reject file; with several files, each gets FILE.rejects.ndjson";
    if (c->checkpoint && a->npos > 1)
        return "--checkpoint names one file's checkpoint; with several files, each gets FILE.import-checkpoint";
    if (c->rejects && written_file_check(c, a, "--rejects", c->rejects, why, sizeof why)) return why;
    if (c->checkpoint && written_file_check(c, a, "--checkpoint", c->checkpoint, why, sizeof why)) return why;
    for (int i = 0; i < a->npos; i++) {
        if (c->format >= 0) {
            formats[i] = (import_format)c->format;
        } else if (!import_format_of(a->pos[i], &formats[i])) {
            snprintf(why, sizeof why,
                     "cannot tell the format of %.400s from its name (.csv, .ndjson, .jsonl, .json, then .gz or "
                     ".zst): give --format",
                     a->pos[i]);
            return why;
        }
    }
    return NULL;
}

static int import_run_files(const import_settings *c, const options_args *a, const import_format *formats);

int cmd_import(int argc, char **argv)
{
    import_settings c;
    /* clang-format off */
    const option opts[] = {
        {.name = "--config", .type = OPT_CONFIG, .metavar = "FILE",
         .help = "read these options from FILE, one `key = value` a line (docs/options.md)"},
        {.name = "--data", .type = OPT_STRING, .target = &c.data, .metavar = "DIR",
         .help = "import into this data directory, offline (no server may run on it: its lock is taken)"},
        {.name = "--url", .type = OPT_STRING, .target = &c.url, .metavar = "URL",
         .help = "import into the server at this http:// URL instead (with --token)"},
        {.name = "--token", .type = OPT_STRING, .target = &c.token, .metavar = "TOKEN",
         .help = "bearer token for --url (records:create; records:update for new versions)"},
        {.name = "--kafka", .type = OPT_STRING, .target = &c.kafka, .metavar = "BROKERS",
         .help = "send each good row to these Kafka brokers instead, into its shard's partition of --topic"},
        {.name = "--topic", .type = OPT_STRING, .target = &c.topic, .metavar = "TOPIC",
         .help = "--kafka: the topic a cluster consumes (its partition count a power of two)"},
        {.name = "--kafka-config", .type = OPT_LIST, .target = &c.kafka_config, .metavar = "KEY=VALUE",
         .help = "--kafka: a librdkafka setting (SASL, TLS, ...); enable.idempotence and acks=all stay"},
        {.name = "--format", .type = OPT_ENUM, .target = &c.format, .choices = import_format_names,
         .help = "the files' format (default: by name: .csv, .ndjson/.jsonl/.json, then .gz or .zst)"},
        {.name = "--rejects", .type = OPT_STRING, .target = &c.rejects, .metavar = "FILE",
         .help = "reject file (holds PHI; mode 0600); default FILE.rejects.ndjson beside the input"},
        {.name = "--checkpoint", .type = OPT_STRING, .target = &c.checkpoint, .metavar = "FILE",
         .help = "--url, --kafka: checkpoint file; default FILE.import-checkpoint beside the input"},
        {.name = "--schema", .type = OPT_STRING, .target = &c.schema, .metavar = "FILE",
         .help = "schema file (JSON), as the server of --data (or the cluster of --kafka) is run with (without it: the "
                 "default schema, refused with --data when the store's is another)"},
        {.name = "--max-record", .type = OPT_BYTES, .target = &c.max_record, .def = "1MiB", .min = 64,
         .max = (uint64_t)64 << 20, .help = "largest record; a larger row is rejected"},
        {.name = "--max-rejects", .type = OPT_UINT, .target = &c.max_rejects, .def = "none", .unlimited = "none",
         .help = "stop (checkpointed) once more rows of a file than this are rejected"},
        {.name = "--dry-run", .type = OPT_FLAG, .target = &c.dry_run,
         .help = "check every row (schema, identity) and write the reject file; store nothing"},
        {.name = "--restart", .type = OPT_FLAG, .target = &c.restart,
         .help = "read each file from its start whatever its checkpoint says (stored rows are duplicates)"},
        {.name = "--batch", .type = OPT_UINT, .target = &c.batch, .def = "1000", .min = 1, .max = 100000,
         .help = "rows per batch (one commit offline, one request with --url)"},
        {.name = "--batch-bytes", .type = OPT_BYTES, .target = &c.batch_bytes, .def = "32MiB", .min = 4096,
         .max = (uint64_t)1 << 30, .help = "a batch ends once its rows reach this many bytes"},
        {.name = "--parallel", .type = OPT_UINT, .target = &c.parallel, .def = "2", .min = 1, .max = 64,
         .help = "batches worked on at once (with --url: connections)"},
        {.name = "--progress", .type = OPT_ENUM, .target = &c.progress, .def = "auto", .choices = progress_names,
         .help = "progress on standard error: a bar (auto on a terminal), plain lines, or none"},
        {.name = "--progress-interval", .type = OPT_SECONDS, .target = &c.progress_every_s, .def = "5", .min = 1,
         .max = 3600, .help = "--progress=plain: a line this often"},
        {0},
    };
    /* clang-format on */
    const options_command cmd = {
        "import", "medstream import FILE... (--data DIR | --url URL --token T | --kafka BROKERS --topic T) [options]",
        "Import files of records: NDJSON, or CSV with a header row; plain, .gz or .zst. Offline\n"
        "(--data, taking the directory's lock), into a running server (--url), or into a cluster's\n"
        "Kafka topic (--kafka: each row to its shard's partition, keyed by the shard). Resumable: a\n"
        "rerun after a crash or Ctrl-C goes on from the checkpoint and stores nothing twice (the\n"
        "position is kept in the store, or with --url, --kafka in FILE.import-checkpoint); a rerun of a\n"
        "finished file reads it again and finds every row a duplicate. A row without a record_id\n"
        "is named by the file and its line. Bad rows go to the reject file (PHI, mode 0600) with\n"
        "line, byte offset, column and reason; the import goes on. Exit 0 when every file was\n"
        "read to its end, 1 when one stopped (Ctrl-C, --max-rejects, an error), 2 usage.",
        opts};
    options_args a;
    int code;
    if (options_parse_command(&cmd, argc, argv, 2, OPTIONS_POS_MAX, &a, stdout, stderr, &code)) {
        import_format formats[OPTIONS_POS_MAX];
        const char *bad = import_check(&c, &a, formats);
        code = bad ? usage_error("import", bad) : import_run_files(&c, &a, formats);
    }
    options_args_free(&a);
    return code;
}

static int import_run_files(const import_settings *c, const options_args *a, const import_format *formats)
{
    schema sc;
    ms_err e = {0};
    if (c->schema) {
        if (schema_load_file(&sc, c->schema, &e) != MS_OK) {
            fprintf(stderr, "medstream import: %s\n", e.msg);
            return 1;
        }
    } else {
        schema_default(&sc);
    }
    char actor[96];
    local_actor(actor, sizeof actor);
    store *s = NULL;
    writer *w = NULL;
    reprojector *rp = NULL;
    int rc = 1;
    if (c->data && !c->dry_run) {
        if (!data_dir_ready("import", c->data)) goto out;
        /* segment size 0: the directory's own; a small body cache (the writer reads state values back) */
        store_options so = {.body_cache = (uint64_t)64 << 20, .owner = "import"};
        /* its public copies are under the store's schema versions, as serve's: a changed schema starts (or
         * resumes) the re-projection here, and the next serve goes on from where this run leaves it */
        reproject_options ro = {.store = s, .writer = w, .schema = &sc, .schema_file = c->schema, .run = true};
        if (store_open(&s, c->data, &so, &e) != MS_OK) {
            fprintf(stderr, "medstream import: %s\n", e.msg);
            goto out;
        }
        /* without --schema, never the default in place of the store's own (it would be a schema change) */
        if (!c->schema && !store_schema_is_default(
                              s, "import", "this import would re-project every public copy under the default schema"))
            goto out;
        if (writer_start(&w, s, &sc, &e) != MS_OK ||
            (ro.store = s, ro.writer = w, reproject_start(&rp, &ro, &e)) != MS_OK) {
            fprintf(stderr, "medstream import: %s\n", e.msg);
            goto out;
        }
    }
    /* SIGINT, SIGTERM: stop at the next batch boundary (checkpointed); a second one ends the process at
     * once, which is safe too: the next run goes on from the last checkpoint. */
    stop_on_signals();
    import_options o = {.store = s,
                        .writer = w,
                        .url = c->dry_run ? NULL : c->url,
                        .kafka_brokers = c->dry_run ? NULL : c->kafka,
                        .kafka_topic = c->topic,
                        .kafka_config = c->kafka_config.v,
                        .token = c->token,
                        .dry_run = c->dry_run,
                        .schema = &sc,
                        .max_record = (size_t)c->max_record,
                        .actor = actor,
                        .rejects_path = c->rejects,
                        .checkpoint_path = c->checkpoint,
                        .restart = c->restart,
                        .max_rejects = c->max_rejects,
                        .batch_rows = c->batch,
                        .batch_bytes = c->batch_bytes,
                        .parallel = (unsigned)c->parallel,
                        .progress = (progress_mode)c->progress,
                        .progress_every_s = (double)c->progress_every_s,
                        .out = stdout,
                        .err = stderr,
                        .stop = &command_stop};
    rc = 0;
    for (int i = 0; i < a->npos; i++) {
        import_result res;
        if (import_file(&o, a->pos[i], formats[i], &res, &e) != MS_OK)
            fprintf(stderr, "medstream import: %s: %s\n", a->pos[i], e.msg);
        if (res.outcome != IMPORT_DONE) rc = 1;
        if (res.outcome == IMPORT_INTERRUPTED || atomic_load(&command_stop)) break;
    }
out:
    writer_stop(w);     /* what is queued is committed */
    reproject_stop(rp); /* its cursor is in the store */
    store_close(s);
    schema_free(&sc);
    return rc;
}
