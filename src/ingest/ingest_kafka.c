/*
 * ingest_kafka.c - the Kafka consumer thread (see ingest_kafka.h).
 *
 * What it logs (base/log.h), so that an operator can follow the consumer from the log alone: the first
 * time the brokers answer (kafka.connected), every change between reachable and unreachable
 * (kafka.unreachable, kafka.reachable, from the broker check every 2 s that also feeds /healthz), every
 * rebalance with its partition count (kafka.assigned, kafka.revoked, kafka.rebalance_error), and (through
 * dead_letters.c) per batch the messages sent to the dead-letter topic, counted by reason class
 * (kafka.dead_letters). It never logs a message's key or payload, nor the full reason (that goes in the dead
 * letter's header): a class is one of a fixed set of words.
 *
 * Dead letters are dead_letters.c's (its header has the whole argument for the writer's): the dead-letter
 * topic's producer, and the outbox in the store that keeps the records the writer refuses until their dead
 * letters are delivered, sent again by a node started again or by a cluster's replay of a partition's last
 * batches. Stage 1 sends the scan's refusals, stage 3 (and a replay) the writer's.
 */
#include "ingest/ingest_kafka.h"

#include "ingest/cluster.h"
#include "ingest/dead_letters.h"
#include "ingest/ingest.h"
#include "pipeline/prepare.h"

#include "base/kafka_client.h"
#include "base/log.h"
#include "base/metrics.h"
#include "pipeline/record_origin.h"
#include "pipeline/record_scan.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One batch between the stages of the consumer (see consumer_main). */
typedef struct {
    rd_kafka_message_t **msgs;
    int n;
    char *body; /* the messages, one per line, in one 4 KiB-aligned zero-padded buffer (O_DIRECT) */
    size_t body_len, body_padded;
    record_batch batch;
    source_offset *offsets; /* the next offset of every partition in the batch */
    int noffsets;
    item_result *results;
    cluster_batch route; /* a cluster node's: forwards and patient numbers (cluster.h) */
    bool replay;         /* a cluster node storing a batch committed before (no transaction, no scan dead letters) */
    bool committed;      /* a cluster node's: its Kafka transaction committed (stage 2), so stage 3 stores it */
    ingest_job job;      /* through the one ingest path: stage 2 appends it, stage 3 stores it */
    /* the writer's refusals go to the dead-letter topic, through the outbox: a batch consumed now, or a replayed
     * one that may never have been stored (cluster_replay_batch.tail) */
    bool send_refusals;
    dead_letters_refusals refusals; /* the outbox names of the writer's refusals (dead_letters.h) */
} kafka_batch;

struct kafka_ingest {
    kafka_options opt;
    rd_kafka_t *rk;
    dead_letters *dl;   /* the dead-letter topic's producer and the outbox of the writer's refusals */
    cluster *cl;        /* a cluster node's shards and transactions, or NULL */
    char **config;      /* the operator's librdkafka settings, NULL-ended (a cluster node rejoins with them) */
    atomic_bool broken; /* a cluster transaction failed: stage 3 drops batches until the consumer rejoins */
    _Atomic uint64_t txn_failed, replayed_batches, replayed_messages; /* a cluster node's, for /metrics */
    pthread_t thread, append_thread, store_thread;
    atomic_bool stop;
    /* this source's own state, for /metrics and /healthz (registered while it runs) */
    _Atomic uint64_t messages;
    /* tests (MEDSTREAM_TEST_PAUSE_BEFORE_STORE_MS): stage 3 pauses before storing a batch consumed now, so that a
     * test can kill the node there (MEDSTREAM_TEST_PAUSE_BEFORE_DEAD_LETTERS_MS: dead_letters.c's) */
    int test_pause_store_ms;
    _Atomic uint64_t lag;    /* messages behind the high watermarks of the assigned partitions */
    _Atomic int unreachable; /* the consumer cannot reach any broker: /healthz says degraded */
    char source[160];
    ingest_ctx ingest;
    /* the hand-offs between the three stages: one batch in each, so batches keep their order */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kafka_batch *to_append, *to_store;
    int in_flight; /* handed over by stage 1, not yet finished by stage 3 */
    /* the next offsets of the batches stage 3 stored, committed to Kafka asynchronously: on a revoke they
     * are committed again, synchronously, before the partitions go (plain mode; see on_rebalance) */
    rd_kafka_topic_partition_list_t *stored;
    unsigned revokes; /* partitions revoked so far (consumer thread: on_rebalance runs inside its poll) */
    bool consumer_done, append_done;
    int reachable;     /* the last broker check: 1 reachable, 0 not, -1 none yet (consumer thread only) */
    double down_since; /* ms_mono_s() of the check that found them unreachable */
};

static ms_code kafka_fail(ms_err *e, const char *what, const char *detail)
{
    return ms_fail(e, MS_EINVAL, "kafka: %s: %s", what, detail);
}

