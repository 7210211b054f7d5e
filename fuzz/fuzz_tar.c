/*
 * fuzz_tar.c - libFuzzer target for the tar reader (export/tar.h): tar_extract and tar_extract_fd take the
 * archive of `medstream export --url` from a server (or any file handed to them), so its bytes are an
 * attacker's. They must never crash, read out of bounds, leak memory or descriptors, write anywhere but under
 * the directory they are given, make anything there but directories and regular files, or report success for
 * a tree that is not the archive's.
 *
 * Input: the archive's bytes, as they are (so a seed, or a crash libFuzzer keeps, is a tar file `tar tvf`
 * reads). They go to tar_extract in an allocation of their exact size, and to tar_extract_fd through a memfd
 * after a prefix of (size % 1031) bytes of 0xa5, read from the prefix's end with release on. Each run
 * extracts into fresh directories a, b (and c, the round trip below) of a per-process one,
 * /dev/shm/fuzz_tar.XXXXXX/d1/d2/d3/ (/tmp/fuzz_tar.XXXXXX/... where /dev/shm is not writable; removed at
 * exit), emptied after each run: three levels, so that a name climbing out by up to four ".." lands in a
 * directory checked here. tmpfs because every extracted file is fdatasynced: ~350 runs/s there against ~30 in
 * /tmp on this machine's disk.
 *
 * A model, written here from tar.h's contract and POSIX (ustar + pax), not from tar.c, reads the archive: its
 * members in order to the first zero block, a size field of octal digits (after spaces; a NUL or a space, or
 * the field's end, after them) at most TAR_SIZE_MAX, a pax 'x' header of at most TAR_PAX_MAX bytes whose
 * "LEN key=value\n" records (LEN of at most 10 digits, counting the whole record) are well formed, its last
 * "path" (1-TAR_PATH_MAX bytes, no NUL) naming the next member, no "size" record, no two 'x' in a row, none
 * at the end; a name (the pax path, else the ustar prefix '/' name) not absolute, with no empty, "." or ".."
 * component (a directory's one trailing '/' aside), and no component of the form ".NAME.tmp" (the extractor's
 * temporary files); types '0', NUL and '5' only, no '/' at the end of a file's name; every file's bytes and
 * padding inside the archive (a directory's size field is not data, as GNU tar and Python's tarfile read it).
 * It then applies the members to a tree: a file over a directory, a directory over a file, or a member under
 * a file is a failure; a file named again takes the last bytes.
 *
 * Beyond "no crash, no sanitizer report, no leak", on every input:
 *   - both calls return the same code; a failure is MS_EINVAL, MS_EIO or MS_EFULL with a message; an
 *     MS_EINVAL starts "archive: " and says where (" at byte N"), the same from both calls, and when the
 *     model refuses, N is the offset of the header it refused at; a message of the file system names the path;
 *   - the model's verdict holds: an archive it accepts is extracted (MS_OK), one it refuses is refused
 *     (MS_EINVAL), one whose members conflict fails; names near the file system's limits (a component over
 *     250 bytes, a path near PATH_MAX) are left to the file system (either outcome);
 *   - on success: each extraction is exactly the model's tree (every directory, every file with its bytes:
 *     the archive's sizes), no other entry; and the tree archived again by tar_write_dir is an archive the
 *     model accepts with the same tree, which tar_extract extracts to the same tree (a round trip);
 *   - on failure: every entry left is a directory or a file of a member read before the failure (or a parent of
 *     one), each file with that member's bytes: no temporary file, nothing the archive did not name;
 *   - always: only regular files and directories under the target (no link, no device), nothing new beside it
 *     or above it up to the per-process directory, the memfd's prefix untouched, and as many open
 *     descriptors after the run as before.
 * Not reached here: release's hole punching (it frees whole MiB chunks read; inputs are at most 8 KiB:
 * tests/unit/test_export.c covers it), a full disk, and links already in the target (it is always a new
 * directory: from_server.c extracts into one it made).
 * Build and run: make fuzz-tar FUZZ_SECONDS=20 (-dict=fuzz/tar.dict; seeds: fuzz/corpus_tar/, archives of
 * tar_write_dir and made by hand, written by fuzz/tar_seeds.c).
 */
#include "fuzz_check.h"
#include "export/out_file.h"
#include "export/tar.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK 512
#define PREFIX_BYTE 0xa5

