/*
 * dead_letters.c - the Kafka source's dead letters (see dead_letters.h): the idempotent producer of the
 * dead-letter topic, the log line of a batch's dead letters, and the outbox of the writer's refusals.
 *
 * What it logs (base/log.h): per batch the messages sent to the dead-letter topic, counted by reason class
 * (kafka.dead_letters); a delivery the brokers refused (kafka.dead_letter_failed); the dead letters an earlier
 * run left, sent again (kafka.dead_letters_resent). It never logs a message's key or payload, nor the full
 * reason (that goes in the dead letter's header): a class is one of a fixed set of words.
 *
 * The dead letters of the records the writer refuses (2026-12-03). The writer decides them only inside the
 * LMDB commit that stores the batch, and something else has already moved the offsets past them by then: a
 * cluster node committed them to Kafka with its transaction before (cluster.h), and the store's own offsets
 * (which a restart starts from, in either mode) move with that commit. A kill before their delivery lost them.
 * Sending them inside the Kafka transaction was the first choice, and is not possible: their verdicts are
 * known only after the transaction commits (a batch must never reach LMDB before its transaction has
 * committed), and knowing them before would mean holding the writer's LMDB transaction, shared with HTTP
 * batches, open across the Kafka commit (a two-phase commit). So they go through an outbox in the store: the
 * batch's own commit keeps, per refused record, its place (topic, partition, offset) and the writer's reason,
 * never its body (a PHI-holding copy would need sealing; the message is read back from its topic, which a
 * cluster keeps for replays anyway); stage 3 sends them and clears the entries once delivered, and a node
 * started again sends what a kill left (outbox_send_left). A cluster node killed between its transaction and
 * its store leaves batches that nobody stored: the next replay of them (this node's or the partition's next
 * owner's) stores them and sends their refusals' dead letters, for the last CLUSTER_UNSTORED_MAX batches of
 * each partition (cluster.h), which are the only ones that can be so. Dead letters are at least once: one
 * is sent twice when a kill falls between its delivery and its entry's clearing, or when a partition's next
 * owner replays one of those last batches that its previous owner had stored (their medstream-partition and
 * medstream-offset headers tell the copies apart); never none.
 */
#include "ingest/dead_letters.h"

#include "base/kafka_client.h"
#include "base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* An entry of the outbox of the writer's dead letters (see dead_letters_keep_refusals): its name, the
 * message's place, the writer's reason. */
typedef struct {
    char *name, *topic, *why;
    int32_t partition;
    int64_t offset;
} outbox_entry;

typedef struct {
    outbox_entry *at;
    int n;
} outbox_entries;

struct dead_letters {
    dead_letters_options opt;
    rd_kafka_t *dlq; /* idempotent producer for the dead-letter topic */
    _Atomic uint64_t sent;
    _Atomic uint64_t failed; /* deliveries the brokers refused (the delivery report) */
    /* the outbox's entries an earlier run left, listed at start (outbox_send_left sends them; consumer thread) */
    outbox_entries left;
    double left_next; /* ms_mono_s() of the next try */
    /* tests (MEDSTREAM_TEST_PAUSE_BEFORE_DEAD_LETTERS_MS): stage 3 pauses between storing a batch the writer
     * refused records of and sending their dead letters, so that a test can kill the node there */
    int test_pause_ms;
};

/* The reason classes of dead letters in the log: a fixed word per kind of rejection (record_scan.c and
 * identity.c word their reasons so), never the reason itself. */
enum { DLQ_TOO_LARGE, DLQ_MALFORMED, DLQ_IDENTITY, DLQ_FIELD, DLQ_OTHER, DLQ_PATIENT, DLQ_CLASSES };
static const char *const dlq_class_names[DLQ_CLASSES] = {"too_large",     "malformed", "identity_missing",
                                                         "field_invalid", "other",     "patient_state"};

