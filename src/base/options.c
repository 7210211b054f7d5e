/*
 * options.c - table-driven command line parsing (see options.h).
 */
#include "base/options.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

bool parse_bytes(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno || *s == '-') return false;
    uint64_t mult = 1;
    if (*end) {
        if (!strcmp(end, "K") || !strcmp(end, "KiB") || !strcmp(end, "k"))
            mult = 1024;
        else if (!strcmp(end, "M") || !strcmp(end, "MiB"))
            mult = 1024 * 1024;
        else if (!strcmp(end, "G") || !strcmp(end, "GiB"))
            mult = 1024ULL * 1024 * 1024;
        else if (!strcmp(end, "T") || !strcmp(end, "TiB"))
            mult = 1024ULL * 1024 * 1024 * 1024;
        else
            return false;
    }
    if (v > UINT64_MAX / mult) return false;
    *out = v * mult;
    return true;
}

static bool set_value(const option *o, const char *v, char *err, size_t errlen)
{
    switch (o->type) {
    case OPT_STRING: *(const char **)o->target = v; return true;
    case OPT_BYTES:
        if (!parse_bytes(v, (uint64_t *)o->target)) {
            snprintf(err, errlen, "%s: expected a size in bytes (e.g. 1048576 or 64MiB), got '%s'", o->name, v);
            return false;
        }
        return true;
    case OPT_INT: {
        char *end;
        errno = 0;
        long x = strtol(v, &end, 10);
        if (end == v || *end || errno) {
            snprintf(err, errlen, "%s: expected an integer, got '%s'", o->name, v);
            return false;
        }
        *(long *)o->target = x;
        return true;
    }
    case OPT_FLAG: *(bool *)o->target = true; return true;
    case OPT_LIST: {
        opt_list *l = o->target;
        if (l->n >= OPT_LIST_MAX) {
            snprintf(err, errlen, "%s: at most %d times", o->name, OPT_LIST_MAX);
            return false;
        }
        l->v[l->n++] = v;
        l->v[l->n] = NULL;
        return true;
    }
    }
    return false;
}

int options_parse(const option *opts, int argc, char **argv, int first, const char **pos, int maxpos, char *err,
                  size_t errlen)
{
    int npos = 0;
    size_t nopts = 0;
    while (opts[nopts].name)
        nopts++;
    bool seen[64] = {0};
    for (size_t i = 0; i < nopts; i++)
        if (opts[i].def && !set_value(&opts[i], opts[i].def, err, errlen)) return -1;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return -2;
        if (strncmp(a, "--", 2) != 0 || !strcmp(a, "--")) {
            if (npos >= maxpos) {
                snprintf(err, errlen, "unexpected argument '%s'", a);
                return -1;
            }
            pos[npos++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        size_t k = 0;
        while (k < nopts && !(strlen(opts[k].name) == nl && !strncmp(opts[k].name, a, nl)))
            k++;
        if (k == nopts) {
            snprintf(err, errlen, "unknown option '%.*s'", (int)nl, a);
            return -1;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (opts[k].type == OPT_FLAG) {
            if (v) {
                snprintf(err, errlen, "%s takes no value", opts[k].name);
                return -1;
            }
        } else if (!v) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "%s needs a value", opts[k].name);
                return -1;
            }
            v = argv[++i];
        }
        if (!set_value(&opts[k], v ? v : "", err, errlen)) return -1;
        if (k < 64) seen[k] = true;
    }
    for (size_t i = 0; i < nopts && i < 64; i++) {
        if (opts[i].required && !seen[i]) {
            snprintf(err, errlen, "%s is required", opts[i].name);
            return -1;
        }
    }
    return npos;
}

void options_help(FILE *f, const char *usage, const char *about, const option *opts)
{
    fprintf(f, "usage: %s\n\n%s\n\noptions:\n", usage, about);
    for (const option *o = opts; o->name; o++) {
        const char *arg = o->type == OPT_FLAG    ? ""
                          : o->type == OPT_BYTES ? " BYTES"
                          : o->type == OPT_INT   ? " N"
                          : o->type == OPT_LIST  ? " VALUE (repeatable)"
                                                 : " VALUE";
        char left[64];
        snprintf(left, sizeof left, "%s%s", o->name, arg);
        fprintf(f, "  %-24s %s", left, o->help);
        if (o->required)
            fprintf(f, " (required)");
        else if (o->def && o->type != OPT_FLAG)
            fprintf(f, " (default %s)", o->def);
        fputc('\n', f);
    }
    fprintf(f, "  %-24s %s\n", "--help", "show this help");
}