static void kafka_batch_free(kafka_batch *b)
{
    for (int i = 0; i < b->n; i++)
        rd_kafka_message_destroy(b->msgs[i]);
    free(b->msgs);
    free(b->body);
    record_batch_free(&b->batch);
    free(b->offsets);
    free(b->results);
    cluster_batch_free(&b->route);
    dead_letters_refusals_free(&b->refusals);
    free(b);
}

/* Where a message's record comes from, from its headers (pipeline/record_origin.h): a row of a file sent by
 * `medstream import --kafka` (named by file and line, as the offline importer names it), a record of the
 * store that seeded a cluster (its id and event time there), or neither. True: the importer marked it as
 * sent again after a crash (a replay). */
static bool message_origin(const rd_kafka_message_t *m, uint32_t body_line, scan_config *cfg)
{
    rd_kafka_headers_t *h;
    const void *origin, *line, *v;
    size_t origin_len, line_len, len;
    uint64_t file_line;
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR) return false;
    if (rd_kafka_header_get_last(h, RECORD_ORIGIN_HEADER, &origin, &origin_len) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_header_get_last(h, RECORD_LINE_HEADER, &line, &line_len) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        record_origin_parse(origin, origin_len, line, line_len, &file_line))
        record_origin_apply(cfg, origin, file_line, body_line);
    if (rd_kafka_header_get_last(h, RECORD_ID_HEADER, &v, &len) == RD_KAFKA_RESP_ERR_NO_ERROR && v) {
        cfg->record_id = v;
        cfg->record_id_len = (uint32_t)(len < UINT32_MAX ? len : UINT32_MAX);
    }
    if (rd_kafka_header_get_last(h, RECORD_TS_HEADER, &v, &len) == RD_KAFKA_RESP_ERR_NO_ERROR && v && len == 8)
        cfg->default_ts_us = (int64_t)ms_get_be64(v);
    return rd_kafka_header_get_last(h, RECORD_REPLAY_HEADER, &v, &len) == RD_KAFKA_RESP_ERR_NO_ERROR &&
           record_origin_replay(v, len);
}

/* Stage 1 (consumer thread): copy the messages into one body, scan every record, send the ones that
 * cannot be records to the dead-letter topic, and note each partition's next offset.
 * replay_of: NULL, or the committed batch a cluster node stores again (cluster.h): its offsets are recorded
 * only for messages of its targets (a batch of an older partition stores some shards of it, not all). */
static kafka_batch *kafka_batch_prepare(kafka_ingest *k, rd_kafka_message_t **msgs, int n,
                                        const cluster_replay_batch *replay_of)
{
    bool replay = replay_of != NULL;
    kafka_batch *b = ms_calloc(1, sizeof *b);
    b->replay = replay;
    b->send_refusals = !replay || replay_of->tail;
    b->msgs = ms_malloc(sizeof *msgs * (size_t)n);
    memcpy(b->msgs, msgs, sizeof *msgs * (size_t)n);
    b->n = n;
    for (int i = 0; i < n; i++)
        b->body_len += msgs[i]->len + 1;
    b->body_padded = ingest_padded_len(b->body_len);
    if (posix_memalign((void **)&b->body, STORE_BODY_ALIGN, b->body_padded) != 0) ms_oom();
    size_t *off = ms_malloc(sizeof *off * (size_t)n);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        off[i] = at;
        if (msgs[i]->len) memcpy(b->body + at, msgs[i]->payload, msgs[i]->len);
        at += msgs[i]->len;
        b->body[at++] = '\n';
    }
    memset(b->body + at, 0, b->body_padded - at);
    b->batch.records = ms_malloc(sizeof(parsed_record) * (size_t)n);
    b->batch.n = b->batch.cap = (uint32_t)n;
    scan_config cfg = ingest_scan_config(&k->ingest);
    for (int i = 0; i < n; i++) {
        scan_config one = cfg;
        bool again = message_origin(msgs[i], (uint32_t)i + 1, &one);
        record_prepare_one(&one, b->body + off[i], msgs[i]->len, (uint32_t)i + 1, &b->batch.mem, &b->batch.records[i]);
        b->batch.records[i].replay = again;
        if (b->batch.records[i].rejected) b->batch.rejected++;
    }
    free(off);
    if (!replay) dead_letters_send_rejected(k->dl, msgs, &b->batch); /* a replay's were sent when first stored */
    atomic_fetch_add(&k->messages, (uint64_t)n);
    if (k->cl) cluster_route(k->cl, &b->route, msgs, &b->batch, replay_of);
    b->offsets = ms_malloc(sizeof *b->offsets * (size_t)n);
    for (int i = 0; i < n; i++) {
        bool mine = !replay;
        for (int t = 0; replay && t < replay_of->ntargets; t++)
            mine |= replay_of->targets[t] == msgs[i]->partition;
        if (!mine) continue;
        const char *topic = rd_kafka_topic_name(msgs[i]->rkt); /* the input topic, or a cluster's by-shard topic */
        int x = 0;
        while (x < b->noffsets &&
               (b->offsets[x].partition != msgs[i]->partition || strcmp(b->offsets[x].topic, topic) != 0))
            x++;
        if (x == b->noffsets) b->offsets[b->noffsets++] = (source_offset){topic, msgs[i]->partition, 0};
        if (msgs[i]->offset + 1 > b->offsets[x].next) b->offsets[x].next = msgs[i]->offset + 1;
    }
    b->results = ms_calloc((size_t)n, sizeof(item_result));
    b->refusals = (dead_letters_refusals){.msgs = b->msgs, .n = n, .batch = &b->batch, .results = b->results};
    b->job = (ingest_job){.body = b->body,
                          .body_len = b->body_len,
                          .body_write_len = b->body_padded,
                          .body_pos = UINT64_MAX,
                          .batch = &b->batch,
                          .numbers = k->cl ? b->route.numbers : NULL,
                          .may_update = true, /* a service source: new versions of a record are its job */
                          .offsets = b->offsets,
                          .noffsets = b->noffsets,
                          .also = b->send_refusals ? dead_letters_keep_refusals : NULL,
                          .also_ctx = &b->refusals,
                          .source = k->source,
                          .user = "kafka",
                          .role = "ingest",
                          .client = k->opt.brokers,
                          .resource = k->opt.topic,
                          .results = b->results};
    return b;
}

