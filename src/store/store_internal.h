/*
 * store_internal.h - what the store's files share and nothing outside src/store may see: the three
 * structs behind store.h's opaque handles, the LMDB sub-database table, the error mapping, and the key
 * and value codecs (codec.c) that every concern file writes and reads through. src/store/README.md has
 * the design; store.h has the contract.
 *
 * Naming: calls shared between the store's files begin with st_ (SQLite's habit of a distinct prefix for
 * internal calls), so that a reader of any file tells them from store.h's public store_ calls at once.
 *
 * Rules these structs carry (README.md, "Who may write"):
 *   - store.last_commit is read and written only while LMDB's writer lock is held (inside a write
 *     transaction, before its commit returns): the writer, snapshots and bulk loads take their instants
 *     from it, so the lock orders them.
 *   - store.commit_pos, audit_seq, audit_head and patients change only when a store_write commits, and
 *     a store_write lives on one thread (the ingest writer, or an offline command).
 *   - identities (identity_index.h) has its own lock: request threads look up, the writer inserts.
 *
 * Must never: be included from outside src/store (the #error below), hold PHI in an error message.
 */
#ifndef MS_STORE_INTERNAL_H
#define MS_STORE_INTERNAL_H

#ifndef MS_STORE_INTERNAL
#error "store/store_internal.h is private to src/store: include store/store.h"
#endif

#include "store/identity_index.h"
#include "store/segment_log.h"
#include "store/state_cache.h"
#include "store/store.h"

#include <lmdb.h>
#include <stdatomic.h>

/* The LMDB sub-databases (README.md, "LMDB layout"). */
enum {
    DB_IDENT,
    DB_PATIENT,
    DB_RECORD,
    DB_PUBLIC,
    DB_LOG,
    DB_SNAPSHOT,
    DB_META,
    DB_USERS,
    DB_TOKENS,
    DB_AUDIT,
    DB_EVENTS,      /* events.c: the event log of the notifications */
    DB_DEFINITIONS, /* events.c: named definitions (rules, subscriptions) */
    DB_CHILDREN,    /* versions.c: parent id NUL ts child id (the children of a record) */
    DB_CLUSTER,     /* identities.c: a cluster's identity MAC -> patient number (store_cluster_id_put) */
    DB_PLOG,        /* plog.c: the patient log, be64(seq) -> entry */
    DB_PHEAD,       /* plog.c: checkpointed heads, be64(chunk) -> be64(end) + 4,096 be64(seq) */
    DB_PLOGC,       /* plog_compact.c: the patient log's compacted entries, moved out of plog: be64(seq) -> entry */
    DB_COUNT
};

typedef struct st_plog st_plog;
#define ST_PLOG_CKPT_CHUNKS 24 /* chunks of heads one commit checkpoints at most (plog.c) */

struct store {
    char *dir;
    bool read_only;
    int lock_fd;           /* DIR/medstream.lock, locked exclusively (-1: read-only) */
    char *live_writer;     /* read-only: "pid N (CMD, since T)" of the writer running at open, or NULL */
    int64_t free_bytes;    /* test hook: the file system's free bytes as the EIO check sees them (-1: statvfs) */
    uint64_t segment_size; /* the segment log's, as this store opened it */
    MDB_env *env;
    MDB_dbi dbi[DB_COUNT];
    bool absent[DB_COUNT]; /* read-only open of a store written before this sub-database existed: reads find
                              nothing in it */
    segment_log *log;
    store_open_times opened; /* what the open spent its time on */
    unsigned char id_key[32];
    patient_id_key pid_key;       /* from HMAC(id_key, "patient-id"): the patient id permutation */
    patient_id_key mac_key;       /* from HMAC(id_key, "identity"): identity MACs (identities.c) */
    struct key_store *keys;       /* keys.c: the patients' data keys */
    unsigned char deid_key[32];   /* HMAC(id_key, "deid"): the public transforms' secrets (store_deid_key) */
    identity_index *identities;   /* identity key hash -> patient number (identity.c's keys) */
    uint64_t audit_seq;           /* last audit entry */
    unsigned char audit_head[32]; /* SHA-256 of the last audit entry (zeros before the first) */
    int64_t last_commit;          /* the last instant handed out (under LMDB's writer lock) */
    _Atomic int64_t writing_from; /* the valid_from of the write transaction in flight, or a bound below it while
                                     it begins (INT64_MAX: none): store_read_settle waits for it */
    uint64_t commit_pos;
    store_commit_times commit_times; /* the last commit's (store_last_commit_times) */
    uint64_t patients;               /* meta "patients": every patient number is below it (the count, where numbers are
                                        dense; a cluster's numbers are minted per shard, shard.h) */
    uint64_t created;                /* meta "patients_created": patients created (absent: = patients) */
    /* meta "node_id" (store_node_id) */
    unsigned char node_id[STORE_NODE_ID];
    st_plog *plog;              /* plog.c: the patients' heads in the patient log */
    struct state_cache *states; /* state_cache.h: the patients' latest states (NULL: none) */
};

