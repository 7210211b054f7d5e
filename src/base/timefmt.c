/*
 * timefmt.c - calendar arithmetic and RFC 3339 (see timefmt.h). The civil-date conversions use the
 * well-known era/day-of-era decomposition of the proleptic Gregorian calendar.
 */
#include "base/timefmt.h"

#include <stdio.h>
#include <string.h>

int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

bool date_is_real(int y, int m, int d)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || y > 9999 || m < 1 || m > 12 || d < 1) return false;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    int max = mdays[m - 1] + (m == 2 && leap);
    return d <= max;
}

static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

bool date_parse(const char *s, size_t n, int *y, int *m, int *d)
{
    if (n != 10 || s[4] != '-' || s[7] != '-') return false;
    if (!digits(s, 4, y) || !digits(s + 5, 2, m) || !digits(s + 8, 2, d)) return false;
    return date_is_real(*y, *m, *d);
}

bool time_parse_rfc3339(const char *s, size_t n, int64_t *us)
{
    int y, mo, d, h, mi, sec;
    if (n < 20) return false;
    if (!date_parse(s, 10, &y, &mo, &d)) return false;
    if (s[10] != 'T' && s[10] != 't' && s[10] != ' ') return false;
    if (s[13] != ':' || s[16] != ':') return false;
    if (!digits(s + 11, 2, &h) || !digits(s + 14, 2, &mi) || !digits(s + 17, 2, &sec)) return false;
    if (h > 23 || mi > 59 || sec > 60) return false; /* 60: leap second, folded into :59 below */
    if (sec == 60) sec = 59;
    size_t i = 19;
    int64_t frac = 0;
    if (i < n && s[i] == '.') {
        i++;
        size_t start = i;
        int64_t scale = 100000;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            frac += (s[i] - '0') * scale;
            scale /= 10;
            i++;
        }
        if (i == start) return false;
    }
    if (i >= n) return false;
    int offset_min = 0;
    if (s[i] == 'Z' || s[i] == 'z') {
        i++;
    } else if (s[i] == '+' || s[i] == '-') {
        int oh, om;
        if (n - i != 6 || s[i + 3] != ':' || !digits(s + i + 1, 2, &oh) || !digits(s + i + 4, 2, &om)) return false;
        if (oh > 23 || om > 59) return false;
        offset_min = (oh * 60 + om) * (s[i] == '+' ? 1 : -1);
        i += 6;
    } else {
        return false;
    }
    if (i != n) return false;
    int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec - (int64_t)offset_min * 60;
    *us = secs * 1000000 + frac;
    return true;
}

/* Floor division and its remainder (0..b-1), without negating a (INT64_MIN has no negation). */
static int64_t floor_div(int64_t a, int64_t b) { return a / b - (a % b < 0); }
static int64_t floor_mod(int64_t a, int64_t b) { return a % b + (a % b < 0 ? b : 0); }

void time_format_rfc3339(int64_t us, char *out, size_t cap)
{
    int64_t secs = floor_div(us, 1000000), frac = floor_mod(us, 1000000);
    int64_t days = floor_div(secs, 86400), rem = floor_mod(secs, 86400);
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    snprintf(out, cap, "%04lld-%02u-%02uT%02d:%02d:%02d.%06lldZ", (long long)y, m, d, (int)(rem / 3600),
             (int)(rem / 60 % 60), (int)(rem % 60), (long long)frac);
}

int time_year(int64_t us)
{
    int64_t days = floor_div(floor_div(us, 1000000), 86400);
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    return (int)y;
}

/* ---- date formats (see timefmt.h) ---- */

static const char month_abbr[12][4] = {"jan", "feb", "mar", "apr", "may", "jun",
                                       "jul", "aug", "sep", "oct", "nov", "dec"};

const char *date_format_check(const char *fmt)
{
    int years = 0, months = 0, days = 0;
    if (strlen(fmt) > DATE_FORMAT_MAX) return "is longer than 32 bytes";
    for (const char *f = fmt; *f; f++) {
        if (*f != '%') continue;
        switch (*++f) {
        case 'Y': years++; break;
        case 'm':
        case 'b': months++; break;
        case 'd': days++; break;
        case '%': break;
        case 'y': return "has %y: a two-digit year of birth is ambiguous by a century (use %Y)";
        case 0: return "ends with a lone %";
        default: return "has a directive other than %Y, %m, %b, %d and %%";
        }
    }
    if (years != 1 || months != 1 || days != 1)
        return "needs exactly one year (%Y), one month (%m or %b) and one day (%d)";
    return NULL;
}

/* 1 or 2 digits (greedy) at s[*i]. */
static bool digits_12(const char *s, size_t n, size_t *i, int *out)
{
    if (*i >= n || s[*i] < '0' || s[*i] > '9') return false;
    int v = s[(*i)++] - '0';
    if (*i < n && s[*i] >= '0' && s[*i] <= '9') v = v * 10 + (s[(*i)++] - '0');
    *out = v;
    return true;
}

const char *date_parse_format(const char *fmt, const char *s, size_t n, int *y, int *m, int *d)
{
    static const char *const no_match = "does not match the date format";
    size_t i = 0;
    for (const char *f = fmt; *f; f++) {
        if (*f != '%' || f[1] == '%') {
            if (*f == '%') f++;
            if (i >= n || s[i] != *f) return no_match;
            i++;
            continue;
        }
        switch (*++f) {
        case 'Y':
            if (n - i < 4 || !digits(s + i, 4, y)) return no_match;
            i += 4;
            break;
        case 'm':
            if (!digits_12(s, n, &i, m)) return no_match;
            break;
        case 'd':
            if (!digits_12(s, n, &i, d)) return no_match;
            break;
        case 'b': {
            if (n - i < 3) return no_match;
            char a[3];
            for (int k = 0; k < 3; k++)
                a[k] = (char)(s[i + k] >= 'A' && s[i + k] <= 'Z' ? s[i + k] + 32 : s[i + k]);
            int k = 0;
            while (k < 12 && memcmp(a, month_abbr[k], 3) != 0)
                k++;
            if (k == 12) return no_match;
            *m = k + 1;
            i += 3;
            break;
        }
        default: return no_match; /* not a checked format */
        }
    }
    if (i != n) return no_match;
    if (!date_is_real(*y, *m, *d)) return "is not a real date";
    return NULL;
}
