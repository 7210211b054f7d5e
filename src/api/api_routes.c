/*
 * api_routes.c - the route table of the HTTP API v1 and the dispatch driven by it (see api_routes.h,
 * README.md beside this file, docs/API.md).
 *
 * DESIGN: on_headers runs once a request's headers are complete, before its body is read: it matches
 * the path against the table (404), then the method (405), then checks the token (401) and the route's
 * permission (403; a refusal whose user is known is audited here), refuses PHI reads while their audit
 * entries cannot be made durable (503, writer_audit_ok), checks the query's names against the route's
 * parameters (400) and the Content-Type against its body types (415). Each of these answers comes from
 * the table's columns; no check names a handler. The shared query parameters are declared once below
 * (p_*), so that a parameter means the same on every route that takes it.
 *
 * Decisions kept in the table: GET / and GET /assets/{asset} (the console's static files, issue 14) need no
 * token: they are the same bytes for everyone and hold no data. GET /healthz and POST /v1/auth/token need no token (a
 * load balancer and a login have none), and neither does GET /v1/openapi.json: it is documentation of the routes, holds
 * no data, and a client needs it before it has a token. GET /v1/exports/{id}/download needs no token either: its signed
 * link, short-lived, is the credential (export/export_jobs.h). Routes that never checked their query
 * (ROUTE_QUERY_IGNORED) still ignore it, so that no caller that worked before is refused now.
 *
 * What it must never do: run a handler whose permission was not checked, or read a body before every
 * refusal that can be decided from the headers has been made.
 */
#include "api/api_routes.h"

#include "api/handlers.h"
#include "access/audit.h"
#include "access/tokens.h"
#include "base/timefmt.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- query parameters ---- */

static const route_param p_as_of = {"as_of", PARAM_TEXT, false,
                                    "read as of this instant: an RFC 3339 time or a snapshot id (default: now)"};
static const route_param p_as_of_snapshot = {
    "as_of", PARAM_TEXT, false, "read as of this snapshot id (POST /v1/snapshots); public reads take no time"};
static const route_param p_event_at = {"event_at", PARAM_TIME, false,
                                       "merge only the records whose event time ts is at or before this time"};
static const route_param p_name = {"name", PARAM_TEXT, true, "the patient's name (compared after normalization)"};
static const route_param p_dob = {"dob", PARAM_DATE, true, "the patient's date of birth"};
static const route_param p_type = {"type", PARAM_TEXT, false, "only records of this type"};
static const route_param p_since = {"since", PARAM_TIME, false, "only records whose event time is at or after this"};
static const route_param p_until = {"until", PARAM_TIME, false, "only records whose event time is before this"};
static const route_param p_year_since = {
    "since", PARAM_TEXT, false, "only records of this event year (YYYY; a date or time counts as its year) or later"};
static const route_param p_year_until = {
    "until", PARAM_TEXT, false, "only records of this event year (YYYY; a date or time counts as its year) or earlier"};
static const route_param p_link_exp = {"exp", PARAM_TEXT, true,
                                       "the link's expiry (Unix seconds), as GET /v1/exports/{export_id} gave it"};
static const route_param p_link_sig = {"sig", PARAM_TEXT, true,
                                       "the link's signature (64 hex digits), as GET /v1/exports/{export_id} gave it"};
static const route_param p_limit = {"limit", PARAM_LIMIT, false, "the most items in one answer"};
static const route_param p_cursor = {"cursor", PARAM_TEXT, false, "the next_cursor of the previous answer"};
static const route_param p_of_patient = {"patient_id", PARAM_UUID, false, "only records of this patient"};
static const route_param p_audit_since = {"since", PARAM_TIME, false, "only entries at or after this time"};
static const route_param p_audit_user = {"user", PARAM_TEXT, false, "only entries of this user"};
static const route_param p_audit_patient = {"patient_id", PARAM_UUID, false, "only entries naming this patient"};
static const route_param p_audit_action = {"action", PARAM_TEXT, false,
                                           "only entries of this action (a permission, e.g. patients:read, or login)"};
static const route_param p_audit_until = {"until", PARAM_TIME, false, "only entries before this time"};
static const route_param p_import_origin = {
    "import_origin", PARAM_TEXT, false,
    "64 hex digits naming the file these lines come from (medstream import --url): a record without a record_id is "
    "named by (origin, file line) instead of by its content"};
static const route_param p_import_line = {"import_line", PARAM_TEXT, false,
                                          "with import_origin: the file's line number of the body's first line "
                                          "(default 1); body line L is file line import_line + L - 1"};
static const route_param p_import_replay = {
    "import_replay", PARAM_TEXT, false,
    "with import_origin, 1: these lines may have been stored before (an import read again): a record whose versions "
    "include a line's content is a duplicate of that version, not a new version"};

static const route_param p_event_since = {
    "since", PARAM_TEXT, false, "only events after this seq (default: from the first; for the stream: from now)"};
