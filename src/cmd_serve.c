/*
 * cmd_serve.c - `medstream serve`: its option table (from which --help, the config file's keys and
 * docs/options.md come), the checks between options, and the start-up and shut-down order of the server's
 * parts: the store, the writer, the views and the sinks that follow its commit log, the notifier, the
 * exports, the re-projection, the HTTP and metrics listeners, the Kafka consumer; each stops in the reverse
 * order, so that nothing acknowledged is left unwritten and every follower saves its position.
 *
 * Never: hold pipeline logic (the layers do the work), exit() outside the command's return.
 */
#include "commands.h"

#include "api/api_routes.h"
#include "api/metrics_listener.h"
#include "base/cluster_key.h"
#include "base/http_client.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/options.h"
#include "ingest/ingest_kafka.h"
#include "ingest/reproject.h"
#include "ingest/writer.h"
#include "notify/notifier.h"
#include "pipeline/schema.h"
#include "sinks/sink_kafka_public.h"
#include "sinks/sink_lake.h"
#include "sinks/sink_postgres.h"
#include "store/store.h"
#include "views/counters.h"

#include <openssl/crypto.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* serve's settings: one field per option of its table. */
typedef struct {
    const char *data, *listen, *schema, *tls_cert, *tls_key, *roles;
    uint64_t max_body, max_record, max_inflight, body_min_rate, map_size, segment_size, body_cache, state_cache,
        checkpoint_lag;
    uint64_t header_timeout_s, max_connections, max_connections_per_client, token_ttl_s;
    const char *kafka_brokers, *kafka_topic, *kafka_group, *kafka_dlq, *kafka_public;
    opt_list kafka_config;
    uint64_t kafka_batch, kafka_linger_ms;
    bool kafka_cluster;
    const char *advertise_url;
    const char *postgres;
    int postgres_history;       /* index in pg_history_names */
    int log_format, access_log; /* indexes in log_format_names, on_off_names */
    const char *metrics_listen;
    bool metrics_listen_any;
    bool webhook_allow_private;
    uint64_t export_keep, export_link_ttl_s;
    uint64_t reproject_rate;
    const char *lake;
    int lake_scope; /* index in export_scope_names */
    uint64_t lake_roll_s, lake_roll_bytes;
    const char *rules, *webhook_ca, *events_topic;
    uint64_t sse_max_streams, sse_heartbeat_s, webhook_timeout_s, webhook_max_backoff_s, webhook_max;
    const char *counters;         /* --counters FILE */
    const char *cluster_key_file; /* --cluster-key-file FILE */
} serve_settings;

static const char *const pg_history_names[] = {"periods", "trigger", "auto", NULL};
static const char *const log_format_names[] = {"text", "json", NULL}; /* in log_format's order */
static const char *const on_off_names[] = {"on", "off", NULL};
static const pg_history_mode pg_history_modes[] = {PG_HISTORY_PERIODS, PG_HISTORY_TRIGGER, PG_HISTORY_AUTO};

#define TOKEN_TTL_MAX_S (365 * 86400) /* a bearer token lives a year at most */

/* The rules between serve's options: NULL when they hold, else what is wrong. Lowers --max-record to
 * --max-body (a record can never exceed its body). */
