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

#include <stddef.h>
#include <stdint.h>

int bench_main(int argc, char **argv);

/* Synthetic identity number `identity` under `seed`: a name ("First Last N") and a real date of
 * birth. The same function names the bench's patients and `medstream preload`'s. */
void bench_identity(uint64_t seed, uint64_t identity, char *name, size_t cap, int *year, int *month, int *day);

#endif
