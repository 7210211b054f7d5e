/*
 * test_public_property.c - the property of issue 15: random records (random nested objects and
 * arrays) under random allow-lists (random paths, "[]" arrays, every transform, composed identities)
 * never put into the public copy of a record or of a patient a value that no copy entry allows, nor an
 * identity value (name parts, the joined name, the dob) untransformed.
 *
 * How it knows: every value in a PHI position is distinctive: a marker ("M" + 10 upper-case letters;
 * public output is made of lower-case keys, hex pseudonyms and digits, so a substring hit cannot be a
 * coincidence), or a ZIP, date or number unique within its record (checked by equality against every
 * scalar of the output). An oracle written apart from deidentify.c says which leaves a copy entry
 * allows (a copy path is a prefix of the leaf's path; no drop entry's names are a prefix of the leaf's
 * member names); every other planted value must be absent. Seeded (splitmix64): a failure prints the
 * seed and iteration; MS_PROPERTY_SEED=N reruns another seed. A last test shows the check can fail.
 */
#include "unit.h"

#include "base/json_scan.h"
#include "pipeline/deidentify.h"
#include "pipeline/merge.h"

#define MAX_TOKENS 512
#define MAX_STEPS 12

typedef enum { TOK_MARKER, TOK_EXACT } tok_kind; /* substring anywhere / equal to some output scalar */

typedef struct {
    char text[40];
    tok_kind kind;
    bool identity;
    int nsteps; /* the leaf's path: member names, "" for an array element */
    char steps[MAX_STEPS][16];
} token;

typedef struct {
    unit_rng rng;
    buf schema_text, record;
    token tok[MAX_TOKENS];
    int ntok;
    char path[MAX_STEPS][16];
    int depth;
    bool composed;
    /* coverage */
    int allowed_seen, refused_schemas, arrays, nested, keyed;
} gen;

static const char *const member_pool[] = {"a", "b", "zip", "code", "at", "sub"};
static const char *const top_pool[] = {"f0", "f1", "f2", "f3", "f4", "f5"};
static const char *const transform_pool[] = {"copy",     "copy",       "year",      "zip3", "age",
                                             "age_band", "date_shift", "pseudonym", "drop"};

static bool token_exists(gen *g, const char *t)
{
    for (int i = 0; i < g->ntok; i++)
        if (strcmp(g->tok[i].text, t) == 0) return true;
    return false;
}

/* Record a planted value at the current path (steps g->path[0..depth)). */
static void plant(gen *g, const char *text, tok_kind kind, bool identity)
{
    if (g->ntok == MAX_TOKENS) return;
    token *t = &g->tok[g->ntok++];
    snprintf(t->text, sizeof t->text, "%s", text);
    t->kind = kind;
    t->identity = identity;
    t->nsteps = g->depth;
    for (int i = 0; i < g->depth; i++)
        memcpy(t->steps[i], g->path[i], 16);
}

static void marker(gen *g, char out[16])
{
    do {
        out[0] = 'M';
        for (int i = 1; i < 11; i++)
            out[i] = (char)('A' + unit_below(&g->rng, 26));
        out[11] = 0;
    } while (token_exists(g, out));
}

/* A leaf value, planted. */
static void leaf(gen *g)
{
    char t[40];
    switch (unit_below(&g->rng, 6)) {
    case 0:
    case 1:
        marker(g, t);
        buf_printf(&g->record, "\"%s\"", t);
        plant(g, t, TOK_MARKER, false);
        return;
    case 2: /* a ZIP (sometimes a restricted area) */
        do {
            if (unit_below(&g->rng, 4) == 0)
                snprintf(t, sizeof t, "036%02u", unit_below(&g->rng, 100));
            else
                snprintf(t, sizeof t, "%05u", unit_below(&g->rng, 100000));
        } while (token_exists(g, t));
        buf_printf(&g->record, "\"%s\"", t);
        plant(g, t, TOK_EXACT, false);
        return;
    case 3: /* a date or a time */
        do {
            if (unit_below(&g->rng, 2))
                snprintf(t, sizeof t, "%04u-%02u-%02u", 1930 + unit_below(&g->rng, 90), 1 + unit_below(&g->rng, 12),
                         1 + unit_below(&g->rng, 28));
            else
                snprintf(t, sizeof t, "%04u-02-29T%02u:15:00+01:00", 2000 + 4 * unit_below(&g->rng, 6),
                         unit_below(&g->rng, 24));
        } while (token_exists(g, t));
        buf_printf(&g->record, "\"%s\"", t);
        plant(g, t, TOK_EXACT, false);
        return;
    case 4: /* a number of 7-9 digits */
        do
            snprintf(t, sizeof t, "%u", 1000000 + unit_below(&g->rng, 900000000));
        while (token_exists(g, t));
        buf_puts(&g->record, t);
        plant(g, t, TOK_EXACT, false);
        return;
    default: buf_puts(&g->record, unit_below(&g->rng, 2) ? "true" : "null"); return;
    }
}