/* Stage 3 (store thread): the batch through the writer, retried until it is durable; false if the
 * consumer was stopped first (then its offsets must not be committed: the messages come again). */
static bool kafka_batch_store(kafka_ingest *k, kafka_batch *b)
{
    b->job.received_at = ms_mono_s();
    if (k->cl && !b->replay && !b->committed) return false; /* its transaction failed: nothing of it is stored */
    /* plain mode: the scan's dead letters (stage 1) are in Kafka before the commit that moves the store's
     * offsets past them (a cluster node's were, before its transaction: cluster_transaction) */
    if (!k->cl && !b->replay && !dead_letters_delivered(k->dl)) return false;
    for (int attempt = 0; attempt == 0 || !atomic_load(&k->stop); attempt++) {
        ms_err e = {0};
        if (ingest_store(&k->ingest, &b->job, &e) == MS_OK) return true;
        ms_log(LOG_ERROR, "kafka.batch_retry", "kafka: batch of %d not stored (%s); retrying", b->n, e.msg);
        b->job.body_pos = UINT64_MAX; /* append again: what was appended for it is unreferenced */
        usleep(200000);
    }
    return false;
}

/* Stage 3, after the batch is durable: the dead letters must be in Kafka before the offsets move past
 * them; then commit exactly this batch's offsets (the consumer stage has polled further). */
static void kafka_batch_commit(kafka_ingest *k, kafka_batch *b)
{
    if (k->cl || !dead_letters_delivered(k->dl)) return; /* a cluster's offsets went with its transaction */
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(b->noffsets);
    for (int i = 0; i < b->noffsets; i++)
        rd_kafka_topic_partition_list_add(parts, b->offsets[i].topic, b->offsets[i].partition)->offset =
            b->offsets[i].next;
    /* asynchronous: the store holds the same offsets, so a lost commit replays nothing on this node; the
     * partition's next owner relies on Kafka's, so a revoke commits them again and waits (on_rebalance) */
    rd_kafka_resp_err_t err = rd_kafka_commit(k->rk, parts, 1);
    if (err) ms_log(LOG_WARN, "kafka.commit_failed", "kafka: offset commit failed: %s", rd_kafka_err2str(err));
    pthread_mutex_lock(&k->mu);
    if (!k->stored) k->stored = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *at =
            rd_kafka_topic_partition_list_find(k->stored, parts->elems[i].topic, parts->elems[i].partition);
        if (!at) at = rd_kafka_topic_partition_list_add(k->stored, parts->elems[i].topic, parts->elems[i].partition);
        at->offset = parts->elems[i].offset;
    }
    pthread_mutex_unlock(&k->mu);
    rd_kafka_topic_partition_list_destroy(parts);
}

/* A plain node losing its partitions (consumer thread, nothing in flight): the offsets of what it stored,
 * committed to Kafka and waited for, so that the next owner, who starts at Kafka's committed offset,
 * does not store those batches a second time in its own store. */
