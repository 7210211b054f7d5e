/*
 * json_write.h - append JSON text to a buf: escaped strings, times, the small building blocks every
 * answer is made of. Pure: no I/O. Callers pass bytes that are valid UTF-8 (everything medstream
 * stores was validated on the way in); invalid bytes are written as U+FFFD rather than passed through.
 */
#ifndef MS_JSON_WRITE_H
#define MS_JSON_WRITE_H

#include "base/util.h"

void jw_string(buf *b, const char *s, size_t n);
void jw_cstr(buf *b, const char *s);
/* "key": (with the comma before it unless first) */
void jw_key(buf *b, bool *first, const char *key);
/* RFC 3339 UTC with microseconds, quoted; writes null for t < 0 when null_if_negative. */
void jw_time(buf *b, int64_t us);

#endif