static void value(gen *g, int level);

static void object(gen *g, int level)
{
    int n = 1 + (int)unit_below(&g->rng, 4);
    bool used[6] = {0};
    buf_putc(&g->record, '{');
    for (int i = 0, k = 0; i < n; i++) {
        int m = (int)unit_below(&g->rng, 6);
        if (used[m]) continue;
        used[m] = true;
        buf_printf(&g->record, "%s\"%s\":", k++ ? "," : "", member_pool[m]);
        snprintf(g->path[g->depth++], 16, "%s", member_pool[m]);
        value(g, level + 1);
        g->depth--;
    }
    buf_putc(&g->record, '}');
    g->nested++;
}

static void array(gen *g, int level)
{
    int n = (int)unit_below(&g->rng, 4);
    buf_putc(&g->record, '[');
    for (int i = 0; i < n; i++) {
        if (i) buf_putc(&g->record, ',');
        g->path[g->depth++][0] = 0; /* an element */
        value(g, level + 1);
        g->depth--;
    }
    buf_putc(&g->record, ']');
    g->arrays++;
}

static void value(gen *g, int level)
{
    uint32_t r = unit_below(&g->rng, 10);
    if (level < 3 && g->depth < MAX_STEPS - 1 && r < 3)
        object(g, level);
    else if (level < 3 && g->depth < MAX_STEPS - 1 && r < 5)
        array(g, level);
    else
        leaf(g);
}

/* A random record: identity (planted as identity values), ts sometimes, and some of f0..f5. */
static void random_record(gen *g)
{
    char n1[16], n2[16], dob[16];
    g->record.len = 0;
    g->ntok = 0;
    g->depth = 0;
    marker(g, n1);
    marker(g, n2);
    snprintf(dob, sizeof dob, "%04u-%02u-%02u", 1920 + unit_below(&g->rng, 100), 1 + unit_below(&g->rng, 12),
             1 + unit_below(&g->rng, 28));
    if (g->composed) {
        buf_printf(&g->record, "{\"given\":\"%s\",\"family\":\"%s\",\"dob\":\"%s\"", n1, n2, dob);
        plant(g, n1, TOK_MARKER, true);
        plant(g, n2, TOK_MARKER, true);
    } else {
        buf_printf(&g->record, "{\"name\":\"%s %s\",\"dob\":\"%s\"", n1, n2, dob);
        char full[40];
        snprintf(full, sizeof full, "%s %s", n1, n2);
        plant(g, full, TOK_MARKER, true);
        plant(g, n1, TOK_MARKER, true);
    }
    plant(g, dob, TOK_EXACT, true);
    if (unit_below(&g->rng, 2))
        buf_printf(&g->record, ",\"ts\":\"20%02u-0%u-1%uT10:00:00Z\"", 10 + unit_below(&g->rng, 16),
                   1 + unit_below(&g->rng, 9), unit_below(&g->rng, 9));
    for (int f = 0; f < 6; f++) {
        if (unit_below(&g->rng, 3) == 0) continue;
        buf_printf(&g->record, ",\"%s\":", top_pool[f]);
        snprintf(g->path[0], 16, "%s", top_pool[f]);
        g->depth = 1;
        value(g, 0);
        g->depth = 0;
    }
    buf_putc(&g->record, '}');
}

