/*
 * store.h - the embedded store: LMDB for keys, indexes, versions and the commit log; the segment log
 * for record bodies. This header is the store's whole contract.
 *
 * LAYOUT (LMDB sub-databases; "~x" is the bitwise complement, so newer sorts first):
 *   identity be64(num)                                              -> patient id (16) + identity key
 *            (normalized name NUL YYYY-MM-DD); looked up through an in-memory hash index of the keys
 *            (identity_index.h) rebuilt at open, so new patients append here instead of inserting
 *   patient  num 'v' ~valid_from ~version                          -> patient version (state fields)
 *            num 'r' be64(event ts) record_id                       -> "" (the patient's records index)
 *   record   record_id NUL ~valid_from ~version                     -> record version (meta + body position)
 *   public   'P' num ~valid_from ~version                           -> public patient fields (JSON)
 *            'R' record_id NUL ~valid_from ~version                 -> pid, year, type, public fields (JSON)
 *            'T' type NUL be16(year) record_id  and  'T' "*" ...   -> "" (public records index)
 *   log      be64(commit position)                                  -> commit time + the versions written
 *   snapshot snapshot id                                             -> be64(as_of)
 *   users    user name                                               -> 0x01 flags be64(created)
 *            be64(changed) role NUL Argon2id encoded hash (flags bit 0: disabled; times are commit times);
 *            entries written before accounts could change hold only "role NUL hash" and read as enabled,
 *            created and changed unknown (0). The leading 0x01 tells them apart: no role name begins
 *            with a control character.
 *   tokens   SHA-256 of a bearer token                               -> be64(expires) role NUL user
 *            (the role at login; checks take the account's current role)
 *   audit    be64(seq), 1, 2, ...                                    -> {"seq":N,"prev":"<SHA-256 hex of
 *            entry N-1, zeros for the first>", the audit.h members}: append-only, hash-chained
 *   meta     "log_end", "commit_pos", "last_commit", "patients", "id_key", "probe" (store_probe's last)
 * A read "as of T" seeks to (key, ~T) and takes the first entry with the same key: the newest version
 * whose valid_from <= T. valid_to is the next version's valid_from, so old entries are never rewritten.
 * "num" is the patient's number (be64), assigned 0, 1, 2, ... at creation; the patient id is a keyed
 * permutation of it (identity.h), so new patients append to the patient and public trees instead of
 * landing on a random page of each.
 *
 * Contract: one process writes a data directory at a time: store_open for writing takes an exclusive
 * lock on DIR/medstream.lock, held until store_close or the process's end (the kernel releases it, so
 * a restart after kill -9 is never refused); a second opener, in this process or another, fails with
 * MS_ECONFLICT "DIR is in use by medstream pid N (CMD, since T)". A read-only open takes no lock and
 * never writes. Within the process: one writer (store_write_*), any number of concurrent readers
 * (store_read_*), readers never block the writer. store_write_commit makes the batch durable (segment
 * fdatasync, then LMDB's synced commit) before it returns; a failed commit leaves the store as it was
 * (MS_EFULL or MS_EIO): bodies appended for it stay in the log as unreferenced bytes. A full disk is
 * MS_EFULL with "disk full" in the message, also when LMDB reports it as EIO (a short page write) and
 * the file system has less than 64 MiB (or 1 % of its size) left. The store knows nothing of HTTP,
 * JSON requests or Kafka.
 */
#ifndef MS_STORE_H
#define MS_STORE_H

#include "pipeline/identity.h"
#include "pipeline/merge.h"
#include "pipeline/record_scan.h"
#include "base/util.h"

typedef struct store store;

typedef struct {
    size_t map_size;       /* LMDB map size (address space; the file grows as needed) */
    uint64_t segment_size; /* bytes per segment file */
    uint64_t body_cache;   /* bytes of recently appended bodies kept in memory for reads */
    const char *owner;     /* the command that opens it, named to a second opener (NULL: "medstream") */
    bool read_only;        /* no lock, no writes, LMDB opened MDB_RDONLY (e.g. audit verify) */
} store_options;

#define STORE_DEFAULT_MAP_SIZE ((size_t)1 << 40)
#define STORE_DEFAULT_SEGMENT_SIZE ((uint64_t)1 << 30)
#define STORE_DEFAULT_BODY_CACHE ((uint64_t)256 << 20)

