/*
 * conn_guard.h - the watch over the HTTP edge's connections: how many each client address holds, and
 * deadlines that a watchdog thread enforces by shutting a connection's socket down.
 *
 * A connection always waits under one of two deadlines or none: the request headers must be complete
 * within timeout_s of the connection opening (or of the previous answer on a kept-alive connection),
 * and while a body arrives, timeout_s must not pass without a byte, and the body must keep up
 * min_body_rate bytes a second after its first timeout_s (by its start + timeout_s + received /
 * min_body_rate, else it is cut: a body trickled a byte at a time would otherwise hold its share of the
 * bodies' budget for ever, each byte moving the stall deadline on); the handler's work and the sending
 * of the answer have no deadline here (libmicrohttpd's idle timeout covers a client that stops
 * reading). The HTTP layer reports each step; this module knows nothing of HTTP or libmicrohttpd, only
 * socket descriptors and addresses.
 *
 * Contract: conn_guard_add registers a connection by its socket and its peer address; the first
 * per_client connections of an address are admitted, later ones are marked over the cap until enough
 * admitted ones close (the caller answers them 503). A connection past its deadline gets shutdown(2),
 * once, under the registry lock; conn_guard_remove must be called before the socket is closed, so the
 * watchdog never touches a descriptor that has been closed (and perhaps reused). Thread-safe.
 *
 * What it must never do: close() a socket (its owner does), log per connection (a flood would fill
 * the log), or keep a lock while a request is being handled.
 */
#ifndef MS_CONN_GUARD_H
#define MS_CONN_GUARD_H

#include "base/util.h"

#include <sys/socket.h>

typedef struct conn_guard conn_guard;
typedef struct guard_conn guard_conn;

typedef struct {
    unsigned per_client;    /* admitted connections per client address, >= 1 */
    double timeout_s;       /* header deadline and body-progress deadline, > 0 */
    uint64_t min_body_rate; /* bytes a second a body keeps up after its first timeout_s; 0: no floor */
} conn_guard_options;

ms_code conn_guard_start(conn_guard **out, const conn_guard_options *opt, ms_err *e);
/* Stops the watchdog and frees the registry (every connection must have been removed). */
void conn_guard_stop(conn_guard *g);

/* A new connection, waiting for its request headers. Never NULL. */
guard_conn *conn_guard_add(conn_guard *g, int fd, const struct sockaddr *addr, socklen_t addrlen);
void conn_guard_remove(conn_guard *g, guard_conn *c);
/* The client already held per_client admitted connections when this one opened. */
bool guard_conn_over_cap(const guard_conn *c);

/* The connection waits for the client (the next request's headers, or more body bytes): the deadline
 * is timeout_s from now. */
void guard_conn_wait(guard_conn *c);
/* A request body starts: the deadline is timeout_s from now, and the body's clock starts. */
void guard_conn_body_start(guard_conn *c);
/* received bytes of the body have come (in all): the deadline is timeout_s from now, but no later than the
 * body's start + timeout_s + received / min_body_rate. */
void guard_conn_body_progress(guard_conn *c, uint64_t received);
/* The server is working on the request or sending the answer: no deadline. */
void guard_conn_clear(guard_conn *c);

/* Connections shut down for a missed deadline since the start. */
uint64_t conn_guard_cut_count(conn_guard *g);

#endif