static const char *serve_check(serve_settings *c)
{
    /* no --segment-size: the store's own, checked against --max-body once it is open */
    if (c->segment_size % STORE_SEGMENT_ALIGN) return "--segment-size: expected a multiple of 4KiB";
    if (c->segment_size && c->max_body > c->segment_size / 2) return "--segment-size must be at least twice --max-body";
    if (c->max_record > c->max_body) c->max_record = c->max_body;
    if (!c->tls_cert != !c->tls_key) return "--tls-cert and --tls-key go together";
    if (!c->kafka_brokers != !c->kafka_topic) return "--kafka-brokers and --kafka-topic go together";
    if (c->kafka_public && !c->kafka_brokers) return "--kafka-public-topic needs --kafka-brokers";
    if (c->kafka_cluster && !c->kafka_brokers) return "--kafka-cluster needs --kafka-brokers";
    if (c->advertise_url && !c->kafka_cluster) return "--advertise-url needs --kafka-cluster";
    if (c->events_topic && !c->kafka_brokers) return "--events-topic needs --kafka-brokers";
    if (c->metrics_listen_any && !c->metrics_listen) return "--metrics-listen-any needs --metrics-listen";
    if (c->lake && c->lake_scope == EXPORT_PHI)
        return "--lake-scope phi: not built: the lake holds the public copy only (PHI files outside the store would "
               "need their own access control and audit); export PHI with `medstream export --scope phi`";
    static char why[300];
    bool loopback = false;
    ms_err le;
    if (http_listen_check(c->listen, &loopback, &le) != MS_OK) { /* before the store: a usage error, not a failure */
        snprintf(why, sizeof why, "--listen: %s", le.msg);
        return why;
    }
    if (c->postgres && sink_postgres_check_conninfo(c->postgres, &le) != MS_OK) {
        snprintf(why, sizeof why, "%s", le.msg);
        return why;
    }
    if (c->metrics_listen) {
        if (http_listen_check(c->metrics_listen, &loopback, &le) != MS_OK) {
            snprintf(why, sizeof why, "--metrics-listen: %s", le.msg);
            return why;
        }
        if (!loopback && !c->metrics_listen_any)
            return "--metrics-listen: HOST must be loopback (127.0.0.1, localhost): /metrics there needs no token; "
                   "add --metrics-listen-any to serve it on another address";
    }
    return NULL;
}

static int serve_run(const serve_settings *c);

/* A private key every local user can read is the server's identity given away: said at the start (a
 * group-readable key, 0640 with a group such as ssl-cert, is a usual setup and passes). */
static void warn_if_key_readable(const char *key)
{
    struct stat st;
    if (stat(key, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & S_IROTH))
        ms_log(LOG_WARN, "serve.tls_key_mode",
               "--tls-key %s is mode %04o: every local user can read the server's private key (chmod 600 %s)", key,
               (unsigned)(st.st_mode & 07777), key);
}

/* A data directory group or others may enter is the store's listing (and, writable, its key file and lock)
 * given away: said at the start (init makes it 0700). */
static void warn_if_dir_open(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) == 0 && (st.st_mode & 077))
        ms_log(LOG_WARN, "serve.data_dir_mode", "%s is mode %04o: other local users may enter it%s (chmod 700 %s)", dir,
               (unsigned)(st.st_mode & 07777), st.st_mode & 022 ? " and delete or replace its files" : "", dir);
}

static bool count_account(void *ctx, const store_account *acc)
{
    (void)acc;
    ++*(uint64_t *)ctx;
    return true;
}

/* A store without any account: nobody can sign in. It is what an init stopped before it made the admin
 * leaves (or a store filled by preload, or one whose accounts were all deleted): said once at the start,
 * with the fix, rather than serving as if all were well. */
static void warn_if_no_accounts(store *s, const char *dir)
{
    store_read *r;
    ms_err e = {0};
    uint64_t n = 0;
    if (store_read_begin(s, &r, &e) != MS_OK) return;
    ms_code rc = store_account_list(r, count_account, &n, &e);
    store_read_end(r);
    if (rc == MS_OK && n == 0)
        ms_log(LOG_WARN, "serve.no_accounts",
               "%s has no accounts: nobody can sign in (an init that did not finish? medstream init %s finishes it; "
               "medstream user add makes an account)",
               dir, dir);
}

