/*
 * store.h - the embedded store: LMDB for keys, indexes, versions, accounts, the audit chain and the
 * commit log; the segment log for record bodies. This header is the store's whole public contract (LMDB's
 * model: one header, every call with its errors); src/store/README.md has the design, the LMDB layout and
 * the numbered invariants the calls below cite; store_internal.h is private to src/store.
 *
 * WHO MAY WRITE (README.md, invariant 4). One process writes a data directory at a time: store_open for
 * writing takes an exclusive lock on DIR/medstream.lock, held until store_close or the process's end (the
 * kernel releases it, so a restart after kill -9 is never refused); a second opener, in this process or
 * another, fails with MS_ECONFLICT "DIR is in use by medstream pid N (CMD, since T)". A read-only open
 * (store_options.read_only) takes no lock and never writes. Within the writing process:
 *   - store_write_* transactions belong to one thread at a time: the ingest writer (ingest/writer.h) in a
 *     server, or the command itself offline (init, user). Records, patients, public copies, accounts,
 *     audit entries and source positions are written only through them.
 *   - small writes, each its own LMDB write transaction, may come from any other thread: bearer tokens
 *     (store_token_put, store_token_delete, request threads), sink positions (store_sink_position_set,
 *     sink threads), snapshots (store_snapshot_create, request threads) and store_probe.
 *   - LMDB's writer lock serializes all of them: a small write waits for a store_write in progress to
 *     commit or abort, so none may be called from inside an open store_write on the same thread.
 *   - store_append_body may be called from any thread, in parallel (the segment log is thread-safe).
 *   - reads (store_read_*) run on any thread, any number at once; readers never block the writer nor
 *     wait for it (LMDB's MVCC).
 * The bulk load (store_bulk_*) bypasses the writer and is only for a store no other thread uses.
 *
 * DURABILITY (README.md, invariants 1-3): a body is appended to the segment log before its batch is
 * submitted; store_write_commit fdatasyncs the log, then commits LMDB (synced) with the log's end recorded
 * in the same commit, and only then returns; the caller answers after that. A failed commit leaves the
 * store as it was: bodies appended for it stay in the log as unreferenced bytes.
 *
 * ERRORS. Every call that returns ms_code returns MS_OK or one of: MS_EFULL - the disk is full ("disk
 * full" in the message, also when LMDB reports it as EIO from a short page write and the file system has
 * less than 64 MiB, or 1 % of its size, left) or LMDB's map is full; nothing of the call was stored.
 * MS_EIO - another I/O or LMDB failure. MS_ECORRUPT - a stored entry or body failed its checks. MS_EINVAL -
 * a write on a read-only store (store_token_put, store_snapshot_create and the bulk load get LMDB's
 * refusal there, MS_EIO), or an argument the call names below. Calls name any other code they return.
 * "Not found" is found = false and MS_OK, never an error. Messages never hold PHI (they name fields and
 * positions, never values).
 *
 * The store knows nothing of HTTP, JSON requests or Kafka: its callers name their sources and sinks, and
 * hand it bytes it does not interpret (record bodies, audit entries' members, public copies).
 */
#ifndef MS_STORE_H
#define MS_STORE_H

#include "pipeline/identity.h"
#include "pipeline/merge.h"
#include "pipeline/record_scan.h"
#include "base/util.h"
#include "store/state_cache.h"

typedef struct store store;

/* ==== Environment (env.c) ==== */

typedef struct {
    size_t map_size;       /* LMDB map size (address space; the file grows as needed) */
    uint64_t segment_size; /* bytes per segment file; 0: the size the store recorded (else the default), for
                              openers that do not configure the log (import, user, preload, serve without
                              --segment-size) */
    uint64_t body_cache;   /* bytes of recently appended bodies kept in memory for reads */
    uint64_t state_cache;  /* bytes of the patients' latest states kept in memory for the writer's merge
                              (state_cache.h; 0: none) */
    const char *owner;     /* the command that opens it, named to a second opener (NULL: "medstream") */
    bool read_only;        /* no lock, no writes, LMDB opened MDB_RDONLY (e.g. audit verify, backup) */
    /* The cluster secret (base/cluster_key.h; 32 bytes, NULL: none). A store created with it takes it as its
     * id key (store_id_key), so that the stores of one cluster derive the same patient ids, identity MACs,
     * public-transform secrets and key-wrap key. Opening an existing store whose id key is another (made
     * without a cluster key, or with another one) is refused (MS_ECONFLICT naming the directory); NULL
     * opens any store as it is. */
    const unsigned char *cluster_key;
    /* Entries the patient log may run past its checkpointed heads before commits write the oldest chunks of
     * them (plog.c; 0: 1,048,576), and how many chunks of 4,096 heads one commit writes at most (0 or more
     * than 24: 24). Tests set them low to checkpoint often and in part. */
    uint64_t plog_checkpoint_lag;
    uint32_t plog_checkpoint_chunks;
} store_options;

#define STORE_DEFAULT_MAP_SIZE ((size_t)1 << 40)
#define STORE_DEFAULT_SEGMENT_SIZE ((uint64_t)1 << 30)
/* A segment size the log takes (anything else is MS_EINVAL at open): at least STORE_SEGMENT_SIZE_MIN and a
 * multiple of STORE_SEGMENT_ALIGN (its O_DIRECT writes are whole pages). */
#define STORE_SEGMENT_SIZE_MIN ((uint64_t)64 << 10)
#define STORE_SEGMENT_ALIGN ((uint64_t)4096)
#define STORE_DEFAULT_BODY_CACHE ((uint64_t)256 << 20)

/* The store format this build writes and the newest it reads (meta "store_format", README.md "Store format"):
 * raised when a change writes what an older medstream would misread. A store of a newer format is refused at
 * open; one from before the format was kept is format 1 and gets the key at its first open for writing. */
#define STORE_FORMAT 1

/* Open (creating if missing) the store in dir, taking its lock; opt NULL: the defaults. Read-only: the
 * store must exist; no lock is taken; LMDB is opened MDB_RDONLY.
 * Errors: MS_ECONFLICT while another open holds the lock, or the store's format is newer than STORE_FORMAT
 * (nothing of the store written; the message names both formats and dir); MS_EINVAL a segment size that is not
 * a multiple of 4096 or is under 64 KiB; MS_EIO a directory or file that cannot be made or opened (read-only: a
 * store that does not exist); MS_ECORRUPT a store whose metadata fails its checks. */
