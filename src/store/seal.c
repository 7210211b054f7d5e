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
 * keys), each with the key it was last given; a call with that key sets only the IV (gcm_begin, ctr_begin). The
 * writer opens a patient's newest version and seals the next under one key, one after the other; making a
 * patient, it seals its identity under the patient's key, wraps that key under the store's, then seals its
 * first version under the patient's key again: one key set, not three. A context held a key's schedule
 * before this too: a data key of an erased patient can stay in a thread's memory until the thread's next
 * call with another data key, never on the disk.
 *
 * AES-256-GCM itself is Intel's ipsec-mb (libipsec-mb-dev, Debian's intel-ipsec-mb 1.3: the IPsec and
 * storage-encryption library of the field), through its direct GCM calls: it picks the widest code for the
 * CPU at init (VAES and VPCLMULQDQ on AVX-512), where OpenSSL 3.0 (Debian 12) stops at AES-NI with AVX2.
 * Measured on this machine, one core: a 20 KB body 2.2 against 8.2 us, 300 B 80 ns, a key's schedule and
 * hash powers 185 ns (`make bench-seal` for the store's own calls). The output is the same standard GCM
 * (test_seal checks known answers and opens what OpenSSL seals), so stores written before open unchanged.
 * A range of a sealed body is still decrypted as AES-256-CTR by OpenSSL (seal_open_range).
 */
#include "store/seal.h"

#include <intel-ipsec-mb.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static EVP_CIPHER *g_ctr;
static IMB_MGR *g_mb; /* read only after fetch(): the direct GCM calls keep their state in the caller's structs */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_ctx; /* each thread's cipher (seal_thread), reused from call to call */

/* A thread's GCM key (ipsec-mb's key schedule and hash powers) and its CTR context (OpenSSL), each with the
 * key it holds. Setting a key was half the cost of sealing 300 bytes with OpenSSL (790-1,109 against
 * 364-481 ns); ipsec-mb's is 185 ns, still more than a 300 B seal (80 ns). */
typedef struct {
    _Alignas(64) struct gcm_key_data gcm;
    bool gcm_held; /* gcm holds gcm_key (false: none yet, or it is being set) */
    unsigned char gcm_key[SEAL_KEY];
    EVP_CIPHER_CTX *ctr;
    bool ctr_held;
    unsigned char ctr_key[SEAL_KEY];
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
    for (int i = 0; i < CIPHER_SLOTS; i++)
        EVP_CIPHER_CTX_free(t->slot[i].ctr);
    OPENSSL_cleanse(t, sizeof *t); /* keys and key schedules */
    free(t);
}

static void fetch(void)
{
    g_ctr = EVP_CIPHER_fetch(NULL, "AES-256-CTR", NULL);
    IMB_ARCH arch;
    if ((g_mb = alloc_mb_mgr(0)) != NULL) {
        init_mb_mgr_auto(g_mb, &arch);
        if (imb_get_errno(g_mb) != 0) free_mb_mgr(g_mb), g_mb = NULL; /* every seal then fails, saying so */
    }
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
    size_t size = (sizeof *t + 63) & ~(size_t)63;
    if (!(t = aligned_alloc(64, size))) return NULL;
    memset(t, 0, size);
    bool ok = true;
    for (int i = 0; i < CIPHER_SLOTS; i++)
        ok = ok && (t->slot[i].ctr = EVP_CIPHER_CTX_new()) != NULL;
    if (!ok || pthread_setspecific(g_ctx, t) != 0) {
        free_thread(t);
        return NULL;
    }
    return t;
}

/* This thread's slot `which` (SLOT_DATA, SLOT_WRAP) with key set for GCM; NULL on failure. The key is set
 * only when it is not the one the slot holds. */
static cipher_slot *gcm_begin(int which, const unsigned char *key)
{
    seal_thread *t = thread_cipher(); /* first: the library is set up then */
    if (!t || !g_mb) return NULL;
    cipher_slot *s = &t->slot[which];
    if (!s->gcm_held || CRYPTO_memcmp(s->gcm_key, key, SEAL_KEY) != 0) {
        IMB_AES256_GCM_PRE(g_mb, key, &s->gcm);
        memcpy(s->gcm_key, key, SEAL_KEY);
        s->gcm_held = true;
    }
    return s;
}

/* This thread's slot `which` with its CTR context initialised for key and the counter block iv; NULL on
 * failure. */
static cipher_slot *ctr_begin(int which, const unsigned char *key, const unsigned char *iv)
{
    seal_thread *t = thread_cipher();
    if (!t || !g_ctr) return NULL;
    cipher_slot *s = &t->slot[which];
    bool held = s->ctr_held && CRYPTO_memcmp(s->ctr_key, key, SEAL_KEY) == 0;
    s->ctr_held = false; /* until the context holds this key */
    if (EVP_CipherInit_ex2(s->ctr, held ? NULL : g_ctr, held ? NULL : key, iv, 0, NULL) != 1) return NULL;
    if (!held) memcpy(s->ctr_key, key, SEAL_KEY);
    s->ctr_held = true;
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
    cipher_slot *s = gcm_begin(which, key);
    if (!s) return false;
    struct gcm_context_data ctx;
    if (enc) {
        IMB_AES256_GCM_ENC(g_mb, &s->gcm, &ctx, out, in, len, iv, NULL, 0, tag, SEAL_TAG);
        return true;
    }
    unsigned char want[SEAL_TAG];
    IMB_AES256_GCM_DEC(g_mb, &s->gcm, &ctx, out, in, len, iv, NULL, 0, want, SEAL_TAG);
    if (CRYPTO_memcmp(want, tag, SEAL_TAG) == 0) return true;
    OPENSSL_cleanse(out, len); /* nothing of a text that failed its tag leaves here */
    return false;
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
    cipher_slot *s = ctr_begin(SLOT_DATA, key, ctr);
    EVP_CIPHER_CTX *c = s ? s->ctr : NULL;
    int n = 0, ok = c != NULL;
    if (ok && skip) ok = EVP_CipherUpdate(c, scratch, &n, in, (int)skip) == 1; /* the block's head: not wanted */
    if (ok && len) ok = EVP_CipherUpdate(c, out, &n, in + skip, (int)len) == 1;
    if (!ok && s) s->ctr_held = false; /* the next call sets the key again, whatever state this one left */
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
