/*
 * log.c - the server's log lines, text or JSON (see log.h).
 *
 * DESIGN: a line is formatted into a buffer of the calling thread (log_format_line, pure), then written
 * with one write(2) while a mutex is held, so lines from the connection threads, the writer, Kafka's
 * threads and the sinks never interleave, whatever the descriptor is (pipe, file, terminal). The lock
 * is held only for the write. The format and level are plain variables set once at start-up.
 *
 * What it must never do: block a caller on a failing descriptor (a line that cannot be written is
 * dropped: EAGAIN, EPIPE and the rest), write a line without its '\n', or let a message's control
 * characters split one line into two.
 */
#include "base/log.h"

#include "base/fd_io.h"
#include "base/json_write.h"
#include "base/timefmt.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static log_format g_format = LOG_FORMAT_TEXT;
static log_level g_min_level = LOG_INFO;
static int g_fd = 2;
static pthread_mutex_t g_write_lock = PTHREAD_MUTEX_INITIALIZER;

void log_configure(log_format format, log_level min_level)
{
    g_format = format;
    g_min_level = min_level;
}

void log_set_fd(int fd) { g_fd = fd; }

bool log_format_parse(const char *name, log_format *out)
{
    if (strcmp(name, "text") == 0) return *out = LOG_FORMAT_TEXT, true;
    if (strcmp(name, "json") == 0) return *out = LOG_FORMAT_JSON, true;
    return false;
}

bool log_enabled(log_level level) { return level >= g_min_level; }

const char *log_level_name(log_level level)
{
    switch (level) {
    case LOG_DEBUG: return "debug";
    case LOG_INFO: return "info";
    case LOG_WARN: return "warn";
    case LOG_ERROR: return "error";
    }
    return "info";
}

static bool is_control(unsigned char c) { return c < 0x20 || c == 0x7f; }

/* A text value as is when it is one plain word, else quoted with JSON escapes. */
static void text_value(buf *out, const char *s)
{
    bool plain = *s != 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && plain; p++)
        plain = !is_control(*p) && *p != ' ' && *p != '"' && *p != '=' && *p != '\\';
    if (plain)
        buf_puts(out, s);
    else
        jw_cstr(out, s);
}

static void field_value(buf *out, log_format format, const log_field *f)
{
    switch (f->kind) {
    case LOG_F_STR: {
        const char *s = f->v.s ? f->v.s : "-";
        if (format == LOG_FORMAT_JSON)
            jw_cstr(out, s);
        else
            text_value(out, s);
        break;
    }
    case LOG_F_INT: buf_printf(out, "%lld", (long long)f->v.i); break;
    case LOG_F_UINT: buf_printf(out, "%llu", (unsigned long long)f->v.u); break;
    case LOG_F_MS:
        if (isfinite(f->v.ms))
            buf_printf(out, "%.3f", f->v.ms);
        else
            buf_puts(out, format == LOG_FORMAT_JSON ? "null" : "-");
        break;
    }
}

void log_format_line(buf *out, log_format format, const char *prefix, int64_t time_us, log_level level,
                     const char *event, const char *msg, const log_field *fields, size_t nfields)
{
    if (format == LOG_FORMAT_JSON) {
        buf_puts(out, "{\"time\":");
        jw_time(out, time_us);
        buf_printf(out, ",\"level\":\"%s\",\"event\":", log_level_name(level));
        jw_cstr(out, event);
        buf_puts(out, ",\"msg\":");
        jw_cstr(out, msg);
        for (size_t i = 0; i < nfields; i++) {
            buf_putc(out, ',');
            jw_cstr(out, fields[i].key);
            buf_putc(out, ':');
            field_value(out, format, &fields[i]);
        }
        buf_puts(out, "}\n");
        return;
    }
    buf_puts(out, prefix);
    buf_puts(out, ": ");
    size_t at = out->len;
    buf_puts(out, msg);
    for (size_t i = at; i < out->len; i++)
        if (is_control((unsigned char)out->data[i])) out->data[i] = ' ';
    for (size_t i = 0; i < nfields; i++) {
        if (fields[i].text_hidden) continue;
        buf_putc(out, ' ');
        buf_puts(out, fields[i].key);
        buf_putc(out, '=');
        field_value(out, format, &fields[i]);
    }
    buf_putc(out, '\n');
}

static void write_line(const char *data, size_t len)
{
    pthread_mutex_lock(&g_write_lock);
    (void)ms_write_full(g_fd, data, len, -1, NULL); /* a failure drops the line: logging never fails a caller */
    pthread_mutex_unlock(&g_write_lock);
}

static void emit(log_level level, const char *event, const char *prefix, const log_field *fields, size_t nfields,
                 const char *fmt, va_list ap)
{
    if (!log_enabled(level)) return;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    buf line = {0};
    log_format_line(&line, g_format, prefix, ms_now_us(), level, event, msg, fields, nfields);
    write_line(line.data, line.len);
    buf_free(&line);
}

void ms_log(log_level level, const char *event, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(level, event, "medstream", NULL, 0, fmt, ap);
    va_end(ap);
}

void ms_log_fields(log_level level, const char *event, const log_field *fields, size_t nfields, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(level, event, "medstream", fields, nfields, fmt, ap);
    va_end(ap);
}

void ms_log_cmd(log_level level, const char *event, const char *cmd, const char *fmt, ...)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "medstream %s", cmd);
    va_list ap;
    va_start(ap, fmt);
    emit(level, event, prefix, NULL, 0, fmt, ap);
    va_end(ap);
}
