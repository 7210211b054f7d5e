/*
 * tar_seeds.c - writes the seed archives of fuzz_tar.c (fuzz/corpus_tar/): the bytes of the project's own
 * writer (tar_write_dir over small export-shaped trees, with and without pax extended headers) and a few made
 * here block by block where the writer never goes (pax records it does not write, a directory named by a pax
 * path, an old-style NUL type, and refusals: "..", a symlink, a pax "size" record).
 *
 * Contract: tar_seeds OUTDIR writes OUTDIR/NAME.tar for each seed and exits 0, or names what failed and exits
 * 1. Deterministic but for the writer's mtimes (the trees are made at run time). Must never write outside
 * OUTDIR and its own temporary directory (removed at exit).
 * Build and run (after `make all`, whose objects it links):
 *   cc -std=c11 -D_GNU_SOURCE -Isrc -o build/tar_seeds fuzz/tar_seeds.c build/obj/src/export/tar.o \
 *      build/obj/src/export/out_file.o build/obj/src/base/util.o -lcrypto && build/tar_seeds fuzz/corpus_tar
 */
#include "export/out_file.h"
#include "export/tar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *g_out;

static void die(const char *what, const ms_err *e)
{
    fprintf(stderr, "tar_seeds: %s%s%s\n", what, e ? ": " : "", e ? e->msg : "");
    exit(1);
}

/* dir/rel (its parents made) holding text. */
static void put_file(const char *dir, const char *rel, const char *text)
{
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    char *slash = strrchr(path, '/');
    *slash = 0;
    ms_err e;
    out_file *f;
    if (out_mkdirs(path, &e) || out_open(&f, path, slash + 1, 0644, &e) || out_write(f, text, strlen(text), &e) ||
        out_finish(f, NULL, &e))
        die(rel, &e);
}

static void put_dir(const char *dir, const char *rel)
{
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    ms_err e;
    if (out_mkdirs(path, &e)) die(rel, &e);
}

/* The writer's archive of tree as OUT/name. */
static void written(const char *tree, const char *name)
{
    ms_err e;
    if (tar_write_dir(tree, g_out, name, &e)) die(name, &e);
}

/* ---- archives made here ---- */

static void header(buf *t, const char *name, char type, size_t size)
{
    char h[512] = {0};
    memcpy(h, name, strlen(name) < 100 ? strlen(name) : 100);
    snprintf(h + 100, 8, "%07o", type == '5' ? 0755 : 0644);
    snprintf(h + 108, 8, "%07o", 0);
    snprintf(h + 116, 8, "%07o", 0);
    snprintf(h + 124, 12, "%011zo", size);
    snprintf(h + 136, 12, "%011o", 0);
    h[156] = type;
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += (unsigned char)h[i];
    snprintf(h + 148, 8, "%06o", sum);
    buf_put(t, h, 512);
}

static void data(buf *t, const char *d, size_t n)
{
    buf_put(t, d, n);
    while (t->len % 512)
        buf_putc(t, 0);
}

static void member(buf *t, const char *name, const char *text)
{
    header(t, name, '0', strlen(text));
    data(t, text, strlen(text));
}

static void pax(buf *t, const char *records)
{
    header(t, "PaxHeaders/x", 'x', strlen(records));
    data(t, records, strlen(records));
}

static void save(buf *t, const char *name)
{
    static const char end[1024];
    buf_put(t, end, sizeof end);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", g_out, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(t->data, 1, t->len, f) != t->len || fclose(f) != 0) die(path, NULL);
    t->len = 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: tar_seeds OUTDIR\n");
        return 2;
    }
    g_out = argv[1];
    ms_err e;
    char tmp[] = "/tmp/tar_seeds.XXXXXX", tree[64];
    if (!mkdtemp(tmp) || out_mkdirs(g_out, &e)) die("making the directories", NULL);

    /* the writer: an export's shape, plain ustar */
    snprintf(tree, sizeof tree, "%s/export", tmp);
    put_file(tree, "manifest.json", "{\"scope\":\"public\",\"files\":2}\n");
    put_file(tree, "records/type=lab/date=2026-11-29/part-00000.ndjson", "{\"id\":\"r1\",\"v\":1}\n{\"id\":\"r2\"}\n");
    put_file(tree, "patients/part-00000.ndjson", "");
    put_dir(tree, "empty");
    written(tree, "writer_export.tar");
    /* the writer: a path of 130 bytes, split into ustar's prefix and name */
    snprintf(tree, sizeof tree, "%s/prefix", tmp);
    char rel[4200];
    snprintf(rel, sizeof rel, "records/type=%0100d/a.ndjson", 7);
    put_file(tree, rel, "x\n");
    written(tree, "writer_prefix.tar");
    /* the writer: a component of 120 bytes, which ustar cannot hold: pax 'x' headers with a path record */
    snprintf(tree, sizeof tree, "%s/pax", tmp);
    snprintf(rel, sizeof rel, "records/type=%0120d/p.ndjson", 7);
    put_file(tree, rel, "{\"a\":1}\n");
    written(tree, "writer_pax.tar");
    /* the writer: nothing in the directory (the end marker alone) */
    snprintf(tree, sizeof tree, "%s/none", tmp);
    put_dir(tree, "");
    written(tree, "writer_empty.tar");

    buf t = {0}, r = {0};
    /* pax records the writer never makes: several, one ignored, a path for a directory and one for a file */
    tar_pax_record("mtime", "1764400000.5", &r);
    tar_pax_record("comment", "seed", &r);
    tar_pax_record("path", "dir/", &r);
    pax(&t, r.data);
    header(&t, "ignored/", '5', 0);
    r.len = 0;
    tar_pax_record("path", "dir/file.txt", &r);
    tar_pax_record("uname", "medstream", &r);
    pax(&t, r.data);
    member(&t, "ignored.txt", "hello\n");
    member(&t, "dir/second.txt", "two\n");
    save(&t, "pax_records.tar");
    /* an old-style member (type NUL), a file named twice (the last bytes win), an empty pax header */
    header(&t, "old.txt", 0, 4);
    data(&t, "old\n", 4);
    member(&t, "twice.txt", "first\n");
    pax(&t, "");
    member(&t, "twice.txt", "second\n");
    save(&t, "hand_types.tar");
    /* refused: a name climbing out, a symlink, a pax size record */
    member(&t, "ok.txt", "ok\n");
    member(&t, "../escape.txt", "no\n");
    save(&t, "refused_dotdot.tar");
    header(&t, "link", '2', 0);
    save(&t, "refused_symlink.tar");
    r.len = 0;
    tar_pax_record("size", "5", &r);
    pax(&t, r.data);
    member(&t, "sized.txt", "12345");
    save(&t, "refused_pax_size.tar");
    buf_free(&t);
    buf_free(&r);
    out_remove_tree(tmp, &e);
    return 0;
}