ms_code store_open(store **out, const char *dir, const store_options *opt, ms_err *e);
/* Close, releasing the lock. Every store_read and store_write must have ended. NULL is a no-op. */
void store_close(store *s);
/* What store_open spent its time on (the startup log; restart measurements). */
typedef struct {
    double total_s; /* the whole open */
    double heads_s; /* the patient log's checkpointed heads */
    uint64_t head_chunks;
    double replay_s; /* the patient log's entries after the checkpoint */
    uint64_t replayed;
    double keys_s;              /* the patients' data keys file */
    double identities_s;        /* the identity index (and the sweep of the keys file) */
    bool identities_from_slots; /* ... read from the key file's slots (false: scanned from LMDB) */
} store_open_times;
store_open_times store_open_time(const store *s);
bool store_read_only(const store *s);
/* Read-only stores: "pid N (CMD, since T)" of the writer that held the directory when it was opened
 * (its later commits are not in reads that began before them), or NULL if none did. */
const char *store_live_writer(const store *s);
/* Bytes per segment file of the store's body log: the size it was made with (store_options.segment_size). */
uint64_t store_segment_size(const store *s);
/* Can the store commit a batch of `bytes` of bodies now? Preallocates the segment log's next step (at
 * least room for max(bytes, 4 KiB)), reserves room past the ends of the key file (one write of new patients'
 * slots) and of LMDB's file (1 MiB + 4 x bytes: fallocate, sizes unchanged), and commits a tiny LMDB write
 * transaction (meta "probe"). MS_OK: such a batch can commit (LMDB may still find the disk full for a much
 * larger one); MS_EFULL or MS_EIO with the reason if not; MS_EINVAL on a read-only store. Any thread; a small
 * write (WHO MAY WRITE). Before the reservations, a probe passed while the key file or LMDB had no room for
 * the batch that had just failed, and /healthz said ok within a second of a refusal on a still-full disk. */
ms_code store_probe(store *s, size_t bytes, ms_err *e);
/* The store's 32-byte secret for keyed hashes (derived record ids, the sinks' store fingerprint). */
const unsigned char *store_id_key(const store *s);
/* The store's node id: 16 random bytes made when it was created (or first opened for writing by a medstream
 * that keeps one), never changed; it tells apart stores that share a cluster key (the PostgreSQL sink keeps
 * its position per node). All zeros: a store opened read-only that has none yet. A copy made by
 * store_backup has the same node id as its original. */
#define STORE_NODE_ID 16
const unsigned char *store_node_id(const store *s);
/* The store's 32-byte secret for the keyed public transforms (date_shift offsets, pseudonyms:
 * pipeline/transforms.h): HMAC-SHA256(id key, "deid"), fixed for the store's life. */
const unsigned char *store_deid_key(const store *s);
/* The id of patient number n in this store, and back (false: an id this store never made). */
void store_patient_id(const store *s, uint64_t n, patient_id *id);
bool store_patient_number(const store *s, const patient_id *id, uint64_t *n);
/* Test hook: make the segment log's next write or sync fail with this errno (0: off). */
void store_inject_fault(store *s, int err);
/* Test hook: the segment log's next append writes only its first bytes, then fails as a full disk does
 * (seglog_inject_short_write). */
void store_inject_short_write(store *s, uint64_t bytes);
/* Test hook: the free bytes the full-disk check of an LMDB EIO sees (-1: the file system's, statvfs). */
void store_inject_free_space(store *s, int64_t bytes);
/* The patient log's entries read by walks since the open (plog.c; any thread): what a read of one kind of a
 * patient's entries costs, for tests and measurements. */
uint64_t store_patient_log_reads(const store *s);

/* ==== Transactions (env.c) ==== */

/* ---- write side: one thread at a time (WHO MAY WRITE) ---- */
typedef struct store_write store_write;

/* Begin a write transaction; waits for LMDB's writer lock. Errors: MS_EINVAL on a read-only store. */
ms_code store_write_begin(store *s, store_write **w, ms_err *e);
/* This commit's valid_from: later than every commit and snapshot before it (strictly increasing). */
int64_t store_write_time(const store_write *w);
/* Commit: fdatasync the segment log, write the commit log entry and the metadata (the log's end, the
 * commit position, the commit time, the patient count), commit LMDB synced (README.md, invariants 2-3).
 * *commit_pos (may be NULL) receives the new commit log position. Frees w either way; on failure nothing of
 * w is stored and the identities it created are taken back. */
ms_code store_write_commit(store_write *w, uint64_t *commit_pos, ms_err *e);
/* Where the last successful commit spent its time, in seconds: the fdatasync of the segment log and the keys
 * file, and LMDB's commit (its page writes and its sync). The writer's thread only (it reads what it wrote). */
typedef struct {
    double sync_s, lmdb_s;
} store_commit_times;
store_commit_times store_last_commit_times(const store *s);
/* The state cache's figures (state_cache.h; zeros when it is off). */
state_cache_stats store_state_cache_stats(store *s);
/* Abandon w: nothing of it is stored. NULL is a no-op. */
void store_write_abort(store_write *w);

/* ---- read side: any thread ---- */
typedef struct store_read store_read;

/* A read transaction: every read through r sees the store as of the last commit before this call. */
ms_code store_read_begin(store *s, store_read **r, ms_err *e);
/* Before a read as of an instant as_of (a time a client gave): a commit's valid_from is taken when its write
 * transaction begins and readers see it only at its end, so a read begun in between would not see a commit that
 * the same read made later does. When the write in flight began at or before as_of, this waits for it to end;
 * then it renews r's snapshot, which holds every commit of valid_from <= as_of from then on (every later commit
 * has a later valid_from). An instant not past yet is first waited for, when it is at most STORE_AS_OF_AHEAD_US
 * ahead of the clock (a client's clock a little ahead of the server's, a commit's valid_from taken ahead of the
 * clock): an answer as of an instant still to come could change, so none is given. Errors: MS_EINVAL as_of
 * further ahead; MS_EIO when the write is still in flight after 10 s. */
#define STORE_AS_OF_AHEAD_US 1000000
ms_code store_read_settle(store_read *r, int64_t as_of, ms_err *e);
void store_read_end(store_read *r);
/* As r sees it: the last instant handed out (a commit or a snapshot), the number of patients, the last
 * commit log position (0 on a new store). */
