/*
 * cluster.c - shards, per-shard patient numbers, the changelog and the Kafka transaction of a cluster
 * node (see cluster.h).
 *
 * What it logs: the cluster's topics made at start, each restore (partitions, entries, ms), each failed
 * transaction (librdkafka's reason, which never holds a payload). Never a key or a value of a message.
 */
#include "ingest/cluster.h"

#include "base/kafka_client.h"
#include "base/log.h"
#include "ingest/shard_ids.h"
#include "pipeline/batch_marker.h"
#include "pipeline/seed_table.h"
#include "pipeline/shard.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct cluster {
    cluster_options opt;
    char byshard[256], changelog[256], seed[256], txn_id[300];
    int32_t partitions;    /* P: of T and T.by-shard */
    int32_t cl_partitions; /* Pc: of T.changelog */
    rd_kafka_t *producer;  /* transactional */
    rd_kafka_t *restorer;  /* reads the changelog (read_committed, no group) */
    shard_ids *ids;
    int test_pause_ms; /* MEDSTREAM_TEST_TXN_PAUSE_MS: tests freeze a node inside a transaction */
    /* the membership view (any thread, under mu): who owns each partition of T, by their client.id */
    pthread_mutex_t mu;
    char **owner_url; /* [partitions]: the advertised URL of the member that has it, or NULL */
    bool *mine;       /* [partitions]: assigned to this node and restored */
    double view_at;   /* ms_mono_s() of the last description of the group (0: none yet) */
    /* a seeded cluster (T.seed, pipeline/seed_table.h): the seeding store's patients' shards (under mu) */
    seed_table seeded;
    seed_progress seed_at; /* the seed's progress as T.seed last said (patients 0: not seeded) */
    int64_t seed_next;     /* T.seed read up to here */
};

static ms_code cluster_fail(ms_err *e, const char *what, const char *detail)
{
    return ms_fail(e, MS_EIO, "kafka cluster: %s: %s", what, detail);
}

static ms_code kafka_error_fail(ms_err *e, const char *what, rd_kafka_error_t *err)
{
    ms_code rc = cluster_fail(e, what, rd_kafka_error_string(err));
    rd_kafka_error_destroy(err);
    return rc;
}

/* ---- topics ---- */

/* The partition count of topic, or 0 if it does not exist (-1: the brokers did not answer). */
static int32_t topic_partitions(rd_kafka_t *rk, const char *topic)
{
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int32_t n = -1;
    if (rd_kafka_metadata(rk, 0, t, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1) {
        rd_kafka_resp_err_t terr = md->topics[0].err;
        n = terr == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ? 0 : terr ? -1 : md->topics[0].partition_cnt;
    }
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    return n;
}

/* Make topic with partitions partitions (compacted if compact), or grow it to that many. */
static ms_code topic_ensure(rd_kafka_t *rk, const char *topic, int32_t partitions, bool compact, bool grow, ms_err *e)
{
    int32_t have = topic_partitions(rk, topic);
    if (have < 0) return cluster_fail(e, topic, "the brokers did not describe the topic");
    if (have >= partitions || (have > 0 && !grow)) return MS_OK;
    char err[512];
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_event_t *ev = NULL;
    if (have == 0) {
        rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, partitions, -1, err, sizeof err);
        if (!nt) {
            rd_kafka_queue_destroy(q);
            return cluster_fail(e, topic, err);
        }
        if (compact) rd_kafka_NewTopic_set_config(nt, "cleanup.policy", "compact");
        rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
        ev = rd_kafka_queue_poll(q, 30000);
        rd_kafka_NewTopic_destroy(nt);
    } else {
        rd_kafka_NewPartitions_t *np = rd_kafka_NewPartitions_new(topic, (size_t)partitions, err, sizeof err);
        if (!np) {
            rd_kafka_queue_destroy(q);
            return cluster_fail(e, topic, err);
        }
        rd_kafka_CreatePartitions(rk, &np, 1, NULL, q);
        ev = rd_kafka_queue_poll(q, 30000);
        rd_kafka_NewPartitions_destroy(np);
    }
    ms_code rc = MS_OK;
    const char *why = !ev ? "no answer from the brokers in 30 s" : rd_kafka_event_error_string(ev);
    if (!ev || rd_kafka_event_error(ev)) {
        rc = cluster_fail(e, topic, why);
    } else {
        const rd_kafka_topic_result_t **res = NULL;
        size_t nres = 0;
        if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_CREATETOPICS_RESULT)
            res = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &nres);
        else
            res = rd_kafka_CreatePartitions_result_topics(rd_kafka_event_CreatePartitions_result(ev), &nres);
        for (size_t i = 0; i < nres; i++) {
            rd_kafka_resp_err_t terr = rd_kafka_topic_result_error(res[i]);
            if (terr && terr != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
                rc = cluster_fail(e, topic, rd_kafka_topic_result_error_string(res[i]));
        }
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    for (double t0 = ms_mono_s(); rc == MS_OK && topic_partitions(rk, topic) < partitions;) { /* metadata lags */
        if (ms_mono_s() - t0 > 30) rc = cluster_fail(e, topic, "made, but the brokers do not show it after 30 s");
        usleep(100000);
    }
    if (rc == MS_OK) {
        log_field f[] = {LOG_STR("topic", topic), LOG_INT("partitions", partitions)};
        ms_log_fields(LOG_INFO, "cluster.topic", f, LOG_NFIELDS(f),
                      have ? "kafka cluster: partitions added" : "kafka cluster: topic made");
    }
    return rc;
}

/* ---- clients ---- */