/* A random allow-list (the schema may refuse it: overlapping paths; then another is drawn). */
static void random_schema_text(gen *g)
{
    g->schema_text.len = 0;
    buf_puts(&g->schema_text,
             g->composed ? "{\"identity\":{\"name\":[\"given\",\"family\"]},\"public\":{" : "{\"public\":{");
    int n = 1 + (int)unit_below(&g->rng, 6), k = 0;
    for (int i = 0; i < n; i++) {
        buf path = {0};
        buf_puts(&path, top_pool[unit_below(&g->rng, 6)]);
        for (int d = 0; d < 3; d++) {
            if (unit_below(&g->rng, 3) == 0) buf_puts(&path, "[]");
            if (unit_below(&g->rng, 2)) break;
            buf_printf(&path, ".%s", member_pool[unit_below(&g->rng, 6)]);
        }
        const char *t = transform_pool[unit_below(&g->rng, 9)];
        if (strcmp(t, "age_band") == 0)
            buf_printf(&g->schema_text, "%s\"%s\":{\"transform\":\"age_band\",\"width\":%u}", k++ ? "," : "", path.data,
                       1 + unit_below(&g->rng, 20));
        else if (strcmp(t, "pseudonym") == 0 && unit_below(&g->rng, 2))
            buf_printf(&g->schema_text, "%s\"%s\":{\"transform\":\"pseudonym\",\"scope\":\"patient\"}", k++ ? "," : "",
                       path.data);
        else
            buf_printf(&g->schema_text, "%s\"%s\":\"%s\"", k++ ? "," : "", path.data, t);
        buf_free(&path);
    }
    /* identity fields through their transforms, sometimes */
    static const char *const dob_t[] = {"year", "age", "age_band", "drop"};
    if (unit_below(&g->rng, 2)) buf_printf(&g->schema_text, ",\"dob\":\"%s\"", dob_t[unit_below(&g->rng, 4)]);
    if (unit_below(&g->rng, 2)) buf_printf(&g->schema_text, ",\"%s\":\"pseudonym\"", g->composed ? "family" : "name");
    if (unit_below(&g->rng, 3) == 0) buf_puts(&g->schema_text, ",\"type\":\"copy\",\"ts\":\"year\"");
    buf_puts(&g->schema_text, "}}");
}

/* ---- the oracle: is the leaf at these steps allowed by a copy entry? (written apart from deidentify.c) ---- */

/* Do the entry's segments match a prefix of the steps (member names, with an element step after each
 * "[]")? *used: the steps it covers. */
static bool entry_prefix(const schema_public_field *p, const token *t, int *used)
{
    int s = 0;
    for (int k = 0; k < p->nseg; k++) {
        if (s >= t->nsteps || strcmp(t->steps[s], p->seg[k].name) != 0) return false;
        s++;
        if (p->seg[k].each) {
            if (s >= t->nsteps || t->steps[s][0]) return false;
            s++;
        }
    }
    *used = s;
    return true;
}

/* Are the drop entry's names a prefix of the token's member names (arrays transparent)? */
static bool dropped_by(const schema_public_field *d, const token *t)
{
    int k = 0;
    for (int s = 0; s < t->nsteps && k < d->nseg; s++) {
        if (!t->steps[s][0]) continue;
        if (strcmp(t->steps[s], d->seg[k].name) != 0) return false;
        k++;
    }
    return k == d->nseg;
}

static bool oracle_allows(const schema *sc, const token *t)
{
    if (t->identity) return false;
    for (int i = 0; i < sc->npub; i++) {
        const schema_public_field *p = &sc->pub[i];
        int used;
        if (p->transform != PUBLISH_COPY || !entry_prefix(p, t, &used)) continue;
        bool dropped = false;
        for (int j = 0; j < sc->npub && !dropped; j++)
            dropped = sc->pub[j].transform == PUBLISH_DROP && dropped_by(&sc->pub[j], t);
        if (!dropped) return true;
    }
    return false;
}

/* ---- the check ---- */

typedef struct {
    buf strings; /* every decoded string (keys and values) of the output, NUL-separated */
    buf scalars; /* every scalar as text (strings decoded), NUL-separated */
} output_texts;