int64_t store_last_commit(store_read *r);
uint64_t store_patient_count(store_read *r);
uint64_t store_commit_pos(store_read *r);

/* ==== Bodies (bodies.c) ==== */

/* Bodies are appended from 4 KiB-aligned buffers zero-padded to a multiple of this (O_DIRECT). */
#define STORE_BODY_ALIGN 4096

/* Append a request body (the record bytes) to the segment log; any thread, before submitting the batch
 * to the writer (README.md, invariant 1). A 4 KiB-aligned buffer zero-padded to a multiple of 4 KiB (pass
 * the padded length) is written without a copy. The commit that references it makes it durable.
 * Errors: MS_EINVAL on a read-only store or a body larger than a segment. */
ms_code store_append_body(store *s, const void *data, size_t len, uint64_t *pos, ms_err *e);

/* A record body to seal and append (store_append_sealed): in, the record's bytes and its identity key
 * (identity.h; body NULL: an item to skip); out, the data key it was sealed under and where its bytes begin in the
 * appended body. */
typedef struct {
    const char *body;
    uint32_t len;
    const char *identity_key;
    uint32_t identity_key_len;
    unsigned char key[32]; /* out */
    unsigned char mac[32]; /* out: the identity's MAC (store_identity_mac), for the writer (store_ident_find) */
    uint64_t offset;       /* out: the record's first byte, from the appended body's position */
} seal_item;

/* Seal each record under its identity's data key (store_data_key) and append them as one body (README.md,
 * invariant 1; seal.h has the layout). Any thread. The writer binds each record's key to its patient
 * (store_patient_create, store_patient_key_bind). */
ms_code store_append_sealed(store *s, seal_item *items, uint32_t n, uint64_t *pos, ms_err *e);

/* store_append_sealed in two steps, so that the writer can apply a batch while its bodies are sealed and
 * written (ingest.c): store_seal_begin finds each item's data key and offset (out) and reserves the bytes
 * (*pos: where they go); store_seal_end seals the records into place and writes them, and frees *sg; its
 * MS_OK is store_append_sealed's. Meanwhile a read of those bytes (store_record_body, store_field_values,
 * by another thread) waits until they are sealed. Errors as store_append_sealed's; after a failed begin
 * there is nothing to end. */
typedef struct store_sealing store_sealing;
ms_code store_seal_begin(store *s, seal_item *items, uint32_t n, store_sealing **sg, uint64_t *pos, ms_err *e);
ms_code store_seal_end(store *s, store_sealing *sg, seal_item *items, uint32_t n, ms_err *e);

/* A state field's value bytes, appended to out, checked against the field's hash (MS_ECORRUPT). */
ms_code store_field_value(store *s, const state_field *f, buf *out, ms_err *e);
/* The values of n state fields at once: a value the field holds (state_field.value: a patient version's
 * short values are inline) is not read; values that lie close together in the log (typically most of a
 * patient's fields come from the same record body) are fetched with one read. vals[i] points into scratch
 * or at the field's own value and has length fields[i].len; each is checked against its hash (MS_ECORRUPT). */
ms_code store_field_values(store *s, const state_field *fields, uint32_t n, const char **vals, buf *scratch, ms_err *e);
/* A hint that store_field_values(fields) comes soon (store_record_prefetch's kind). */
void store_field_prefetch(store *s, const state_field *fields, uint32_t n);

/* ==== Identities (identities.c) ==== */

/* A patient as the writer knows it: the public id and the internal number that keys its data. */
typedef struct {
    patient_id id;
    uint64_t number;
} patient_ref;

/* ==== Data keys (keys.c): one per patient, overwritten in place when it is erased ==== */

/* The identity MAC of an identity key: HMAC-SHA256 under a key of the store (what the identity entries
 * hold instead of names). */
void store_identity_mac(const store *s, const char *key, size_t len, unsigned char mac[32]);
/* The data key to seal a new body of this identity under: its patient's, or a fresh one kept in memory
 * until the writer binds it (keys.c). Any thread. */
ms_code store_data_key(store *s, const char *key, size_t len, unsigned char data_key[32], ms_err *e);

/* The patient with this identity key (normalized name NUL YYYY-MM-DD, identity.h), as w sees it.
 * Errors: MS_ECONFLICT two identity keys share an XXH3-128 hash (never merged: the batch fails). */
ms_code store_ident_get(store_write *w, const char *key, size_t len, patient_ref *p, bool *found, ms_err *e);
/* The same by the identity's MAC (store_identity_mac of the key): the writer has it from the record's seal
 * item, made by the request thread, and so does not compute the HMAC again. */
ms_code store_ident_find(store_write *w, const unsigned char mac[32], patient_ref *p, bool *found, ms_err *e);
/* A new patient for this identity key, whose bodies were sealed under data_key: the next number, its id,
 * the identity entry (sealed), and the key in the patient's slot. *bound false (nothing written): data_key
 * is not this identity's fresh key (store_data_key gave it before an erasure of the identity): the record
 * must be sealed again. */
ms_code store_patient_create(store_write *w, const char *key, size_t len, const unsigned char data_key[32],
                             patient_ref *p, bool *bound, ms_err *e);
/* The same with the identity's MAC given (store_identity_mac of key: the writer's, from the seal item) and the
 * number: UINT64_MAX the next, else the one given (a cluster's patients are numbered per shard, shard.h, by the
 * node that owns the shard, before the batch reaches the writer; the identity's cluster entry is written too,
 * store_cluster_id_put). Errors: MS_EIO if the number exists, MS_ECONFLICT as store_cluster_id_put. */
ms_code store_patient_create_mac(store_write *w, const char *key, size_t len, const unsigned char mac[32],
                                 const unsigned char data_key[32], uint64_t number, patient_ref *p, bool *bound,
                                 ms_err *e);
/* A cluster's identities (the changelog of shard state, ingest/cluster.h): identity MAC -> patient number,
 * kept so that a restart does not read the changelog from its start. Putting an entry that is there is a
 * no-op; MS_ECONFLICT if the identity has another number here (never overwritten: one identity, one id). */
