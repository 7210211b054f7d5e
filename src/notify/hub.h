/*
 * hub.h - how the notifier tells its readers that the event log grew: the last event seq, a condition
 * variable for threads (webhook workers) and an eventfd per Server-Sent Events stream (which waits in
 * poll(2) on its eventfd and its client's socket at once, so that a new event and a client that went
 * away are both noticed within milliseconds).
 *
 * Contract: thread-safe. hub_publish after the events up to seq are durable in the store, never before:
 * a woken reader reads them from the store. Streams are bounded (max_streams): hub_stream_add refuses
 * past it. hub_close wakes everyone for good (the server is stopping): waits return at once from then on.
 *
 * What it must never do: hold its lock while a reader does I/O, or carry an event's content (readers read
 * the store).
 */
#ifndef MS_NOTIFY_HUB_H
#define MS_NOTIFY_HUB_H

#include "base/util.h"

typedef struct hub hub;

hub *hub_new(uint64_t last_seq, unsigned max_streams);
void hub_free(hub *h);

/* Events up to seq are durable: wake every waiter and stream. */
void hub_publish(hub *h, uint64_t seq);
uint64_t hub_last(hub *h);
/* Wait until the log holds an event after `after`, the hub closes, or timeout_ms pass (or a hub_poke):
 * returns the last seq. */
uint64_t hub_wait(hub *h, uint64_t after, long timeout_ms);
/* Wake every hub_wait without an event (a subscription was deleted, the notifier is stopping). */
void hub_poke(hub *h);
bool hub_closed(hub *h);
void hub_close(hub *h);

/* A stream's eventfd (non-blocking, made here), readable whenever an event was published since it was last
 * drained; -1 when max_streams are open or the hub is closed. */
int hub_stream_add(hub *h);
void hub_stream_remove(hub *h, int efd);
/* Streams open now. */
unsigned hub_streams(hub *h);

#endif
