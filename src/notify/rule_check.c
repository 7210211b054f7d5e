/*
 * rule_check.c - each regex of a rule compiled alone in a helper process under CPU and memory limits, before
 * the server compiles it (see rule_check.h: the contract, and why a spawned helper rather than a fork).
 *
 * What it must never do: run a regex's compile in the server's process, leave a helper unreaped, or kill any
 * process but the helper it started (by its pid).
 */
#include "notify/rule_check.h"

#include "base/fd_io.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_OVER_CPU 99 /* the helper's exit status when its CPU limit ended a compile */
#define LINE_MAX_BYTES 480

extern char **environ;

/* ---- the helper's side ---- */

static void on_xcpu(int sig)
{
    (void)sig;
    _exit(EXIT_OVER_CPU);
}

static double cpu_now(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

/* The soft CPU limit: S seconds from now (rounded up to the limit's whole seconds), never above the hard one. */
static void arm_cpu(double used)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_CPU, &rl) != 0) return;
    double until = used + RULE_CHECK_CPU_S;
    rlim_t want = (rlim_t)until;
    if ((double)want < until) want++;
    rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max ? rl.rlim_max : want;
    setrlimit(RLIMIT_CPU, &rl);
}

/* 1 all read, 0 EOF before the first byte, -1 an error or EOF inside. */
static int read_full(int fd, void *p, size_t n)
{
    size_t got;
    if (ms_read_full(fd, p, n, -1, &got)) return -1;
    return got == n ? 1 : got == 0 ? 0 : -1;
}

/* sock: fd is the server's end of the socketpair (send, no SIGPIPE should the helper be gone); else the
 * helper's output (write: a pipe too, when run by hand). */
static bool write_full(int fd, const char *p, size_t n, bool sock)
{
    while (n) {
        ssize_t w = sock ? send(fd, p, n, MSG_NOSIGNAL) : write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

ms_code rule_check_serve(int in, int out, bool limits, ms_err *e)
{
    if (limits) {
        struct rlimit none = {0, 0};
        setrlimit(RLIMIT_CORE, &none);
#if !defined(__SANITIZE_ADDRESS__)
        struct rlimit as = {RULE_CHECK_MEMORY, RULE_CHECK_MEMORY};
        if (setrlimit(RLIMIT_AS, &as) != 0)
            return ms_fail(e, MS_EIO, "rules-check: cannot limit memory: %s", strerror(errno));
#endif
        struct sigaction sa = {.sa_handler = on_xcpu};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGXCPU, &sa, NULL);
    }
    char *regex = ms_malloc(RULE_REGEX_MAX + 1);
    ms_code rc = MS_OK;
    for (;;) {
        unsigned char len4[4];
        int got = read_full(in, len4, 4);
        if (got == 0) break;
        uint32_t len = (uint32_t)len4[0] | (uint32_t)len4[1] << 8 | (uint32_t)len4[2] << 16 | (uint32_t)len4[3] << 24;
        if (got < 0 || len == 0 || len > RULE_REGEX_MAX || read_full(in, regex, len) != 1) {
            rc = ms_fail(e, MS_EIO, "rules-check: a broken request");
            break;
        }
        regex[len] = 0;
        double t0 = cpu_now();
        if (limits) arm_cpu(t0);
        char why[LINE_MAX_BYTES - 8], line[LINE_MAX_BYTES];
        int n;
        if (rule_regex_compiles(regex, why, sizeof why)) {
            n = snprintf(line, sizeof line, "ok %llu\n", (unsigned long long)((cpu_now() - t0) * 1e6 + 0.5));
        } else {
            for (char *c = why; *c; c++)
                if (*c == '\n' || *c == '\r') *c = ' ';
            n = snprintf(line, sizeof line, "no %s\n", why);
        }
        if (!write_full(out, line, (size_t)n, false)) {
            rc = ms_fail(e, MS_EIO, "rules-check: cannot answer: %s", strerror(errno));
            break;
        }
    }
    free(regex);
    return rc;
}

/* ---- the server's side ---- */

typedef struct {
    pid_t pid; /* -1: none running */
    int fd;
} helper;

static ms_code helper_start(const char *program, helper *h, ms_err *e)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return ms_fail(e, MS_EIO, "rules: cannot check regexes: socketpair: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 0); /* dup2 clears FD_CLOEXEC on the copies */
    posix_spawn_file_actions_adddup2(&fa, sv[1], 1);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3); /* nothing else of the server's lives on in the helper */
    posix_spawnattr_init(&at);
    sigset_t none, dflt;
    sigemptyset(&none);
    sigemptyset(&dflt);
    sigaddset(&dflt, SIGXCPU);
    sigaddset(&dflt, SIGPIPE);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &dflt);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char arg0[] = "medstream", arg1[] = RULE_CHECK_COMMAND;
    char *argv[] = {arg0, arg1, NULL};
    const char *path = program ? program : "/proc/self/exe";
    int err = posix_spawn(&h->pid, path, &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(sv[1]);
    if (err != 0) {
        close(sv[0]);
        h->pid = -1;
        return ms_fail(e, MS_EIO, "rules: cannot start the regex check (%s %s): %s", path, RULE_CHECK_COMMAND,
                       strerror(err));
    }
    h->fd = sv[0];
    return MS_OK;
}

