/*
 * main.c - the medstream command line: init, serve, user, roles, audit, bench. Each command (and each
 * `user` subcommand) has one option table (options.h) from which its --help comes. Exit codes: 0 ok,
 * 1 runtime failure, 2 usage.
 *
 * This file wires the parts together and owns process concerns (signals, exit codes); it holds no
 * pipeline logic.
 */
#include "access/access.h"
#include "api/api_routes.h"
#include "api/http_server.h"
#include "ingest/ingest_kafka.h"
#include "sinks/sink_kafka_public.h"
#include "sinks/sink_postgres.h"
#include "base/metrics.h"
#include "base/options.h"
#include "access/passwords.h"
#include "pipeline/schema.h"
#include "store/store.h"
#include "base/timefmt.h"
#include "access/users.h"
#include "ingest/writer.h"

#include <pwd.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* Who changes accounts from this machine's command line: the OS user, for the audit entries. */
static void local_actor(char *out, size_t cap)
{
    const struct passwd *pw = getpwuid(geteuid());
    if (pw)
        snprintf(out, cap, "local:%s", pw->pw_name);
    else
        snprintf(out, cap, "local:uid %u", (unsigned)geteuid());
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
    store_options so = {.segment_size = segment_size, .owner = "init"};
    if (store_open(&s, pos[0], &so, &e) != MS_OK) {
        fprintf(stderr, "medstream init: %s\n", e.msg);
        return 1;
    }
    char path[4096], actor[96];
    snprintf(path, sizeof path, "%s/%s", pos[0], USERS_ADMIN_PASSWORD_FILE);
    local_actor(actor, sizeof actor);
    ms_code rc = users_create_admin(s, path, actor, &e);
    store_close(s);
    if (rc != MS_OK) {
        fprintf(stderr, "medstream init: %s%s\n", e.msg, rc == MS_ECONFLICT ? " (already initialized?)" : "");
        return 1;
    }
    printf("initialized %s\n"
           "admin password in %s (mode 0600); change it with: medstream user passwd admin --data %s, or\n"
           "PUT /v1/users/admin/password; the file is removed then\n",
           pos[0], path, pos[0]);
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
                     "reordering. Reads without locking DIR, so it may run beside `medstream serve` (it says so).",
                     opts);
        return 0;
    }
    if (n < 0) return usage_error("audit", err);
    if (n != 1 || strcmp(pos[0], "verify") != 0) return usage_error("audit", "expected: audit verify --data DIR");
    if (!data_dir_ready("audit", data)) return 1;
    store *s;
    ms_err e = {0};
    store_options so = {.owner = "audit", .read_only = true}; /* beside a running server: no lock */
    if (store_open(&s, data, &so, &e) != MS_OK) {
        fprintf(stderr, "medstream audit: %s\n", e.msg);
        return 1;
    }
    uint64_t entries = 0, bad = 0;
    unsigned char head[32];
    char why[256];
    ms_code rc = store_audit_verify(s, &entries, head, &bad, why, sizeof why, &e);
    char live[200] = "";
    if (store_live_writer(s))
        snprintf(live, sizeof live, " (read while medstream %s is running: entries after this read are not checked)",
                 store_live_writer(s));
    store_close(s);
    if (rc != MS_OK) {
        fprintf(stderr, "medstream audit: %s\n", e.msg);
        return 1;
    }
    if (bad) {
        printf("audit log BROKEN at entry %llu: %s%s\n", (unsigned long long)bad, why, live);
        return 1;
    }
    printf("audit log intact: %llu entries, head sha256 ", (unsigned long long)entries);
    for (int i = 0; i < 32; i++)
        printf("%02x", head[i]);
    printf("%s\n", live);
    return 0;
}

