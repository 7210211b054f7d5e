/*
 * test_console_assets.c - the console's files as embedded in the library (api/console_assets.h, written by
 * tools/console_embed.c from web/): index.html at "/", every other file at /assets/<base>.<12 hex>.<ext>
 * where the hex begins the SHA-256 of the bytes served, each sha256 the true digest, names and paths unique,
 * a content type for each, and the page naming every script and stylesheet by its served path.
 */
#include "unit.h"

#include "api/console_assets.h"

#include <openssl/sha.h>
#include <string.h>

static void test_every_asset_is_served_under_its_hash(void **state)
{
    (void)state;
    int index = -1;
    assert_true(console_asset_count >= 4);
    for (size_t i = 0; i < console_asset_count; i++) {
        const console_asset *a = &console_assets[i];
        unsigned char md[SHA256_DIGEST_LENGTH];
        char hex[65];
        SHA256(a->data, a->len, md);
        for (int k = 0; k < SHA256_DIGEST_LENGTH; k++)
            snprintf(hex + 2 * k, 3, "%02x", md[k]);
        if (strcmp(hex, a->sha256) != 0) fail_msg("%s: sha256 %s is not its bytes' %s", a->name, a->sha256, hex);
        if (!a->content_type || !a->content_type[0]) fail_msg("%s: no content type", a->name);
        if (strcmp(a->name, "index.html") == 0) {
            assert_string_equal(a->path, "/");
            index = (int)i;
        } else {
            const char *dot = strrchr(a->name, '.');
            char want[256];
            snprintf(want, sizeof want, "/assets/%.*s.%.12s%s", (int)(dot - a->name), a->name, a->sha256, dot);
            if (strcmp(a->path, want) != 0) fail_msg("%s: served at %s, not %s", a->name, a->path, want);
        }
        for (size_t k = 0; k < i; k++)
            if (!strcmp(console_assets[k].name, a->name) || !strcmp(console_assets[k].path, a->path))
                fail_msg("%s: its name or path twice", a->name);
    }
    assert_true(index >= 0);

    /* the page names the served path of each script and stylesheet it loads, never the plain name */
    const console_asset *page = &console_assets[index];
    char *html = strndup((const char *)page->data, page->len);
    assert_non_null(html);
    for (size_t i = 0; i < console_asset_count; i++) {
        const console_asset *a = &console_assets[i];
        if (!strcmp(a->name, "app.js") || !strcmp(a->name, "console.css")) {
            if (!strstr(html, a->path)) fail_msg("index.html does not name %s", a->path);
            char plain[160];
            snprintf(plain, sizeof plain, "\"/assets/%s\"", a->name);
            if (strstr(html, plain)) fail_msg("index.html names %s unhashed", a->name);
        }
    }
    assert_null(strstr(html, "<style"));
    assert_null(strstr(html, "style="));
    free(html);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_asset_is_served_under_its_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