static const route_param p_event_cursor = {"cursor", PARAM_TEXT, false,
                                           "the next_cursor of the previous answer (an event seq)"};
static const route_param p_event_rule = {"rule", PARAM_TEXT, false, "only events of this rule"};
static const route_param p_window = {"window", PARAM_TEXT, false,
                                     "the window's length, a multiple of the counter's resolution up to its "
                                     "max_window: 24h, 90m, 30s (default: max_window)"};
static const route_param p_at = {"at", PARAM_TIME, false,
                                 "the window's end (default: now), rounded down to the counter's resolution"};
static const route_param p_parent = {"parent", PARAM_TEXT, false,
                                     "count only the children of this record id (a per_parent counter; needs "
                                     "patients:read)"};
static const route_param p_fresh = {
    "fresh", PARAM_TEXT, false,
    "true (default): every commit acknowledged before the query is counted (it waits for the counters to apply "
    "them); false: answer at once, exact as of the answer's position"};
static const route_param p_child_since = {"since", PARAM_TIME, false,
                                          "only children whose event time is at or after this"};
static const route_param p_child_until = {"until", PARAM_TIME, false, "only children whose event time is before this"};

#define QUERY(...) ((const route_param *const[]){__VA_ARGS__, NULL})
#define TYPES(...) ((const char *const[]){__VA_ARGS__, NULL})
#define JSON_BODY TYPES("application/json")

/* ---- the table ---- */