/* meta: how many erasures have committed (erase.c): a re-projection step read before one writes nothing. */
#define ST_META_ERASURES "erasures"

/* The schema versions of the public copies (schemas.c): the one reads answer under, and the one being
 * re-projected to (0: none). */
typedef struct {
    uint32_t in_force, target;
    bool loaded;
} st_schema_versions;

struct store_write {
    store *s;
    MDB_txn *txn;
    int64_t now;
    uint64_t patients, created;
    identity_hash *inserted; /* identities added to s->identities by this transaction (undone on abort) */
    uint64_t audit_seq;      /* the audit chain as this transaction extends it */
    unsigned char audit_head[32];
    size_t ninserted, capinserted;
    buf log; /* the commit log entry being built (st_log_add) */
    uint32_t nlog;
    buf key;                    /* scratch */
    unsigned char (*bound)[32]; /* identity MACs whose pending keys this transaction wrote (keys.c): dropped
                                   from pending after the commit */
    size_t nbound, capbound;
    struct st_erased {
        uint64_t number;    /* a patient this transaction erased (erase.c): after the commit its key is overwritten */
        identity_hash hash; /* and its identity leaves the in-memory index (if it still names that number) */
    } * erased;             /* every erasure of the transaction: the writer groups several DELETEs in one */
    size_t nerased, caperased;
    st_schema_versions sv; /* the public copies' schema versions as this transaction sees them (st_write_sv) */
    /* the patient log (plog.c): the heads of the patients this transaction appended to (number + 1 -> the
     * newest entry, and the newest 'v', 'r' and 'P' entry), its entries' sequence numbers, and the checkpoint
     * its commit writes */
    uint64_t *ov_key;
    struct st_plog_heads *ov_val;
    size_t ov_n, ov_cap;
    uint64_t plog_first, plog_next; /* 0: no entry yet */
    buf plog_buf;
    size_t ckpt_chunks[ST_PLOG_CKPT_CHUNKS], ckpt_n;
    buf states; /* the patient versions this transaction wrote, for the state cache once it commits:
                   be64(number) be32(length) st_patient_encode's bytes, in order */
};

struct store_read {
    store *s;
    MDB_txn *txn;
    uint32_t sv;       /* the schema version in force in this snapshot (0: not read yet; st_read_sv) */
    uint64_t plog_end; /* the patient log's last entry in this snapshot + 1 (0: not read yet; st_plog_end) */
};

/* ---- errors (env.c) ---- */

/* An LMDB return code as an ms_code: a full disk or map is MS_EFULL ("disk full" in the message for the
 * former), a failed check MS_ECORRUPT, anything else MS_EIO. */
ms_code st_mdb_fail(ms_err *e, int rc, const char *what);
/* The same for a failed LMDB write or commit, where an EIO on a file system with little space left is a
 * full disk (LMDB turns a short page write into EIO). */
ms_code st_write_fail(store *s, ms_err *e, int rc, const char *what);

static inline MDB_val st_val(const void *p, size_t n) { return (MDB_val){.mv_size = n, .mv_data = (void *)p}; }

/* ---- the meta sub-database (env.c): be64 values by name ---- */
int st_meta_get_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *out); /* absent: 0, returns 0 */
int st_meta_put_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t x);
/* One put (or delete) in its own write transaction, for writes from threads other than the writer's
 * (README.md, "Who may write"). MS_EINVAL on a read-only store. */
ms_code st_small_write(store *s, int db, const void *key, size_t kl, const void *v, size_t vl, unsigned flags, bool del,
                       const char *what, ms_err *e);
/* Every entry of a sub-database keyed by be64 sequence numbers (the audit chain, the event log) after
 * `after`, in order; fn returns false to stop. Returns 0, or an LMDB error (MDB_CORRUPTED: a key that is
 * not 8 bytes). */
