/*
 * bench.h: `medstream bench`, the load generator and freshness probe.
 *
 * What it is for: measuring a running medstream server against the targets in DESIGN.md
 * (ingest records/min, send-to-visible freshness, point-read latency while ingesting, disk bytes
 * written per byte ingested, peak memory). It sends synthetic NDJSON patient records to
 * POST /v1/records over several keep-alive connections, probes GET /v1/records/{id} for sampled
 * records until they are visible, reads GET /v1/patients/{id} for patient ids learned from the
 * answers, and reads /metrics before and after. It prints the figures (and, with --json, one
 * JSON object line) on stdout; progress goes to stderr once a second when stderr is a TTY.
 *
 * Contract: bench_main() parses its options with the option model of base/options.h (argv[0] is
 * "bench"; `--help` lists them all, `--config FILE` reads them from a file), runs to completion and
 * returns the exit code: 0 ok, 1 runtime failure (server unreachable, any failed request or probe,
 * out of memory), 2 usage error. It frees everything it allocates
 * and leaves no thread running.
 *
 * What it must never do: exit() or abort(), touch the server's data directory, change process-
 * wide state beyond what it restores (it installs no signal handlers), or send anything but the
 * records it generates (it never reads user data).
 */
#ifndef MEDSTREAM_BENCH_H
#define MEDSTREAM_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int bench_main(int argc, char **argv);

/* Synthetic identity number `identity` under `seed`: a name ("First Last N") and a real date of
 * birth. The same function names the bench's patients and `medstream preload`'s. */
void bench_identity(uint64_t seed, uint64_t identity, char *name, size_t cap, int *year, int *month, int *day);

/* The bench's records for other tools (gen-import): record seq of a generator is fully determined by
 * (seed, seq) as in the load generator, written as one NDJSON line or as one CSV row of the columns of
 * BENCH_CSV_HEADER (address and notes quoted), of about `size` bytes. Updates re-use a record id from at
 * least `batch` records earlier. NULL when out of memory. */
typedef struct bench_gen bench_gen;
#define BENCH_CSV_HEADER "record_id,name,dob,ssn,phone,address,favorite_color,type,ts,notes\n"
bench_gen *bench_gen_new(uint64_t seed, uint64_t size, double repeat_share, double update_share, uint64_t batch,
                         const char *run_id);
/* Returns the length written at dst (cap >= size + 1024), 0 if it did not fit. */
size_t bench_gen_record(const bench_gen *g, uint64_t seq, bool csv, char *dst, size_t cap);
void bench_gen_free(bench_gen *g);

#endif