ms_code store_cluster_id_put(store_write *w, const unsigned char mac[32], uint64_t number, ms_err *e);
typedef void (*store_cluster_id_fn)(void *ctx, const unsigned char mac[32], uint64_t number);
/* Every cluster entry, in MAC order, from a read transaction of its own. */
ms_code store_cluster_ids_each(store *s, store_cluster_id_fn fn, void *ctx, ms_err *e);
/* Low level: map an identity key to a patient whose number the caller has allocated (the count of
 * patients grows by one), with an unsealed identity entry like preload's (tests; store_patient_create is
 * the way for real patients). Errors: MS_EIO if the number exists. */
ms_code store_ident_put(store_write *w, const char *key, size_t len, const patient_ref *p, ms_err *e);
/* A known patient p and a body sealed under data_key: *bound when data_key is p's key (a patient from
 * before data keys takes it, if it is fresh, and its identity entry is sealed). */
ms_code store_patient_key_bind(store_write *w, const patient_ref *p, const char *key, size_t len,
                               const unsigned char data_key[32], bool *bound, ms_err *e);
/* The read side of store_ident_get (a store opened for writing: the in-memory index is not built for a
 * read-only one). Errors: MS_ECONFLICT as store_ident_get. */
ms_code store_ident_lookup(store_read *r, const char *key, size_t len, patient_id *pid, bool *found, ms_err *e);
/* The identity key of a patient, into key (*found false: no such patient, or erased). */
ms_code store_identity_key(store_read *r, const patient_id *pid, buf *key, bool *found, ms_err *e);
/* ==== Erasure (erase.c) ==== */
typedef struct {
    int64_t at;   /* the erasure's commit time */
    uint64_t pos; /* and its commit log position */
} erase_mark;
typedef struct {
    bool already;              /* erased before: nothing written (the request is idempotent) */
    erase_mark mark;           /* the erasure's commit time and commit log position */
    uint64_t records;          /* record ids the patient had */
    uint64_t record_versions;  /* record versions erased (now tombstones without a body) */
    uint64_t patient_versions; /* patient versions deleted */
} erase_report;
/* Erase a patient inside w (erase.c has what is written); after w commits, the patient's data key is
 * overwritten in place. The caller adds the audit entry to w. Errors: MS_ENOTFOUND no such patient. */
ms_code store_patient_erase(store_write *w, const patient_id *pid, erase_report *out, ms_err *e);
/* Is the patient's data key gone (after an erasure's commit: the certificate's "keys" line)? */
bool store_patient_key_gone(store *s, const patient_id *pid);
/* Was this patient erased (store_patient_erase)? When, and at which commit log position (the sinks and
 * views are done with it once their positions reach it), into *mark (may be NULL). */
ms_code store_patient_erased(store_read *r, const patient_id *pid, erase_mark *mark, bool *erased, ms_err *e);
/* The same inside a write transaction (the writer's public projection of a patient, whose keyed
 * transforms are derived from the identity key). */
ms_code store_write_identity_key(store_write *w, const patient_ref *p, buf *key, bool *found, ms_err *e);

/* ==== Versions (versions.c) ==== */

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
    uint64_t body_hash; /* XXH3-64 of a plain body, checked when it is read back; a sealed body's AES-GCM tag
                           authenticates it instead (0 since issue 17; older sealed versions hold a hash) */
    unsigned char content_hash[16];
    bool deleted; /* a tombstone (DELETE /v1/records/{id}): no body; the record reads 404 from here on */
    bool sealed;  /* the body is sealed under its patient's data key (keys.c, seal.h) */
    char parent_id[RECORD_ID_MAX + 1]; /* the schema's parent role (a record id); parent_id_len 0: none */
    uint32_t parent_id_len;
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

typedef struct {
    patient_id pid;
    int year;
    char type[65];
    const char *fields;
    size_t fields_len;
    bool deleted; /* the public copy of a tombstone (fields empty) */
} public_record;

/* ---- the write side ---- */

/* The latest version of a record, as w sees it (tombstones too). */
ms_code store_record_latest(store_write *w, const char *rid, size_t len, record_version *rv, bool *found, ms_err *e);
/* A version of the record (newest first; not a tombstone) with this content hash, if any: what a replayed
 * import row is checked against (writer.h, ingest_job.replay). valid_to is not filled in. */
ms_code store_record_with_content(store_write *w, const char *rid, size_t len, const unsigned char content_hash[16],
                                  record_version *rv, bool *found, ms_err *e);
/* A record version with its patient's records-index entry, its public copy (public_fields NULL for a
 * tombstone: the copy says deleted) and its public-index entries; named in this commit's log entry. */
ms_code store_record_put(store_write *w, const record_version *rv, int year, const char *public_fields, size_t pf_len,
                         ms_err *e);
/* The public copy of a record version under schema version sv (store_write_schema's target during a
 * re-projection; store_record_put writes the copy under the version in force). */
ms_code store_public_record_put(store_write *w, uint32_t sv, const record_version *rv, int year,
                                const char *public_fields, size_t pf_len, ms_err *e);
/* Latest patient version (fields valid until the next store call on w, or in mem if given; copy what
 * must live longer). */
ms_code store_patient_latest(store_write *w, const patient_ref *p, patient_version *pv, arena *mem, bool *found,
                             ms_err *e);
/* A new patient version, named in this commit's log entry. Errors: MS_EINVAL more than
 * PATIENT_STATE_MAX_FIELDS fields, or a field name longer than RECORD_KEY_MAX. */
ms_code store_patient_put(store_write *w, const patient_version *pv, ms_err *e);
/* Rewrite the latest version pv (same version and valid_from) in place with fields whose VALUES are
 * unchanged but whose references moved to later records (merge.h "moved"): no new version, no commit
 * log item (nothing a reader or a sink sees changes). Errors: as store_patient_put. */
ms_code store_patient_restate(store_write *w, const patient_version *pv, ms_err *e);
ms_code store_public_patient_latest(store_write *w, uint32_t sv, const patient_ref *p, buf *out, bool *found,
                                    ms_err *e);
/* A patient's public copy under schema version sv (store_write_schema), valid from this commit's time. */
ms_code store_public_patient_put(store_write *w, uint32_t sv, const patient_ref *p, uint32_t version,
                                 const char *fields, size_t len, ms_err *e);

/* ---- reads as of an instant (README.md, "Time"): the newest version with valid_from <= as_of; as_of < 0
 * finds nothing ---- */

ms_code store_record_at(store_read *r, const char *rid, size_t len, int64_t as_of, record_version *rv, bool *found,
                        ms_err *e);