/* Stop the helper (kill: at once, by its pid; else: EOF, and it exits) and reap it: its wait status. */
static int helper_end(helper *h, bool kill_it)
{
    if (h->pid < 0) return 0;
    if (kill_it) kill(h->pid, SIGKILL);
    close(h->fd);
    int status = 0;
    while (waitpid(h->pid, &status, 0) < 0 && errno == EINTR)
        ;
    h->pid = -1;
    h->fd = -1;
    return status;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Send one regex and read its answer line (without the newline). true: a line; false: the helper ended, broke
 * or passed the wall-clock deadline (the caller ends it). */
static bool helper_ask(helper *h, const char *regex, char *line, size_t cap)
{
    size_t len = strlen(regex);
    unsigned char len4[4] = {(unsigned char)len, (unsigned char)(len >> 8), (unsigned char)(len >> 16),
                             (unsigned char)(len >> 24)};
    if (!write_full(h->fd, (const char *)len4, 4, true) || !write_full(h->fd, regex, len, true)) return false;
    double deadline = mono_now() + RULE_CHECK_WALL_S;
    size_t got = 0;
    for (;;) {
        double left = deadline - mono_now();
        if (left <= 0) return false;
        struct pollfd p = {.fd = h->fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)(left * 1000) + 1);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) return false;
        ssize_t r = recv(h->fd, line + got, cap - 1 - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        got += (size_t)r;
        char *nl = memchr(line, '\n', got);
        if (nl) {
            *nl = 0;
            return nl == line + got - 1; /* one answer per request: nothing may follow it */
        }
        if (got == cap - 1) return false;
    }
}

ms_code rule_check(const char *program, const rule_def *const *rules, size_t n, rule_check_result *out, ms_err *e)
{
    helper h = {.pid = -1, .fd = -1};
    ms_code rc = MS_OK;
    for (size_t i = 0; i < n && rc == MS_OK; i++) {
        rule_check_result *res = &out[i];
        *res = (rule_check_result){.ok = true};
        for (uint32_t j = 0; j < rules[i]->nregex && res->ok && rc == MS_OK; j++) {
            if (h.pid < 0 && (rc = helper_start(program, &h, e)) != MS_OK) break;
            char line[LINE_MAX_BYTES + 1];
            if (helper_ask(&h, rules[i]->regex[j], line, sizeof line)) {
                if (!strncmp(line, "ok ", 3)) {
                    res->cpu_s += (double)strtoull(line + 3, NULL, 10) / 1e6;
                    continue;
                }
                if (!strncmp(line, "no ", 3)) {
                    res->ok = false;
                    snprintf(res->why, sizeof res->why, "rule \"%s\": regex %u: %s", rules[i]->name, j + 1, line + 3);
                    continue;
                }
            }
            int status = helper_end(&h, true);
            bool over_cpu = (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_OVER_CPU) ||
                            (WIFSIGNALED(status) && (WTERMSIG(status) == SIGKILL || WTERMSIG(status) == SIGXCPU));
            if (over_cpu || WIFSIGNALED(status)) { /* the CPU limit or the deadline; or a crash out of memory */
                res->ok = false;
                snprintf(res->why, sizeof res->why, "rule \"%s\": regex %u: too costly to compile (over %d s%s)",
                         rules[i]->name, j + 1, RULE_CHECK_CPU_S, over_cpu ? "" : ", or over its memory");
            } else {
                rc = ms_fail(e, MS_EIO, "rules: the regex check (%s %s) failed: exit status %d",
                             program ? program : "/proc/self/exe", RULE_CHECK_COMMAND,
                             WIFEXITED(status) ? WEXITSTATUS(status) : -1);
            }
        }
    }
    helper_end(&h, false);
    return rc;
}
