/*
 * rules.h - signal rules over the text of records: parsing a rule, compiling every rule into one
 * Hyperscan database, and matching a record's fields against it. Pure: no I/O, no threads, no clock;
 * the notifier (notifier.h) runs it on committed records and the unit tests drive it over buffers.
 *
 * A rule is {"name", "fields": ["notes", ...], "any": ["chest pain", ...], "regex"?: "..." | [...],
 * "types"?: ["note", ...], "whole_words"?: true}:
 *   - name: 1-64 characters of [A-Za-z0-9_.-], not "." or ".." (it is a URL path segment, which clients
 *     would resolve away, and a metric label);
 *   - fields: the top-level fields whose text is searched (1-32 names); a field's value is searched when it
 *     is a string, or each string of an array of strings; other values, and absent fields, never match;
 *   - any: words or phrases (at most 1000, 1-256 bytes each), matched case-insensitively and, by default,
 *     as whole words: a phrase matches where it is neither preceded nor followed by a word character, and a
 *     run of white space in a phrase matches any run of white space (so "chest pain" matches "Chest
 *     PAIN" and "chest\n  pain", not "chest painful"). Word characters are ASCII letters, digits, '_' and
 *     every non-ASCII character (so that "caf" never matches inside "café"; the price: non-ASCII
 *     punctuation such as an em dash also joins words). Case folds ASCII letters and, for letters outside
 *     ASCII, the simple upper and lower case of each (utf8proc): "FIÈVRE" matches "fièvre". "whole_words":
 *     false matches the phrases anywhere, even inside words;
 *   - regex: one pattern or an array of at most 100 (1-1024 bytes each), Hyperscan's PCRE subset, matched
 *     case-insensitively in UTF-8 mode with no added boundaries (write \b yourself; \b and \w are ASCII's);
 *     a pattern that matches the empty string, or that Hyperscan cannot compile (back-references,
 *     look-behind, too-large repeats, bad syntax) is refused with Hyperscan's reason; one that it would take
 *     too long to compile is refused by the notifier (rule_check.h), not here;
 *   - types: only records of these types (absent: every type);
 *   - at least one phrase or pattern; unknown members are refused (a typo must not silently match less).
 * Errors name the rule and the member ("rule \"sepsis\": regex 2: Missing close parenthesis ..."); rules
 * are not PHI, so their terms may be quoted, but nothing here ever sees or quotes a record's text.
 *
 * DESIGN: every phrase and pattern of every rule is one expression of one Hyperscan block-mode database
 * (HS_FLAG_SINGLEMATCH: an expression reports once per scan), its id mapping back to the rule. A record
 * is scanned once per field that some rule names (whatever the number of rules naming it), and the rules
 * that fired are then kept only if they name that field and take the record's type. Phrases are compiled
 * as byte patterns (boundaries as explicit classes: Hyperscan has no \b in UCP mode, and UCP makes 1,000
 * phrases take ~40 s to compile against ~0.6 s this way). A rule_set is immutable once compiled, so any
 * number of threads may match against it, each with its own rule_scratch.
 *
 * What it must never do: keep or return the text that matched (only which rule and which field), or
 * accept a rule it would then fail to compile.
 */
#ifndef MS_NOTIFY_RULES_H
#define MS_NOTIFY_RULES_H

#include "base/util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RULE_NAME_MAX 64
#define RULE_FIELDS_MAX 32
#define RULE_PHRASES_MAX 1000
#define RULE_PHRASE_MAX 256
#define RULE_REGEXES_MAX 100
#define RULE_REGEX_MAX 1024
#define RULE_TYPES_MAX 64
#define RULE_SET_MAX 10000       /* rules in one set */
#define RULE_SET_EXPRS_MAX 10000 /* phrases and patterns of every rule of one set, together (its compile time) */

typedef struct {
    char name[RULE_NAME_MAX + 1];
    char **fields, **any, **regex, **types; /* decoded, NUL-terminated (no NUL inside) */
    uint32_t nfields, nany, nregex, ntypes;
    bool whole_words;
    double check_cpu_s; /* not part of the rule: the CPU seconds its regexes took to compile, each alone, in the
                           notifier's bounded check (rule_check.h); 0 until checked */
} rule_def;

