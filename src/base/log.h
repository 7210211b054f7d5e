/*
 * log.h - the server's one log: every line the running server writes about itself (start, stop, the
 * HTTP access log, Kafka, the sinks, the writer) goes through here, as text or as JSON.
 *
 * Contract:
 *   - one line per call, written with one write(2) under a lock, so lines of different threads never
 *     interleave; standard error by default (journald under systemd);
 *   - text (the default): "medstream: MSG" followed by the fields as key=value (values quoted with JSON
 *     escapes when they hold a space, a quote, '=' or a control character), control characters in MSG
 *     replaced by spaces: one line, always;
 *   - JSON (--log-format json): one object per line, {"time","level","event","msg", then the fields as
 *     members}, strings escaped (invalid UTF-8 becomes U+FFFD), so every line parses;
 *   - event names are fixed dotted identifiers ("http.request", "kafka.assigned"): a program can select
 *     lines without reading messages; field keys are fixed identifiers too, never time/level/event/msg;
 *   - configured once, before any thread logs (log_configure is not synchronized with logging).
 *
 * What it must never do: carry PHI. Callers pass messages and fields that name things (routes, fields,
 * counts, error classes), never a record's values, a request's path or query string or body: this
 * module cannot tell PHI from anything else, so the rule is the callers'. It also never fails a caller:
 * a line that cannot be written is dropped.
 */
#ifndef MS_LOG_H
#define MS_LOG_H

#include "base/util.h"

typedef enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;
typedef enum { LOG_FORMAT_TEXT, LOG_FORMAT_JSON } log_format;

typedef enum { LOG_F_STR, LOG_F_INT, LOG_F_UINT, LOG_F_MS } log_field_kind;

/* One key/value of a line. text_hidden: the message already says it in words, so a text line leaves it
 * out (a JSON line always has it). */
typedef struct {
    const char *key;
    log_field_kind kind;
    bool text_hidden;
    union {
        const char *s; /* NULL is written as "-" */
        int64_t i;
        uint64_t u;
        double ms; /* a duration in milliseconds, written with 3 decimals */
    } v;
} log_field;

#define LOG_STR(k, x) ((log_field){.key = (k), .kind = LOG_F_STR, .v.s = (x)})
#define LOG_INT(k, x) ((log_field){.key = (k), .kind = LOG_F_INT, .v.i = (int64_t)(x)})
#define LOG_UINT(k, x) ((log_field){.key = (k), .kind = LOG_F_UINT, .v.u = (uint64_t)(x)})
#define LOG_MS(k, x) ((log_field){.key = (k), .kind = LOG_F_MS, .v.ms = (double)(x)})
/* the same, left out of text lines (the message says it) */
#define LOG_STR_J(k, x) ((log_field){.key = (k), .kind = LOG_F_STR, .text_hidden = true, .v.s = (x)})
#define LOG_INT_J(k, x) ((log_field){.key = (k), .kind = LOG_F_INT, .text_hidden = true, .v.i = (int64_t)(x)})
#define LOG_NFIELDS(a) (sizeof(a) / sizeof((a)[0]))

/* Choose the format and the lowest level written (default: text, LOG_INFO). */
void log_configure(log_format format, log_level min_level);
/* Lines go to this descriptor from now on (default 2, standard error); for tests. */
void log_set_fd(int fd);
/* "text" or "json" into *out; false for anything else. */
bool log_format_parse(const char *name, log_format *out);
bool log_enabled(log_level level);
const char *log_level_name(log_level level);

/* A line: event and a printf-style message. */
void ms_log(log_level level, const char *event, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A line with fields. */
void ms_log_fields(log_level level, const char *event, const log_field *fields, size_t nfields, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* A line said by one command (text: "medstream CMD: MSG", as the command line has always said it). */
void ms_log_cmd(log_level level, const char *event, const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The line itself, '\n' included, appended to out (pure; what the functions above write). prefix: the
 * text format's "medstream" or "medstream CMD". */
void log_format_line(buf *out, log_format format, const char *prefix, int64_t time_us, log_level level,
                     const char *event, const char *msg, const log_field *fields, size_t nfields);

#endif