int cmd_serve(int argc, char **argv)
{
    serve_settings c;
    /* clang-format off */
    const option opts[] = {
        {.name = "--config", .type = OPT_CONFIG, .metavar = "FILE",
         .help = "read these options from FILE, one `key = value` a line, keys without -- (docs/options.md); "
                 "the command line overrides it"},
        {.name = "--data", .type = OPT_STRING, .target = &c.data, .required = true, .metavar = "DIR",
         .help = "data directory (made by medstream init)"},
        {.name = "--cluster-key-file", .type = OPT_STRING, .target = &c.cluster_key_file, .metavar = "FILE",
         .help = "the cluster's secret (64 hex characters, mode 0600; README.md, \"Cluster key\"): the data directory "
                 "must have been made with it (medstream init --cluster-key-file), else serve refuses to start"},
        {.name = "--listen", .type = OPT_STRING, .target = &c.listen, .def = "127.0.0.1:8080", .metavar = "HOST:PORT",
         .help = "address to serve HTTP on, bound exclusively (port 0 picks one; :PORT binds every interface)"},
        {.name = "--schema", .type = OPT_STRING, .target = &c.schema, .metavar = "FILE",
         .help = "schema file (JSON) naming field roles and the public allow-list (without it: the default schema, "
                 "refused when the store's is another)"},
        {.name = "--max-body", .type = OPT_BYTES, .target = &c.max_body, .def = "64MiB", .min = 64,
         .help = "largest request body; larger gets 413"},
        {.name = "--max-record", .type = OPT_BYTES, .target = &c.max_record, .def = "1MiB", .min = 64,
         .help = "largest record; larger is a rejected line (lowered to --max-body)"},
        {.name = "--max-inflight", .type = OPT_BYTES, .target = &c.max_inflight, .def = "512MiB",
         .min = HTTP_MAX_INFLIGHT_MIN, .help = "request body bytes held at once; beyond, 503 + Retry-After"},
        {.name = "--header-timeout", .type = OPT_SECONDS, .target = &c.header_timeout_s, .def = "10", .min = 1,
         .max = HTTP_HEADER_TIMEOUT_MAX_S,
         .help = "time for request headers to arrive, and the longest stall of a body; then the connection closes"},
        {.name = "--body-min-rate", .type = OPT_BYTES, .target = &c.body_min_rate, .def = "256KiB",
         .help = "bytes a second a request body keeps up once --header-timeout has passed (0: no floor); a slower "
                 "body's connection closes (a body trickled in held its share of --max-inflight)"},
        {.name = "--max-connections", .type = OPT_UINT, .target = &c.max_connections, .def = "512", .min = 1,
         .max = HTTP_CONNECTIONS_MAX, .help = "connections at once (lowered to fit the open-file limit)"},
        {.name = "--max-connections-per-client", .type = OPT_UINT, .target = &c.max_connections_per_client,
         .def = "64", .min = 1, .max = HTTP_CONNECTIONS_MAX,
         .help = "connections at once per client address; beyond, 503 + Retry-After"},
        {.name = "--map-size", .type = OPT_BYTES, .target = &c.map_size, .def = "1TiB",
         .help = "LMDB map size (address space, not disk)"},
        {.name = "--segment-size", .type = OPT_BYTES, .target = &c.segment_size, .min = STORE_SEGMENT_SIZE_MIN,
         .help = "bytes per segment file of the body log, a multiple of 4KiB, at least twice --max-body (default: "
                 "the size the store was made with, medstream init --segment-size; a store holding bodies refuses "
                 "another)"},
        {.name = "--body-cache", .type = OPT_BYTES, .target = &c.body_cache, .def = "256MiB",
         .help = "recently written record bytes kept in memory for reads"},
        {.name = "--state-cache", .type = OPT_BYTES, .target = &c.state_cache, .def = "1GiB",
         .help = "the patients' latest states kept in memory for merging new records into them (0: none)"},
        {.name = "--checkpoint-lag", .type = OPT_UINT, .target = &c.checkpoint_lag, .def = "1048576", .min = 1,
         .max = (uint64_t)1 << 32,
         .help = "patient log entries past the checkpointed heads before commits checkpoint more of them (a start "
                 "replays at most about this many)"},
        {.name = "--token-ttl", .type = OPT_SECONDS, .target = &c.token_ttl_s, .def = "3600", .min = 1,
         .max = TOKEN_TTL_MAX_S, .help = "lifetime of bearer tokens"},
        {.name = "--tls-cert", .type = OPT_STRING, .target = &c.tls_cert, .metavar = "FILE",
         .help = "PEM certificate (chain): serve HTTPS (with --tls-key)"},
        {.name = "--tls-key", .type = OPT_STRING, .target = &c.tls_key, .metavar = "FILE",
         .help = "PEM private key of --tls-cert"},
        {.name = "--roles", .type = OPT_STRING, .target = &c.roles, .metavar = "FILE",
         .help = "role file (JSON) replacing the default role table"},
        {.name = "--kafka-brokers", .type = OPT_STRING, .target = &c.kafka_brokers, .metavar = "HOST:PORT[,...]",
         .help = "Kafka bootstrap servers: also consume (with --kafka-topic)"},
        {.name = "--kafka-topic", .type = OPT_STRING, .target = &c.kafka_topic, .metavar = "TOPIC",
         .help = "topic to consume (with --kafka-brokers)"},
        {.name = "--kafka-group", .type = OPT_STRING, .target = &c.kafka_group, .def = "medstream",
         .metavar = "GROUP", .help = "consumer group"},
        {.name = "--kafka-batch", .type = OPT_UINT, .target = &c.kafka_batch, .def = "1000", .min = 1,
         .max = 1000000, .help = "messages per batch"},
        {.name = "--kafka-linger-ms", .type = OPT_MILLIS, .target = &c.kafka_linger_ms, .def = "50",
         .max = 60000, .help = "longest wait to fill a batch"},
        {.name = "--kafka-dlq-topic", .type = OPT_STRING, .target = &c.kafka_dlq, .metavar = "TOPIC",
         .help = "dead-letter topic (default TOPIC.dlq)"},
        {.name = "--kafka-config", .type = OPT_LIST, .target = &c.kafka_config, .metavar = "KEY=VALUE",
         .help = "a librdkafka setting for every Kafka client (SASL, TLS)"},
        {.name = "--kafka-cluster", .type = OPT_FLAG, .target = &c.kafka_cluster,
         .help = "one node of a cluster on --kafka-topic: patients sharded by identity over its partitions (a power "
                 "of two), ids minted per shard, Kafka transactions (README \"Cluster\")"},
        {.name = "--advertise-url", .type = OPT_STRING, .target = &c.advertise_url, .metavar = "URL",
         .help = "with --kafka-cluster: the URL other nodes redirect reads of this node's patients to (default: "
                 "http(s)://LISTEN, a wildcard address as 127.0.0.1)"},
        {.name = "--kafka-public-topic", .type = OPT_STRING, .target = &c.kafka_public, .metavar = "TOPIC",
         .help = "publish every public record version here (needs --kafka-brokers)"},
        {.name = "--postgres", .type = OPT_STRING, .target = &c.postgres, .metavar = "URL",
         .help = "PostgreSQL connection URL (libpq): ship every commit there"},
        {.name = "--postgres-history", .type = OPT_ENUM, .target = &c.postgres_history, .def = "auto",
         .choices = pg_history_names,
         .help = "phi_patients history: periods (the extension), trigger, or auto (periods if installed)"},
        {.name = "--log-format", .type = OPT_ENUM, .target = &c.log_format, .def = "text",
         .choices = log_format_names, .help = "log lines on standard error: text, or json (one object a line)"},
        {.name = "--access-log", .type = OPT_ENUM, .target = &c.access_log, .def = "on", .choices = on_off_names,
         .help = "one log line per request (route pattern, status, bytes, ms, user, request id)"},
        {.name = "--metrics-listen", .type = OPT_STRING, .target = &c.metrics_listen, .metavar = "HOST:PORT",
         .help = "also serve GET /metrics, without a token, on this loopback address (for Prometheus)"},
        {.name = "--metrics-listen-any", .type = OPT_FLAG, .target = &c.metrics_listen_any,
         .help = "let --metrics-listen take an address that is not loopback (anyone reaching it reads /metrics)"},
        {.name = "--export-keep", .type = OPT_UINT, .target = &c.export_keep, .def = "8", .min = 1, .max = 1000,
         .help = "exports (POST /v1/exports) held in DATA/exports; a new one pushes out the oldest finished one"},
        {.name = "--reproject-rate", .type = OPT_UINT, .target = &c.reproject_rate, .def = "0", .min = 0,
         .max = 100000000, .metavar = "N",
         .help = "after a schema change, re-project at most N stored versions a second in the background, then "
                 "compact at most N entries of the patient log a second (0: as fast as it goes; the ingest writer "
                 "never waits more than one step)"},
        {.name = "--export-link-ttl", .type = OPT_SECONDS, .target = &c.export_link_ttl_s, .def = "300", .min = 1,
         .max = 86400, .help = "lifetime of an export's signed download link"},
        {.name = "--lake", .type = OPT_STRING, .target = &c.lake, .metavar = "DIR",
         .help = "keep DIR a Parquet data lake of every public record version, laid out as a public export "
                 "(DIR/records/type=T/year=Y/part-….parquet), exactly once across crashes"},
        {.name = "--lake-scope", .type = OPT_ENUM, .target = &c.lake_scope, .def = "public",
         .choices = export_scope_names, .help = "what the lake holds: public (phi is refused: not built)"},
        {.name = "--lake-roll-seconds", .type = OPT_SECONDS, .target = &c.lake_roll_s, .def = "60", .min = 1,
         .max = 86400, .help = "publish the lake's open files once the oldest commit they hold is this old"},
        {.name = "--lake-roll-bytes", .type = OPT_BYTES, .target = &c.lake_roll_bytes, .def = "256MiB",
         .min = (uint64_t)1 << 20, .max = (uint64_t)16 << 30,
         .help = "... or once their rows hold this many bytes (uncompressed values), whichever comes first"},
        {.name = "--rules", .type = OPT_STRING, .target = &c.rules, .metavar = "FILE",
         .help = "signal rules (a JSON array of {\"name\",\"fields\",\"any\",\"regex\"?,\"types\"?}) matched "
                 "against every committed record, besides those defined with POST /v1/rules"},
        {.name = "--sse-max-streams", .type = OPT_UINT, .target = &c.sse_max_streams, .def = "64", .min = 1,
         .max = 4096, .help = "GET /v1/events/stream connections at once (each holds a thread); beyond, 503"},
        {.name = "--sse-heartbeat", .type = OPT_SECONDS, .target = &c.sse_heartbeat_s, .def = "15", .min = 1,
         .max = 60, .help = "a comment line on an idle event stream this often (keeps proxies open, finds dead "
                            "clients)"},
        {.name = "--webhook-timeout", .type = OPT_SECONDS, .target = &c.webhook_timeout_s, .def = "10", .min = 1,
         .max = 300, .help = "each step (connect, send, answer) of a webhook delivery; then it failed and is retried"},
        {.name = "--webhook-max-backoff", .type = OPT_SECONDS, .target = &c.webhook_max_backoff_s, .def = "60",
         .min = 1, .max = 86400, .help = "the longest wait between two attempts of a failing webhook delivery "
                                         "(from 0.5 s, doubling)"},
        {.name = "--webhook-max", .type = OPT_UINT, .target = &c.webhook_max, .def = "64", .min = 1, .max = 1024,
         .help = "webhook subscriptions at most (each has a thread)"},
        {.name = "--webhook-allow-private", .type = OPT_FLAG, .target = &c.webhook_allow_private,
         .help = "let webhooks post to loopback, private, link-local (cloud metadata) and other non-public addresses "
                 "(refused by default: a subscriber must not reach the server's own network)"},
        {.name = "--webhook-ca", .type = OPT_STRING, .target = &c.webhook_ca, .metavar = "FILE",
         .help = "CA certificates (PEM) to check https webhook targets against, instead of the system's"},
        {.name = "--events-topic", .type = OPT_STRING, .target = &c.events_topic, .metavar = "TOPIC",
         .help = "also publish every notification event here, keyed by patient id, at least once (needs "
                 "--kafka-brokers)"},
        {.name = "--counters", .type = OPT_STRING, .target = &c.counters, .metavar = "FILE",
         .help = "rolling-window counters to keep (a JSON array of definitions, docs/API.md \"Counters\"), besides "
                 "those defined with POST /v1/counters"},
        {0},
    };
    /* clang-format on */
    const options_command cmd = {"serve", "medstream serve --data DIR [options] | --config FILE [options]",
                                 "Serve the HTTP API v1 (docs/API.md) on the embedded store.", opts};
    options_args a;
    int code;
    if (options_parse_command(&cmd, argc, argv, 2, 0, &a, stdout, stderr, &code)) {
        const char *bad = serve_check(&c);
        code = bad ? usage_error("serve", bad) : serve_run(&c);
    }
    options_args_free(&a); /* the strings of c may point into the config file's text */
    return code;
}

