/*
 * h_console.c - the console (issue 14): GET / answers index.html, GET /assets/{asset} one of the files
 * embedded from web/ (api/console_assets.h; web/README.md). Neither needs a token: they are the same
 * static bytes for everyone and hold no data; every datum the console shows comes from the API, under
 * the caller's token.
 *
 * Contract: each answer carries the console's Content-Security-Policy (CONSOLE_CSP: only this origin's
 * scripts, styles, images and connections; no inline script or style, no frame, no form posted
 * elsewhere), and a cache header: the page is revalidated every time (no-cache), a hashed asset is
 * immutable for a year (its name changes with its bytes). An unknown asset is a 404.
 *
 * What it must never do: serve a file that was not embedded at build time (nothing here reads the file
 * system), or answer an asset under a name whose hash is not its own.
 */
#include "api/console_assets.h"
#include "api/handlers.h"

#include <string.h>

#define CONSOLE_CSP                                                                                                    \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "                    \
    "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

static void serve(const console_asset *f, const char *cache_control, http_response *res)
{
    res->status = 200;
    res->body.len = 0;
    buf_put(&res->body, f->data, f->len);
    res->content_type = f->content_type;
    res->cache_control = cache_control;
    res->csp = CONSOLE_CSP;
}

void h_console_index(api *a, http_request *req, http_response *res)
{
    (void)a;
    (void)req;
    for (size_t i = 0; i < console_asset_count; i++)
        if (strcmp(console_assets[i].path, "/") == 0) {
            serve(&console_assets[i], "no-cache", res);
            return;
        }
    http_error(res, 404, "the console was not built into this binary");
}

void h_console_asset(api *a, http_request *req, http_response *res)
{
    (void)a;
    const char *want = req->nparams ? req->params[0] : "";
    for (size_t i = 0; i < console_asset_count; i++) {
        const char *p = console_assets[i].path;
        if (strncmp(p, "/assets/", 8) == 0 && strcmp(p + 8, want) == 0) {
            serve(&console_assets[i], "public, max-age=31536000, immutable", res);
            return;
        }
    }
    res->csp = CONSOLE_CSP;
    http_error(res, 404, "no such asset");
}
