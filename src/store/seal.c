/*
 * seal.c - AES-256-GCM sealing of record bodies and data keys (see seal.h for the layout and contract).
 *
 * DESIGN: OpenSSL 3 looks an algorithm up under a lock when a context is initialised with the legacy
 * EVP_aes_256_gcm() object; the ciphers are fetched once (EVP_CIPHER_fetch) and every call reuses them,
 * the same lesson as the patient-id HMAC (identity.c); and each thread keeps one cipher context (a
 * pthread key frees it when the thread ends) instead of allocating one per call. A single item's IV
 * (seal_iv_fresh: a patient version, an identity) comes from a per-thread random prefix and a counter, not
 * a call to the random generator each: that call cost the writer ~4 % of its time at 200 B records.
 * A thread keeps two contexts, one for the store's key (seal_wrap, seal_unwrap) and one for the rest (data
 * keys), each with the key it was last given; a call with that key sets only the IV (cipher_begin). The
 * writer opens a patient's newest version and seals the next under one key, one after the other; making a
 * patient, it seals its identity under the patient's key, wraps that key under the store's, then seals its
 * first version under the patient's key again: one key set, not three. A context held a key's schedule
 * before this too: a data key of an erased patient can stay in a thread's memory until the thread's next
 * call with another data key, never on the disk.
 */
#include "store/seal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static EVP_CIPHER *g_gcm, *g_ctr;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_ctx; /* each thread's cipher (seal_thread), reused from call to call */

/* A cipher context and the cipher and key it holds. Setting a key (AES's key schedule, GCM's hash tables)
 * was half the cost of sealing 300 bytes (790-1,109 against 364-481 ns, OpenSSL 3.0 here). */
typedef struct {
    EVP_CIPHER_CTX *c;
    const EVP_CIPHER *cipher; /* NULL: no key held (none yet, or the last call with it failed) */
    unsigned char key[SEAL_KEY];
} cipher_slot;

/* A thread's contexts: for data keys, and for the store's key that wraps them. */
enum { SLOT_DATA, SLOT_WRAP, CIPHER_SLOTS };
typedef struct {
    cipher_slot slot[CIPHER_SLOTS];
} seal_thread;

/* seal_iv_fresh's state, per thread: a random prefix and how many IVs were made under it. A fork's child
 * inherits its parent's; the generation (bumped in the child by pthread_atfork) makes it draw its own. */
static atomic_uint g_generation;
static _Thread_local struct {
    unsigned char prefix[8];
    uint32_t next;
    bool drawn;
    unsigned generation;
} t_iv;

static void forked(void) { atomic_fetch_add(&g_generation, 1); }

static void free_thread(void *p)
{
    seal_thread *t = p;
    for (int i = 0; i < CIPHER_SLOTS; i++) {
        EVP_CIPHER_CTX_free(t->slot[i].c);
        OPENSSL_cleanse(t->slot[i].key, sizeof t->slot[i].key);
    }
    free(t);
}

static void fetch(void)
{
    g_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    g_ctr = EVP_CIPHER_fetch(NULL, "AES-256-CTR", NULL);
    pthread_key_create(&g_ctx, free_thread);
    pthread_atfork(NULL, NULL, forked);
}

void seal_init(void) { pthread_once(&g_once, fetch); }

/* This thread's contexts (made at its first call, freed when the thread ends); NULL when out of memory. */
static seal_thread *thread_cipher(void)
{
    seal_init();
    seal_thread *t = pthread_getspecific(g_ctx);
    if (t) return t;
    if (!(t = calloc(1, sizeof *t))) return NULL;
    bool ok = true;
    for (int i = 0; i < CIPHER_SLOTS; i++)
        ok = ok && (t->slot[i].c = EVP_CIPHER_CTX_new()) != NULL;
    if (!ok || pthread_setspecific(g_ctx, t) != 0) {
        free_thread(t);
        return NULL;
    }
    return t;
}

/* After a failed call: the next one with this slot's key sets it again, whatever state this one left. */
static void cipher_forget(cipher_slot *s) { s->cipher = NULL; }

/* This thread's context `which` (SLOT_DATA, SLOT_WRAP), initialised for AES-256-GCM (or CTR: ctr), key and iv
 * in direction enc; NULL on failure. The key is set only when it is not the one the context holds. */
static cipher_slot *cipher_begin(int which, bool ctr, const unsigned char *key, const unsigned char *iv, bool enc)
{
    seal_thread *t = thread_cipher(); /* first: the ciphers are fetched then */
    const EVP_CIPHER *cipher = ctr ? g_ctr : g_gcm;
    if (!t || !cipher) return NULL;
    cipher_slot *s = &t->slot[which];
    bool held = s->cipher == cipher && CRYPTO_memcmp(s->key, key, SEAL_KEY) == 0;
    s->cipher = NULL; /* until the context holds this key */
    if (EVP_CipherInit_ex2(s->c, held ? NULL : cipher, held ? NULL : key, iv, enc ? 1 : 0, NULL) != 1) return NULL;
    if (!held) memcpy(s->key, key, SEAL_KEY);
    s->cipher = cipher;
    return s;
}

