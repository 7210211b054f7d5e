/*
 * gen_import.c - `medstream gen-import FILE --records N`: a file of the load generator's synthetic
 * patient records (bench.h, bench_gen), as NDJSON or as CSV with a header row, for benchmarks of
 * `medstream import` and of other loaders on the same bytes (scripts/bench_import.sh).
 *
 * Contract: the same options write the same bytes, but for "ts" (within the 30 days before the run);
 * the file is written through a 8 MiB buffer, never held; an existing FILE is replaced. Exit codes as
 * medstream's.
 *
 * What it must never do: write anything but synthetic records (no real data is read).
 */
#include "gen_import.h"

#include "bench.h"
#include "base/options.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUT_BUF ((size_t)8 << 20)

static const char *const format_names[] = {"ndjson", "csv", NULL};

static int gen_run(const char *path, uint64_t records, uint64_t size, bool csv, uint64_t seed, double repeat,
                   double update, const char *run_id)
{
    bench_gen *g = bench_gen_new(seed, size, repeat, update, 1000, run_id);
    size_t cap = size + 4096;
    char *row = malloc(cap);
    FILE *f = fopen(path, "w");
    if (!g || !row || !f) {
        fprintf(stderr, "medstream gen-import: %s: %s\n", path, !f ? strerror(errno) : "out of memory");
        if (f) fclose(f);
        free(row);
        bench_gen_free(g);
        return 1;
    }
    setvbuf(f, NULL, _IOFBF, OUT_BUF);
    bool ok = !csv || fputs(BENCH_CSV_HEADER, f) >= 0;
    uint64_t bytes = 0;
    for (uint64_t seq = 0; ok && seq < records; seq++) {
        size_t n = bench_gen_record(g, seq, csv, row, cap);
        ok = n > 0 && fwrite(row, 1, n, f) == n;
        bytes += n;
    }
    ok = fclose(f) == 0 && ok;
    if (!ok)
        fprintf(stderr, "medstream gen-import: %s: write failed: %s\n", path, strerror(errno));
    else
        printf("%s: %" PRIu64 " records, %" PRIu64 " bytes (%s)\n", path, records, bytes, csv ? "csv" : "ndjson");
    free(row);
    bench_gen_free(g);
    return ok ? 0 : 1;
}

int gen_import_main(int argc, char **argv)
{
    uint64_t records = 0, size = 0, seed = 0;
    double repeat = 0, update = 0;
    int format = 0;
    const char *run_id = NULL;
    /* clang-format off */
    const option opts[] = {
        {.name = "--records", .type = OPT_UINT, .target = &records, .required = true, .min = 1,
         .max = UINT64_C(9999999999), .help = "records to write"},
        {.name = "--size", .type = OPT_BYTES, .target = &size, .def = "20480", .min = 1024, .max = 16u << 20,
         .help = "approximate size of each record"},
        {.name = "--format", .type = OPT_ENUM, .target = &format, .def = "ndjson", .choices = format_names,
         .help = "NDJSON lines, or CSV with a header row (record_id,name,dob,ssn,phone,address,favorite_color,"
                 "type,ts,notes)"},
        {.name = "--seed", .type = OPT_UINT, .target = &seed, .def = "1", .help = "generator seed"},
        {.name = "--repeat-share", .type = OPT_SHARE, .target = &repeat, .def = "0.5",
         .help = "share of records whose patient identity came before"},
        {.name = "--update-share", .type = OPT_SHARE, .target = &update, .def = "0.05",
         .help = "share of records re-using an earlier record_id with new content"},
        {.name = "--run-id", .type = OPT_STRING, .target = &run_id, .def = "import", .metavar = "S",
         .help = "prefix of the record ids"},
        {0},
    };
    /* clang-format on */
    const options_command cmd = {"gen-import", "medstream gen-import FILE --records N [options]",
                                 "Write a file of synthetic patient records (the load generator's), NDJSON or CSV,\n"
                                 "for import benchmarks (scripts/bench_import.sh).",
                                 opts};
    options_args a;
    int code;
    if (options_parse_command(&cmd, argc, argv, 2, 1, &a, stdout, stderr, &code)) {
        if (a.npos == 1) {
            code = gen_run(a.pos[0], records, size, format == 1, seed, repeat, update, run_id);
        } else {
            fprintf(stderr, "medstream gen-import: expected the file to write (see medstream gen-import --help)\n");
            code = 2;
        }
    }
    options_args_free(&a);
    return code;
}
