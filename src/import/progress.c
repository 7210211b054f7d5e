/*
 * progress.c - an import's progress lines, summary pieces and reason classes (see progress.h).
 */
#include "import/progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void format_count(char *out, size_t cap, uint64_t n)
{
    char digits[24];
    int len = snprintf(digits, sizeof digits, "%llu", (unsigned long long)n);
    size_t at = 0;
    for (int i = 0; i < len && at + 2 < cap; i++) {
        if (i && (len - i) % 3 == 0) out[at++] = ',';
        out[at++] = digits[i];
    }
    out[at] = 0;
}

void format_size(char *out, size_t cap, uint64_t bytes)
{
    static const char *const units[] = {"B", "KB", "MB", "GB", "TB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1000 && u < 4) {
        v /= 1000;
        u++;
    }
    if (u == 0)
        snprintf(out, cap, "%llu B", (unsigned long long)bytes);
    else
        snprintf(out, cap, v < 10 ? "%.1f %s" : "%.0f %s", v, units[u]);
}

void format_duration(char *out, size_t cap, double s)
{
    if (s < 0) s = 0;
    if (s < 60) {
        snprintf(out, cap, "%.1f s", s);
        return;
    }
    unsigned long t = (unsigned long)(s + 0.5);
    if (t < 3600)
        snprintf(out, cap, "%lum%02lus", t / 60, t % 60);
    else
        snprintf(out, cap, "%luh%02lum", t / 3600, t % 3600 / 60);
}

/* The rates of a view: rows/s and file MB/s this run, and the seconds left (-1: unknown). */
static void rates(const progress_view *v, double *rows_s, double *bytes_s, double *eta)
{
    double t = v->elapsed > 0.001 ? v->elapsed : 0.001;
    *rows_s = (double)v->counts.rows / t;
    *bytes_s = (double)(v->file_done - v->file_at_start) / t;
    *eta = *bytes_s > 0 && v->file_total >= v->file_done ? (double)(v->file_total - v->file_done) / *bytes_s : -1;
}

static int percent(const progress_view *v)
{
    if (!v->file_total) return 100;
    return (int)((double)v->file_done * 100.0 / (double)v->file_total);
}

/* "1.2 GB/2.6 GB  16,400 rows/s  320 MB/s  ETA 1m20s" */
static void figures(buf *out, const progress_view *v)
{
    double rows_s, bytes_s, eta;
    rates(v, &rows_s, &bytes_s, &eta);
    char done[32], total[32], rs[32], bs[32], left[32] = "-";
    format_size(done, sizeof done, v->file_done);
    format_size(total, sizeof total, v->file_total);
    format_count(rs, sizeof rs, (uint64_t)rows_s);
    format_size(bs, sizeof bs, (uint64_t)bytes_s);
    if (eta >= 0) format_duration(left, sizeof left, eta);
    buf_printf(out, "%s/%s  %s rows/s  %s/s  ETA %s", done, total, rs, bs, left);
}

void progress_bar(buf *out, const progress_view *v, int columns)
{
    buf tail = {0};
    figures(&tail, v);
    int pct = percent(v);
    if (pct > 100) pct = 100;
    /* name [bar] pct% figures: the bar takes what the rest leaves, between 10 and 40 columns */
    int name_len = (int)strlen(v->name);
    if (name_len > 24) name_len = 24;
    int width = columns - name_len - (int)tail.len - 12;
    if (width > 40) width = 40;
    if (width < 10) width = 10;
    int fill = width * pct / 100;
    buf_printf(out, "%.*s [", name_len, v->name);
    for (int i = 0; i < width; i++)
        buf_putc(out, i < fill ? '=' : i == fill ? '>' : ' ');
    buf_printf(out, "] %3d%%  %s", pct, tail.data);
    buf_free(&tail);
}

void progress_line(buf *out, const progress_view *v)
{
    char rows[32], rejected[32];
    format_count(rows, sizeof rows, v->counts.rows);
    format_count(rejected, sizeof rejected, v->counts.rejected);
    buf_printf(out, "import: %s: %d%%  %s rows (%s rejected)  ", v->name, percent(v), rows, rejected);
    figures(out, v);
    buf_putc(out, '\n');
}

