/*
 * keys.c - the patients' data keys (DESIGN.md "Erasure"): one key per patient, in a file of fixed slots
 * beside LMDB, so that erasing a patient can overwrite its key in place; and, in the same slots, each
 * patient's identity hash, from which the in-memory identity index loads at open.
 *
 * DESIGN: LMDB never overwrites a page in place (copy-on-write; freed pages keep their bytes until they
 * are reused), so a key deleted from LMDB would survive in the file. DIR/keys is a plain file of 64-byte
 * slots, slot n for patient number n after a 64-byte header:
 *
 *   [0]      1: a live data key at [8, 56) (wrapped under the store's wrap key); 0: none
 *   [1]      'H': the patient's identity hash (identity_index.h, 112 bits) at [2, 8) and [56, 64);
 *            'E': an erased patient (nothing else in the slot); 0: a slot from before identity hashes
 *   [8, 56)  the wrapped key
 *
 * Erasure overwrites the slot with the 'E' mark alone and fdatasyncs the file; without the key, the
 * patient's sealed bodies (seal.h) and sealed identity key are noise. Builds from before identity hashes
 * read byte 0 and [8, 56) only, so they still read the keys of a store this build wrote.
 *
 * Why the hashes live here: the identity index used to be rebuilt at every open by scanning the identity
 * sub-database, whose pages lie among every other tree's; on a store larger than the page cache that scan
 * is one page fault per 4 KiB (10 M patients: 4-12 s, most of a restart). The slots are written anyway,
 * in number order, synced before every commit that creates a patient; reading them back is one sequential
 * read of 64 bytes a patient (in 4 MiB pieces: what the page cache holds, the rest with O_DIRECT, the next
 * piece read while this one is indexed). st_keys_index_load takes the index from them only when they account
 * for every patient the store created (each slot hashed or erased: identities.c counts them against
 * "patients_created"), the header says a full check made them so (ST_KEYS_HEAD_VERIFIED), and a sample of them
 * agrees with LMDB; otherwise the open scans LMDB as before and rewrites the slots (st_slots_hash).
 * A slot written by a build from before the hashes lacks the 'H' and fails the count, so a store written
 * by an older build is scanned once and repaired, never trusted. A backup's copy has ST_KEYS_HEAD_VERIFIED
 * cleared: it is scanned on its first open (backup.c).
 *
 * A body is sealed by its source's thread before the writer has decided which patient it is about (ingest.h
 * step 2 precedes the writer's identity resolution), so a new identity's key is made then and kept only
 * in memory ("pending", by the identity's MAC) until the writer creates the patient, writes the key into
 * its slot (synced before the LMDB commit, invariant 2's order) and, after the commit, drops the pending
 * entry. store_data_key looks up pending first and the identity index second, and makes a new key pending,
 * under one lock, and the writer drops pending entries only after its commit, so two batches of one new
 * identity share one key. A body sealed under a key that is not its patient's when the writer comes to it
 * (the patient was erased meanwhile) is rejected (the source sends it again). A pending key whose batch
 * failed is never on disk.
 *
 * At open, a file shorter than the slot of the newest keyed patient (cut short or lost with a copy) is
 * refused before anything is written: its patients would read as erased, and an empty or absent file
 * would be taken for a new store's. Slots past the patient count (a key written by a commit that did not
 * complete) are cut off,
 * and slots of erased patients (a crash between the erasure's commit and the overwrite: identities.c
 * finds them by the erasure's mark in meta, or by the scan) are overwritten.
 *
 * Unwrapped keys of recent patients are cached in memory (CACHE_SLOTS, direct-mapped); every slot write
 * updates the cache after the file and bumps a generation, so that a read that fetched a slot before the
 * write cannot put an old key (an erased one) back.
 *
 * A new patient's slot is not written on its own: the writer numbers new patients in order, so a commit's
 * new slots are consecutive, and st_key_put gathers them in memory ("fresh" slots, up to FRESH_SLOTS), written
 * with one pwrite when the next does not follow, when they are FRESH_SLOTS, before any other slot write and
 * at every sync (st_keys_sync, before the LMDB commit that creates the patients). One 64-byte pwrite a
 * new patient was ~2.4 % of the writer's samples at 20 KB (95 % of the records new patients). A key still in the
 * fresh slot is read from memory (st_key_get, under the lock), so a key is found from its st_key_put on.
 *
 * Contract: store.h ("Data keys"); internal calls st_key_* (store_internal.h). Must never: write a key
 * unwrapped, leave an erased patient's key on disk after st_keys_erased or in the cache after
 * st_key_destroy, hold the lock across I/O, change a slot's key when it writes a hash.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"
#include "base/fd_io.h"
#include "store/seal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define SLOT 64
#define HEADER "medstream keys 1\n"
#define SLOT_HASHED 'H'
#define SLOT_ERASED 'E'
#define PENDING_BUCKETS 1024
#define FRESH_SLOTS 1024 /* new patients' slots written at once: 64 KiB */