static bool collect(const char *v, size_t n, json_type t, output_texts *o)
{
    json_iter it = json_iter_begin(v, n);
    const char *k, *ev;
    size_t kl, el;
    json_type et;
    if (t == JSON_OBJECT) {
        while (json_iter_member(&it, &k, &kl, &ev, &el, &et)) {
            char *dec = malloc(kl + 1);
            size_t dl = json_string_decode(k, kl, dec);
            buf_put(&o->strings, dec, dl);
            buf_put(&o->strings, "", 1);
            free(dec);
            if (!collect(ev, el, et, o)) return false;
        }
        return it.p < it.end && *it.p == '}';
    }
    if (t == JSON_ARRAY) {
        while (json_iter_element(&it, &ev, &el, &et))
            if (!collect(ev, el, et, o)) return false;
        return it.p < it.end && *it.p == ']';
    }
    if (t == JSON_STRING) {
        char *dec = malloc(n);
        size_t dl = json_string_decode(v + 1, n - 2, dec);
        buf_put(&o->strings, dec, dl);
        buf_put(&o->strings, "", 1);
        buf_put(&o->scalars, dec, dl);
        buf_put(&o->scalars, "", 1);
        free(dec);
    } else {
        buf_put(&o->scalars, v, n);
        buf_put(&o->scalars, "", 1);
    }
    return true;
}

static bool in_list(const buf *b, const char *s, bool substring)
{
    for (size_t at = 0; at < b->len; at += strlen(b->data + at) + 1)
        if (substring ? strstr(b->data + at, s) != NULL : strcmp(b->data + at, s) == 0) return true;
    return false;
}

/* NULL if the public text out keeps the property for the planted tokens, else why. */
static const char *check(const schema *sc, gen *g, const char *out, size_t n, char *why, size_t cap)
{
    json_error je;
    json_member m[64];
    if (json_scan_object(out, n, m, 64, &je) < 0) {
        snprintf(why, cap, "not a JSON object: %s", je.msg);
        return why;
    }
    output_texts o = {0};
    const char *bad = NULL;
    if (!collect(out, n, JSON_OBJECT, &o)) {
        snprintf(why, cap, "output not walkable");
        bad = why;
    }
    for (int i = 0; i < g->ntok && !bad; i++) {
        const token *t = &g->tok[i];
        bool allowed = oracle_allows(sc, t);
        bool present = t->kind == TOK_MARKER ? in_list(&o.strings, t->text, true) : in_list(&o.scalars, t->text, false);
        if (present && !allowed) {
            snprintf(why, cap, "%s value %s (at depth %d) is in the output %.*s", t->identity ? "identity" : "PHI",
                     t->text, t->nsteps, (int)(n > 300 ? 300 : n), out);
            bad = why;
        }
        if (present && allowed) g->allowed_seen++;
    }
    buf_free(&o.strings);
    buf_free(&o.scalars);
    return bad;
}

/* The record alone as a patient's state: its non-record fields, each value from the record. */
static void patient_projection(const schema *sc, const parsed_record *r, buf *out)
{
    state_field st[64];
    const char *vals[64];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->nfields && n < 64; i++) {
        const record_field *f = &r->fields[i];
        if (schema_is_record_field(sc, f->key, f->key_len)) continue;
        st[n] = (state_field){.key = f->key, .key_len = f->key_len, .len = f->val_len, .ts = r->ts_us};
        vals[n++] = f->val;
    }
    tf_keys keys;
    tf_patient_keys(unit_deid_key(), r->identity_key, r->identity_key_len, &keys);
    deid_ctx cx = {.event_us = deid_patient_event_time(st, n), .keys = &keys};
    deid_patient_fields(sc, &cx, st, n, vals, out);
}

typedef struct {
    int iterations, failures, checked_public, allowed_seen, refused, arrays, nested, patients;
    int out_arrays, out_nested,
        out_transformed; /* public copies holding an array, a nested object, a transformed value */
    char first[2000];
} stats;

