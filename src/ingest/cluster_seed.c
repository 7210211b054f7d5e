/*
 * cluster_seed.c - an existing single-node store seeds a new cluster (see cluster_seed.h).
 *
 * The steps, each one Kafka transaction that ends with the seed's progress message in T.seed:
 *   1. identities, IDENTITY_STEP numbers at a time: their shards' chunk of T.seed (SEED_CHUNK numbers per
 *      message) and each live identity's changelog entry;
 *   2. record versions, commit-log entry by entry, about step_records or step_bytes per transaction;
 *   3. the progress marked done.
 * The progress after each step says where the next begins (pipeline/seed_table.h), so a rerun sends no step
 * twice: a step is visible (read_committed) with its progress, or not at all.
 *
 * What it logs: counts and positions only.
 */
#include "ingest/cluster_seed.h"

#include "base/cluster_key.h"
#include "base/log.h"
#include "ingest/cluster.h"
#include "pipeline/record_origin.h"
#include "pipeline/seed_table.h"
#include "pipeline/shard.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IDENTITY_STEP (4 * SEED_CHUNK) /* numbers per identity transaction: whole chunks */
#define TXN_TIMEOUT_MS 60000

typedef struct {
    const cluster_seed_options *opt;
    cluster *cl;
    rd_kafka_t *p; /* the cluster's transactional producer */
    store *s;
    seed_progress at;
    uint16_t *shard; /* [patients]: each number's shard (SEED_NO_SHARD: erased) */
    cluster_seed_report *rep;
} seeder;

static ms_code kafka_fail(ms_err *e, const char *what, const char *why)
{
    return ms_fail(e, MS_EIO, "cluster seed: %s: %s", what, why);
}

/* ---- the key file ---- */

/* Write the store's id key as the cluster key file; an existing file must hold the same key. */
static ms_code key_file_write(const char *path, const unsigned char key[CLUSTER_KEY_BYTES], ms_err *e)
{
    char text[2 * CLUSTER_KEY_BYTES + 2];
    for (int i = 0; i < CLUSTER_KEY_BYTES; i++)
        snprintf(text + 2 * i, 3, "%02x", key[i]);
    text[2 * CLUSTER_KEY_BYTES] = '\n';
    text[2 * CLUSTER_KEY_BYTES + 1] = '\0';
    unsigned char have[CLUSTER_KEY_BYTES];
    ms_code rc = MS_OK;
    if (access(path, F_OK) == 0) {
        if ((rc = cluster_key_load(path, have, e)) == MS_OK && memcmp(have, key, CLUSTER_KEY_BYTES) != 0)
            rc = ms_fail(e, MS_ECONFLICT, "cluster seed: %s holds another key: the cluster key must be this store's",
                         path);
    } else {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
            rc = ms_fail(e, MS_EIO, "cluster seed: cannot make %s: %s", path, strerror(errno));
        } else {
            size_t len = 2 * CLUSTER_KEY_BYTES + 1;
            if (write(fd, text, len) != (ssize_t)len || fsync(fd) != 0)
                rc = ms_fail(e, MS_EIO, "cluster seed: cannot write %s: %s", path, strerror(errno));
            close(fd);
        }
    }
    OPENSSL_cleanse(text, sizeof text);
    OPENSSL_cleanse(have, sizeof have);
    return rc;
}

/* ---- transactions ---- */

static ms_code txn_begin(seeder *sd, ms_err *e)
{
    rd_kafka_error_t *ke = rd_kafka_begin_transaction(sd->p);
    if (!ke) return MS_OK;
    ms_code rc = kafka_fail(e, "begin transaction", rd_kafka_error_string(ke));
    rd_kafka_error_destroy(ke);
    return rc;
}

static ms_code txn_abort(seeder *sd, rd_kafka_resp_err_t err, ms_err *e)
{
    rd_kafka_error_t *ae = rd_kafka_abort_transaction(sd->p, TXN_TIMEOUT_MS);
    if (ae) rd_kafka_error_destroy(ae);
    return kafka_fail(e, "produce", rd_kafka_err2str(err));
}

