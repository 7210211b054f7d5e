/*
 * h_notify.c - the notifications' routes: signal rules (GET/POST /v1/rules, GET/DELETE /v1/rules/{name}),
 * events (GET /v1/events, the Server-Sent Events stream GET /v1/events/stream) and webhook subscriptions
 * (POST/GET /v1/subscriptions, GET/DELETE /v1/subscriptions/{id}).
 *
 * DESIGN: each handler parses the request's values and hands them to the notifier (notify/notifier.h),
 * which owns every decision: what a valid rule is, how the set compiles, how events are read, how a
 * subscription is delivered. A change is audited by the notifier in the same commit as itself. The stream
 * handler answers with a streamed response (http_server.h: the connection's thread then reads the stream
 * until it ends); it resumes after Last-Event-ID when the client sends one (a reconnecting EventSource
 * does), else after ?since (default: the end of the log, so only new events); it ends, its next bytes
 * withheld, once the token that opened it no longer holds the route's permission (checked_read).
 *
 * Events carry no PHI text, only ids, names and times; reading them needs notifications:read, which the
 * default roles give to admin and clinician and not to analyst: an event still says that a patient's
 * record matched a rule ("sepsis"), a fact derived from the PHI text (access.h). They are not audited
 * per read (no field of a record is read), the rule and subscription changes are.
 *
 * What it must never do: answer with a subscription's secret, or let a user without notifications:delete
 * delete another user's subscription.
 */
#include "api/handlers.h"
#include "api/params.h"

#include "access/access.h"
#include "access/tokens.h"
#include "base/json_write.h"
#include "notify/notifier.h"
#include "notify/rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool running(api *a, http_response *res)
{
    if (a->notifier) return true;
    http_error(res, 503, "notifications are not running in this server");
    return false;
}

static notify_actor actor_of(const http_request *req)
{
    return (notify_actor){.user = req->user, .role = req->role, .client = req->client};
}

static bool get_seq(http_request *req, http_response *res, const char *name, uint64_t *out)
{
    const char *v = http_arg_get(req, name);
    if (!v) return true;
    if (parse_seq(v, out)) return true;
    http_error(res, 400, "%s: expected an event seq (digits)", name);
    return false;
}

/* ?rule=NAME: absent (every rule) or a rule's name; anything else is 400 (an empty or impossible name selected no
 * event of the log, or every event of a stream). */
static bool get_rule(http_request *req, http_response *res, const char **out)
{
    *out = http_arg_get(req, "rule");
    if (!*out || rule_name_valid(*out, strlen(*out))) return true;
    http_error(res, 400, "rule: expected a rule's name (1-%d characters of A-Z a-z 0-9 _ . -)", RULE_NAME_MAX);
    return false;
}

static void answer_error(http_response *res, const ms_err *e) { http_error(res, status_for(e->code), "%s", e->msg); }

/* ---- rules ---- */

void h_rules_list(api *a, http_request *req, http_response *res)
{
    (void)req;
    if (!running(a, res)) return;
    res->status = 200;
    res->body.len = 0;
    notifier_rules_json(a->notifier, &res->body);
}

void h_rule_get(api *a, http_request *req, http_response *res)
{
    if (!running(a, res)) return;
    res->body.len = 0;
    if (notifier_rule_json(a->notifier, req->params[0], &res->body))
        res->status = 200;
    else
        http_error(res, 404, "no rule of that name");
}

void h_rule_put(api *a, http_request *req, http_response *res)
{
    if (!running(a, res)) return;
    notify_actor who = actor_of(req);
    bool created = false;
    buf answer = {0};
    ms_err e;
    if (notifier_rule_put(a->notifier, req->body ? req->body : "", req->body_len, &who, &created, &answer, &e) !=
        MS_OK) {
        buf_free(&answer);
        answer_error(res, &e);
        return;
    }
    res->status = created ? 201 : 200;
    res->body.len = 0;
    buf_put(&res->body, answer.data, answer.len);
    buf_free(&answer);
}

void h_rule_delete(api *a, http_request *req, http_response *res)
{
    if (!running(a, res)) return;
    notify_actor who = actor_of(req);
    ms_err e;
    if (notifier_rule_delete(a->notifier, req->params[0], &who, &e) != MS_OK) {
        answer_error(res, &e);
        return;
    }
    res->status = 204;
    res->body.len = 0;
}

/* ---- events ---- */

void h_events(api *a, http_request *req, http_response *res)
{
    if (!running(a, res)) return;
    uint64_t after = 0;
    uint32_t limit = 100;
    const char *rule;
    if (!get_seq(req, res, "since", &after) || !get_seq(req, res, "cursor", &after) || !get_limit(req, res, &limit) ||
        !get_rule(req, res, &rule))
        return;
    buf out = {0};
    ms_err e;
    if (notifier_events_page(a->notifier, after, limit, rule, &out, &e) != MS_OK) {
        buf_free(&out);
        answer_error(res, &e);
        return;
    }
    res->status = 200;
    buf_free(&res->body);
    res->body = out;
}