const route api_route_table[] = {
    /* records (h_records.c) */
    {.method = "POST",
     .pattern = "/v1/records",
     .permission = "records:create",
     .handler = h_ingest,
     .flags = ROUTE_BULK,
     .description = "Ingest records: each is created, updated (a new version needs records:update too), a "
                    "duplicate or rejected; good records are stored even when others are rejected, and the "
                    "answer comes once the batch is durable; audited in the same commit.",
     .query = QUERY(&p_import_origin, &p_import_line, &p_import_replay),
     .body_types =
         TYPES("application/x-ndjson", "application/ndjson", "application/jsonl", "application/json", "text/csv"),
     .body = "NDJSON (one record object a line), a JSON array of record objects, one record object, or CSV "
             "(text/csv, UTF-8) with a header row naming the fields, one record a row",
     .status = 200,
     .answer = "{\"errors\",\"items\":[{\"line\",\"status\",\"record_id\",\"patient_id\",\"version\",\"error\"}]}"},
    {.method = "GET",
     .pattern = "/v1/records/{record_id}",
     .permission = "records:read",
     .handler = h_record_get,
     .flags = ROUTE_PHI_READ,
     .description = "A record's version as of an instant, with its fields as sent; audited.",
     .query = QUERY(&p_as_of),
     .status = 200,
     .answer = "{\"record_id\",\"patient_id\",\"type\",\"ts\",\"version\",\"valid_from\",\"valid_to\",\"fields\"}"},
    {.method = "DELETE",
     .pattern = "/v1/records/{record_id}",
     .permission = "records:delete",
     .handler = h_record_delete,
     .description = "Delete a record: a tombstone version, committed with its audit entry; history keeps the "
                    "earlier versions.",
     .status = 200,
     .answer = "{\"record_id\",\"patient_id\",\"version\",\"deleted\":true,\"valid_from\"}"},
    {.method = "GET",
     .pattern = "/v1/records/{record_id}/children",
     .permission = "records:read",
     .handler = h_record_children,
     .flags = ROUTE_PHI_READ,
     .description = "The records whose parent (the schema's parent role, default parent_id) is this record id, "
                    "in event-time order, as of an instant, a page at a time; the parent need not exist; "
                    "audited with the children's patients.",
     .query = QUERY(&p_type, &p_child_since, &p_child_until, &p_as_of, &p_limit, &p_cursor),
     .status = 200,
     .answer = "{\"record_id\",\"children\":[record],\"next_cursor\"}"},
    /* patients (h_patients.c) */
    {.method = "GET",
     .pattern = "/v1/patients",
     .permission = "patients:read",
     .handler = h_patient_lookup,
     .flags = ROUTE_PHI_READ,
     .description = "The patient with this identity (name and date of birth), answered as GET "
                    "/v1/patients/{patient_id}; audited.",
     .query = QUERY(&p_name, &p_dob, &p_as_of, &p_event_at),
     .status = 200,
     .answer = "{\"patient_id\",\"version\",\"valid_from\",\"valid_to\",\"fields\"}"},
    {.method = "GET",
     .pattern = "/v1/patients/{patient_id}",
     .permission = "patients:read",
     .handler = h_patient_get,
     .flags = ROUTE_PHI_READ,
     .description = "A patient's state: the fields merged from its live records in event-time order, as of an "
                    "instant and up to an event time; audited.",
     .query = QUERY(&p_as_of, &p_event_at),
     .status = 200,
     .answer = "{\"patient_id\",\"version\",\"valid_from\",\"valid_to\",\"fields\"} (and \"event_at\" when given)"},
    {.method = "GET",
     .pattern = "/v1/patients/{patient_id}/history",
     .permission = "patients:read",
     .handler = h_patient_history,
     .flags = ROUTE_PHI_READ,
     .description = "The versions of a patient's state, oldest first, a page at a time; as_of: those committed by "
                    "then (the one in force then with valid_to null); audited.",
     .query = QUERY(&p_as_of, &p_limit, &p_cursor),
     .status = 200,
     .answer = "{\"patient_id\",\"versions\":[{\"version\",\"valid_from\",\"valid_to\",\"fields\"}],"
               "\"next_cursor\"}"},
    {.method = "GET",
     .pattern = "/v1/patients/{patient_id}/records",
     .permission = "patients:read",
     .handler = h_patient_records,
     .flags = ROUTE_PHI_READ,
     .description = "A patient's records in event-time order, a page at a time; audited.",
     .query = QUERY(&p_type, &p_since, &p_until, &p_as_of, &p_limit, &p_cursor),
     .status = 200,
     .answer = "{\"patient_id\",\"records\":[record],\"next_cursor\"}"},
    {.method = "DELETE",
     .pattern = "/v1/patients/{patient_id}",
     .permission = "patients:delete",
     .handler = h_patient_erase,
     .description = "Erase a patient (the right to be forgotten): its PHI, identity, history and public copies "
                    "leave the store and its data key is overwritten, so nothing of it stays readable; the sinks "
                    "follow. Audited with the reason (which must hold no PHI); again is a no-op. Reads answer 410.",
     .body_types = JSON_BODY,
     .body = "{\"reason\"}",
     .status = 200,
     .answer = "erasure certificate {\"patient_id\",\"erased_at\",\"stores\":[{\"store\",\"status\"}],\"sinks\":"
               "[{\"sink\",\"status\":\"done\"|\"pending\"}],\"erased_by\",\"reason\",\"already_erased\",\"records\","
               "\"record_versions\",\"patient_versions\"}"},
    {.method = "GET",
     .pattern = "/v1/patients/{patient_id}/erasure",
     .permission = "patients:delete",
     .handler = h_patient_erasure,
     .description = "An erasure's certificate as it stands now: the sinks that were pending when it was made "
                    "report done once they have removed the patient downstream.",
     .status = 200,
     .answer = "{\"patient_id\",\"erased_at\",\"stores\",\"sinks\"}"},
    /* de-identified reads (h_public.c) */
    {.method = "GET",
     .pattern = "/v1/public/patients/{patient_id}",
     .permission = "public:read",
     .handler = h_public_patient,
     .description = "A patient's de-identified state: the schema's allow-listed fields only, after their "
                    "transforms.",
     .query = QUERY(&p_as_of_snapshot),
     .status = 200,
     .answer = "{\"patient_id\",\"fields\",\"schema_version\"}"},
    {.method = "GET",
     .pattern = "/v1/public/records",
     .permission = "public:read",
     .handler = h_public_records,
     .flags = ROUTE_PUBLIC_FILTERS,
     .description = "De-identified records filtered by type, patient, event year and FIELD=VALUE on public "
                    "fields, a page at a time.",
     .query = QUERY(&p_type, &p_of_patient, &p_year_since, &p_year_until, &p_as_of_snapshot, &p_limit, &p_cursor),
     .status = 200,
     .answer = "{\"records\":[{\"patient_id\",\"record_id\",\"fields\"}],\"next_cursor\",\"schema_version\"}"},
    /* rolling-window counters (h_counters.c) */
    {.method = "GET",
     .pattern = "/v1/counters",
     .permission = "public:read",
     .handler = h_counter_list,
     .description = "The counters: each definition with its origin (file or api), access (public or phi), state "
                    "(ready or building) and figures; counters on PHI fields only for a caller with "
                    "patients:read.",
     .status = 200,
     .answer = "{\"counters\":[{\"name\",\"type\",\"where\",\"max_window\",\"resolution\",\"per_parent\","
               "\"origin\",\"access\",\"state\",\"memory_bytes\",\"late\",\"future_buckets\"}]}"},
    {.method = "POST",
     .pattern = "/v1/counters",
     .permission = "counters:create",
     .handler = h_counter_create,
     .description = "Define a rolling-window counter; it is built from the records already stored, then kept "
                    "exact by following every commit; 400 names what is wrong, 409 if the name is taken; "
                    "audited.",
     .body_types = JSON_BODY,
     .body = "{\"name\",\"type\"?,\"where\"?:{\"field\",\"equals\"|\"in\"|\"contains\"|\"exists\"},"
             "\"max_window\",\"resolution\"?,\"per_parent\"?,\"max_parent_buckets\"?}",
     .status = 201,
     .answer = "{\"counter\":{definition},\"state\":\"building\"}"},
    {.method = "GET",
     .pattern = "/v1/counters/{name}",
     .permission = "public:read",
     .handler = h_counter_get,
     .description = "The exact count of live records matching the counter whose event time is in (at - window, "
                    "at], at the counter's resolution; a counter on PHI fields, or a count per parent, needs "
                    "patients:read too and is audited; 503 while the counter is being built.",
     .query = QUERY(&p_window, &p_at, &p_parent, &p_fresh),
     .status = 200,
     .answer = "{\"name\",\"window\",\"at\",\"from\",\"to\",\"count\",\"resolution\",\"position\","
               "\"source\"}"},
    {.method = "DELETE",
     .pattern = "/v1/counters/{name}",
     .permission = "counters:delete",
     .handler = h_counter_delete,
     .description = "Remove a counter defined over HTTP (one of serve --counters FILE is 409: remove it there); "
                    "audited.",
     .status = 200,
     .answer = "{\"name\",\"deleted\":true}"},
    /* accounts and tokens (h_accounts.c) */
    {.method = "POST",
     .pattern = "/v1/auth/token",
     .permission = PERMISSION_NONE,
     .handler = h_login,
     .flags = ROUTE_QUERY_IGNORED,
     .description = "Log in: a bearer token for the account; 401 for bad credentials, 429 after repeated "
                    "failures for the user.",
     .body_types = JSON_BODY,
     .body = "{\"user\",\"password\"}",
     .status = 201,
     .answer = "{\"token\",\"expires_at\",\"role\"}"},
    {.method = "DELETE",
     .pattern = "/v1/auth/token",
     .permission = PERMISSION_AUTHENTICATED,
     .handler = h_logout,
     .flags = ROUTE_QUERY_IGNORED,
     .description = "Log out: revoke the token presented.",
     .status = 200,
     .answer = "{\"revoked\":true}"},
    {.method = "GET",
     .pattern = "/v1/me",
     .permission = PERMISSION_AUTHENTICATED,
     .handler = h_me,
     .description = "Who the token is: its user, the account's current role and every permission the role holds "
                    "(the console shows only what would not be refused).",
     .status = 200,
     .answer = "{\"user\",\"role\",\"permissions\":[\"resource:action\"]}"},
    {.method = "GET",
     .pattern = "/v1/roles",
     .permission = "users:read",
     .handler = h_roles,
     .description = "The roles of the table in force (the default or serve --roles FILE), each with its "
                    "permissions: what an account may be given.",
     .status = 200,
     .answer = "{\"roles\":[{\"role\",\"permissions\":[\"resource:action\"]}]}"},
    {.method = "POST",
     .pattern = "/v1/users",
     .permission = "users:create",
     .handler = h_user_create,
     .flags = ROUTE_QUERY_IGNORED,
     .description = "Create an account; 409 if the user exists.",
     .body_types = JSON_BODY,
     .body = "{\"user\",\"password\",\"role\"}",
     .status = 201,
     .answer = "{\"user\",\"role\"}"},
    {.method = "GET",
     .pattern = "/v1/users",
     .permission = "users:read",
     .handler = h_user_list,
     .description = "Every account, sorted by name; never a password or a hash.",
     .status = 200,
     .answer = "{\"users\":[{\"user\",\"role\",\"disabled\",\"created_at\",\"changed_at\"}]}"},
    {.method = "GET",
     .pattern = "/v1/users/{user}",
     .permission = "users:read",
     .handler = h_user_get,
     .description = "One account.",
     .status = 200,
     .answer = "{\"user\",\"role\",\"disabled\",\"created_at\",\"changed_at\"}"},
    {.method = "PATCH",
     .pattern = "/v1/users/{user}",
     .permission = "users:update",
     .handler = h_user_patch,
     .flags = ROUTE_QUERY_IGNORED,
     .description = "Change an account's role or disable it (disabling revokes its tokens); 409 for the last "
                    "enabled account holding users:update.",
     .body_types = JSON_BODY,
     .body = "{\"role\"?,\"disabled\"?}",
     .status = 200,
     .answer = "{\"user\",\"role\",\"disabled\",\"created_at\",\"changed_at\"}"},
    {.method = "DELETE",
     .pattern = "/v1/users/{user}",
     .permission = "users:delete",
     .handler = h_user_delete,
     .flags = ROUTE_QUERY_IGNORED,
     .description = "Delete an account and revoke its tokens; 409 for the last enabled account holding "
                    "users:update.",
     .status = 204,
     .answer = "no content"},
    {.method = "PUT",
     .pattern = "/v1/users/{user}/password",
     .permission = PERMISSION_AUTHENTICATED, /* your own with the old password, or anyone's with users:update */
     .handler = h_user_password,
     .flags = ROUTE_QUERY_IGNORED,
     .description = "Set a password: your own with the old one, or anyone's with users:update; the account's "
                    "other tokens are revoked.",
     .body_types = JSON_BODY,
     .body = "{\"old_password\"?,\"password\"}",
     .status = 204,
     .answer = "no content"},
    {.method = "DELETE",
     .pattern = "/v1/users/{user}/tokens",
     .permission = "users:update",
     .handler = h_user_tokens_revoke,
     .flags = ROUTE_QUERY_IGNORED,
     .description = "Revoke every unexpired token of an account.",
     .status = 200,
     .answer = "{\"revoked\":N}"},
    /* notifications: signal rules, events, webhooks (h_notify.c) */
    {.method = "GET",
     .pattern = "/v1/rules",
     .permission = "rules:read",
     .handler = h_rules_list,
     .description = "Every signal rule in force, by name: those of the rules file (serve --rules) and those "
                    "defined over the API.",
     .status = 200,
     .answer = "{\"rules\":[{\"name\",\"fields\",\"any\",\"regex\",\"types\",\"whole_words\","
               "\"source\"}]}"},
    {.method = "POST",
     .pattern = "/v1/rules",
     .permission = "rules:create",
     .handler = h_rule_put,
     .description = "Define (201) or replace (200, needs rules:create) a signal rule; every rule is compiled "
                    "again and swapped in at once; 400 names the rule, the member and the problem (an invalid "
                    "regex, one Hyperscan cannot compile); 409 for a rule of the rules file; audited.",
     .body_types = JSON_BODY,
     .body = "{\"name\",\"fields\":[...],\"any\":[words or phrases],\"regex\"?,\"types\"?,"
             "\"whole_words\"?}",
     .status = 201,
     .answer = "{\"name\",\"fields\",\"any\",\"regex\",\"types\",\"whole_words\"}"},
    {.method = "GET",
     .pattern = "/v1/rules/{name}",
     .permission = "rules:read",
     .handler = h_rule_get,
     .description = "One signal rule.",
     .status = 200,
     .answer = "{\"name\",\"fields\",\"any\",\"regex\",\"types\",\"whole_words\",\"source\"}"},
    {.method = "DELETE",
     .pattern = "/v1/rules/{name}",
     .permission = "rules:delete",
     .handler = h_rule_delete,
     .description = "Delete a signal rule defined over the API (409 for one of the rules file); audited.",
     .status = 204,
     .answer = "no content"},
    {.method = "GET",
     .pattern = "/v1/events",
     .permission = "notifications:read",
     .handler = h_events,
     .description = "Rule matches in seq order, a page at a time: which rule matched which field of which "
                    "record version, never the text.",
     .query = QUERY(&p_event_since, &p_event_cursor, &p_limit, &p_event_rule),
     .status = 200,
     .answer = "{\"events\":[{\"seq\",\"rule\",\"record_id\",\"patient_id\",\"field\",\"type\","
               "\"version\",\"ts\",\"committed_at\"}],\"last_seq\",\"next_cursor\"}"},
    {.method = "GET",
     .pattern = "/v1/events/stream",
     .permission = "notifications:read",
     .handler = h_events_stream,
     .description = "Server-Sent Events: each event as it is stored (id: its seq, event: match, data: its JSON), "
                    "a comment line as heartbeat; resumes after the Last-Event-ID header (or since); 503 when "
                    "too many streams are open.",
     .query = QUERY(&p_event_since, &p_event_rule),
     .status = 200,
     .answer = "text/event-stream",
     .answer_type = "text/event-stream"},
    {.method = "POST",
     .pattern = "/v1/subscriptions",
     .permission = "notifications:create",
     .handler = h_subscription_create,
     .description = "Subscribe a URL (http or https) to the events of a rule (or all): each is POSTed as JSON "
                    "in seq order, signed (X-Medstream-Signature: sha256=HMAC-SHA256(secret, body)) and retried "
                    "with exponential back-off until a 2xx; audited. The secret is never answered.",
     .body_types = JSON_BODY,
     .body = "{\"rule\"?,\"url\",\"secret\",\"since\"?}",
     .status = 201,
     .answer = "a subscription's state (GET /v1/subscriptions/{id})"},
    {.method = "GET",
     .pattern = "/v1/subscriptions",
     .permission = "notifications:read",
     .handler = h_subscriptions_list,
     .description = "Every webhook subscription and its delivery state.",
     .status = 200,
     .answer = "{\"subscriptions\":[subscription state]}"},
    {.method = "GET",
     .pattern = "/v1/subscriptions/{id}",
     .permission = "notifications:read",
     .handler = h_subscription_get,
     .description = "A webhook subscription's delivery state: the last seq delivered, failures, the last error, "
                    "the next retry.",
     .status = 200,
     .answer = "{\"id\",\"rule\",\"url\",\"created_at\",\"created_by\",\"since\",\"delivered_seq\","
               "\"log_seq\",\"deliveries\",\"failures\",\"failures_total\",\"last_status\",\"last_error\","
               "\"last_attempt_at\",\"next_retry_at\",\"state\"}"},
    {.method = "DELETE",
     .pattern = "/v1/subscriptions/{id}",
     .permission = "notifications:create",
     .handler = h_subscription_delete,
     .description = "Delete a webhook subscription: your own, or anyone's with notifications:delete; audited.",
     .status = 204,
     .answer = "no content"},
    /* the service (h_system.c) */
    {.method = "POST",
     .pattern = "/v1/snapshots",
     .permission = "exports:create",
     .handler = h_snapshot,
     .flags = ROUTE_QUERY_IGNORED,
     .description = "Name the current instant: a snapshot id that reads take as as_of.",
     .status = 201,
     .answer = "{\"snapshot_id\",\"as_of\"}"},
    {.method = "POST",
     .pattern = "/v1/exports",
     .permission = "exports:create",
     .handler = h_export_create,
     .description = "Export the records and their patients as of one instant (Parquet, NDJSON or CSV in Hive "
                    "layout, with a manifest) in the background; a phi export needs patients:read too and is "
                    "audited with every patient id it holds; a public one without as_of gets a new snapshot.",
     .body_types = JSON_BODY,
     .body = "{\"scope\":\"public\"|\"phi\",\"format\":\"parquet\"|\"ndjson\"|\"csv\",\"as_of\"?,\"type\"?,"
             "\"since\"?,\"until\"?}",
     .status = 202,
     .answer = "{\"export_id\",\"state\":\"queued\",\"as_of\",\"snapshot_id\"}"},
    {.method = "GET",
     .pattern = "/v1/exports/{export_id}",
     .permission = "exports:read",
     .handler = h_export_get,
     .description = "An export's progress; once done, its manifest (files with rows, bytes, sha256) and a signed "
                    "download link that expires (a phi export's link only for a role with patients:read).",
     .status = 200,
     .answer = "{\"export_id\",\"state\",\"phase\",\"scope\",\"format\",\"as_of\",\"snapshot_id\",\"rows\","
               "\"record_rows\",\"patient_rows\",\"error\",\"download\",\"download_expires_at\",\"manifest\"}"},
    {.method = "GET",
     .pattern = "/v1/exports/{export_id}/download",
     .permission = PERMISSION_NONE, /* the signed, short-lived link is the credential */
     .handler = h_export_download,
     .description = "A finished export as one uncompressed tar archive, through the signed link of GET "
                    "/v1/exports/{export_id}, without a token until the link expires; audited.",
     .query = QUERY(&p_link_exp, &p_link_sig),
     .status = 200,
     .answer = "a tar archive of the export directory",
     .answer_type = "application/x-tar"},
    {.method = "GET",
     .pattern = "/v1/audit",
     .permission = "audit:read",
     .handler = h_audit,
     .description = "Audit entries, oldest first, after the ones queued before this request are committed.",
     .query =
         QUERY(&p_audit_since, &p_audit_until, &p_audit_user, &p_audit_action, &p_audit_patient, &p_limit, &p_cursor),
     .status = 200,
     .answer = "{\"entries\":[{\"seq\",\"prev\",\"time\",\"user\",\"role\",\"action\",\"resource\",\"outcome\","
               "\"client\",\"patient_ids\"}],\"next_cursor\"}"},
    {.method = "GET",
     .pattern = "/v1/audit/verify",
     .permission = "audit:read",
     .handler = h_audit_verify,
     .description = "Re-walk the audit log's hash chain now, after the entries queued before this request are "
                    "committed (as medstream audit verify does): intact, or the first bad entry and why; the head "
                    "hash to anchor outside the machine.",
     .status = 200,
     .answer = "{\"intact\",\"entries\",\"head\",\"bad_entry\",\"why\",\"as_of\"}"},
    {.method = "GET",
     .pattern = "/healthz",
     .permission = PERMISSION_NONE,
     .handler = h_health,
     .flags = ROUTE_QUERY_IGNORED,
     .description = "Liveness, and each reason the service is degraded (store, Kafka, PostgreSQL); 200 either "
                    "way.",
     .status = 200,
     .answer = "{\"status\":\"ok\"|\"degraded\", and a member per reason}"},
    {.method = "GET",
     .pattern = "/metrics",
     .permission = "metrics:read",
     .handler = h_metrics,
     .flags = ROUTE_QUERY_IGNORED,
     .description = "The service's metrics in Prometheus's text format; no label carries a value of a record.",
     .status = 200,
     .answer = "Prometheus text",
     .answer_type = PROMETHEUS_TEXT},
    {.method = "GET",
     .pattern = "/v1/openapi.json",
     .permission = PERMISSION_NONE,
     .handler = h_openapi,
     .description = "This API's OpenAPI 3.1 document, generated from the route table.",
     .status = 200,
     .answer = "the OpenAPI document"},
    /* the console (h_console.c): static files embedded from web/ at build time; no data, no token */
    {.method = "GET",
     .pattern = "/",
     .permission = PERMISSION_NONE,
     .handler = h_console_index,
     .flags = ROUTE_QUERY_IGNORED,
     .description = "The console's page (a browser app over this API, web/): revalidated on every load, under a "
                    "Content-Security-Policy that allows only this origin and no inline script.",
     .status = 200,
     .answer = "the console's HTML page",
     .answer_type = "text/html"},
    {.method = "GET",
     .pattern = "/assets/{asset}",
     .permission = PERMISSION_NONE,
     .handler = h_console_asset,
     .flags = ROUTE_QUERY_IGNORED,
     .description = "One of the console's scripts, styles or images, named by its content hash (as the page "
                    "names it) and cached as immutable; 404 for any other name.",
     .status = 200,
     .answer = "the file (JavaScript, CSS or SVG)",
     .answer_type = "*/*"},
};
const size_t api_route_count = sizeof api_route_table / sizeof api_route_table[0];

