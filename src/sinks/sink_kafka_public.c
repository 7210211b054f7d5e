/*
 * sink_kafka_public.c - commit log -> Kafka, public copies only (see sink_kafka_public.h).
 */
#include "sinks/sink_kafka_public.h"

#include "base/json_write.h"
#include "base/kafka_client.h"
#include "base/log.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SINK_NAME "kafka-public"

struct sink_kafka_public {
    store *store;
    kafka_worker w;    /* the producer and its thread (base/kafka_client.h) */
    atomic_int failed; /* deliveries of the entry in hand that failed (the librdkafka thread counts them) */
};

/* A delivery report: a message the brokers did not take (message.timeout.ms passed, refused) leaves the
 * queue as a delivered one does; without counting it the position moved past it. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk, (void)opaque;
    sink_kafka_public *k = m->_private;
    if (k && m->err) atomic_fetch_add(&k->failed, 1);
}

typedef struct {
    sink_kafka_public *k;
    store_read *r;
    int64_t commit_time;
    int produced;
    buf erased; /* the entry's 'x' items so far: version, id length, id (host order) */
    bool failed;
} ship_state;

/* Produce one message (value NULL: a tombstone), waiting while the queue is full. */
static bool produce(ship_state *st, const char *key, const void *value, size_t len, rd_kafka_headers_t *hdrs)
{
    rd_kafka_resp_err_t err;
    while ((err = rd_kafka_producev(st->k->w.rk, RD_KAFKA_V_TOPIC(st->k->w.topic),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, strlen(key)),
                                    RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_HEADERS(hdrs),
                                    RD_KAFKA_V_OPAQUE(st->k), RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL &&
           !atomic_load(&st->k->w.stop))
        rd_kafka_poll(st->k->w.rk, 100);
    if (err) {
        if (hdrs) rd_kafka_headers_destroy(hdrs); /* produced: the message owns them */
        st->failed = true;
        return false;
    }
    st->produced++;
    return true;
}

/* An erasure (store/erase.c): tombstones (null values) under the patient's key, the key of every message
 * of the patient, so that log compaction drops them all: one per erased record version (its 'x' item,
 * with the record id and version in headers, for consumers that do not compact), then one for the
 * patient (the 'e' item, which follows the commit's 'x' items and names the patient they belong to). */
static bool ship_erasure(ship_state *st, const log_item *it)
{
    if (it->kind == 'x') {
        buf_put(&st->erased, &it->version, sizeof it->version);
        buf_put(&st->erased, &it->id_len, sizeof it->id_len);
        buf_put(&st->erased, it->id, it->id_len);
        return true;
    }
    if (it->id_len != 16) return true;
    char pid[PATIENT_ID_TEXT], version[16];
    patient_id p;
    memcpy(p.b, it->id, 16);
    patient_id_format(&p, pid);
    bool ok = true;
    for (size_t at = 0; ok && at < st->erased.len;) {
        uint32_t v, len;
        memcpy(&v, st->erased.data + at, 4);
        memcpy(&len, st->erased.data + at + 4, 4);
        const char *rid = st->erased.data + at + 8;
        at += 8 + len;
        snprintf(version, sizeof version, "%u", v);
        rd_kafka_headers_t *h = rd_kafka_headers_new(3);
        rd_kafka_header_add(h, "medstream.erased", -1, "record", -1);
        rd_kafka_header_add(h, "record_id", -1, rid, (ssize_t)len);
        rd_kafka_header_add(h, "version", -1, version, -1);
        ok = produce(st, pid, NULL, 0, h);
    }
    st->erased.len = 0;
    if (!ok) return false;
    rd_kafka_headers_t *h = rd_kafka_headers_new(1);
    rd_kafka_header_add(h, "medstream.erased", -1, "patient", -1);
    return produce(st, pid, NULL, 0, h);
}

static bool ship_item(void *ctx, const log_item *it)
{
    ship_state *st = ctx;
    if (it->kind == 'x' || it->kind == 'e') return ship_erasure(st, it);
    if (it->kind != 'r') return true;
    public_record pr;
    bool found;
    ms_err e;
    /* this version's copy, as the lake and PostgreSQL read it: a commit may hold two versions of one record,
     * and the copy as of the commit time is the newer one's for both */
    if (store_public_record_version(st->r, it->id, it->id_len, st->commit_time, it->version, &pr, &found, &e) !=
        MS_OK) {
        st->failed = true;
        return false;
    }
    if (!found) return true;
    if (pr.deleted) { /* perhaps erased since (then its 'x' tombstone follows): nothing of it goes out */
        bool erased = false;
        if (store_patient_erased(st->r, &pr.pid, NULL, &erased, &e) != MS_OK) {
            st->failed = true;
            return false;
        }
        if (erased) return true;
    }
    char pid[PATIENT_ID_TEXT];
    patient_id_format(&pr.pid, pid);
    buf v = {0};
    buf_printf(&v, "{\"patient_id\":\"%s\",\"record_id\":", pid);
    jw_string(&v, it->id, it->id_len);
    if (pr.deleted) { /* a tombstone: the record is gone from the public copy */
        buf_printf(&v, ",\"version\":%u,\"deleted\":true}", it->version);
    } else {
        buf_printf(&v, ",\"version\":%u,\"fields\":", it->version);
        buf_put(&v, pr.fields, pr.fields_len);
        buf_putc(&v, '}');
    }
    bool ok = produce(st, pid, v.data, v.len, NULL);
    buf_free(&v);
    return ok;
}

static void *sink_main(void *arg)
{
    sink_kafka_public *k = arg;
    pthread_setname_np(pthread_self(), "ms-sink-kafka");
    uint64_t pos = 0;
    ms_err e;
    store_read *r;
    if (store_read_begin(k->store, &r, &e) == MS_OK) {
        store_sink_position(r, SINK_NAME, &pos, &e);
        store_read_end(r);
    }
    while (!atomic_load(&k->w.stop)) {
        if (store_read_begin(k->store, &r, &e) != MS_OK) {
            usleep(100000);
            continue;
        }
        ship_state st = {.k = k, .r = r};
        atomic_store(&k->failed, 0);
        bool found = false;
        ms_code rc = store_log_entry(r, pos + 1, &st.commit_time, ship_item, &st, &found, &e);
        store_read_end(r);
        buf_free(&st.erased);
        if (rc != MS_OK || st.failed) {
            ms_log(LOG_WARN, "sink.kafka_public.retry", "public stream: commit %llu not shipped; retrying",
                   (unsigned long long)pos + 1);
            usleep(200000);
            continue;
        }
        if (!found) { /* caught up */
            rd_kafka_poll(k->w.rk, 0);
            usleep(10000);
            continue;
        }
        /* delivered before the position moves on: a crash here re-sends, never skips */
        while (rd_kafka_flush(k->w.rk, 1000) == RD_KAFKA_RESP_ERR__TIMED_OUT && !atomic_load(&k->w.stop))
            ms_log(LOG_WARN, "sink.kafka_public.waiting", "public stream: waiting for the brokers");
        if (rd_kafka_outq_len(k->w.rk) > 0) break; /* stopping before delivery: keep the position */
        if (atomic_load(&k->failed)) {             /* the entry again, whole: at least once, never skipped */
            ms_log(LOG_WARN, "sink.kafka_public.retry", "public stream: commit %llu not delivered; again in 1 s",
                   (unsigned long long)pos + 1);
            sleep(1);
            continue;
        }
        pos++;
        if (store_sink_position_set(k->store, SINK_NAME, pos, &e) != MS_OK)
            ms_log(LOG_ERROR, "sink.kafka_public.position", "public stream: %s", e.msg);
    }
    return NULL;
}

ms_code sink_kafka_public_start(sink_kafka_public **out, store *s, const char *brokers, const char *topic,
                                const char *const *config, ms_err *e)
{
    char err[512];
    sink_kafka_public *k = ms_calloc(1, sizeof *k);
    k->store = s;
    if (!kafka_worker_start(&k->w,
                            &(kafka_producer_options){.brokers = brokers, .config = config, .on_delivery = on_delivery},
                            topic, sink_main, k, err, sizeof err)) {
        free(k);
        return ms_fail(e, MS_EINVAL, "kafka public topic: %s", err);
    }
    *out = k;
    return MS_OK;
}

void sink_kafka_public_stop(sink_kafka_public *k)
{
    if (!k) return;
    kafka_worker_stop(&k->w);
    free(k);
}