typedef struct pending {
    unsigned char mac[32];
    unsigned char key[SEAL_KEY];
    struct pending *next;
} pending;

/* Unwrapped keys of recent patients, direct-mapped by number: a body, a patient version or a field read
 * needs its patient's key, and the writer several per record; a pread and an unwrap each time cost more
 * than the sealing itself. */
#define CACHE_SLOTS 65536
typedef struct {
    uint64_t number_plus_1; /* 0: empty */
    unsigned char key[SEAL_KEY];
} cached_key;

typedef struct key_store {
    int fd;
    bool dirty; /* a slot written since the last sync */
    unsigned char wrap[SEAL_KEY];
    pthread_mutex_t lock; /* the pending keys and the cache */
    pending *bucket[PENDING_BUCKETS];
    cached_key *cache;
    uint64_t gen;         /* bumped by every slot write: a fill read before one must not enter the cache */
    unsigned char *fresh; /* new slots fresh_first .. fresh_first + fresh_n - 1, not written yet (the store_write's
                             thread appends and writes them; readers copy from it under the lock) */
    uint64_t fresh_first;
    size_t fresh_n;
    uint64_t *erased_done; /* numbers whose slot was overwritten after their erasure committed: their marks in
                              meta go at the next commit (identities.c) */
    size_t nerased_done, caperased_done;
} key_store;

static off_t slot_off(uint64_t n) { return (off_t)((n + 1) * SLOT); }

/* The key file's path in the store's directory. */
static void key_file(const store *s, char path[4096]) { snprintf(path, 4096, "%s/keys", s->dir); }

ms_code st_keys_open(store *s, ms_err *e)
{
    seal_init();
    key_store *k = ms_calloc(1, sizeof *k);
    k->cache = ms_calloc(CACHE_SLOTS, sizeof *k->cache);
    k->fresh = ms_malloc((size_t)FRESH_SLOTS * SLOT);
    pthread_mutex_init(&k->lock, NULL);
    unsigned int n = 0;
    HMAC(EVP_sha256(), s->id_key, 32, (const unsigned char *)"key-wrap", 8, k->wrap, &n);
    char path[4096];
    key_file(s, path);
    s->keys = k;
    /* A key file shorter than the slot of the newest keyed patient was cut short or lost (a copy or restore
     * that did not finish): its patients' records would read as erased, and an empty or absent file would
     * be taken for a new store's. Refused before anything is written. */
    uint64_t last = 0;
    bool keyed = false;
    ms_code rc = st_ident_last_keyed(s, &last, &keyed, e);
    if (rc != MS_OK) return rc;
    struct stat st;
    uint64_t have = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    if (keyed && have < (uint64_t)slot_off(last + 1))
        return ms_fail(e, MS_ECORRUPT,
                       "store: %s is cut short or lost: %llu bytes, but the data keys of patients up to number %llu "
                       "need %llu; without them their records cannot be read (restore the key file with the store "
                       "it belongs to); nothing was changed",
                       path, (unsigned long long)have, (unsigned long long)last,
                       (unsigned long long)slot_off(last + 1));
    k->fd = open(path, (s->read_only ? O_RDONLY : O_RDWR | O_CREAT) | O_CLOEXEC, 0600);
    if (k->fd < 0 && s->read_only && errno == ENOENT) return MS_OK; /* a store from before keys: all plaintext */
    if (k->fd < 0) return ms_fail(e, MS_EIO, "store: cannot open %s: %s", path, strerror(errno));
    char head[SLOT] = HEADER;
    ssize_t got = pread(k->fd, head, SLOT, 0);
    if (got == 0 && !s->read_only) {
        memset(head, 0, SLOT);
        memcpy(head, HEADER, sizeof HEADER - 1);
        if (pwrite(k->fd, head, SLOT, 0) != SLOT || fdatasync(k->fd) != 0)
            return ms_fail(e, MS_EIO, "store: cannot write %s: %s", path, strerror(errno));
    } else if (got != SLOT || memcmp(head, HEADER, sizeof HEADER - 1) != 0) {
        return ms_fail(e, MS_ECORRUPT, "store: %s is not a medstream key file", path);
    }
    return MS_OK;
}