/* Open (creating if missing) the store in dir, taking its lock (MS_ECONFLICT while another open holds
 * it). Read-only: the store must exist; no lock is taken. */
ms_code store_open(store **out, const char *dir, const store_options *opt, ms_err *e);
/* Close, releasing the lock. */
void store_close(store *s);
bool store_read_only(const store *s);
/* Read-only stores: "pid N (CMD, since T)" of the writer that held the directory when it was opened
 * (its later commits are not in reads that began before them), or NULL if none did. */
const char *store_live_writer(const store *s);
/* Can the store commit a batch of `bytes` of bodies now? Preallocates the segment log's next step (at
 * least room for max(bytes, 4 KiB)) and commits a tiny LMDB write transaction (meta "probe"). MS_OK: such
 * a batch can commit (LMDB may still find the disk full for a large one); MS_EFULL or MS_EIO with the
 * reason if not. Any thread; waits for a
 * write transaction in progress (LMDB's writer lock), so not from inside one. */
ms_code store_probe(store *s, size_t bytes, ms_err *e);
/* The store's 32-byte secret for keyed hashes (derived record ids). */
const unsigned char *store_id_key(const store *s);
/* The id of patient number n in this store, and back (false: an id this store never made). */
void store_patient_id(const store *s, uint64_t n, patient_id *id);
bool store_patient_number(const store *s, const patient_id *id, uint64_t *n);
void store_inject_fault(store *s, int err);
/* Test hook: the free bytes the full-disk check of an LMDB EIO sees (-1: the file system's, statvfs). */
void store_inject_free_space(store *s, int64_t bytes);

/* A patient as the writer knows it: the public id and the internal number that keys its data. */
typedef struct {
    patient_id id;
    uint64_t number;
} patient_ref;

typedef struct {
    char record_id[RECORD_ID_MAX + 1];
    uint32_t record_id_len;
    uint32_t version;
    int64_t valid_from, valid_to; /* valid_to < 0: current */
    patient_id pid;
    uint64_t patient_number;
    int64_t ts_us;
    char type[65];
    uint32_t type_len;
    uint64_t body_pos;
    uint32_t body_len;
    uint64_t body_hash;
    unsigned char content_hash[16];
    bool deleted; /* a tombstone (DELETE /v1/records/{id}): no body; the record reads 404 from here on */
} record_version;


/* The most fields a patient version can hold (store_patient_put refuses more, MS_EINVAL). */
#define PATIENT_STATE_MAX_FIELDS 65535u

typedef struct {
    patient_id pid;
    uint64_t number;
    uint32_t version;
    int64_t valid_from, valid_to;
    const char *cause_record; /* record id whose merge made this version */
    uint32_t cause_record_len;
    const char *source; /* who or what sent it (e.g. "http 127.0.0.1") */
    uint32_t source_len;
    state_field *fields; /* sorted by key */
    uint32_t nfields;
} patient_version;

/* Bodies are appended from 4 KiB-aligned buffers zero-padded to a multiple of this (O_DIRECT). */
#define STORE_BODY_ALIGN 4096

/* Append a request body (the record bytes) to the segment log; any thread, before submitting the batch
 * to the writer. A 4 KiB-aligned buffer zero-padded to a multiple of 4 KiB (pass the padded length) is
 * written without a copy. The commit that references it makes it durable. */
ms_code store_append_body(store *s, const void *data, size_t len, uint64_t *pos, ms_err *e);

/* ---- write side: only the writer thread ---- */
typedef struct store_write store_write;

ms_code store_write_begin(store *s, store_write **w, ms_err *e);
int64_t store_write_time(const store_write *w); /* this commit's valid_from (strictly increasing) */
ms_code store_ident_get(store_write *w, const char *key, size_t len, patient_ref *p, bool *found, ms_err *e);
/* Low level: map an identity key to a patient whose number the caller has allocated (the count of
 * patients grows by one). store_patient_create is the normal way. */