static int dead_letter_class(const char *why)
{
    if (strstr(why, "record too large")) return DLQ_TOO_LARGE;
    if (strstr(why, "malformed JSON") || strstr(why, "invalid UTF-8") || strstr(why, "duplicate field") ||
        (strstr(why, "more than") && strstr(why, "fields")) || strstr(why, "name longer"))
        return DLQ_MALFORMED;
    if (strstr(why, "missing identity field")) return DLQ_IDENTITY;
    if (strstr(why, "field \"")) return DLQ_FIELD;
    return DLQ_OTHER;
}

/* One message to the dead-letter topic, the reason and its origin (partition, offset) in headers; false if
 * it could not be queued (logged). */
static bool dead_letter(dead_letters *d, const rd_kafka_message_t *m, const char *why)
{
    char part[16], offs[24];
    snprintf(part, sizeof part, "%d", (int)m->partition);
    snprintf(offs, sizeof offs, "%lld", (long long)m->offset);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        d->dlq, RD_KAFKA_V_TOPIC(d->opt.topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(m->key, m->key_len), RD_KAFKA_V_VALUE(m->payload, m->len),
        RD_KAFKA_V_HEADER("medstream-error", why, -1), RD_KAFKA_V_HEADER("medstream-partition", part, -1),
        RD_KAFKA_V_HEADER("medstream-offset", offs, -1), RD_KAFKA_V_END);
    if (err) {
        ms_log(LOG_ERROR, "kafka.dead_letter_failed", "kafka: dead-letter produce failed: %s", rd_kafka_err2str(err));
        return false;
    }
    atomic_fetch_add(&d->sent, 1);
    return true;
}

/* The dead-letter producer's delivery report (on the thread that flushes it): a refused delivery is counted,
 * so that the outbox keeps what was not delivered. */
static void dead_letter_delivered(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    dead_letters *d = opaque;
    if (!m->err) return;
    atomic_fetch_add(&d->failed, 1);
    ms_log(LOG_ERROR, "kafka.dead_letter_failed", "kafka: dead letter not delivered: %s", rd_kafka_err2str(m->err));
}

/* The log line of one batch's dead letters, counted by class (never the reasons themselves). */
static void log_dead_letters(dead_letters *d, const unsigned classes[DLQ_CLASSES], unsigned sent)
{
    if (!sent) return;
    char reasons[160] = "";
    size_t at = 0;
    for (int c = 0; c < DLQ_CLASSES; c++)
        if (classes[c] && at < sizeof reasons)
            at += (size_t)snprintf(reasons + at, sizeof reasons - at, "%s%s:%u", at ? "," : "", dlq_class_names[c],
                                   classes[c]);
    log_field f[] = {LOG_UINT("count", sent), LOG_STR("reasons", reasons), LOG_STR("topic", d->opt.topic)};
    ms_log_fields(LOG_WARN, "kafka.dead_letters", f, LOG_NFIELDS(f), "kafka: messages sent to the dead-letter topic");
}

bool dead_letters_delivered(dead_letters *d)
{
    while (rd_kafka_flush(d->dlq, 1000) == RD_KAFKA_RESP_ERR__TIMED_OUT && !atomic_load(d->opt.stop))
        ms_log(LOG_WARN, "kafka.dlq_waiting", "kafka: waiting for the dead-letter topic");
    return rd_kafka_outq_len(d->dlq) == 0;
}

/* Stage 1 (consumer thread, kafka_batch_prepare): the records that cannot be records, each to the dead-letter
 * topic with the scan's reason. */
void dead_letters_send_rejected(dead_letters *d, rd_kafka_message_t *const *msgs, const record_batch *batch)
{
    unsigned classes[DLQ_CLASSES] = {0}, sent = 0;
    for (uint32_t i = 0; i < batch->n; i++) {
        if (!batch->records[i].rejected) continue;
        const char *why = batch->records[i].error ? batch->records[i].error : "rejected";
        if (dead_letter(d, msgs[i], why)) {
            sent++;
            classes[dead_letter_class(why)]++;
        }
    }
    log_dead_letters(d, classes, sent);
}

