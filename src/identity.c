/*
 * identity.c - name normalization with utf8proc, identity keys, patient ids (see identity.h).
 */
#include "identity.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

int identity_normalize_name(const char *name, size_t len, char *out, const char **why)
{
    utf8proc_uint8_t *mapped = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)name, (utf8proc_ssize_t)len, &mapped,
                                      UTF8PROC_STABLE | UTF8PROC_COMPAT | UTF8PROC_COMPOSE | UTF8PROC_CASEFOLD |
                                          UTF8PROC_IGNORE);
    if (n < 0) {
        *why = "is not valid Unicode";
        return -1;
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
    free(mapped);
    if (rc < 0) return -1;
    if (o == 0) {
        *why = "is empty";
        return -1;
    }
    return o;
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

ms_code patient_id_new(patient_id *id, ms_err *e)
{
    if (RAND_bytes(id->b, sizeof id->b) != 1) return ms_fail(e, MS_EIO, "random number generator failed");
    id->b[6] = (unsigned char)((id->b[6] & 0x0F) | 0x40); /* version 4 */
    id->b[8] = (unsigned char)((id->b[8] & 0x3F) | 0x80); /* RFC 4122 variant */
    return MS_OK;
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
