/*
 * timefmt.h - dates and times as medstream reads and writes them. Pure functions, no locale, no
 * time zone database, no libc time conversions (which depend on TZ and are not thread-safe).
 *
 * Times are int64 microseconds since the Unix epoch, UTC.
 */
#ifndef MS_TIMEFMT_H
#define MS_TIMEFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Days since 1970-01-01 of a proleptic Gregorian date (no validation). */
int64_t days_from_civil(int64_t y, unsigned m, unsigned d);
void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d);
bool date_is_real(int y, int m, int d);

/* Parse exactly "YYYY-MM-DD": a real date. Returns false on any other text. */
bool date_parse(const char *s, size_t n, int *y, int *m, int *d);

/* Date formats (a schema's "dob_format", for CSV files that do not write YYYY-MM-DD): a subset of
 * strptime, without locale. Directives: %Y a year of exactly 4 digits, %m a month and %d a day of 1 or 2
 * digits (greedy: two when two digits follow), %b an English month abbreviation (Jan ... Dec, any case),
 * %% a percent sign; every other character matches itself, exactly. A format has exactly one year, one
 * month (%m or %b) and one day. There is no %y: a two-digit year of birth is ambiguous by a century.
 * date_format_check: NULL if fmt is such a format (at most DATE_FORMAT_MAX bytes), else a static reason. */
#define DATE_FORMAT_MAX 32
const char *date_format_check(const char *fmt);
/* Parse exactly [s, s+n) with a format date_format_check accepted: NULL and the date, or a static reason
 * ("does not match the date format", "is not a real date"). */
const char *date_parse_format(const char *fmt, const char *s, size_t n, int *y, int *m, int *d);

/* Parse RFC 3339 date-time ("2026-11-22T15:31:54Z", fraction and +hh:mm offset allowed, 't'/'z'
 * accepted) into microseconds UTC. Fractions beyond microseconds are truncated. */
bool time_parse_rfc3339(const char *s, size_t n, int64_t *us);

/* "2026-11-22T15:31:54.123456Z" (27 chars + NUL). */
void time_format_rfc3339(int64_t us, char *out, size_t cap);

/* Year (UTC) of a time. */
int time_year(int64_t us);

#endif
