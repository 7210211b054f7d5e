/*
 * keys.c - the patients' data keys (DESIGN.md "Erasure"): one key per patient, in a file of fixed slots
 * beside LMDB, so that erasing a patient can overwrite its key in place.
 *
 * DESIGN: LMDB never overwrites a page in place (copy-on-write; freed pages keep their bytes until they
 * are reused), so a key deleted from LMDB would survive in the file. DIR/keys is a plain file of 64-byte
 * slots, slot n for patient number n after a 64-byte header: [1 live][7 zero][data key wrapped under the
 * store's wrap key: 48][8 zero]. Erasure overwrites the slot with zeros and fdatasyncs the file; without
 * the key, the patient's sealed bodies (seal.h) and sealed identity key are noise.
 *
 * A body is sealed by its source's thread before the writer has decided which patient it is about (ingest.h
 * step 2 precedes the writer's identity resolution), so a new identity's key is made then and kept only
 * in memory ("pending", by the identity's MAC) until the writer creates the patient, writes the key into
 * its slot (synced before the LMDB commit, invariant 2's order) and, after the commit, drops the pending
 * entry. store_data_key looks up pending first and the identity index second under one lock, and the writer
 * drops pending entries only after its commit, so two batches of one new identity share one key. A body
 * sealed under a key that is not its patient's when the writer comes to it (the patient was erased
 * meanwhile) is rejected (the source sends it again). A pending key whose batch failed is never on disk.
 *
 * At open, slots past the patient count (a key written by a commit that did not complete) and slots of
 * erased patients (a crash between the erasure's commit and the overwrite) are overwritten.
 *
 * Unwrapped keys of recent patients are cached in memory (CACHE_SLOTS, direct-mapped); every slot write
 * updates the cache after the file and bumps a generation, so that a read that fetched a slot before the
 * write cannot put an old key (an erased one) back.
 *
 * Contract: store.h ("Data keys"); internal calls st_key_* (store_internal.h). Must never: write a key
 * unwrapped, leave an erased patient's key on disk after st_keys_sweep or in the cache after
 * st_key_destroy, hold the lock across I/O.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"
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
#include <unistd.h>

#define SLOT 64
#define HEADER "medstream keys 1\n"
#define PENDING_BUCKETS 1024

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
    uint64_t gen; /* bumped by every slot write: a fill read before one must not enter the cache */
} key_store;

static off_t slot_off(uint64_t n) { return (off_t)((n + 1) * SLOT); }

ms_code st_keys_open(store *s, ms_err *e)
{
    seal_init();
    key_store *k = ms_calloc(1, sizeof *k);
    k->cache = ms_calloc(CACHE_SLOTS, sizeof *k->cache);
    pthread_mutex_init(&k->lock, NULL);
    unsigned int n = 0;
    HMAC(EVP_sha256(), s->id_key, 32, (const unsigned char *)"key-wrap", 8, k->wrap, &n);
    char path[4096];
    snprintf(path, sizeof path, "%s/keys", s->dir);
    k->fd = open(path, (s->read_only ? O_RDONLY : O_RDWR | O_CREAT) | O_CLOEXEC, 0600);
    s->keys = k;
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
    pthread_mutex_unlock(&k->lock);
    if (*found) return MS_OK;
    ssize_t got = pread(k->fd, slot, SLOT, slot_off(n));
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

ms_code st_key_put(store *s, uint64_t n, const unsigned char key[SEAL_KEY], ms_err *e)
{
    unsigned char slot[SLOT] = {1};
    if (!seal_wrap(s->keys->wrap, n, key, slot + 8)) return ms_fail(e, MS_EIO, "store: wrapping a data key failed");
    if (pwrite(s->keys->fd, slot, SLOT, slot_off(n)) != SLOT)
        return ms_fail(e, errno == ENOSPC ? MS_EFULL : MS_EIO, "store: writing a data key: %s",
                       errno == ENOSPC ? "disk full" : strerror(errno));
    s->keys->dirty = true;
    cache_set(s->keys, n, key); /* after the write: a read from now on finds this key either way */
    return MS_OK;
}

ms_code st_keys_sync(store *s, ms_err *e)
{
    if (!s->keys->dirty) return MS_OK;
    if (fdatasync(s->keys->fd) != 0) return ms_fail(e, MS_EIO, "store: syncing the key file: %s", strerror(errno));
    s->keys->dirty = false;
    return MS_OK;
}

ms_code st_key_destroy(store *s, uint64_t n, ms_err *e)
{
    unsigned char zero[SLOT] = {0};
    bool ok = pwrite(s->keys->fd, zero, SLOT, slot_off(n)) == SLOT;
    cache_set(s->keys, n, NULL); /* after the overwrite: a fill that read the key before it never enters */
    if (!ok || fdatasync(s->keys->fd) != 0)
        return ms_fail(e, MS_EIO, "store: overwriting a data key: %s", strerror(errno));
    return MS_OK;
}

ms_code st_keys_sweep(store *s, const uint64_t *erased, size_t nerased, ms_err *e)
{
    if (s->read_only) return MS_OK;
    for (size_t i = 0; i < nerased; i++) {
        bool live;
        unsigned char key[SEAL_KEY];
        ms_code rc = st_key_get(s, erased[i], key, &live, e);
        OPENSSL_cleanse(key, sizeof key);
        if (rc == MS_OK && live) rc = st_key_destroy(s, erased[i], e);
        if (rc != MS_OK) return rc;
    }
    /* keys past the last patient number belong to commits that never completed: cut them off */
    struct stat st;
    if (fstat(s->keys->fd, &st) == 0 && st.st_size > slot_off(s->patients)) {
        off_t from = slot_off(s->patients);
        size_t len = (size_t)(st.st_size - from);
        unsigned char *zero = ms_calloc(1, len);
        bool ok = pwrite(s->keys->fd, zero, len, from) == (ssize_t)len && ftruncate(s->keys->fd, from) == 0 &&
                  fdatasync(s->keys->fd) == 0;
        free(zero);
        if (!ok) return ms_fail(e, MS_EIO, "store: cutting the key file: %s", strerror(errno));
    }
    return MS_OK;
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
    ms_code rc = MS_OK;
    uint64_t number;
    bool found = false, known;
    /* pending first: the writer drops an identity's pending key only after the commit that put it into its
     * patient's slot, so an identity without one that the index knows is a committed patient */
    pthread_mutex_lock(&k->lock);
    pending **p = find_pending(k, mac);
    if (*p) memcpy(key, (*p)->key, SEAL_KEY);
    found = *p != NULL;
    known = !found && identity_index_get(s->identities, identity_hash_of((const char *)mac, 32), &number);
    pthread_mutex_unlock(&k->lock);
    if (known) rc = st_key_get(s, number, key, &found, e); /* a patient from before keys has none: made below */
    if (rc == MS_OK && !found) {
        pthread_mutex_lock(&k->lock);
        p = find_pending(k, mac); /* another source may have made it meanwhile */
        if (*p) {
            memcpy(key, (*p)->key, SEAL_KEY);
        } else {
            pending *q = ms_calloc(1, sizeof *q);
            memcpy(q->mac, mac, 32);
            if (RAND_bytes(q->key, SEAL_KEY) != 1) {
                free(q);
                rc = ms_fail(e, MS_EIO, "store: random number generator failed");
            } else {
                memcpy(key, q->key, SEAL_KEY);
                *p = q;
            }
        }
        pthread_mutex_unlock(&k->lock);
    }
    return rc;
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
