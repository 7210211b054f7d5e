/*
 * delivery.c - signature, retry schedule, URL and address checks of webhook deliveries (see delivery.h).
 */
#include "notify/delivery.h"

#include "base/http_client.h"
#include "base/http_client_url.h"

#include <arpa/inet.h>
#include <netinet/in.h>
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

/* What kind of address an IPv4 address (host order) is, if not a public one. */
static const char *ipv4_kind(uint32_t a)
{
    unsigned b0 = a >> 24, b1 = (a >> 16) & 255;
    if (b0 == 0) return "an unspecified (0.0.0.0/8)";
    if (b0 == 127) return "a loopback";
    if (b0 == 10 || (b0 == 172 && (b1 & 0xF0) == 16) || (b0 == 192 && b1 == 168)) return "a private";
    if (b0 == 169 && b1 == 254) return "a link-local (cloud metadata)";
    if (b0 == 100 && (b1 & 0xC0) == 64) return "a shared (100.64.0.0/10)";
    if (b0 == 192 && b1 == 0 && ((a >> 8) & 255) == 0) return "an IETF protocol (192.0.0.0/24)";
    if (b0 == 198 && (b1 & 0xFE) == 18) return "a benchmarking (198.18.0.0/15)";
    if (b0 >= 224) return "a multicast or reserved";
    return NULL;
}

/* What kind of address sa is, if not a public one (an IPv4-mapped IPv6 address as its IPv4). */
static const char *address_kind(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) return ipv4_kind(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
    if (sa->sa_family != AF_INET6) return "a non-IP";
    const unsigned char *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF}, zero[15] = {0};
    if (!memcmp(b, mapped, 12)) return ipv4_kind((uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | b[14] << 8 | b[15]);
    if (!memcmp(b, zero, 15) && b[15] <= 1) return b[15] ? "a loopback" : "an unspecified";
    if (b[0] == 0xFE && (b[1] & 0xC0) == 0x80) return "a link-local";
    if (b[0] == 0xFE && (b[1] & 0xC0) == 0xC0) return "a site-local";
    if ((b[0] & 0xFE) == 0xFC) return "a unique local (private)";
    if (b[0] == 0xFF) return "a multicast";
    return NULL;
}

bool webhook_address_allowed(const struct sockaddr *sa, char *why, size_t cap)
{
    const char *kind = address_kind(sa);
    if (!kind) return true;
    char text[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, text, sizeof text);
    if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, text, sizeof text);
    snprintf(why, cap, "%s is %s address: webhooks post to public addresses only (serve --webhook-allow-private)", text,
             kind);
    return false;
}

const char *webhook_url_check(const char *url, bool allow_private, char *why, size_t cap)
{
    http_client_url u;
    if (strlen(url) > 2000) return "longer than 2000 bytes";
    if (http_client_url_parse_any(url, &u, why, cap) != HTTP_CLIENT_OK) return why;
    if (strchr(u.host, '@')) return "a user name in the URL is not accepted";
    if (!allow_private) { /* a literal address is refused now; a name is checked at every connect */
        struct sockaddr_in v4 = {.sin_family = AF_INET};
        struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
        if (inet_pton(AF_INET, u.host, &v4.sin_addr) == 1 && !webhook_address_allowed((struct sockaddr *)&v4, why, cap))
            return why;
        if (inet_pton(AF_INET6, u.host, &v6.sin6_addr) == 1 &&
            !webhook_address_allowed((struct sockaddr *)&v6, why, cap))
            return why;
    }
    return NULL;
}
