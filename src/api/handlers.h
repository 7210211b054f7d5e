/*
 * handlers.h - the handlers of the route table (api_routes.c), one file per resource: records
 * (h_records.c), patients (h_patients.c), public reads (h_public.c), accounts and tokens
 * (h_accounts.c), exports (h_exports.c), notifications: rules, events, subscriptions (h_notify.c),
 * rolling-window counters (h_counters.c), and the system routes: health, metrics, snapshots, audit, the
 * OpenAPI document (h_system.c).
 *
 * Contract: a handler runs only after dispatch has matched its route, checked the token, the
 * permission, the PHI gate, the query parameters' names and the request's Content-Type against the
 * table, and after the whole body has arrived within the edge's limits; req->params holds the path's
 * {name} segments in order. It parses and validates the values, calls the layers below (ingest/,
 * read/, access/, store/), and fills res; every failure is an answer {"error": message}.
 *
 * What it must never do: touch libmicrohttpd, answer with or audit a PHI value, or read PHI without
 * writing its audit entry.
 */
#ifndef MS_API_HANDLERS_H
#define MS_API_HANDLERS_H

#include "api/api_routes.h"

/* The Content-Type of GET /metrics: Prometheus's text exposition format. */
#define PROMETHEUS_TEXT "text/plain; version=0.0.4"

/* h_records.c */
void h_ingest(api *a, http_request *req, http_response *res);
void h_record_get(api *a, http_request *req, http_response *res);
void h_record_delete(api *a, http_request *req, http_response *res);
void h_record_children(api *a, http_request *req, http_response *res);

/* h_patients.c */
void h_patient_lookup(api *a, http_request *req, http_response *res);
void h_patient_get(api *a, http_request *req, http_response *res);
void h_patient_history(api *a, http_request *req, http_response *res);
void h_patient_records(api *a, http_request *req, http_response *res);
void h_patient_erase(api *a, http_request *req, http_response *res);
void h_patient_erasure(api *a, http_request *req, http_response *res);

/* h_public.c */
void h_public_patient(api *a, http_request *req, http_response *res);
void h_public_records(api *a, http_request *req, http_response *res);
/* A public read or export bounded by type or by event time only where the schema makes that field public (a
 * filter on a private field answers by it, so leaks it): false with a 400 in res. */
bool public_bounds_allowed(const api *a, bool type, bool times, http_response *res);

/* h_accounts.c */
void h_login(api *a, http_request *req, http_response *res);
void h_logout(api *a, http_request *req, http_response *res);
void h_me(api *a, http_request *req, http_response *res);
void h_roles(api *a, http_request *req, http_response *res);
void h_user_create(api *a, http_request *req, http_response *res);
void h_user_list(api *a, http_request *req, http_response *res);
void h_user_get(api *a, http_request *req, http_response *res);
void h_user_patch(api *a, http_request *req, http_response *res);
void h_user_delete(api *a, http_request *req, http_response *res);
void h_user_password(api *a, http_request *req, http_response *res);
void h_user_tokens_revoke(api *a, http_request *req, http_response *res);

/* h_counters.c */
void h_counter_list(api *a, http_request *req, http_response *res);
void h_counter_create(api *a, http_request *req, http_response *res);
void h_counter_get(api *a, http_request *req, http_response *res);
void h_counter_delete(api *a, http_request *req, http_response *res);

/* h_exports.c */
void h_export_create(api *a, http_request *req, http_response *res);
void h_export_get(api *a, http_request *req, http_response *res);
void h_export_download(api *a, http_request *req, http_response *res);

/* h_notify.c */
void h_rules_list(api *a, http_request *req, http_response *res);
void h_rule_get(api *a, http_request *req, http_response *res);
void h_rule_put(api *a, http_request *req, http_response *res);
void h_rule_delete(api *a, http_request *req, http_response *res);
void h_events(api *a, http_request *req, http_response *res);
void h_events_stream(api *a, http_request *req, http_response *res);
void h_subscription_create(api *a, http_request *req, http_response *res);
void h_subscriptions_list(api *a, http_request *req, http_response *res);
void h_subscription_get(api *a, http_request *req, http_response *res);
void h_subscription_delete(api *a, http_request *req, http_response *res);

/* h_system.c */
void h_health(api *a, http_request *req, http_response *res);
void h_metrics(api *a, http_request *req, http_response *res);
void h_snapshot(api *a, http_request *req, http_response *res);
void h_audit(api *a, http_request *req, http_response *res);
void h_audit_verify(api *a, http_request *req, http_response *res);
void h_openapi(api *a, http_request *req, http_response *res);

/* h_console.c: the console's embedded files */
void h_console_index(api *a, http_request *req, http_response *res);
void h_console_asset(api *a, http_request *req, http_response *res);

#endif