ms_code store_ident_put(store_write *w, const char *key, size_t len, const patient_ref *p, ms_err *e);
/* A new patient for this identity key: the next number, its id, and the identity index entry. */
ms_code store_patient_create(store_write *w, const char *key, size_t len, patient_ref *p, ms_err *e);
ms_code store_record_latest(store_write *w, const char *rid, size_t len, record_version *rv, bool *found, ms_err *e);
/* A record version with its public copy (public_fields NULL for a tombstone: the public copy says deleted). */
ms_code store_record_put(store_write *w, const record_version *rv, int year, const char *public_fields, size_t pf_len,
                         ms_err *e);
/* Latest patient version (fields valid until the next store call on w; copy what must live longer). */
ms_code store_patient_latest(store_write *w, const patient_ref *p, patient_version *pv, arena *mem, bool *found,
                             ms_err *e);
ms_code store_patient_put(store_write *w, const patient_version *pv, ms_err *e);
/* Rewrite the latest version pv (same version and valid_from) in place with fields whose VALUES are
 * unchanged but whose references moved to later records (merge.h "moved"): no new version, no commit
 * log item (nothing a reader or a sink sees changes). */
ms_code store_patient_restate(store_write *w, const patient_version *pv, ms_err *e);
ms_code store_public_patient_latest(store_write *w, const patient_ref *p, buf *out, bool *found, ms_err *e);
ms_code store_public_patient_put(store_write *w, const patient_ref *p, uint32_t version, const char *fields, size_t len,
                                 ms_err *e);
/* Commit: write reserved bodies, fdatasync the log, log entry, LMDB commit. Frees w either way. */
ms_code store_write_commit(store_write *w, uint64_t *commit_pos, ms_err *e);
void store_write_abort(store_write *w);

/* ---- read side: any thread ---- */
typedef struct store_read store_read;

ms_code store_read_begin(store *s, store_read **r, ms_err *e);
void store_read_end(store_read *r);
int64_t store_last_commit(store_read *r);
uint64_t store_patient_count(store_read *r);
uint64_t store_commit_pos(store_read *r);

ms_code store_ident_lookup(store_read *r, const char *key, size_t len, patient_id *pid, bool *found, ms_err *e);
ms_code store_record_at(store_read *r, const char *rid, size_t len, int64_t as_of, record_version *rv, bool *found,
                        ms_err *e);
ms_code store_patient_at(store_read *r, const patient_id *pid, int64_t as_of, patient_version *pv, arena *mem,
                         bool *found, ms_err *e);
/* All versions, oldest first; fields in mem. */
ms_code store_patient_history(store_read *r, const patient_id *pid, patient_version **out, uint32_t *n, arena *mem,
                              ms_err *e);
/* The value bytes of a state field, checked against its hash. */
ms_code store_field_value(store *s, const state_field *f, buf *out, ms_err *e);
/* The values of n state fields at once: values that lie close together in the log (typically most of
 * a patient's fields come from the same record body) are fetched with one read. vals[i] points into
 * scratch and has length fields[i].len; each is checked against its hash. */
ms_code store_field_values(store *s, const state_field *fields, uint32_t n, const char **vals, buf *scratch, ms_err *e);
/* The record's body bytes, checked against its hash. */
ms_code store_record_body(store *s, const record_version *rv, buf *out, ms_err *e);

/* The records a patient holds: for each entry of its records index, the record's version current at
 * as_of (the write side: now), kept when it still belongs to this patient with that event time and is
 * not a tombstone. Each such version once, in event-time order (then record id). fn returns false to
 * stop. */
typedef bool (*store_record_fn)(void *ctx, const record_version *rv);
ms_code store_live_records(store_read *r, const patient_id *pid, int64_t as_of, store_record_fn fn, void *ctx,
                           ms_err *e);
ms_code store_write_live_records(store_write *w, uint64_t number, store_record_fn fn, void *ctx, ms_err *e);

/* Iterate a patient's records index: entries with since <= ts < until, after the cursor key if given
 * (a cursor that is not one of this patient's index keys is MS_EINVAL). Calls fn for each (stops when
 * fn returns false). */
typedef bool (*store_patient_record_fn)(void *ctx, int64_t ts, const char *rid, size_t rid_len, const void *key,
                                        size_t key_len);
ms_code store_patient_records(store_read *r, const patient_id *pid, int64_t since, int64_t until, const void *after_key,
                              size_t after_len, store_patient_record_fn fn, void *ctx, ms_err *e);

