/*
 * delivery.h - the pure parts of a webhook delivery: the signature header, the retry schedule, and the
 * check of a subscription's URL. No I/O; webhooks.c does the sending.
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

#define WEBHOOK_SIGNATURE_LEN 71 /* "sha256=" + 64 hex digits */

/* out: "sha256=<64 hex digits>", NUL-terminated. */
void webhook_signature(const char *secret, size_t secret_len, const char *body, size_t len,
                       char out[WEBHOOK_SIGNATURE_LEN + 1]);
/* The wait before attempt failures + 1 of a delivery that failed `failures` times (>= 1) in a row:
 * WEBHOOK_BACKOFF_FIRST_MS doubling each time, never more than max_ms. */
#define WEBHOOK_BACKOFF_FIRST_MS 500
uint64_t webhook_backoff_ms(uint32_t failures, uint64_t max_ms);
/* NULL if url is one a subscription may post to (http:// or https://, a host, no query, user or fragment),
 * else the reason (static or in why). */
const char *webhook_url_check(const char *url, char *why, size_t cap);

#endif
