/*
 * main.c - the medstream command line. A command table (name, arguments, one-line summary, handler) from
 * which `medstream --help` lists every command, and per command one option table (base/options.h) from
 * which its parsing, range and value checks, --help, its `--config FILE` keys and its section of
 * docs/options.md (`medstream help-reference`) all come. Exit codes: 0 ok, 1 runtime failure, 2 usage.
 *
 * A rule about one option is its table entry (a range, the allowed values, required); a rule between
 * options (--tls-cert with --tls-key) is an explicit check here, with a message naming both.
 *
 * This file wires the parts together and owns process concerns (signals, exit codes, running the
 * benchmark tool); it holds no pipeline logic. Adding a command is one line of the command table and a
 * handler that parses with options_parse_command; the long bulk commands have a file each
 * (cmd_import.c, cmd_export.c; commands.h is what they share with this one).
 */
#include "commands.h"

#include "access/access.h"
#include "api/api_routes.h"
#include "api/http_server.h"
#include "notify/notifier.h"
#include "api/metrics_listener.h"
#include "access/audit.h"
#include "export/export.h"
#include "ingest/ingest_kafka.h"
#include "ingest/reproject.h"
#include "sinks/sink_kafka_public.h"
#include "sinks/sink_lake.h"
#include "sinks/sink_postgres.h"
#include "views/counters.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/options.h"
#include "access/passwords.h"
#include "pipeline/schema.h"
#include "store/store.h"
#include "base/timefmt.h"
#include "access/users.h"
#include "ingest/writer.h"

#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *read_text_file(const char *path, ms_err *e);

/* Load `--roles FILE` into the access table (no file: the default table). */
static bool load_roles(const char *path, const char *cmd)
{
    if (!path) return true;
    ms_err e = {0};
    char *text = read_text_file(path, &e);
    bool ok = text && access_load(text, strlen(text), &e) == MS_OK;
    free(text);
    if (!ok) ms_log_cmd(LOG_ERROR, "roles.invalid", cmd, "%s", e.msg);
    return ok;
}

int usage_error(const char *cmd, const char *msg)
{
    fprintf(stderr, "medstream %s: %s (see medstream %s --help)\n", cmd, msg, cmd);
    return 2;
}

/* serve, user and audit work on a directory `medstream init` made; a mistyped --data must not start an
 * empty store (no users, nothing in it) as if it were the real one. */
bool data_dir_ready(const char *cmd, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/lmdb/data.mdb", dir);
    if (access(path, F_OK) == 0) return true;
    ms_log_cmd(LOG_ERROR, "data_dir.missing", cmd,
               "%s is not a medstream data directory (make one with: medstream init %s)", dir, dir);
    return false;
}

/* Who changes accounts from this machine's command line: the OS user, for the audit entries. */
void local_actor(char *out, size_t cap)
{
    const struct passwd *pw = getpwuid(geteuid());
    if (pw)
        snprintf(out, cap, "local:%s", pw->pw_name);
    else
        snprintf(out, cap, "local:uid %u", (unsigned)geteuid());
}

atomic_bool command_stop;

static void on_stop_signal(int sig)
{
    (void)sig;
    atomic_store(&command_stop, true);
}

void stop_on_signals(void)
{
    struct sigaction sa = {.sa_handler = on_stop_signal, .sa_flags = SA_RESETHAND | SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);
}

static int init_run(const char *dir, uint64_t segment_size);

static int cmd_init(int argc, char **argv)
{
    uint64_t segment_size = 0;
    /* clang-format off */
    const option opts[] = {
        {.name = "--segment-size", .type = OPT_BYTES, .target = &segment_size, .def = "1GiB",
         .help = "bytes per segment file of the body log"},
        {0},
    };
    /* clang-format on */
    const options_command cmd = {"init", "medstream init DIR [options]",
                                 "Create a data directory: the LMDB store, the segment log, and an admin user whose\n"
                                 "generated password is written to DIR/admin.password (mode 0600).",
                                 opts};
    options_args a;
    int code;
    if (options_parse_command(&cmd, argc, argv, 2, 1, &a, stdout, stderr, &code))
        code = a.npos != 1 ? usage_error("init", "expected the data directory") : init_run(a.pos[0], segment_size);
    options_args_free(&a);
    return code;
}

