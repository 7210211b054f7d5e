/*
 * json_write.c - JSON text output helpers (see json_write.h).
 */
#include "base/json_write.h"

#include "base/json_scan.h"
#include "base/timefmt.h"

#include <string.h>

void jw_string(buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    buf_reserve(b, n + 2);
    buf_putc(b, '"');
    const char *p = s, *end = s + n;
    while (p < end) {
        const char *run = p;
        while (p < end && (unsigned char)*p >= 0x20 && *p != '"' && *p != '\\' && (unsigned char)*p < 0x80)
            p++;
        buf_put(b, run, (size_t)(p - run));
        if (p >= end) break;
        unsigned char c = (unsigned char)*p;
        if (c >= 0x80) {
            /* copy the valid prefix of this run of multi-byte text; replace the first bad byte. Only the run is
             * checked (a sequence is all bytes >= 0x80), never the rest of the string: checking to the end at
             * every run made a string of n bytes cost O(n^2) (300 KB of "éa": 35 s) */
            const char *q = p;
            while (q < end && (unsigned char)*q >= 0x80)
                q++;
            size_t span = (size_t)(q - p);
            size_t good = utf8_check(p, span);
            /* good may end inside a sequence only if invalid; utf8_check stops at sequence starts */
            buf_put(b, p, good);
            p += good;
            if (good < span) {
                buf_puts(b, "\xEF\xBF\xBD");
                p++;
            }
            continue;
        }
        p++;
        switch (c) {
        case '"': buf_puts(b, "\\\""); break;
        case '\\': buf_puts(b, "\\\\"); break;
        case '\n': buf_puts(b, "\\n"); break;
        case '\r': buf_puts(b, "\\r"); break;
        case '\t': buf_puts(b, "\\t"); break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            buf_put(b, u, 6);
        }
        }
    }
    buf_putc(b, '"');
}

void jw_cstr(buf *b, const char *s) { jw_string(b, s, strlen(s)); }

void jw_key(buf *b, bool *first, const char *key)
{
    if (!*first) buf_putc(b, ',');
    *first = false;
    jw_cstr(b, key);
    buf_putc(b, ':');
}

void jw_time(buf *b, int64_t us)
{
    char t[40];
    time_format_rfc3339(us, t, sizeof t);
    buf_putc(b, '"');
    buf_puts(b, t);
    buf_putc(b, '"');
}