int st_seq_scan(MDB_txn *txn, MDB_dbi dbi, uint64_t after, bool (*fn)(void *ctx, uint64_t seq, const char *v, size_t n),
                void *ctx);

/* ---- key codecs (codec.c) ---- */

/* Event times in keys: sign bit flipped so that big-endian byte order is numeric order. */
#define ST_TS_SIGN ((uint64_t)1 << 63)
static inline uint64_t st_ts_key(int64_t ts) { return (uint64_t)ts ^ ST_TS_SIGN; }
/* prefix ~valid_from ~version (newest first). */
void st_key_versioned(buf *k, const void *prefix, size_t n, int64_t vf, uint32_t version);
/* The valid_from and version a versioned key ends in (its last 12 bytes: the caller checks its length). */
void st_key_version_read(const void *key, size_t len, int64_t *vf, uint32_t *version);
/* record_id NUL ~valid_from ~version. */
void st_key_record(buf *k, const char *rid, size_t n, int64_t vf, uint32_t version);
/* The key prefix of schema version sv's public copies (README.md, "Schema versions"): none for version 1
 * (the keys written before schema versions existed), 'V' be32(sv) for later ones. Returns its length. */
size_t st_public_version_prefix(unsigned char out[5], uint32_t sv);
/* [version prefix] 'R' record_id NUL ~valid_from ~version: a public record copy under schema version sv. */
void st_key_public_record(buf *k, uint32_t sv, const char *rid, size_t n, int64_t vf, uint32_t version);
/* be64(number) then a tag: 'v' versions, 'r' the records index. */
void st_patient_prefix(unsigned char out[9], uint64_t number, char tag);
/* [version prefix] 'P' be64(number): a patient's public copies under schema version sv; returns the length
 * (9 or 14). */
size_t st_public_patient_prefix(unsigned char out[14], uint32_t sv, uint64_t number);

/* ---- value encodings (codec.c); every decode checks lengths and returns false on a bad entry ---- */

void st_record_encode(buf *b, const record_version *rv);
/* k: the entry's key (record_id NUL ~valid_from ~version); pk: the store's, for the patient id */
bool st_record_decode(const patient_id_key *pk, const MDB_val *k, const MDB_val *v, record_version *rv);
/* The longest value a patient version holds inline (a field whose value the encoder is given, state_field.value):
 * a name, a date, a phone number, an address, a code, not a clinical note. An inline value costs the version its
 * length in place of its 8-byte hash; a longer value stays in its record body only, where one read gives it. */
#define ST_PV_INLINE_MAX 64
/* Format 5 (codec.c), or 3 for a version whose fields do not fit its shape. */
void st_patient_encode(buf *b, const patient_version *pv);
/* Format 3 (2 when no field is sealed), as stores wrote before issue 17; st_patient_encode's fallback. */
void st_patient_encode_v3(buf *b, const patient_version *pv);
/* Strings point into the value, or into mem when mem is given (the value is copied there first). */
bool st_patient_decode(const MDB_val *v, const patient_ref *who, patient_version *pv, arena *mem);
/* identity entries (identities.c writes them): pid (16), then either the identity key itself (entries
 * written before data keys: a normalized name is UTF-8, so it never begins with 0xFF), or 0xFF, flags
 * (IDENT_ERASED), the identity MAC (32), and the identity key sealed under the patient's data key (IV,
 * ciphertext, tag) — or, erased, zeros for the MAC, be64(erased at) and be64(its commit position). */