bool route_names_param(const route *rt, const char *name)
{
    for (const route_param *const *p = rt->query; p && *p; p++)
        if (strcmp((*p)->name, name) == 0) return true;
    return false;
}

/* ---- dispatch ---- */

/* Match path against pattern; on success copy the {name} segments into req->params, in order. */
static bool match(const char *pattern, const char *path, http_request *req)
{
    const char *p = pattern, *s = path;
    int np = 0;
    char *caps[HTTP_MAX_PARAMS];
    while (*p && *s) {
        if (p[0] == '{') {
            const char *seg_end = strchr(s, '/');
            size_t n = seg_end ? (size_t)(seg_end - s) : strlen(s);
            if (n == 0 || np == HTTP_MAX_PARAMS) goto no;
            caps[np++] = ms_strndup(s, n);
            s += n;
            p = strchr(p, '}') + 1; /* every { of the table is closed (test_routes.c) */
            continue;
        }
        if (*p != *s) goto no;
        p++, s++;
    }
    if (*p || *s) goto no;
    for (int i = 0; i < req->nparams; i++)
        free(req->params[i]);
    for (int i = 0; i < np; i++)
        req->params[i] = caps[i];
    req->nparams = np;
    return true;
no:
    for (int i = 0; i < np; i++)
        free(caps[i]);
    return false;
}

