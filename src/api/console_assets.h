/*
 * console_assets.h - the console's files (web/), embedded in the binary at build time: tools/console_embed.c
 * writes build/gen/console_assets.c, the one definition of the table below (see web/README.md).
 *
 * Contract: index.html is served at "/"; every other file at "/assets/<base>.<12 hex of sha256>.<ext>",
 * its references to the other files already rewritten to their served paths; sha256 is of data, the
 * bytes served. The table is constant and sorted by name; lookups need no lock.
 *
 * What it must never do: hold data (a record, a patient, a token): these are static files anyone may read.
 */
#ifndef MS_CONSOLE_ASSETS_H
#define MS_CONSOLE_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *name;         /* the file's name in web/: "app.js" */
    const char *path;         /* where it is served: "/" or "/assets/app.0123456789ab.js" */
    const char *content_type; /* "text/javascript; charset=utf-8" */
    const unsigned char *data;
    size_t len;
    const char *sha256; /* 64 hex digits of data */
} console_asset;

extern const console_asset console_assets[];
extern const size_t console_asset_count;

#endif
