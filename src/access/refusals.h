/*
 * refusals.h - the tally of requests refused without a known user (no token, an unknown or malformed
 * one), per client address and window, so that every such refusal reaches the audit trail without
 * letting anyone grow the trail at will.
 *
 * Every denied attempt is audited (DESIGN.md). A refused request whose user is known gets an entry each
 * (api_routes.c); one without a user (and a login refused by the limiter) costs its sender nothing, so an entry each would let anyone on the
 * network fill the disk through the audit log. Instead: the first refusal from an address opens a window
 * of REFUSAL_WINDOW_US and is audited as it is; the later ones in the window are counted, and when the
 * window has closed, one summary entry says how many came and between which instants. So an address
 * makes at most two entries a window, whatever it sends. At most REFUSAL_ADDRESSES addresses hold a window
 * at once; a refusal from another address while the table is full is counted under REFUSAL_OTHERS (its
 * first refusal audited as well), so a sender with many addresses adds at most REFUSAL_ADDRESSES + 1
 * windows' entries a window.
 *
 * Contract: pure over the times it is given (the caller reads the clock), thread-safe (one mutex, held
 * for a scan of at most REFUSAL_ADDRESSES short strings). refusal_closed hands over each closed window
 * with later refusals once, and forgets every closed window.
 *
 * What it must never do: hold anything of a request but its client address and the count (no path,
 * no token: a token typed into the wrong field could be a password), or lose a counted refusal
 * except by refusal_tally_free (the caller drains it first: refusal_closed at INT64_MAX).
 */
#ifndef MS_REFUSALS_H
#define MS_REFUSALS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REFUSAL_WINDOW_US (60 * (int64_t)1000000)
#define REFUSAL_ADDRESSES 256
#define REFUSAL_OTHERS "(other addresses)"

typedef struct refusal_tally refusal_tally;

typedef struct {
    char client[64];  /* the address, or REFUSAL_OTHERS */
    uint64_t more;    /* refusals after the window's first, >= 1 */
    int64_t first_us; /* the window's first refusal (audited then) */
    int64_t last_us;  /* its last */
} refusal_summary;

refusal_tally *refusal_tally_new(void);
void refusal_tally_free(refusal_tally *t);

/* A request from client refused without a known user at now_us. Returns REFUSAL_FIRST when it is the
 * first of its address's window, to be audited now (else it is counted, for the window's summary), and
 * REFUSAL_SUMMARY when it found the address's previous window closed with later refusals, not yet handed
 * over: *closed is its summary, to be audited now. */
#define REFUSAL_FIRST 1
#define REFUSAL_SUMMARY 2
int refusal_note(refusal_tally *t, const char *client, int64_t now_us, refusal_summary *closed);

/* The windows closed by now_us (opened REFUSAL_WINDOW_US or more before it; all of them at INT64_MAX)
 * that counted later refusals, up to max into out; returns how many. A window without later refusals is
 * forgotten without a summary. Call again while it returns max. */
size_t refusal_closed(refusal_tally *t, int64_t now_us, refusal_summary *out, size_t max);

#endif