void st_keys_close(store *s)
{
    key_store *k = s->keys;
    if (!k) return;
    for (int i = 0; i < PENDING_BUCKETS; i++)
        for (pending *p = k->bucket[i], *next; p; p = next) {
            next = p->next;
            OPENSSL_cleanse(p, sizeof *p);
            free(p);
        }
    if (k->fd >= 0) close(k->fd);
    free(k->erased_done);
    free(k->fresh); /* wrapped keys of patients no commit created (every commit writes them first) */
    OPENSSL_cleanse(k->cache, sizeof *k->cache * CACHE_SLOTS);
    free(k->cache);
    pthread_mutex_destroy(&k->lock);
    OPENSSL_cleanse(k->wrap, sizeof k->wrap);
    free(k);
    s->keys = NULL;
}

/* The cache entry of n after a slot write (key NULL: n has none any more); under no lock. */
static void cache_set(key_store *k, uint64_t n, const unsigned char *key)
{
    pthread_mutex_lock(&k->lock);
    cached_key *c = &k->cache[n % CACHE_SLOTS];
    k->gen++;
    if (key) {
        c->number_plus_1 = n + 1;
        memcpy(c->key, key, SEAL_KEY);
    } else if (c->number_plus_1 == n + 1) {
        OPENSSL_cleanse(c, sizeof *c);
    }
    pthread_mutex_unlock(&k->lock);
}

ms_code st_key_get(store *s, uint64_t n, unsigned char key[SEAL_KEY], bool *found, ms_err *e)
{
    key_store *k = s->keys;
    unsigned char slot[SLOT];
    *found = false;
    if (!k || k->fd < 0) return MS_OK;
    pthread_mutex_lock(&k->lock);
    cached_key *c = &k->cache[n % CACHE_SLOTS];
    if (c->number_plus_1 == n + 1) {
        memcpy(key, c->key, SEAL_KEY);
        *found = true;
    }
    uint64_t gen = k->gen;
    bool fresh = !*found && n - k->fresh_first < k->fresh_n; /* (wraps for n below the first) */
    if (fresh) memcpy(slot, k->fresh + (n - k->fresh_first) * SLOT, SLOT);
    pthread_mutex_unlock(&k->lock);
    if (*found) return MS_OK;
    ssize_t got = fresh ? SLOT : pread(k->fd, slot, SLOT, slot_off(n));
    if (got < 0) return ms_fail(e, MS_EIO, "store: reading a data key: %s", strerror(errno));
    if (got < SLOT || slot[0] != 1) return MS_OK; /* never keyed, or erased */
    if (!seal_unwrap(k->wrap, n, slot + 8, key))
        return ms_fail(e, MS_ECORRUPT, "store: the data key of patient number %llu does not unwrap",
                       (unsigned long long)n);
    *found = true;
    pthread_mutex_lock(&k->lock);
    if (k->gen == gen) { /* no slot written since the read: what it read is current */
        c->number_plus_1 = n + 1;
        memcpy(c->key, key, SEAL_KEY);
    }
    pthread_mutex_unlock(&k->lock);
    return MS_OK;
}

