/*
 * identity.h - who a record is about: name normalization, the identity key, and patient ids.
 *
 * A patient is identified by name + date of birth alone (DESIGN.md). Names compare after Unicode
 * normalization: NFKC, case-folded, default-ignorable code points removed, trimmed, inner whitespace
 * collapsed to one space. The identity key is `normalized name NUL YYYY-MM-DD`: exact, never hashed, so
 * two identities can never collide.
 *
 * Patient ids look like random version-4 UUIDs and are unguessable, but they are not drawn at random:
 * each is a keyed pseudorandom permutation (a 4-round Feistel network over the UUID's 122 free bits,
 * HMAC-SHA256 rounds, under a 256-bit secret of the store) of the patient's internal number, 0, 1, 2, ...
 * in order of creation. Without the secret an id reveals nothing (not the number, not the order, never
 * the name or DOB); with it, the store turns an id back into the number that keys the patient's data,
 * so that new patients are appended to LMDB's trees instead of inserted at random places (at 10 million
 * patients, random inserts rewrote a page per patient per tree per commit). Ids are stable because the
 * number and the secret never change.
 *
 * Contract: pure functions. Error texts never contain the name. Stage 2 of the pipeline (identity_of_record
 * runs on what stage 1, record_scan.h, produced).
 */
#ifndef MS_IDENTITY_H
#define MS_IDENTITY_H

#include "base/util.h"
#include "pipeline/record_scan.h"
#include "pipeline/schema.h"

#define IDENTITY_NAME_MAX 256 /* bytes of normalized name */
#define IDENTITY_KEY_MAX (IDENTITY_NAME_MAX + 1 + 10)

/* Normalize a decoded UTF-8 name. out must hold IDENTITY_NAME_MAX bytes. Returns the normalized length,
 * or -1 with *why set to a static reason ("is empty", "is too long", "contains a control character",
 * "is not valid Unicode"). */
int identity_normalize_name(const char *name, size_t len, char *out, const char **why);
/* The same, always through utf8proc_map: identity_normalize_name takes a shorter path for ASCII names, and
 * this is the reference its unit test holds that path to. */
int identity_normalize_name_unicode(const char *name, size_t len, char *out, const char **why);

/* Build the identity key into out (IDENTITY_KEY_MAX bytes); returns its length. */
size_t identity_key(const char *norm_name, size_t name_len, int y, int m, int d, char *out);

/* Stage 2 on a scanned record: the identity fields of schema s (name: a string that normalizes; dob: a
 * real YYYY-MM-DD date, not before 1850, not after the day of now_us) give r->identity_key (in mem); or r
 * is rejected with a message naming the field and the problem (never its value). */
void identity_of_record(const schema *s, int64_t now_us, parsed_record *r, arena *mem);

typedef struct {
    unsigned char b[16];
} patient_id;

#define PATIENT_ID_TEXT 37 /* 36 chars + NUL */

#define PATIENT_ID_KEY 32
/* A patient-id key made ready (patient_id_key_init): the HMAC-SHA256 states after its inner and outer key
 * blocks, so that an id costs eight SHA-256 compressions and no key set-up, allocation or lock. Plain
 * data: copy it, share it between threads, drop it without a free. */
typedef struct {
    _Alignas(16) unsigned char state[2][128];
} patient_id_key;
void patient_id_key_init(patient_id_key *k, const unsigned char raw[PATIENT_ID_KEY]);
/* HMAC-SHA256(key, msg) with a prepared key (any 32-byte key made ready by patient_id_key_init: the
 * store's identity MACs use it too). */
void prepared_hmac(const patient_id_key *key, const void *msg, size_t n, unsigned char out[32]);
/* The id of patient number n under key (v4 UUID layout). Ids never change: they are a 4-round Feistel
 * permutation of n whose round function is HMAC-SHA256(key, round || n) (test_identity.c holds known
 * answers). */
void patient_id_from_number(const patient_id_key *key, uint64_t n, patient_id *id);
/* The number behind an id; false if no number maps to it (a made-up or mistyped id, or one of another
 * store): only about 1 in 2^58 of all UUIDs decodes to a number at all. */
bool patient_id_to_number(const patient_id_key *key, const patient_id *id, uint64_t *n);
void patient_id_format(const patient_id *id, char out[PATIENT_ID_TEXT]);
/* Parse the canonical lowercase or uppercase 8-4-4-4-12 form. */
bool patient_id_parse(const char *s, size_t n, patient_id *id);

#endif
