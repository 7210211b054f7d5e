/*
 * counter_def.h - what a rolling-window counter counts (issue 13): its definition, parsed from JSON, and
 * the pure test of one record version against it.
 *
 *   {"name": "labs_final", "type": "lab", "where": {"field": "status", "equals": "final"},
 *    "max_window": "72h", "resolution": "1m", "per_parent": true, "max_parent_buckets": 65536}
 *
 * - name: 1-64 characters of A-Z a-z 0-9 _ . -, not "." or ".." (it names the counter in paths, metric labels
 *   and logs, so it may hold nothing else, nor a path segment URLs resolve away; it is not PHI).
 * - type (optional): only records of this type (the schema's type role; compared exactly).
 * - where (optional): one condition on one field, top-level or nested by a dotted path as the schema's public
 *   entries name it ("address.zip": a member of an object; a top-level member named with the dots is taken
 *   first; counter_follow.c reads it): "equals" a JSON string, number, true, false or
 *   null; "in" an array of 1-64 of those; "contains" a non-empty string (the field's string value holds
 *   it, ASCII letters compared without case); "exists" true (present and not null) or false.
 * - max_window (required): the longest window a query may ask for, as a duration ("72h", "90m", "7d").
 * - resolution (default "1s"): the bucket width; max_window must be a multiple of it, and
 *   max_window / resolution at most COUNTER_BUCKETS_MAX (72h at 1s is 259,200 buckets).
 * - per_parent (default false): also count per parent record id (`GET ...?parent=ID`), in at most
 *   max_parent_buckets (default 65,536; 1,024 to 4,194,304) (parent, bucket) pairs; counter.h says what
 *   happens beyond.
 *
 * Values are compared as JSON values: strings by their decoded text, numbers as the exact decimals they
 * write (1 = 1.0 = 10e-1; never as doubles, which take 2^53 + 1 for 2^53), true, false and null by kind. A
 * field that is an object or an array equals nothing (it may still "exist").
 *
 * Contract: pure (no I/O, no globals); a refused definition gets a message naming the key and what it
 * accepts, never echoing a value (a where value may be PHI: "equals": "Jane Doe"). counter_def_json
 * writes the canonical form (fixed key order, defaults written out): two definitions are the same
 * counter exactly when their canonical forms are equal.
 */
#ifndef MS_COUNTER_DEF_H
#define MS_COUNTER_DEF_H

#include "base/json_scan.h"
#include "base/util.h"
#include "pipeline/schema.h"

#define COUNTER_NAME_MAX 64
#define COUNTER_IN_MAX 64
#define COUNTER_BUCKETS_MAX (1u << 20)
#define COUNTER_PARENT_BUCKETS_DEFAULT 65536u
#define COUNTER_PARENT_BUCKETS_MIN 1024u
#define COUNTER_PARENT_BUCKETS_MAX (1u << 22)

typedef enum { WHERE_NONE = 0, WHERE_EQUALS, WHERE_IN, WHERE_CONTAINS, WHERE_EXISTS } counter_where_op;

/* A scalar of "equals" or "in". */
typedef struct {
    json_type type; /* JSON_STRING, JSON_NUMBER, JSON_TRUE, JSON_FALSE or JSON_NULL */
    char *text;     /* a string decoded; a number as written (its JSON text) */
    size_t len;
    double num; /* a number's value */
} counter_value;

typedef struct {
    char name[COUNTER_NAME_MAX + 1];
    char *type; /* NULL: every type */
    size_t type_len;
    counter_where_op op;
    char *field; /* where.field (NULL without where) */
    size_t field_len;
    counter_value *values; /* equals: 1, in: nvalues */
    uint32_t nvalues;
    char *contains; /* contains: the text looked for */
    size_t contains_len;
    bool exists; /* exists: true or false */
    int64_t max_window_us, resolution_us;
    bool per_parent;
    uint32_t max_parent_buckets;
} counter_def;

/* Parse one definition (a JSON object). On error *d is left empty (counter_def_free is safe) and e names
 * the key: "counter: \"max_window\" must be a duration such as \"72h\"". */
ms_code counter_def_parse(counter_def *d, const char *text, size_t len, ms_err *e);
void counter_def_free(counter_def *d);
/* The canonical JSON object of d (appended to out). */
void counter_def_json(const counter_def *d, buf *out);
/* Same canonical form. */
bool counter_def_same(const counter_def *a, const counter_def *b);

/* Is every field the counter reads public in this schema (the type role when "type" is set, published as is
 * since "type" compares the stored type; where.field when "where" is, whose public value it compares)? Then it
 * is computed from the public copy and readable with public:read; otherwise from the record itself, and
 * readable with patients:read only. */
bool counter_def_public(const counter_def *d, const schema *s);

/* Does a record of this type count (no "type": all do)? */
bool counter_type_matches(const counter_def *d, const char *type, size_t len);
/* Does the where condition hold for a field whose raw JSON value is val (type t), or that is absent
 * (val NULL)? No "where": true. */
bool counter_where_holds(const counter_def *d, const char *val, size_t len, json_type t);

/* A duration in microseconds from "72h", "90m", "30s", "7d" (a bare number is seconds); false if not. */
bool counter_duration_parse(const char *s, size_t n, int64_t *us);
/* A duration in the largest unit that writes it exactly ("72h", "90s"). out holds 32 bytes. */
void counter_duration_format(int64_t us, char *out, size_t cap);

#endif
