/*
 * cluster_key.c - reading and checking the cluster key file (see cluster_key.h).
 */
#include "base/cluster_key.h"

#include "base/fd_io.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_HEX (2 * CLUSTER_KEY_BYTES)
#define FILE_MAX 4096 /* a longer file is not a key file: refused without reading the rest */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

ms_code cluster_key_parse(const char *text, size_t len, unsigned char key[CLUSTER_KEY_BYTES], ms_err *e)
{
    memset(key, 0, CLUSTER_KEY_BYTES);
    size_t n = len; /* without the one line end allowed */
    if (n && text[n - 1] == '\n') n--;
    if (n && text[n - 1] == '\r') n--;
    size_t hex = 0;
    while (hex < n && hex_value(text[hex]) >= 0)
        hex++;
    if (hex < n && hex < KEY_HEX) {
        char c = text[hex];
        return ms_fail(e, MS_EINVAL,
                       "expected 64 hexadecimal characters on one line (openssl rand -hex 32); character %zu is %s",
                       hex + 1,
                       c == '\n' || c == '\r'  ? "a line end"
                       : c == ' ' || c == '\t' ? "a space"
                                               : "not hexadecimal");
    }
    if (n != KEY_HEX)
        return ms_fail(e, MS_EINVAL,
                       "expected 64 hexadecimal characters on one line (openssl rand -hex 32); found %zu characters%s",
                       n, n > KEY_HEX && hex >= KEY_HEX ? " (something follows the key)" : "");
    unsigned char any = 0;
    for (size_t i = 0; i < CLUSTER_KEY_BYTES; i++) {
        key[i] = (unsigned char)(hex_value(text[2 * i]) << 4 | hex_value(text[2 * i + 1]));
        any |= key[i];
    }
    if (!any) return ms_fail(e, MS_EINVAL, "the key is all zeros: make a random one (openssl rand -hex 32)");
    return MS_OK;
}

ms_code cluster_key_load(const char *path, unsigned char key[CLUSTER_KEY_BYTES], ms_err *e)
{
    memset(key, 0, CLUSTER_KEY_BYTES);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return ms_fail(e, MS_EIO, "cluster key file %s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return ms_fail(e, MS_EIO, "cluster key file %s: %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ms_fail(e, MS_EINVAL, "cluster key file %s: not a regular file", path);
    }
    if (st.st_mode & 077) {
        close(fd);
        return ms_fail(e, MS_EINVAL,
                       "cluster key file %s: mode %04o lets group or others at it; it must be readable by its owner "
                       "only (chmod 600 %s)",
                       path, (unsigned)(st.st_mode & 07777), path);
    }
    char text[FILE_MAX + 1];
    size_t len;
    int err = ms_read_full(fd, text, sizeof text, -1, &len);
    close(fd);
    if (err) {
        OPENSSL_cleanse(text, sizeof text);
        return ms_fail(e, MS_EIO, "cluster key file %s: cannot read: %s", path, strerror(err));
    }
    ms_code code;
    if (len > FILE_MAX) {
        code = ms_fail(e, MS_EINVAL, "cluster key file %s: longer than %d bytes: not a key file", path, FILE_MAX);
    } else {
        ms_err why = {0};
        code = cluster_key_parse(text, len, key, &why);
        if (code != MS_OK) ms_fail(e, code, "cluster key file %s: %s", path, why.msg);
    }
    OPENSSL_cleanse(text, sizeof text);
    return code;
}