/* Fields in mem. */
ms_code store_patient_at(store_read *r, const patient_id *pid, int64_t as_of, patient_version *pv, arena *mem,
                         bool *found, ms_err *e);
/* All versions, oldest first; fields in mem. */
ms_code store_patient_history(store_read *r, const patient_id *pid, patient_version **out, uint32_t *n, arena *mem,
                              ms_err *e);
/* The record's body bytes, appended to out, checked against its hash (MS_ECORRUPT). */
ms_code store_record_body(store *s, const record_version *rv, buf *out, ms_err *e);
/* A hint that store_record_body(rv) comes soon: its bytes start coming into the page cache now, so that a
 * reader of many bodies in an order of its own (an export) keeps the disk busy while it works. */
void store_record_prefetch(store *s, const record_version *rv);
ms_code store_public_patient_at(store_read *r, const patient_id *pid, int64_t as_of, buf *fields, bool *found,
                                ms_err *e);
ms_code store_public_record_at(store_read *r, const char *rid, size_t len, int64_t as_of, public_record *pr,
                               bool *found, ms_err *e);

/* ---- indexes and live records ---- */

/* The records a patient holds: for each entry of its records index with an event time <= ts_max (the write
 * side: all), the record's version current at as_of (the write side: now), kept when it still belongs to this
 * patient with that event time and is not a tombstone. Each such version once, NEWEST event time first (then
 * record id, descending), so that a merge can stop once the older ones cannot change it (record_sources.h).
 * fn returns false to stop. */
typedef bool (*store_record_fn)(void *ctx, const record_version *rv);
ms_code store_live_records(store_read *r, const patient_id *pid, int64_t as_of, int64_t ts_max, store_record_fn fn,
                           void *ctx, ms_err *e);
ms_code store_write_live_records(store_write *w, uint64_t number, store_record_fn fn, void *ctx, ms_err *e);

/* Every record in record-id order (bytewise), as of an instant, a bounded step at a time (exports): visits at
 * most max_ids record ids after `after` (exclusive; after_len 0: from the first id), and for each whose version
 * current at as_of exists and is not a tombstone calls fn with it (valid_to is left -1). fn returns false to
 * stop early. *last receives the last record id visited (the `after` of the next step; it is rewritten, not
 * appended to), *more whether ids may remain after it. Each step is one read transaction's worth of work, so a
 * long scan can end its read transaction between steps and never pins LMDB pages for its whole run. */
ms_code store_records_scan(store_read *r, const char *after, size_t after_len, int64_t as_of, uint32_t max_ids,
                           store_record_fn fn, void *ctx, buf *last, bool *more, ms_err *e);

/* Iterate a patient's records index: entries with since <= ts < until, after the cursor key if given.
 * Calls fn for each (stops when fn returns false). Errors: MS_EINVAL a cursor that is not one of this
 * patient's index keys. */
typedef bool (*store_patient_record_fn)(void *ctx, int64_t ts, const char *rid, size_t rid_len, const void *key,
                                        size_t key_len);
ms_code store_patient_records(store_read *r, const patient_id *pid, int64_t since, int64_t until, const void *after_key,
                              size_t after_len, store_patient_record_fn fn, void *ctx, ms_err *e);

/* Iterate the children index of a parent record id (the schema's parent role; the parent need not exist):
 * entries with since <= ts < until, in event-time order (then child record id), after the cursor key if
 * given. The index keeps every (ts, child) a version ever had: a reader checks the child's version at
 * its instant (still this parent, this ts, not a tombstone), as for store_patient_records. Errors:
 * MS_EINVAL a cursor that is not one of this parent's index keys. */
ms_code store_children(store_read *r, const char *parent, size_t parent_len, int64_t since, int64_t until,
                       const void *after_key, size_t after_len, store_patient_record_fn fn, void *ctx, ms_err *e);

/* Iterate the public index of a type (NULL: all types, merged in (year, record id) order, each record
 * once) for years in [year_from, year_to], after the cursor key if given (a key fn was handed; one before
 * year_from starts there). by_id: in (record id, year) order, every year (the
 * schema does not publish the year: neither the order nor the keys handed out, whose year is 0, tell it); fn
 * gets each entry's year still, a record's entries one after the other. Errors: MS_EINVAL a cursor that is not
 * one of this listing (another type's, all types' for one type or the other way round, by_id one with a year). */
typedef bool (*store_public_index_fn)(void *ctx, int year, const char *rid, size_t rid_len, const void *key,
                                      size_t key_len);
ms_code store_public_index(store_read *r, const char *type, int year_from, int year_to, bool by_id,
                           const void *after_key, size_t after_len, store_public_index_fn fn, void *ctx, ms_err *e);

/* ---- exact versions, for the sinks: the versions one commit wrote (valid_from = the commit time of its
 * log entry, version from its log item). valid_to is left -1 (a sink derives it from the next version) ---- */

ms_code store_record_version(store_read *r, const char *rid, size_t len, int64_t valid_from, uint32_t version,
                             record_version *rv, bool *found, ms_err *e);
ms_code store_public_record_version(store_read *r, const char *rid, size_t len, int64_t valid_from, uint32_t version,
                                    public_record *pr, bool *found, ms_err *e);
/* The version a record had before the version (valid_from, version) (a tombstone too); found false for
 * a first version. valid_to is set to valid_from. What a follower of the log (the counters) takes away
 * when a new version replaces it. */
ms_code store_record_before(store_read *r, const char *rid, size_t len, int64_t valid_from, uint32_t version,
                            record_version *rv, bool *found, ms_err *e);
ms_code store_patient_version(store_read *r, const patient_id *pid, int64_t valid_from, uint32_t version,
                              patient_version *pv, arena *mem, bool *found, ms_err *e);
ms_code store_public_patient_version(store_read *r, const patient_id *pid, int64_t valid_from, uint32_t version,
                                     buf *fields, bool *found, ms_err *e);

/* ==== The commit log and positions (commit_log.c) ==== */

/* The commit log, for sinks that follow it (PostgreSQL, Kafka out): entry `pos` (1, 2, ... one per
 * committed store_write) lists every record version and patient version that commit wrote. A sink keeps
 * the last position it shipped and asks for the next; found is false when it has caught up. fn may be
 * NULL: the commit time only. */
