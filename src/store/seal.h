/*
 * seal.h - encryption at rest of what the store keeps about one patient: AES-256-GCM under the patient's
 * data key (DESIGN.md "Erasure": destroying the key is what makes the patient's bytes unreadable).
 *
 * A sealed record body in the segment log is laid out
 *
 *     [IV: 12 bytes][ciphertext: exactly as long as the plaintext][GCM tag: 16 bytes]
 *
 * and the store's positions point at the ciphertext: plaintext byte i is ciphertext byte i, so a value at
 * offset o of a record still lies at (body position + o), as before sealing. The IV is a random 8-byte
 * prefix drawn per batch and a 4-byte counter (seal_iv), so a key never meets the same IV twice (2^-64
 * per pair of batches of one patient); a patient version's or an identity's IV is a thread's random prefix
 * and its counter (seal_iv_fresh), the same 2^-64 per pair of prefixes. A whole record is opened with GCM and its tag
 * checked; a single value inside it (a field of a patient's state) is opened with AES-256-CTR at the GCM counter of its
 * block, which yields the same bytes without reading the whole record; the caller checks those bytes
 * against the XXH3 hash it stored with the reference (corruption), as for plaintext.
 *
 * Data keys are wrapped (AES-256-GCM, IV from the slot number) under the store's wrap key before they
 * touch the disk (keys.c).
 *
 * Contract: pure functions over buffers, thread-safe (the ciphers are fetched once, seal_init, at start);
 * errors are false, never a message with key or plaintext bytes. Must never: log, allocate on the heap
 * per call beyond OpenSSL's context, reuse an IV under one key.
 */
#ifndef MS_SEAL_H
#define MS_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SEAL_KEY 32
#define SEAL_IV 12
#define SEAL_TAG 16
#define SEAL_OVERHEAD (SEAL_IV + SEAL_TAG)
#define SEAL_WRAPPED (SEAL_KEY + SEAL_TAG) /* a wrapped data key: ciphertext + tag */

/* Fetch the ciphers once (idempotent, thread-safe). */
void seal_init(void);

/* A fresh IV: 8 random bytes for a batch (prefix) and the item's number in it. */
void seal_iv(const unsigned char prefix[8], uint32_t n, unsigned char iv[SEAL_IV]);
/* A fresh IV for one item, never made twice by this process: this thread's random 8-byte prefix (drawn at
 * its first call, again after 2^32 - 1 IVs and in a forked child) and its count of IVs under it. False
 * when the random generator failed. */
bool seal_iv_fresh(unsigned char iv[SEAL_IV]);

/* Encrypt len bytes of in into out as the layout above: out must hold len + SEAL_OVERHEAD bytes. */
bool seal_record(const unsigned char key[SEAL_KEY], const unsigned char iv[SEAL_IV], const void *in, size_t len,
                 unsigned char *out);
/* Open a sealed record (len: the plaintext length; in holds len + SEAL_OVERHEAD bytes) into out (len
 * bytes). False when the tag does not verify (wrong key, corrupted bytes). */
bool seal_open_record(const unsigned char key[SEAL_KEY], const unsigned char *in, size_t len, unsigned char *out);
/* Decrypt len bytes at plaintext offset off of a record sealed under key with iv. in holds the ciphertext
 * from the start of off's 16-byte block (off rounded down to 16) to off + len. No tag is checked. */
bool seal_open_range(const unsigned char key[SEAL_KEY], const unsigned char iv[SEAL_IV], uint64_t off,
                     const unsigned char *in, size_t len, unsigned char *out);

/* Wrap and unwrap a data key under the store's wrap key; the slot number makes the IV (a slot is written
 * once). unwrap is false when the tag does not verify. */
bool seal_wrap(const unsigned char wrap_key[SEAL_KEY], uint64_t slot, const unsigned char key[SEAL_KEY],
               unsigned char out[SEAL_WRAPPED]);
bool seal_unwrap(const unsigned char wrap_key[SEAL_KEY], uint64_t slot, const unsigned char in[SEAL_WRAPPED],
                 unsigned char key[SEAL_KEY]);

#endif
