/*
 * http_client_url.h: the URLs the HTTP client (http_client.h) is given: `import --url`, `export --url`, the
 * bench's server and a webhook's endpoint, split into the host, port and base path that
 * http_client_conn_new takes and that a request's path starts with.
 *
 * Contract: http_client_url_parse takes http:// only (a tool talking to a medstream server),
 * http_client_url_parse_any http:// or https:// (webhooks). Errors are values: HTTP_CLIENT_E_INVALID with a
 * message that quotes the URL and says what is wrong. Pure: no allocation, no name resolution, no I/O.
 *
 * What it must never do: accept a URL with a query or fragment, a port outside 1-65535, or a part too long
 * for its field (an error, never cut short).
 */
#ifndef MEDSTREAM_HTTP_CLIENT_URL_H
#define MEDSTREAM_HTTP_CLIENT_URL_H

#include "base/http_client.h"

#include <stdbool.h>
#include <stddef.h>

/* The parts of an http:// (or https://) URL. base_path has no trailing '/' ("" for the root). */
typedef struct {
    char host[256]; /* without IPv6 brackets */
    char port[8];
    char base_path[256];
    bool https; /* only from http_client_url_parse_any */
} http_client_url;

/* Parses "http://HOST[:PORT][/PATH]" (IPv6 as [::1]); PORT defaults to 80. On error returns
 * HTTP_CLIENT_E_INVALID and writes a message to errbuf (may be NULL). */
http_client_err http_client_url_parse(const char *url, http_client_url *out, char *errbuf, size_t errlen);

/* The same for "http://..." or "https://HOST[:PORT][/PATH]" (PORT defaults to 443 for https). */
http_client_err http_client_url_parse_any(const char *url, http_client_url *out, char *errbuf, size_t errlen);

#endif
