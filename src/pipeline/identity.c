/*
 * identity.c - name normalization with utf8proc, identity keys, patient ids (see identity.h).
 *
 * The patient-id HMAC is computed from SHA-256 states prepared once per key (RFC 2104: H((K ^ opad) ||
 * H((K ^ ipad) || m)), K zero-padded to the 64-byte block), with OpenSSL's SHA256_* functions: they keep
 * their state in a plain struct that can be copied, which the EVP interface cannot do without an
 * allocation. OpenSSL 3 marks them deprecated, not removed; OPENSSL_SUPPRESS_DEPRECATED is set for this
 * file only. The one-shot HMAC() it replaces fetched the algorithm under a lock on every call, four
 * times an id (a sixth of an export's time went there).
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "pipeline/identity.h"

#include "base/timefmt.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* What utf8proc_map (NFKC, case folded, default-ignorables dropped) gives an ASCII name: no ASCII code point
 * decomposes, composes or is ignorable, and case folding lowers A-Z alone. False (out untouched past the
 * first non-ASCII byte) when a byte is not ASCII. test_identity checks every ASCII byte and random ASCII
 * names against the utf8proc path (identity_normalize_name_unicode). */
static bool ascii_folded(const char *name, size_t len, utf8proc_uint8_t *out)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c & 0x80) return false;
        out[i] = (utf8proc_uint8_t)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
    return true;
}

static int normalize(const char *name, size_t len, char *out, const char **why, bool ascii_path)
{
    /* an ASCII name within this buffer skips utf8proc_map (most names: it was ~1.3 us of a request thread's
     * time a record at 20 KB, 2.3 % of the server's samples in `perf record`) */
    utf8proc_uint8_t folded[2 * IDENTITY_NAME_MAX];
    utf8proc_uint8_t *mapped = NULL;
    utf8proc_ssize_t n;
    if (ascii_path && len <= sizeof folded && ascii_folded(name, len, folded)) {
        mapped = folded;
        n = (utf8proc_ssize_t)len;
    } else {
        n = utf8proc_map((const utf8proc_uint8_t *)name, (utf8proc_ssize_t)len, &mapped,
                         UTF8PROC_STABLE | UTF8PROC_COMPAT | UTF8PROC_COMPOSE | UTF8PROC_CASEFOLD | UTF8PROC_IGNORE);
        if (n < 0) {
            *why = "is not valid Unicode";
            return -1;
        }
    }
    int o = 0, rc = 0;
    bool pending_space = false;
    for (utf8proc_ssize_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(mapped + i, n - i, &cp);
        if (k <= 0) {
            *why = "is not valid Unicode";
            rc = -1;
            break;
        }
        utf8proc_category_t cat = utf8proc_category(cp);
        /* every kind of space or line break (ASCII, NEL, U+2028/2029, ...) is one separator */
        if (cp == '\t' || cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || cp == 0x85 ||
            cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP) {
            pending_space = o > 0;
            i += k;
            continue;
        }
        if (cat == UTF8PROC_CATEGORY_CC) {
            *why = "contains a control character";
            rc = -1;
            break;
        }
        if (o + (pending_space ? 1 : 0) + (int)k > IDENTITY_NAME_MAX) {
            *why = "is too long";
            rc = -1;
            break;
        }
        if (pending_space) out[o++] = ' ';
        pending_space = false;
        memcpy(out + o, mapped + i, (size_t)k);
        o += (int)k;
        i += k;
    }
    if (mapped != folded) free(mapped);
    if (rc < 0) return -1;
    if (o == 0) {
        *why = "is empty";
        return -1;
    }
    return o;
}

int identity_normalize_name(const char *name, size_t len, char *out, const char **why)
{
    return normalize(name, len, out, why, true);
}

int identity_normalize_name_unicode(const char *name, size_t len, char *out, const char **why)
{
    return normalize(name, len, out, why, false);
}

size_t identity_key(const char *norm_name, size_t name_len, int y, int m, int d, char *out)
{
    char date[11];
    snprintf(date, sizeof date, "%04d-%02d-%02d", y, m, d);
    memcpy(out, norm_name, name_len);
    out[name_len] = 0;
    memcpy(out + name_len + 1, date, 10); /* no terminating NUL: the key is exactly this long */
    return name_len + 1 + 10;
}

