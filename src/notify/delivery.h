/*
 * delivery.h - the pure parts of a webhook delivery: the signature header, the retry schedule, and the
 * check of a subscription's URL. No I/O; webhooks.c does the sending.
 *
 * No I/O here either: the address check is a pure function of the address, called by http_client before every
 * connect (a name resolved again may point elsewhere).
 *
 * A delivery is one POST of one event's JSON (event.h) with the headers
 *     Content-Type: application/json
 *     X-Medstream-Signature: sha256=<hex of HMAC-SHA256(secret, body)>
 *     X-Medstream-Event-Seq: <seq>
 *     X-Medstream-Subscription: <subscription id>
 * A receiver recomputes the HMAC over the raw body with its secret and compares (in constant time), then
 * drops an event whose seq it has already seen: delivery is at least once.
 */
#ifndef MS_NOTIFY_DELIVERY_H
#define MS_NOTIFY_DELIVERY_H

#include "base/util.h"

#include <sys/socket.h>

#define WEBHOOK_SIGNATURE_LEN 71 /* "sha256=" + 64 hex digits */

/* out: "sha256=<64 hex digits>", NUL-terminated. */
void webhook_signature(const char *secret, size_t secret_len, const char *body, size_t len,
                       char out[WEBHOOK_SIGNATURE_LEN + 1]);
/* The wait before attempt failures + 1 of a delivery that failed `failures` times (>= 1) in a row:
 * WEBHOOK_BACKOFF_FIRST_MS doubling each time, never more than max_ms. */
#define WEBHOOK_BACKOFF_FIRST_MS 500
uint64_t webhook_backoff_ms(uint32_t failures, uint64_t max_ms);
/* NULL if url is one a subscription may post to (http:// or https://, a host, no query, user or fragment;
 * unless allow_private, not a literal address webhook_address_allowed refuses), else the reason (static or in
 * why). */
const char *webhook_url_check(const char *url, bool allow_private, char *why, size_t cap);
/* May a webhook connect to sa? Not to a loopback, private, link-local (the cloud's metadata service at
 * 169.254.169.254), shared, unique-local, multicast, unspecified or reserved address, IPv4-mapped IPv6 judged
 * as its IPv4: a subscriber must not reach the server's own network through it (and read what answers from
 * last_status and last_error). False with the address and its kind in why. (serve --webhook-allow-private:
 * not checked.) */
bool webhook_address_allowed(const struct sockaddr *sa, char *why, size_t cap);

#endif