ms_code store_public_patient_at(store_read *r, const patient_id *pid, int64_t as_of, buf *fields, bool *found,
                                ms_err *e);
typedef struct {
    patient_id pid;
    int year;
    char type[65];
    const char *fields;
    size_t fields_len;
    bool deleted; /* the public copy of a tombstone (fields empty) */
} public_record;
ms_code store_public_record_at(store_read *r, const char *rid, size_t len, int64_t as_of, public_record *pr,
                               bool *found, ms_err *e);
/* Iterate the public index of a type ("*" for all types) for years in [year_from, year_to]. */
typedef bool (*store_public_index_fn)(void *ctx, int year, const char *rid, size_t rid_len, const void *key,
                                      size_t key_len);
ms_code store_public_index(store_read *r, const char *type, int year_from, int year_to, const void *after_key,
                           size_t after_len, store_public_index_fn fn, void *ctx, ms_err *e);

/* Bulk load of new patients into a store that has none yet: one synthetic record body per patient
 * (already scanned: identity key, fields), written with sorted appends (MDB_APPEND) instead of random
 * inserts, for benchmark set-up and first migrations of a patient index. Not for live ingest: it
 * bypasses the writer and the commit log. */
typedef struct {
    uint64_t number;             /* consecutive, starting at the store's patient count */
    const parsed_record *record; /* body, fields, identity key */
} bulk_patient;
/* pts in number order; bodies[i] already appended at body_pos[i]. */
ms_code store_bulk_patients(store *s, const bulk_patient *pts, const uint64_t *body_pos, size_t n, ms_err *e);
/* (identity key, patient number) pairs in number order (the numbers of store_bulk_patients). */
typedef struct {
    const char *key;
    uint32_t key_len;
    uint64_t number;
} bulk_ident;
ms_code store_bulk_idents(store *s, const bulk_ident *ids, size_t n, ms_err *e);

/* The commit log, for sinks that follow it (PostgreSQL, Kafka out): entry `pos` (1, 2, ... one per
 * committed group) lists every record version and patient version that commit wrote. A sink keeps the
 * last position it shipped and asks for the next; found is false when it has caught up. fn may be NULL:
 * the commit time only. */
typedef struct {
    char kind;      /* 'r' record version (id = record id), 'p' patient version (id = 16-byte patient id) */
    const char *id; /* points into the read transaction's memory */
    uint32_t id_len;
    uint32_t version;
} log_item;
typedef bool (*store_log_fn)(void *ctx, const log_item *item);
ms_code store_log_entry(store_read *r, uint64_t pos, int64_t *commit_time, store_log_fn fn, void *ctx, bool *found,
                        ms_err *e);

/* Exact versions, for the sinks: the versions one commit wrote (valid_from = the commit time of its log
 * entry, version from its log item). valid_to is left -1 (a sink derives it from the next version). */
ms_code store_record_version(store_read *r, const char *rid, size_t len, int64_t valid_from, uint32_t version,
                             record_version *rv, bool *found, ms_err *e);
ms_code store_public_record_version(store_read *r, const char *rid, size_t len, int64_t valid_from, uint32_t version,
                                    public_record *pr, bool *found, ms_err *e);
ms_code store_patient_version(store_read *r, const patient_id *pid, int64_t valid_from, uint32_t version,
                              patient_version *pv, arena *mem, bool *found, ms_err *e);
ms_code store_public_patient_version(store_read *r, const patient_id *pid, int64_t valid_from, uint32_t version,
                                     buf *fields, bool *found, ms_err *e);
/* The identity key (normalized name NUL YYYY-MM-DD, identity.h) of a patient. */
ms_code store_identity_key(store_read *r, const patient_id *pid, buf *key, bool *found, ms_err *e);

/* Users (issue 3): name -> role and Argon2id hash (passwords.h); never the password. Accounts are
 * created and changed through a store_write (store_account_put, below). store_user_get finds disabled
 * accounts too (store_account_get has the whole entry). */
#define STORE_ROLE_MAX 32
#define STORE_HASH_MAX 160
ms_code store_user_get(store_read *r, const char *name, char role[STORE_ROLE_MAX], char hash[STORE_HASH_MAX],
                       bool *found, ms_err *e);