/* The 122 bits of a v4 UUID that are not version (byte 6, high nibble) or variant (byte 8, top two),
 * filled most significant bit first with the two 61-bit halves (hi first): bits 0-47 hold hi's top 48,
 * 52-63 its next 12, 66 its last, 67-127 all of lo. Two words, no loop: this runs once per new patient
 * on the writer's thread. */
static void pack(uint64_t hi, uint64_t lo, patient_id *id)
{
    ms_set_be64(id->b, (hi >> 13) << 16 | UINT64_C(0x4000) | ((hi >> 1) & 0xFFF));
    ms_set_be64(id->b + 8, UINT64_C(2) << 62 | (hi & 1) << 61 | lo);
}

static bool unpack(const patient_id *id, uint64_t *hi, uint64_t *lo)
{
    uint64_t w0 = ms_get_be64(id->b), w1 = ms_get_be64(id->b + 8);
    if ((w0 & 0xF000) != 0x4000 || w1 >> 62 != 2) return false;
    *hi = (w0 >> 16) << 13 | (w0 & 0xFFF) << 1 | ((w1 >> 61) & 1);
    *lo = w1 & ((UINT64_C(1) << 61) - 1);
    return true;
}

#define HALF_MASK ((UINT64_C(1) << 61) - 1)

_Static_assert(sizeof(SHA256_CTX) <= sizeof(((patient_id_key *)0)->state[0]), "patient_id_key too small");

void patient_id_key_init(patient_id_key *k, const unsigned char raw[PATIENT_ID_KEY])
{
    memset(k, 0, sizeof *k);
    for (int half = 0; half < 2; half++) {
        unsigned char block[SHA256_CBLOCK];
        for (int i = 0; i < SHA256_CBLOCK; i++)
            block[i] = (unsigned char)((i < PATIENT_ID_KEY ? raw[i] : 0) ^ (half ? 0x5c : 0x36));
        SHA256_CTX c;
        SHA256_Init(&c);
        SHA256_Update(&c, block, sizeof block);
        memcpy(k->state[half], &c, sizeof c);
    }
}

void prepared_hmac(const patient_id_key *key, const void *msg, size_t n, unsigned char out[32])
{
    unsigned char inner[SHA256_DIGEST_LENGTH];
    SHA256_CTX c;
    memcpy(&c, key->state[0], sizeof c);
    SHA256_Update(&c, msg, n);
    SHA256_Final(inner, &c);
    memcpy(&c, key->state[1], sizeof c);
    SHA256_Update(&c, inner, sizeof inner);
    SHA256_Final(out, &c);
}

static uint64_t round_fn(const patient_id_key *key, int round, uint64_t x)
{
    unsigned char msg[9], mac[SHA256_DIGEST_LENGTH];
    msg[0] = (unsigned char)round;
    for (int i = 0; i < 8; i++)
        msg[1 + i] = (unsigned char)(x >> (56 - 8 * i));
    prepared_hmac(key, msg, sizeof msg, mac);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | mac[i];
    return v & HALF_MASK;
}

void patient_id_from_number(const patient_id_key *key, uint64_t n, patient_id *id)
{
    uint64_t l = n >> 61, r = n & HALF_MASK;
    for (int i = 0; i < 4; i++) {
        uint64_t t = l ^ round_fn(key, i, r);
        l = r;
        r = t;
    }
    pack(l, r, id);
}

bool patient_id_to_number(const patient_id_key *key, const patient_id *id, uint64_t *n)
{
    uint64_t l, r;
    if (!unpack(id, &l, &r)) return false;
    for (int i = 3; i >= 0; i--) {
        uint64_t t = r ^ round_fn(key, i, l);
        r = l;
        l = t;
    }
    if (l > 7) return false; /* numbers are 64-bit: the top 58 of the 122 bits must be zero */
    *n = (l << 61) | r;
    return true;
}

