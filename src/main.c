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
 * (cmd_serve.c, cmd_import.c, cmd_export.c, cmd_erase.c, cmd_cluster_seed.c; commands.h is what they share with this
 * one). One subcommand is not in the table, listed nowhere: `rules-check`, the helper process the notifier starts
 * (this same binary, afresh) to compile a rule's regexes under CPU and memory limits (notify/rule_check.h).
 */
#include "commands.h"

#include "access/access.h"
#include "base/cluster_key.h"
#include "base/http_client_url.h"
#include "base/log.h"
#include "base/options.h"
#include "access/passwords.h"
#include "store/store.h"
#include "base/timefmt.h"
#include "access/users.h"
#include "notify/rule_check.h"
#include "pipeline/schema_canon.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Load `--roles FILE` into the access table (no file: the default table). */
bool load_roles(const char *path, const char *cmd)
{
    if (!path) return true;
    ms_err e = {0};
    char *text = read_text_file(path, &e);
    bool ok = text && access_load(text, strlen(text), &e) == MS_OK;
    free(text);
    if (!ok) ms_log_cmd(LOG_ERROR, "roles.invalid", cmd, "--roles %s: %s", path, e.msg);
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

bool store_schema_is_default(store *s, const char *cmd, const char *consequence)
{
    ms_err e = {0};
    store_read *r;
    store_schema_status st = {0};
    buf text = {0};
    bool found = false;
    uint32_t chosen = 0; /* the schema the store was last run with: the re-projection's target, or the one in force */
    ms_code rc = store_read_begin(s, &r, &e);
    if (rc == MS_OK) {
        rc = store_schema_status_get(r, &st, &e);
        chosen = st.target ? st.target : st.in_force;
        if (rc == MS_OK && chosen) rc = store_schema_text(r, chosen, &text, &found, &e);
        store_read_end(r);
    }
    bool same = rc == MS_OK && (!found || (text.len == strlen(SCHEMA_DEFAULT_CANONICAL) &&
                                           memcmp(text.data, SCHEMA_DEFAULT_CANONICAL, text.len) == 0));
    if (rc != MS_OK)
        ms_log_cmd(LOG_ERROR, "schema.unreadable", cmd, "cannot read the store's schema: %s", e.msg);
    else if (!same)
        ms_log_cmd(LOG_ERROR, "schema.not_default", cmd,
                   "the store's public copies are under schema version %u, not the default schema: give "
                   "--schema FILE, the schema serve runs with (without it %s)",
                   chosen, consequence);
    buf_free(&text);
    return same;
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
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);
}

static int init_run(const char *dir, uint64_t segment_size, const char *cluster_key_file);

static int cmd_init(int argc, char **argv)
{
    uint64_t segment_size = 0;
    const char *cluster_key_file = NULL;
    /* clang-format off */
    const option opts[] = {
        {.name = "--segment-size", .type = OPT_BYTES, .target = &segment_size, .def = "1GiB",
         .min = STORE_SEGMENT_SIZE_MIN, .help = "bytes per segment file of the body log (a multiple of 4KiB)"},
        {.name = "--cluster-key-file", .type = OPT_STRING, .target = &cluster_key_file, .metavar = "FILE",
         .help = "make the store with the cluster's secret (64 hex characters, mode 0600; README.md, \"Cluster "
                 "key\"), so that every node made with it gives the same patient ids; serve then needs the same file"},
        {0},
    };
    /* clang-format on */
    const options_command cmd = {"init", "medstream init DIR [options]",
                                 "Create a data directory (DIR new, or empty): the LMDB store, the segment log, and\n"
                                 "an admin user whose generated password is written to DIR/admin.password (mode 0600).",
                                 opts};
    options_args a;
    int code;
    if (options_parse_command(&cmd, argc, argv, 2, 1, &a, stdout, stderr, &code))
        code = a.npos != 1 || !*a.pos[0]            ? usage_error("init", "expected the data directory")
               : segment_size % STORE_SEGMENT_ALIGN ? usage_error("init", "--segment-size: expected a multiple of 4KiB")
                                                    : init_run(a.pos[0], segment_size, cluster_key_file);
    options_args_free(&a);
    return code;
}

/* init makes a new directory, fills an empty one (a mount point's lost+found aside), or finishes its own
 * (one with lmdb/: a rerun, or an init that was stopped): never a store among other files, which would then
 * share a directory with the PHI. False (the reason printed) when dir holds anything else. */