static void slot_hash_set(unsigned char *slot, identity_hash h)
{
    slot[1] = SLOT_HASHED;
    for (int i = 0; i < 6; i++)
        slot[2 + i] = (unsigned char)(h.hi >> (8 * i));
    for (int i = 0; i < 8; i++)
        slot[56 + i] = (unsigned char)(h.lo >> (8 * i));
}

static bool slot_hash_get(const unsigned char *slot, identity_hash *h)
{
    if (slot[1] != SLOT_HASHED) return false;
    *h = (identity_hash){0, 0};
    for (int i = 0; i < 6; i++)
        h->hi |= (uint64_t)slot[2 + i] << (8 * i);
    for (int i = 0; i < 8; i++)
        h->lo |= (uint64_t)slot[56 + i] << (8 * i);
    return true;
}

/* len bytes at off, whole: a write cut short (a full disk writes what fits and sets no errno) goes on, and
 * the next one gives the reason. */
static bool write_at(int fd, const void *buf, size_t len, off_t off)
{
    int err = ms_write_full(fd, buf, len, off, NULL);
    if (err) errno = err;
    return err == 0;
}

static ms_code write_fail(ms_err *e, const char *what)
{
    return ms_fail(e, errno == ENOSPC ? MS_EFULL : MS_EIO, "store: %s: %s", what,
                   errno == ENOSPC ? "disk full" : strerror(errno));
}

#define CHUNK 65536 /* slots a pass over the file reads at once: 4 MiB */

/* Bytes [off + *have, off + want) of the key file into buf + *have, read on after a short read until the file
 * ends: a read of 0 bytes, or with O_DIRECT (direct) one that ends inside a block. */
static ms_code read_on(int fd, unsigned char *buf, size_t want, off_t off, bool direct, size_t *have, ms_err *e)
{
    while (*have < want) {
        ssize_t n = pread(fd, buf + *have, want - *have, off + (off_t)*have);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return ms_fail(e, MS_EIO, "store: reading the key file: %s", strerror(errno));
        if (n == 0) break;
        *have += (size_t)n;
        if (direct && *have % 4096) break;
    }
    return MS_OK;
}

/* Slots first .. first+n-1 into buf, whole, zeros past the file's end (slots never written). */
static ms_code read_slots(store *s, uint64_t first, size_t n, unsigned char *buf, ms_err *e)
{
    size_t want = n * SLOT, have = 0;
    ms_code rc = read_on(s->keys->fd, buf, want, slot_off(first), false, &have, e);
    memset(buf + have, 0, want - have);
    return rc;
}

/* The fresh slots into the file (store_write's thread). On failure they are dropped, from the cache too: the
 * commit that would have made them count (every commit writes them first) fails, and its retry puts them
 * again (a legacy patient's bind finds no key in the cache, so it makes its slot again). */
static ms_code fresh_write(key_store *k, ms_err *e)
{
    if (!k->fresh_n) return MS_OK;
    size_t len = k->fresh_n * SLOT;
    ms_code rc = write_at(k->fd, k->fresh, len, slot_off(k->fresh_first)) ? MS_OK : write_fail(e, "writing data keys");
    uint64_t first = k->fresh_first, n = k->fresh_n;
    pthread_mutex_lock(&k->lock);
    k->fresh_n = 0; /* after the write: a reader finds these slots in memory until now, in the file from now on */
    pthread_mutex_unlock(&k->lock);
    /* dropped: their keys leave the cache too, or a retried bind would find one there and commit records
     * sealed under a key that is on no disk */
    for (uint64_t i = 0; rc != MS_OK && i < n; i++)
        cache_set(k, first + i, NULL);
    k->dirty = true;
    return rc;
}

