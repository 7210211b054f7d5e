/*
 * main.c - medstream-bench: the benchmark tools, kept out of the server binary. `medstream bench` and
 * `medstream preload` run this program (found beside the medstream binary), so the command line stays
 * as DESIGN.md names it while the server carries none of the load generator.
 *
 *   medstream-bench bench [options]          load generator and freshness probe (bench.h)
 *   medstream-bench preload DIR --patients N synthetic patients for benchmarks (preload.h)
 *   medstream-bench gen-import FILE --records N  a file of synthetic records for import benchmarks
 *
 * Exit codes as medstream's: 0 ok, 1 runtime failure, 2 usage.
 */
#include "bench.h"
#include "gen_import.h"
#include "preload.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "bench")) return bench_main(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "preload")) return preload_main(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "gen-import")) return gen_import_main(argc, argv);
    FILE *f = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) ? stdout : stderr;
    fprintf(f, "usage: medstream-bench bench [options] | preload DIR --patients N [options] | gen-import FILE "
               "--records N [options]   (or: medstream bench|preload|gen-import ...)\n");
    return f == stdout ? 0 : 2;
}
