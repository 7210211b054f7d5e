/*
 * options.h - the one option model of medstream's command lines (the server's commands and the
 * benchmark tools): a table per command of its options, each with its name, type, range or allowed
 * values, default, whether it is required, a metavar and a help line. From that table alone come the
 * parsing, the validation (messages name the option and what it accepts), `--help`, the `--config FILE`
 * format and the generated reference docs/options.md (librdkafka's configuration property table is the
 * model: one table per truth).
 *
 * Tables are written with designated initializers, so that a field left out is zero and means "none":
 * no default, not required, no range, the metavar of the type:
 *
 *     const option opts[] = {
 *         {.name = "--data", .type = OPT_STRING, .target = &data, .required = true, .metavar = "DIR",
 *          .help = "data directory"},
 *         {.name = "--kafka-batch", .type = OPT_UINT, .target = &batch, .def = "1000", .min = 1, .max = 1000000,
 *          .help = "messages per batch"},
 *         {.name = "--config", .type = OPT_CONFIG, .help = "read options from FILE"},
 *         {0},
 *     };
 *
 * The config file (OPT_CONFIG; the format is chosen and justified in options.c): UTF-8 text, one
 * `key = value` per line, the key being an option's name without its leading `--`; `#` at the start of a
 * line makes it a comment; a repeatable key may appear on several lines. The command line overrides the
 * file: a single-valued option given on both takes the command line's value, a repeatable one gets the
 * command line's values after the file's.
 *
 * Contract: options_parse sets every target of the table (its default, or zero/NULL/false/empty) and then
 * the values given, checks every one against its type and range, and answers a status; a usage error's
 * message (in options_args.err) names the option, or the file, line and key, and what would be accepted.
 * String values point into argv or into the config file's text, which options_args keeps until
 * options_args_free. A default that does not pass its own option's checks is reported as a usage error
 * naming the table's option, so every table is checked each time it is used.
 *
 * What it must never do: exit, print anywhere but the FILEs it is given, keep state between calls, or
 * echo a config line that failed to split (it may hold a secret): messages quote values only where a
 * typed value was refused.
 */
#ifndef MS_OPTIONS_H
#define MS_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    OPT_STRING,  /* const char *: non-empty, no line breaks */
    OPT_UINT,    /* uint64_t: a whole number within [min, max] */
    OPT_BYTES,   /* uint64_t bytes within [min, max]: 1048576, 64K/KiB, 64M/MiB, 1G/GiB, 1T/TiB */
    OPT_SECONDS, /* uint64_t seconds within [min, max]: 90, or with a unit: 90s, 15m, 1h, 2d */
    OPT_MILLIS,  /* uint64_t milliseconds within [min, max]: 50, or with a unit: 50ms, 2s, 1m */
    OPT_SHARE,   /* double in 0..1 */
    OPT_ENUM,    /* int: the index in choices of the value given */
    OPT_FLAG,    /* bool: no value on the command line (true); true or false in a config file */
    OPT_LIST,    /* opt_list: repeatable, each occurrence appends one value (a string) */
    OPT_CONFIG,  /* const char * (target optional): a config file setting this table's other options */
} opt_type;

#define OPT_LIST_MAX 32
typedef struct {
    const char *v[OPT_LIST_MAX + 1]; /* NULL-ended */
    int n;
} opt_list;

typedef struct {
    const char *name;           /* "--data"; NULL ends the table */
    opt_type type;              /* what the value is, and the C type of *target (above) */
    void *target;               /* where the value goes (may be NULL only for OPT_CONFIG) */
    const char *def;            /* default, written as a value would be ("64MiB"); NULL: none */
    bool required;              /* must be given, on the command line or in the config file */
    uint64_t min, max;          /* numeric types: accepted range, in the target's unit; max 0: no upper bound */
    const char *const *choices; /* OPT_ENUM: the allowed values, NULL-ended */
    const char *unlimited;      /* numeric types: a word also accepted ("none"), meaning no limit (UINT64_MAX) */
    const char *metavar;        /* the value's name in help ("DIR", "HOST:PORT"); NULL: from the type */
    const char *help;           /* one line: what it does (the default and range are added from the fields) */
} option;

/* A command as its help and the reference show it. */
typedef struct {
    const char *name;  /* "serve", "user add": names it in messages and the reference */
    const char *usage; /* "medstream serve --data DIR [options]" */
    const char *about; /* what it does, a paragraph (\n between lines) */
    const option *opts;
} options_command;

typedef enum {
    OPTIONS_OK,        /* every target set; positionals in args->pos */
    OPTIONS_HELP,      /* --help (or -h) was given: print options_help */
    OPTIONS_REFERENCE, /* --help-markdown (not listed in help) was given: print options_reference */
    OPTIONS_USAGE,     /* a usage error, described in args->err (exit code 2) */
} options_status;

#define OPTIONS_POS_MAX 64
typedef struct {
    const char *pos[OPTIONS_POS_MAX]; /* positional arguments, in order */
    int npos;
    char err[512];
    char *config_text; /* the --config file's text, which string values point into; see options_args_free */
} options_args;

/* Parse argv[first..argc) against opts (at most maxpos positionals, maxpos <= OPTIONS_POS_MAX). `--`
 * ends the options. *args is reset first; free it with options_args_free whatever the status, once the
 * targets' strings are no longer used. */
options_status options_parse(const option *opts, int argc, char **argv, int first, int maxpos, options_args *args);
void options_args_free(options_args *args);

/* The whole usual dance of a command: options_parse, then on --help the help on out, on --help-markdown the
 * reference section on out, on a usage error "medstream NAME: ERROR (see medstream NAME --help)" on err.
 * Returns true if the command is to run; false with *exit_code 0 (help printed) or 2 (usage error). */
bool options_parse_command(const options_command *cmd, int argc, char **argv, int first, int maxpos, options_args *args,
                           FILE *out, FILE *err, int *exit_code);

/* --help: the usage line, the paragraph, then a line per option with its type, range and default. */
void options_help(FILE *f, const options_command *cmd);
/* The command's section of docs/options.md: a heading, the usage, the paragraph and a Markdown table. */
void options_reference(FILE *f, const options_command *cmd);
/* The sections of docs/options.md on values of each type and on the config file's format. */
void options_reference_formats(FILE *f);

/* A size in bytes as options take it (1048576, 64K, 64KiB, 1M, 1MiB, 1G, 1GiB, 1T, 1TiB). */
bool parse_bytes(const char *s, uint64_t *out);
/* A duration as options take it, in milliseconds: a whole number in `bare_ms` units, or with a unit ms,
 * s, m, h, d (90s, 15m, 72h, 2d). */
bool parse_duration_ms(const char *s, uint64_t bare_ms, uint64_t *out);
/* A duration in the largest unit that writes it exactly: 0, 50ms, 90s, 15m, 1h, 365d. */
void format_duration_ms(char *out, size_t cap, uint64_t ms);
/* A number of bytes in the largest binary unit that writes it exactly: "64", "64KiB", "1GiB". */
void format_bytes(char *out, size_t cap, uint64_t v);

#endif