typedef struct {
    char kind;      /* 'r' record version (id = record id), 'p' patient version (id = 16-byte patient id) */
    const char *id; /* points into the read transaction's memory */
    uint32_t id_len;
    uint32_t version;
} log_item;
typedef bool (*store_log_fn)(void *ctx, const log_item *item);
ms_code store_log_entry(store_read *r, uint64_t pos, int64_t *commit_time, store_log_fn fn, void *ctx, bool *found,
                        ms_err *e);

/* A sink's position in the commit log (the last position it has fully shipped; 0: none), kept in the
 * store. The set is a small write of its own (any thread; WHO MAY WRITE). */
ms_code store_sink_position(store_read *r, const char *sink, uint64_t *pos, ms_err *e);
/* Every sink that has stored a position, with it (name without the "sink:" prefix); fn false stops. */
typedef bool (*store_sink_fn)(void *ctx, const char *sink, uint64_t pos);
ms_code store_sink_positions(store_read *r, store_sink_fn fn, void *ctx, ms_err *e);
ms_code store_sink_position_set(store *s, const char *sink, uint64_t pos, ms_err *e);

/* Source positions (README.md, invariant 5): the next offset to read of an input, per partition, written
 * in the same store_write as the records of the batch that consumed up to there, so a batch and its
 * position are durable together. source is the caller's opaque name of its input (the Kafka consumer
 * uses the topic). Errors: MS_EINVAL a source name too long to key (over ~300 bytes; the get then finds
 * nothing). */
ms_code store_source_offset_put(store_write *w, const char *source, int32_t partition, int64_t next, ms_err *e);
ms_code store_source_offset_get(store_read *r, const char *source, int32_t partition, int64_t *next, bool *found,
                                ms_err *e);

/* ==== The event log and named definitions (events.c) ==== */

/* The event log: opaque entries numbered 1, 2, ... (seq), appended by one follower of the commit log (the
 * notifier) together with its position in the commit log, in one small write (WHO MAY WRITE), so that a
 * crash neither loses nor repeats an entry: after a restart the follower resumes after the position saved
 * with its last entries. The store gives the bytes no meaning. */
typedef struct {
    const void *data;
    size_t len;
} store_bytes;

/* Append n entries numbered first_seq, first_seq + 1, ... and set sink position `sink` (store_sink_position)
 * to pos, in one write transaction. n may be 0 (the position only). Errors: MS_ECONFLICT first_seq is not
 * the last entry's seq + 1 (nothing written); MS_EINVAL an empty entry, or a read-only store. */
ms_code store_events_append(store *s, uint64_t first_seq, const store_bytes *entries, size_t n, const char *sink,
                            uint64_t pos, ms_err *e);
/* The seq of the last entry (0: none). */
ms_code store_events_last(store_read *r, uint64_t *seq, ms_err *e);
/* The entries after seq `after`, in order; fn returns false to stop. The bytes point into r's memory. */
typedef bool (*store_event_fn)(void *ctx, uint64_t seq, const char *entry, size_t len);
ms_code store_events_scan(store_read *r, uint64_t after, store_event_fn fn, void *ctx, ms_err *e);
/* store_events_append (n may be 0), then delete every entry for which drop(ctx, seq, bytes) is true (an
 * erased patient's events; drop NULL: none), and note a tombstone owed to the events topic for each of the nowed
 * patients `owed` (store_events_owed), with sink position `sink` set to pos, in one write transaction (a small
 * write), so that the follower that deletes them resumes after pos only once they are gone. Seqs stay
 * taken: the next append is still the highest seq ever appended + 1 (store_events_last says so).
 * *deleted: how many. Errors: as store_events_append. */
ms_code store_events_delete(store *s, uint64_t first_seq, const store_bytes *entries, size_t n, store_event_fn drop,
                            void *ctx, const patient_id *owed, size_t nowed, const char *sink, uint64_t pos,
                            uint64_t *deleted, ms_err *e);
/* The patients owed a tombstone on the events topic (store_events_delete's `owed`, written with the deletion of
 * their events: an erasure), in id order; fn returns false to stop. */
typedef bool (*store_owed_fn)(void *ctx, const patient_id *pid);
ms_code store_events_owed(store_read *r, store_owed_fn fn, void *ctx, ms_err *e);
/* pid's tombstone was delivered: it is owed no more (a small write; none owed: nothing to do). */
ms_code store_events_owed_done(store *s, const patient_id *pid, ms_err *e);

/* Named definitions by kind ("rule", "subscription", ...): opaque bytes under (kind, name), written inside
 * a store_write (the writer's transaction, with the audit entry of the change) so that a change and its
 * audit entry are durable together. kind and name: 1-255 bytes, no NUL (MS_EINVAL). */
ms_code store_definition_put(store_write *w, const char *kind, const char *name, const void *v, size_t n, ms_err *e);
/* *found (may be NULL): whether there was one to delete. */
ms_code store_definition_delete(store_write *w, const char *kind, const char *name, bool *found, ms_err *e);
/* Every definition of a kind, in name order (bytewise); fn returns false to stop. */
typedef bool (*store_definition_fn)(void *ctx, const char *name, size_t name_len, const char *v, size_t n);
ms_code store_definitions_list(store_read *r, const char *kind, store_definition_fn fn, void *ctx, ms_err *e);

/* ==== Snapshots (snapshots.c) ==== */

/* Name the present instant, strictly after every commit so far (taken inside LMDB's writer lock); *as_of
 * receives it. Any thread: a small write (WHO MAY WRITE). Errors: MS_EIO a name already taken (LMDB's
 * MDB_KEYEXIST; the caller makes names unique), or a read-only store. */
ms_code store_snapshot_create(store *s, const char *id, int64_t *as_of, ms_err *e);
ms_code store_snapshot_get(store_read *r, const char *id, int64_t *as_of, bool *found, ms_err *e);

/* ==== The audit chain (audit_chain.c) ==== */

/* Append an entry: the store numbers it and chains it ({"seq":N,"prev":"<SHA-256 hex of entry N-1>",
 * then members, which must be JSON object members without braces}). Part of w, so the entry is durable
 * with what it describes. */
ms_code store_audit_append(store_write *w, const char *members, size_t len, ms_err *e);
/* The entries after after_seq, in order; fn returns false to stop. */
typedef bool (*store_audit_fn)(void *ctx, uint64_t seq, const char *entry, size_t len);
ms_code store_audit_scan(store_read *r, uint64_t after_seq, store_audit_fn fn, void *ctx, ms_err *e);
/* Re-walk the chain from one read transaction: *bad = 0 when intact, else the first bad entry and why; the
 * chain must also end where meta's record of its end says (an edited or deleted last entry is caught too).
 * *head is the SHA-256 of the last good entry (to anchor outside the machine). A broken chain is not an
 * error (MS_OK, *bad set). */