/* The progress message, then commit: the step and where the next begins are visible together. */
static ms_code txn_commit(seeder *sd, const seed_progress *next, ms_err *e)
{
    unsigned char v[SEED_PROGRESS];
    seed_progress_encode(next, v);
    rd_kafka_resp_err_t err = rd_kafka_producev(sd->p, RD_KAFKA_V_TOPIC(cluster_seed_topic(sd->cl)),
                                                RD_KAFKA_V_PARTITION(0), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                                RD_KAFKA_V_KEY("S", 1), RD_KAFKA_V_VALUE(v, sizeof v), RD_KAFKA_V_END);
    if (err) return txn_abort(sd, err, e);
    rd_kafka_error_t *ke = rd_kafka_commit_transaction(sd->p, TXN_TIMEOUT_MS);
    if (ke) {
        if (rd_kafka_error_txn_requires_abort(ke)) {
            rd_kafka_error_t *ae = rd_kafka_abort_transaction(sd->p, TXN_TIMEOUT_MS);
            if (ae) rd_kafka_error_destroy(ae);
        }
        ms_code rc = kafka_fail(e, "commit transaction", rd_kafka_error_string(ke));
        rd_kafka_error_destroy(ke);
        return rc;
    }
    sd->at = *next;
    sd->rep->steps++;
    return MS_OK;
}

/* End the open transaction: aborted after a store error rc (its message in e) or a produce error err,
 * else committed with the progress next. */
static ms_code txn_end(seeder *sd, ms_code rc, rd_kafka_resp_err_t err, const seed_progress *next, ms_err *e)
{
    if (rc == MS_OK && !err) return txn_commit(sd, next, e);
    if (err && rc == MS_OK) return txn_abort(sd, err, e);
    rd_kafka_error_t *ae = rd_kafka_abort_transaction(sd->p, TXN_TIMEOUT_MS);
    if (ae) rd_kafka_error_destroy(ae);
    return rc;
}

/* ---- what the store holds ---- */

static void count_entry(void *ctx, const unsigned char mac[32], uint64_t number)
{
    (void)mac;
    (void)number;
    (*(uint64_t *)ctx)++;
}

/* Every number's shard, from its identity key (erased: none); the MACs are made again when sent. */
static ms_code shards_of(seeder *sd, store_read *r, ms_err *e)
{
    sd->shard = ms_malloc(sizeof *sd->shard * (sd->at.patients + 1));
    buf key = {0};
    ms_code rc = MS_OK;
    for (uint64_t n = 0; rc == MS_OK && n < sd->at.patients; n++) {
        patient_id pid;
        store_patient_id(sd->s, n, &pid);
        bool found = false;
        key.len = 0;
        rc = store_identity_key(r, &pid, &key, &found, e);
        sd->shard[n] = found ? (uint16_t)shard_of_key(key.data, key.len) : SEED_NO_SHARD;
    }
    if (key.data) OPENSSL_cleanse(key.data, key.cap);
    buf_free(&key);
    return rc;
}

/* ---- step 1: identities ---- */