ms_code st_key_put(store *s, uint64_t n, const unsigned char key[SEAL_KEY], identity_hash h, ms_err *e)
{
    key_store *k = s->keys;
    unsigned char slot[SLOT] = {1};
    if (!seal_wrap(k->wrap, n, key, slot + 8)) return ms_fail(e, MS_EIO, "store: wrapping a data key failed");
    slot_hash_set(slot, h);
    ms_code rc =
        k->fresh_n && (n != k->fresh_first + k->fresh_n || k->fresh_n == FRESH_SLOTS) ? fresh_write(k, e) : MS_OK;
    if (rc != MS_OK) return rc;
    pthread_mutex_lock(&k->lock);
    if (!k->fresh_n) k->fresh_first = n;
    memcpy(k->fresh + k->fresh_n++ * SLOT, slot, SLOT);
    pthread_mutex_unlock(&k->lock);
    cache_set(k, n, key); /* after the slot: a read from now on finds this key either way */
    return MS_OK;
}

ms_code st_keys_reserve(store *s, ms_err *e) { return st_reserve(s->keys->fd, FRESH_SLOTS * SLOT, "data keys", e); }

/* Up to RUN slots read, changed and written back at once. */
#define RUN 1024

ms_code st_slots_hash(store *s, const uint64_t *numbers, const identity_hash *h, size_t n, ms_err *e)
{
    key_store *k = s->keys;
    ms_code rc = fresh_write(k, e);
    unsigned char *run = ms_malloc((size_t)RUN * SLOT);
    for (size_t i = 0, j; i < n && rc == MS_OK; i = j) {
        for (j = i + 1; j < n && numbers[j] > numbers[j - 1] && numbers[j] - numbers[i] < RUN; j++)
            ;
        size_t len = (size_t)(numbers[j - 1] - numbers[i] + 1) * SLOT;
        if ((rc = read_slots(s, numbers[i], len / SLOT, run, e)) != MS_OK) break;
        bool changed = false;
        for (size_t x = i; x < j; x++) {
            unsigned char *slot = run + (numbers[x] - numbers[i]) * SLOT;
            identity_hash have;
            if (slot_hash_get(slot, &have) && have.lo == h[x].lo && have.hi == h[x].hi) continue;
            slot_hash_set(slot, h[x]);
            changed = true;
        }
        if (changed && !write_at(k->fd, run, len, slot_off(numbers[i])))
            rc = write_fail(e, "writing identity hashes into the key file");
        if (changed) k->dirty = true;
    }
    free(run);
    return rc;
}

ms_code st_keys_sync(store *s, ms_err *e)
{
    ms_code rc = fresh_write(s->keys, e);
    if (rc != MS_OK || !s->keys->dirty) return rc;
    if (fdatasync(s->keys->fd) != 0) return write_fail(e, "syncing the key file");
    s->keys->dirty = false;
    return MS_OK;
}

ms_code st_key_destroy(store *s, uint64_t n, ms_err *e)
{
    ms_code rc = fresh_write(s->keys, e); /* no later write of the fresh slots over the mark */
    if (rc != MS_OK) return rc;
    unsigned char mark[SLOT] = {0, SLOT_ERASED};
    rc = write_at(s->keys->fd, mark, SLOT, slot_off(n)) ? MS_OK : write_fail(e, "overwriting a data key");
    cache_set(s->keys, n, NULL); /* after the overwrite: a fill that read the key before it never enters */
    if (rc == MS_OK && fdatasync(s->keys->fd) != 0) rc = write_fail(e, "syncing an overwritten data key");
    return rc;
}

ms_code st_keys_erased(store *s, const uint64_t *erased, size_t nerased, ms_err *e)
{
    if (s->read_only) return MS_OK;
    for (size_t i = 0; i < nerased; i++) {
        unsigned char slot[SLOT];
        ms_code rc = read_slots(s, erased[i], 1, slot, e);
        if (rc != MS_OK) return rc;
        bool marked = slot[1] == SLOT_ERASED;
        for (int b = 2; marked && b < SLOT; b++)
            marked = slot[b] == 0;
        if (!(marked && slot[0] == 0) && (rc = st_key_destroy(s, erased[i], e)) != MS_OK) return rc;
    }
    return MS_OK;
}

