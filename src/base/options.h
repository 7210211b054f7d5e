/*
 * options.h - one table per command of its flags (name, type, default, help), from which parsing,
 * validation and --help all come (librdkafka's single-source-of-truth configuration table).
 *
 * Contract: options_parse never exits; it returns -1 and a message naming the flag on any error.
 */
#ifndef MS_OPTIONS_H
#define MS_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    OPT_STRING, /* const char * */
    OPT_BYTES,  /* uint64_t; accepts K/M/G/KiB/MiB/GiB suffixes */
    OPT_INT,    /* long */
    OPT_FLAG,   /* bool */
    OPT_LIST,   /* opt_list: repeatable, each occurrence appends one value */
} opt_type;

#define OPT_LIST_MAX 32
typedef struct {
    const char *v[OPT_LIST_MAX + 1]; /* NULL-ended */
    int n;
} opt_list;

typedef struct {
    const char *name; /* "--data" */
    opt_type type;
    const char *def; /* default as text, or NULL (required when marked so) */
    bool required;
    const char *help;
    void *target;
} option;

/* Parse argv[first..]. Positional arguments are collected into pos (up to maxpos). Returns the number
 * of positionals, -1 on error (message in err), or -2 when --help was asked. */
int options_parse(const option *opts, int argc, char **argv, int first, const char **pos, int maxpos, char *err,
                  size_t errlen);
void options_help(FILE *f, const char *usage, const char *about, const option *opts);
bool parse_bytes(const char *s, uint64_t *out);

#endif
