/*
 * events_kafka.c - the event log to a Kafka topic (serve --events-topic T, with --kafka-brokers): every
 * event, in seq order, as one message: the event's JSON as value, its patient id as key (so one patient's
 * events keep their order within a partition), its seq in the header medstream-event-seq.
 *
 * DESIGN: the pattern of the public topic's sink (sinks/sink_kafka_public.c), over the event log instead of
 * the commit log: a thread of its own reads up to BATCH events after its position (sink position
 * "kafka-events" in the store) in a short read transaction, produces them with the idempotent producer
 * (base/kafka_client.h), waits until every one is delivered, and only then saves the position. A failed
 * delivery keeps the position and produces the batch again a second later: at least once, in order per
 * partition; consumers drop a seq they have seen. Caught up, it sleeps on the hub until the follower
 * publishes more.
 *
 * Erasure: the follower deletes an erased patient's events from the log and, when there is an events topic,
 * notes a tombstone owed to it, in one write (store_events_delete). This thread reads the owed ones in the
 * same snapshot as its next batch and, once that batch is delivered, sends each as a null value under the
 * patient's id (the key of its events: a compacted topic drops them) with the header medstream.erased:
 * patient, then forgets it (store_events_owed_done). The erasure certificate's "events_topic" view is done
 * once none is owed for the patient and the follower has passed the erasure.
 *
 * What it must never do: move its position past an event not yet delivered, put anything but the stored
 * event (ids, names, times: never a record's text) in a message, send a tombstone before an event of its
 * patient, or forget a tombstone not delivered.
 */
#include "notify/notify_internal.h"

#include "base/json_scan.h"
#include "base/kafka_client.h"
#include "base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POSITION_NAME "kafka-events"
#define BATCH 1000
#define OWED_BATCH 64

struct events_kafka {
    notifier *n;
    kafka_worker w;    /* the producer and its thread (base/kafka_client.h) */
    atomic_int failed; /* deliveries of the batch in hand that failed */
    _Atomic uint64_t position, produced, tombstones;
};

/* The patients owed a tombstone (store_events_owed), read in the same snapshot as a batch of events. */
typedef struct {
    patient_id v[OWED_BATCH];
    size_t n;
} owed_list;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk, (void)opaque;
    events_kafka *k = m->_private ? m->_private : NULL;
    if (k && m->err) atomic_fetch_add(&k->failed, 1);
}

typedef struct {
    events_kafka *k;
    uint64_t last;
    unsigned n;
    bool queue_failed;
} batch_state;