/* `medstream backup --data DIR --out DIR`: an online copy of the store (store_backup), beside a server. */
static int cmd_backup(int argc, char **argv)
{
    const char *data = NULL, *out = NULL;
    const option opts[] = {
        {"--data", OPT_STRING, NULL, true, "data directory to copy", &data},
        {"--out", OPT_STRING, NULL, true, "new data directory for the copy (absent, or empty)", &out},
        {0},
    };
    const char *pos[1];
    char err[256];
    int n = options_parse(opts, argc, argv, 2, pos, 0, err, sizeof err);
    if (n == -2) {
        options_help(stdout, "medstream backup --data DIR --out DIR",
                     "Copy the store in DIR, as of one instant, into OUT: a data directory `medstream serve`\n"
                     "can open. LMDB's compacting copy, then the segment files up to the end that copy\n"
                     "records, nothing past it. Reads without locking DIR, so it may run beside `medstream\n"
                     "serve`, which goes on writing (commits after the copy began are not in it). Copies the\n"
                     "store only: not admin.password; the copy holds the store's secrets (its id key,\n"
                     "password and token hashes), so keep it as you keep DIR. OUT must not exist or be empty.",
                     opts);
        return 0;
    }
    if (n < 0) return usage_error("backup", err);
    if (!data_dir_ready("backup", data)) return 1;
    store *s;
    ms_err e = {0};
    store_options so = {.owner = "backup", .read_only = true}; /* beside a running server: no lock */
    if (store_open(&s, data, &so, &e) != MS_OK) {
        fprintf(stderr, "medstream backup: %s\n", e.msg);
        return 1;
    }
    store_backup_info info;
    double t0 = ms_mono_s();
    ms_code rc = store_backup(s, out, &info, &e);
    char live[200] = "";
    if (store_live_writer(s))
        snprintf(live, sizeof live, " (copied while medstream %s is running: later commits are not in it)",
                 store_live_writer(s));
    store_close(s);
    if (rc != MS_OK) {
        fprintf(stderr, "medstream backup: %s\n", e.msg);
        return 1;
    }
    char when[40] = "-";
    if (info.last_commit) time_format_rfc3339(info.last_commit, when, sizeof when);
    printf("backup of %s in %s: commit %llu (%s), log end %llu in %u segment files of %llu bytes, LMDB %llu "
           "bytes, %.1f s%s\n",
           data, out, (unsigned long long)info.commit_pos, when, (unsigned long long)info.log_end, info.segments,
           (unsigned long long)info.segment_size, (unsigned long long)info.lmdb_bytes, ms_mono_s() - t0, live);
    return 0;
}

/* ---- `medstream user ...`: accounts offline (no server may run on DIR) ---- */

typedef struct {
    const char *name;  /* the subcommand */
    const char *usage; /* what follows `medstream user` */
    int npos;          /* positional arguments after the subcommand */
    bool role_option;  /* takes --role */
    const char *about;
} user_command;

static const user_command user_commands[] = {
    {"add", "add NAME --role ROLE --data DIR   (password on standard input)", 1, true, "Add a user."},
    {"list", "list --data DIR", 0, false, "List the accounts: user, role, disabled, created."},
    {"set-role", "set-role NAME ROLE --data DIR", 2, false, "Give a user another role."},
    {"disable", "disable NAME --data DIR", 1, false, "Disable a user: it cannot log in and its tokens are revoked."},
    {"enable", "enable NAME --data DIR", 1, false, "Enable a disabled user again."},
    {"passwd", "passwd NAME --data DIR   (new password on standard input)", 1, false,
     "Set a user's password; its tokens are revoked (for admin: DIR/admin.password is removed)."},
    {"delete", "delete NAME --data DIR", 1, false, "Delete a user; its tokens are revoked."},
};
enum { N_USER_COMMANDS = sizeof user_commands / sizeof user_commands[0] };

static void user_usage(FILE *f)
{
    fprintf(f, "usage: medstream user COMMAND ...   (medstream user COMMAND --help for each)\n\n"
               "Manage accounts offline, on the data directory of a stopped server. Every change is audited\n"
               "(actor local:<OS user>, client cli), as the same change over HTTP is.\n\ncommands:\n");
    for (int i = 0; i < N_USER_COMMANDS; i++)
        fprintf(f, "  %s\n", user_commands[i].usage);
}

