/*
 * cmd_cluster_seed.c - `medstream cluster-seed --data DIR --kafka-brokers B --kafka-topic T
 * --cluster-key-out FILE`: an existing single-node store seeds a new cluster on T, its patients keeping
 * their ids (ingest/cluster_seed.h has what is sent and the guarantees). Resumable: run it again after an
 * interruption; run again after it finished, it says so and sends nothing.
 *
 * Never: print or log anything of a patient (counts only), or run while a server holds the store.
 */
#include "commands.h"

#include "base/options.h"
#include "ingest/cluster_seed.h"
#include "store/store.h"

#include <stdio.h>
#include <string.h>

int cmd_cluster_seed(int argc, char **argv)
{
    const char *data = NULL, *brokers = NULL, *topic = NULL, *group = NULL, *key_out = NULL;
    opt_list config = {0};
    uint64_t step_records = 0, step_bytes = 0;
    /* clang-format off */
    const option opts[] = {
        {.name = "--data", .type = OPT_STRING, .target = &data, .required = true, .metavar = "DIR",
         .help = "the single-node store that seeds the cluster (no server may hold it meanwhile)"},
        {.name = "--kafka-brokers", .type = OPT_STRING, .target = &brokers, .required = true,
         .metavar = "HOST:PORT[,...]", .help = "the cluster's Kafka bootstrap servers"},
        {.name = "--kafka-topic", .type = OPT_STRING, .target = &topic, .required = true, .metavar = "TOPIC",
         .help = "the cluster's topic (its partition count a power of two)"},
        {.name = "--kafka-group", .type = OPT_STRING, .target = &group, .def = "medstream", .metavar = "GROUP",
         .help = "the cluster's consumer group (it must have no members: seed before the nodes start)"},
        {.name = "--kafka-config", .type = OPT_LIST, .target = &config, .metavar = "KEY=VALUE",
         .help = "a librdkafka setting (SASL, TLS)"},
        {.name = "--cluster-key-out", .type = OPT_STRING, .target = &key_out, .required = true, .metavar = "FILE",
         .help = "write the cluster key here (mode 0600; the store's id key, so ids stay): give it to every node's "
                 "init and serve as --cluster-key-file"},
        {.name = "--step-records", .type = OPT_UINT, .target = &step_records, .def = "5000", .min = 1,
         .max = 1000000, .help = "record versions per Kafka transaction"},
        {.name = "--step-bytes", .type = OPT_BYTES, .target = &step_bytes, .def = "32MiB", .min = 1 << 20,
         .max = (uint64_t)1 << 30, .help = "about this many body bytes per Kafka transaction"},
        {0},
    };
    /* clang-format on */
    const options_command cmd = {
        "cluster-seed", "medstream cluster-seed --data DIR --kafka-brokers B --kafka-topic T --cluster-key-out FILE",
        "Seed a new cluster (serve --kafka-cluster) from an existing single-node store, so that its\n"
        "patients keep their ids: writes the cluster key (the store's), publishes every patient's\n"
        "identity into the cluster's changelog and its shard into T.seed, then sends every record\n"
        "version into T in the store's commit order, each with its record id. Each step is a Kafka\n"
        "transaction with the seed's progress: run it again to go on after an interruption. Run it\n"
        "before the cluster's nodes start (they refuse to start during it); the store is not changed.",
        opts};
    options_args a;
    int code;
    if (!options_parse_command(&cmd, argc, argv, 2, 0, &a, stdout, stderr, &code)) {
        options_args_free(&a);
        return code;
    }
    options_args_free(&a);
    if (!data_dir_ready("cluster-seed", data)) return 1;
    store *s;
    ms_err e = {0};
    store_options so = {.owner = "cluster-seed"};
    if (store_open(&s, data, &so, &e) != MS_OK) {
        fprintf(stderr, "medstream cluster-seed: %s\n", e.msg);
        return 1;
    }
    stop_on_signals();
    cluster_seed_options o = {.brokers = brokers,
                              .topic = topic,
                              .group = group,
                              .config = config.v,
                              .store = s,
                              .key_out = key_out,
                              .step_records = step_records,
                              .step_bytes = step_bytes,
                              .progress = stderr,
                              .stop = &command_stop};
    cluster_seed_report r;
    ms_code rc = cluster_seed_run(&o, &r, &e);
    store_close(s);
    if (rc != MS_OK) {
        fprintf(stderr, "medstream cluster-seed: %s\n", e.msg);
        return 1;
    }
    printf("{\"patients\":%llu,\"identities\":%llu,\"erased\":%llu,\"record_versions\":%llu,\"deleted_versions\":%llu,"
           "\"bytes\":%llu,\"transactions\":%llu,\"resumed\":%s,\"already_done\":%s,\"stopped\":%s}\n",
           (unsigned long long)r.patients, (unsigned long long)r.identities, (unsigned long long)r.erased,
           (unsigned long long)r.records, (unsigned long long)r.deleted, (unsigned long long)r.bytes,
           (unsigned long long)r.steps, r.resumed ? "true" : "false", r.already ? "true" : "false",
           r.stopped ? "true" : "false");
    return r.stopped ? 1 : 0;
}
