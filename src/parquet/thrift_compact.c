/*
 * thrift_compact.c - the Thrift compact protocol encoder (thrift_compact.h has the wire format).
 *
 * Design: a stack of the last field id of each open struct; every field helper writes its header
 * through tc_field_header, which picks the short form (one byte, delta 1..15) or the long form (type
 * byte, zigzag id). Pure: appends to the caller's buffer, nothing else.
 */
#include "parquet/thrift_compact.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tc_init(tc_writer *w, buf *out)
{
    w->out = out;
    w->depth = 0;
    w->last_id[0] = 0;
}

void tc_put_varint(buf *b, uint64_t v) { buf_put_varint(b, v); }

uint64_t tc_zigzag64(int64_t v) { return ms_zigzag64(v); }

void tc_put_zigzag(buf *b, int64_t v) { tc_put_varint(b, tc_zigzag64(v)); }

void tc_struct_begin(tc_writer *w)
{
    if (w->depth + 1 >= TC_MAX_DEPTH) {
        fprintf(stderr, "thrift_compact: structs nested deeper than %d\n", TC_MAX_DEPTH);
        abort();
    }
    w->depth++;
    w->last_id[w->depth] = 0;
}

void tc_struct_end(tc_writer *w)
{
    if (w->depth <= 0) {
        fprintf(stderr, "thrift_compact: tc_struct_end without an open struct\n");
        abort();
    }
    buf_putc(w->out, (char)TC_STOP);
    w->depth--;
}

void tc_field_header(tc_writer *w, int16_t id, int type)
{
    int delta = (int)id - (int)w->last_id[w->depth];
    if (delta >= 1 && delta <= 15) {
        buf_putc(w->out, (char)(unsigned char)((delta << 4) | type));
    } else {
        buf_putc(w->out, (char)(unsigned char)type);
        tc_put_zigzag(w->out, id);
    }
    w->last_id[w->depth] = id;
}

void tc_field_bool(tc_writer *w, int16_t id, bool v) { tc_field_header(w, id, v ? TC_BOOL_TRUE : TC_BOOL_FALSE); }

void tc_field_i8(tc_writer *w, int16_t id, int8_t v)
{
    tc_field_header(w, id, TC_I8);
    buf_putc(w->out, (char)v);
}

void tc_field_i16(tc_writer *w, int16_t id, int16_t v)
{
    tc_field_header(w, id, TC_I16);
    tc_put_zigzag(w->out, v);
}

void tc_field_i32(tc_writer *w, int16_t id, int32_t v)
{
    tc_field_header(w, id, TC_I32);
    tc_put_zigzag(w->out, v);
}

void tc_field_i64(tc_writer *w, int16_t id, int64_t v)
{
    tc_field_header(w, id, TC_I64);
    tc_put_zigzag(w->out, v);
}

void tc_field_double(tc_writer *w, int16_t id, double v)
{
    tc_field_header(w, id, TC_DOUBLE);
    uint64_t bits;
    memcpy(&bits, &v, 8);
    unsigned char le[8];
    for (int i = 0; i < 8; i++, bits >>= 8)
        le[i] = (unsigned char)bits;
    buf_put(w->out, le, 8);
}

void tc_field_binary(tc_writer *w, int16_t id, const void *p, size_t n)
{
    tc_field_header(w, id, TC_BINARY);
    tc_put_varint(w->out, n);
    buf_put(w->out, p, n);
}

void tc_field_string(tc_writer *w, int16_t id, const char *s) { tc_field_binary(w, id, s, strlen(s)); }

void tc_field_struct(tc_writer *w, int16_t id)
{
    tc_field_header(w, id, TC_STRUCT);
    tc_struct_begin(w);
}

void tc_field_empty_struct(tc_writer *w, int16_t id)
{
    tc_field_struct(w, id);
    tc_struct_end(w);
}

void tc_list_header(buf *b, int elem_type, uint32_t n)
{
    if (n < 15) {
        buf_putc(b, (char)(unsigned char)((n << 4) | (uint32_t)elem_type));
    } else {
        buf_putc(b, (char)(unsigned char)(0xF0 | elem_type));
        tc_put_varint(b, n);
    }
}

void tc_field_list(tc_writer *w, int16_t id, int elem_type, uint32_t n)
{
    tc_field_header(w, id, TC_LIST);
    tc_list_header(w->out, elem_type, n);
}

void tc_elem_bool(tc_writer *w, bool v) { buf_putc(w->out, v ? 1 : 0); }
void tc_elem_i32(tc_writer *w, int32_t v) { tc_put_zigzag(w->out, v); }
void tc_elem_i64(tc_writer *w, int64_t v) { tc_put_zigzag(w->out, v); }

void tc_elem_binary(tc_writer *w, const void *p, size_t n)
{
    tc_put_varint(w->out, n);
    buf_put(w->out, p, n);
}

void tc_elem_string(tc_writer *w, const char *s) { tc_elem_binary(w, s, strlen(s)); }
