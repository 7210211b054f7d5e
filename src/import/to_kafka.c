/*
 * to_kafka.c - the importer's destination in Kafka (--kafka BROKERS --topic T): each good row one message
 * of topic T, in the partition that owns its shard, the position kept in a checkpoint file beside the
 * input (as --url keeps it). See import.h; the cluster it feeds is README "Cluster: past one machine".
 *
 * DESIGN: a worker runs the pure stages over its batch's rows as the offline importer does (prepare.h,
 * with the schema of --schema: the scan, the identity, the CSV conversion), so a row the importer would
 * reject offline (no identity, too large, bad JSON, bad CSV) goes to the reject file and is never sent.
 * Each good row goes out as it is in the body (NDJSON: the row's text; CSV: the record object it makes)
 * with partition = shard mod P (shard.h: XXH3-64 of the identity key the scan made, P the topic's
 * partition count from the broker's metadata, refused unless a power of two) and key = the shard number
 * in decimal, as medstream bench sends them; a row without a record id carries the file's identity and its
 * physical line as headers (record_origin.h), so the Kafka ingest names it as the offline importer would.
 *
 * Batches are produced in file order (a worker waits for the batch before its own to be handed to the
 * producer: librdkafka keeps a partition's messages in the order they were produced, and the idempotent
 * producer keeps them so on retries), then each worker waits for its own batch's delivery reports
 * (acks=all). A batch is counted, and the checkpoint file moved past it, only once every message of it is
 * acknowledged; a message that is not (after librdkafka's own retries) fails the import, and no later
 * batch is produced. A rerun sends again from the checkpoint: rows with a record id are duplicates of
 * themselves at the nodes, rows without one are too (the same headers, the same id). As over --url,
 * before a batch goes out past what the checkpoint file says may have been sent (replay_until), the file
 * is rewritten to say so; a rerun marks the rows it sends again below that point with a replay header
 * (record_origin.h), so that a row holding an older version of a record the nodes stored already is a
 * duplicate of that version, not a new version.
 *
 * The producer is medstream's one factory (kafka_producer_new) with the operator's --kafka-config, then
 * enable.idempotence=true and acks=all, which the operator cannot turn off. Messages are not copied: a
 * batch's body outlives them (the worker waits for every report before it returns).
 *
 * What it must never do: send a row the offline importer would reject, send a batch before the one
 * before it, write the checkpoint file past a batch not wholly acknowledged, or name a row's value in a
 * message or a log line (the reject file holds them; errors name the topic, partitions and lines).
 */
#include "import/import.h"

#include "import/import_internal.h"

#include "base/kafka_client.h"
#include "pipeline/record_origin.h"
#include "pipeline/shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METADATA_TIMEOUT_MS 15000
#define POLL_MS 50

typedef struct {
    rd_kafka_t *rk;
    int32_t partitions;
    char where[300]; /* "kafka topic T": the checkpoint file's destination (not the brokers: a list of one
                        cluster's brokers may be given otherwise next time) */
    unsigned char dry_key[32];
    /* under mu: batches go to the producer in file order (turn: the seq that may produce next), and the
     * checkpoint file, written by the committer after each batch and before a batch goes out past what the
     * file says may have been sent */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t turn;
    bool broken;               /* a batch was not wholly produced or delivered: no later batch is produced */
    import_position committed; /* the last position counted */
    uint64_t sent_end;         /* the end of the furthest batch produced */
} kafka_target;

/* One batch's messages on their way (on the worker's stack: it waits for every report). */
typedef struct {
    atomic_uint_fast64_t pending, failed;
    _Atomic int first_error; /* rd_kafka_resp_err_t of the first failed delivery */
} batch_sent;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk, (void)opaque;
    batch_sent *s = m->_private;
    if (!s) return;
    if (m->err) {
        int none = 0;
        atomic_compare_exchange_strong(&s->first_error, &none, (int)m->err);
        atomic_fetch_add(&s->failed, 1);
    }
    atomic_fetch_sub(&s->pending, 1);
}

static void kafka_close(import_run *run)
{
    kafka_target *t = run->target_state;
    if (!t) return;
    if (t->rk) {
        rd_kafka_flush(t->rk, 5000); /* nothing is queued: every batch waited for its reports */
        rd_kafka_destroy(t->rk);
    }
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
    run->target_state = NULL;
}

/* The topic's partition count from the broker's metadata. */
static ms_code topic_partitions(kafka_target *t, const char *topic, int32_t *out, ms_err *e)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(t->rk, topic, NULL);
    if (!rkt) return ms_fail(e, MS_EINVAL, "--topic %s: not a topic name", topic);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(t->rk, 0, rkt, &md, METADATA_TIMEOUT_MS);
    ms_code rc = MS_OK;
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        rc = ms_fail(e, MS_EIO, "kafka: the brokers' metadata of topic %s: %s", topic, rd_kafka_err2str(err));
    else if (md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt <= 0)
        rc = ms_fail(e, MS_EINVAL, "kafka: topic %s: %s", topic,
                     md->topic_cnt == 1 && md->topics[0].err ? rd_kafka_err2str(md->topics[0].err)
                                                             : "no partitions (does it exist?)");
    else
        *out = md->topics[0].partition_cnt;
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return rc;
}