static rd_kafka_t *producer_new(cluster *c, char *err, size_t cap)
{
    /* medstream's producer (idempotent), transactional, then the operator's settings */
    char tid[320];
    snprintf(tid, sizeof tid, "transactional.id=%s", c->txn_id);
    size_t n = 0;
    while (c->opt.config && c->opt.config[n])
        n++;
    const char **settings = ms_calloc(n + 4, sizeof *settings);
    settings[0] = tid;
    settings[1] = "transaction.timeout.ms=10000";
    /* never auto-created: a metadata request for a missing topic would make it with the broker's default count */
    settings[2] = "allow.auto.create.topics=false";
    for (size_t i = 0; i < n; i++)
        settings[3 + i] = c->opt.config[i];
    rd_kafka_t *rk =
        kafka_producer_new(&(kafka_producer_options){.brokers = c->opt.brokers, .config = settings}, err, cap);
    free(settings);
    if (!rk) return NULL;
    /* a new cluster's first transactional client waits for the brokers to make and load their transaction
     * state ("coordinator load in progress", or a timeout): retriable, asked again for up to 5 minutes */
    rd_kafka_error_t *ke = rd_kafka_init_transactions(rk, 60000);
    for (double t0 = ms_mono_s(); ke && rd_kafka_error_is_retriable(ke) && ms_mono_s() - t0 < 300;) {
        ms_log(LOG_WARN, "cluster.init_transactions", "kafka cluster: init transactions: %s: trying again",
               rd_kafka_error_string(ke));
        rd_kafka_error_destroy(ke);
        ke = rd_kafka_init_transactions(rk, 60000);
    }
    if (ke) {
        snprintf(err, cap, "init transactions: %s", rd_kafka_error_string(ke));
        rd_kafka_error_destroy(ke);
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

static rd_kafka_t *restorer_new(cluster *c, char *err, size_t cap)
{
    char group[320];
    snprintf(group, sizeof group, "%s-restore", c->txn_id);
    return kafka_reader_new(c->opt.brokers, group, true, c->opt.config, err, cap);
}

static void learn_from_store(void *ctx, const unsigned char mac[32], uint64_t number)
{
    shard_ids_learn(ctx, mac, number);
}

static ms_code load_ids(cluster *c, ms_err *e)
{
    shard_ids_free(c->ids);
    c->ids = shard_ids_new();
    shard_ids_floor(c->ids, c->seed_at.patients);
    return store_cluster_ids_each(c->opt.store, learn_from_store, c->ids, e);
}

/* Read T.seed from where it was read to its end (if the topic exists): the seeding store's patients'
 * shards, and the floor under which no shard mints. */
static ms_code seed_load(cluster *c, ms_err *e)
{
    int32_t parts = topic_partitions(c->producer, c->seed);
    if (parts < 0) return cluster_fail(e, c->seed, "the brokers did not describe the topic");
    if (parts == 0) return MS_OK;
    int64_t lo = 0, hi = 0;
    rd_kafka_resp_err_t kerr = rd_kafka_query_watermark_offsets(c->restorer, c->seed, 0, &lo, &hi, 10000);
    if (kerr) return cluster_fail(e, c->seed, rd_kafka_err2str(kerr));
    if (c->seed_next >= hi) return MS_OK;
    rd_kafka_topic_partition_list_t *from = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(from, c->seed, 0)->offset = c->seed_next > lo ? c->seed_next : lo;
    kerr = rd_kafka_assign(c->restorer, from);
    rd_kafka_topic_partition_list_destroy(from);
    if (kerr) return cluster_fail(e, "seed assign", rd_kafka_err2str(kerr));
    ms_code rc = MS_OK;
    for (double t0 = ms_mono_s(); rc == MS_OK;) {
        if (ms_mono_s() - t0 > CLUSTER_RESTORE_TIMEOUT_S) {
            rc = cluster_fail(e, c->seed, "the topic did not reach its end in time");
            break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->restorer, 200);
        if (!m) continue;
        bool eof = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
        uint64_t first;
        seed_progress at;
        if (!m->err) {
            c->seed_next = m->offset + 1;
            pthread_mutex_lock(&c->mu);
            if (seed_chunk_key_decode(m->key, m->key_len, &first)) {
                if (!seed_table_put(&c->seeded, first, m->payload, m->len))
                    ms_log(LOG_ERROR, "cluster.seed_malformed", "kafka cluster: %s offset %lld: a malformed chunk",
                           c->seed, (long long)m->offset);
            } else if (seed_progress_decode(m->key, m->key_len, m->payload, m->len, &at)) {
                c->seed_at = at;
            }
            pthread_mutex_unlock(&c->mu);
        }
        rd_kafka_message_destroy(m);
        if (eof) break;
    }
    rd_kafka_assign(c->restorer, NULL);
    if (rc == MS_OK && c->ids) shard_ids_floor(c->ids, c->seed_at.patients);
    if (rc == MS_OK && !c->opt.seeding && c->seed_at.identities < c->seed_at.patients)
        rc = ms_fail(e, MS_ECONFLICT,
                     "kafka cluster: the cluster is being seeded from an existing store (%llu of its %llu patients' "
                     "identities published in %s): start its nodes once `medstream cluster-seed` has published them",
                     (unsigned long long)c->seed_at.identities, (unsigned long long)c->seed_at.patients, c->seed);
    return rc;
}

ms_code cluster_open(cluster **out, const cluster_options *opt, ms_err *e)
{
    cluster *c = ms_calloc(1, sizeof *c);
    c->opt = *opt;
    pthread_mutex_init(&c->mu, NULL);
    const char *pause = getenv("MEDSTREAM_TEST_TXN_PAUSE_MS");
    c->test_pause_ms = pause ? atoi(pause) : 0;
    snprintf(c->byshard, sizeof c->byshard, "%s.by-shard", opt->topic);
    snprintf(c->changelog, sizeof c->changelog, "%s.changelog", opt->topic);
    snprintf(c->seed, sizeof c->seed, "%s.seed", opt->topic);
    /* one transactional id per node: a node started again fences its old self */
    snprintf(c->txn_id, sizeof c->txn_id, "medstream-%s-%s", opt->group, opt->node);
    char err[512];
    ms_code rc = MS_OK;
    if (!(c->producer = producer_new(c, err, sizeof err))) {
        rc = cluster_fail(e, "transactional producer", err);
        goto fail;
    }
    if (!(c->restorer = restorer_new(c, err, sizeof err))) {
        rc = cluster_fail(e, "changelog reader", err);
        goto fail;
    }
    c->partitions = topic_partitions(c->producer, opt->topic);
    if (c->partitions <= 0) {
        rc = ms_fail(e, MS_EINVAL, "kafka cluster: topic %s %s", opt->topic,
                     c->partitions == 0 ? "does not exist" : "could not be described");
        goto fail;
    }
    if (!shard_partitions_ok(c->partitions)) {
        rc = ms_fail(e, MS_EINVAL,
                     "kafka cluster: topic %s has %d partitions: a cluster needs a power of two up to %u (a shard "
                     "must live whole in one partition)",
                     opt->topic, (int)c->partitions, SHARD_COUNT);
        goto fail;
    }
    c->owner_url = ms_calloc((size_t)c->partitions, sizeof *c->owner_url);
    c->mine = ms_calloc((size_t)c->partitions, sizeof *c->mine);
    if ((rc = topic_ensure(c->producer, c->byshard, c->partitions, false, true, e)) != MS_OK ||
        (rc = topic_ensure(c->producer, c->changelog, c->partitions, true, false, e)) != MS_OK)
        goto fail;
    c->cl_partitions = topic_partitions(c->producer, c->changelog);
    int32_t byshard = topic_partitions(c->producer, c->byshard);
    if (byshard != c->partitions) {
        rc = ms_fail(e, MS_EINVAL, "kafka cluster: %s has %d partitions, %s %d: they must be equal", c->byshard,
                     (int)byshard, opt->topic, (int)c->partitions);
        goto fail;
    }
    if (c->cl_partitions <= 0 || c->partitions % c->cl_partitions != 0 || !shard_partitions_ok(c->cl_partitions)) {
        rc = ms_fail(e, MS_EINVAL,
                     "kafka cluster: %s has %d partitions: it needs a power of two that divides %s's %d (partitions "
                     "are only ever doubled)",
                     c->changelog, (int)c->cl_partitions, opt->topic, (int)c->partitions);
        goto fail;
    }
    if ((rc = seed_load(c, e)) != MS_OK || (rc = load_ids(c, e)) != MS_OK) goto fail;
    *out = c;
    return MS_OK;
fail:
    cluster_close(c);
    return rc;
}

void cluster_close(cluster *c)
{
    if (!c) return;
    if (c->producer) rd_kafka_destroy(c->producer);
    if (c->restorer) {
        rd_kafka_consumer_close(c->restorer);
        rd_kafka_destroy(c->restorer);
    }
    shard_ids_free(c->ids);
    seed_table_free(&c->seeded);
    for (int32_t p = 0; c->owner_url && p < c->partitions; p++)
        free(c->owner_url[p]);
    free(c->owner_url);
    free(c->mine);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

const char *cluster_topic(const cluster *c) { return c->opt.topic; }
const char *cluster_byshard_topic(const cluster *c) { return c->byshard; }
const char *cluster_changelog_topic(const cluster *c) { return c->changelog; }
const char *cluster_seed_topic(const cluster *c) { return c->seed; }
int32_t cluster_partitions(const cluster *c) { return c->partitions; }
int32_t cluster_changelog_partitions(const cluster *c) { return c->cl_partitions; }
rd_kafka_t *cluster_producer(cluster *c) { return c->producer; }
rd_kafka_t *cluster_restorer(cluster *c) { return c->restorer; }

ms_code cluster_seed_state(cluster *c, seed_progress *at, ms_err *e)
{
    ms_code rc = seed_load(c, e);
    pthread_mutex_lock(&c->mu);
    *at = c->seed_at;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

ms_code cluster_seed_topic_ensure(cluster *c, ms_err *e)
{
    return topic_ensure(c->producer, c->seed, 1, true, false, e);
}

uint32_t cluster_shard_of_number(cluster *c, uint64_t number)
{
    pthread_mutex_lock(&c->mu);
    uint32_t shard = seed_table_shard(&c->seeded, number);
    pthread_mutex_unlock(&c->mu);
    return shard;
}

/* ---- restore ---- */

/* The source name under which a store keeps how far it scanned the changelog for partition p's markers. */
static void marker_source(const cluster *c, char *out, size_t cap) { snprintf(out, cap, "%s@markers", c->changelog); }

typedef struct {
    cluster *c;
    struct cluster_mint *entries;
    size_t n, cap;
    int32_t *parts; /* changelog partitions read, and where each read ended (-1: nothing read) */
    int64_t *next;
    int nparts;
} restored;

static ms_code keep_restored(void *ctx, store_write *w, ms_err *e)
{
    restored *r = ctx;
    ms_code rc = MS_OK;
    for (size_t i = 0; rc == MS_OK && i < r->n; i++)
        rc = store_cluster_id_put(w, r->entries[i].mac, r->entries[i].number, e);
    for (int i = 0; rc == MS_OK && i < r->nparts; i++)
        if (r->next[i] >= 0) rc = store_source_offset_put(w, r->c->changelog, r->parts[i], r->next[i], e);
    return rc;
}

static void learn_entry(restored *r, const rd_kafka_message_t *m)
{
    uint64_t number = ms_get_be64(m->payload);
    if (!shard_ids_learn(r->c->ids, m->key, number)) {
        ms_log(LOG_ERROR, "cluster.conflict",
               "kafka cluster: %s offset %lld gives an identity a second patient number, or one past 2^63 (%llu); "
               "not taken",
               r->c->changelog, (long long)m->offset, (unsigned long long)number);
        return;
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 1024;
        r->entries = ms_realloc(r->entries, r->cap * sizeof *r->entries);
    }
    memcpy(r->entries[r->n].mac, m->key, 32);
    r->entries[r->n++].number = number;
}

/* What an assigned partition needs replayed: its store's offsets in T and T.by-shard (-1: none), and the
 * changelog offset its marker scan starts at. */
typedef struct {
    int32_t p;
    int64_t scan_from;
    int nlineage;        /* p, then the partitions p's shards lived in before the topic doubled: p mod P/2, ... */
    int32_t lineage[13]; /* (SHARD_COUNT is 2^12) */
    int64_t have[13][2]; /* the store's offsets of each in T and T.by-shard (-1: none) */
} replay_want;

/* A marker of partition src for a wanted partition (src is it or one of its lineage, index l): the part of
 * its runs this store does not have, as a batch of the plan. */
static void take_marker(cluster_replay *plan, const replay_want *w, int l, const rd_kafka_message_t *m)
{
    uint32_t count;
    marker_run *all;
    size_t n;
    /* a marker of another partition, or of this one under another count, holds others' shards (its
     * records of this one's were forwarded, not stored) */
    if (!marker_value_decode(m->payload, m->len, &count, &all, &n)) return;
    if (!marker_holds_shards_of(w->lineage[l], count, w->p)) {
        free(all);
        return;
    }
    int k = 0;
    cluster_run *runs = all;
    for (size_t i = 0; i < n; i++) {
        cluster_run r = all[i];
        if (r.from < w->have[l][r.topic]) r.from = w->have[l][r.topic];
        if (r.from < r.to) runs[k++] = r;
    }
    if (!k) {
        free(runs);
        return;
    }
    cluster_replay_batch *last = plan->n ? &plan->batches[plan->n - 1] : NULL;
    if (last && last->marker == m->offset) { /* taken already for another assigned partition of its lineage */
        free(runs);
        last->targets = ms_realloc(last->targets, sizeof *last->targets * (size_t)(last->ntargets + 1));
        last->targets[last->ntargets++] = w->p;
        return;
    }
    plan->batches = ms_realloc(plan->batches, sizeof *plan->batches * (size_t)(plan->n + 1));
    int32_t *targets = ms_malloc(sizeof *targets);
    targets[0] = w->p;
    plan->batches[plan->n++] = (cluster_replay_batch){
        .targets = targets, .ntargets = 1, .source = w->lineage[l], .marker = m->offset, .runs = runs, .nruns = k};
}

void cluster_replay_free(cluster_replay *plan)
{
    for (int i = 0; i < plan->n; i++) {
        free(plan->batches[i].runs);
        free(plan->batches[i].targets);
    }
    free(plan->batches);
    free(plan->scan_end);
    memset(plan, 0, sizeof *plan);
}

ms_code cluster_restore(cluster *c, const rd_kafka_topic_partition_list_t *assigned, cluster_replay *plan, ms_err *e)
{
    double t0 = ms_mono_s();
    memset(plan, 0, sizeof *plan);
    ms_code seeded = seed_load(c, e); /* a seed committed since (cluster_seed.h refuses a group with members) */
    if (seeded != MS_OK) return seeded;
    plan->scan_end = ms_calloc((size_t)c->partitions, sizeof *plan->scan_end);
    for (int32_t p = 0; p < c->partitions; p++)
        plan->scan_end[p] = -1;
    restored r = {.c = c};
    r.parts = ms_calloc((size_t)c->cl_partitions, sizeof *r.parts);
    r.next = ms_calloc((size_t)c->cl_partitions, sizeof *r.next);
    replay_want *wants = ms_calloc((size_t)assigned->cnt + 1, sizeof *wants);
    int nwants = 0;
    int64_t *learned = ms_calloc((size_t)c->cl_partitions, sizeof *learned); /* entries learned before here */
    int64_t *start = ms_calloc((size_t)c->cl_partitions, sizeof *start);     /* -2: not read */
    int64_t *need = ms_calloc((size_t)c->cl_partitions, sizeof *need);       /* [r.parts index]: read up to here */
    double *waited_from = ms_calloc((size_t)c->cl_partitions, sizeof *waited_from); /* 0: did not wait */
    double txn_wait = 0; /* the longest wait for a transaction open at the first end */
    /* per partition of T: the offsets of the last CLUSTER_UNSTORED_MAX markers read (a ring; -1: none) */
    int64_t(*last_markers)[CLUSTER_UNSTORED_MAX] = ms_malloc(sizeof *last_markers * (size_t)c->partitions);
    int *last_at = ms_calloc((size_t)c->partitions, sizeof *last_at);
    for (int32_t p = 0; p < c->partitions; p++)
        for (int i = 0; i < CLUSTER_UNSTORED_MAX; i++)
            last_markers[p][i] = -1;
    for (int32_t x = 0; x < c->cl_partitions; x++)
        start[x] = -2;
    char msource[300];
    marker_source(c, msource, sizeof msource);
    store_read *rd = NULL;
    ms_code rc = store_read_begin(c->opt.store, &rd, e);
    for (int i = 0; rc == MS_OK && i < assigned->cnt; i++) {
        if (strcmp(assigned->elems[i].topic, c->opt.topic) != 0) continue;
        replay_want *w = &wants[nwants++];
        w->p = assigned->elems[i].partition;
        for (int32_t q = c->partitions; q >= 1; q /= 2) /* p itself first (q = P), then its ancestors */
            if (w->nlineage == 0 || w->lineage[w->nlineage - 1] != w->p % q) w->lineage[w->nlineage++] = w->p % q;
        const char *topics[2] = {c->opt.topic, c->byshard};
        for (int l = 0; l < w->nlineage; l++)
            for (int t = 0; rc == MS_OK && t < 2; t++) {
                bool found;
                rc = store_source_offset_get(rd, topics[t], w->lineage[l], &w->have[l][t], &found, e);
                if (!found) w->have[l][t] = -1;
            }
        bool found = false;
        if (rc == MS_OK) rc = store_source_offset_get(rd, msource, w->p, &w->scan_from, &found, e);
        if (!found) w->scan_from = 0;
        int32_t x = w->p % c->cl_partitions;
        if (rc == MS_OK) rc = store_source_offset_get(rd, c->changelog, x, &learned[x], &found, e);
        if (!found) learned[x] = 0;
        int64_t from = w->scan_from < learned[x] ? w->scan_from : learned[x];
        if (start[x] == -2 || from < start[x]) start[x] = from;
    }
    store_read_end(rd);
    rd_kafka_topic_partition_list_t *from = rd_kafka_topic_partition_list_new(c->cl_partitions);
    for (int32_t x = 0; rc == MS_OK && x < c->cl_partitions; x++) {
        if (start[x] == -2) continue;
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t kerr = rd_kafka_query_watermark_offsets(c->restorer, c->changelog, x, &lo, &hi, 10000);
        if (kerr) {
            rc = cluster_fail(e, c->changelog, rd_kafka_err2str(kerr));
            break;
        }
        r.parts[r.nparts] = x;
        r.next[r.nparts] = -1;
        need[r.nparts++] = -1;
        /* read even when this store read to the end (hi, read_committed: the last stable offset): a
         * transaction still open past it may hold markers of the assigned partitions */
        if (start[x] > hi) continue;
        rd_kafka_topic_partition_list_add(from, c->changelog, x)->offset = start[x] > lo ? start[x] : lo;
    }
    int open = from->cnt;
    if (rc == MS_OK && open > 0) {
        rd_kafka_resp_err_t kerr = rd_kafka_assign(c->restorer, from);
        if (kerr) rc = cluster_fail(e, "changelog assign", rd_kafka_err2str(kerr));
    }
    while (rc == MS_OK && open > 0) {
        if (ms_mono_s() - t0 > CLUSTER_RESTORE_TIMEOUT_S) {
            rc = cluster_fail(e, c->changelog, "the changelog did not reach its end in time");
            break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->restorer, 200);
        if (!m) continue;
        int32_t p;
        int x = 0;
        while (x < r.nparts && r.parts[x] != m->partition)
            x++;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF && x < r.nparts) {
            /* The end of what is committed (the last stable offset) is not the end yet while a transaction
             * that was open when this node got its partitions is: the previous owner's last batch, its
             * offsets sent under the group's old generation (so it may still commit), its markers and
             * minted identities already in the log. Read on until the log's high watermark as the first
             * end showed it, so that batch is seen once it commits (or skipped once it aborts, at the
             * latest after transaction.timeout.ms); else this node would start past the batch's offsets
             * without ever storing it. */
            int64_t lo = 0, hwm = -1;
            if (need[x] < 0 && rd_kafka_get_watermark_offsets(c->restorer, c->changelog, m->partition, &lo, &hwm) ==
                                   RD_KAFKA_RESP_ERR_NO_ERROR)
                need[x] = hwm > m->offset ? hwm : m->offset;
            if (need[x] < 0 || m->offset >= need[x]) {
                open--;
                double waited = waited_from[x] > 0 ? ms_mono_s() - waited_from[x] : 0;
                if (waited > txn_wait) txn_wait = waited;
            } else if (waited_from[x] == 0) {
                waited_from[x] = ms_mono_s();
            }
        } else if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            open--;
        } else if (m->err) {
            ms_log(LOG_WARN, "cluster.restore_error", "kafka cluster: reading %s: %s", c->changelog,
                   rd_kafka_message_errstr(m));
        } else if (x < r.nparts) {
            r.next[x] = m->offset + 1;
            if (m->key_len == 32 && m->len == 8) {
                learn_entry(&r, m);
            } else if (marker_key_decode(m->key, m->key_len, &p)) {
                if (p >= 0 && p < c->partitions) {
                    last_markers[p][last_at[p]] = m->offset;
                    last_at[p] = (last_at[p] + 1) % CLUSTER_UNSTORED_MAX;
                }
                for (int w = 0; w < nwants; w++)
                    for (int l = 0; l < wants[w].nlineage && m->offset >= wants[w].scan_from; l++)
                        if (wants[w].lineage[l] == p) take_marker(plan, &wants[w], l, m);
            }
        }
        rd_kafka_message_destroy(m);
    }
    if (from->cnt > 0) rd_kafka_assign(c->restorer, NULL);
    rd_kafka_topic_partition_list_destroy(from);
    for (int w = 0; w < nwants; w++) { /* where the next marker scan of each partition starts */
        int32_t x = wants[w].p % c->cl_partitions;
        for (int i = 0; i < r.nparts; i++)
            if (r.parts[i] == x && r.next[i] >= 0) plan->scan_end[wants[w].p] = r.next[i];
    }
    /* the plan's batches among their source's last markers (the ring's oldest entry, read before its others:
     * the smallest offset of them, as one changelog partition holds every marker of a source) */
    for (int i = 0; i < plan->n; i++) {
        int32_t s = plan->batches[i].source;
        if (s >= 0 && s < c->partitions) plan->batches[i].tail = plan->batches[i].marker >= last_markers[s][last_at[s]];
    }
    bool moved = false;
    for (int i = 0; i < r.nparts; i++)
        moved |= r.next[i] >= 0;
    if (rc == MS_OK && moved) rc = writer_apply(c->opt.writer, keep_restored, &r, e); /* learned: kept */
    if (rc == MS_OK) {
        log_field f[] = {LOG_INT("changelog_partitions", r.nparts),        LOG_UINT("entries", r.n),
                         LOG_UINT("identities", shard_ids_count(c->ids)),  LOG_INT("replay_batches", plan->n),
                         LOG_MS("open_transaction_ms", txn_wait * 1000.0), LOG_MS("ms", (ms_mono_s() - t0) * 1000.0)};
        ms_log_fields(LOG_INFO, "cluster.restored", f, LOG_NFIELDS(f), "kafka cluster: shard state restored");
    } else {
        cluster_replay_free(plan);
    }
    free(r.entries);
    free(r.parts);
    free(r.next);
    free(wants);
    free(learned);
    free(start);
    free(need);
    free(waited_from);
    free(last_markers);
    free(last_at);
    return rc;
}

typedef struct {
    cluster *c;
    const cluster_replay *plan;
} replayed_ctx;

static ms_code keep_replayed(void *ctx, store_write *w, ms_err *e)
{
    replayed_ctx *r = ctx;
    char msource[300];
    marker_source(r->c, msource, sizeof msource);
    ms_code rc = MS_OK;
    for (int32_t p = 0; rc == MS_OK && p < r->c->partitions; p++)
        if (r->plan->scan_end[p] >= 0) rc = store_source_offset_put(w, msource, p, r->plan->scan_end[p], e);
    return rc;
}

ms_code cluster_replayed(cluster *c, const rd_kafka_topic_partition_list_t *assigned, const cluster_replay *plan,
                         ms_err *e)
{
    replayed_ctx r = {c, plan};
    ms_code rc = writer_apply(c->opt.writer, keep_replayed, &r, e);
    if (rc != MS_OK) return rc;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < assigned->cnt; i++)
        if (strcmp(assigned->elems[i].topic, c->opt.topic) == 0 && assigned->elems[i].partition < c->partitions)
            c->mine[assigned->elems[i].partition] = true;
    pthread_mutex_unlock(&c->mu);
    return MS_OK;
}

/* ---- a batch ---- */

static bool targeted(const cluster_replay_batch *replay, int32_t p)
{
    for (int i = 0; i < replay->ntargets; i++)
        if (replay->targets[i] == p) return true;
    return false;
}

void cluster_route(cluster *c, cluster_batch *cb, rd_kafka_message_t **msgs, record_batch *batch,
                   const cluster_replay_batch *replay)
{
    uint32_t n = batch->n;
    cb->numbers = ms_malloc(sizeof *cb->numbers * n);
    cb->forward_to = ms_malloc(sizeof *cb->forward_to * n);
    cb->minted = NULL;
    cb->nminted = 0;
    int cap = 0;
    for (uint32_t i = 0; i < n; i++) {
        parsed_record *r = &batch->records[i];
        cb->numbers[i] = UINT64_MAX;
        cb->forward_to[i] = -1;
        if (r->rejected) continue;
        uint32_t shard = shard_of_key(r->identity_key, r->identity_key_len);
        int32_t owner = shard_partition(shard, c->partitions);
        if (replay ? !targeted(replay, owner) : owner != msgs[i]->partition) {
            /* keyed by someone else: to its shard's partition (a replay: a record of other shards) */
            cb->forward_to[i] = replay ? -1 : owner;
            cb->numbers[i] = JOB_FORWARDED;
            r->rejected = true;
            r->error = "forwarded to the partition of its shard";
            batch->rejected++;
            continue;
        }
        unsigned char mac[32];
        store_identity_mac(c->opt.store, r->identity_key, r->identity_key_len, mac);
        if (shard_ids_get(c->ids, mac, &cb->numbers[i])) continue;
        if (replay) { /* never: the changelog holds the identities of a committed batch before its marker */
            cb->numbers[i] = UINT64_MAX;
            r->rejected = true;
            r->error = "replay: the identity is not in the changelog";
            batch->rejected++;
            ms_log(LOG_ERROR, "cluster.replay_unknown", "kafka cluster: %s partition %d offset %lld: %s",
                   rd_kafka_topic_name(msgs[i]->rkt), (int)msgs[i]->partition, (long long)msgs[i]->offset, r->error);
            continue;
        }
        cb->numbers[i] = shard_ids_mint(c->ids, mac, shard);
        if (cb->nminted == cap) {
            cap = cap ? cap * 2 : 64;
            cb->minted = ms_realloc(cb->minted, sizeof *cb->minted * (size_t)cap);
        }
        memcpy(cb->minted[cb->nminted].mac, mac, 32);
        cb->minted[cb->nminted++].number = cb->numbers[i];
    }
}

void cluster_batch_free(cluster_batch *cb)
{
    free(cb->numbers);
    free(cb->forward_to);
    free(cb->minted);
    memset(cb, 0, sizeof *cb);
}

/* How long a transaction's offsets and commit are asked again while librdkafka calls the error retriable. */
#define TXN_RETRY_S 120.0

ms_code cluster_commit(cluster *c, const cluster_batch *cb, rd_kafka_message_t **msgs, int n,
                       const source_offset *offsets, int noffsets, rd_kafka_t *consumer, ms_err *e)
{
    rd_kafka_error_t *ke = rd_kafka_begin_transaction(c->producer);
    if (ke) return kafka_error_fail(e, "begin transaction", ke);
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int i = 0; !err && i < cb->nminted; i++) {
        unsigned char value[8];
        ms_set_be64(value, cb->minted[i].number);
        int32_t part = (int32_t)(shard_of_number(cb->minted[i].number) % (uint32_t)c->cl_partitions);
        err = rd_kafka_producev(c->producer, RD_KAFKA_V_TOPIC(c->changelog), RD_KAFKA_V_PARTITION(part),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(cb->minted[i].mac, 32),
                                RD_KAFKA_V_VALUE(value, 8), RD_KAFKA_V_END);
    }
    for (int i = 0; !err && i < n; i++) {
        if (cb->forward_to[i] < 0) continue;
        /* with its headers: where it came from (pipeline/record_origin.h) names the record at its owner */
        rd_kafka_headers_t *h = NULL, *copy = NULL;
        if (rd_kafka_message_headers(msgs[i], &h) == RD_KAFKA_RESP_ERR_NO_ERROR) copy = rd_kafka_headers_copy(h);
        err = rd_kafka_producev(
            c->producer, RD_KAFKA_V_TOPIC(c->byshard), RD_KAFKA_V_PARTITION(cb->forward_to[i]),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(msgs[i]->key, msgs[i]->key_len),
            RD_KAFKA_V_VALUE(msgs[i]->payload, msgs[i]->len), RD_KAFKA_V_HEADERS(copy), RD_KAFKA_V_END);
        if (err && copy) rd_kafka_headers_destroy(copy); /* (taken by the message only when produced) */
    }
    /* the batch's markers: per input partition, its messages' runs in the batch's order (replay) */
    buf v = {0};
    uint8_t *topics = ms_malloc((size_t)n + 1);
    int64_t *offs = ms_malloc(sizeof *offs * ((size_t)n + 1));
    for (int i = 0; !err && i < n; i++) {
        int32_t p = msgs[i]->partition;
        bool seen = false;
        for (int j = 0; j < i && !seen; j++)
            seen = msgs[j]->partition == p;
        if (seen) continue;
        size_t k = 0;
        for (int j = i; j < n; j++)
            if (msgs[j]->partition == p) {
                topics[k] = strcmp(rd_kafka_topic_name(msgs[j]->rkt), c->byshard) == 0;
                offs[k++] = msgs[j]->offset;
            }
        unsigned char key[MARKER_KEY];
        v.len = 0;
        marker_encode(p, (uint32_t)c->partitions, topics, offs, k, key, &v);
        err = rd_kafka_producev(c->producer, RD_KAFKA_V_TOPIC(c->changelog), RD_KAFKA_V_PARTITION(p % c->cl_partitions),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, MARKER_KEY),
                                RD_KAFKA_V_VALUE(v.data, v.len), RD_KAFKA_V_END);
    }
    free(topics);
    free(offs);
    buf_free(&v);
    /* The batch's messages are in the log before its offsets are sent: a node given these partitions next
     * reads the changelog up to its high watermark (cluster_restore), so a transaction whose offsets went
     * under the group's old generation, and may still commit, has its markers there to wait for. */
    if (!err) err = rd_kafka_flush(c->producer, 30000);
    if (err) {
        rd_kafka_error_t *ae = rd_kafka_abort_transaction(c->producer, 30000);
        if (ae) rd_kafka_error_destroy(ae);
        return cluster_fail(e, "produce", rd_kafka_err2str(err));
    }
    if (c->test_pause_ms > 0) { /* tests: a window in which to freeze the node mid-transaction */
        ms_log(LOG_WARN, "cluster.test_pause", "kafka cluster: pausing %d ms before the offsets (test hook)",
               c->test_pause_ms);
        usleep((useconds_t)c->test_pause_ms * 1000);
    }
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(noffsets);
    for (int i = 0; i < noffsets; i++)
        rd_kafka_topic_partition_list_add(parts, offsets[i].topic, offsets[i].partition)->offset = offsets[i].next;
    rd_kafka_consumer_group_metadata_t *md = rd_kafka_consumer_group_metadata(consumer);
    /* librdkafka's contract (rdkafka.h, transactional API): a retriable error is asked again, the offsets
     * with the same arguments, the commit resumed (a commit that timed out goes on in the background and
     * may have landed: giving up on it would leave the producer mid-commit and the batch unstored) */
    double t0 = ms_mono_s();
    do {
        if (ke) rd_kafka_error_destroy(ke);
        ke = rd_kafka_send_offsets_to_transaction(c->producer, parts, md, 30000);
    } while (ke && rd_kafka_error_is_retriable(ke) && ms_mono_s() - t0 < TXN_RETRY_S);
    rd_kafka_consumer_group_metadata_destroy(md);
    rd_kafka_topic_partition_list_destroy(parts);
    if (!ke) {
        ke = rd_kafka_commit_transaction(c->producer, 30000);
        while (ke && rd_kafka_error_is_retriable(ke) && ms_mono_s() - t0 < TXN_RETRY_S) {
            ms_log(LOG_WARN, "cluster.commit_retry", "kafka cluster: commit transaction: %s: resuming it",
                   rd_kafka_error_string(ke));
            rd_kafka_error_destroy(ke);
            ke = rd_kafka_commit_transaction(c->producer, 30000);
        }
    }
    if (!ke) return MS_OK;
    if (rd_kafka_error_txn_requires_abort(ke)) {
        rd_kafka_error_t *ae = rd_kafka_abort_transaction(c->producer, 30000);
        if (ae) rd_kafka_error_destroy(ae);
    }
    return kafka_error_fail(e, "commit transaction", ke);
}