static int init_run(const char *dir, uint64_t segment_size)
{
    store *s;
    ms_err e;
    store_options so = {.segment_size = segment_size, .owner = "init"};
    if (store_open(&s, dir, &so, &e) != MS_OK) {
        fprintf(stderr, "medstream init: %s\n", e.msg);
        return 1;
    }
    char path[4096], actor[96];
    snprintf(path, sizeof path, "%s/%s", dir, USERS_ADMIN_PASSWORD_FILE);
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
           dir, path, dir);
    return 0;
}

static int cmd_roles(int argc, char **argv)
{
    const char *roles = NULL;
    /* clang-format off */
    const option opts[] = {
        {.name = "--roles", .type = OPT_STRING, .target = &roles, .metavar = "FILE",
         .help = "role file (JSON) to print instead of the default table"},
        {0},
    };
    /* clang-format on */
    const options_command cmd = {"roles", "medstream roles [options]",
                                 "Print the roles and their permissions (c r u d per resource).", opts};
    options_args a;
    int code;
    if (options_parse_command(&cmd, argc, argv, 2, 0, &a, stdout, stderr, &code)) {
        code = load_roles(roles, "roles") ? 0 : 1;
        if (code == 0) access_print(stdout);
    }
    options_args_free(&a);
    return code;
}

/* `medstream audit verify --data DIR`: re-walk the hash chain. */
static int audit_verify(const char *data);

static int cmd_audit(int argc, char **argv)
{
    const char *data = NULL;
    /* clang-format off */
    const option opts[] = {
        {.name = "--data", .type = OPT_STRING, .target = &data, .required = true, .metavar = "DIR",
         .help = "data directory"},
        {0},
    };
    /* clang-format on */
    const options_command cmd = {
        "audit", "medstream audit verify --data DIR",
        "Re-walk the audit log's hash chain: exit 0 and print the head hash (anchor it outside\n"
        "this machine) if intact; exit 1 naming the first bad entry on any edit, deletion or\n"
        "reordering. Reads without locking DIR, so it may run beside `medstream serve` (it says so).",
        opts};
    options_args a;
    int code;
    if (options_parse_command(&cmd, argc, argv, 2, 1, &a, stdout, stderr, &code))
        code = a.npos != 1 || strcmp(a.pos[0], "verify") != 0
                   ? usage_error("audit", "expected: audit verify --data DIR")
                   : audit_verify(data);
    options_args_free(&a);
    return code;
}

static int backup_run(const char *data, const char *out);

/* `medstream backup --data DIR --out DIR`: an online copy of the store (store_backup), beside a server. */
static int cmd_backup(int argc, char **argv)
{
    const char *data = NULL, *out = NULL;
    /* clang-format off */
    const option opts[] = {
        {.name = "--data", .type = OPT_STRING, .target = &data, .required = true, .metavar = "DIR",
         .help = "data directory to copy"},
        {.name = "--out", .type = OPT_STRING, .target = &out, .required = true, .metavar = "DIR",
         .help = "new data directory for the copy (absent, or empty)"},
        {0},
    };
    /* clang-format on */
    const options_command cmd = {
        "backup", "medstream backup --data DIR --out DIR",
        "Copy the store in DIR, as of one instant, into OUT: a data directory `medstream serve`\n"
        "can open. LMDB's compacting copy, then the segment files up to the end that copy\n"
        "records, nothing past it. Reads without locking DIR, so it may run beside `medstream\n"
        "serve`, which goes on writing (commits after the copy began are not in it). Copies the\n"
        "store only: not admin.password; the copy holds the store's secrets (its id key,\n"
        "password and token hashes), so keep it as you keep DIR. OUT must not exist or be empty.",
        opts};
    options_args a;
    int code;
    if (options_parse_command(&cmd, argc, argv, 2, 0, &a, stdout, stderr, &code)) code = backup_run(data, out);
    options_args_free(&a);
    return code;
}