static ms_code send_identities(seeder *sd, store_read *r, ms_err *e)
{
    const char *seed = cluster_seed_topic(sd->cl), *changelog = cluster_changelog_topic(sd->cl);
    uint32_t pc = (uint32_t)cluster_changelog_partitions(sd->cl);
    buf key = {0};
    ms_code rc = MS_OK;
    while (rc == MS_OK && sd->at.identities < sd->at.patients) {
        if (sd->opt->stop && atomic_load(sd->opt->stop)) {
            sd->rep->stopped = true;
            break;
        }
        uint64_t from = sd->at.identities, to = from + IDENTITY_STEP, published = 0, erased = 0;
        if (to > sd->at.patients) to = sd->at.patients;
        if ((rc = txn_begin(sd, e)) != MS_OK) break;
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
        for (uint64_t c = from; !err && c < to; c += SEED_CHUNK) { /* the shards, a chunk per message */
            uint64_t end = c + SEED_CHUNK < to ? c + SEED_CHUNK : to;
            unsigned char k[SEED_CHUNK_KEY], *v = ms_malloc(2 * (end - c));
            seed_chunk_key(c, k);
            for (uint64_t n = c; n < end; n++) {
                v[2 * (n - c)] = (unsigned char)(sd->shard[n] >> 8);
                v[2 * (n - c) + 1] = (unsigned char)sd->shard[n];
            }
            err = rd_kafka_producev(sd->p, RD_KAFKA_V_TOPIC(seed), RD_KAFKA_V_PARTITION(0),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_KEY(k, sizeof k),
                                    RD_KAFKA_V_VALUE(v, 2 * (end - c)), RD_KAFKA_V_END);
            if (err) free(v);
        }
        for (uint64_t n = from; !err && rc == MS_OK && n < to; n++) { /* each live identity, at its shard */
            if (sd->shard[n] == SEED_NO_SHARD) {
                erased++;
                continue;
            }
            patient_id pid;
            store_patient_id(sd->s, n, &pid);
            bool found = false;
            key.len = 0;
            if ((rc = store_identity_key(r, &pid, &key, &found, e)) != MS_OK || !found) continue;
            unsigned char mac[32], num[8];
            store_identity_mac(sd->s, key.data, key.len, mac);
            ms_set_be64(num, n);
            err = rd_kafka_producev(sd->p, RD_KAFKA_V_TOPIC(changelog),
                                    RD_KAFKA_V_PARTITION((int32_t)(sd->shard[n] % pc)),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(mac, 32),
                                    RD_KAFKA_V_VALUE(num, 8), RD_KAFKA_V_END);
            if (!err) published++;
        }
        seed_progress next = sd->at;
        next.identities = to;
        if (to == sd->at.patients && next.next_pos == 0) next.next_pos = 1;
        if ((rc = txn_end(sd, rc, err, &next, e)) != MS_OK) break;
        sd->rep->identities += published;
        sd->rep->erased += erased;
        if (sd->opt->progress)
            fprintf(sd->opt->progress, "cluster-seed: identities %llu of %llu\n", (unsigned long long)to,
                    (unsigned long long)sd->at.patients);
    }
    if (key.data) OPENSSL_cleanse(key.data, key.cap);
    buf_free(&key);
    return rc;
}

/* ---- step 2: record versions, in commit order ---- */

typedef struct {
    char kind;
    char id[RECORD_ID_MAX + 1];
    uint32_t id_len, version;
} entry_item;

typedef struct {
    entry_item *items;
    size_t n, cap;
} entry_items;

static bool collect_item(void *ctx, const log_item *it)
{
    entry_items *x = ctx;
    if (it->kind != 'r' || it->id_len > RECORD_ID_MAX) return true;
    if (x->n == x->cap) {
        x->cap = x->cap ? x->cap * 2 : 256;
        x->items = ms_realloc(x->items, sizeof *x->items * x->cap);
    }
    entry_item *o = &x->items[x->n++];
    o->kind = it->kind;
    memcpy(o->id, it->id, it->id_len);
    o->id[it->id_len] = '\0';
    o->id_len = it->id_len;
    o->version = it->version;
    return true;
}