static void run(uint64_t seed, int iterations, bool feed_raw_record, stats *st)
{
    gen g = {.rng = {seed}};
    memset(st, 0, sizeof *st);
    arena mem = {0};
    for (int it = 0; it < iterations; it++) {
        g.composed = unit_below(&g.rng, 2);
        schema sc;
        ms_err e;
        for (;;) {
            random_schema_text(&g);
            if (schema_parse(&sc, g.schema_text.data, g.schema_text.len, &e) == MS_OK) break;
            st->refused++;
        }
        random_record(&g);
        scan_config cfg = unit_scan_config(&sc);
        parsed_record r;
        record_prepare_one(&cfg, g.record.data, g.record.len, 1, &mem, &r);
        char why[900];
        const char *bad = NULL;
        if (r.rejected) {
            snprintf(why, sizeof why, "record rejected: %s", r.error);
            bad = why;
        } else if (feed_raw_record) { /* the check itself: the raw record must fail it */
            bad = check(&sc, &g, r.body, r.body_len, why, sizeof why);
        } else {
            bad = check(&sc, &g, r.public_fields, r.public_fields_len, why, sizeof why);
            st->checked_public++;
            st->out_arrays += memchr(r.public_fields, '[', r.public_fields_len) != NULL;
            st->out_nested += memmem(r.public_fields, r.public_fields_len, ":{\"", 3) != NULL;
            for (int i = 0; i < sc.npub; i++)
                if (sc.pub[i].transform != PUBLISH_COPY && sc.pub[i].transform != PUBLISH_DROP &&
                    unit_has(r.public_fields, r.public_fields_len, sc.pub[i].seg[0].name)) {
                    st->out_transformed++;
                    break;
                }
            if (!bad) {
                buf pp = {0};
                patient_projection(&sc, &r, &pp);
                bad = check(&sc, &g, pp.data, pp.len, why, sizeof why);
                st->patients++;
                buf_free(&pp);
            }
        }
        if (bad && st->failures++ == 0)
            snprintf(st->first, sizeof st->first, "seed %llu iteration %d: %s; schema %.300s; record %.300s",
                     (unsigned long long)seed, it, bad, g.schema_text.data, g.record.data);
        schema_free(&sc);
        if (it % 128 == 127) arena_free(&mem);
        st->iterations++;
    }
    st->allowed_seen = g.allowed_seen;
    st->arrays = g.arrays;
    st->nested = g.nested;
    arena_free(&mem);
    buf_free(&g.schema_text);
    buf_free(&g.record);
}

static uint64_t seed_of(void)
{
    const char *s = getenv("MS_PROPERTY_SEED");
    return s && *s ? strtoull(s, NULL, 0) : 0x15C0FFEEULL;
}

static void test_public_never_leaks(void **state)
{
    (void)state;
    stats st;
    uint64_t seed = seed_of();
    run(seed, 4000, false, &st);
    if (st.failures)
        fail_msg("%d of %d records broke the property (rerun: MS_PROPERTY_SEED=%llu); first: %s", st.failures,
                 st.iterations, (unsigned long long)seed, st.first);
    /* the generator covers what it should: copies that do publish, refused schemas, arrays, nesting */
    print_message("seed %llu: %d records, %d patients, %d allowed values published, %d schemas refused, %d arrays, "
                  "%d objects; public copies with an array %d, a nested object %d, a transformed field %d\n",
                  (unsigned long long)seed, st.checked_public, st.patients, st.allowed_seen, st.refused, st.arrays,
                  st.nested, st.out_arrays, st.out_nested, st.out_transformed);
    assert_int_equal(st.checked_public, 4000);
    assert_true(st.allowed_seen > 800 && st.refused > 100 && st.arrays > 2000 && st.nested > 2000);
    assert_true(st.out_arrays > 200 && st.out_nested > 100 && st.out_transformed > 1000);
}

/* The check can fail: fed the raw record instead of its public copy, it finds the planted values. */
static void test_check_detects_leaks(void **state)
{
    (void)state;
    stats st;
    run(7, 300, true, &st);
    assert_true(st.failures > 290); /* every record holds its name and dob */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_public_never_leaks),
        cmocka_unit_test(test_check_detects_leaks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
