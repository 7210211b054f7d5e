/*
 * counter_state.h - the counters' saved state, DATA/counters.state: what a restart loads instead of
 * rebuilding every counter from the stored records (counters.h, RESTART).
 *
 * Format (big-endian): "MSCS2\n", be64 position (the last commit-log entry the counts reflect), be64 that
 * entry's commit time, be64 the time it was saved, be32 the schema version the counts were counted under
 * (the public copies they read: store_read_schema_version), be32 n, then per counter: be32 length + its
 * canonical definition (counter_def_json), be32 length + counter_save's bytes, be64 changes applied, be32
 * flags (COUNTER_STATE_PUBLIC: counted from the public copies); last, be64 XXH3-64 of everything before
 * it. A file of the first format ("MSCS1\n": no schema version, no flags) still decodes, with
 * schema_version 0 (unknown): its counts are not used (counters.c, load_state).
 *
 * Contract: the file is written whole or not at all (export/out_file: a temporary name, fdatasync, rename,
 * directory fsync), so a crash leaves the previous state; a file that fails its checks reads as absent
 * with the reason (the counters are then rebuilt). It holds counts, bucket numbers and parent record ids
 * (PHI when the parent role is not public: the file is mode 0600 in the data directory, as the store is),
 * and the definitions (whose where values may be PHI).
 */
#ifndef MS_COUNTER_STATE_H
#define MS_COUNTER_STATE_H

#include "base/util.h"

typedef struct {
    const char *def; /* canonical definition JSON */
    size_t def_len;
    const void *state; /* counter_save bytes */
    size_t state_len;
    uint64_t changes;
    uint32_t flags; /* COUNTER_STATE_PUBLIC */
} counter_state_entry;

#define COUNTER_STATE_PUBLIC 1u /* the counter was counted from the public copies (not the bodies) */

typedef struct {
    uint64_t position;
    int64_t commit_time, saved_at;
    uint32_t schema_version;      /* the public copies' version the counts are under (0: unknown, an MSCS1 file) */
    counter_state_entry *entries; /* point into the file's bytes, kept in raw */
    uint32_t n;
    buf raw;
} counter_state;

/* The file's bytes for these entries. */
void counter_state_encode(buf *out, uint64_t position, int64_t commit_time, int64_t saved_at, uint32_t schema_version,
                          const counter_state_entry *entries, uint32_t n);
/* Write them as dir/counters.state, durably and atomically. Errors: out_file's (MS_EFULL, MS_EIO). */
ms_code counter_state_write(const char *dir, const buf *bytes, ms_err *e);
/* Read dir/counters.state: *found false when there is none; MS_ECORRUPT (with the reason) when it fails
 * its checks. Free with counter_state_free. */
ms_code counter_state_read(const char *dir, counter_state *st, bool *found, ms_err *e);
/* Decode bytes (taken into st->raw). */
ms_code counter_state_decode(counter_state *st, buf *bytes, ms_err *e);
void counter_state_free(counter_state *st);

#endif
