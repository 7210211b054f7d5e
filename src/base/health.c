/*
 * health.c - the registry of health reporters (see health.h).
 */
#include "base/health.h"

#include <pthread.h>
#include <string.h>

#define HEALTH_MAX 16

typedef struct {
    const char *name;
    health_fn fn;
    void *ctx;
} reporter;
static reporter reporters[HEALTH_MAX];
static int nreporters;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

void health_register(const char *name, health_fn fn, void *ctx)
{
    pthread_mutex_lock(&lock);
    if (nreporters < HEALTH_MAX) reporters[nreporters++] = (reporter){name, fn, ctx};
    pthread_mutex_unlock(&lock);
}

void health_unregister(const void *ctx)
{
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nreporters; i++) {
        if (reporters[i].ctx != ctx) continue;
        memmove(&reporters[i], &reporters[i + 1], sizeof reporters[0] * (size_t)(nreporters - i - 1));
        nreporters--;
        break;
    }
    pthread_mutex_unlock(&lock);
}

void health_render(buf *out)
{
    buf members = {0};
    bool ok = true;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nreporters; i++)
        if (!reporters[i].fn(reporters[i].ctx, &members)) ok = false;
    pthread_mutex_unlock(&lock);
    buf_printf(out, "{\"status\":\"%s\"", ok ? "ok" : "degraded");
    if (members.len) buf_put(out, members.data, members.len);
    buf_putc(out, '}');
    buf_free(&members);
}
