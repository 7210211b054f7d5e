/*
 * state_cache.h - the patients' latest states in memory: patient number -> the plaintext of its newest
 * patient version ('v' entry of the patient log, st_patient_encode's bytes), for the writer's merge.
 *
 * Why: every record of a known patient merges into the patient's latest version. Read from the patient log,
 * that is one or two lookups in a B-tree that grows with every record (the head entry, then the newest 'v'
 * it names) and an AES-GCM open: about a fifth of the writer's time at 200 B records, on pages spread
 * over the whole log. The page cache keeps 4 KiB pages of which a few entries are latest; this keeps the
 * latest states themselves, as many as its budget holds.
 *
 * With the state, an entry may hold the patient's newest log entry of each kind ('v', 'r', 'P') as of the
 * head, which the log's next append for the patient names (plog.c): then that append reads no log page.
 *
 * Validity: each entry carries the patient's head (plog.c: the sequence number of the patient's newest log
 * entry of any kind) as it was when the state was taken. An entry counts only while that is still the
 * patient's head: any later entry of the patient (a version, a record, a public copy, an erasure mark)
 * moves the head, and the entry is then never served. So a stale entry is a miss, never a wrong answer.
 *
 * Contract: thread-safe (one mutex; the writer is its one user in practice). Eviction is CLOCK: an entry
 * read since the hand last passed is kept one more round. Memory: the budget counts the states' bytes, 72
 * bytes an entry (its allocation's header and its place in the entries' array) and the table (16 bytes
 * a slot); the array's spare room (up to as much again as its entries' places, just after it doubled) is
 * not counted. Pure memory: no I/O,
 * no LMDB. Must never: hand out an entry under another head than the one asked with; hold a state past state_cache_drop
 * (erasure: st_states_committed drops the patient after its erasure's commit, after that commit's puts).
 */
#ifndef MS_STATE_CACHE_H
#define MS_STATE_CACHE_H

#include "base/util.h"

typedef struct state_cache state_cache;

typedef struct {
    uint64_t hits, misses, entries, bytes, evictions;
    uint64_t probes; /* slots looked at by lookups, inserts and deletions' shifts (a few per call when healthy) */
} state_cache_stats;

/* A cache of at most budget bytes; NULL when budget is 0 (no cache: every call below takes NULL). */
state_cache *state_cache_new(uint64_t budget);
void state_cache_free(state_cache *c);
/* Patient number's state if it was taken at head `head`: copied into mem (*out, *len), true. */
bool state_cache_get(state_cache *c, uint64_t number, uint64_t head, arena *mem, const unsigned char **out,
                     size_t *len);
/* The patient's newest entry of each kind as of `head`, if its entry holds them at that head. */
bool state_cache_newest(state_cache *c, uint64_t number, uint64_t head, uint64_t newest[3]);
/* Keep (number, head, state), replacing the patient's entry (without the newest entries: state_cache_rehead
 * gives them); evicts to stay within the budget. A state larger than an eighth of the budget is not kept. */
void state_cache_put(state_cache *c, uint64_t number, uint64_t head, const void *state, size_t len);
/* The patient's head moved from `from` to `to` by entries that leave its latest state as it was (a record's
 * index entry, a public copy; from == to: the state was just put at `to`): its entry taken at `from` now
 * counts at `to`, with the newest entry of each kind as of `to` (NULL: unknown); one taken at another head
 * goes. */
void state_cache_rehead(state_cache *c, uint64_t number, uint64_t from, uint64_t to, const uint64_t newest[3]);
void state_cache_drop(state_cache *c, uint64_t number);
state_cache_stats state_cache_stats_of(state_cache *c);

#endif