/* Bearer tokens (issue 3), stored only as their SHA-256. store_token_put refuses (MS_ENOTFOUND) a token
 * for an account that is missing or disabled, checked in its own write transaction, so that a login
 * racing a deletion or a disabling cannot leave a token behind. */
#define STORE_USER_MAX 72
ms_code store_token_put(store *s, const unsigned char hash[32], int64_t expires, const char *user, const char *role,
                        ms_err *e);
ms_code store_token_delete(store *s, const unsigned char hash[32], ms_err *e);
ms_code store_token_get(store_read *r, const unsigned char hash[32], int64_t *expires, char user[STORE_USER_MAX],
                        char role[STORE_ROLE_MAX], bool *found, ms_err *e);

/* Accounts (issue 9): the whole user entry. The store keeps what it is given; names, roles and the
 * rule that some enabled account must hold users:update are users.c's. */
typedef struct {
    char name[STORE_USER_MAX];
    char role[STORE_ROLE_MAX];
    char hash[STORE_HASH_MAX]; /* Argon2id encoded: never in an answer, a log line or an audit entry */
    bool disabled;
    int64_t created, changed; /* commit times (us); 0: unknown (an entry written by an older version) */
} store_account;
/* fn returns false to stop. */
typedef bool (*store_account_fn)(void *ctx, const store_account *a);
ms_code store_account_get(store_read *r, const char *name, store_account *a, bool *found, ms_err *e);
/* Every account, in name order (bytewise). */
ms_code store_account_list(store_read *r, store_account_fn fn, void *ctx, ms_err *e);
/* The write side: inside the writer's transaction (writer_apply) or an offline one (medstream user). */
ms_code store_write_account_get(store_write *w, const char *name, store_account *a, bool *found, ms_err *e);
ms_code store_write_account_list(store_write *w, store_account_fn fn, void *ctx, ms_err *e);
/* Create or replace a->name's entry. MS_EINVAL if a field does not fit. */
ms_code store_account_put(store_write *w, const store_account *a, ms_err *e);
/* MS_ENOTFOUND if there is no such account. Its tokens stay: see store_tokens_revoke_user. */
ms_code store_account_delete(store_write *w, const char *name, ms_err *e);
/* Delete every token of user but keep (the SHA-256 of one token to spare, or NULL), scanning the tokens
 * sub-database, and every expired token of anyone on the way. *revoked: the user's unexpired tokens
 * deleted. */
ms_code store_tokens_revoke_user(store_write *w, const char *user, const unsigned char *keep, uint64_t *revoked,
                                 ms_err *e);

/* The audit chain. Appending is part of the write transaction (the entry is durable with what it
 * describes); the store numbers and chains the entries. */
ms_code store_audit_append(store_write *w, const char *members, size_t len, ms_err *e);
typedef bool (*store_audit_fn)(void *ctx, uint64_t seq, const char *entry, size_t len);
ms_code store_audit_scan(store_read *r, uint64_t after_seq, store_audit_fn fn, void *ctx, ms_err *e);
/* Re-walk the chain: *bad = 0 when intact, else the first bad entry and why. *head is the SHA-256 of
 * the last good entry (to anchor outside the machine). */
ms_code store_audit_verify(store *s, uint64_t *entries, unsigned char head[32], uint64_t *bad, char *why,
                           size_t why_cap, ms_err *e);

/* Kafka source positions: the next offset to read per topic partition, written in the same commit as
 * the records of the batch that consumed up to there. */
ms_code store_kafka_offset_put(store_write *w, const char *topic, int32_t partition, int64_t next, ms_err *e);
ms_code store_kafka_offset_get(store_read *r, const char *topic, int32_t partition, int64_t *next, bool *found,
                               ms_err *e);

/* A sink's position in the commit log (the last position it has fully shipped), kept in the store. */
ms_code store_sink_position(store_read *r, const char *sink, uint64_t *pos, ms_err *e);
ms_code store_sink_position_set(store *s, const char *sink, uint64_t pos, ms_err *e);

/* Snapshots. */
/* Name the present instant (strictly after every commit so far); *as_of receives it. */
ms_code store_snapshot_create(store *s, const char *id, int64_t *as_of, ms_err *e);
ms_code store_snapshot_get(store_read *r, const char *id, int64_t *as_of, bool *found, ms_err *e);

#endif
