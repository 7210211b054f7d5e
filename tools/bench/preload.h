/*
 * preload.h - `medstream preload`: synthetic patients for benchmarks (see preload.c).
 */
#ifndef MS_PRELOAD_H
#define MS_PRELOAD_H

/* argv[1] == "preload". Exit code: 0 ok, 1 runtime failure, 2 usage. */
int preload_main(int argc, char **argv);

#endif