static char g_root[64];    /* /dev/shm/fuzz_tar.XXXXXX or /tmp/... */
static char g_nest[128];   /* g_root/d1/d2/d3: the targets' parent */
static char g_out[3][160]; /* g_nest/a (tar_extract), b (tar_extract_fd), c (the round trip) */
static char g_rt_tar[128]; /* g_root/rt.tar, the round trip's archive */
static int g_memfd = -1;

/* ==== the model ==== */

typedef enum { M_ACCEPT, M_REFUSE, M_CONFLICT, M_EITHER } verdict;

typedef struct {
    char *path; /* relative, without a trailing '/' */
    bool dir;
    const uint8_t *data; /* a file's bytes (inside the archive) */
    uint64_t size;
} m_entry;

typedef struct {
    m_entry *v;
    size_t n, cap;
} m_list;

typedef struct {
    verdict verdict;
    uint64_t header_at; /* the offset of the last header read: where a refusal is */
    m_list tree;        /* what the members applied so far make */
    m_list named;       /* every member read, in order, up to the one the verdict stopped at */
} model;

static void list_add(m_list *l, const char *path, size_t len, bool dir, const uint8_t *data, uint64_t size)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        CHECK(l->v != NULL);
    }
    char *p = malloc(len + 1);
    CHECK(p != NULL);
    memcpy(p, path, len);
    p[len] = 0;
    l->v[l->n++] = (m_entry){.path = p, .dir = dir, .data = data, .size = size};
}

static void list_free(m_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].path);
    free(l->v);
    *l = (m_list){0};
}

static m_entry *list_find(m_list *l, const char *path, size_t len)
{
    for (size_t i = 0; i < l->n; i++)
        if (strlen(l->v[i].path) == len && memcmp(l->v[i].path, path, len) == 0) return &l->v[i];
    return NULL;
}

/* ustar's size field: spaces, octal digits, then the field's end or a NUL or space (what follows is not read);
 * no digit at all is 0. Read here as C strings are (strspn, strtoull), not digit by digit as tar.c does, so the
 * model does not share the reader's way of going wrong. */
static bool size_field(const uint8_t *f, uint64_t *out)
{
    char text[13];
    memcpy(text, f, 12);
    text[12] = 0;
    char *digits = text + strspn(text, " ");
    size_t n = strspn(digits, "01234567");
    if (digits[n] != 0 && digits[n] != ' ') return false;
    digits[n] = 0;
    *out = n ? strtoull(digits, NULL, 8) : 0;
    return true;
}

/* A pax extended header's records; *path the last "path" record's value (NULL: none). */
static bool pax_records(const uint8_t *p, size_t n, const uint8_t **path, size_t *path_len)
{
    *path = NULL;
    *path_len = 0;
    size_t at = 0;
    while (at < n) {
        size_t digits = 0, len = 0;
        while (at + digits < n && p[at + digits] >= '0' && p[at + digits] <= '9') {
            if (digits == 10) return false;
            len = len * 10 + (size_t)(p[at + digits] - '0');
            digits++;
        }
        if (digits == 0 || at + digits >= n || p[at + digits] != ' ') return false;
        if (len > n - at || len < digits + 2 || p[at + len - 1] != '\n') return false;
        const uint8_t *kv = p + at + digits + 1, *end = p + at + len - 1;
        const uint8_t *eq = memchr(kv, '=', (size_t)(end - kv));
        if (!eq) return false;
        size_t key_len = (size_t)(eq - kv), value_len = (size_t)(end - eq - 1);
        if (key_len == 4 && memcmp(kv, "path", 4) == 0) {
            if (value_len == 0 || value_len > TAR_PATH_MAX || memchr(eq + 1, 0, value_len)) return false;
            *path = eq + 1;
            *path_len = value_len;
        } else if (key_len == 4 && memcmp(kv, "size", 4) == 0) {
            return false;
        }
        at += len;
    }
    return true;
}

/* A member name the contract takes: not absolute, no empty, "." or ".." component but a directory's one
 * trailing '/', no temporary file's name (".NAME.tmp"); *len loses the trailing '/'. *near_limit: a
 * component or the whole path the file system may refuse. */
static bool name_ok(const char *name, size_t *len, bool *trailing_slash, bool *near_limit)
{
    size_t n = *len;
    *trailing_slash = n > 0 && name[n - 1] == '/';
    if (*trailing_slash) n--;
    if (n == 0 || name[0] == '/') return false;
    *near_limit = strlen(g_out[0]) + 1 + n + 8 >= PATH_MAX;
    for (size_t at = 0; at <= n;) {
        const char *c = name + at;
        const char *slash = memchr(c, '/', n - at);
        size_t cl = slash ? (size_t)(slash - c) : n - at;
        if (cl == 0 || (cl == 1 && c[0] == '.') || (cl == 2 && c[0] == '.' && c[1] == '.')) return false;
        if (cl >= 6 && c[0] == '.' && memcmp(c + cl - 4, ".tmp", 4) == 0) return false;
        if (cl > 250) *near_limit = true;
        at += cl + 1;
    }
    *len = n;
    return true;
}

