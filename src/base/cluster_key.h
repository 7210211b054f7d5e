/*
 * cluster_key.h - the cluster key file (`--cluster-key-file FILE`): a 32-byte secret shared by every node
 * of one medstream cluster, written as 64 hexadecimal characters on one line (`openssl rand -hex 32`).
 * A store created with it takes it as its id key (store/env.c), so every node derives the same patient-id
 * permutation, identity MACs, de-identification secrets and key-wrap key.
 *
 * Contract: cluster_key_parse is a pure function over a buffer (unit tested); cluster_key_load is the I/O
 * edge: it refuses a file that is not a regular file or that group or others may read or write (as ssh
 * refuses a private key), naming the file and its mode.
 * Must never: put the key or any byte of the file's text in an error message, a log line or a metric, or
 * leave the key's text in memory it frees (both are cleansed).
 */
#ifndef MS_CLUSTER_KEY_H
#define MS_CLUSTER_KEY_H

#include "base/util.h"

#include <stddef.h>

#define CLUSTER_KEY_BYTES 32

/* Parse the file's text: exactly 64 hexadecimal characters (either case), then at most one line end
 * ("\n" or "\r\n"), nothing else. A key of 32 zero bytes is refused (not a random key). On failure *e
 * says what is wrong (a length, a position, never the text); key is then zeroed. */
ms_code cluster_key_parse(const char *text, size_t len, unsigned char key[CLUSTER_KEY_BYTES], ms_err *e);

/* Read and parse path; errors name path: MS_EIO cannot be opened or read; MS_EINVAL not a regular file,
 * readable or writable by group or others (with its mode), too long, or malformed (cluster_key_parse). */
ms_code cluster_key_load(const char *path, unsigned char key[CLUSTER_KEY_BYTES], ms_err *e);

#endif