#define IDENT_FORMAT_2 0xFF
#define IDENT_ERASED 0x01
typedef struct {
    patient_id pid;
    bool legacy;                 /* the identity key in plain (key, key_len) */
    bool erased;                 /* erased_at is set; nothing else is */
    const char *key;             /* legacy: the identity key */
    size_t key_len;              /* legacy: its length; else the sealed key's plaintext length */
    const unsigned char *mac;    /* format 2 */
    const unsigned char *sealed; /* format 2: IV, ciphertext (key_len), tag */
    int64_t erased_at;
    uint64_t erased_pos; /* the erasure's commit log position */
} ident_entry;
bool st_ident_decode(const MDB_val *v, ident_entry *out);
/* The entry of an unsealed patient (preload, bulk_load.c): pid + identity key in plain. */
void st_ident_encode_plain(buf *b, const patient_id *pid, const char *key, size_t len);
/* public record copy: pid, year, type, public fields (none: a tombstone's copy). */
void st_public_record_encode(buf *b, const record_version *rv, int year, const char *fields, size_t len);
bool st_public_record_decode(const MDB_val *v, public_record *pr);
/* users: the key is the name; either format of README.md's layout decodes. */
void st_account_encode(buf *b, const store_account *a);
bool st_account_decode(const MDB_val *k, const MDB_val *v, store_account *a);
/* tokens: be64(expires) role NUL user. */
void st_token_encode(buf *b, int64_t expires, const char *user, const char *role);
bool st_token_decode(const MDB_val *v, int64_t *expires, char user[STORE_USER_MAX], char role[STORE_ROLE_MAX]);
/* The user name of a token entry (no copy); false if the entry is malformed. */
bool st_token_user(const MDB_val *v, int64_t *expires, const char **user, size_t *user_len);

/* ---- schema versions (schemas.c) ---- */

/* The schema version in force recorded in txn's meta (1 when none is: a store from before versions). */
uint32_t st_meta_sv(MDB_txn *txn, MDB_dbi meta);
#define ST_META_TARGET "schema_target" /* be64: the version being re-projected to (absent or 0: none) */
/* The same, read once per read transaction. */
uint32_t st_read_sv(store_read *r);
/* The versions the writer's transaction writes public copies under, read once per transaction. */
const st_schema_versions *st_write_sv(store_write *w);

/* ---- the patient log (plog.c; README.md, "The patient log") ---- */

/* An entry: the tag says which. Strings point into the LMDB value (valid while its transaction is). */
typedef struct {
    uint64_t seq, number;
    uint64_t last[3];   /* the patient's newest 'v', 'r' and 'P' entry before this one (0: none): for an entry
                           of one of those kinds, the previous of its kind; all 0 for 'X' */
    char tag;           /* 'v' patient version, 'r' records-index entry, 'P' public copy, 'X' erased */
    int64_t valid_from; /* 'v', 'P' */
    uint32_t version;   /* 'v', 'P' */
    uint32_t sv;        /* 'P': its schema version */
    int64_t ts;         /* 'r': the record's event time */
    const char *data;   /* 'v' the stored patient value; 'r' the record id; 'P' the public fields */
    size_t len;
} plog_entry;
void st_plog_encode(buf *b, const plog_entry *en);
bool st_plog_decode(uint64_t seq, const MDB_val *v, plog_entry *en);
/* At open (after the sub-databases): the heads from the checkpoint and the entries after it. lag: entries
 * past the floor before commits checkpoint; per_commit: chunks one commit writes at most (0: the defaults). */
ms_code st_plog_open(store *s, uint64_t lag, uint32_t per_commit, ms_err *e);
void st_plog_close(store *s);
/* Append en (number, tag and payload set; seq and last filled in) in w: an LMDB error, or 0. */
int st_plog_append(store_write *w, plog_entry *en);
/* Delete entry seq in w (erasure); 0 when done or absent. */
int st_plog_delete(store_write *w, uint64_t seq);
/* The newest entry of patient number as w sees it (its own entries included), or 0. */
uint64_t st_plog_head_w(store_write *w, uint64_t number);
/* Patient number's newest version was just appended by w, and its plaintext is at w->states offset at:
 * st_plog_state_get then finds it there (false once a newer version, an erasure mark, or none of w's). */
void st_plog_state_note(store_write *w, uint64_t number, size_t at);
bool st_plog_state_get(store_write *w, uint64_t number, size_t *at);
/* The newest committed entry of patient number (may be past a reader's snapshot: st_plog_walk copes). */
uint64_t st_plog_head(store *s, uint64_t number);
/* The last entry r's snapshot holds (0: none); a read-only store's heads are brought up to it. */
uint64_t st_plog_end(store_read *r);
void st_plog_catch_up(store_read *r);
/* The patient's entries of one kind (tag 'v', 'r' or 'P'), newest first, from its newest entry head (of any
 * kind): fn is called with each entry txn holds (those past end are followed, not shown) and returns false
 * to stop. *erased: the head is an 'X' mark (nothing shown). */
typedef bool (*st_plog_fn)(void *ctx, const plog_entry *en);
ms_code st_plog_walk(store *s, MDB_txn *txn, uint64_t end, uint64_t head, char tag, st_plog_fn fn, void *ctx,
                     bool *erased, ms_err *e);