ms_code st_keys_cut(store *s, ms_err *e)
{
    /* keys past the last patient number belong to commits that never completed: cut them off */
    struct stat st;
    if (s->read_only || fstat(s->keys->fd, &st) != 0 || st.st_size <= slot_off(s->patients)) return MS_OK;
    off_t from = slot_off(s->patients);
    size_t len = (size_t)(st.st_size - from);
    unsigned char *zero = ms_calloc(1, len);
    bool ok =
        write_at(s->keys->fd, zero, len, from) && ftruncate(s->keys->fd, from) == 0 && fdatasync(s->keys->fd) == 0;
    free(zero);
    if (!ok) return ms_fail(e, MS_EIO, "store: cutting the key file: %s", strerror(errno));
    return MS_OK;
}

ms_code st_slots_clear_unlisted(store *s, const uint64_t *listed, ms_err *e)
{
    static const unsigned char zero[SLOT];
    unsigned char *buf = ms_malloc((size_t)CHUNK * SLOT);
    ms_code rc = MS_OK;
    for (uint64_t first = 0; first < s->patients && rc == MS_OK; first += CHUNK) {
        size_t n = (size_t)(s->patients - first < CHUNK ? s->patients - first : CHUNK);
        rc = read_slots(s, first, n, buf, e);
        for (size_t i = 0; rc == MS_OK && i < n; i++) {
            uint64_t number = first + i;
            if (listed[number / 64] >> (number % 64) & 1 || memcmp(buf + i * SLOT, zero, SLOT) == 0) continue;
            if (!write_at(s->keys->fd, zero, SLOT, slot_off(number))) rc = write_fail(e, "clearing a slot");
            cache_set(s->keys, number, NULL);
            s->keys->dirty = true;
        }
    }
    free(buf);
    return rc;
}

void st_keys_erase_done(store *s, uint64_t n)
{
    key_store *k = s->keys;
    pthread_mutex_lock(&k->lock);
    if (k->nerased_done == k->caperased_done) {
        k->caperased_done = k->caperased_done ? k->caperased_done * 2 : 16;
        k->erased_done = ms_realloc(k->erased_done, sizeof *k->erased_done * k->caperased_done);
    }
    k->erased_done[k->nerased_done++] = n;
    pthread_mutex_unlock(&k->lock);
}

size_t st_keys_erase_done_take(store *s, uint64_t **out)
{
    key_store *k = s->keys;
    pthread_mutex_lock(&k->lock);
    size_t n = k->nerased_done;
    *out = k->erased_done;
    k->erased_done = NULL;
    k->nerased_done = k->caperased_done = 0;
    pthread_mutex_unlock(&k->lock);
    return n;
}

/* The header's ST_KEYS_HEAD_VERIFIED byte. */
bool st_keys_verified(store *s)
{
    unsigned char head[SLOT];
    return pread(s->keys->fd, head, SLOT, 0) == SLOT && head[ST_KEYS_HEAD_VERIFIED] == 'V';
}

ms_code st_keys_set_verified(store *s, ms_err *e)
{
    unsigned char v = 'V';
    ms_code rc = st_keys_sync(s, e); /* the slots before the mark that vouches for them */
    if (rc != MS_OK) return rc;
    if (pwrite(s->keys->fd, &v, 1, ST_KEYS_HEAD_VERIFIED) != 1 || fdatasync(s->keys->fd) != 0)
        return ms_fail(e, MS_EIO, "store: writing the key file's header: %s", strerror(errno));
    return MS_OK;
}

/* A descriptor of the key file that reads past the page cache (O_DIRECT), or -1 where the file system
 * refuses it (tmpfs before Linux 6.6): a store larger than the page cache restarts with the file cold, and
 * a buffered read of it cost ~3 us of kernel CPU a 4 KiB page here (8.5 M patients: 1.7 s for 0.5 s of
 * device time). */
static int direct_fd(store *s)
{
    char path[4096];
    key_file(s, path);
    return open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
}

/* One piece of the key file read into buf (aligned for O_DIRECT), whole unless the file ends first (got: what
 * was there); run on a thread of its own while the piece before it goes into the index. */
