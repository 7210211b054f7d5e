/*
 * console_embed.c - the console's asset pipeline (issue 14): reads the files of web/ named on its command
 * line and writes one C file (build/gen/console_assets.c) holding, for each, its bytes, its content type,
 * the path it is served at and the SHA-256 of the served bytes (api/console_assets.h). `make` runs it;
 * the server embeds its output, so the binary serves the console with no file beside it.
 *
 * Contract: index.html is served at "/"; every other file at "/assets/<base>.<12 hex of its SHA-256>.<ext>",
 * so that its answer can be cached forever (a change changes its name). A reference to another file in a
 * text file (HTML, CSS, JavaScript) is rewritten to that file's served path: "./NAME" or '/assets/NAME'
 * inside quotes, or (/assets/NAME) in CSS. A file's hash is taken after its references are rewritten, so
 * a module's name changes when anything it imports changes; a cycle of references is an error. The output
 * depends only on the files' names and bytes (no time, no directory order: the Makefile sorts the list).
 *
 * What it must never do: read anything but the files named, reach the network, or write a partial file
 * under the output name (it writes OUT.tmp and renames it).
 */
#include <openssl/sha.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILES 64

typedef struct {
    char name[128]; /* base name: "app.js" */
    const char *type;
    bool text;
    unsigned char *data; /* after rewriting */
    size_t len;
    bool done;
    char hex[65];
    char path[192]; /* "/" or "/assets/app.0123456789ab.js" */
} asset;

static asset files[MAX_FILES];
static int nfiles;

static int die(const char *what, const char *name)
{
    fprintf(stderr, "console_embed: %s: %s\n", name, what);
    return 1;
}

static const char *type_of(const char *name, bool *text)
{
    static const struct {
        const char *ext, *type;
        bool text;
    } types[] = {
        {".html", "text/html; charset=utf-8", true},
        {".css", "text/css; charset=utf-8", true},
        {".js", "text/javascript; charset=utf-8", true},
        {".svg", "image/svg+xml", true},
        {".json", "application/json", true},
        {".txt", "text/plain; charset=utf-8", true},
        {".png", "image/png", false},
        {".ico", "image/x-icon", false},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i].ext) == 0) {
            *text = types[i].text;
            return types[i].type;
        }
    return NULL;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 65536, n = 0;
    unsigned char *d = malloc(cap);
    size_t got;
    while (d && (got = fread(d + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            unsigned char *bigger = realloc(d, cap *= 2);
            if (!bigger) free(d);
            d = bigger;
        }
    }
    if (ferror(f)) {
        free(d);
        d = NULL;
    }
    fclose(f);
    *len = n;
    return d;
}

/* Does a reference to file t begin at data[i]? Its length (through the name) in *n, 0 if not. The forms:
 * "./NAME" '/assets/NAME' (/assets/NAME): the prefix follows a quote or '(' and the name is followed by
 * the matching close. */
static size_t ref_at(const unsigned char *d, size_t len, size_t i, const asset *t)
{
    static const char *const prefixes[] = {"./", "/assets/"};
    if (i == 0) return 0;
    unsigned char open = d[i - 1];
    unsigned char close = open == '(' ? ')' : open;
    if (open != '"' && open != '\'' && open != '(') return 0;
    for (int p = 0; p < 2; p++) {
        size_t pl = strlen(prefixes[p]), nl = strlen(t->name);
        if (i + pl + nl >= len) continue;
        if (memcmp(d + i, prefixes[p], pl) || memcmp(d + i + pl, t->name, nl)) continue;
        if (d[i + pl + nl] != close) continue;
        return pl + nl;
    }
    return 0;
}

/* Rewrite f's references to the done files; false if it refers to a file not done yet. */
static bool rewrite(asset *f, bool *waiting)
{
    *waiting = false;
    if (!f->text) return true;
    for (size_t i = 0; i < f->len; i++)
        for (int k = 0; k < nfiles; k++)
            if (&files[k] != f && ref_at(f->data, f->len, i, &files[k]) && !files[k].done) *waiting = true;
    if (*waiting) return true;
    size_t cap = f->len + 1, n = 0;
    unsigned char *out = malloc(cap);
    if (!out) return false;
    for (size_t i = 0; i < f->len;) {
        size_t m = 0;
        int k = 0;
        for (; k < nfiles && !m; k++)
            if (&files[k] != f) m = ref_at(f->data, f->len, i, &files[k]);
        const char *put = m ? files[k - 1].path : NULL;
        size_t pl = m ? strlen(put) : 1;
        if (n + pl + 1 > cap) {
            unsigned char *bigger = realloc(out, cap = (n + pl + 1) * 2);
            if (!bigger) {
                free(out);
                return false;
            }
            out = bigger;
        }
        if (m) {
            memcpy(out + n, put, pl);
            i += m;
        } else {
            out[n] = f->data[i++];
        }
        n += pl;
    }
    free(f->data);
    f->data = out;
    f->len = n;
    return true;
}

