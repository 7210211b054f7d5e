/*
 * schema_canon.h - the canonical text of a schema, which the store keeps with each schema version
 * (store.h, "Schema versions"): two schema files that differ only in layout (whitespace, member order,
 * string escapes, a byte-order mark) have the same canonical text, so reformatting a file never makes a
 * new version; any other change does.
 *
 * DESIGN: canonicalize the JSON text, not the parsed schema struct, so that syntax the schema gains later
 * (new keys, nested values) needs no change here: every object's members sorted by their decoded key
 * (bytewise; duplicate keys keep their order), no whitespace, strings decoded and re-escaped the one way
 * json_write.h escapes them, numbers and literals as written. The default schema (schema_default) has a
 * fixed canonical text. A canonical text parses back (schema_parse) to the same schema, except the order
 * of "public" members, which then follows the sorted keys.
 *
 * Contract: pure functions over buffers. Must never: accept text that is not one JSON object (the error
 * names the byte offset), put the schema's text in an error message.
 */
#ifndef MS_SCHEMA_CANON_H
#define MS_SCHEMA_CANON_H

#include "base/util.h"

/* The canonical text of the default schema (schema_default). */
extern const char SCHEMA_DEFAULT_CANONICAL[];

/* The canonical text of a schema file's JSON text (a leading UTF-8 byte-order mark is skipped) into out
 * (replaced). Errors: MS_EINVAL the text is not one valid JSON object. */
ms_code schema_canonical(const char *text, size_t len, buf *out, ms_err *e);

#endif
