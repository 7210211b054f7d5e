/*
 * kafka_mock.c - a Kafka cluster for tests and the demo: librdkafka's mock cluster (the real Kafka
 * protocol over TCP on loopback), with topics created up front.
 *
 * Usage: kafka_mock [--brokers N] TOPIC[:PARTITIONS]...
 * Prints the bootstrap servers on the first line of standard output, then runs until standard input
 * closes or SIGTERM/SIGINT. A line "down" on standard input takes every broker down (connections cut,
 * new ones refused), "up" brings them back on the same ports: a broker outage and its end.
 * Known limits of the mock (librdkafka): each partition keeps about 5 MiB, committed offsets live only
 * as long as this process, the first group join takes ~3 s.
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig, stop = 1; }

int main(int argc, char **argv)
{
    int brokers = 3, first = 1;
    if (argc > 2 && strcmp(argv[1], "--brokers") == 0) brokers = atoi(argv[2]), first = 3;
    if (first >= argc || brokers < 1) {
        fprintf(stderr, "usage: kafka_mock [--brokers N] TOPIC[:PARTITIONS]...\n");
        return 2;
    }
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err); /* no warning about its own bootstrap */
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "kafka_mock: %s\n", err);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        fprintf(stderr, "kafka_mock: cannot start the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    for (int i = first; i < argc; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s", argv[i]);
        char *colon = strchr(name, ':');
        int partitions = 1;
        if (colon) *colon = 0, partitions = atoi(colon + 1);
        if (rd_kafka_mock_topic_create(mc, name, partitions > 0 ? partitions : 1, 1) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            fprintf(stderr, "kafka_mock: cannot create topic %s\n", name);
            rd_kafka_mock_cluster_destroy(mc);
            rd_kafka_destroy(rk);
            return 1;
        }
    }
    printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    while (!stop) {
        struct pollfd p = {.fd = 0, .events = POLLIN};
        int n = poll(&p, 1, 200);
        if (n > 0) {
            char b[256];
            ssize_t got = read(0, b, sizeof b - 1);
            if (got <= 0) break; /* standard input closed: the test is over */
            b[got] = 0;
            bool down = strstr(b, "down") != NULL, up = strstr(b, "up") != NULL;
            for (int id = 1; id <= brokers && (down || up); id++) {
                if (down) rd_kafka_mock_broker_set_down(mc, id);
                if (up) rd_kafka_mock_broker_set_up(mc, id);
            }
        }
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
