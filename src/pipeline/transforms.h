/*
 * transforms.h - the value transforms of the public copy (schema.h "public"), one pure function each:
 * year, zip3 (HIPAA Safe Harbor), age and age_band (whole years, 90+ collapsed), date_shift (a secret
 * per-patient offset in whole days) and pseudonym (keyed HMAC-SHA256), and the ONE derivation of the
 * secrets they use from the store's 32-byte deid key (store_deid_key) and a patient's identity key.
 *
 * Contract: pure functions over buffers (no I/O, no global state but the constant ZIP3 table compiled
 * from data/zip3_restricted.txt). Inputs are decoded values (a JSON string's contents); each function
 * answers false for a value it cannot transform, and the caller then leaves the field out: a value is
 * never published raw because a transform failed. Must never: return an input byte in a transformed
 * value except where the transform is defined to keep it (year digits, the first three ZIP digits, a
 * shifted time's time-of-day and offset), or derive a per-patient secret anywhere but tf_patient_keys.
 */
#ifndef MS_TRANSFORMS_H
#define MS_TRANSFORMS_H

#include "base/util.h"

#define TF_AGE_TOP 90          /* ages of 90 and more are published as "90+" (Safe Harbor) */
#define TF_PSEUDONYM_HEX 20    /* a pseudonym: the first 80 bits of the HMAC, in lowercase hex */
#define TF_DATE_SHIFT_MAX 3650 /* the largest max_days a schema may give date_shift */

/* The keys of the keyed transforms: a store-wide pseudonym key and, for one patient, its own pseudonym
 * key and the seed of its date shift. Plain data. */
typedef struct {
    unsigned char store_pseudonym[32];
    bool have_patient; /* false: no identity key was given (patient-scoped transforms are left out) */
    unsigned char patient_pseudonym[32];
    uint64_t shift_seed;
} tf_keys;

/* THE derivation of the transform secrets (issue 15): from the store's deid key (32 bytes) and the
 * patient's identity key (identity.h; NULL/0: none, have_patient false). Everything is HMAC-SHA256 under
 * deid_key: P = HMAC(deid_key, "patient" 0x00 identity_key); shift_seed = the first 8 bytes (big
 * endian) of HMAC(P, "date_shift"); patient_pseudonym = HMAC(P, "pseudonym"); store_pseudonym =
 * HMAC(deid_key, "pseudonym"). */
void tf_patient_keys(const unsigned char deid_key[32], const char *identity_key, size_t identity_key_len, tf_keys *out);

/* The patient's day offset for a range of max_days (1..TF_DATE_SHIFT_MAX): uniform over [-max_days, -1]
 * and [1, max_days] (never 0: a shifted date is never the true one). */
int tf_shift_days(uint64_t shift_seed, int max_days);

/* A date "YYYY-MM-DD" or an RFC 3339 time: its local calendar date (the date as written). */
bool tf_date_of(const char *s, size_t n, int *y, int *m, int *d);

/* "2026": the year of a date, or the UTC year of an RFC 3339 time. out holds 5 bytes. */
bool tf_year(const char *s, size_t n, char out[5]);

/* ZIP3: a 5-digit ZIP or ZIP+4 ("02139", "02139-4307", "021394307") -> its first three digits, or "000"
 * for a restricted area (data/zip3_restricted.txt). Anything else (short, not digits) is false. */
bool tf_zip3(const char *s, size_t n, char out[4]);
/* Is this 3-digit prefix one of the restricted areas? */
bool tf_zip3_restricted(const char p[3]);
/* The compiled table, for tests: its size and entries. */
int tf_zip3_restricted_count(void);
const char *tf_zip3_restricted_at(int i);

/* Whole years from the date (y, m, d) to the UTC date of event_us; -1 if the date is after it. A
 * 29 February birthday is reached on 1 March in a common year. */
int tf_age_years(int y, int m, int d, int64_t event_us);
/* The age of a date (tf_date_of) at event_us as text: "47", or "90+" from TF_AGE_TOP on. out holds 8. */
bool tf_age(const char *s, size_t n, int64_t event_us, char out[8]);
/* The band of width years (1..TF_AGE_TOP) the age falls in: "40-49" (width 10), "40-44" (width 5), a
 * band's top never above 89, "90+" from TF_AGE_TOP on. out holds 16. */
bool tf_age_band(const char *s, size_t n, int64_t event_us, int width, char out[16]);

/* A date or an RFC 3339 time moved by days whole days, appended to out (without quotes): the date part
 * is shifted on the calendar and everything after it (time of day, fraction, offset) is kept as written. */
bool tf_date_shift(const char *s, size_t n, int days, buf *out);

/* HMAC-SHA256(key, value), its first TF_PSEUDONYM_HEX hex digits, NUL-terminated. */
void tf_pseudonym(const unsigned char key[32], const char *s, size_t n, char out[TF_PSEUDONYM_HEX + 1]);

#endif
