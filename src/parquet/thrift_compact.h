/*
 * thrift_compact.h - an encoder of the Thrift compact protocol, the encoding of every Parquet page
 * header and of the file footer (parquet.c). Only what a writer needs: structs, unions (a struct with
 * one field), lists, i8/i16/i32/i64, bool fields, binary/string, double.
 *
 * The wire format (Apache Thrift, doc/specs/thrift-compact-protocol.md):
 *   - integers i16/i32/i64 are zigzag-encoded ((n << 1) ^ (n >> 63)), then written as an unsigned LEB128
 *     varint (7 bits a byte, low group first, high bit set on every byte but the last); i8 is one byte;
 *   - a double is its IEEE 754 bits, 8 bytes little-endian; binary and strings are a varint length then
 *     the bytes;
 *   - a struct is its fields then a stop byte (0). A field header is one byte (delta << 4 | type) when
 *     the id minus the previous field's id of the same struct (0 at its start) is 1..15, else the type
 *     byte then the id as a zigzag varint (the long form). A bool field carries its value in the type
 *     (1 true, 2 false) and has no value bytes;
 *   - a list is a header (size << 4 | element type when size < 15, else 0xF0 | type then a varint size),
 *     then its elements, each a bare value (a struct element is its fields and a stop).
 *
 * Contract: pure functions over a `buf` (base/util.h); nothing here fails, since the caller writes what
 * it built (fields in increasing id order within a struct, as the short form needs for small deltas, is
 * the caller's habit but not required: the long form is used whenever the delta is not 1..15). Nesting
 * deeper than TC_MAX_DEPTH is a programming error (abort), never reachable from data.
 *
 * What it must never do: write a field header whose delta is outside 1..15 in the short form, or leave
 * a struct without its stop byte (tc_struct_end closes what tc_struct_begin or tc_field_struct opened).
 */
#ifndef MS_PARQUET_THRIFT_COMPACT_H
#define MS_PARQUET_THRIFT_COMPACT_H

#include "base/util.h"

/* Field types (field headers) of the compact protocol. */
enum {
    TC_STOP = 0,
    TC_BOOL_TRUE = 1,
    TC_BOOL_FALSE = 2,
    TC_I8 = 3,
    TC_I16 = 4,
    TC_I32 = 5,
    TC_I64 = 6,
    TC_DOUBLE = 7,
    TC_BINARY = 8,
    TC_LIST = 9,
    TC_SET = 10,
    TC_MAP = 11,
    TC_STRUCT = 12,
};
/* Element type of a bool in a list header (other element types equal the field types above). */
enum { TC_ELEM_BOOL = 2 };

#define TC_MAX_DEPTH 16

/* An encoder appending to *out: the last field id of every open struct. */
typedef struct {
    buf *out;
    int depth;
    int16_t last_id[TC_MAX_DEPTH];
} tc_writer;

/* Start encoding into out (appended to; the buffer is not reset). No struct is open: call
 * tc_struct_begin for a top-level struct. */
void tc_init(tc_writer *w, buf *out);

/* Primitive encodings (also used alone: e.g. the RLE hybrid's run headers are ULEB128 varints). */
void tc_put_varint(buf *b, uint64_t v);
uint64_t tc_zigzag64(int64_t v);
void tc_put_zigzag(buf *b, int64_t v);

/* Open a struct whose field header was written already (a top-level struct, a list element); fields
 * then count from id 0. tc_struct_end writes the stop byte and returns to the enclosing struct. */
void tc_struct_begin(tc_writer *w);
void tc_struct_end(tc_writer *w);

/* A field header of type `type` with id `id` in the open struct (short or long form). */
void tc_field_header(tc_writer *w, int16_t id, int type);

void tc_field_bool(tc_writer *w, int16_t id, bool v);
void tc_field_i8(tc_writer *w, int16_t id, int8_t v);
void tc_field_i16(tc_writer *w, int16_t id, int16_t v);
void tc_field_i32(tc_writer *w, int16_t id, int32_t v);
void tc_field_i64(tc_writer *w, int16_t id, int64_t v);
void tc_field_double(tc_writer *w, int16_t id, double v);
void tc_field_binary(tc_writer *w, int16_t id, const void *p, size_t n);
void tc_field_string(tc_writer *w, int16_t id, const char *s);
/* A struct-valued field (or a union member): the header, then tc_struct_begin. Close with tc_struct_end. */
void tc_field_struct(tc_writer *w, int16_t id);
/* An empty struct field (e.g. Parquet's StringType, TypeDefinedOrder): header and stop byte. */
void tc_field_empty_struct(tc_writer *w, int16_t id);
/* A list-valued field: the header of n elements of element type elem_type; the caller then writes the n
 * elements (tc_elem_* or, for structs, tc_struct_begin ... tc_struct_end each). */
void tc_field_list(tc_writer *w, int16_t id, int elem_type, uint32_t n);

/* A list header alone (elements of a list nested in a list; not needed by Parquet, tested). */
void tc_list_header(buf *b, int elem_type, uint32_t n);

/* List elements. A bool element is one byte: 1 true, 0 false. */
void tc_elem_bool(tc_writer *w, bool v);
void tc_elem_i32(tc_writer *w, int32_t v);
void tc_elem_i64(tc_writer *w, int64_t v);
void tc_elem_binary(tc_writer *w, const void *p, size_t n);
void tc_elem_string(tc_writer *w, const char *s);

#endif