typedef struct {
    int fd;        /* the O_DIRECT descriptor, or the buffered one where there is none */
    int cached_fd; /* the buffered descriptor */
    unsigned char *buf;
    size_t want;
    off_t off;
    size_t got;
    ms_code rc;
    ms_err err;
} piece_read;

static void *piece_run(void *arg)
{
    piece_read *p = arg;
    p->got = 0;
    if (p->fd != p->cached_fd) { /* first what the page cache holds (a restart after kill -9), without waiting */
        struct iovec v = {p->buf, p->want};
        ssize_t n = preadv2(p->cached_fd, &v, 1, p->off, RWF_NOWAIT);
        if (n > 0) p->got = (size_t)n;
    }
    p->rc = p->got % 4096 ? MS_OK /* the file's end */
                          : read_on(p->fd, p->buf, p->want, p->off, p->fd != p->cached_fd, &p->got, &p->err);
    return NULL;
}

ms_code st_keys_index_load(store *s, identity_index *ix, st_slot_counts *c, ms_err *e)
{
    const size_t span = (size_t)CHUNK * SLOT; /* the file in 4 MiB pieces from offset 0 (O_DIRECT's alignment) */
    unsigned char *buf[2];
    for (int i = 0; i < 2; i++)
        if (posix_memalign((void **)&buf[i], 4096, span) != 0) ms_oom();
    int dfd = direct_fd(s), fd = dfd >= 0 ? dfd : s->keys->fd;
    identity_hash hs[256];
    uint64_t ns[256];
    size_t nb = 0;
    ms_code rc = MS_OK;
    uint64_t stride = s->created / ST_SLOT_SAMPLES + 1;
    *c = (st_slot_counts){0};
    if (dfd < 0) (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    const off_t end = slot_off(s->patients);
    piece_read cur = {.fd = fd, .cached_fd = s->keys->fd, .buf = buf[0], .want = span, .off = 0}, next;
    piece_run(&cur);
    for (int side = 0;; side ^= 1) {
        if ((rc = cur.rc) != MS_OK) {
            *e = cur.err;
            break;
        }
        const off_t off = cur.off;
        bool more = off + (off_t)span < end, started = false;
        pthread_t t;
        if (more) {
            next = (piece_read){
                .fd = fd, .cached_fd = s->keys->fd, .buf = buf[side ^ 1], .want = span, .off = off + (off_t)span};
            started = pthread_create(&t, NULL, piece_run, &next) == 0;
        }
        size_t want = (size_t)(end - off < (off_t)span ? end - off : (off_t)span);
        memset(cur.buf + cur.got, 0, span - cur.got); /* slots never written: zeros */
        for (size_t at = off == 0 ? SLOT : 0; at < want; at += SLOT) {
            const unsigned char *slot = cur.buf + at;
            uint64_t n = (uint64_t)(off + (off_t)at) / SLOT - 1;
            if (slot[1] == SLOT_ERASED) {
                c->erased++;
            } else if (slot_hash_get(slot, &hs[nb])) {
                ns[nb] = n;
                if (c->hashed++ % stride == 0 && c->nsample < ST_SLOT_SAMPLES) {
                    c->sample[c->nsample] = ns[nb];
                    c->sample_hash[c->nsample++] = hs[nb];
                }
                if (++nb == 256) {
                    identity_index_put_many(ix, hs, ns, nb);
                    nb = 0;
                }
            }
        }
        if (!more) break;
        if (started)
            pthread_join(t, NULL);
        else
            piece_run(&next);
        cur = next;
    }
    identity_index_put_many(ix, hs, ns, nb);
    if (dfd >= 0)
        close(dfd);
    else
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_NORMAL);
    free(buf[0]);
    free(buf[1]);
    return rc;
}

/* ---- identity MACs and pending keys ---- */

void store_identity_mac(const store *s, const char *key, size_t len, unsigned char mac[32])
{
    prepared_hmac(&s->mac_key, key, len, mac);
}

static pending **find_pending(key_store *k, const unsigned char mac[32])
{
    pending **p = &k->bucket[(mac[0] | (unsigned)mac[1] << 8) % PENDING_BUCKETS];
    while (*p && memcmp((*p)->mac, mac, 32) != 0)
        p = &(*p)->next;
    return p;
}

