/*
 * main.c - the medstream command line: init, serve, bench. Each command has one option table
 * (options.h) from which its --help comes. Exit codes: 0 ok, 1 runtime failure, 2 usage.
 *
 * This file wires the parts together and owns process concerns (signals, exit codes); it holds no
 * pipeline logic.
 */
#include "access.h"
#include "api_routes.h"
#include "bench.h"
#include "http_server.h"
#include "ingest_kafka.h"
#include "sink_kafka_public.h"
#include "sink_postgres.h"
#include "metrics.h"
#include "options.h"
#include "preload.h"
#include "schema.h"
#include "store.h"
#include "users.h"
#include "writer.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VERSION "0.1.0"

static char *read_text_file(const char *path, ms_err *e);

/* Load `--roles FILE` into the access table (no file: the default table). */
static bool load_roles(const char *path, const char *cmd)
{
    if (!path) return true;
    ms_err e = {0};
    char *text = read_text_file(path, &e);
    bool ok = text && access_load(text, strlen(text), &e) == MS_OK;
    free(text);
    if (!ok) fprintf(stderr, "medstream %s: %s\n", cmd, e.msg);
    return ok;
}

static int usage_error(const char *cmd, const char *msg)
{
    fprintf(stderr, "medstream %s: %s (see medstream %s --help)\n", cmd, msg, cmd);
    return 2;
}

/* serve, user and audit work on a directory `medstream init` made; a mistyped --data must not start an
 * empty store (no users, nothing in it) as if it were the real one. */
static bool data_dir_ready(const char *cmd, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/lmdb/data.mdb", dir);
    if (access(path, F_OK) == 0) return true;
    fprintf(stderr, "medstream %s: %s is not a medstream data directory (make one with: medstream init %s)\n", cmd,
            dir, dir);
    return false;
}