ms_code cluster_reset(cluster *c, ms_err *e)
{
    /* A new producer: the old one may be fenced (fatal), or left mid-transaction by an error that was
     * neither retriable nor abortable, or by a commit still unresolved after TXN_RETRY_S. The new one's
     * init_transactions waits for the brokers to settle the old one's last transaction (committed: its
     * markers replay on the next assignment; aborted: its messages come again). */
    char err[512];
    if (c->producer) rd_kafka_destroy(c->producer); /* (NULL: the last reset could not make one) */
    if (!(c->producer = producer_new(c, err, sizeof err))) return cluster_fail(e, "transactional producer", err);
    return load_ids(c, e);
}

/* ---- the membership view (reads on any node) ---- */

/* How long a question to the group's coordinator is asked again while the brokers answer that it is moving
 * or still loading (they do for seconds after a broker starts, and after a coordinator fails over). */
#define GROUP_RETRY_S 60.0

static bool group_error_retriable(rd_kafka_resp_err_t err)
{
    return err == RD_KAFKA_RESP_ERR_NOT_COORDINATOR || err == RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS ||
           err == RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE || err == RD_KAFKA_RESP_ERR__TIMED_OUT ||
           err == RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT || err == RD_KAFKA_RESP_ERR__TRANSPORT;
}

