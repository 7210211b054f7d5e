/*
 * delivery.c - signature, retry schedule and URL check of webhook deliveries (see delivery.h).
 */
#include "notify/delivery.h"

#include "base/http_client.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

void webhook_signature(const char *secret, size_t secret_len, const char *body, size_t len,
                       char out[WEBHOOK_SIGNATURE_LEN + 1])
{
    unsigned char mac[32];
    unsigned int n = 0;
    HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)body, len, mac, &n);
    memcpy(out, "sha256=", 7);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 7 + 2 * i, 3, "%02x", mac[i]);
}

uint64_t webhook_backoff_ms(uint32_t failures, uint64_t max_ms)
{
    uint64_t ms = WEBHOOK_BACKOFF_FIRST_MS;
    for (uint32_t i = 1; i < failures && ms < max_ms; i++)
        ms *= 2;
    return ms < max_ms ? ms : max_ms;
}

const char *webhook_url_check(const char *url, char *why, size_t cap)
{
    http_client_url u;
    if (strlen(url) > 2000) return "longer than 2000 bytes";
    if (http_client_url_parse_any(url, &u, why, cap) != HTTP_CLIENT_OK) return why;
    if (strchr(u.host, '@')) return "a user name in the URL is not accepted";
    return NULL;
}