/* ---- reasons ---- */

/* Digits at p: the byte after them, or NULL if there are none. */
static const char *digits(const char *p)
{
    const char *d = p;
    while (*d >= '0' && *d <= '9')
        d++;
    return d == p ? NULL : d;
}

const char *reason_text(const char *reason)
{
    const char *p = reason;
    bool range = !strncmp(p, "lines ", 6);
    if (range)
        p += 6;
    else if (!strncmp(p, "line ", 5) || !strncmp(p, "item ", 5))
        p += 5;
    else
        return reason;
    if (!(p = digits(p))) return reason;
    if (range && (*p != '-' || !(p = digits(p + 1)))) return reason;
    if (!strncmp(p, ", byte ", 7) && !(p = digits(p + 7))) return reason; /* the CSV reader's */
    return strncmp(p, ": ", 2) ? reason : p + 2;
}

void reason_class(const char *reason, char *out, size_t cap)
{
    const char *r = reason_text(reason);
    /* the writer's refusal names the record id, which a client chose: never shown */
    if (!strncmp(r, "record ", 7) && strstr(r, " exists; a new version needs records:update")) {
        snprintf(out, cap, "record exists; a new version needs records:update");
        return;
    }
    size_t at = 0;
    bool quoted = false; /* a field's name, quoted, keeps its digits */
    for (const char *p = r; *p && at + 2 < cap;) {
        if (*p == '"') quoted = !quoted;
        if (!quoted && *p >= '0' && *p <= '9') {
            while (*p >= '0' && *p <= '9')
                p++;
            out[at++] = 'N';
        } else {
            out[at++] = *p++;
        }
    }
    out[at] = 0;
}

bool reason_column(const char *reason, char *out, size_t cap)
{
    const char *c = strstr(reason, "column ");
    const char *d = c ? digits(c + 7) : NULL;
    if (d && !strncmp(d, " (\"", 3)) { /* the CSV reader's: column 3 ("Birth Date") */
        const char *q = strstr(d + 3, "\")");
        if (q && q > d + 3) {
            snprintf(out, cap, "%.*s", (int)(q - (d + 3)), d + 3);
            return true;
        }
    }
    static const char *const marks[] = {"field \"", "column \""};
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        const char *p = strstr(reason, marks[i]);
        if (!p) continue;
        p += strlen(marks[i]);
        const char *q = strchr(p, '"');
        if (!q || q == p) continue;
        snprintf(out, cap, "%.*s", (int)(q - p), p);
        return true;
    }
    return false;
}

void reason_table_add(reason_table *t, const char *reason, uint64_t count)
{
    char c[160];
    reason_class(reason, c, sizeof c);
    for (int i = 0; i < t->n; i++) {
        if (!strcmp(t->c[i].text, c)) {
            t->c[i].count += count;
            return;
        }
    }
    if (t->n == REASON_CLASSES_MAX) {
        t->other += count;
        return;
    }
    snprintf(t->c[t->n].text, sizeof t->c[t->n].text, "%s", c);
    t->c[t->n++].count = count;
}

void reason_table_print(buf *out, const reason_table *t, int max)
{
    int order[REASON_CLASSES_MAX];
    for (int i = 0; i < t->n; i++)
        order[i] = i;
    for (int i = 1; i < t->n; i++) /* insertion sort by count, most first (32 at most) */
        for (int j = i; j > 0 && t->c[order[j]].count > t->c[order[j - 1]].count; j--) {
            int x = order[j];
            order[j] = order[j - 1];
            order[j - 1] = x;
        }
    uint64_t rest = t->other;
    char n[32];
    for (int i = 0; i < t->n; i++) {
        if (i >= max) {
            rest += t->c[order[i]].count;
            continue;
        }
        format_count(n, sizeof n, t->c[order[i]].count);
        buf_printf(out, "  %12s  %s\n", n, t->c[order[i]].text);
    }
    if (rest) {
        format_count(n, sizeof n, rest);
        buf_printf(out, "  %12s  other reasons\n", n);
    }
}