/* The member's effect on the tree; false: it conflicts with what is there. */
static bool apply(m_list *t, const char *path, size_t len, bool dir, const uint8_t *data, uint64_t size)
{
    for (size_t i = 0; i < len; i++) /* its parents: directories, made when missing */
        if (path[i] == '/') {
            m_entry *p = list_find(t, path, i);
            if (p && !p->dir) return false;
            if (!p) list_add(t, path, i, true, NULL, 0);
        }
    m_entry *m = list_find(t, path, len);
    if (m && m->dir != dir) return false;
    if (!m)
        list_add(t, path, len, dir, data, size);
    else if (!dir)
        m->data = data, m->size = size;
    return true;
}

static model model_read(const uint8_t *p, size_t n)
{
    static const uint8_t zero[BLOCK];
    model m = {.verdict = M_REFUSE};
    const uint8_t *pax_path = NULL;
    size_t pax_len = 0, at = 0;
    bool pending = false;
    char name[TAR_PATH_MAX + 2];
    for (;;) {
        m.header_at = at;
        if (n - at < BLOCK) return m; /* no end marker */
        const uint8_t *h = p + at;
        at += BLOCK;
        if (!memcmp(h, zero, BLOCK)) {
            if (!pending) m.verdict = M_ACCEPT;
            return m;
        }
        uint64_t size;
        if (!size_field(h + 124, &size) || size > TAR_SIZE_MAX) return m;
        uint64_t padded = size + (BLOCK - size % BLOCK) % BLOCK;
        uint8_t type = h[156];
        if (type == 'x') {
            if (pending || size > TAR_PAX_MAX || padded > n - at) return m;
            if (!pax_records(p + at, (size_t)size, &pax_path, &pax_len)) return m;
            pending = true;
            at += (size_t)padded;
            continue;
        }
        size_t len;
        if (pending && pax_path) {
            memcpy(name, pax_path, pax_len);
            len = pax_len;
        } else {
            size_t pl = strnlen((const char *)h + 345, 155), nl = strnlen((const char *)h, 100);
            len = 0;
            if (pl) {
                memcpy(name, h + 345, pl);
                name[pl] = '/';
                len = pl + 1;
            }
            memcpy(name + len, h, nl);
            len += nl;
        }
        name[len] = 0;
        pending = false;
        pax_path = NULL;
        bool trailing_slash, near_limit = false;
        bool dir = type == '5';
        if (!name_ok(name, &len, &trailing_slash, &near_limit)) return m;
        if ((type != '0' && type != 0 && !dir) || (!dir && trailing_slash)) return m;
        /* read: tar_extract_fd may make its parents before it finds the member cut short */
        list_add(&m.named, name, len, dir, dir ? NULL : p + at, dir ? 0 : size);
        if (!dir && size > n - at) return m; /* cut short */
        if (near_limit) {
            m.verdict = M_EITHER;
            return m;
        }
        if (!apply(&m.tree, name, len, dir, p + at, dir ? 0 : size)) {
            m.verdict = M_CONFLICT;
            return m;
        }
        if (!dir) {
            if (padded > n - at) return m; /* the padding cut short: refused after the file */
            at += (size_t)padded;
        }
    }
}

static void model_free(model *m)
{
    list_free(&m->tree);
    list_free(&m->named);
}

/* ==== what is on disk ==== */

typedef struct {
    char *path; /* relative to the walked directory */
    bool dir;
    buf bytes;
} d_entry;

typedef struct {
    d_entry *v;
    size_t n, cap;
} d_tree;

static d_tree *g_walking; /* nftw's callback takes no argument */
static size_t g_walk_base;

static int walk_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)flag;
    if (ftw->level == 0) return 0;
    CHECK(S_ISDIR(st->st_mode) || S_ISREG(st->st_mode)); /* no link, no device, no fifo */
    d_tree *t = g_walking;
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 16;
        t->v = realloc(t->v, t->cap * sizeof *t->v);
        CHECK(t->v != NULL);
    }
    d_entry *d = &t->v[t->n++];
    *d = (d_entry){.dir = S_ISDIR(st->st_mode)};
    d->path = strdup(path + g_walk_base + 1);
    CHECK(d->path != NULL);
    if (!d->dir) {
        ms_err e;
        CHECK(buf_read_file(&d->bytes, path, &e) == MS_OK);
        CHECK(d->bytes.len == (size_t)st->st_size);
    }
    return 0;
}