static bool content_type_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    while (*ct == ' ')
        ct++;
    if (strncasecmp(ct, want, n) != 0) return false;
    ct += n;
    while (*ct == ' ')
        ct++;
    return *ct == 0 || *ct == ';';
}

/* A refused request: who tried what ("" for no known user), why (NULL: unsaid), never the request's data. */
static void audit_denied(api *a, const http_request *req, const char *user, const char *role, const char *action,
                         const char *why)
{
    audit_event ev = {.time_us = ms_now_us(),
                      .user = user,
                      .role = role,
                      .action = action,
                      .resource = req->path,
                      .outcome = "denied",
                      .client = req->client,
                      .reason = why};
    writer_audit(a->writer, &ev);
}

/* A window's summary of refusals without a known user: one entry, ids and counts only (refusals.h). */
static void audit_refusal_summary(api *a, const refusal_summary *w)
{
    char from[40], to[40], why[200];
    time_format_rfc3339(w->first_us, from, sizeof from);
    time_format_rfc3339(w->last_us, to, sizeof to);
    snprintf(why, sizeof why, "%llu more requests without a valid token from this address, %s to %s",
             (unsigned long long)w->more, from, to);
    audit_event ev = {.time_us = ms_now_us(),
                      .user = "",
                      .role = "",
                      .action = "auth:refused",
                      .resource = "",
                      .outcome = "denied",
                      .client = w->client,
                      .reason = why};
    writer_audit(a->writer, &ev);
}