static void finish(asset *f)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(f->data, f->len, md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(f->hex + 2 * i, 3, "%02x", md[i]);
    if (strcmp(f->name, "index.html") == 0) {
        snprintf(f->path, sizeof f->path, "/");
    } else {
        const char *dot = strrchr(f->name, '.');
        snprintf(f->path, sizeof f->path, "/assets/%.*s.%.12s%s", (int)(dot - f->name), f->name, f->hex, dot);
    }
    f->done = true;
}

static void put_cstr(FILE *o, const char *s)
{
    fputc('"', o);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', o);
        fputc(*s, o);
    }
    fputc('"', o);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: console_embed OUT.c FILE...\n");
        return 2;
    }
    const char *out_path = argv[1];
    bool has_index = false;
    for (int i = 2; i < argc; i++) {
        if (nfiles == MAX_FILES) return die("too many files", argv[i]);
        asset *f = &files[nfiles++];
        const char *base = strrchr(argv[i], '/');
        base = base ? base + 1 : argv[i];
        if (strlen(base) >= sizeof f->name || !strchr(base, '.') || base[0] == '.')
            return die("a name of 1-127 characters with an extension", argv[i]);
        for (const char *c = base; *c; c++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", *c))
                return die("a name of letters, digits, '.', '_' and '-'", argv[i]);
        snprintf(f->name, sizeof f->name, "%s", base);
        for (int k = 0; k + 1 < nfiles; k++)
            if (strcmp(files[k].name, f->name) == 0) return die("two files of this name", argv[i]);
        if (!(f->type = type_of(base, &f->text))) return die("unknown extension", argv[i]);
        if (!(f->data = read_all(argv[i], &f->len))) return die(strerror(errno), argv[i]);
        has_index |= strcmp(base, "index.html") == 0;
    }
    if (!has_index) return die("no index.html among the files", "web");

    for (int done = 0, pass = 0; done < nfiles; pass++) {
        int before = done;
        for (int i = 0; i < nfiles; i++) {
            if (files[i].done) continue;
            bool waiting;
            if (!rewrite(&files[i], &waiting)) return die("out of memory", files[i].name);
            if (!waiting) {
                finish(&files[i]);
                done++;
            }
        }
        if (done == before) {
            for (int i = 0; i < nfiles; i++)
                if (!files[i].done) return die("in a cycle of references", files[i].name);
        }
    }

    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
    FILE *o = fopen(tmp, "w");
    if (!o) return die(strerror(errno), tmp);
    fprintf(o, "/* Generated by tools/console_embed.c from web/ (make): do not edit. */\n"
               "#include \"api/console_assets.h\"\n\n");
    for (int i = 0; i < nfiles; i++) {
        fprintf(o, "static const unsigned char a%d[%zu] = {", i, files[i].len ? files[i].len : 1);
        for (size_t b = 0; b < files[i].len; b++)
            fprintf(o, "%s%u,", b % 24 ? "" : "\n    ", files[i].data[b]);
        fprintf(o, "%s};\n", files[i].len ? "\n" : "0");
    }
    fprintf(o, "\nconst console_asset console_assets[] = {\n");
    for (int i = 0; i < nfiles; i++) {
        fprintf(o, "    {");
        put_cstr(o, files[i].name);
        fputs(", ", o);
        put_cstr(o, files[i].path);
        fputs(", ", o);
        put_cstr(o, files[i].type);
        fprintf(o, ", a%d, %zu, \"%s\"},\n", i, files[i].len, files[i].hex);
    }
    fprintf(o, "};\nconst size_t console_asset_count = %d;\n", nfiles);
    for (int i = 0; i < nfiles; i++)
        free(files[i].data);
    if (fclose(o) != 0 || rename(tmp, out_path) != 0) return die(strerror(errno), out_path);
    return 0;
}