static int backup_run(const char *data, const char *out)
{
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

static int audit_verify(const char *data)
{
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

/* The values of a `user` subcommand's options. */
typedef struct {
    const char *data, *role, *roles;
} user_values;

/* The option table of subcommand uc (opts has room for 4) and the command as help shows it. */
static options_command user_options(const user_command *uc, user_values *v, option *opts, char *name, size_t name_cap,
                                    char *usage, size_t usage_cap)
{
    /* clang-format off */
    opts[0] = (option){.name = "--data", .type = OPT_STRING, .target = &v->data, .required = true, .metavar = "DIR",
                       .help = "data directory"};
    opts[1] = (option){.name = "--roles", .type = OPT_STRING, .target = &v->roles, .metavar = "FILE",
                       .help = "role file (JSON) of the server, if it has one (serve --roles)"};
    opts[2] = uc->role_option ? (option){.name = "--role", .type = OPT_STRING, .target = &v->role, .required = true,
                                         .metavar = "ROLE", .help = "role (see medstream roles)"}
                              : (option){0};
    /* clang-format on */
    opts[3] = (option){0};
    snprintf(name, name_cap, "user %s", uc->name);
    snprintf(usage, usage_cap, "medstream user %s", uc->usage);
    return (options_command){name, usage, uc->about, opts};
}

static int user_run(const user_command *uc, const user_values *v, const char *const *pos);

static int cmd_user(int argc, char **argv)
{
    if (argc < 3 || !strcmp(argv[2], "--help") || !strcmp(argv[2], "-h")) {
        user_usage(argc < 3 ? stderr : stdout);
        return argc < 3 ? 2 : 0;
    }
    option opts[4];
    user_values v;
    char name[64], usage[160];
    if (!strcmp(argv[2], "--help-markdown")) { /* every subcommand's section of the reference */
        for (int i = 0; i < N_USER_COMMANDS; i++) {
            options_command cmd = user_options(&user_commands[i], &v, opts, name, sizeof name, usage, sizeof usage);
            options_reference(stdout, &cmd);
        }
        return 0;
    }
    const user_command *uc = NULL;
    for (int i = 0; i < N_USER_COMMANDS; i++)
        if (!strcmp(argv[2], user_commands[i].name)) uc = &user_commands[i];
    if (!uc) {
        user_usage(stderr);
        return 2;
    }
    options_command cmd = user_options(uc, &v, opts, name, sizeof name, usage, sizeof usage);
    options_args a;
    int code;
    if (options_parse_command(&cmd, argc, argv, 3, uc->npos, &a, stdout, stderr, &code)) {
        if (a.npos == uc->npos) {
            code = user_run(uc, &v, a.pos);
        } else {
            fprintf(stderr, "medstream user: expected: %s\n", usage);
            code = 2;
        }
    }
    options_args_free(&a);
    return code;
}

static int user_run(const user_command *uc, const user_values *v, const char *const *pos)
{
    const char *data = v->data, *role = v->role;
    if (!load_roles(v->roles, "user") || !data_dir_ready("user", data)) return 1;
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

/* serve's settings: one field per option of its table. */
typedef struct {
    const char *data, *listen, *schema, *tls_cert, *tls_key, *roles;
    uint64_t max_body, max_record, max_inflight, map_size, segment_size, body_cache;
    uint64_t header_timeout_s, max_connections, max_connections_per_client, token_ttl_s;
    const char *kafka_brokers, *kafka_topic, *kafka_group, *kafka_dlq, *kafka_public;
    opt_list kafka_config;
    uint64_t kafka_batch, kafka_linger_ms;
    const char *postgres;
    int postgres_history;       /* index in pg_history_names */
    int log_format, access_log; /* indexes in log_format_names, on_off_names */
    const char *metrics_listen;
    bool metrics_listen_any;
    uint64_t export_keep, export_link_ttl_s;
    uint64_t reproject_rate;
    const char *lake;
    int lake_scope; /* index in export_scope_names */
    uint64_t lake_roll_s, lake_roll_bytes;
    const char *rules, *webhook_ca, *events_topic;
    uint64_t sse_max_streams, sse_heartbeat_s, webhook_timeout_s, webhook_max_backoff_s, webhook_max;
    const char *counters; /* --counters FILE */
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
    if (c->max_body > c->segment_size / 2) return "--segment-size must be at least twice --max-body";
    if (c->max_record > c->max_body) c->max_record = c->max_body;
    if (!c->tls_cert != !c->tls_key) return "--tls-cert and --tls-key go together";
    if (!c->kafka_brokers != !c->kafka_topic) return "--kafka-brokers and --kafka-topic go together";
    if (c->kafka_public && !c->kafka_brokers) return "--kafka-public-topic needs --kafka-brokers";
    if (c->events_topic && !c->kafka_brokers) return "--events-topic needs --kafka-brokers";
    if (c->metrics_listen_any && !c->metrics_listen) return "--metrics-listen-any needs --metrics-listen";
    if (c->lake && c->lake_scope == EXPORT_PHI)
        return "--lake-scope phi: not built: the lake holds the public copy only (PHI files outside the store would "
               "need their own access control and audit); export PHI with `medstream export --scope phi`";
    if (c->metrics_listen) {
        static char why[300];
        bool loopback = false;
        ms_err le;
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

static int cmd_serve(int argc, char **argv)
{
    serve_settings c;
    /* clang-format off */
    const option opts[] = {
        {.name = "--config", .type = OPT_CONFIG, .metavar = "FILE",
         .help = "read these options from FILE, one `key = value` a line, keys without -- (docs/options.md); "
                 "the command line overrides it"},
        {.name = "--data", .type = OPT_STRING, .target = &c.data, .required = true, .metavar = "DIR",
         .help = "data directory (made by medstream init)"},
        {.name = "--listen", .type = OPT_STRING, .target = &c.listen, .def = "127.0.0.1:8080", .metavar = "HOST:PORT",
         .help = "address to serve HTTP on, bound exclusively (port 0 picks one; :PORT binds every interface)"},
        {.name = "--schema", .type = OPT_STRING, .target = &c.schema, .metavar = "FILE",
         .help = "schema file (JSON) naming field roles and the public allow-list"},
        {.name = "--max-body", .type = OPT_BYTES, .target = &c.max_body, .def = "64MiB", .min = 64,
         .help = "largest request body; larger gets 413"},
        {.name = "--max-record", .type = OPT_BYTES, .target = &c.max_record, .def = "1MiB", .min = 64,
         .help = "largest record; larger is a rejected line (lowered to --max-body)"},
        {.name = "--max-inflight", .type = OPT_BYTES, .target = &c.max_inflight, .def = "512MiB",
         .min = HTTP_MAX_INFLIGHT_MIN, .help = "request body bytes held at once; beyond, 503 + Retry-After"},
        {.name = "--header-timeout", .type = OPT_SECONDS, .target = &c.header_timeout_s, .def = "10", .min = 1,
         .max = HTTP_HEADER_TIMEOUT_MAX_S,
         .help = "time for request headers to arrive, and the longest stall of a body; then the connection closes"},
        {.name = "--max-connections", .type = OPT_UINT, .target = &c.max_connections, .def = "512", .min = 1,
         .max = HTTP_CONNECTIONS_MAX, .help = "connections at once (lowered to fit the open-file limit)"},
        {.name = "--max-connections-per-client", .type = OPT_UINT, .target = &c.max_connections_per_client,
         .def = "64", .min = 1, .max = HTTP_CONNECTIONS_MAX,
         .help = "connections at once per client address; beyond, 503 + Retry-After"},
        {.name = "--map-size", .type = OPT_BYTES, .target = &c.map_size, .def = "1TiB",
         .help = "LMDB map size (address space, not disk)"},
        {.name = "--segment-size", .type = OPT_BYTES, .target = &c.segment_size, .def = "1GiB",
         .help = "bytes per segment file of the body log (at least twice --max-body)"},
        {.name = "--body-cache", .type = OPT_BYTES, .target = &c.body_cache, .def = "256MiB",
         .help = "recently written record bytes kept in memory for reads"},
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
         .help = "after a schema change, re-project at most N stored versions a second in the background (0: as "
                 "fast as it goes; the ingest writer never waits more than one step)"},
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

    schema sc;
    ms_err e = {0};
    if (c->schema) {
        if (schema_load_file(&sc, c->schema, &e) != MS_OK) {
            ms_log_cmd(LOG_ERROR, "serve.failed", "serve", "%s", e.msg);
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
    int rc = 1;
    store_options so = {c->map_size, c->segment_size, c->body_cache, .owner = "serve"};
    double t0 = ms_mono_s();
    if (store_open(&s, c->data, &so, &e) != MS_OK) goto out;
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
             .data_dir = c->data};
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
                           .events_topic = c->events_topic,
                           .kafka_brokers = c->kafka_brokers,
                           .kafka_config = c->kafka_config.v};
    if (notifier_start(&notify, &no, &e) != MS_OK) goto out;
    a.notifier = notify;
    counters_options co = {.store = s, .writer = w, .schema = &sc, .data_dir = c->data, .file = c->counters};
    if (counters_start(&live_counters, &co, &e) != MS_OK) goto out;
    a.counters = live_counters;
    http_handler hh = api_http_handler(&a);
    if (c->tls_cert && (!(cert_pem = read_text_file(c->tls_cert, &e)) || !(key_pem = read_text_file(c->tls_key, &e))))
        goto out;
    http_options ho = {.listen = c->listen,
                       .max_body = c->max_body,
                       .max_inflight = c->max_inflight,
                       .header_timeout_s = (long)c->header_timeout_s,
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
                           .max_connections = 16,
                           .max_connections_per_client = 8,
                           .access_log = ho.access_log};
        if (http_server_start(&metrics_port, &mo, &mh, &e) != MS_OK) goto out;
    }
    if (c->kafka_brokers) {
        char dlq[256];
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
                            .max_record = c->max_record};
        ms_code krc = kafka_ingest_start(&kafka, &ko, &e);
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
    notifier_stop(notify);          /* webhook workers and the follower stop, their positions saved */
    export_jobs_stop(exports);      /* a running export stops and removes what it wrote */
    free(cert_pem);
    free(key_pem);
    writer_stop(w);               /* queued batches are committed */
    reproject_stop(rp);           /* after the writer, which projects with its previous schema */
    counters_stop(live_counters); /* their state saved: a restart replays only what they had not applied */
    sink_lake_stop(lake);         /* then published: a clean stop leaves the lake holding every commit */
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

static int cmd_bench(int argc, char **argv) { return run_tool("medstream-bench", argc, argv); }
static int cmd_preload(int argc, char **argv) { return run_tool("medstream-bench", argc, argv); }
static int cmd_gen_import(int argc, char **argv) { return run_tool("medstream-bench", argc, argv); }

static int cmd_version(int argc, char **argv)
{
    const option none[] = {{0}};
    const options_command cmd = {"version", "medstream version", "Print the version.", none};
    options_args a;
    int code;
    if (options_parse_command(&cmd, argc, argv, 2, 0, &a, stdout, stderr, &code)) {
        printf("medstream %s\n", VERSION);
        code = 0;
    }
    options_args_free(&a);
    return code;
}

static int cmd_help_reference(int argc, char **argv);

/* Every command: `medstream --help` lists them, main() dispatches on them, `help-reference` documents
 * them. A command is one line here (name, what follows it, summary, handler). */
typedef struct {
    const char *name;
    const char *args;    /* shown after the name in the listing */
    const char *summary; /* one line */
    int (*run)(int argc, char **argv);
} command;

static const command commands[] = {
    {"init", "DIR", "create a data directory", cmd_init},
    {"serve", "", "serve the HTTP API on the embedded store", cmd_serve},
    {"user", "COMMAND", "accounts offline: add, list, set-role, disable, enable, passwd, delete", cmd_user},
    {"roles", "", "print the roles and their permissions", cmd_roles},
    {"audit", "verify", "re-walk the audit log's hash chain", cmd_audit},
    {"backup", "", "copy a live store, as of one instant, into a new data directory", cmd_backup},
    {"import", "FILE...", "import NDJSON or CSV files, offline or into a running server; resumable", cmd_import},
    {"export", "", "export records and patients as of an instant: Parquet, NDJSON or CSV in Hive layout", cmd_export},
    {"erase", "PATIENT_ID", "erase a patient offline (the right to be forgotten), with its certificate", cmd_erase},
    {"bench", "", "load generator and freshness probe against a running server", cmd_bench},
    {"preload", "DIR", "fill a fresh data directory with synthetic patients (for benchmarks)", cmd_preload},
    {"gen-import", "FILE", "write a file of synthetic records, NDJSON or CSV (for import benchmarks)", cmd_gen_import},
    {"version", "", "print the version", cmd_version},
    {"help-reference", "", "print every command's options as Markdown (docs/options.md)", cmd_help_reference},
};
enum { N_COMMANDS = sizeof commands / sizeof commands[0] };

static void usage(FILE *f)
{
    fprintf(f,
            "medstream %s - patient records in, deduplicated, versioned, de-identified\n\n"
            "usage: medstream COMMAND [options]   (medstream COMMAND --help for each)\n\n"
            "commands:\n",
            VERSION);
    for (int i = 0; i < N_COMMANDS; i++) {
        char left[40];
        snprintf(left, sizeof left, "%s%s%s", commands[i].name, commands[i].args[0] ? " " : "", commands[i].args);
        fprintf(f, "  %-16s %s\n", left, commands[i].summary);
    }
    fprintf(f, "\nExit codes: 0 ok, 1 runtime failure, 2 usage. Every option: docs/options.md.\n");
}

/* `medstream help-reference`: docs/options.md, every command's section from its own option table (each
 * command runs with --help-markdown in a child process, so that the tools in medstream-bench answer too). */
static int cmd_help_reference(int argc, char **argv)
{
    const option none[] = {{0}};
    const options_command cmd = {"help-reference", "medstream help-reference > docs/options.md",
                                 "Print every command's options as Markdown: docs/options.md (make docs).", none};
    options_args a;
    int code;
    bool go = options_parse_command(&cmd, argc, argv, 2, 0, &a, stdout, stderr, &code);
    options_args_free(&a);
    if (!go) return code;
    printf("# Command-line options\n"
           "\n"
           "<!-- Generated by `medstream help-reference` (`make docs`) from the option tables of src/main.c and\n"
           "     tools/bench/. Do not edit: a test fails when this file differs from what the program prints. -->\n"
           "\n"
           "Every command of `medstream` with its options: type, default, accepted values and what each does.\n"
           "The same tables give each command's `--help`, check every value given, and name the keys of a\n"
           "`--config` file. Every command also takes `--help`. Exit codes: 0 ok, 1 runtime failure, 2 usage.\n"
           "\n"
           "| command | |\n|---|---|\n");
    for (int i = 0; i < N_COMMANDS; i++)
        printf("| `%s%s%s` | %s |\n", commands[i].name, commands[i].args[0] ? " " : "", commands[i].args,
               commands[i].summary);
    printf("\n");
    options_reference_formats(stdout);
    printf("A service runs from a file: `medstream serve --config /etc/medstream/medstream.conf`, for example\n"
           "\n"
           "```\n"
           "# /etc/medstream/medstream.conf\n"
           "data = /var/lib/medstream\n"
           "listen = 0.0.0.0:8443\n"
           "tls-cert = /etc/medstream/cert.pem\n"
           "tls-key = /etc/medstream/key.pem\n"
           "max-body = 128MiB\n"
           "token-ttl = 8h\n"
           "kafka-brokers = kafka1:9093,kafka2:9093\n"
           "kafka-topic = records\n"
           "kafka-config = security.protocol=SASL_SSL\n"
           "kafka-config = sasl.mechanism=SCRAM-SHA-512\n"
           "```\n"
           "\n"
           "and `medstream serve --config FILE --listen 127.0.0.1:9090` runs the same with another address. For\n"
           "`--kafka-config`, a setting on the command line comes after the file's, so it wins for the same\n"
           "librdkafka property.\n"
           "\n");
    for (int i = 0; i < N_COMMANDS; i++) {
        if (commands[i].run == cmd_help_reference) continue;
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "medstream help-reference: fork: %s\n", strerror(errno));
            return 1;
        }
        if (pid == 0) {
            char name[32], flag[] = "--help-markdown";
            snprintf(name, sizeof name, "%s", commands[i].name);
            char *child_argv[] = {argv[0], name, flag, NULL};
            int rc = commands[i].run(3, child_argv);
            fflush(stdout);
            _exit(rc);
        }
        int status = 0;
        if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "medstream help-reference: medstream %s --help-markdown failed\n", commands[i].name);
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(name, "--version")) name = "version";
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(name, commands[i].name)) return commands[i].run(argc, argv);
    fprintf(stderr, "medstream: unknown command '%s'\n", name);
    usage(stderr);
    return 2;
}