static int serve_run(const serve_settings *c)
{
    log_configure((log_format)c->log_format, LOG_INFO); /* from here on, what serve says is a log line */
    if (!load_roles(c->roles, "serve") || !data_dir_ready("serve", c->data)) return 1;
    char ca_why[240];
    if (c->webhook_ca && !http_client_ca_check(c->webhook_ca, ca_why, sizeof ca_why)) { /* not at the first webhook */
        ms_log_cmd(LOG_ERROR, "serve.failed", "serve", "--webhook-ca %s: %s", c->webhook_ca, ca_why);
        return 1;
    }

    schema sc;
    ms_err e = {0};
    if (c->schema) {
        if (schema_load_file(&sc, c->schema, &e) != MS_OK) {
            ms_log_cmd(LOG_ERROR, "serve.failed", "serve", "--schema %s: %s", c->schema, e.msg);
            return 1;
        }
    } else {
        schema_default(&sc);
    }
    /* SIGINT/SIGTERM/SIGHUP are taken by sigwait below (a clean stop: there is no configuration to reload, and
     * a closed terminal must not kill the server mid-commit); block them before any thread starts. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN); /* a file-size limit is a full disk: EFBIG, answered 503 */

    store *s = NULL;
    writer *w = NULL;
    http_server *h = NULL, *metrics_port = NULL;
    char *cert_pem = NULL, *key_pem = NULL; /* kept until the server stops */
    kafka_ingest *kafka = NULL;
    sink_kafka_public *public_stream = NULL;
    sink_postgres *pg = NULL;
    sink_lake *lake = NULL;
    export_jobs *exports = NULL;
    notifier *notify = NULL;
    counters *live_counters = NULL;
    reprojector *rp = NULL;
    refusal_tally *refusals = NULL; /* set with the api context below, which is whole once it is */
    int rc = 1;
    store_options so = {c->map_size,    c->segment_size,  c->body_cache,
                        c->state_cache, .owner = "serve", .plog_checkpoint_lag = c->checkpoint_lag};
    unsigned char cluster_key[CLUSTER_KEY_BYTES];
    if (c->cluster_key_file) {
        if (cluster_key_load(c->cluster_key_file, cluster_key, &e) != MS_OK) goto out;
        so.cluster_key = cluster_key;
    }
    double t0 = ms_mono_s();
    ms_code opened = store_open(&s, c->data, &so, &e);
    OPENSSL_cleanse(cluster_key, sizeof cluster_key); /* the store keeps its own copy */
    if (opened != MS_OK) goto out;
    if (!c->segment_size && c->max_body > store_segment_size(s) / 2) { /* serve_check's rule, on the store's size */
        char seg[32], half[32];
        format_bytes(seg, sizeof seg, store_segment_size(s));
        format_bytes(half, sizeof half, store_segment_size(s) / 2);
        ms_fail(&e, MS_EINVAL,
                "--max-body: %s is made of segments of %s (medstream init --segment-size), which take bodies of "
                "at most %s: give --max-body %s or less",
                c->data, seg, half, half);
        rc = 2; /* a usage error, as serve_check's */
        goto out;
    }
    /* without --schema, never the default in place of the store's own: a restart that forgot the option would
     * re-project every public copy under the default allow-list, publishing what the operator's keeps private */
    if (!c->schema && !store_schema_is_default(s, "serve",
                                               "it would re-project every public copy under the default schema's "
                                               "allow-list; to go back to the default, give a file holding it")) {
        ms_fail(&e, MS_EINVAL, "--schema is needed on this store (above)");
        goto out;
    }
    warn_if_no_accounts(s, c->data);
    warn_if_dir_open(c->data);
    metrics_set_data_dir(c->data);
    if (writer_start(&w, s, &sc, &e) != MS_OK) goto out;
    reproject_options ro = {.store = s,
                            .writer = w,
                            .schema = &sc,
                            .schema_file = c->schema,
                            .run = true,
                            .rate = (uint32_t)c->reproject_rate};
    if (reproject_start(&rp, &ro, &e) != MS_OK) goto out; /* schema versions: before any ingest */
    api a = {.store = s,
             .writer = w,
             .schema = &sc,
             .max_record = c->max_record,
             .max_body = c->max_body,
             .token_ttl_s = (int64_t)c->token_ttl_s,
             .data_dir = c->data,
             .refusals = refusals = refusal_tally_new()};
    export_jobs_options eo = {.store = s,
                              .schema = &sc,
                              .data_dir = c->data,
                              .keep = (uint32_t)c->export_keep,
                              .link_ttl_s = (int64_t)c->export_link_ttl_s,
                              .created_by = "medstream version " VERSION,
                              .audit = api_export_audit,
                              .audit_ctx = &a};
    if (export_jobs_start(&exports, &eo, &e) != MS_OK) goto out;
    a.exports = exports;
    notifier_options no = {.store = s,
                           .writer = w,
                           .rules_file = c->rules,
                           .max_streams = (unsigned)c->sse_max_streams,
                           .heartbeat_s = (unsigned)c->sse_heartbeat_s,
                           .webhook_timeout_ms = (unsigned)c->webhook_timeout_s * 1000,
                           .webhook_backoff_max_ms = (unsigned)c->webhook_max_backoff_s * 1000,
                           .max_subscriptions = (unsigned)c->webhook_max,
                           .webhook_ca_file = c->webhook_ca,
                           .webhook_allow_private = c->webhook_allow_private,
                           .events_topic = c->events_topic,
                           .kafka_brokers = c->kafka_brokers,
                           .kafka_config = c->kafka_config.v};
    if (notifier_start(&notify, &no, &e) != MS_OK) goto out;
    a.notifier = notify;
    counters_options co = {.store = s, .writer = w, .schema = &sc, .data_dir = c->data, .file = c->counters};
    if (counters_start(&live_counters, &co, &e) != MS_OK) goto out;
    a.counters = live_counters;
    http_handler hh = api_http_handler(&a);
    if (c->tls_key) warn_if_key_readable(c->tls_key);
    if (c->tls_cert && (!(cert_pem = read_text_file(c->tls_cert, &e)) || !(key_pem = read_text_file(c->tls_key, &e)))) {
        char why[sizeof e.msg];
        snprintf(why, sizeof why, "%s", e.msg);
        ms_fail(&e, MS_EIO, "%s %s: %s", cert_pem ? "--tls-key" : "--tls-cert", cert_pem ? c->tls_key : c->tls_cert,
                why);
        goto out;
    }
    http_options ho = {.listen = c->listen,
                       .max_body = c->max_body,
                       .max_inflight = c->max_inflight,
                       .header_timeout_s = (long)c->header_timeout_s,
                       .min_body_rate = c->body_min_rate,
                       .max_connections = (long)c->max_connections,
                       .max_connections_per_client = (long)c->max_connections_per_client,
                       .tls_cert_pem = cert_pem,
                       .tls_key_pem = key_pem,
                       .access_log = c->access_log == 0};
    if (http_server_start(&h, &ho, &hh, &e) != MS_OK) goto out;
    if (c->metrics_listen) { /* plain HTTP, small: a scraper or two, no bodies */
        http_handler mh = metrics_listener_handler(&a);
        http_options mo = {.listen = c->metrics_listen,
                           .listen_flag = "--metrics-listen",
                           .max_body = 4096,
                           .max_inflight = (uint64_t)1 << 20,
                           .header_timeout_s = ho.header_timeout_s,
                           .min_body_rate = ho.min_body_rate,
                           .max_connections = 16,
                           .max_connections_per_client = 8,
                           .access_log = ho.access_log};
        if (http_server_start(&metrics_port, &mo, &mh, &e) != MS_OK) goto out;
    }
    if (c->kafka_brokers) {
        char dlq[256], node[33], advertise[300];
        snprintf(dlq, sizeof dlq, "%s.dlq", c->kafka_topic);
        kafka_options ko = {.brokers = c->kafka_brokers,
                            .topic = c->kafka_topic,
                            .group = c->kafka_group,
                            .dlq_topic = c->kafka_dlq ? c->kafka_dlq : dlq,
                            .config = c->kafka_config.v,
                            .batch_max = (int)c->kafka_batch,
                            .linger_ms = (int)c->kafka_linger_ms,
                            .store = s,
                            .writer = w,
                            .schema = &sc,
                            .max_record = c->max_record,
                            .cluster = c->kafka_cluster,
                            .node = node,
                            .advertise = advertise};
        for (int i = 0; i < STORE_NODE_ID; i++) /* the store's node id: the same after a restart */
            snprintf(node + 2 * i, 3, "%02x", store_node_id(s)[i]);
        if (!c->advertise_url) { /* the listen address as this node's URL (a wildcard: loopback) */
            const char *colon = strrchr(c->listen, ':');
            int hl = colon ? (int)(colon - c->listen) : 0;
            const char *host = c->listen;
            if (hl == 0 || (hl == 7 && strncmp(host, "0.0.0.0", 7) == 0) || (hl == 4 && strncmp(host, "[::]", 4) == 0))
                host = "127.0.0.1", hl = 9;
            snprintf(advertise, sizeof advertise, "%s://%.*s:%d", cert_pem ? "https" : "http", hl, host,
                     http_server_port(h));
        } else {
            snprintf(advertise, sizeof advertise, "%s", c->advertise_url);
        }
        ms_code krc = kafka_ingest_start(&kafka, &ko, &e);
        if (krc == MS_OK) atomic_store(&a.cluster, kafka_ingest_cluster(kafka));
        if (krc == MS_OK && c->kafka_public)
            krc = sink_kafka_public_start(&public_stream, s, c->kafka_brokers, c->kafka_public, c->kafka_config.v, &e);
        if (krc != MS_OK) goto out;
    }
    if (c->postgres) {
        sink_postgres_options po = {
            .conninfo = c->postgres, .history = pg_history_modes[c->postgres_history], .store = s};
        if (sink_postgres_start(&pg, &po, &e) != MS_OK) goto out;
    }
    if (c->lake) {
        sink_lake_options lo = {.store = s,
                                .schema = &sc,
                                .dir = c->lake,
                                .roll_seconds = c->lake_roll_s,
                                .roll_bytes = c->lake_roll_bytes,
                                .created_by = "medstream version " VERSION};
        if (sink_lake_start(&lake, &lo, &e) != MS_OK) goto out;
    }
    if (metrics_port)
        ms_log(LOG_INFO, "serve.metrics_listen", "serving GET /metrics without a token on http port %d",
               http_server_port(metrics_port));
    ms_log(LOG_INFO, "serve.ready", "serving %s on %s port %d (ready in %.3f s)", c->data, cert_pem ? "https" : "http",
           http_server_port(h), ms_mono_s() - t0);
    store_open_times ot = store_open_time(s); /* what a restart spends its time on */
    log_field of[] = {
        LOG_MS("heads_ms", ot.heads_s * 1000),
        LOG_UINT("head_chunks", ot.head_chunks),
        LOG_MS("replay_ms", ot.replay_s * 1000),
        LOG_UINT("replayed", ot.replayed),
        LOG_MS("keys_ms", ot.keys_s * 1000),
        LOG_MS("identities_ms", ot.identities_s * 1000),
        LOG_STR("identities_from", ot.identities_from_slots ? "key_file" : "scan"),
    };
    ms_log_fields(LOG_INFO, "serve.store_open", of, LOG_NFIELDS(of), "store opened in %.3f s", ot.total_s);
    int sig;
    sigwait(&stop, &sig);
    ms_log(LOG_INFO, "serve.stopping", "stopping (signal %d)", sig);
    rc = 0;
out:
    if (rc) ms_log_cmd(LOG_ERROR, "serve.failed", "serve", "%s", e.msg);
    kafka_ingest_stop(kafka); /* the batch in hand is committed, then offsets */
    sink_postgres_stop(pg);
    sink_kafka_public_stop(public_stream);
    http_server_stop(metrics_port);
    notifier_close_streams(notify); /* event streams end now, so that the server's stop does not wait on them */
    http_server_stop(h);            /* no new requests; in-flight ones finish */
    if (refusals) api_audit_refusals(&a, true); /* the refusals without a user counted since their windows' first */
    notifier_stop(notify);                      /* webhook workers and the follower stop, their positions saved */
    export_jobs_stop(exports);                  /* a running export stops and removes what it wrote */
    free(cert_pem);
    free(key_pem);
    writer_stop(w); /* queued batches are committed */
    refusal_tally_free(refusals);
    reproject_stop(rp);           /* after the writer, which projects with its previous schema */
    counters_stop(live_counters); /* their state saved: a restart replays only what they had not applied */
    sink_lake_stop(lake);         /* then published: a clean stop leaves the lake holding every commit */
    store_close(s);
    schema_free(&sc);
    return rc;
}