/* Send the record versions of commit-log entry pos (into the open transaction). */
static ms_code send_entry(seeder *sd, store_read *r, uint64_t pos, uint64_t *records, uint64_t *bytes,
                          rd_kafka_resp_err_t *err, ms_err *e)
{
    entry_items items = {0};
    int64_t commit_time = 0;
    bool found = false;
    ms_code rc = store_log_entry(r, pos, &commit_time, collect_item, &items, &found, e);
    int64_t last = store_last_commit(r);
    int32_t partitions = cluster_partitions(sd->cl);
    buf body = {0};
    for (size_t i = 0; rc == MS_OK && found && !*err && i < items.n; i++) {
        const entry_item *it = &items.items[i];
        record_version rv, now;
        bool have = false, live = false;
        if ((rc = store_record_version(r, it->id, it->id_len, commit_time, it->version, &rv, &have, e)) != MS_OK) break;
        if (rc == MS_OK && have) rc = store_record_at(r, it->id, it->id_len, last, &now, &live, e);
        if (rc != MS_OK || !have) continue;
        if (rv.deleted || !live || now.deleted) { /* deleted since (or erased): none of its versions goes */
            sd->rep->deleted++;
            continue;
        }
        body.len = 0;
        if ((rc = store_record_body(sd->s, &rv, &body, e)) != MS_OK) break;
        uint32_t shard = rv.patient_number < sd->at.patients && sd->shard[rv.patient_number] != SEED_NO_SHARD
                             ? sd->shard[rv.patient_number]
                             : shard_of_number(rv.patient_number);
        char key[16], ts[8];
        int kl = snprintf(key, sizeof key, "%u", shard);
        ms_set_be64(ts, (uint64_t)rv.ts_us);
        *err = rd_kafka_producev(sd->p, RD_KAFKA_V_TOPIC(sd->opt->topic),
                                 RD_KAFKA_V_PARTITION(shard_partition(shard, partitions)),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, (size_t)kl),
                                 RD_KAFKA_V_VALUE(body.data, body.len),
                                 RD_KAFKA_V_HEADER(RECORD_ID_HEADER, rv.record_id, (ssize_t)rv.record_id_len),
                                 RD_KAFKA_V_HEADER(RECORD_TS_HEADER, ts, (ssize_t)sizeof ts), RD_KAFKA_V_END);
        if (!*err) {
            (*records)++;
            *bytes += body.len;
        }
    }
    if (body.data) OPENSSL_cleanse(body.data, body.cap);
    buf_free(&body);
    free(items.items);
    return rc;
}

static ms_code send_records(seeder *sd, store_read *r, ms_err *e)
{
    uint64_t end = store_commit_pos(r);
    ms_code rc = MS_OK;
    while (rc == MS_OK && sd->at.next_pos <= end) {
        if (sd->opt->stop && atomic_load(sd->opt->stop)) {
            sd->rep->stopped = true;
            break;
        }
        if ((rc = txn_begin(sd, e)) != MS_OK) break;
        uint64_t pos = sd->at.next_pos, records = 0, bytes = 0;
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
        while (rc == MS_OK && !err && pos <= end && records < sd->opt->step_records && bytes < sd->opt->step_bytes)
            rc = send_entry(sd, r, pos++, &records, &bytes, &err, e);
        seed_progress next = sd->at;
        next.next_pos = pos;
        if ((rc = txn_end(sd, rc, err, &next, e)) != MS_OK) break;
        sd->rep->records += records;
        sd->rep->bytes += bytes;
        if (sd->opt->progress)
            fprintf(sd->opt->progress, "cluster-seed: commits %llu of %llu, %llu record versions sent\n",
                    (unsigned long long)(pos - 1), (unsigned long long)end, (unsigned long long)sd->rep->records);
    }
    return rc;
}

/* ---- the run ---- */

static ms_code check_new_cluster(seeder *sd, ms_err *e)
{
    size_t members = 0;
    ms_code rc = cluster_group_members(sd->cl, &members, e);
    if (rc != MS_OK) return rc;
    if (members)
        return ms_fail(e, MS_ECONFLICT,
                       "cluster seed: consumer group %s has %zu member(s): a store seeds a new cluster, before its "
                       "nodes start",
                       sd->opt->group, members);
    const char *changelog = cluster_changelog_topic(sd->cl);
    for (int32_t x = 0; x < cluster_changelog_partitions(sd->cl); x++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t kerr = rd_kafka_query_watermark_offsets(sd->p, changelog, x, &lo, &hi, 10000);
        if (kerr) return kafka_fail(e, changelog, rd_kafka_err2str(kerr));
        if (hi > 0)
            return ms_fail(e, MS_ECONFLICT,
                           "cluster seed: %s partition %d holds messages: the cluster has patients already (a store "
                           "seeds a new cluster only)",
                           changelog, (int)x);
    }
    return MS_OK;
}

