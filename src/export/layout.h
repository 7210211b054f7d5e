/*
 * layout.h - where an export's rows go: the Hive-style partition directories of records and the part
 * files' names (export.h, README.md "Layout"). Pure functions over values already read.
 *
 * Contract: a partition never carries more than the scope keeps. PHI: type=<the record's type>/
 * date=<YYYY-MM-DD of its event time, UTC>. Public: the values of the public copy only: type=<the
 * allow-listed type field, as published> and, for the event time, year=<YYYY> when the schema publishes
 * it as a year, date=<YYYY-MM-DD> when it copies it, date=__HIVE_DEFAULT_PARTITION__ when it is not
 * public. A missing or empty value is Hive's null partition __HIVE_DEFAULT_PARTITION__. Values are
 * escaped as Hive escapes them: %XX for control characters, DEL, the slash and the characters of
 * Hive's list (quote, hash, percent, apostrophe, star, colon, equals, question mark, backslash, braces,
 * brackets, caret).
 *
 * What it must never do: read a value from anywhere but its arguments (a public partition comes from
 * the public copy's fields, never from the PHI record), or produce a path component that is "", "." or
 * "..", or that holds a '/'.
 */
#ifndef MS_EXPORT_LAYOUT_H
#define MS_EXPORT_LAYOUT_H

#include "export/export.h"

#define LAYOUT_HIVE_NULL "__HIVE_DEFAULT_PARTITION__"

/* Append v (n bytes) as a partition value: escaped; LAYOUT_HIVE_NULL when n is 0. */
void layout_escape(const char *v, size_t n, buf *out);
/* "date" or "year": the name of the event-time level of a scope's partitions. */
const char *layout_date_key(const schema *s, export_scope scope);
/* "records/type=T/date=YYYY-MM-DD" of a PHI record (replaces out's content). */
void layout_phi_partition(const char *type, size_t type_len, int64_t ts_us, buf *out);
/* The public partition of a record whose public copy's fields (a JSON object) are given. */
void layout_public_partition(const schema *s, const char *fields, size_t len, buf *out);
/* "part-00000.parquet" (replaces out's content). */
void layout_part_name(uint32_t n, export_format f, buf *out);

#endif