static ms_code kafka_load(import_run *run, import_position *p, bool *found, ms_err *e)
{
    const import_options *o = run->opt;
    kafka_target *t = ms_calloc(1, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    memset(t->dry_key, 0x5a, sizeof t->dry_key); /* derived ids are the nodes' to make: any key will do here */
    run->target_state = t;
    snprintf(t->where, sizeof t->where, "kafka topic %s", o->kafka_topic);
    /* the operator's settings, then the two this destination's guarantees rest on */
    size_t n = 0;
    while (o->kafka_config && o->kafka_config[n])
        n++;
    const char **settings = ms_calloc(n + 3, sizeof *settings);
    for (size_t i = 0; i < n; i++)
        settings[i] = o->kafka_config[i];
    settings[n] = "enable.idempotence=true";
    settings[n + 1] = "acks=all";
    char why[512];
    kafka_producer_options po = {.brokers = o->kafka_brokers, .config = settings, .on_delivery = on_delivery};
    t->rk = kafka_producer_new(&po, why, sizeof why);
    free(settings);
    if (!t->rk) return ms_fail(e, MS_EINVAL, "--kafka: %s", why);
    int32_t parts = 0;
    ms_code rc = topic_partitions(t, o->kafka_topic, &parts, e);
    if (rc != MS_OK) return rc;
    if (!shard_partitions_ok(parts))
        return ms_fail(e, MS_EINVAL,
                       "kafka: topic %s has %d partitions: a medstream cluster's topic needs a power of two "
                       "(1, 2, 4, ... %u), so that each shard lives whole in one partition",
                       o->kafka_topic, (int)parts, SHARD_COUNT);
    t->partitions = parts;
    rc = checkpoint_file_load(run->checkpoint_path, import_input_identity(run->in), t->where, p, found, why, sizeof why,
                              e);
    if (rc == MS_OK && !*found && why[0]) fprintf(o->err, "import: %s; starting from the beginning\n", why);
    return rc;
}

static void kafka_begin(import_run *run)
{
    kafka_target *t = run->target_state;
    t->turn = 0;
    t->committed = run->pos;
    t->sent_end = 0;
}

/* The checkpoint file: the position counted, and how far rows may have been sent (under t->mu). */
static ms_code save_locked(import_run *run, kafka_target *t, ms_err *e)
{
    import_position p = t->committed;
    if (t->sent_end > p.replay_until) p.replay_until = t->sent_end;
    return checkpoint_file_save(run->checkpoint_path, import_input_identity(run->in), t->where, &p, e);
}

/* Wait for the batch before b to be handed to the producer; false if one could not be (nothing of b
 * may then go out: it would pass rows of the file that were not). */
static bool wait_turn(kafka_target *t, const import_batch *b)
{
    pthread_mutex_lock(&t->mu);
    while (t->turn != b->seq && !t->broken)
        pthread_cond_wait(&t->cv, &t->mu);
    bool ok = !t->broken;
    pthread_mutex_unlock(&t->mu);
    return ok;
}

/* b was handed to the producer (ok: wholly); the next batch may go. */
static void end_turn(kafka_target *t, const import_batch *b, bool ok)
{
    pthread_mutex_lock(&t->mu);
    if (!ok) t->broken = true;
    if (t->turn == b->seq) t->turn = b->seq + 1;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* A batch went out but not all of it was delivered: no batch produced from now on. */
static void set_broken(kafka_target *t)
{
    pthread_mutex_lock(&t->mu);
    t->broken = true;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* One record to its shard's partition, keyed by the shard (RD_KAFKA_RESP_ERR_NO_ERROR or why not). */
static rd_kafka_resp_err_t produce_one(import_run *run, kafka_target *t, const import_batch *b, const batch_row *row,
                                       const parsed_record *r, batch_sent *s)
{
    uint32_t shard = shard_of_key(r->identity_key, r->identity_key_len);
    char key[16], line[RECORD_LINE_TEXT];
    int kl = snprintf(key, sizeof key, "%u", shard);
    int ll = record_origin_line_format(row->line, line);
    rd_kafka_headers_t *h = NULL;
    if (r->record_id_derived || b->replay) h = rd_kafka_headers_new(3);
    if (r->record_id_derived) { /* named by file and line at the nodes, as offline (record_origin.h) */
        rd_kafka_header_add(h, RECORD_ORIGIN_HEADER, -1, import_input_identity(run->in), 32);
        rd_kafka_header_add(h, RECORD_LINE_HEADER, -1, line, ll);
    }
    if (b->replay) rd_kafka_header_add(h, RECORD_REPLAY_HEADER, -1, "1", 1); /* may have been sent before */
    int32_t part = shard_partition(shard, t->partitions);
    const char *topic = run->opt->kafka_topic, *value = b->body + row->body_off;
    for (;;) {
        atomic_fetch_add(&s->pending, 1);
        rd_kafka_resp_err_t err =
            h ? rd_kafka_producev(t->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(part),
                                  RD_KAFKA_V_KEY(key, (size_t)kl), RD_KAFKA_V_VALUE((void *)value, row->body_len),
                                  RD_KAFKA_V_OPAQUE(s), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END)
              : rd_kafka_producev(t->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(part),
                                  RD_KAFKA_V_KEY(key, (size_t)kl), RD_KAFKA_V_VALUE((void *)value, row->body_len),
                                  RD_KAFKA_V_OPAQUE(s), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return err; /* the message owns the headers now */
        atomic_fetch_sub(&s->pending, 1);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            if (h) rd_kafka_headers_destroy(h);
            return err;
        }
        rd_kafka_poll(t->rk, POLL_MS); /* the local queue is full: let deliveries drain it */
    }
}

static ms_code kafka_work(import_run *run, unsigned worker, import_batch *b, ms_err *e)
{
    (void)worker;
    kafka_target *t = run->target_state;
    const import_options *o = run->opt;
    scan_config cfg = {.schema = o->schema, .max_record = o->max_record, .now_us = ms_now_us(), .id_key = t->dry_key};
    import_scan_rows(run, b, &cfg);
    batch_sent s;
    atomic_init(&s.pending, 0);
    atomic_init(&s.failed, 0);
    atomic_init(&s.first_error, 0);
    if (!wait_turn(t, b)) {
        end_turn(t, b, false);
        return ms_fail(e, MS_EIO, "kafka: an earlier batch was not delivered");
    }
    /* first the checkpoint file says these rows may have been sent: a rerun after a crash marks them so */
    ms_code rc = MS_OK;
    pthread_mutex_lock(&t->mu);
    if (b->records.n > b->records.rejected && b->end_offset > t->sent_end && b->end_offset > run->replay_until) {
        t->sent_end = b->end_offset;
        rc = save_locked(run, t, e);
    }
    pthread_mutex_unlock(&t->mu);
    if (rc != MS_OK) {
        end_turn(t, b, false);
        return rc;
    }
    rd_kafka_resp_err_t perr = RD_KAFKA_RESP_ERR_NO_ERROR;
    uint64_t bad_line = 0;
    for (uint32_t k = 0; k < b->records.n && !perr; k++) {
        const parsed_record *r = &b->records.records[k];
        if (r->rejected) continue;
        const batch_row *row = &b->rows[b->record_row[k]];
        if ((perr = produce_one(run, t, b, row, r, &s)) != RD_KAFKA_RESP_ERR_NO_ERROR) bad_line = row->line;
    }
    end_turn(t, b, perr == RD_KAFKA_RESP_ERR_NO_ERROR);
    while (atomic_load(&s.pending) > 0) /* every report, also after a failure: the body is the messages' */
        rd_kafka_poll(t->rk, POLL_MS);
    uint64_t failed = atomic_load(&s.failed);
    if (perr)
        return ms_fail(e, MS_EIO, "kafka: topic %s: the row at line %llu could not be produced: %s", o->kafka_topic,
                       (unsigned long long)bad_line, rd_kafka_err2str(perr));
    if (failed) {
        set_broken(t); /* no later batch goes out (those already produced are sent again by a rerun) */
        return ms_fail(e, MS_EIO, "kafka: topic %s: %llu messages of the batch from line %llu were not delivered: %s",
                       o->kafka_topic, (unsigned long long)failed, (unsigned long long)b->rows[0].line,
                       rd_kafka_err2str((rd_kafka_resp_err_t)atomic_load(&s.first_error)));
    }
    for (uint32_t i = 0; i < b->nrows; i++)
        if (b->rows[i].outcome != ROW_REJECTED) b->rows[i].outcome = ROW_VALID; /* acknowledged: sent */
    return MS_OK;
}

static ms_code kafka_save(import_run *run, const import_position *p, bool final, ms_err *e)
{
    (void) final;
    kafka_target *t = run->target_state;
    pthread_mutex_lock(&t->mu);
    t->committed = *p;
    ms_code rc = save_locked(run, t, e);
    pthread_mutex_unlock(&t->mu);
    return rc;
}

const import_target import_to_kafka = {.name = "kafka",
                                       .load = kafka_load,
                                       .begin = kafka_begin,
                                       .work = kafka_work,
                                       .save = kafka_save,
                                       .reset = import_records_reset,
                                       .close = kafka_close};
