/*
 * cluster_reader.c - the replay reader of a cluster node (cluster.h): the messages of the batches a plan
 * replays (cluster_restore), read from T and T.by-shard with the node's changelog reader, each source
 * partition from its own queue, run after run in the order the plan asks for them.
 *
 * Contract: cluster.h ("cluster_reader_open"). Runs of one partition and topic are asked for in offset
 * order (a message read past a run's end is held for the next run). What it logs: nothing.
 * Must never: hand out a message outside the run asked for, or wait past CLUSTER_RESTORE_TIMEOUT_S.
 */
#include "ingest/cluster.h"

#include <stdlib.h>

struct cluster_reader {
    cluster *c;
    int n;
    int32_t *parts;
    rd_kafka_queue_t *(*q)[2];
    rd_kafka_message_t *(*held)[2]; /* read past a run's end: the next run's first */
};

ms_code cluster_reader_open(cluster *c, const cluster_replay *plan, cluster_reader **out, ms_err *e)
{
    cluster_reader *rd = ms_calloc(1, sizeof *rd);
    rd->c = c;
    rd->parts = ms_calloc((size_t)plan->n + 1, sizeof *rd->parts);
    int64_t(*from)[2] = ms_calloc((size_t)plan->n + 1, sizeof *from);
    for (int b = 0; b < plan->n; b++) { /* every source partition, from its first run in each topic */
        int x = 0;
        while (x < rd->n && rd->parts[x] != plan->batches[b].source)
            x++;
        if (x == rd->n) {
            rd->parts[rd->n++] = plan->batches[b].source;
            from[x][0] = from[x][1] = -1;
        }
        for (int r = 0; r < plan->batches[b].nruns; r++) {
            const cluster_run *run = &plan->batches[b].runs[r];
            if (from[x][run->topic] < 0 || run->from < from[x][run->topic]) from[x][run->topic] = run->from;
        }
    }
    const char *topics[2] = {cluster_topic(c), cluster_byshard_topic(c)};
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(2 * rd->n + 1);
    for (int x = 0; x < rd->n; x++)
        for (int t = 0; t < 2; t++)
            rd_kafka_topic_partition_list_add(parts, topics[t], rd->parts[x])->offset =
                from[x][t] >= 0 ? from[x][t] : RD_KAFKA_OFFSET_END; /* no run there: nothing to read */
    free(from);
    rd_kafka_resp_err_t kerr = rd_kafka_assign(cluster_restorer(c), parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (kerr) {
        free(rd->parts);
        free(rd);
        return ms_fail(e, MS_EIO, "kafka cluster: replay assign: %s", rd_kafka_err2str(kerr));
    }
    rd->q = ms_calloc((size_t)rd->n + 1, sizeof *rd->q);
    rd->held = ms_calloc((size_t)rd->n + 1, sizeof *rd->held);
    for (int x = 0; x < rd->n; x++)
        for (int t = 0; t < 2; t++) {
            rd->q[x][t] = rd_kafka_queue_get_partition(cluster_restorer(c), topics[t], rd->parts[x]);
            rd_kafka_queue_forward(rd->q[x][t], NULL); /* this partition's messages stay in its own queue */
        }
    *out = rd;
    return MS_OK;
}

ms_code cluster_reader_run(cluster_reader *rd, int32_t source, const cluster_run *run, rd_kafka_message_t ***msgs,
                           int *n, ms_err *e)
{
    int cap = 0, x = 0;
    *msgs = NULL;
    *n = 0;
    while (x < rd->n && rd->parts[x] != source)
        x++;
    if (x == rd->n) return ms_fail(e, MS_EIO, "kafka cluster: replay: a run of a partition the reader does not read");
    rd_kafka_queue_t *q = rd->q[x][run->topic];
    rd_kafka_message_t **held = &rd->held[x][run->topic];
    double t0 = ms_mono_s();
    for (;;) {
        rd_kafka_message_t *m = *held;
        *held = NULL;
        if (!m) m = rd_kafka_consume_queue(q, 200);
        if (!m) {
            if (ms_mono_s() - t0 > CLUSTER_RESTORE_TIMEOUT_S)
                return ms_fail(e, MS_EIO, "kafka cluster: replay: the messages did not come");
            continue;
        }
        if (m->err || m->offset < run->from) { /* the end of the partition, errors; or before the run */
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->offset >= run->to) {
            *held = m;
            return MS_OK;
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 256;
            *msgs = ms_realloc(*msgs, sizeof **msgs * (size_t)cap);
        }
        (*msgs)[(*n)++] = m;
        if (m->offset == run->to - 1) return MS_OK;
    }
}

void cluster_reader_close(cluster_reader *rd)
{
    if (!rd) return;
    for (int x = 0; x < rd->n; x++)
        for (int t = 0; t < 2; t++) {
            if (rd->held[x][t]) rd_kafka_message_destroy(rd->held[x][t]);
            rd_kafka_queue_destroy(rd->q[x][t]);
        }
    rd_kafka_assign(cluster_restorer(rd->c), NULL);
    free(rd->q);
    free(rd->held);
    free(rd->parts);
    free(rd);
}
