/*
 * http_client_url.c: http:// and https:// URLs split into host, port and base path (see http_client_url.h).
 *
 * DESIGN: one left-to-right pass over the text: the scheme (case-insensitive), the host (an IPv6 literal
 * between brackets, else up to ':', '/', '?' or '#'), an optional decimal port, then the path, whose
 * trailing '/' are dropped and whose every byte is checked. Fixed-size fields in the caller's
 * http_client_url, so nothing is allocated.
 *
 * What it must never do: allocate, resolve a name or open a socket, write past a field of the
 * http_client_url (a part too long is an error, never cut), or accept a query, a fragment, a space, a control
 * byte or a byte past ASCII in the path.
 */
#include "base/http_client_url.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static http_client_err url_fail(char *errbuf, size_t errlen, const char *url, const char *why)
{
    if (errbuf && errlen) snprintf(errbuf, errlen, "bad URL \"%s\": %s", url, why);
    return HTTP_CLIENT_E_INVALID;
}

static http_client_err url_parse(const char *url, http_client_url *out, char *errbuf, size_t errlen, bool any)
{
    memset(out, 0, sizeof *out);
    if (!url) return url_fail(errbuf, errlen, "", "empty");
    const char *p;
    if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
    } else if (any && strncasecmp(url, "https://", 8) == 0) {
        p = url + 8;
        out->https = true;
    } else {
        if (strncasecmp(url, "https://", 8) == 0)
            return url_fail(errbuf, errlen, url, "https is not supported, use http://");
        return url_fail(errbuf, errlen, url, any ? "must start with http:// or https://" : "must start with http://");
    }
    const char *host_start, *host_end;
    if (*p == '[') {
        host_start = p + 1;
        host_end = strchr(host_start, ']');
        if (!host_end) return url_fail(errbuf, errlen, url, "unclosed '[' in host");
        p = host_end + 1;
    } else {
        host_start = p;
        while (*p && *p != ':' && *p != '/' && *p != '?' && *p != '#')
            p++;
        host_end = p;
    }
    size_t host_len = (size_t)(host_end - host_start);
    if (host_len == 0) return url_fail(errbuf, errlen, url, "no host");
    if (host_len >= sizeof out->host) return url_fail(errbuf, errlen, url, "host too long");
    memcpy(out->host, host_start, host_len);
    out->host[host_len] = '\0';

    if (*p == ':') {
        p++;
        const char *port_start = p;
        unsigned long port = 0;
        while (*p >= '0' && *p <= '9') {
            port = port * 10 + (unsigned long)(*p - '0');
            if (port > 65535) return url_fail(errbuf, errlen, url, "port out of range");
            p++;
        }
        if (p == port_start || port == 0) return url_fail(errbuf, errlen, url, "bad port");
        snprintf(out->port, sizeof out->port, "%lu", port);
    } else {
        snprintf(out->port, sizeof out->port, out->https ? "443" : "80");
    }
    if (*p == '?' || *p == '#') return url_fail(errbuf, errlen, url, "query or fragment not allowed");
    if (*p && *p != '/') return url_fail(errbuf, errlen, url, "unexpected character after host");
    size_t path_len = strlen(p);
    while (path_len > 0 && p[path_len - 1] == '/')
        path_len--;
    if (path_len >= sizeof out->base_path) return url_fail(errbuf, errlen, url, "path too long");
    for (size_t i = 0; i < path_len; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '?' || ch == '#')
            return url_fail(errbuf, errlen, url, "bad character in path");
    }
    memcpy(out->base_path, p, path_len);
    out->base_path[path_len] = '\0';
    return HTTP_CLIENT_OK;
}

http_client_err http_client_url_parse(const char *url, http_client_url *out, char *errbuf, size_t errlen)
{
    return url_parse(url, out, errbuf, errlen, false);
}

http_client_err http_client_url_parse_any(const char *url, http_client_url *out, char *errbuf, size_t errlen)
{
    return url_parse(url, out, errbuf, errlen, true);
}