void patient_id_format(const patient_id *id, char out[PATIENT_ID_TEXT])
{
    static const char hex[] = "0123456789abcdef";
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
        out[o++] = hex[id->b[i] >> 4];
        out[o++] = hex[id->b[i] & 15];
    }
    out[o] = 0;
}

static int hexdigit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool patient_id_parse(const char *s, size_t n, patient_id *id)
{
    if (n != 36) return false;
    int b = 0;
    for (size_t i = 0; i < n;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return false;
            i++;
            continue;
        }
        int hi = hexdigit(s[i]), lo = hexdigit(s[i + 1]);
        if (hi < 0 || lo < 0) return false;
        id->b[b++] = (unsigned char)(hi * 16 + lo);
        i += 2;
    }
    return b == 16;
}

/* The name of a record: its one name field decoded, or its name parts (each a string) joined by one
 * space. NULL after rejecting r (naming the field, never a value). */
static char *record_name(const schema *sc, parsed_record *r, arena *mem, uint32_t *len)
{
    buf joined = {0};
    char *name = NULL;
    for (int i = 0; i < sc->nname_parts; i++) {
        const char *part = sc->name_parts[i];
        const record_field *f = record_field_get(r, part, strlen(part));
        if (!f) {
            record_reject(r, mem, "line %u: missing identity field \"%s\"%s", part, NULL);
            break;
        }
        if (f->type != JSON_STRING) {
            record_reject(r, mem, "line %u: field \"%s\" must be a string, not %s", part, json_type_name(f->type));
            break;
        }
        uint32_t n;
        char *v = record_field_string(mem, f, &n);
        if (!v) {
            record_reject(r, mem, "line %u: field \"%s\" %s", part, "contains a NUL character");
            break;
        }
        if (sc->nname_parts == 1) {
            name = v;
            *len = n;
            break;
        }
        if (i) buf_putc(&joined, ' ');
        buf_put(&joined, v, n);
    }
    if (!r->rejected && !name) {
        name = arena_strndup(mem, joined.data ? joined.data : "", joined.len);
        *len = (uint32_t)joined.len;
    }
    buf_free(&joined);
    return r->rejected ? NULL : name;
}

void identity_of_record(const schema *sc, int64_t now_us, parsed_record *r, arena *mem)
{
    if (r->rejected) return;
    /* identity: name (one field, or parts joined by one space) */
    uint32_t name_len = 0;
    char *name = record_name(sc, r, mem, &name_len);
    if (!name) return;
    char norm[IDENTITY_NAME_MAX];
    const char *bad_name = "contains a NUL character";
    int norm_len = identity_normalize_name(name, name_len, norm, &bad_name);
    if (norm_len < 0) return record_reject(r, mem, "line %u: field \"%s\" %s", sc->name_field, bad_name);

    const record_field *f;
    /* dob */
    f = record_field_get(r, sc->dob_field, strlen(sc->dob_field));
    if (!f) return record_reject(r, mem, "line %u: missing identity field \"%s\"%s", sc->dob_field, NULL);
    if (f->type != JSON_STRING)
        return record_reject(r, mem, "line %u: field \"%s\" must be a string, not %s", sc->dob_field,
                             json_type_name(f->type));
    int y, mo, d;
    if (f->val_len == 2) return record_reject(r, mem, "line %u: field \"%s\" is empty%s", sc->dob_field, NULL);
    if (!date_parse(f->val + 1, f->val_len - 2, &y, &mo, &d))
        return record_reject(r, mem, "line %u: field \"%s\" is not a real date in the form YYYY-MM-DD%s", sc->dob_field,
                             NULL);
    if (y < 1850) return record_reject(r, mem, "line %u: field \"%s\" is before 1850%s", sc->dob_field, NULL);
    int64_t dob_day = days_from_civil(y, (unsigned)mo, (unsigned)d);
    int64_t today = now_us / 86400000000LL;
    if (dob_day > today) return record_reject(r, mem, "line %u: field \"%s\" is in the future%s", sc->dob_field, NULL);
    char *key = arena_alloc(mem, IDENTITY_KEY_MAX);
    r->identity_key_len = (uint32_t)identity_key(norm, (size_t)norm_len, y, mo, d, key);
    r->identity_key = key;
}
