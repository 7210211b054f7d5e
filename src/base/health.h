/*
 * health.h - /healthz's answer, made by the subsystems that are running: each registers a reporter
 * that says whether it is healthy and adds its own members, so the policy of what counts as degraded
 * (a PostgreSQL lag over 10 s, brokers unreachable, a store that cannot commit) lives in the subsystem
 * that knows it, not in the HTTP handler.
 *
 * Contract: thread-safe; a reporter is called under the registry's lock (it must be quick and must not
 * register or unregister); a subsystem unregisters before it frees what its reporter reads. Members
 * never carry a record's value (reasons name causes: "disk full", "brokers unreachable").
 */
#ifndef MS_HEALTH_H
#define MS_HEALTH_H

#include "base/util.h"

/* Append this subsystem's members to out, each starting with a comma (`,"postgres":"ok",...`); return
 * false when the subsystem is degraded. */
typedef bool (*health_fn)(void *ctx, buf *out);

void health_register(const char *name, health_fn fn, void *ctx);
void health_unregister(const void *ctx); /* the reporter registered with ctx */

/* {"status":"ok"|"degraded", the members of every reporter in registration order}. */
void health_render(buf *out);

#endif