ms_code store_audit_verify(store *s, uint64_t *entries, unsigned char head[32], uint64_t *bad, char *why,
                           size_t why_cap, ms_err *e);

/* ==== Schema versions of the public copies (schemas.c) ==== */

/* README.md, "Schema versions". The canonical text of each schema the public copies were made under is
 * kept, numbered 1, 2, ...; reads answer under the version "in force"; a changed schema becomes the
 * "target" of a re-projection (store_reproject_step) that recomputes every stored version's copy under it,
 * then switches the version in force atomically. Meanwhile the ingest writer writes each new version's
 * copy under both (store_write_schema says which). */
typedef struct {
    uint32_t in_force; /* the version public reads answer under (1: also a store from before versions) */
    uint32_t target;   /* the version being re-projected to (0: none) */
    uint32_t last;     /* the highest version ever given (1: the schema never changed) */
    uint64_t done;     /* entries of the record and patient sub-databases walked so far */
    uint64_t total;    /* entries there are to walk (grows with ingest meanwhile) */
} store_schema_status;

/* Record the schema in force by its canonical text (pipeline/schema_canon.h), in a write transaction of its
 * own (at start, before the ingest writer): no version stored yet: it becomes version 1 (the copies of a
 * store from before versions are taken as made under it); the text of the version in force: nothing
 * changes (and a re-projection under way to another text is abandoned); the text of the target: the
 * re-projection resumes; another text: a new version, the target of a re-projection that starts from the
 * beginning. *st (may be NULL) receives the outcome. Errors: MS_EINVAL an empty text, a read-only store. */
ms_code store_schema_register(store *s, const char *canon, size_t len, store_schema_status *st, ms_err *e);
/* The canonical text of a version (found false: none recorded). */
ms_code store_schema_text(store_read *r, uint32_t version, buf *out, bool *found, ms_err *e);
ms_code store_schema_status_get(store_read *r, store_schema_status *st, ms_err *e);
/* The version the public copies this read transaction sees are under (every public read of r uses it). */
uint32_t store_read_schema_version(store_read *r);
/* The versions w writes public copies under: store_record_put and the readers use in_force; while target is
 * not 0 the writer also writes each new copy under target (store_public_record_put, store_public_patient_put),
 * computed with the target's schema. */
void store_write_schema(store_write *w, uint32_t *in_force, uint32_t *target);

/* The copies of one step of a re-projection, computed by the caller (the store never interprets a schema):
 * fields receives the public fields (JSON object text) of a record version (never a tombstone: its copy
 * has none) or of a patient version; ident is the patient's identity entry's key (identity sub-database:
 * what per-patient transforms derive their secrets from; empty if missing). They run under the step's read transaction
 * (they may read bodies: store_record_body, store_field_values), never a write transaction. */
typedef struct {
    ms_code (*record)(void *ctx, const record_version *rv, const char *ident, size_t ident_len, buf *fields, ms_err *e);
    ms_code (*patient)(void *ctx, const patient_version *pv, const char *ident, size_t ident_len, buf *fields,
                       ms_err *e);
    void *ctx;
} store_reproject_fns;
/* One step of the re-projection to target (any thread; a small write of its own, WHO MAY WRITE): from the
 * stored cursor, up to max versions (record versions, then patient versions) get their copy under target,
 * written with the new cursor in one short write transaction; the step that reaches the end also switches
 * the version in force to target. *finished: switched, or target is no longer the target (nothing
 * written). Idempotent; resumes after a restart. *st (may be NULL): the progress after the step. */
ms_code store_reproject_step(store *s, uint32_t target, const store_reproject_fns *fns, uint32_t max, bool *finished,
                             store_schema_status *st, ms_err *e);
/* Delete up to max public copies of versions that are neither in force nor the target, in one write
 * transaction of its own (any thread). *finished: none left. */
ms_code store_schema_drop_step(store *s, uint32_t max, bool *finished, uint64_t *deleted, ms_err *e);
/* One step of the patient log's compaction (plog_compact.c; any thread; a short write transaction of its
 * own), over a window of max sequence numbers from the stored cursor: the public copies under a version
 * neither in force nor the target are dropped (a patient's newest entry: made a stub, without fields), and
 * the log's entries before its checkpoint floor are moved, densely, into its compacted part; versions,
 * records-index entries and everything else keep their sequence numbers and contents. Work exists after a
 * switch retired a version; *finished: none left (the cursor reached the log's end at the switch, or there
 * was none). Idempotent; resumes after a restart. */
typedef struct {
    uint64_t from;    /* the first sequence number the step looked at (its cursor) */
    uint64_t looked;  /* entries looked at */
    uint64_t moved;   /* entries moved into the compacted part */
    uint64_t dropped; /* retired copies dropped */
    uint64_t stubbed; /* retired copies made stubs */
    uint64_t bytes;   /* bytes of entry values removed */
} store_compact_stats;
ms_code store_plog_compact_step(store *s, uint32_t max, bool *finished, store_compact_stats *st, ms_err *e);
/* (Re)start the compaction from the log's first entry to its end now, without a switch: the steps then only
 * move the log's old part into its compacted part (tests drive it on random histories). */
ms_code store_plog_compact_begin(store *s, ms_err *e);

/* ==== Accounts and tokens (accounts.c) ==== */

#define STORE_ROLE_MAX 32
#define STORE_HASH_MAX 160
#define STORE_USER_MAX 72

/* Accounts: the whole user entry. The store keeps what it is given; names, roles and the rule that some
 * enabled account must hold users:update are access/users.c's. */
typedef struct {
    char name[STORE_USER_MAX];
    char role[STORE_ROLE_MAX];
    char hash[STORE_HASH_MAX]; /* Argon2id encoded: never in an answer, a log line or an audit entry */
    bool disabled;
    int64_t created, changed; /* commit times (us); 0: unknown (an entry written by an older version) */
} store_account;
/* fn returns false to stop. */
typedef bool (*store_account_fn)(void *ctx, const store_account *a);

/* name -> role and Argon2id hash (passwords.h); never the password. Finds disabled accounts too
 * (store_account_get has the whole entry). */