/* ---- the outbox of the writer's dead letters ----
 * The writer refuses a record against the stored patient only inside the commit that stores its batch, and
 * that commit is what moves the batch's offsets on (plain mode: the store's offsets, which a restart starts
 * from; a cluster node: committed in Kafka before it, with its transaction). So each refusal is kept in that
 * same commit (dead_letters_keep_refusals): where the message is (topic, partition, offset) and the writer's
 * reason, never the message itself (a node started again reads it back from its topic). An entry is cleared
 * once its dead letter is delivered; the ones a kill leaves are sent when the node starts again
 * (outbox_send_left). */
#define OUTBOX_KIND "kafka.dead_letter"

/* An entry's name (store_definition_put takes at most 255 bytes: a longer topic is cut here, never in the
 * value, which holds the topic whole and then the reason). */
static char *outbox_name(const char *topic, int32_t partition, int64_t offset)
{
    char name[256];
    snprintf(name, sizeof name, "%d/%lld/%s", (int)partition, (long long)offset, topic);
    return ms_strndup(name, strlen(name));
}

/* Does record i of the batch go to the dead-letter topic for the writer's refusal? (Only a batch whose
 * refusals are sent keeps them: ingest_kafka.c sets ingest_job.also for it alone.) */
static bool writer_refused(const dead_letters_refusals *r, int i)
{
    return !r->batch->records[i].rejected && r->results[i].status == ITEM_REJECTED;
}

static const char *refusal_reason(const dead_letters_refusals *r, int i)
{
    return r->results[i].error ? r->results[i].error : "rejected";
}

ms_code dead_letters_keep_refusals(void *ctx, store_write *w, ms_err *e)
{
    dead_letters_refusals *r = ctx;
    for (int i = 0; i < r->nnames; i++)
        free(r->names[i]);
    r->nnames = 0;
    ms_code rc = MS_OK;
    buf v = {0};
    for (int i = 0; rc == MS_OK && i < r->n; i++) {
        if (!writer_refused(r, i)) continue;
        const char *topic = rd_kafka_topic_name(r->msgs[i]->rkt), *why = refusal_reason(r, i);
        if (!r->names) r->names = ms_malloc(sizeof *r->names * (size_t)r->n);
        r->names[r->nnames++] = outbox_name(topic, r->msgs[i]->partition, r->msgs[i]->offset);
        v.len = 0;
        buf_put(&v, topic, strlen(topic) + 1);
        buf_put(&v, why, strlen(why));
        rc = store_definition_put(w, OUTBOX_KIND, r->names[r->nnames - 1], v.data, v.len, e);
    }
    buf_free(&v);
    return rc;
}

void dead_letters_refusals_free(dead_letters_refusals *r)
{
    for (int i = 0; i < r->nnames; i++)
        free(r->names[i]);
    free(r->names);
}

typedef struct {
    char *const *names;
    int n;
} outbox_names;

static ms_code outbox_drop(void *ctx, store_write *w, ms_err *e)
{
    const outbox_names *o = ctx;
    ms_code rc = MS_OK;
    for (int i = 0; rc == MS_OK && i < o->n; i++)
        rc = store_definition_delete(w, OUTBOX_KIND, o->names[i], NULL, e);
    return rc;
}

/* The entries of dead letters now delivered, cleared (a failure leaves them to be sent again at the next
 * start: a dead letter twice, never none). */
static void outbox_clear(dead_letters *d, char *const *names, int n)
{
    if (!n) return;
    outbox_names o = {names, n};
    ms_err e = {0};
    if (writer_apply(d->opt.writer, outbox_drop, &o, &e) != MS_OK)
        ms_log(LOG_WARN, "kafka.outbox_clear_failed",
               "kafka: delivered dead letters not cleared (%s): sent again at the next start", e.msg);
}

