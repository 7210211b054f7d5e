/*
 * record_scan.h - stage 1 of the pipeline: turn a request body (NDJSON, a JSON array, or one object)
 * into parsed records, each either valid (record-level roles extracted, fields listed, hashes computed)
 * or rejected with a message that names what is wrong and where. The identity (stage 2, identity.h) and
 * the public copy (stage 3, deidentify.h) are filled in by the stages after it; sources call all three
 * through prepare.h.
 *
 * Contract: pure (no I/O); runs on the receiving thread, in parallel across requests, so the single
 * writer only does what must be serialized. Parsed records point into the caller's body buffer (which
 * must outlive the batch) and into the batch's arena. A bad record never stops the others. Error texts
 * name fields, lines and byte offsets, never field values (values may be PHI).
 */
#ifndef MS_RECORD_SCAN_H
#define MS_RECORD_SCAN_H

#include "base/json_scan.h"
#include "pipeline/schema.h"
#include "base/util.h"

#define RECORD_MAX_FIELDS 1024
#define RECORD_ID_MAX 256
#define RECORD_KEY_MAX 1024 /* bytes of a field name */

typedef struct {
    const char *key; /* decoded key (points into the body when it had no escapes) */
    uint32_t key_len;
    const char *val; /* raw JSON value text, inside the body */
    uint32_t val_len;
    uint64_t hash; /* XXH3-64 of the raw value text: equal hash and length = same value */
    json_type type;
} record_field;

typedef struct {
    uint32_t line; /* 1-based line (NDJSON) or item (array) */
    bool rejected;
    const char *error; /* when rejected */
    const char *body;  /* the record's JSON object text, trimmed, inside the body buffer */
    uint32_t body_len;
    const char *record_id; /* decoded, no control characters */
    uint32_t record_id_len;
    bool record_id_derived;   /* absent in input: keyed hash of the content */
    bool replay;              /* may have been stored before (a row an importer sends again: record_origin.h): as
                                 ingest_job.replay, for this record alone (set by the source after the scan) */
    const char *identity_key; /* normalized name NUL YYYY-MM-DD (stage 2) */
    uint32_t identity_key_len;
    const char *type;
    uint32_t type_len;
    const char *parent_id; /* the parent role's record id, decoded (NULL: absent or null) */
    uint32_t parent_id_len;
    int64_t ts_us;                  /* event time */
    unsigned char content_hash[16]; /* XXH3-128 of the canonical content (fields sorted by key) */
    record_field *fields;           /* every top-level field, sorted by key */
    uint32_t nfields;
    const char *public_fields; /* de-identified {"field":value,...} of this record (stage 3) */
    uint32_t public_fields_len;
} parsed_record;

typedef struct {
    const schema *schema;
    size_t max_record;             /* bytes; a larger record is a rejected line */
    int64_t now_us;                /* ingest time: default event time, and the "future" limit for dob */
    const unsigned char *id_key;   /* 32-byte secret of this store for derived record ids */
    const unsigned char *deid_key; /* 32-byte secret of this store for the keyed public transforms (date_shift,
                                      pseudonym: transforms.h); NULL: those fields are left out */
    /* Rows of a file (medstream import): a record without an id is then named by where it is, not by what
     * it holds: the keyed hash of (origin, the physical line of the file it starts on), so that the same
     * row of the same file is the same record on every run, and two equal rows are two records. NULL: by
     * its content (HTTP, Kafka). */
    const unsigned char *origin; /* 32 bytes naming the file (the importer's file identity) */
    uint64_t origin_line;        /* the file's physical line of the body's line 1 (line L is origin_line + L - 1) */
    /* A record without an id field takes this id instead of a derived one (a cluster seed's message: the id
     * the record had in the store that seeded the cluster, ingest/cluster_seed.h). NULL: derived. */
    const char *record_id;
    uint32_t record_id_len;
    int64_t default_ts_us; /* a record without an event time takes this one (the seed's, as above); 0: now_us */
} scan_config;

typedef struct {
    arena mem;
    parsed_record *records;
    uint32_t n, cap;
    uint32_t rejected;
} record_batch;

/* Scan a whole request body (a leading UTF-8 byte-order mark is skipped). Returns MS_EINVAL only for a
 * body with no records at all (empty or only whitespace); everything else becomes per-line results. */
ms_code record_scan_body(const scan_config *cfg, const char *body, size_t len, record_batch *out, ms_err *e);

/* The top-level fields of one JSON object text, sorted by key, keys decoded into mem, values hashed:
 * NULL, or what is wrong (a static per-thread text naming positions and field names, never values).
 * Also re-reads stored bodies (a patient's state recomputed from its records). */
const char *record_scan_fields(const char *text, size_t len, arena *mem, record_field **out, uint32_t *n);

/* Scan one record's text (used by the body scanner; sources use record_prepare_one). */
void record_scan_one(const scan_config *cfg, const char *text, size_t len, uint32_t line, arena *mem,
                     parsed_record *out);

void record_batch_free(record_batch *b);

/* The field with this key, or NULL (fields are sorted: binary search). */
const record_field *record_field_get(const parsed_record *r, const char *key, size_t key_len);

int record_key_cmp(const char *a, size_t an, const char *b, size_t bn);

/* Mark r rejected with the message fmt, which takes r->line (%u) then a and b (%s; NULL is ""). Stages
 * 1 and 2 say why a record is refused this way. */
void record_reject(parsed_record *r, arena *mem, const char *fmt, const char *a, const char *b);

/* A field's JSON string value decoded into mem (NUL-terminated, *len its length); NULL if the text
 * holds a NUL. */
char *record_field_string(arena *mem, const record_field *f, uint32_t *len);

#endif