void api_audit_refusals(api *a, bool all)
{
    if (!a->refusals) return;
    refusal_summary got[16];
    size_t n;
    do {
        n = refusal_closed(a->refusals, all ? INT64_MAX : ms_now_us(), got, 16);
        for (size_t i = 0; i < n; i++)
            audit_refusal_summary(a, &got[i]);
    } while (n == 16);
}

/* A request refused without a known user (no token, an unknown one), or a login the limiter refused: the first
 * from its address in a window is audited as it is, the rest in the window's summary (refusals.h: one entry each
 * would let anyone grow the audit log at will). */
void api_audit_free_refusal(api *a, const http_request *req, const char *user, const char *action, const char *why)
{
    if (!a->refusals) return;
    refusal_summary closed;
    int got = refusal_note(a->refusals, req->client, ms_now_us(), &closed);
    if (got & REFUSAL_SUMMARY) audit_refusal_summary(a, &closed);
    if (got & REFUSAL_FIRST) audit_denied(a, req, user, "", action, why);
}

/* Once a second at most, by whichever request comes: the closed windows' summaries. */
static void sweep_refusals(api *a)
{
    int64_t now = ms_now_us(), last = atomic_load(&a->refusals_swept_us);
    if (now - last < 1000000 || !atomic_compare_exchange_strong(&a->refusals_swept_us, &last, now)) return;
    api_audit_refusals(a, false);
}