/* A stream hands over its next bytes (events, or a heartbeat) only while the token that opened it is still
 * good for the route: an expired or revoked token, a disabled account, a role that lost the permission ends
 * it at once, those bytes withheld (the check when it opened was the only one: a disabled clinician's open
 * stream kept delivering). */
typedef struct {
    api *a;
    notify_stream *s;
    char *authorization; /* the opening request's header, copied */
    const char *permission;
} checked_stream;

static ssize_t checked_read(void *ctx, int client_fd, char *buf, size_t max)
{
    checked_stream *c = ctx;
    ssize_t n = notify_stream_read(c->s, client_fd, buf, max);
    principal who = {0};
    if (n > 0 &&
        (token_check(c->a->store, c->authorization, &who) != TOKEN_OK || !access_allows(who.role, c->permission)))
        return -1;
    return n;
}

static void checked_close(void *ctx)
{
    checked_stream *c = ctx;
    notify_stream_close(c->s);
    free(c->authorization);
    free(c);
}

void h_events_stream(api *a, http_request *req, http_response *res)
{
    if (!running(a, res)) return;
    uint64_t after = UINT64_MAX;
    const char *rule;
    if (!get_seq(req, res, "since", &after) || !get_rule(req, res, &rule)) return;
    if (req->last_event_id) { /* a reconnecting client: it has every event up to this one */
        if (!parse_seq(req->last_event_id, &after)) {
            http_error(res, 400, "Last-Event-ID: expected an event seq (digits)");
            return;
        }
    }
    notify_stream *s;
    ms_err e;
    if (notify_stream_open(a->notifier, after, rule, &s, &e) != MS_OK) {
        answer_error(res, &e);
        return;
    }
    checked_stream *c = ms_calloc(1, sizeof *c);
    c->a = a;
    c->s = s;
    const char *auth = req->authorization ? req->authorization : "";
    c->authorization = ms_strndup(auth, strlen(auth));
    c->permission = api_route_table[req->route].permission;
    res->status = 200;
    res->body.len = 0;
    res->content_type = "text/event-stream";
    res->stream.read = checked_read;
    res->stream.done = checked_close;
    res->stream.ctx = c;
}

/* ---- subscriptions ---- */

void h_subscription_create(api *a, http_request *req, http_response *res)
{
    if (!running(a, res)) return;
    notify_actor who = actor_of(req);
    buf answer = {0};
    ms_err e;
    if (notifier_subscription_create(a->notifier, req->body ? req->body : "", req->body_len, &who, &answer, &e) !=
        MS_OK) {
        buf_free(&answer);
        answer_error(res, &e);
        return;
    }
    res->status = 201;
    buf_free(&res->body);
    res->body = answer;
}

/* A subscription's URL may hold its receiver's credential (queries are refused in it, so a path such as
 * /services/T/B/SECRET): a user sees only its own subscriptions, unless its role may delete anyone's
 * (notifications:delete, the admin's). */
static bool sees_every_subscription(const http_request *req)
{
    return access_allows(req->role, "notifications:delete");
}

void h_subscriptions_list(api *a, http_request *req, http_response *res)
{
    if (!running(a, res)) return;
    res->status = 200;
    res->body.len = 0;
    notifier_subscriptions_json(a->notifier, sees_every_subscription(req) ? NULL : req->user, &res->body);
}

/* The subscription of the path may be read or deleted by the caller: its own, or anyone's with
 * notifications:delete. False with 404 (none) or 403 (another user's; audited as every denied attempt). */
static bool callers_subscription(api *a, http_request *req, http_response *res)
{
    char owner[STORE_USER_MAX];
    if (!notifier_subscription_owner(a->notifier, req->params[0], owner, sizeof owner)) {
        http_error(res, 404, "no subscription of that id");
        return false;
    }
    if (strcmp(owner, req->user) != 0 && !sees_every_subscription(req)) {
        http_error(res, 403, "role %s lacks permission notifications:delete (a subscription of another user)",
                   req->role);
        audit_request(a, req, "notifications:delete", NULL, "denied"); /* every denied attempt (DESIGN.md) */
        return false;
    }
    return true;
}

void h_subscription_get(api *a, http_request *req, http_response *res)
{
    if (!running(a, res) || !callers_subscription(a, req, res)) return;
    res->body.len = 0;
    if (notifier_subscription_json(a->notifier, req->params[0], &res->body))
        res->status = 200;
    else
        http_error(res, 404, "no subscription of that id");
}

void h_subscription_delete(api *a, http_request *req, http_response *res)
{
    if (!running(a, res) || !callers_subscription(a, req, res)) return;
    notify_actor who = actor_of(req);
    ms_err e;
    if (notifier_subscription_delete(a->notifier, req->params[0], &who, &e) != MS_OK) {
        answer_error(res, &e);
        return;
    }
    res->status = 204;
    res->body.len = 0;
}
