/*
 * identity.h - who a record is about: name normalization, the identity key, and patient ids.
 *
 * A patient is identified by name + date of birth alone (DESIGN.md). Names compare after Unicode
 * normalization: NFKC, case-folded, default-ignorable code points removed, trimmed, inner whitespace
 * collapsed to one space. The identity key is `normalized name NUL YYYY-MM-DD`: exact, never hashed, so
 * two identities can never collide. Patient ids are random UUIDs (version 4, from the OpenSSL CSPRNG):
 * never derived from name or DOB, unguessable, and stable because the index stores them.
 *
 * Contract: pure functions except patient_id_new (randomness). Error texts never contain the name.
 */
#ifndef MS_IDENTITY_H
#define MS_IDENTITY_H

#include "util.h"

#define IDENTITY_NAME_MAX 256 /* bytes of normalized name */
#define IDENTITY_KEY_MAX (IDENTITY_NAME_MAX + 1 + 10)

/* Normalize a decoded UTF-8 name. out must hold IDENTITY_NAME_MAX bytes. Returns the normalized length,
 * or -1 with *why set to a static reason ("is empty", "is too long", "contains a control character",
 * "is not valid Unicode"). */
int identity_normalize_name(const char *name, size_t len, char *out, const char **why);

/* Build the identity key into out (IDENTITY_KEY_MAX bytes); returns its length. */
size_t identity_key(const char *norm_name, size_t name_len, int y, int m, int d, char *out);

typedef struct {
    unsigned char b[16];
} patient_id;

#define PATIENT_ID_TEXT 37 /* 36 chars + NUL */

ms_code patient_id_new(patient_id *id, ms_err *e);
void patient_id_format(const patient_id *id, char out[PATIENT_ID_TEXT]);
/* Parse the canonical lowercase or uppercase 8-4-4-4-12 form. */
bool patient_id_parse(const char *s, size_t n, patient_id *id);

#endif