/* Every route's permission, checked before anything else of the request is read. */
static int authorize(api *a, const route *rt, http_request *req, http_response *res)
{
    if (strcmp(rt->permission, PERMISSION_NONE) == 0) return 0;
    sweep_refusals(a);
    principal who = {0};
    token_status st = token_check(a->store, req->authorization, &who);
    snprintf(req->user, sizeof req->user, "%s", who.user); /* known for a refused role or an expired token */
    snprintf(req->role, sizeof req->role, "%s", who.role);
    if (st == TOKEN_UNAVAILABLE) { /* a store error, not a bad token: the client may retry with the same one */
        http_error(res, 503, "%s", token_status_text(st));
        return 503;
    }
    if (st != TOKEN_OK) {
        if (who.user[0])
            audit_denied(a, req, who.user, who.role, rt->permission, NULL); /* e.g. an expired token */
        else
            api_audit_free_refusal(a, req, "", rt->permission, token_status_text(st));
        http_error(res, 401, "%s", token_status_text(st));
        return 401;
    }
    if (!access_allows(who.role, rt->permission)) {
        audit_denied(a, req, who.user, who.role, rt->permission, NULL);
        http_error(res, 403, "role %s lacks permission %s", who.role, rt->permission);
        return 403;
    }
    if (rt->flags & ROUTE_PHI_READ) {
        ms_err why;
        if (!writer_audit_ok(a->writer, &why)) {
            http_error(res, 503, "PHI reads are refused while their audit entries cannot be stored: %s", why.msg);
            return 503;
        }
    }
    return 0;
}