ms_code store_user_get(store_read *r, const char *name, char role[STORE_ROLE_MAX], char hash[STORE_HASH_MAX],
                       bool *found, ms_err *e);
ms_code store_account_get(store_read *r, const char *name, store_account *a, bool *found, ms_err *e);
/* Every account, in name order (bytewise). */
ms_code store_account_list(store_read *r, store_account_fn fn, void *ctx, ms_err *e);
/* The write side: inside the writer's transaction (writer_apply) or an offline one (medstream user). */
ms_code store_write_account_get(store_write *w, const char *name, store_account *a, bool *found, ms_err *e);
ms_code store_write_account_list(store_write *w, store_account_fn fn, void *ctx, ms_err *e);
/* Create or replace a->name's entry. Errors: MS_EINVAL if a field is missing or does not fit. */
ms_code store_account_put(store_write *w, const store_account *a, ms_err *e);
/* Errors: MS_ENOTFOUND if there is no such account. Its tokens stay: see store_tokens_revoke_user. */
ms_code store_account_delete(store_write *w, const char *name, ms_err *e);

/* Bearer tokens, stored only as their SHA-256, each with its expiry, the role at login (checks take the
 * account's current role) and the user. store_token_put and store_token_delete are small writes (any
 * thread; WHO MAY WRITE). store_token_put refuses a token for an account that is missing or disabled, or
 * whose password hash is no longer password_hash (the one a login checked; NULL: not checked), all
 * checked in its own write transaction, so that a login racing a deletion, a disabling or a password
 * change cannot leave a token behind; the same transaction deletes the tokens expired for a day among the
 * few that follow the new one's key (accounts.c, TOKEN_SWEEP_LOOK), so that expired tokens stay a small
 * share of the table. Errors: MS_ENOTFOUND that refusal (put), or no such token (delete); MS_ECONFLICT the
 * token exists (put). */
ms_code store_token_put(store *s, const unsigned char hash[32], int64_t expires, const char *user, const char *role,
                        const char *password_hash, ms_err *e);
ms_code store_token_delete(store *s, const unsigned char hash[32], ms_err *e);
ms_code store_token_get(store_read *r, const unsigned char hash[32], int64_t *expires, char user[STORE_USER_MAX],
                        char role[STORE_ROLE_MAX], bool *found, ms_err *e);
/* Delete every token of user but keep (the SHA-256 of one token to spare, or NULL), scanning the tokens
 * sub-database, and every expired token of anyone on the way. *revoked: the user's unexpired tokens
 * deleted. Part of w. */
ms_code store_tokens_revoke_user(store_write *w, const char *user, const unsigned char *keep, uint64_t *revoked,
                                 ms_err *e);

/* ==== Backup (backup.c) ==== */

typedef struct {
    uint64_t commit_pos;       /* the last commit in the copy (0: none) */
    int64_t last_commit;       /* the last instant it handed out (a commit's or a snapshot's) */
    uint64_t log_end;          /* bytes of segment log it references: the copy's segment files end there */
    uint64_t segment_size;     /* of those files */
    uint32_t segments;         /* segment files copied */
    uint64_t lmdb_bytes;       /* size of the copied LMDB file */
    uint64_t tokens_dropped;   /* bearer tokens left out of the copy (everyone signs in again on it) */
    uint32_t partials_removed; /* partial copies of backups to the same OUT that were killed, removed first */
} store_backup_info;

/* Copy the store into out_dir, a data directory `medstream serve` can open (README.md, invariant 7):
 * LMDB's compacting copy of the environment, made from one read transaction (out_dir/lmdb/data.mdb),
 * then the segment files up to the log end recorded in that copy, nothing past it (out_dir/segments).
 * Nothing else of the data directory is copied: not its lock file, not admin.password. The copy holds
 * everything in the store but its bearer tokens (dropped from the copy: a restore must not bring back a token
 * revoked since), secrets included (the id key, password hashes): keep it as you keep the store. out_dir must be absent
 * (it is created, mode 0700, in an existing parent) or an empty directory, and not inside the store's directory
 * (MS_ECONFLICT). Everything written is fsynced before MS_OK; info (may be NULL) says what was copied. Takes no lock
 * and never blocks the writer: any store, read-only (as `medstream backup` opens it, beside a running server) or not,
 * any thread. Commits after the copy's read transaction began are not in it. A store last written by a medstream that
 * did not record its segment size is read with s's. The copy is made in a partial directory (0700) beside out_dir,
 * `.NAME.partial-PID` (inside it, `.backup.partial-PID`, when out_dir is an empty mount point or symlink), and becomes
 * out_dir only once everything in it is fsynced: a backup killed partway leaves no out_dir, only that partial
 * directory, which the next backup to the same out_dir removes (those of live backups are left alone). Errors:
 * MS_ECONFLICT out_dir exists and is not an empty directory, or is inside the store's, or a killed backup's partial
 * copy cannot be removed (named); MS_ECORRUPT a segment file below the recorded end is missing; MS_EFULL, MS_EIO
 * writing the copy. On failure, what this call created is removed. */
ms_code store_backup(store *s, const char *out_dir, store_backup_info *info, ms_err *e);

/* ==== Bulk load (bulk_load.c) ==== */

/* Bulk load of new patients into a store that has none yet: one synthetic record body per patient
 * (already scanned: identity key, fields), written with sorted appends (MDB_APPEND) instead of random
 * inserts, for benchmark set-up and first migrations of a patient index. Not for live ingest: it
 * bypasses the writer, the commit log and the audit chain, and no other thread may use the store. */
typedef struct {
    uint64_t number;             /* consecutive, starting at the store's patient count */
    const parsed_record *record; /* body, fields, identity key */
} bulk_patient;
/* pts in number order; bodies[i] already appended at body_pos[i]. Errors: MS_EIO (LMDB's MDB_KEYEXIST)
 * numbers that are not new and in order. */
ms_code store_bulk_patients(store *s, const bulk_patient *pts, const uint64_t *body_pos, size_t n, ms_err *e);
/* (identity key, patient number) pairs in number order (the numbers of store_bulk_patients). Errors: as
 * store_bulk_patients. */
typedef struct {
    const char *key;
    uint32_t key_len;
    uint64_t number;
} bulk_ident;
ms_code store_bulk_idents(store *s, const bulk_ident *ids, size_t n, ms_err *e);

#endif
