/*
 * json_scan.h - a validating, non-allocating JSON scanner over a byte buffer.
 *
 * medstream never builds a DOM of a 20 KB record: it validates the whole text once (structure,
 * numbers, escapes, UTF-8), and hands back spans of the top-level members so that later stages copy
 * values as bytes (json_split_object finds them again in text validated before, without re-checking).
 * Contract: every function is pure (no I/O, no global state, no allocation), accepts arbitrary bytes
 * without reading past `end`, and reports the first problem with its byte offset.
 * Nesting is limited to JSON_MAX_DEPTH so hostile input cannot exhaust the stack.
 */
#ifndef MS_JSON_SCAN_H
#define MS_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>

#define JSON_MAX_DEPTH 64

typedef enum {
    JSON_NONE = 0,
    JSON_STRING,
    JSON_NUMBER,
    JSON_OBJECT,
    JSON_ARRAY,
    JSON_TRUE,
    JSON_FALSE,
    JSON_NULL,
} json_type;

const char *json_type_name(json_type t);

typedef struct {
    const char *key; /* raw key text between the quotes (escapes not decoded) */
    size_t key_len;
    bool key_escaped; /* key contains a backslash escape */
    const char *val;  /* raw value text; a string value includes its quotes */
    size_t val_len;
    json_type type;
} json_member;

typedef struct {
    size_t offset; /* byte offset of the problem from the start of the scanned text */
    char msg[96];
} json_error;

/* Skip JSON whitespace. */
const char *json_skip_ws(const char *p, const char *end);

/* Scan one value at p (no leading whitespace skipped). Returns the byte after it, or NULL with *err
 * set (offset relative to `base`). *type receives the value's type. */
const char *json_scan_value(const char *base, const char *p, const char *end, json_type *type, json_error *err);

/* Scan text [p, p+n) that must be exactly one JSON object (whitespace around it allowed). Fills up to
 * `max` members in document order and returns how many, or -1 with *err set: malformed JSON, not an
 * object, trailing text, or more than `max` members. */
int json_scan_object(const char *p, size_t n, json_member *members, int max, json_error *err);

/* The top-level members of an object text that json_scan_object has already accepted (a stored record
 * body): the same spans and types, found without validating anything again (a string is skipped with
 * memchr for its closing quote), several times faster over a 20 KB note. Text that was not validated gets
 * spans that stay inside [p, p+n), never a crash. Returns the count, or -1 when it is not an object or has
 * more than max members. */
int json_split_object(const char *p, size_t n, json_member *members, int max);

/* Walking a nested array or object of text the scanner has accepted (a stored record body, a public
 * copy): json_iter_begin at its '[' or '{', then json_iter_element (arrays) or json_iter_member (objects:
 * the raw key between its quotes, escapes not decoded) until they answer false. Each value is scanned
 * again (bounded by JSON_MAX_DEPTH), so text that was not validated stops the walk, never a crash. */
typedef struct {
    const char *base, *p, *end;
} json_iter;
json_iter json_iter_begin(const char *v, size_t n);
bool json_iter_element(json_iter *it, const char **v, size_t *vl, json_type *t);
bool json_iter_member(json_iter *it, const char **key, size_t *key_len, const char **v, size_t *vl, json_type *t);

/* Decode the contents of a JSON string (raw text between the quotes, already validated by the
 * scanner) into UTF-8. out must hold raw_len bytes (decoding never grows text). Returns the decoded
 * length. \u0000 decodes to a NUL byte: callers that need C strings must check for it. */
size_t json_string_decode(const char *raw, size_t raw_len, char *out);

/* Validate UTF-8 (RFC 3629: no overlongs, no surrogates, <= U+10FFFF). Returns the offset of the
 * first bad byte, or n if all is valid. */
size_t utf8_check(const char *s, size_t n);

#endif