void cluster_revoked(cluster *c)
{
    pthread_mutex_lock(&c->mu);
    memset(c->mine, 0, sizeof *c->mine * (size_t)c->partitions);
    pthread_mutex_unlock(&c->mu);
}

/* One DescribeConsumerGroups: MS_OK with *members, or an error; *retry when the brokers said to ask again
 * (the group's coordinator moving or loading its state, as it does right after a cluster starts). */
static ms_code group_members_once(cluster *c, size_t *members, bool *retry, ms_err *e)
{
    const char *groups[] = {c->opt.group};
    rd_kafka_queue_t *q = rd_kafka_queue_new(c->producer);
    rd_kafka_DescribeConsumerGroups(c->producer, groups, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 10000);
    ms_code rc = MS_OK;
    *members = 0;
    *retry = false;
    if (!ev || rd_kafka_event_error(ev) || rd_kafka_event_type(ev) != RD_KAFKA_EVENT_DESCRIBECONSUMERGROUPS_RESULT) {
        *retry = !ev || group_error_retriable(rd_kafka_event_error(ev));
        rc = cluster_fail(e, "describe the consumer group", ev ? rd_kafka_event_error_string(ev) : "no answer in 10 s");
    } else {
        size_t ng = 0;
        const rd_kafka_ConsumerGroupDescription_t **gs =
            rd_kafka_DescribeConsumerGroups_result_groups(rd_kafka_event_DescribeConsumerGroups_result(ev), &ng);
        for (size_t g = 0; g < ng; g++) {
            const rd_kafka_error_t *ge = rd_kafka_ConsumerGroupDescription_error(gs[g]);
            if (ge && rd_kafka_error_code(ge) != RD_KAFKA_RESP_ERR_GROUP_ID_NOT_FOUND) {
                *retry = group_error_retriable(rd_kafka_error_code(ge));
                rc = cluster_fail(e, "describe the consumer group", rd_kafka_error_string(ge));
                break;
            }
            if (!ge) *members += rd_kafka_ConsumerGroupDescription_member_count(gs[g]);
        }
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    return rc;
}

ms_code cluster_group_members(cluster *c, size_t *members, ms_err *e)
{
    bool retry = false;
    ms_code rc = group_members_once(c, members, &retry, e);
    for (double t0 = ms_mono_s(); rc != MS_OK && retry && ms_mono_s() - t0 < GROUP_RETRY_S;) {
        ms_log(LOG_WARN, "cluster.describe_group", "kafka cluster: %s: trying again", e->msg);
        usleep(250000);
        rc = group_members_once(c, members, &retry, e);
    }
    return rc;
}

void cluster_refresh_members(cluster *c, rd_kafka_t *consumer)
{
    const char *groups[] = {c->opt.group};
    rd_kafka_queue_t *q = rd_kafka_queue_new(consumer);
    rd_kafka_DescribeConsumerGroups(consumer, groups, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 5000);
    char **urls = ms_calloc((size_t)c->partitions, sizeof *urls);
    bool ok = false;
    if (ev && !rd_kafka_event_error(ev) && rd_kafka_event_type(ev) == RD_KAFKA_EVENT_DESCRIBECONSUMERGROUPS_RESULT) {
        size_t ng = 0;
        const rd_kafka_ConsumerGroupDescription_t **gs =
            rd_kafka_DescribeConsumerGroups_result_groups(rd_kafka_event_DescribeConsumerGroups_result(ev), &ng);
        for (size_t g = 0; g < ng; g++) {
            if (rd_kafka_ConsumerGroupDescription_error(gs[g])) continue;
            ok = true;
            for (size_t m = 0; m < rd_kafka_ConsumerGroupDescription_member_count(gs[g]); m++) {
                const rd_kafka_MemberDescription_t *md = rd_kafka_ConsumerGroupDescription_member(gs[g], m);
                const char *url = rd_kafka_MemberDescription_client_id(md);
                const rd_kafka_topic_partition_list_t *parts =
                    rd_kafka_MemberAssignment_partitions(rd_kafka_MemberDescription_assignment(md));
                for (int i = 0; parts && url && i < parts->cnt; i++)
                    if (strcmp(parts->elems[i].topic, c->opt.topic) == 0 && parts->elems[i].partition >= 0 &&
                        parts->elems[i].partition < c->partitions && !urls[parts->elems[i].partition])
                        urls[parts->elems[i].partition] = ms_strndup(url, strlen(url));
            }
        }
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    pthread_mutex_lock(&c->mu);
    for (int32_t p = 0; p < c->partitions; p++) {
        char *old = c->owner_url[p];
        c->owner_url[p] = ok ? urls[p] : old;
        if (ok)
            free(old);
        else
            free(urls[p]);
    }
    if (ok) c->view_at = ms_mono_s();
    pthread_mutex_unlock(&c->mu);
    free(urls);
}

cluster_owner cluster_owner_of(cluster *c, uint32_t shard, char *url, size_t cap)
{
    int32_t p = shard_partition(shard, c->partitions);
    cluster_owner o = CLUSTER_OWNER_UNKNOWN;
    pthread_mutex_lock(&c->mu);
    if (c->mine[p]) {
        o = CLUSTER_OWNER_ME;
    } else if (c->owner_url[p] && strncmp(c->owner_url[p], "http", 4) == 0 &&
               !(c->opt.advertise && strcmp(c->owner_url[p], c->opt.advertise) == 0)) {
        /* (this node by a view older than its last rebalance: nobody, until the next description) */
        snprintf(url, cap, "%s", c->owner_url[p]);
        o = CLUSTER_OWNER_OTHER;
    }
    pthread_mutex_unlock(&c->mu);
    return o;
}