static bool init_dir_free(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return true; /* absent (store_open makes it), or not a directory (store_open says so) */
    unsigned others = 0;
    bool ours = false;
    for (struct dirent *de; (de = readdir(d));) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || !strcmp(de->d_name, "lost+found")) continue;
        ours |= !strcmp(de->d_name, "lmdb");
        others++;
    }
    closedir(d);
    if (!others || ours) return true;
    fprintf(stderr,
            "medstream init: %s is not empty (%u entries) and not a medstream data directory: init makes a new "
            "directory or fills an empty one\n",
            dir, others);
    return false;
}

static int init_run(const char *dir, uint64_t segment_size, const char *cluster_key_file)
{
    store *s;
    ms_err e;
    if (!init_dir_free(dir)) return 1;
    store_options so = {.segment_size = segment_size, .owner = "init"};
    unsigned char cluster_key[CLUSTER_KEY_BYTES];
    if (cluster_key_file) {
        if (cluster_key_load(cluster_key_file, cluster_key, &e) != MS_OK) {
            fprintf(stderr, "medstream init: %s\n", e.msg);
            return 1;
        }
        so.cluster_key = cluster_key;
    }
    ms_code opened = store_open(&s, dir, &so, &e);
    OPENSSL_cleanse(cluster_key, sizeof cluster_key);
    if (opened != MS_OK) {
        fprintf(stderr, "medstream init: %s\n", e.msg);
        return 1;
    }
    /* the store's own directory, owner only, whatever mode an empty one it fills was made with */
    if (chmod(dir, 0700) != 0)
        fprintf(stderr, "medstream init: cannot make %s mode 0700 (%s): other local users may enter it\n", dir,
                strerror(errno));
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
         .help = "new data directory for the copy (absent, or empty; outside --data)"},
        {0},
    };
    /* clang-format on */
    const options_command cmd = {
        "backup", "medstream backup --data DIR --out DIR",
        "Copy the store in DIR, as of one instant, into OUT: a data directory `medstream serve`\n"
        "can open. LMDB's compacting copy, then the segment files up to the end that copy\n"
        "records, nothing past it. Reads without locking DIR, so it may run beside `medstream\n"
        "serve`, which goes on writing (commits after the copy began are not in it). Copies the\n"
        "store only: not admin.password, and no bearer token (sign in again on a restored copy);\n"
        "the copy holds the store's secrets (its id key, password hashes), so keep it as you keep\n"
        "DIR. OUT must not exist or be empty, and lie outside DIR.",
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
    char swept[120] = "";
    if (info.partials_removed == 1)
        snprintf(swept, sizeof swept, "; removed a partial copy left by an interrupted backup");
    else if (info.partials_removed)
        snprintf(swept, sizeof swept, "; removed %u partial copies left by interrupted backups", info.partials_removed);
    printf("backup of %s in %s: commit %llu (%s), log end %llu in %u segment files of %llu bytes, LMDB %llu "
           "bytes, %llu bearer tokens left out (sign in again on a restored copy), %.1f s%s%s\n",
           data, out, (unsigned long long)info.commit_pos, when, (unsigned long long)info.log_end, info.segments,
           (unsigned long long)info.segment_size, (unsigned long long)info.lmdb_bytes,
           (unsigned long long)info.tokens_dropped, ms_mono_s() - t0, live, swept);
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
        fprintf(stderr, "medstream user: unknown command '%s'\n", argv[2]);
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

const char *url_option_check(const char *url)
{
    static char why[400];
    http_client_url parsed;
    char bad[300];
    if (!url || http_client_url_parse(url, &parsed, bad, sizeof bad) == HTTP_CLIENT_OK) return NULL;
    snprintf(why, sizeof why, "--url: %s", bad);
    return why;
}

char *read_text_file(const char *path, ms_err *e)
{
    buf b = {0};
    if (buf_read_settings_file(&b, path, e) != MS_OK) {
        buf_free(&b);
        return NULL;
    }
    return buf_take(&b);
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
    {"cluster-seed", "", "seed a new cluster from an existing store, its patients keeping their ids", cmd_cluster_seed},
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
    /* PHI in the clear, passwords and the store's keys live in this process's memory: a core dump would write
     * them to a file outside the store's encryption and erasure. None is ever written (hard limit 0: the
     * process cannot raise it again). */
    struct rlimit no_core = {0, 0};
    (void)setrlimit(RLIMIT_CORE, &no_core);
    if (!strcmp(name, RULE_CHECK_COMMAND)) { /* the notifier's own helper (notify/rule_check.h), not a command */
        ms_err e = {0};
        if (rule_check_serve(0, 1, true, &e) == MS_OK) return 0;
        fprintf(stderr, "medstream %s\n", e.msg);
        return 1;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(name, commands[i].name)) return commands[i].run(argc, argv);
    fprintf(stderr, "medstream: unknown command '%s'\n", name);
    usage(stderr);
    return 2;
}
