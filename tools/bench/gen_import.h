/*
 * gen_import.h - `medstream gen-import`: a file of synthetic records for import benchmarks (see
 * gen_import.c).
 */
#ifndef MS_GEN_IMPORT_H
#define MS_GEN_IMPORT_H

/* argv[1] == "gen-import". Exit code: 0 ok, 1 runtime failure, 2 usage. */
int gen_import_main(int argc, char **argv);

#endif