/* Only the parameters the route names are accepted (a typo must not silently widen a query), each at most
 * once (handlers read the first: as_of=A&as_of=B answered as of A, type=lab&type=visit the labs alone), and
 * each one it requires must be there. Public filters (FIELD=VALUE) may repeat: each must hold. */
static int check_query(const api *a, const route *rt, http_request *req, http_response *res)
{
    if (rt->flags & ROUTE_QUERY_IGNORED) return 0;
    for (int i = 0; i < req->nargs; i++) {
        const char *key = req->args[i].key;
        if (route_names_param(rt, key)) {
            for (int j = 0; j < i; j++)
                if (strcmp(req->args[j].key, key) == 0) {
                    http_error(res, 400, "%.64s: given more than once", key);
                    return 400;
                }
            continue;
        }
        if (rt->flags & ROUTE_PUBLIC_FILTERS) {
            if (schema_public_filter(a->schema, key, strlen(key))) continue;
            http_error(res, 400, "filter '%.64s': not a public field", key);
            return 400;
        }
        http_error(res, 400, "unknown query parameter '%.64s'", key);
        return 400;
    }
    for (const route_param *const *p = rt->query; p && *p; p++) {
        if ((*p)->required && !http_arg_get(req, (*p)->name)) {
            http_error(res, 400, "%s: a required query parameter", (*p)->name);
            return 400;
        }
    }
    return 0;
}

/* A route that takes a body takes it in one of its content types. */
static int check_content_type(const route *rt, const http_request *req, http_response *res)
{
    if (!rt->body_types) return 0;
    for (const char *const *t = rt->body_types; req->content_type && *t; t++)
        if (content_type_is(req->content_type, *t)) return 0;
    char list[256] = "";
    size_t n = 0;
    for (const char *const *t = rt->body_types; *t && n < sizeof list; t++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", t == rt->body_types ? "" : t[1] ? ", " : " or ", *t);
    http_error(res, 415, "Content-Type must be %s", list);
    return 415;
}

static int on_headers(void *ctx, http_request *req, http_response *res)
{
    api *a = ctx;
    bool path_known = false;
    for (size_t i = 0; i < api_route_count; i++) {
        const route *rt = &api_route_table[i];
        if (!match(rt->pattern, req->path, req)) continue;
        path_known = true;
        req->route_pattern = rt->pattern; /* the access log names a request by its route, never its path */
        if (strcmp(rt->method, req->method) != 0) continue;
        req->route = (int)i;
        req->takes_body = rt->body_types != NULL;
        int refused = authorize(a, rt, req, res);
        if (refused) return refused;
        if (req->too_many_args) {
            http_error(res, 400, "too many query parameters (at most %d)", HTTP_MAX_ARGS);
            return 400;
        }
        if ((refused = check_query(a, rt, req, res)) || (refused = check_content_type(rt, req, res))) return refused;
        req->bulk = (rt->flags & ROUTE_BULK) != 0;
        return 0;
    }
    if (path_known) {
        http_error(res, 405, "method %s not allowed on this path", req->method);
        return 405;
    }
    http_error(res, 404, "no such endpoint");
    return 404;
}

void api_handle(void *ctx, http_request *req, http_response *res)
{
    api_route_table[req->route].handler(ctx, req, res);
}

http_handler api_http_handler(api *a)
{
    http_handler h = {on_headers, api_handle, a};
    return h;
}
