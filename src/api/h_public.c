/*
 * h_public.c - the de-identified routes: GET /v1/public/patients/{patient_id} and
 * GET /v1/public/records.
 *
 * DESIGN: reads of the public store (read/query.c), which holds only the schema's allow-listed fields
 * after their transforms. Both take as_of only as a snapshot id, and the records list filters event
 * time by year only: a time, or a finer filter, would let a caller bisect exact commit times or event
 * dates that the public copy generalizes to the year. Besides its named parameters (route table), the
 * list takes FIELD=VALUE filters on public fields; dispatch has already refused any other name.
 *
 * What it must never do: filter on, or answer with, a field the schema does not make public.
 */
#include "api/handlers.h"
#include "api/params.h"

#include <string.h>

void h_public_patient(api *a, http_request *req, http_response *res)
{
    double t0 = ms_mono_s();
    patient_id pid;
    if (!get_pid(req->params[0], res, &pid)) return;
    store_read *r;
    int64_t as_of;
    if (!begin_read_at(a, req, res, true, &r, &as_of)) return;
    query_ctx q = {a->store, a->schema};
    buf out = {0};
    ms_err e;
    ms_code rc = query_public_patient(&q, r, &pid, as_of, &out, &e);
    finish_read(r, rc, &e, &out, res, t0);
}

/* Does the public copy carry the event time's year as it is (copied, or generalized to the year)? */
static bool year_published(const schema *sc)
{
    const schema_public_field *ts = schema_public(sc, sc->ts_field, strlen(sc->ts_field));
    return ts && (ts->transform == PUBLISH_COPY || ts->transform == PUBLISH_YEAR);
}

/* A bound selects by the stored value (the record type as sent, the event time's year): it may bound a public
 * read only where the public copy carries that value itself, the type copied and the event time copied or
 * generalized to its year. Otherwise the answer would tell the private value (type=hiv-test selected exactly the
 * records whose pseudonymized type was that, since/until the true year of a date_shift-ed time). */
bool public_bounds_allowed(const api *a, bool type, bool times, http_response *res)
{
    const schema *sc = a->schema;
    const schema_public_field *t = schema_public(sc, sc->type_field, strlen(sc->type_field));
    const schema_public_field *ts = schema_public(sc, sc->ts_field, strlen(sc->ts_field));
    if (type && !t) {
        http_error(res, 400, "type: the record type is not a public field");
        return false;
    }
    if (type && t->transform != PUBLISH_COPY) {
        http_error(res, 400,
                   "type: the record type is published transformed, not as is: it cannot bound a public read");
        return false;
    }
    if (times && !ts) {
        http_error(res, 400, "since/until: the event time is not a public field");
        return false;
    }
    if (times && !year_published(sc)) {
        http_error(res, 400,
                   "since/until: the event time is published transformed, not as is or as its year: it cannot bound a "
                   "public read");
        return false;
    }
    return true;
}

void h_public_records(api *a, http_request *req, http_response *res)
{
    double t0 = ms_mono_s();
    /* every argument the route table does not name is a filter on a public field (checked by dispatch) */
    const route *rt = &api_route_table[req->route];
    const char *fkeys[HTTP_MAX_ARGS], *fvals[HTTP_MAX_ARGS];
    int nf = 0;
    for (int i = 0; i < req->nargs; i++) {
        if (route_names_param(rt, req->args[i].key)) continue;
        fkeys[nf] = req->args[i].key;
        fvals[nf] = req->args[i].value;
        nf++;
    }
    list_params p = {.year_from = 0,
                     .year_to = 9999,
                     .by_id = !year_published(a->schema), /* neither the order nor a cursor may tell the year */
                     .type = http_arg_get(req, "type"),
                     .filter_keys = fkeys,
                     .filter_values = fvals,
                     .nfilters = nf};
    if (!public_bounds_allowed(a, p.type != NULL, http_arg_get(req, "since") || http_arg_get(req, "until"), res))
        return;
    cursor_buf c;
    if (!get_year(req, res, "since", &p.year_from) || !get_year(req, res, "until", &p.year_to) ||
        !get_limit(req, res, &p.limit) || !get_cursor(req, res, &c))
        return;
    if (p.type && (!*p.type || strlen(p.type) > 64)) {
        http_error(res, 400, "type: expected 1-64 characters");
        return;
    }
    patient_id pid;
    const char *ptext = http_arg_get(req, "patient_id");
    if (ptext && !get_pid(ptext, res, &pid)) return;
    p.pid = ptext ? &pid : NULL;
    if (c.len && !p.pid && (c.key[0] != 'T')) {
        http_error(res, 400, "cursor: not a cursor of this query");
        return;
    }
    p.cursor = c.len ? c.key : NULL;
    p.cursor_len = c.len;
    store_read *r;
    if (!begin_read_at(a, req, res, true, &r, &p.as_of)) return;
    query_ctx q = {a->store, a->schema};
    buf out = {0};
    ms_err e;
    ms_code rc = query_public_records(&q, r, &p, &out, &e);
    finish_read(r, rc, &e, &out, res, t0);
}