/* Parse and check one rule (the JSON of POST /v1/rules, or an element of a rules file). MS_EINVAL with a
 * message naming the rule and the member. *out is owned by the caller (rule_def_free) on MS_OK only. */
ms_code rule_parse(const char *json, size_t len, rule_def *out, ms_err *e);
void rule_def_free(rule_def *r);
/* A deep copy. */
void rule_def_copy(rule_def *dst, const rule_def *src);
/* Its canonical JSON: {"name","fields","any","regex","types","whole_words"} (regex always an array). */
void rule_def_json(const rule_def *r, buf *out);
/* A rules file: a JSON array of rules. *out (n of them, rule_def_free each, then free) on MS_OK; MS_EINVAL
 * naming the rule (its place in the array, and its name once known) and the problem. Names must be unique. */
ms_code rules_parse_list(const char *json, size_t len, rule_def **out, size_t *n, ms_err *e);
/* Is this a valid rule name? */
bool rule_name_valid(const char *name, size_t len);
/* Compile one regex alone, as rule_set_compile compiles it (same flags), and free it: true if Hyperscan takes
 * it; else false with Hyperscan's reason in why. Unbounded: however long Hyperscan takes (rule_check.h runs
 * it in a helper process under limits). */
bool rule_regex_compiles(const char *regex, char *why, size_t cap);

/* ---- a compiled set ---- */

typedef struct rule_set rule_set;

/* Compile rules[0..n) into one set (n may be 0: a set that matches nothing). The rules are copied. Names
 * must be unique (MS_EINVAL naming the second); at most RULE_SET_MAX rules and RULE_SET_EXPRS_MAX phrases and
 * patterns in all (MS_EINVAL); an expression Hyperscan refuses is MS_EINVAL naming its rule, member and
 * Hyperscan's reason. No bound on the time it takes: the notifier checks each regex first (rule_check.h). */
ms_code rule_set_compile(const rule_def *const *rules, size_t n, rule_set **out, ms_err *e);
void rule_set_free(rule_set *rs);
size_t rule_set_count(const rule_set *rs);
const rule_def *rule_set_rule(const rule_set *rs, size_t i);
/* The index of the rule with this name, or -1. */
long rule_set_find(const rule_set *rs, const char *name);
/* The distinct field names the rules search, sorted; a hit's field is an index into them. */
size_t rule_set_field_count(const rule_set *rs);
const char *rule_set_field(const rule_set *rs, size_t i);
/* The compiled database's size in bytes (memory). */
size_t rule_set_bytes(const rule_set *rs);

/* ---- matching ---- */

/* Per thread: Hyperscan's scratch space and the matcher's buffers. Fit it to each set before matching with
 * it (a scratch fitted to several sets serves each of them). */
typedef struct rule_scratch rule_scratch;
rule_scratch *rule_scratch_new(void);
void rule_scratch_free(rule_scratch *sc);
ms_code rule_scratch_fit(rule_scratch *sc, const rule_set *rs, ms_err *e);

typedef struct {
    uint32_t rule;  /* index in the set */
    uint32_t field; /* index in the set's fields */
} rule_hit;

/* A field's text, already decoded (not JSON). */
typedef struct {
    const char *name;
    size_t name_len;
    const char *text;
    size_t len;
} rule_text;

/* The (rule, field) pairs that match a record of type `type` whose fields are texts[0..n) (a field may come
 * more than once: an array's strings), each pair once, sorted by rule then field. *hits points into sc, valid
 * until its next use. Returns the number of hits. */
size_t rule_set_match_texts(const rule_set *rs, rule_scratch *sc, const char *type, size_t type_len,
                            const rule_text *texts, size_t n, const rule_hit **hits);
/* The same over a record's JSON object text: the fields the set searches are found among its top-level
 * members and their strings decoded. A body that is not a JSON object matches nothing. */
size_t rule_set_match_record(const rule_set *rs, rule_scratch *sc, const char *type, size_t type_len, const char *body,
                             size_t len, const rule_hit **hits);
/* Bytes of text scanned by sc since it was made (for metrics). */
uint64_t rule_scratch_scanned(const rule_scratch *sc);

#endif