ms_code cluster_seed_run(const cluster_seed_options *opt, cluster_seed_report *out, ms_err *e)
{
    memset(out, 0, sizeof *out);
    seeder sd = {.opt = opt, .s = opt->store, .rep = out};
    uint64_t entries = 0;
    ms_code rc = store_cluster_ids_each(opt->store, count_entry, &entries, e);
    if (rc != MS_OK) return rc;
    if (entries)
        return ms_fail(e, MS_EINVAL,
                       "cluster seed: this store is a cluster node's (it holds %llu cluster entries): only a "
                       "single-node store seeds a cluster",
                       (unsigned long long)entries);
    if ((rc = key_file_write(opt->key_out, store_id_key(opt->store), e)) != MS_OK) return rc;
    char node[8 + 2 * STORE_NODE_ID + 1] = "seed-";
    for (int i = 0; i < STORE_NODE_ID; i++)
        snprintf(node + 5 + 2 * i, 3, "%02x", store_node_id(opt->store)[i]);
    cluster_options co = {.brokers = opt->brokers,
                          .topic = opt->topic,
                          .group = opt->group,
                          .node = node,
                          .config = opt->config,
                          .store = opt->store,
                          .seeding = true};
    if ((rc = cluster_open(&sd.cl, &co, e)) != MS_OK) return rc;
    sd.p = cluster_producer(sd.cl);
    store_read *r = NULL;
    if ((rc = cluster_seed_topic_ensure(sd.cl, e)) != MS_OK || (rc = cluster_seed_state(sd.cl, &sd.at, e)) != MS_OK ||
        (rc = store_read_begin(opt->store, &r, e)) != MS_OK)
        goto done;
    uint64_t patients = store_patient_count(r);
    if (patients > SEED_NUMBERS_MAX) {
        rc = ms_fail(e, MS_EINVAL, "cluster seed: this store has %llu patients; a seed carries at most %llu",
                     (unsigned long long)patients, (unsigned long long)SEED_NUMBERS_MAX);
        goto done;
    }
    if (sd.at.patients == 0) {
        if ((rc = check_new_cluster(&sd, e)) != MS_OK) goto done;
        sd.at = (seed_progress){.patients = patients};
    } else if (sd.at.patients != patients) {
        rc = ms_fail(e, MS_ECONFLICT,
                     "cluster seed: %s was seeded by a store of %llu patients; this one has %llu: a cluster has one "
                     "seed",
                     cluster_seed_topic(sd.cl), (unsigned long long)sd.at.patients, (unsigned long long)patients);
        goto done;
    } else {
        out->resumed = true;
        out->already = sd.at.done;
    }
    out->patients = patients;
    if (sd.at.done) goto done;
    if ((rc = shards_of(&sd, r, e)) != MS_OK) goto done;
    if (sd.at.identities == 0 && patients == 0) { /* an empty store: nothing to publish but the floor */
        rc = txn_begin(&sd, e);
        if (rc == MS_OK) rc = txn_commit(&sd, &(seed_progress){.patients = 0, .next_pos = 1}, e);
    }
    if (rc == MS_OK) rc = send_identities(&sd, r, e);
    if (rc == MS_OK && !out->stopped) rc = send_records(&sd, r, e);
    if (rc == MS_OK && !out->stopped) {
        seed_progress fin = sd.at;
        fin.done = true;
        if ((rc = txn_begin(&sd, e)) == MS_OK) rc = txn_commit(&sd, &fin, e);
    }
    if (rc == MS_OK) {
        log_field f[] = {LOG_UINT("patients", out->patients), LOG_UINT("identities", out->identities),
                         LOG_UINT("records", out->records), LOG_UINT("steps", out->steps)};
        ms_log_fields(LOG_INFO, "cluster.seeded", f, LOG_NFIELDS(f),
                      out->stopped ? "cluster seed: stopped" : "cluster seed: done");
    }
done:
    store_read_end(r);
    free(sd.shard);
    cluster_close(sd.cl);
    return rc;
}