/* Erasure: delete every log entry of patient number in w (*versions: how many were patient versions) and
 * append its 'X' mark. */
int st_plog_erase(store_write *w, uint64_t number, uint64_t *versions);
/* versions.c: every records-index entry of patient number as w sees it ('r' entries: ts, record id), newest
 * first, repeats included. */
ms_code st_patient_records_w(store_write *w, uint64_t number, st_plog_fn fn, void *ctx, ms_err *e);
/* In store_write_commit, before LMDB's commit: write the oldest dirty chunks when the log has run far
 * enough past the floor. After it: the heads, the dirty marks, the floor; free w's share. */
int st_plog_checkpoint(store_write *w);
/* An entry by sequence number, wherever it is (plog, else the compacted part): 0, MDB_NOTFOUND, or an error. */
int st_plog_get(store *s, MDB_txn *txn, uint64_t seq, MDB_val *v);
#define ST_META_PLOG_FLOOR "plog_floor" /* be64: every entry before it is in a checkpointed chunk (plog.c) */
/* plog_compact.c: in txn (a switch of schema versions: the version it ends is retired, and its public
 * copies in the log with it), (re)start the compaction of the log from its first entry to its end now. */
int st_plog_compact_from_start(store *s, MDB_txn *txn);
/* After LMDB's commit, before st_plog_committed: fn for each patient w appended to, with its head before w
 * and after, its newest entry of each kind ('v', 'r', 'P') after, and whether w appended a version of it. */
typedef void (*st_plog_moved_fn)(void *ctx, uint64_t number, uint64_t before, uint64_t after, const uint64_t newest[3],
                                 bool version);
void st_plog_each_moved(store_write *w, st_plog_moved_fn fn, void *ctx);
void st_plog_committed(store_write *w);
void st_plog_write_free(store_write *w);

/* ---- shared between the concern files ---- */

/* versions.c: the first entry at or after prefix_key whose key begins with its first prefix_len bytes. */
int st_seek_first_version(MDB_cursor *c, const buf *prefix_key, size_t prefix_len, MDB_val *k, MDB_val *v);
/* versions.c: the record version current at as_of in txn (valid_to filled in). */
ms_code st_record_at(store *s, MDB_txn *txn, buf *kb, const char *rid, size_t len, int64_t as_of, record_version *rv,
                     bool *found, ms_err *e);
/* commit_log.c: start the commit log entry of w (its commit time, no items yet). */
void st_log_begin(store_write *w);
/* commit_log.c: add an item to the commit log entry w will write at commit. */
void st_log_add(store_write *w, char kind, const void *id, size_t id_len, uint32_t version);
/* commit_log.c: write w's commit log entry as position pos. */
int st_log_put(store_write *w, uint64_t pos);
/* identities.c: rebuild the in-memory identity index from the identity sub-database (at open). */
ms_code st_identities_load(store *s, ms_err *e);
/* identities.c: the highest patient number whose identity entry is sealed under a data key (*any false:
 * none, or only patients from before data keys): the key file must hold its slot. Erased entries are
 * passed over (a bounded walk back from the newest). */
ms_code st_ident_last_keyed(store *s, uint64_t *number, bool *any, ms_err *e);
/* identities.c: take back the index entries of a transaction that did not commit. */
void st_identities_undo(store_write *w);
/* keys.c: the data key file (DIR/keys) and the pending keys of identities not yet committed. */
ms_code st_keys_open(store *s, ms_err *e);
void st_keys_close(store *s);
/* Patient number n's data key; *found false when it has none (never keyed, or erased). */
ms_code st_key_get(store *s, uint64_t n, unsigned char key[32], bool *found, ms_err *e);
/* Write n's data key and identity hash into its slot (durable at st_keys_sync, which the commit calls
 * before LMDB's). */
ms_code st_key_put(store *s, uint64_t n, const unsigned char key[32], identity_hash h, ms_err *e);
/* Set the identity hash of each slot numbers[i] to h[i], keeping its key (numbers ascending; patients
 * without a key, and the repair after a scan); durable at st_keys_sync. */
ms_code st_slots_hash(store *s, const uint64_t *numbers, const identity_hash *h, size_t n, ms_err *e);
ms_code st_keys_sync(store *s, ms_err *e);
/* Room for one write of new slots (64 KiB) past the key file's end, reserved (store_probe). */
ms_code st_keys_reserve(store *s, ms_err *e);
/* len bytes past fd's end reserved on the disk (fallocate, its size unchanged; a file system without fallocate:
 * nothing, MS_OK); MS_EFULL "store: WHAT: disk full" when there is no room. */