static bool produce_event(void *ctx, uint64_t seq, const char *ev, size_t len)
{
    batch_state *st = ctx;
    json_member m[12];
    json_error je;
    const char *key = "";
    size_t key_len = 0;
    int nm = json_scan_object(ev, len, m, 12, &je);
    for (int i = 0; i < nm; i++)
        if (m[i].key_len == 10 && !memcmp(m[i].key, "patient_id", 10) && m[i].type == JSON_STRING) {
            key = m[i].val + 1;
            key_len = m[i].val_len - 2;
        }
    char seqs[24];
    snprintf(seqs, sizeof seqs, "%llu", (unsigned long long)seq);
    rd_kafka_resp_err_t err;
    while ((err = rd_kafka_producev(st->k->w.rk, RD_KAFKA_V_TOPIC(st->k->w.topic),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, key_len),
                                    RD_KAFKA_V_VALUE((void *)ev, len),
                                    RD_KAFKA_V_HEADER("medstream-event-seq", seqs, (ssize_t)strlen(seqs)),
                                    RD_KAFKA_V_OPAQUE(st->k), RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL &&
           !atomic_load(&st->k->w.stop))
        rd_kafka_poll(st->k->w.rk, 100);
    if (err) {
        st->queue_failed = true;
        return false;
    }
    st->last = seq;
    return ++st->n < BATCH;
}

static bool note_owed(void *ctx, const patient_id *pid)
{
    owed_list *o = ctx;
    o->v[o->n++] = *pid;
    return o->n < OWED_BATCH;
}

/* Wait until everything produced is delivered; false when stopping first or when a delivery failed. */
static bool delivered(events_kafka *k)
{
    while (rd_kafka_flush(k->w.rk, 1000) == RD_KAFKA_RESP_ERR__TIMED_OUT && !atomic_load(&k->w.stop))
        ms_log(LOG_WARN, "notify.kafka_waiting", "events topic: waiting for the brokers");
    return rd_kafka_outq_len(k->w.rk) == 0 && !atomic_load(&k->failed);
}

/* The tombstones owed: each a null value under the patient's id, the key of every event of the patient, so
 * that a compacted topic drops them all, with the header medstream.erased: patient (as the public topic's).
 * Sent only once the batch read in the same snapshot as the list is delivered: the follower deleted the
 * patient's events in the write that made its tombstone owed, so no event of it comes after. Each is owed no
 * more once delivered (a crash in between sends it again: harmless). False: again later. */
static bool send_tombstones(events_kafka *k, const owed_list *o)
{
    atomic_store(&k->failed, 0);
    for (size_t i = 0; i < o->n; i++) {
        char id[PATIENT_ID_TEXT];
        patient_id_format(&o->v[i], id);
        rd_kafka_resp_err_t err;
        while ((err = rd_kafka_producev(k->w.rk, RD_KAFKA_V_TOPIC(k->w.topic), RD_KAFKA_V_KEY(id, strlen(id)),
                                        RD_KAFKA_V_VALUE(NULL, 0), RD_KAFKA_V_HEADER("medstream.erased", "patient", 7),
                                        RD_KAFKA_V_OPAQUE(k), RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL &&
               !atomic_load(&k->w.stop))
            rd_kafka_poll(k->w.rk, 100);
        if (err) return false;
    }
    if (!delivered(k)) return false;
    ms_err e;
    for (size_t i = 0; i < o->n; i++)
        if (store_events_owed_done(k->n->store, &o->v[i], &e) != MS_OK) {
            ms_log(LOG_ERROR, "notify.kafka_tombstone", "events topic: %s", e.msg);
            return false;
        }
    atomic_fetch_add(&k->tombstones, o->n);
    return true;
}

static void *events_kafka_main(void *arg)
{
    events_kafka *k = arg;
    notifier *n = k->n;
    pthread_setname_np(pthread_self(), "ms-events-kafka");
    uint64_t pos = 0;
    store_read *r;
    ms_err e;
    if (store_read_begin(n->store, &r, &e) == MS_OK) {
        store_sink_position(r, POSITION_NAME, &pos, &e);
        store_read_end(r);
    }
    atomic_store(&k->position, pos);
    owed_list *owed = ms_malloc(sizeof *owed);
    while (!atomic_load(&k->w.stop)) {
        batch_state st = {.k = k, .last = pos};
        atomic_store(&k->failed, 0);
        owed->n = 0;
        ms_code rc = store_read_begin(n->store, &r, &e);
        if (rc == MS_OK) {
            rc = store_events_scan(r, pos, produce_event, &st, &e);
            if (rc == MS_OK) rc = store_events_owed(r, note_owed, owed, &e);
            store_read_end(r);
        }
        if (rc != MS_OK) {
            ms_log(LOG_WARN, "notify.kafka_retry", "events topic: reading the event log: %s", e.msg);
            sleep(1);
            continue;
        }
        if (st.n == 0 && !st.queue_failed && owed->n == 0) {
            rd_kafka_poll(k->w.rk, 0);
            if (hub_closed(n->hub))
                usleep(100000);
            else
                hub_wait(n->hub, pos, 1000);
            continue;
        }
        /* delivered before the position moves on: a crash or a failure here re-sends, never skips */
        bool ok = delivered(k);
        if (rd_kafka_outq_len(k->w.rk) > 0) break; /* stopping before delivery: keep the position */
        if (!ok || st.queue_failed) {
            ms_log(LOG_WARN, "notify.kafka_retry", "events topic: events after %llu not delivered; again in 1 s",
                   (unsigned long long)pos);
            sleep(1);
            continue;
        }
        if (st.n) {
            pos = st.last;
            atomic_store(&k->position, pos);
            atomic_fetch_add(&k->produced, st.n);
            if (store_sink_position_set(n->store, POSITION_NAME, pos, &e) != MS_OK)
                ms_log(LOG_ERROR, "notify.kafka_position", "events topic: %s", e.msg);
        }
        if (owed->n && !send_tombstones(k, owed)) {
            if (rd_kafka_outq_len(k->w.rk) > 0) break;
            ms_log(LOG_WARN, "notify.kafka_retry",
                   "events topic: erased patients' tombstones not delivered; again in 1 s");
            sleep(1);
        }
    }
    free(owed);
    return NULL;
}

ms_code events_kafka_start(notifier *n, events_kafka **out, ms_err *e)
{
    char err[512];
    kafka_producer_options po = {
        .brokers = n->opt.kafka_brokers, .config = n->opt.kafka_config, .on_delivery = on_delivery};
    events_kafka *k = ms_calloc(1, sizeof *k);
    k->n = n;
    if (!kafka_worker_start(&k->w, &po, n->opt.events_topic, events_kafka_main, k, err, sizeof err)) {
        free(k);
        return ms_fail(e, MS_EINVAL, "--events-topic: %s", err);
    }
    *out = k;
    return MS_OK;
}

void events_kafka_stop(events_kafka *k)
{
    if (!k) return;
    kafka_worker_stop(&k->w);
    free(k);
}

void events_kafka_metrics(events_kafka *k, buf *out)
{
    if (!k) return;
    metrics_gauge(out, "medstream_notify_kafka_position", "The last event seq delivered to --events-topic.",
                  atomic_load(&k->position));
    metrics_counter(out, "medstream_notify_kafka_events_total", "Events delivered to --events-topic.",
                    atomic_load(&k->produced));
    metrics_counter(out, "medstream_notify_kafka_tombstones_total",
                    "Erased patients' tombstones delivered to --events-topic.", atomic_load(&k->tombstones));
}
