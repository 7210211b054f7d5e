/*
 * login_limiter.h - how many password checks a user name gets, from one client and from all of them.
 *
 * Every password check (a login, the old password of a password change) is reserved before it is made
 * (login_begin) and ended after (login_end), and a failure counts against two tallies, each over a window
 * of LOGIN_WINDOW_S seconds from its first attempt:
 *
 *   - the name from this client: LOGIN_MAX_FAILURES (5) failures, then this client's attempts at the name
 *     are refused (429) until the window ends;
 *   - the name from every client: LOGIN_NAME_MAX_FAILURES (30) failures, then every client's attempts at
 *     the name are refused, except from a client that signed in as that name in the last LOGIN_TRUST_S
 *     seconds (24 h), which keeps its own tally only.
 *
 * So one client (a colleague's workstation, a scanner, an attacker) locks a name out for itself only; a
 * guesser gets at most 30 guesses a minute at a name however many addresses it holds; and a lockout of
 * the name in all, which takes failures from at least 6 clients in one window, still lets its owner in
 * from where it signed in recently. A client is its address; an IPv6 address counts by its /64 (a host is
 * usually given a whole /64, so its addresses are one client). Behind a reverse proxy every client is the
 * proxy: the per-client tally is then the name's, as it was before 2026-12-03. Attempts in flight count as
 * failures until they end, so checks sent side by side cannot pass a tally together. A success clears the
 * name's tally from that client, never the name's tally in all (the owner's login does not renew a
 * guesser's budget).
 *
 * The tallies live in memory, in buckets picked by a hash keyed with a random seed (no one can pick keys
 * that share a victim's bucket); a live entry (failures in its window, an attempt in flight, a recent
 * sign-in) is evicted only when every way of its bucket holds one, the oldest window first. A restart
 * forgets them.
 *
 * Contract: thread-safe (one mutex over a scan of LIMITER_WAYS entries); pure over the times it is given.
 * Every true login_begin is followed by one login_end with the same name and client.
 * What it must never do: hold a password; block.
 */
#ifndef MS_LOGIN_LIMITER_H
#define MS_LOGIN_LIMITER_H

#include <stdbool.h>
#include <stdint.h>

#define LOGIN_MAX_FAILURES 5
#define LOGIN_NAME_MAX_FAILURES 30
#define LOGIN_WINDOW_S 60
#define LOGIN_TRUST_S (24 * 3600)

typedef enum { LOGIN_FAILED, LOGIN_OK, LOGIN_NOT_TRIED } login_outcome; /* NOT_TRIED: counts neither way */
typedef enum {
    LOGIN_ALLOWED,
    LOGIN_LIMIT_CLIENT, /* this client's failures at the name */
    LOGIN_LIMIT_NAME    /* every client's failures at the name */
} login_verdict;

/* Reserve a check of user's password from client (its address as text; "" when unknown). */
login_verdict login_begin(const char *user, const char *client, int64_t now_us);
void login_end(const char *user, const char *client, login_outcome outcome, int64_t now_us);
/* The refusal's message for an answer or an audit entry (names neither the user nor the client). */
const char *login_verdict_text(login_verdict v);

#endif