static void put_be32(unsigned char *p, uint32_t x)
{
    p[0] = (unsigned char)(x >> 24);
    p[1] = (unsigned char)(x >> 16);
    p[2] = (unsigned char)(x >> 8);
    p[3] = (unsigned char)x;
}

void seal_iv(const unsigned char prefix[8], uint32_t n, unsigned char iv[SEAL_IV])
{
    memcpy(iv, prefix, 8);
    put_be32(iv + 8, n);
}

bool seal_iv_fresh(unsigned char iv[SEAL_IV])
{
    seal_init();
    unsigned gen = atomic_load_explicit(&g_generation, memory_order_relaxed);
    if (!t_iv.drawn || t_iv.next == UINT32_MAX || t_iv.generation != gen) {
        if (RAND_bytes(t_iv.prefix, sizeof t_iv.prefix) != 1) return false;
        t_iv.next = 0;
        t_iv.drawn = true;
        t_iv.generation = gen;
    }
    seal_iv(t_iv.prefix, t_iv.next++, iv);
    return true;
}

/* GCM encrypt (enc) or decrypt-and-verify of len bytes with a 12-byte IV; tag written or checked; in this
 * thread's context which. */
static bool gcm(int which, bool enc, const unsigned char *key, const unsigned char *iv, const unsigned char *in,
                size_t len, unsigned char *out, unsigned char *tag)
{
    if (len > INT32_MAX) return false;
    cipher_slot *s = cipher_begin(which, false, key, iv, enc);
    EVP_CIPHER_CTX *c = s ? s->c : NULL;
    int n = 0, ok = c != NULL;
    if (ok && len) ok = EVP_CipherUpdate(c, out, &n, in, (int)len) == 1;
    if (ok && !enc) ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, SEAL_TAG, tag) == 1;
    if (ok) ok = EVP_CipherFinal_ex(c, out + n, &n) == 1;
    if (ok && enc) ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, SEAL_TAG, tag) == 1;
    if (!ok && s) cipher_forget(s);
    if (!ok && !enc) OPENSSL_cleanse(out, len); /* OpenSSL wrote the text before the tag failed: none of it leaves */
    return ok;
}

bool seal_record(const unsigned char key[SEAL_KEY], const unsigned char iv[SEAL_IV], const void *in, size_t len,
                 unsigned char *out)
{
    memcpy(out, iv, SEAL_IV);
    return gcm(SLOT_DATA, true, key, iv, in, len, out + SEAL_IV, out + SEAL_IV + len);
}

bool seal_open_record(const unsigned char key[SEAL_KEY], const unsigned char *in, size_t len, unsigned char *out)
{
    unsigned char tag[SEAL_TAG];
    memcpy(tag, in + SEAL_IV + len, SEAL_TAG);
    return gcm(SLOT_DATA, false, key, in, in + SEAL_IV, len, out, tag);
}

bool seal_open_range(const unsigned char key[SEAL_KEY], const unsigned char iv[SEAL_IV], uint64_t off,
                     const unsigned char *in, size_t len, unsigned char *out)
{
    /* GCM with a 96-bit IV encrypts plaintext block j with the counter block IV || be32(2 + j) */
    uint64_t block = off / 16;
    size_t skip = (size_t)(off % 16);
    if (block + 2 > UINT32_MAX || len > INT32_MAX - 32) return false;
    unsigned char ctr[16], scratch[16];
    memcpy(ctr, iv, SEAL_IV);
    put_be32(ctr + 12, (uint32_t)(block + 2));
    cipher_slot *s = cipher_begin(SLOT_DATA, true, key, ctr, false);
    EVP_CIPHER_CTX *c = s ? s->c : NULL;
    int n = 0, ok = c != NULL;
    if (ok && skip) ok = EVP_CipherUpdate(c, scratch, &n, in, (int)skip) == 1; /* the block's head: not wanted */
    if (ok && len) ok = EVP_CipherUpdate(c, out, &n, in + skip, (int)len) == 1;
    if (!ok && s) cipher_forget(s);
    return ok;
}

static void wrap_iv(uint64_t slot, unsigned char iv[SEAL_IV])
{
    for (int i = 0; i < 8; i++)
        iv[i] = (unsigned char)(slot >> (56 - 8 * i));
    memcpy(iv + 8, "wrap", 4);
}

bool seal_wrap(const unsigned char wrap_key[SEAL_KEY], uint64_t slot, const unsigned char key[SEAL_KEY],
               unsigned char out[SEAL_WRAPPED])
{
    unsigned char iv[SEAL_IV];
    wrap_iv(slot, iv);
    return gcm(SLOT_WRAP, true, wrap_key, iv, key, SEAL_KEY, out, out + SEAL_KEY);
}

bool seal_unwrap(const unsigned char wrap_key[SEAL_KEY], uint64_t slot, const unsigned char in[SEAL_WRAPPED],
                 unsigned char key[SEAL_KEY])
{
    unsigned char iv[SEAL_IV], tag[SEAL_TAG];
    wrap_iv(slot, iv);
    memcpy(tag, in + SEAL_KEY, SEAL_TAG);
    return gcm(SLOT_WRAP, false, wrap_key, iv, in, SEAL_KEY, key, tag);
}