static bool outbox_collect(void *ctx, const char *name, size_t name_len, const char *v, size_t n)
{
    outbox_entries *l = ctx;
    const char *nul = memchr(v, 0, n);
    int partition;
    long long offset;
    char *nm = ms_strndup(name, name_len);
    if (!nul || sscanf(nm, "%d/%lld/", &partition, &offset) != 2) { /* never: dead_letters_keep_refusals wrote it */
        ms_log(LOG_ERROR, "kafka.outbox_malformed", "kafka: a malformed dead-letter outbox entry; left as is");
        free(nm);
        return true;
    }
    l->at = ms_realloc(l->at, sizeof *l->at * (size_t)(l->n + 1));
    l->at[l->n++] = (outbox_entry){.name = nm,
                                   .topic = ms_strndup(v, (size_t)(nul - v)),
                                   .why = ms_strndup(nul + 1, n - (size_t)(nul - v) - 1),
                                   .partition = partition,
                                   .offset = offset};
    return true;
}

/* A consumer outside the group that reads single messages back (read_committed on a cluster node, as its
 * group's consumer reads); NULL with err. */
static rd_kafka_t *outbox_reader_new(dead_letters *d, char *err, size_t cap)
{
    char group[320];
    snprintf(group, sizeof group, "%s-dead-letters", d->opt.group);
    return kafka_reader_new(d->opt.brokers, group, d->opt.read_committed, d->opt.config, err, cap);
}

/* The message at (topic, partition, offset): *m, or NULL once the topic no longer holds it (retention).
 * false: not read in 30 s. */
static bool outbox_read(rd_kafka_t *rd, const outbox_entry *x, rd_kafka_message_t **out)
{
    *out = NULL;
    rd_kafka_topic_partition_list_t *at = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(at, x->topic, x->partition)->offset = x->offset;
    rd_kafka_resp_err_t err = rd_kafka_assign(rd, at);
    rd_kafka_topic_partition_list_destroy(at);
    if (err) return false;
    bool done = false;
    for (double t0 = ms_mono_s(); !done && ms_mono_s() - t0 < 30;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rd, 200);
        if (!m) continue;
        if (!m->err && m->offset == x->offset) {
            *out = m;
            done = true;
            continue;
        }
        done = (!m->err && m->offset > x->offset) || m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
        rd_kafka_message_destroy(m);
    }
    rd_kafka_assign(rd, NULL);
    return done;
}

static void outbox_entries_free(outbox_entries *l)
{
    for (int i = 0; i < l->n; i++) {
        free(l->at[i].name);
        free(l->at[i].topic);
        free(l->at[i].why);
    }
    free(l->at);
    memset(l, 0, sizeof *l);
}

/* Consumer thread: the outbox's entries an earlier run left (a node killed between a commit and its dead
 * letters' delivery; listed at start, so never one this run is sending), each message read back from its
 * topic and sent with its reason (a message the topic no longer holds: its dead letter without a key or
 * value), then cleared. True once every one is delivered and cleared; false: asked again later. */
static bool outbox_send_left(dead_letters *d)
{
    outbox_entries *l = &d->left;
    char err[512] = "";
    rd_kafka_t *rd = outbox_reader_new(d, err, sizeof err);
    if (!rd) ms_log(LOG_WARN, "kafka.outbox_failed", "kafka: dead-letter outbox reader: %s", err);
    bool ok = rd != NULL;
    uint64_t failed = atomic_load(&d->failed);
    unsigned gone = 0;
    for (int i = 0; ok && i < l->n; i++) {
        rd_kafka_message_t *m = NULL;
        if (!(ok = outbox_read(rd, &l->at[i], &m))) break;
        rd_kafka_message_t none = {.partition = l->at[i].partition, .offset = l->at[i].offset};
        gone += !m;
        ok = dead_letter(d, m ? m : &none, l->at[i].why);
        if (m) rd_kafka_message_destroy(m);
    }
    if (rd) {
        rd_kafka_consumer_close(rd);
        rd_kafka_destroy(rd);
    }
    if (!(ok && dead_letters_delivered(d) && atomic_load(&d->failed) == failed)) {
        ms_log(LOG_WARN, "kafka.outbox_failed",
               "kafka: %d dead letters a stop left undelivered not sent yet; trying again", l->n);
        return false;
    }
    char **names = ms_malloc(sizeof *names * (size_t)l->n);
    for (int i = 0; i < l->n; i++)
        names[i] = l->at[i].name;
    outbox_clear(d, names, l->n);
    free(names);
    log_field f[] = {LOG_INT("count", l->n), LOG_UINT("gone", gone), LOG_STR("topic", d->opt.topic)};
    ms_log_fields(LOG_WARN, "kafka.dead_letters_resent", f, LOG_NFIELDS(f),
                  "kafka: dead letters a stop left undelivered sent again");
    outbox_entries_free(l);
    return true;
}