static void commit_stored_before_revoke(kafka_ingest *k, rd_kafka_t *rk)
{
    pthread_mutex_lock(&k->mu);
    rd_kafka_topic_partition_list_t *stored = k->stored;
    k->stored = NULL;
    pthread_mutex_unlock(&k->mu);
    if (!stored) return;
    rd_kafka_resp_err_t err = rd_kafka_commit(rk, stored, 0);
    if (err)
        ms_log(LOG_WARN, "kafka.commit_failed",
               "kafka: offset commit before a revoke failed: %s; the next owner may store its last batch again",
               rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(stored);
}

/* The hand-offs between the stages: one batch per slot, under k->mu. */
static void handoff_put(kafka_ingest *k, kafka_batch **slot, kafka_batch *b)
{
    pthread_mutex_lock(&k->mu);
    while (*slot) /* the next stage still has the previous batch: wait (back-pressure) */
        pthread_cond_wait(&k->cv, &k->mu);
    *slot = b;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

/* The next batch of a slot, or NULL once the stage before it is done and the slot is empty. */
static kafka_batch *handoff_take(kafka_ingest *k, kafka_batch **slot, const bool *upstream_done)
{
    pthread_mutex_lock(&k->mu);
    while (!*slot && !*upstream_done)
        pthread_cond_wait(&k->cv, &k->mu);
    kafka_batch *b = *slot;
    *slot = NULL;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
    return b;
}

/* Change a hand-off counter or flag under k->mu and wake the waiters. */
static void handoff_note(kafka_ingest *k, bool *done, int in_flight_delta)
{
    pthread_mutex_lock(&k->mu);
    if (done) *done = true;
    k->in_flight += in_flight_delta;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

/* A cluster node, stage 2: the batch's Kafka transaction (cluster.h), while stage 3 stores the batch
 * before it in LMDB. After a failed one, none is tried until the consumer rejoins (the mints of the
 * batches behind it were made after the failed one's). */
static void cluster_transaction(kafka_ingest *k, kafka_batch *b)
{
    if (atomic_load(&k->broken) || !dead_letters_delivered(k->dl)) return;
    ms_err e = {0};
    if (cluster_commit(k->cl, &b->route, b->msgs, b->n, b->offsets, b->noffsets, k->rk, &e) == MS_OK) {
        b->committed = true;
        return;
    }
    ms_log(LOG_ERROR, "cluster.transaction_failed", "%s; the node rejoins its group", e.msg);
    atomic_fetch_add(&k->txn_failed, 1);
    atomic_store(&k->broken, true);
}

/* Stage 2 (append thread): the batch's body into the segment log (O_DIRECT), and a cluster node's Kafka
 * transaction, while stage 3 commits the batch before it. A failed append is left to stage 3, which
 * appends again before it submits. */
static void *append_main(void *arg)
{
    kafka_ingest *k = arg;
    pthread_setname_np(pthread_self(), "ms-kafka-append");
    kafka_batch *b;
    while ((b = handoff_take(k, &k->to_append, &k->consumer_done))) {
        ms_err e;
        ingest_append(&k->ingest, &b->job, &e); /* a failure is left to stage 3, which appends again */
        if (k->cl) cluster_transaction(k, b);
        handoff_put(k, &k->to_store, b);
    }
    handoff_note(k, &k->append_done, 0); /* stage 1 is done and nothing is left */
    return NULL;
}

static void *store_main(void *arg)
{
    kafka_ingest *k = arg;
    pthread_setname_np(pthread_self(), "ms-kafka-store");
    kafka_batch *b;
    while ((b = handoff_take(k, &k->to_store, &k->append_done))) { /* NULL: stage 2 is done, nothing left */
        if (k->test_pause_store_ms > 0 && (!k->cl || b->committed)) {
            ms_log(LOG_WARN, "kafka.test_pause", "kafka: pausing %d ms before storing a batch (test hook)",
                   k->test_pause_store_ms);
            usleep((useconds_t)k->test_pause_store_ms * 1000);
        }
        if (kafka_batch_store(k, b)) {
            dead_letters_send_refusals(k->dl, &b->refusals); /* before kafka_batch_commit's offsets */
            kafka_batch_commit(k, b);
        }
        kafka_batch_free(b);
        handoff_note(k, NULL, -1);
    }
    return NULL;
}

/* A cluster node on assignment (consumer thread, nothing in flight): the shards' identities from the
 * changelog, then every committed batch of the assigned partitions this store lacks, stored again in the
 * order they were committed (cluster.h): after it, the store holds what the shards' owners stored. */
static ms_code cluster_take_over(kafka_ingest *k, rd_kafka_topic_partition_list_t *parts, ms_err *e)
{
    cluster_replay plan;
    ms_code rc = cluster_restore(k->cl, parts, &plan, e);
    if (rc != MS_OK) return rc;
    double t0 = ms_mono_s();
    uint64_t records = 0;
    cluster_reader *rd = NULL;
    if (plan.n) rc = cluster_reader_open(k->cl, &plan, &rd, e);
    for (int i = 0; rc == MS_OK && i < plan.n; i++) { /* in the order they were committed */
        const cluster_replay_batch *pb = &plan.batches[i];
        rd_kafka_message_t **msgs = NULL;
        int n = 0;
        for (int r = 0; rc == MS_OK && r < pb->nruns; r++) {
            rd_kafka_message_t **got;
            int ngot;
            if ((rc = cluster_reader_run(rd, pb->source, &pb->runs[r], &got, &ngot, e)) != MS_OK) break;
            msgs = ms_realloc(msgs, sizeof *msgs * (size_t)(n + ngot + 1));
            if (ngot) memcpy(msgs + n, got, sizeof *msgs * (size_t)ngot);
            n += ngot;
            free(got);
        }
        if (rc != MS_OK || n == 0) {
            for (int m = 0; m < n; m++)
                rd_kafka_message_destroy(msgs[m]);
            free(msgs);
            continue;
        }
        kafka_batch *b = kafka_batch_prepare(k, msgs, n, pb);
        free(msgs);
        if (ingest_append(&k->ingest, &b->job, e) != MS_OK) b->job.body_pos = UINT64_MAX; /* store appends */
        if (!kafka_batch_store(k, b))
            rc = ms_fail(e, MS_EIO, "kafka cluster: a replayed batch was not stored");
        else
            dead_letters_send_refusals(k->dl, &b->refusals); /* a tail batch's (b->send_refusals): maybe never sent */
        records += (uint64_t)n;
        atomic_fetch_add(&k->replayed_batches, 1);
        atomic_fetch_add(&k->replayed_messages, (uint64_t)n);
        kafka_batch_free(b);
    }
    cluster_reader_close(rd);
    if (rc == MS_OK) rc = cluster_replayed(k->cl, parts, &plan, e);
    if (rc == MS_OK && plan.n) {
        log_field f[] = {LOG_INT("batches", plan.n), LOG_UINT("messages", records),
                         LOG_MS("ms", (ms_mono_s() - t0) * 1000.0)};
        ms_log_fields(LOG_INFO, "cluster.replayed", f, LOG_NFIELDS(f),
                      "kafka cluster: committed batches this store lacked stored again");
    }
    cluster_replay_free(&plan);
    return rc;
}

/* On assignment, start each partition at the later of Kafka's committed offset and the one the store
 * recorded with the last batch it committed (a batch of only dead letters commits its offsets too,
 * ingest.h): a commit to Kafka that was lost does not replay, and a store that is behind (one restored
 * from an older backup) does not go back. */
static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    kafka_ingest *k = opaque;
    if (err != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
            log_field f[] = {LOG_INT("partitions", parts ? parts->cnt : 0), LOG_STR("group", k->opt.group)};
            ms_log_fields(LOG_INFO, "kafka.revoked", f, LOG_NFIELDS(f), "kafka: partitions revoked");
        } else {
            ms_log(LOG_WARN, "kafka.rebalance_error", "kafka: rebalance: %s; partitions unassigned",
                   rd_kafka_err2str(err));
        }
        /* before the partitions go: let the store stage finish (and commit) the batch in hand, so the
         * next owner starts after it instead of consuming it again */
        pthread_mutex_lock(&k->mu);
        while (k->in_flight > 0)
            pthread_cond_wait(&k->cv, &k->mu);
        pthread_mutex_unlock(&k->mu);
        if (k->cl)
            cluster_revoked(k->cl);
        else
            commit_stored_before_revoke(k, rk);
        k->revokes++; /* the consumer stage drops the messages it holds: they are the next owner's now */
        rd_kafka_assign(rk, NULL);
        return;
    }
    ms_err e;
    if (k->cl && cluster_take_over(k, parts, &e) != MS_OK) { /* never mint before the changelog is read */
        ms_log(LOG_ERROR, "cluster.restore_failed", "%s; the node rejoins its group", e.msg);
        atomic_store(&k->broken, true);
        rd_kafka_assign(rk, NULL);
        return;
    }
    rd_kafka_committed(rk, parts, 5000); /* fills in Kafka's committed offsets (or INVALID) */
    store_read *r;
    if (store_read_begin(k->opt.store, &r, &e) == MS_OK) {
        for (int i = 0; i < parts->cnt; i++) {
            int64_t next;
            bool found;
            if (store_source_offset_get(r, parts->elems[i].topic, parts->elems[i].partition, &next, &found, &e) !=
                    MS_OK ||
                !found)
                continue;
            /* a cluster node commits to Kafka first (cluster.h): a store behind Kafka lost its last batches
             * in a crash, or the partition was away; either way it reads them again */
            if (parts->elems[i].offset < 0 || (k->cl ? next < parts->elems[i].offset : next > parts->elems[i].offset))
                parts->elems[i].offset = next;
        }
        store_read_end(r);
    }
    log_field f[] = {LOG_INT("partitions", parts->cnt), LOG_STR("group", k->opt.group)};
    ms_log_fields(LOG_INFO, "kafka.assigned", f, LOG_NFIELDS(f), "kafka: partitions assigned");
    rd_kafka_assign(rk, parts);
}

/* Log a change of the brokers' reachability (and the first contact). */
static void note_reachability(kafka_ingest *k, bool reachable, int brokers)
{
    if (reachable && k->reachable == 1) return;
    if (!reachable && k->reachable == 0) return;
    if (reachable && k->reachable == -1) {
        log_field f[] = {LOG_INT("brokers", brokers), LOG_STR("topic", k->opt.topic), LOG_STR("group", k->opt.group)};
        ms_log_fields(LOG_INFO, "kafka.connected", f, LOG_NFIELDS(f), "kafka: connected");
    } else if (reachable) {
        log_field f[] = {LOG_INT("brokers", brokers), LOG_MS("down_ms", (ms_mono_s() - k->down_since) * 1000.0)};
        ms_log_fields(LOG_INFO, "kafka.reachable", f, LOG_NFIELDS(f), "kafka: brokers reachable again");
    } else {
        k->down_since = ms_mono_s();
        ms_log(LOG_WARN, "kafka.unreachable", "kafka: brokers unreachable (%s); HTTP ingest goes on", k->opt.brokers);
    }
    k->reachable = reachable ? 1 : 0;
}

/* Every couple of seconds: can the brokers be reached (for /healthz), and how far behind are we? */
static void check_brokers(kafka_ingest *k)
{
    const struct rd_kafka_metadata *md = NULL;
    bool reachable = rd_kafka_metadata(k->rk, 0, NULL, &md, 1000) == RD_KAFKA_RESP_ERR_NO_ERROR;
    int brokers = md ? md->broker_cnt : 0;
    if (md) rd_kafka_metadata_destroy(md);
    atomic_store(&k->unreachable, reachable ? 0 : 1);
    note_reachability(k, reachable, brokers);
    if (reachable && k->cl) cluster_refresh_members(k->cl, k->rk);
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (!reachable || rd_kafka_assignment(k->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR) return;
    rd_kafka_position(k->rk, parts);
    uint64_t lag = 0;
    for (int i = 0; i < parts->cnt; i++) {
        int64_t lo, hi;
        if (rd_kafka_get_watermark_offsets(k->rk, parts->elems[i].topic, parts->elems[i].partition, &lo, &hi) ==
                RD_KAFKA_RESP_ERR_NO_ERROR &&
            parts->elems[i].offset >= 0 && hi > parts->elems[i].offset)
            lag += (uint64_t)(hi - parts->elems[i].offset);
    }
    rd_kafka_topic_partition_list_destroy(parts);
    atomic_store(&k->lag, lag);
}

static void cluster_rejoin(kafka_ingest *k);

/* Stage 1 of three: poll a batch (up to batch_max messages, or linger_ms after the first), prepare it
 * (copy, scan, dead letters), and hand it on; stage 2 appends its body to the segment log while stage 3
 * commits the batch before it through the writer and commits its offsets. Each hand-off holds one
 * batch, so batches are stored and their offsets committed strictly in order. */
static void *consumer_main(void *arg)
{
    kafka_ingest *k = arg;
    pthread_setname_np(pthread_self(), "ms-kafka");
    rd_kafka_message_t **msgs = ms_malloc(sizeof *msgs * (size_t)k->opt.batch_max);
    double next_check = 0;
    while (!atomic_load(&k->stop)) {
        if (k->cl && atomic_load(&k->broken)) cluster_rejoin(k);
        if (!k->rk) break; /* stopped while rejoining */
        if (ms_mono_s() >= next_check) {
            check_brokers(k);
            next_check = ms_mono_s() + 2;
        }
        dead_letters_send_left(k->dl);
        int n = 0;
        double deadline = 0;
        unsigned revokes = k->revokes;
        while (n < k->opt.batch_max && !atomic_load(&k->stop)) {
            int wait_ms = 100;
            if (n) {
                double left = deadline - ms_mono_s();
                if (left <= 0) break;
                wait_ms = (int)(left * 1000) + 1;
            }
            rd_kafka_message_t *m = rd_kafka_consumer_poll(k->rk, wait_ms);
            if (k->revokes != revokes) { /* the partitions went in this poll: what was polled before is not ours */
                for (int i = 0; i < n; i++)
                    rd_kafka_message_destroy(msgs[i]);
                n = 0;
                revokes = k->revokes;
            }
            if (!m) {
                if (!n) break; /* idle: back to the outer loop (broker checks, stop) */
                continue;
            }
            if (m->err) { /* partition EOF and transient errors: nothing to store */
                rd_kafka_message_destroy(m);
                continue;
            }
            if (!n) deadline = ms_mono_s() + k->opt.linger_ms / 1000.0;
            msgs[n++] = m;
        }
        if (!n) continue;
        handoff_note(k, NULL, +1); /* in flight from here until stage 3 is done with it */
        handoff_put(k, &k->to_append, kafka_batch_prepare(k, msgs, n, NULL));
    }
    handoff_note(k, &k->consumer_done, 0);
    free(msgs);
    return NULL;
}

static void kafka_metrics(void *ctx, buf *out)
{
    kafka_ingest *k = ctx;
    metrics_counter(out, "medstream_kafka_messages_total", "Kafka messages consumed.", atomic_load(&k->messages));
    metrics_counter(out, "medstream_kafka_dead_letters_total", "Kafka messages sent to the dead-letter topic.",
                    dead_letters_sent(k->dl));
    metrics_gauge(out, "medstream_kafka_lag", "Messages behind the high watermarks of the assigned partitions.",
                  atomic_load(&k->lag));
    metrics_gauge(out, "medstream_kafka_unreachable", "1 while the Kafka consumer cannot reach its brokers.",
                  (uint64_t)atomic_load(&k->unreachable));
    if (!k->cl) return;
    metrics_counter(out, "medstream_cluster_transactions_failed_total",
                    "Cluster batches whose Kafka transaction failed (the node rejoined its group).",
                    atomic_load(&k->txn_failed));
    metrics_counter(out, "medstream_cluster_replayed_batches_total",
                    "Committed batches this node stored again when it was given their partitions.",
                    atomic_load(&k->replayed_batches));
    metrics_counter(out, "medstream_cluster_replayed_records_total",
                    "Messages of those batches (records of other shards skipped included).",
                    atomic_load(&k->replayed_messages));
}

/* Degraded while no broker can be reached (HTTP ingest goes on). */
static bool kafka_health(void *ctx, buf *out)
{
    kafka_ingest *k = ctx;
    if (!atomic_load(&k->unreachable)) return true;
    buf_puts(out, ",\"kafka\":\"brokers unreachable\"");
    return false;
}

/* The group's consumer, subscribed (a cluster node: to the topic and its by-shard topic, co-partitioned,
 * with the range assignor so that partition p of both goes to one member); NULL with err. */
static rd_kafka_t *consumer_new(kafka_ingest *k, char *err, size_t cap)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *settings[][2] = {
        {"bootstrap.servers", k->opt.brokers},
        {"group.id", k->opt.group},
        {"enable.auto.commit", "false"},
        {"auto.offset.reset", "earliest"},
        {"session.timeout.ms", "6000"},
        {"heartbeat.interval.ms", "1000"},
        /* Freshness: a fetch on an idle partition waits at most this long (librdkafka's default is
         * 500 ms; the mock cluster always waits the full time, a real broker answers when data comes). */
        {"fetch.wait.max.ms", "50"},
        {"log_level", "4"},
        /* a cluster node: forwards come in transactions; partition p of both topics to one member */
        {"isolation.level", k->cl ? "read_committed" : "read_uncommitted"},
        {"partition.assignment.strategy", k->cl ? "range" : "range,roundrobin"},
        /* a cluster node replays a partition it takes over inside the rebalance (cluster.h): at 4.9 s per GB,
         * 30 min is ~360 GB; a dead node is still found by its session (heartbeats from librdkafka's thread) */
        {"max.poll.interval.ms", k->cl ? "1800000" : "300000"},
    };
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++) {
        if (rd_kafka_conf_set(conf, settings[i][0], settings[i][1], err, cap) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    if (!kafka_conf_apply(conf, (const char *const *)k->config, err, cap) ||
        /* a cluster node's HTTP URL, after the operator's settings: the group's description tells every node
         * who owns what (cluster.h) */
        (k->cl && k->opt.advertise &&
         rd_kafka_conf_set(conf, "client.id", k->opt.advertise, err, cap) != RD_KAFKA_CONF_OK)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    kafka_conf_log_to_ms(conf);
    rd_kafka_conf_set_opaque(conf, k);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, cap);
    if (!rk) {
        rd_kafka_conf_destroy(conf); /* rd_kafka_new took it only on success */
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(2);
    rd_kafka_topic_partition_list_add(topics, k->opt.topic, RD_KAFKA_PARTITION_UA);
    if (k->cl) rd_kafka_topic_partition_list_add(topics, cluster_byshard_topic(k->cl), RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t rc = rd_kafka_subscribe(rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (rc) {
        snprintf(err, cap, "subscribe: %s", rd_kafka_err2str(rc));
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

/* A cluster node after a failed transaction or restore (consumer thread, nothing in flight): leave the
 * group, forget what was minted and not stored, and join again (the new assignment restores and resumes
 * from the store's offsets). */
static void cluster_rejoin(kafka_ingest *k)
{
    pthread_mutex_lock(&k->mu);
    while (k->in_flight > 0)
        pthread_cond_wait(&k->cv, &k->mu);
    pthread_mutex_unlock(&k->mu);
    rd_kafka_consumer_close(k->rk);
    rd_kafka_destroy(k->rk);
    k->rk = NULL;
    char err[512];
    ms_err e;
    while (!atomic_load(&k->stop)) {
        if (cluster_reset(k->cl, &e) != MS_OK)
            ms_log(LOG_ERROR, "cluster.reset_failed", "%s; trying again", e.msg);
        else if (!(k->rk = consumer_new(k, err, sizeof err)))
            ms_log(LOG_ERROR, "cluster.reset_failed", "kafka: consumer: %s; trying again", err);
        else
            break;
        usleep(1000000);
    }
    atomic_store(&k->broken, false);
    ms_log(LOG_INFO, "cluster.rejoined", "kafka cluster: the node joins its group again");
}

static void free_config(char **config)
{
    for (char **p = config; p && *p; p++)
        free(*p);
    free(config);
}

static void kafka_free(kafka_ingest *k)
{
    if (k->rk) rd_kafka_destroy(k->rk);
    dead_letters_close(k->dl);
    if (k->stored) rd_kafka_topic_partition_list_destroy(k->stored);
    cluster_close(k->cl);
    free_config(k->config);
    free((char *)k->opt.dlq_topic);
    free((char *)k->opt.advertise);
    free(k);
}

ms_code kafka_ingest_start(kafka_ingest **out, const kafka_options *opt, ms_err *e)
{
    char err[512];
    rd_kafka_conf_t *probe = rd_kafka_conf_new(); /* the operator's settings, checked before any client uses them */
    bool settings_ok = kafka_conf_apply(probe, opt->config, err, sizeof err);
    rd_kafka_conf_destroy(probe);
    if (!settings_ok) return kafka_fail(e, "--kafka-config", err);
    kafka_ingest *k = ms_calloc(1, sizeof *k);
    k->opt = *opt;                                                         /* the callback reads the store from here */
    k->opt.dlq_topic = ms_strndup(opt->dlq_topic, strlen(opt->dlq_topic)); /* the caller's may not live on */
    k->opt.advertise = opt->advertise ? ms_strndup(opt->advertise, strlen(opt->advertise)) : NULL; /* rejoins */
    k->opt.node = NULL; /* read by cluster_open only */
    size_t nconf = 0;
    while (opt->config && opt->config[nconf])
        nconf++;
    k->config = ms_calloc(nconf + 1, sizeof *k->config); /* kept: a cluster node makes its consumer again */
    for (size_t i = 0; i < nconf; i++)
        k->config[i] = ms_strndup(opt->config[i], strlen(opt->config[i]));
    k->opt.config = NULL;
    k->reachable = -1;
    k->ingest = (ingest_ctx){opt->store, opt->writer, opt->schema, opt->max_record};
    const char *pause = getenv("MEDSTREAM_TEST_PAUSE_BEFORE_STORE_MS");
    k->test_pause_store_ms = pause ? atoi(pause) : 0;
    ms_code lrc = dead_letters_open(&k->dl,
                                    &(dead_letters_options){.brokers = opt->brokers,
                                                            .group = opt->group,
                                                            .topic = k->opt.dlq_topic,                /* k's copy */
                                                            .config = (const char *const *)k->config, /* k's */
                                                            .read_committed = opt->cluster,
                                                            .store = opt->store,
                                                            .writer = opt->writer,
                                                            .stop = &k->stop},
                                    e);
    if (lrc != MS_OK) {
        kafka_free(k);
        return lrc;
    }
    if (opt->cluster) {
        cluster_options co = {.brokers = opt->brokers,
                              .topic = opt->topic,
                              .group = opt->group,
                              .node = opt->node,
                              .advertise = k->opt.advertise,            /* k's copy: outlives the cluster */
                              .config = (const char *const *)k->config, /* outlives the cluster */
                              .store = opt->store,
                              .writer = opt->writer};
        ms_code rc = cluster_open(&k->cl, &co, e);
        if (rc != MS_OK) {
            kafka_free(k);
            return rc;
        }
    }
    /* the dead-letter producer: the same brokers and security settings, none of the consumer's */
    if (!dead_letters_connect(k->dl, err, sizeof err)) {
        kafka_free(k);
        return kafka_fail(e, "dead-letter producer", err);
    }
    if (!(k->rk = consumer_new(k, err, sizeof err))) {
        kafka_free(k);
        return kafka_fail(e, "consumer", err);
    }
    snprintf(k->source, sizeof k->source, "kafka %s group %s", opt->topic, opt->group);
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    bool store_started = pthread_create(&k->store_thread, NULL, store_main, k) == 0;
    bool append_started = store_started && pthread_create(&k->append_thread, NULL, append_main, k) == 0;
    if (!append_started || pthread_create(&k->thread, NULL, consumer_main, k) != 0) {
        pthread_mutex_lock(&k->mu);
        k->consumer_done = true;
        if (!append_started) k->append_done = true;
        pthread_cond_broadcast(&k->cv);
        pthread_mutex_unlock(&k->mu);
        if (append_started) pthread_join(k->append_thread, NULL);
        if (store_started) pthread_join(k->store_thread, NULL);
        pthread_mutex_destroy(&k->mu);
        pthread_cond_destroy(&k->cv);
        kafka_free(k);
        return ms_fail(e, MS_EIO, "kafka: cannot start the consumer thread");
    }
    subsystem_register(&(subsystem){"kafka", kafka_metrics, kafka_health, k});
    *out = k;
    return MS_OK;
}

struct cluster *kafka_ingest_cluster(kafka_ingest *k) { return k ? k->cl : NULL; }

void kafka_ingest_stop(kafka_ingest *k)
{
    if (!k) return;
    subsystem_unregister(k);
    atomic_store(&k->stop, true);
    pthread_join(k->thread, NULL);
    pthread_join(k->append_thread, NULL);
    pthread_join(k->store_thread, NULL);       /* after the batches in hand */
    if (k->rk) rd_kafka_consumer_close(k->rk); /* may call on_rebalance (revoke): the hand-off is still live */
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
    dead_letters_flush(k->dl, 5000);
    kafka_free(k);
}