static void d_free(d_tree *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->v[i].path);
        buf_free(&t->v[i].bytes);
    }
    free(t->v);
    *t = (d_tree){0};
}

/* The entries under dir. */
static void walk(const char *dir, d_tree *t)
{
    d_free(t);
    g_walking = t;
    g_walk_base = strlen(dir);
    CHECK(nftw(dir, walk_one, 16, FTW_PHYS) == 0);
    g_walking = NULL;
}

/* The disk's tree d is exactly the model's t: the same entries, kinds and bytes. */
static void check_model_tree(const d_tree *d, const m_list *t)
{
    CHECK(d->n == t->n);
    for (size_t i = 0; i < d->n; i++) {
        const m_entry *m = NULL;
        for (size_t k = 0; k < t->n && !m; k++)
            if (!strcmp(t->v[k].path, d->v[i].path)) m = &t->v[k];
        CHECK(m != NULL);
        CHECK(m->dir == d->v[i].dir);
        if (!m->dir) CHECK(fuzz_same_bytes(&d->v[i].bytes, m->data, (size_t)m->size));
    }
}

/* Two trees on disk are the same. */
static void check_same_disk(const d_tree *a, const d_tree *b)
{
    CHECK(a->n == b->n);
    for (size_t i = 0; i < a->n; i++) {
        const d_entry *o = NULL;
        for (size_t k = 0; k < b->n && !o; k++)
            if (!strcmp(b->v[k].path, a->v[i].path)) o = &b->v[k];
        CHECK(o != NULL);
        CHECK(o->dir == a->v[i].dir);
        CHECK(fuzz_same_bytes(&o->bytes, a->v[i].bytes.data, a->v[i].bytes.len));
    }
}

/* After a failure: every entry is a member read (or a parent of one), a file with one such member's bytes. */
static void check_left_named(const d_tree *t, const m_list *named)
{
    for (size_t i = 0; i < t->n; i++) {
        const d_entry *d = &t->v[i];
        size_t dl = strlen(d->path);
        bool found = false;
        for (size_t k = 0; k < named->n && !found; k++) {
            const m_entry *m = &named->v[k];
            if (d->dir)
                found = (m->dir && !strcmp(m->path, d->path)) ||
                        (strlen(m->path) > dl && !memcmp(m->path, d->path, dl) && m->path[dl] == '/');
            else
                found = !m->dir && !strcmp(m->path, d->path) && fuzz_same_bytes(&d->bytes, m->data, (size_t)m->size);
        }
        CHECK(found);
    }
}

/* The one entry of each level from g_root down to the targets' parent, and of the parent only the targets. */
static void check_nothing_beside(void)
{
    static const char *const levels[][2] = {{"", "d1"}, {"/d1", "d2"}, {"/d1/d2", "d3"}};
    char p[256];
    for (size_t i = 0; i < 4; i++) {
        if (i < 3)
            snprintf(p, sizeof p, "%s%s", g_root, levels[i][0]);
        else
            snprintf(p, sizeof p, "%s", g_nest);
        DIR *d = opendir(p);
        CHECK(d != NULL);
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            if (i < 3)
                CHECK(!strcmp(de->d_name, levels[i][1]));
            else
                CHECK(!strcmp(de->d_name, "a") || !strcmp(de->d_name, "b") || !strcmp(de->d_name, "c"));
        }
        closedir(d);
    }
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* A failure's code and message (see the header comment). */
static void check_failure(ms_code rc, const ms_err *e, const char *dir)
{
    CHECK(rc == MS_EINVAL || rc == MS_EIO || rc == MS_EFULL);
    CHECK(e->code == rc);
    CHECK(memchr(e->msg, 0, sizeof e->msg) != NULL && e->msg[0] != 0);
    if (rc == MS_EINVAL)
        CHECK(!strncmp(e->msg, "archive: ", 9) && strstr(e->msg, " at byte ") != NULL);
    else
        CHECK(strstr(e->msg, dir) != NULL);
}

static void fresh(const char *dir)
{
    ms_err e;
    CHECK(out_remove_tree(dir, &e) == MS_OK);
    CHECK(mkdir(dir, 0700) == 0);
}

/* ==== the target ==== */