void dead_letters_send_left(dead_letters *d)
{
    if (d->left.n && ms_mono_s() >= d->left_next && !outbox_send_left(d)) d->left_next = ms_mono_s() + 5;
}

/* At start: the outbox's entries an earlier run left, into d->left. */
static ms_code outbox_list_left(dead_letters *d, ms_err *e)
{
    store_read *r;
    ms_code rc = store_read_begin(d->opt.store, &r, e);
    if (rc != MS_OK) return rc;
    rc = store_definitions_list(r, OUTBOX_KIND, outbox_collect, &d->left, e);
    store_read_end(r);
    return rc;
}

/* Stage 3, once the batch is durable (and a replay's, on the consumer thread): the records the writer refused
 * against what the store holds (the patient erased while the record was on its way, a patient past its field
 * limit, a cluster number that differs; writer.c) go to the dead-letter topic as the scanner's refusals did in
 * stage 1, from the outbox entries the batch's commit kept (dead_letters_keep_refusals), which are cleared once
 * they are delivered. Plain mode: before the offsets are committed to Kafka (ingest_kafka.c's
 * kafka_batch_commit). */
void dead_letters_send_refusals(dead_letters *d, const dead_letters_refusals *r)
{
    if (!r->nnames) return;
    if (d->test_pause_ms > 0) {
        ms_log(LOG_WARN, "kafka.test_pause", "kafka: pausing %d ms before a stored batch's dead letters (test hook)",
               d->test_pause_ms);
        usleep((useconds_t)d->test_pause_ms * 1000);
    }
    uint64_t failed = atomic_load(&d->failed);
    unsigned classes[DLQ_CLASSES] = {0}, sent = 0;
    bool queued = true;
    for (int i = 0; i < r->n; i++) {
        if (!writer_refused(r, i)) continue;
        if (dead_letter(d, r->msgs[i], refusal_reason(r, i))) {
            sent++;
            classes[DLQ_PATIENT]++;
        } else {
            queued = false;
        }
    }
    log_dead_letters(d, classes, sent);
    if (queued && dead_letters_delivered(d) && atomic_load(&d->failed) == failed)
        outbox_clear(d, r->names, r->nnames);
    else
        ms_log(LOG_WARN, "kafka.dead_letters_kept",
               "kafka: %d dead letters not delivered now: kept, and sent when the node starts again", r->nnames);
}

ms_code dead_letters_open(dead_letters **out, const dead_letters_options *o, ms_err *e)
{
    dead_letters *d = ms_calloc(1, sizeof *d);
    d->opt = *o;
    const char *pause = getenv("MEDSTREAM_TEST_PAUSE_BEFORE_DEAD_LETTERS_MS");
    d->test_pause_ms = pause ? atoi(pause) : 0;
    ms_code rc = outbox_list_left(d, e);
    if (rc != MS_OK) {
        dead_letters_close(d);
        return rc;
    }
    *out = d;
    return MS_OK;
}

bool dead_letters_connect(dead_letters *d, char *err, size_t cap)
{
    d->dlq = kafka_producer_new(
        &(kafka_producer_options){
            .brokers = d->opt.brokers, .config = d->opt.config, .on_delivery = dead_letter_delivered, .opaque = d},
        err, cap);
    return d->dlq != NULL;
}

void dead_letters_flush(dead_letters *d, int timeout_ms) { rd_kafka_flush(d->dlq, timeout_ms); }

uint64_t dead_letters_sent(dead_letters *d) { return atomic_load(&d->sent); }

void dead_letters_close(dead_letters *d)
{
    if (!d) return;
    if (d->dlq) rd_kafka_destroy(d->dlq);
    outbox_entries_free(&d->left);
    free(d);
}
