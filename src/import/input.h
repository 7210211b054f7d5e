/*
 * input.h - an input file of `medstream import` as a stream of bytes: plain, gzip or zstd (told by the
 * file's first bytes, whatever its name), read a chunk at a time, never held whole; with its identity
 * and how far into it the stream has got.
 *
 * THE FILE'S IDENTITY names the file in checkpoints and in the record ids of rows without one: the
 * SHA-256 of (its size as 8 big-endian bytes, the SHA-256 of its first MiB as stored, its absolute path).
 * A file that grows, is rewritten at its start or moves is another file: its import starts over.
 *
 * Positions: the stream position counts bytes of the decompressed stream (what rows are read from, and
 * what checkpoints record); the file position counts bytes of the file consumed (what a progress bar
 * shows against the file's size). Both are the same for a plain file.
 *
 * Contract: one thread at a time per import_input. Plain files are read with plain read(2) and the pages
 * behind the stream are dropped from the page cache as it goes (posix_fadvise), so an import of a file
 * larger than memory does not push everything else out. Errors name the byte, never the file's contents,
 * and leave the file's name to the caller (the import's summary line and the command's message name it).
 *
 * What it must never do: read a whole file into memory, write to the file, or put a byte of it in a
 * message.
 */
#ifndef MS_IMPORT_INPUT_H
#define MS_IMPORT_INPUT_H

#include "base/util.h"

typedef enum { INPUT_PLAIN, INPUT_GZIP, INPUT_ZSTD } input_compression;

#define IMPORT_IDENTITY_PREFIX ((size_t)1 << 20) /* bytes of the file its identity hashes */

typedef struct import_input import_input;

/* Open path for reading and compute its identity. Errors: MS_EIO the file cannot be opened, is not a
 * regular file, or cannot be read. */
ms_code import_input_open(import_input **out, const char *path, ms_err *e);
/* NULL is a no-op. */
void import_input_close(import_input *in);

input_compression import_input_compression(const import_input *in);
const char *input_compression_name(input_compression c);            /* "plain", "gzip", "zstd" */
const unsigned char *import_input_identity(const import_input *in); /* 32 bytes */
uint64_t import_input_file_size(const import_input *in);
uint64_t import_input_file_pos(const import_input *in);
uint64_t import_input_stream_pos(const import_input *in);

/* The next bytes of the stream, up to cap, into dst; *got = 0 at its end. Errors: MS_EIO a read failed;
 * MS_EINVAL the compressed stream is corrupt or ends inside a frame (the message says at which byte of
 * the file). */
ms_code import_input_read(import_input *in, char *dst, size_t cap, size_t *got, ms_err *e);

/* Move the stream forward to stream position `to` (>= the current one): a seek for a plain file, reading
 * and dropping the bytes before it for a compressed one. Errors: as import_input_read; MS_EINVAL `to` is
 * past the end of the stream or behind the current position. */
ms_code import_input_skip(import_input *in, uint64_t to, ms_err *e);

#endif