ms_code st_reserve(int fd, uint64_t len, const char *what, ms_err *e);
/* Overwrite n's slot with the erasure mark alone, synced. */
ms_code st_key_destroy(store *s, uint64_t n, ms_err *e);
/* At open: overwrite the slots of these erased patients that are not marked erased yet. */
ms_code st_keys_erased(store *s, const uint64_t *erased, size_t nerased, ms_err *e);
/* After a scan (identities.c): clear every slot below the patient count whose number has no identity
 * entry (listed: a bit per number), the leftovers of a transaction that did not commit. */
ms_code st_slots_clear_unlisted(store *s, const uint64_t *listed, ms_err *e);
/* The erasure of n committed and its slot is overwritten: its mark in meta can go (st_erase_marks_delete
 * at the next commit). _take hands the numbers noted so far to that commit (the caller frees them; a
 * commit that fails notes them again). */
void st_keys_erase_done(store *s, uint64_t n);
size_t st_keys_erase_done_take(store *s, uint64_t **out);
/* identities.c: delete the erasure marks of these numbers in w's transaction (LMDB's error, 0: done). */
int st_erase_marks_delete(store_write *w, const uint64_t *numbers, size_t n);
/* At open: cut off every slot past the patient count. */
ms_code st_keys_cut(store *s, ms_err *e);
#define ST_KEYS_HEAD_VERIFIED                                                                                          \
    32 /* the key file's header byte: 'V' while every patient's slot holds its hash or                                 \
        its erasure */
/* The key file's header mark: every patient's slot holds its identity hash or its erasure (set after a
 * scan's repair, synced after the slots; cleared in a backup's copy). */
bool st_keys_verified(store *s);
ms_code st_keys_set_verified(store *s, ms_err *e);
/* What st_keys_index_load found: slots hashed and marked erased, and a sample of the hashed ones. */
#define ST_SLOT_SAMPLES 64
typedef struct {
    uint64_t hashed, erased;
    uint64_t sample[ST_SLOT_SAMPLES];
    identity_hash sample_hash[ST_SLOT_SAMPLES];
    size_t nsample;
} st_slot_counts;
/* Put every hashed slot below the patient count into ix (one sequential read of the file). */
ms_code st_keys_index_load(store *s, identity_index *ix, st_slot_counts *c, ms_err *e);
/* store_data_key by the identity's MAC (store_identity_mac of its key). */
ms_code st_data_key_of(store *s, const unsigned char mac[32], unsigned char key[32], ms_err *e);
/* Is key the pending key of this identity MAC (made by store_data_key, not yet committed)? */
bool st_key_pending_is(store *s, const unsigned char mac[32], const unsigned char key[32]);
void st_key_pending_drop(store *s, const unsigned char mac[32]);
/* identities.c: turn patient number's identity entry into an erased marker, and note on w that after the
 * commit its identity leaves the index and its key is overwritten. *was_live false: none, or erased. */
ms_code st_ident_erase(store_write *w, uint64_t number, const patient_id *pid, bool *was_live, ms_err *e);
/* identities.c: did w erase patient number? */
bool st_write_erased(const store_write *w, uint64_t number);
/* identities.c: the identity key of patient number as txn sees it (opened with the patient's data key when
 * sealed); *found false: none, or erased. */
ms_code st_identity_key_of(store *s, MDB_txn *txn, uint64_t number, buf *key, bool *found, ms_err *e);
/* versions.c: st_patient_decode of a stored patient version, opened first when sealed (into mem). */
ms_code st_patient_read(store *s, MDB_val v, const patient_ref *who, patient_version *pv, arena *mem, ms_err *e);
/* versions.c: after LMDB's commit, before st_plog_committed: the state cache learns the patients' new heads
 * and the patient versions w wrote. */
void st_states_committed(store_write *w);
/* audit_chain.c: the chain's end (last number, SHA-256 of the last entry), at open. */
ms_code st_audit_head_load(store *s, ms_err *e);
/* In the commit of w (store_write_commit): the chain's end into meta ("audit_end"), when w appended entries;
 * an LMDB code. */
int st_audit_end_put(store_write *w);

#endif