static int cmd_init(int argc, char **argv)
{
    uint64_t segment_size = 0;
    const option opts[] = {
        {"--segment-size", OPT_BYTES, "1GiB", false, "bytes per segment file of the body log", &segment_size},
        {0},
    };
    const char *pos[1];
    char err[256];
    int n = options_parse(opts, argc, argv, 2, pos, 1, err, sizeof err);
    if (n == -2) {
        options_help(stdout, "medstream init DIR [options]",
                     "Create a data directory: the LMDB store, the segment log, and an admin user whose\n"
                     "generated password is written to DIR/admin.password (mode 0600).",
                     opts);
        return 0;
    }
    if (n < 0) return usage_error("init", err);
    if (n != 1) return usage_error("init", "expected the data directory");
    store *s;
    ms_err e;
    store_options so = {0, segment_size, 0};
    if (store_open(&s, pos[0], &so, &e) != MS_OK) {
        fprintf(stderr, "medstream init: %s\n", e.msg);
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/admin.password", pos[0]);
    ms_code rc = users_create_admin(s, path, &e);
    store_close(s);
    if (rc != MS_OK) {
        fprintf(stderr, "medstream init: %s%s\n", e.msg, rc == MS_ECONFLICT ? " (already initialized?)" : "");
        return 1;
    }
    printf("initialized %s (admin password in %s)\n", pos[0], path);
    return 0;
}

static int cmd_roles(int argc, char **argv)
{
    const char *roles = NULL;
    const option opts[] = {
        {"--roles", OPT_STRING, NULL, false, "role file (JSON) to print instead of the default table", &roles},
        {0},
    };
    const char *pos[1];
    char err[256];
    int n = options_parse(opts, argc, argv, 2, pos, 0, err, sizeof err);
    if (n == -2) {
        options_help(stdout, "medstream roles", "Print the roles and their permissions (c r u d per resource).", opts);
        return 0;
    }
    if (n < 0) return usage_error("roles", err);
    if (!load_roles(roles, "roles")) return 1;
    access_print(stdout);
    return 0;
}

/* `medstream audit verify --data DIR`: re-walk the hash chain. */
static int cmd_audit(int argc, char **argv)
{
    const char *data = NULL;
    const option opts[] = {
        {"--data", OPT_STRING, NULL, true, "data directory", &data},
        {0},
    };
    const char *pos[1];
    char err[256];
    int n = options_parse(opts, argc, argv, 2, pos, 1, err, sizeof err);
    if (n == -2) {
        options_help(stdout, "medstream audit verify --data DIR",
                     "Re-walk the audit log's hash chain: exit 0 and print the head hash (anchor it outside\n"
                     "this machine) if intact; exit 1 naming the first bad entry on any edit, deletion or\n"
                     "reordering.",
                     opts);
        return 0;
    }
    if (n < 0) return usage_error("audit", err);
    if (n != 1 || strcmp(pos[0], "verify") != 0) return usage_error("audit", "expected: audit verify --data DIR");
    if (!data_dir_ready("audit", data)) return 1;
    store *s;
    ms_err e = {0};
    if (store_open(&s, data, NULL, &e) != MS_OK) {
        fprintf(stderr, "medstream audit: %s\n", e.msg);
        return 1;
    }
    uint64_t entries = 0, bad = 0;
    unsigned char head[32];
    char why[256];
    ms_code rc = store_audit_verify(s, &entries, head, &bad, why, sizeof why, &e);
    store_close(s);
    if (rc != MS_OK) {
        fprintf(stderr, "medstream audit: %s\n", e.msg);
        return 1;
    }
    if (bad) {
        printf("audit log BROKEN at entry %llu: %s\n", (unsigned long long)bad, why);
        return 1;
    }
    printf("audit log intact: %llu entries, head sha256 ", (unsigned long long)entries);
    for (int i = 0; i < 32; i++)
        printf("%02x", head[i]);
    printf("\n");
    return 0;
}

/* `medstream user add NAME --role ROLE --data DIR`, password on standard input (one line). */
static int cmd_user(int argc, char **argv)
{
    const char *data = NULL, *role = NULL;
    const option opts[] = {
        {"--data", OPT_STRING, NULL, true, "data directory", &data},
        {"--role", OPT_STRING, NULL, true, "role (see medstream roles)", &role},
        {0},
    };
    const char *pos[2];
    char err[256];
    int n = options_parse(opts, argc, argv, 2, pos, 2, err, sizeof err);
    if (n == -2) {
        options_help(stdout, "medstream user add NAME --role ROLE --data DIR   (password on standard input)",
                     "Add a user offline (no server may run on DIR).", opts);
        return 0;
    }
    if (n < 0) return usage_error("user", err);
    if (n != 2 || strcmp(pos[0], "add") != 0) return usage_error("user", "expected: user add NAME");
    if (!data_dir_ready("user", data)) return 1;
    char password[1100];
    if (!fgets(password, sizeof password, stdin)) return usage_error("user", "no password on standard input");
    size_t len = strcspn(password, "\r\n");
    store *s;
    ms_err e = {0};
    int rc = 1;
    if (store_open(&s, data, NULL, &e) == MS_OK) {
        if (users_create(s, pos[1], role, password, len, &e) == MS_OK) rc = 0;
        store_close(s);
    }
    memset(password, 0, sizeof password);
    if (rc)
        fprintf(stderr, "medstream user: %s\n", e.msg);
    else
        printf("added user %s (%s)\n", pos[1], role);
    return rc;
}

/* A whole (small) text file, NUL-terminated; NULL with *e set if it cannot be read. */
static char *read_text_file(const char *path, ms_err *e)
{
    buf b = {0};
    if (buf_read_file(&b, path, e) != MS_OK) {
        buf_free(&b);
        return NULL;
    }
    return buf_take(&b);
}

static int cmd_serve(int argc, char **argv)
{
    const char *data = NULL, *listen = NULL, *schema_file = NULL;
    uint64_t max_body = 0, max_record = 0, map_size = 0, segment_size = 0, body_cache = 0;
    long token_ttl = 0;
    long header_timeout = 0, max_conns = 0, max_conns_per_client = 0; /* the HTTP edge's limits */
    uint64_t max_inflight = 0;
    const char *tls_cert = NULL, *tls_key = NULL, *roles = NULL;
    const char *kafka_brokers = NULL, *kafka_topic = NULL, *kafka_group = NULL, *kafka_dlq = NULL;
    const char *kafka_public = NULL, *postgres = NULL, *postgres_history = NULL;
    opt_list kafka_config = {0};
    long kafka_batch = 0, kafka_linger = 0;
    const option opts[] = {
        {"--data", OPT_STRING, NULL, true, "data directory (made by medstream init)", &data},
        {"--listen", OPT_STRING, "127.0.0.1:8080", false, "address to serve HTTP on (HOST:PORT; port 0 picks one)",
         &listen},
        {"--schema", OPT_STRING, NULL, false, "schema file (JSON) naming field roles and the public allow-list",
         &schema_file},
        {"--max-body", OPT_BYTES, "64MiB", false, "largest request body; larger gets 413", &max_body},
        {"--max-record", OPT_BYTES, "1MiB", false, "largest record; larger is a rejected line", &max_record},
        {"--max-inflight", OPT_BYTES, "512MiB", false, "request body bytes held at once; beyond, 503 + Retry-After",
         &max_inflight},
        {"--header-timeout", OPT_INT, "10", false,
         "seconds for request headers to arrive, and the longest stall of a body; then the connection closes",
         &header_timeout},
        {"--max-connections", OPT_INT, "512", false, "connections at once (lowered to fit the open-file limit)",
         &max_conns},
        {"--max-connections-per-client", OPT_INT, "64", false,
         "connections at once per client address; beyond, 503 + Retry-After", &max_conns_per_client},
        {"--map-size", OPT_BYTES, "1TiB", false, "LMDB map size (address space, not disk)", &map_size},
        {"--segment-size", OPT_BYTES, "1GiB", false, "bytes per segment file of the body log", &segment_size},
        {"--body-cache", OPT_BYTES, "256MiB", false, "recently written record bytes kept in memory for reads",
         &body_cache},
        {"--token-ttl", OPT_INT, "3600", false, "lifetime of bearer tokens, seconds", &token_ttl},
        {"--tls-cert", OPT_STRING, NULL, false, "PEM certificate (chain): serve HTTPS (with --tls-key)", &tls_cert},
        {"--tls-key", OPT_STRING, NULL, false, "PEM private key of --tls-cert", &tls_key},
        {"--roles", OPT_STRING, NULL, false, "role file (JSON) replacing the default role table", &roles},
        {"--kafka-brokers", OPT_STRING, NULL, false, "Kafka bootstrap servers HOST:PORT[,...]: also consume",
         &kafka_brokers},
        {"--kafka-topic", OPT_STRING, NULL, false, "topic to consume (with --kafka-brokers)", &kafka_topic},
        {"--kafka-group", OPT_STRING, "medstream", false, "consumer group", &kafka_group},
        {"--kafka-batch", OPT_INT, "1000", false, "messages per batch", &kafka_batch},
        {"--kafka-linger-ms", OPT_INT, "50", false, "longest wait to fill a batch", &kafka_linger},
        {"--kafka-dlq-topic", OPT_STRING, NULL, false, "dead-letter topic (default TOPIC.dlq)", &kafka_dlq},
        {"--kafka-config", OPT_LIST, NULL, false, "a librdkafka setting key=value (SASL, TLS)",
         &kafka_config},
        {"--kafka-public-topic", OPT_STRING, NULL, false,
         "publish every public record version here (needs --kafka-brokers)", &kafka_public},
        {"--postgres", OPT_STRING, NULL, false, "PostgreSQL connection URL (libpq): ship every commit there",
         &postgres},
        {"--postgres-history", OPT_STRING, "auto", false,
         "phi_patients history: periods (extension), trigger, or auto (periods if installed)", &postgres_history},
        {0},
    };
    const char *pos[1];
    char err[256];
    int n = options_parse(opts, argc, argv, 2, pos, 0, err, sizeof err);
    if (n == -2) {
        options_help(stdout, "medstream serve --data DIR [options]",
                     "Serve the HTTP API v1 (docs/API.md) on the embedded store.", opts);
        return 0;
    }
    if (n < 0) return usage_error("serve", err);
    if (segment_size < 2 * max_body) return usage_error("serve", "--segment-size must be at least twice --max-body");
    if (max_record > max_body) max_record = max_body; /* a record can never exceed its body */
    if (max_record < 64) return usage_error("serve", "--max-record must be at least 64 bytes");
    if (token_ttl < 1) return usage_error("serve", "--token-ttl must be at least 1 second");
    if (!tls_cert != !tls_key) return usage_error("serve", "--tls-cert and --tls-key go together");
    if (!load_roles(roles, "serve") || !data_dir_ready("serve", data)) return 1;
    if (!kafka_brokers != !kafka_topic) return usage_error("serve", "--kafka-brokers and --kafka-topic go together");
    if (kafka_public && !kafka_brokers) return usage_error("serve", "--kafka-public-topic needs --kafka-brokers");
    if (kafka_batch < 1 || kafka_linger < 0) return usage_error("serve", "--kafka-batch >= 1, --kafka-linger-ms >= 0");
    pg_history_mode history = !strcmp(postgres_history, "periods")   ? PG_HISTORY_PERIODS
                              : !strcmp(postgres_history, "trigger") ? PG_HISTORY_TRIGGER
                                                                     : PG_HISTORY_AUTO;
    if (history == PG_HISTORY_AUTO && strcmp(postgres_history, "auto") != 0)
        return usage_error("serve", "--postgres-history is periods, trigger or auto");

    schema sc;
    ms_err e = {0};
    if (schema_file) {
        if (schema_load_file(&sc, schema_file, &e) != MS_OK) {
            fprintf(stderr, "medstream serve: %s\n", e.msg);
            return 1;
        }
    } else {
        schema_default(&sc);
    }
    /* SIGINT/SIGTERM are taken by sigwait below; block them before any thread starts. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN); /* a file-size limit is a full disk: EFBIG, answered 503 */

    store *s = NULL;
    writer *w = NULL;
    http_server *h = NULL;
    char *cert_pem = NULL, *key_pem = NULL; /* kept until the server stops */
    kafka_ingest *kafka = NULL;
    sink_kafka_public *public_stream = NULL;
    sink_postgres *pg = NULL;
    int rc = 1;
    store_options so = {map_size, segment_size, body_cache};
    double t0 = ms_mono_s();
    if (store_open(&s, data, &so, &e) != MS_OK) goto out;
    metrics_set_data_dir(data);
    if (writer_start(&w, s, &sc, &e) != MS_OK) goto out;
    api a = {.store = s, .writer = w, .schema = &sc, .max_record = max_record, .token_ttl_s = token_ttl};
    http_handler hh = api_http_handler(&a);
    if (tls_cert && (!(cert_pem = read_text_file(tls_cert, &e)) || !(key_pem = read_text_file(tls_key, &e)))) goto out;
    http_options ho = {.listen = listen,
                       .max_body = max_body,
                       .max_inflight = max_inflight,
                       .header_timeout_s = header_timeout,
                       .max_connections = max_conns,
                       .max_connections_per_client = max_conns_per_client,
                       .tls_cert_pem = cert_pem,
                       .tls_key_pem = key_pem};
    if (http_server_start(&h, &ho, &hh, &e) != MS_OK) goto out;
    if (kafka_brokers) {
        char dlq[256];
        snprintf(dlq, sizeof dlq, "%s.dlq", kafka_topic);
        kafka_options ko = {.brokers = kafka_brokers,
                            .topic = kafka_topic,
                            .group = kafka_group,
                            .dlq_topic = kafka_dlq ? kafka_dlq : dlq,
                            .config = kafka_config.v,
                            .batch_max = (int)kafka_batch,
                            .linger_ms = (int)kafka_linger,
                            .store = s,
                            .writer = w,
                            .schema = &sc,
                            .max_record = max_record};
        ms_code krc = kafka_ingest_start(&kafka, &ko, &e);
        if (krc == MS_OK && kafka_public)
            krc = sink_kafka_public_start(&public_stream, s, kafka_brokers, kafka_public, kafka_config.v, &e);
        if (krc != MS_OK) goto out;
    }
    if (postgres) {
        sink_postgres_options po = {.conninfo = postgres, .history = history, .store = s};
        if (sink_postgres_start(&pg, &po, &e) != MS_OK) goto out;
    }
    fprintf(stderr, "medstream: serving %s on %s port %d (ready in %.3f s)\n", data, cert_pem ? "https" : "http",
            http_server_port(h), ms_mono_s() - t0);
    int sig;
    sigwait(&stop, &sig);
    fprintf(stderr, "medstream: stopping (signal %d)\n", sig);
    rc = 0;
out:
    if (rc) fprintf(stderr, "medstream serve: %s\n", e.msg);
    kafka_ingest_stop(kafka); /* the batch in hand is committed, then offsets */
    sink_postgres_stop(pg);
    sink_kafka_public_stop(public_stream);
    http_server_stop(h); /* no new requests; in-flight ones finish */
    free(cert_pem);
    free(key_pem);
    writer_stop(w); /* queued batches are committed */
    store_close(s);
    schema_free(&sc);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f,
            "medstream %s - patient records in, deduplicated, versioned, de-identified\n\n"
            "usage: medstream COMMAND [options]   (medstream COMMAND --help for each)\n\n"
            "commands:\n"
            "  init DIR     create a data directory\n"
            "  serve        serve the HTTP API on the embedded store\n"
            "  bench        load generator and freshness probe against a running server\n"
            "  preload DIR  fill a fresh data directory with synthetic patients (for benchmarks)\n"
            "  version      print the version\n",
            VERSION);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "init")) return cmd_init(argc, argv);
    if (!strcmp(cmd, "serve")) return cmd_serve(argc, argv);
    if (!strcmp(cmd, "bench")) return bench_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "preload")) return preload_main(argc, argv);
    if (!strcmp(cmd, "roles")) return cmd_roles(argc, argv);
    if (!strcmp(cmd, "user")) return cmd_user(argc, argv);
    if (!strcmp(cmd, "audit")) return cmd_audit(argc, argv);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("medstream %s\n", VERSION);
        return 0;
    }
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "medstream: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