/* One line of standard input (a password), without its line end; false if there is none. */
static bool read_password_line(char *out, size_t cap, size_t *len)
{
    if (!fgets(out, (int)cap, stdin)) return false;
    *len = strcspn(out, "\r\n");
    out[*len] = 0;
    return true;
}

static bool print_account(void *ctx, const store_account *acc)
{
    (void)ctx;
    char created[40] = "-";
    if (acc->created) time_format_rfc3339(acc->created, created, sizeof created);
    printf("%-24s %-12s %-8s %s\n", acc->name, acc->role, acc->disabled ? "yes" : "no", created);
    return true;
}

static int user_list(store *s)
{
    store_read *r;
    ms_err e = {0};
    ms_code rc = store_read_begin(s, &r, &e);
    if (rc == MS_OK) {
        printf("%-24s %-12s %-8s %s\n", "user", "role", "disabled", "created");
        rc = store_account_list(r, print_account, NULL, &e);
        store_read_end(r);
    }
    if (rc != MS_OK) fprintf(stderr, "medstream user: %s\n", e.msg);
    return rc == MS_OK ? 0 : 1;
}

static int cmd_user(int argc, char **argv)
{
    if (argc < 3 || !strcmp(argv[2], "--help") || !strcmp(argv[2], "-h")) {
        user_usage(argc < 3 ? stderr : stdout);
        return argc < 3 ? 2 : 0;
    }
    const user_command *uc = NULL;
    for (int i = 0; i < N_USER_COMMANDS; i++)
        if (!strcmp(argv[2], user_commands[i].name)) uc = &user_commands[i];
    if (!uc) {
        user_usage(stderr);
        return 2;
    }
    const char *data = NULL, *role = NULL, *roles = NULL;
    const option opts[] = {
        {"--data", OPT_STRING, NULL, true, "data directory", &data},
        {"--roles", OPT_STRING, NULL, false, "role file (JSON) of the server, if it has one (serve --roles)", &roles},
        /* add only (a NULL name ends the table here for the others) */
        {uc->role_option ? "--role" : NULL, OPT_STRING, NULL, true, "role (see medstream roles)", &role},
        {0},
    };
    const char *pos[2];
    char err[256], usage[160];
    snprintf(usage, sizeof usage, "medstream user %s", uc->usage);
    int n = options_parse(opts, argc, argv, 3, pos, uc->npos, err, sizeof err);
    if (n == -2) {
        options_help(stdout, usage, uc->about, opts);
        return 0;
    }
    if (n < 0) return usage_error("user", err);
    if (n != uc->npos) {
        fprintf(stderr, "medstream user: expected: %s\n", usage);
        return 2;
    }
    if (!load_roles(roles, "user") || !data_dir_ready("user", data)) return 1;
    char password[1100], hash[PASSWORD_ENCODED_MAX];
    size_t len = 0;
    bool needs_password = !strcmp(uc->name, "add") || !strcmp(uc->name, "passwd");
    if (needs_password && !read_password_line(password, sizeof password, &len))
        return usage_error("user", "no password on standard input");
    ms_err e = {0};
    if (needs_password) { /* hashed before the write transaction, as the server does */
        ms_code hrc = password_hash(password, len, hash, &e);
        memset(password, 0, sizeof password);
        if (hrc != MS_OK) {
            fprintf(stderr, "medstream user: %s\n", e.msg);
            return 1;
        }
    }
    store *s;
    store_options so = {.owner = "user", .read_only = !strcmp(uc->name, "list")};
    if (store_open(&s, data, &so, &e) != MS_OK) {
        fprintf(stderr, "medstream user: %s\n", e.msg);
        return 1;
    }
    if (!strcmp(uc->name, "list")) {
        int rc = user_list(s);
        store_close(s);
        return rc;
    }
    char actor[96], resource[128];
    local_actor(actor, sizeof actor);
    user_change c = {.name = pos[0],
                     .disabled = -1,
                     .hash = hash,
                     .actor = actor,
                     .actor_role = "",
                     .client = "cli",
                     .resource = resource};
    const char *suffix = "";
    if (!strcmp(uc->name, "add")) {
        c.kind = USER_CREATE, c.role = role, c.resource = "/v1/users";
    } else if (!strcmp(uc->name, "set-role")) {
        c.kind = USER_UPDATE, c.role = pos[1];
    } else if (!strcmp(uc->name, "disable") || !strcmp(uc->name, "enable")) {
        c.kind = USER_UPDATE, c.disabled = !strcmp(uc->name, "disable");
    } else if (!strcmp(uc->name, "passwd")) {
        c.kind = USER_PASSWORD, suffix = "/password";
    } else {
        c.kind = USER_DELETE;
    }
    snprintf(resource, sizeof resource, "/v1/users/%s%s", pos[0], suffix); /* the API path of the same change */
    ms_code rc = users_apply_local(s, &c, &e);
    store_close(s);
    memset(hash, 0, sizeof hash);
    if (rc == MS_OK && c.refusal.code != MS_OK) rc = ms_fail(&e, c.refusal.code, "%s", c.refusal.msg);
    if (rc != MS_OK) {
        fprintf(stderr, "medstream user %s: %s\n", uc->name, e.msg);
        return 1;
    }
    if ((c.kind == USER_PASSWORD || c.kind == USER_DELETE) && !strcmp(c.name, USERS_ADMIN)) {
        if (users_admin_password_remove(data, &e) != MS_OK) fprintf(stderr, "medstream user: %s\n", e.msg);
    }
    switch (c.kind) {
    case USER_CREATE: printf("added user %s (%s)\n", c.name, c.account.role); break;
    case USER_UPDATE:
        printf("user %s: role %s, %s", c.name, c.account.role, c.account.disabled ? "disabled" : "enabled");
        if (c.revoked) printf(" (%llu tokens revoked)", (unsigned long long)c.revoked);
        printf("\n");
        break;
    case USER_PASSWORD:
        printf("password of %s changed (%llu tokens revoked)\n", c.name, (unsigned long long)c.revoked);
        break;
    case USER_DELETE: printf("deleted user %s (%llu tokens revoked)\n", c.name, (unsigned long long)c.revoked); break;
    case USER_REVOKE_TOKENS: break;
    }
    return 0;
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
    store_options so = {map_size, segment_size, body_cache, .owner = "serve"};
    double t0 = ms_mono_s();
    if (store_open(&s, data, &so, &e) != MS_OK) goto out;
    metrics_set_data_dir(data);
    if (writer_start(&w, s, &sc, &e) != MS_OK) goto out;
    api a = {
        .store = s, .writer = w, .schema = &sc, .max_record = max_record, .token_ttl_s = token_ttl, .data_dir = data};
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

/* The benchmark tools live in their own binary beside this one (tools/bench/): run it with the same
 * arguments. Returns only if it cannot be started. */
static int run_tool(const char *tool, int argc, char **argv)
{
    (void)argc;
    char self[4096], path[4200];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        fprintf(stderr, "medstream %s: cannot find this program's directory: %s\n", argv[1], strerror(errno));
        return 1;
    }
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    snprintf(path, sizeof path, "%s/%s", self, tool);
    argv[0] = path;
    execv(path, argv);
    fprintf(stderr, "medstream %s: cannot run %s: %s (build it with: make)\n", argv[1], path, strerror(errno));
    return 1;
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
            "  user         accounts offline: add, list, set-role, disable, enable, passwd, delete\n"
            "  roles        print the roles and their permissions\n"
            "  audit verify re-walk the audit log's hash chain\n"
            "  backup       copy a live store, as of one instant, into a new data directory\n"
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
    if (!strcmp(cmd, "bench") || !strcmp(cmd, "preload")) return run_tool("medstream-bench", argc, argv);
    if (!strcmp(cmd, "roles")) return cmd_roles(argc, argv);
    if (!strcmp(cmd, "user")) return cmd_user(argc, argv);
    if (!strcmp(cmd, "audit")) return cmd_audit(argc, argv);
    if (!strcmp(cmd, "backup")) return cmd_backup(argc, argv);
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