static void cleanup(void)
{
    ms_err e;
    out_remove_tree(g_root, &e);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    /* tmpfs where there is one: every extracted file is fdatasynced, which costs a disk's flush elsewhere */
    snprintf(g_root, sizeof g_root, "%s",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm/fuzz_tar.XXXXXX" : "/tmp/fuzz_tar.XXXXXX");
    CHECK(mkdtemp(g_root) != NULL);
    snprintf(g_nest, sizeof g_nest, "%s/d1/d2/d3", g_root);
    ms_err e;
    CHECK(out_mkdirs(g_nest, &e) == MS_OK);
    for (int i = 0; i < 3; i++)
        snprintf(g_out[i], sizeof g_out[i], "%s/%c", g_nest, 'a' + i);
    snprintf(g_rt_tar, sizeof g_rt_tar, "%s/rt.tar", g_root);
    g_memfd = memfd_create("fuzz_tar", MFD_CLOEXEC);
    CHECK(g_memfd >= 0);
    atexit(cleanup);
    return 0;
}

/* tar_write_dir of the extracted tree a, then the model and tar_extract of that archive: the same tree. */
static void round_trip(const d_tree *a)
{
    ms_err e;
    CHECK(tar_write_dir(g_out[0], g_root, "rt.tar", &e) == MS_OK);
    buf archive = {0};
    CHECK(buf_read_file(&archive, g_rt_tar, &e) == MS_OK);
    CHECK(unlink(g_rt_tar) == 0);
    model again = model_read((const uint8_t *)archive.data, archive.len);
    CHECK(again.verdict == M_ACCEPT);
    check_model_tree(a, &again.tree);
    CHECK(tar_extract(archive.data, archive.len, g_out[2], &e) == MS_OK);
    d_tree c = {0};
    walk(g_out[2], &c);
    check_same_disk(a, &c);
    d_free(&c);
    model_free(&again);
    buf_free(&archive);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fds = open_fds();
    for (int i = 0; i < 3; i++)
        fresh(g_out[i]);
    model m = model_read(data, size);

    unsigned char *copy = fuzz_copy(data, size);
    ms_err ea = {0}, eb = {0};
    ms_code ra = tar_extract((const char *)copy, size, g_out[0], &ea);

    size_t prefix = size % 1031;
    unsigned char pad[1031], back[1031];
    memset(pad, PREFIX_BYTE, sizeof pad);
    CHECK(ftruncate(g_memfd, 0) == 0);
    CHECK(pwrite(g_memfd, pad, prefix, 0) == (ssize_t)prefix);
    CHECK(pwrite(g_memfd, copy, size, (off_t)prefix) == (ssize_t)size);
    CHECK(lseek(g_memfd, (off_t)prefix, SEEK_SET) == (off_t)prefix);
    ms_code rb = tar_extract_fd(g_memfd, true, g_out[1], &eb);
    CHECK(pread(g_memfd, back, prefix, 0) == (ssize_t)prefix);
    CHECK(!memcmp(back, pad, prefix));

    CHECK(ra == rb);
    if (m.verdict == M_ACCEPT) CHECK(ra == MS_OK);
    if (m.verdict == M_REFUSE) {
        CHECK(ra == MS_EINVAL);
        char where[64];
        int wl = snprintf(where, sizeof where, " (the header at byte %llu)", (unsigned long long)m.header_at);
        size_t ml = strlen(ea.msg);
        CHECK(ml >= (size_t)wl && !strcmp(ea.msg + ml - (size_t)wl, where));
    }
    if (m.verdict == M_CONFLICT) CHECK(ra != MS_OK);
    check_nothing_beside();
    d_tree a = {0}, b = {0};
    walk(g_out[0], &a);
    walk(g_out[1], &b);
    if (ra == MS_OK) {
        if (m.verdict == M_ACCEPT) check_model_tree(&a, &m.tree);
        check_same_disk(&a, &b);
        round_trip(&a);
        check_nothing_beside();
    } else {
        check_failure(ra, &ea, g_out[0]);
        check_failure(rb, &eb, g_out[1]);
        if (ra == MS_EINVAL) CHECK(!strcmp(ea.msg, eb.msg));
        if (m.verdict != M_EITHER) {
            check_left_named(&a, &m.named);
            check_left_named(&b, &m.named);
        }
    }
    d_free(&a);
    d_free(&b);
    for (int i = 0; i < 3; i++)
        fresh(g_out[i]);
    free(copy);
    model_free(&m);
    CHECK(open_fds() == fds);
    return 0;
}