ms_code store_data_key(store *s, const char *ikey, size_t len, unsigned char key[SEAL_KEY], ms_err *e)
{
    unsigned char mac[32];
    store_identity_mac(s, ikey, len, mac);
    ms_code rc = st_data_key_of(s, mac, key, e);
    OPENSSL_cleanse(mac, sizeof mac);
    return rc;
}

ms_code st_data_key_of(store *s, const unsigned char mac[32], unsigned char key[SEAL_KEY], ms_err *e)
{
    if (s->read_only) return ms_fail(e, MS_EINVAL, "store: the store is open read-only");
    key_store *k = s->keys;
    identity_hash h = identity_hash_of((const char *)mac, 32);
    pending *q = NULL;        /* a new key, made outside the lock (the generator may reseed from the kernel) */
    bool keyless = false;     /* the index's patient is from before data keys: it takes a new one ... */
    uint64_t keyless_gen = 0; /* ... unless a slot was written since it was found so (its key, bound meanwhile) */
    /* Pending first, the index second, and a new key made pending only under the same lock as both
     * lookups: the writer drops an identity's pending key after the commit that put it into its patient's
     * slot, and put the identity into the index before that commit, so one of the two always has it. (A
     * new key made pending after a lookup that found neither, without looking again, was a second key for
     * one identity when a commit of it fell in between: the record sealed under it was rejected, and the
     * key stayed pending for every later record of that patient.) A patient from before data keys is found
     * keyless outside the lock; a slot written since (k->gen: st_key_put, as its bind does) sends the
     * lookup back to the index. */
    for (;;) {
        uint64_t number;
        pthread_mutex_lock(&k->lock);
        pending **p = find_pending(k, mac);
        if (keyless && k->gen != keyless_gen) keyless = false; /* look again: it may have its key now */
        uint64_t gen = k->gen;
        bool have = *p != NULL, known = !have && !keyless && identity_index_get(s->identities, h, &number);
        if (!have && !known && q) {
            *p = q;
            q = NULL;
            have = true;
        }
        if (have) memcpy(key, (*p)->key, SEAL_KEY);
        pthread_mutex_unlock(&k->lock);
        ms_code rc = MS_OK;
        bool found = have;
        if (known && (rc = st_key_get(s, number, key, &found, e)) == MS_OK && !found) {
            keyless = true;
            keyless_gen = gen;
        }
        if (rc != MS_OK || found) {
            if (q) OPENSSL_cleanse(q, sizeof *q);
            free(q);
            return rc;
        }
        if (q) continue;
        q = ms_calloc(1, sizeof *q);
        memcpy(q->mac, mac, 32);
        if (RAND_bytes(q->key, SEAL_KEY) != 1) {
            free(q);
            return ms_fail(e, MS_EIO, "store: random number generator failed");
        }
    }
}

void st_key_pending_drop(store *s, const unsigned char mac[32])
{
    key_store *k = s->keys;
    pthread_mutex_lock(&k->lock);
    pending **p = find_pending(k, mac);
    if (*p) {
        pending *q = *p;
        *p = q->next;
        OPENSSL_cleanse(q, sizeof *q);
        free(q);
    }
    pthread_mutex_unlock(&k->lock);
}

bool st_key_pending_is(store *s, const unsigned char mac[32], const unsigned char key[32])
{
    key_store *k = s->keys;
    pthread_mutex_lock(&k->lock);
    pending **p = find_pending(k, mac);
    bool is = *p && CRYPTO_memcmp((*p)->key, key, SEAL_KEY) == 0;
    pthread_mutex_unlock(&k->lock);
    return is;
}

bool store_patient_key_gone(store *s, const patient_id *pid)
{
    uint64_t n;
    unsigned char key[SEAL_KEY];
    bool found = false;
    ms_err e;
    if (!store_patient_number(s, pid, &n)) return true;
    if (st_key_get(s, n, key, &found, &e) != MS_OK) return false;
    OPENSSL_cleanse(key, sizeof key);
    return !found;
}
