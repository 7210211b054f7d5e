/*
 * log_line.c - what one access-log line costs (base/log.h: format + one write under the lock), in
 * process, for a line of the shape http_server.c writes, in both formats and to the places a server's
 * standard error goes: /dev/null (scripts/bench_reference.sh), a file, and a pipe drained by another
 * thread (journald reads a service's standard error from a stream). Prints the median of 5 rounds of
 * 100,000 lines each. Build and run: make bench-log
 */
#include "base/log.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

enum { LINES = 100000, ROUNDS = 5 };

static void one_line(int i)
{
    log_field f[] = {
        LOG_STR_J("method", "GET"),    LOG_STR_J("route", "/v1/patients/{}"),
        LOG_INT_J("status", 200),      LOG_UINT("bytes", 1234 + i % 100),
        LOG_MS("ms", 0.412),           LOG_STR("user", "clinician-7"),
        LOG_STR("client", "10.1.2.3"), LOG_STR("request_id", "9f3c0a1b2d4e5f60"),
    };
    ms_log_fields(LOG_INFO, "http.request", f, LOG_NFIELDS(f), "%s %s %d", "GET", "/v1/patients/{}", 200);
}

static void *drain(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char b[65536];
    while (read(fd, b, sizeof b) > 0) {
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median microseconds per line over ROUNDS rounds, lines written to fd. */
static double measure(log_format format, int fd)
{
    log_configure(format, LOG_INFO);
    log_set_fd(fd);
    double us[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = ms_mono_s();
        for (int i = 0; i < LINES; i++)
            one_line(i);
        us[r] = (ms_mono_s() - t0) / LINES * 1e6;
    }
    log_set_fd(2);
    qsort(us, ROUNDS, sizeof us[0], cmp);
    return us[ROUNDS / 2];
}

int main(int argc, char **argv)
{
    const char *file = argc > 1 ? argv[1] : "/var/tmp/medstream-log-line.bench";
    int null = open("/dev/null", O_WRONLY);
    int reg = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
    int pipefd[2];
    if (null < 0 || reg < 0 || pipe(pipefd) != 0) {
        perror("log_line");
        return 1;
    }
    pthread_t reader;
    pthread_create(&reader, NULL, drain, (void *)(intptr_t)pipefd[0]);
    static const char *const names[] = {"text", "json"};
    for (int f = LOG_FORMAT_TEXT; f <= LOG_FORMAT_JSON; f++) {
        printf("access-log line, %s: /dev/null %.2f us, file %.2f us, pipe %.2f us (median of %d x %d lines)\n",
               names[f], measure((log_format)f, null), measure((log_format)f, reg), measure((log_format)f, pipefd[1]),
               ROUNDS, LINES);
    }
    close(pipefd[1]);
    pthread_join(reader, NULL);
    close(pipefd[0]);
    close(null);
    close(reg);
    unlink(file);
    return 0;
}
