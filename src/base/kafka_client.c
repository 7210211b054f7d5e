/*
 * kafka_client.c - librdkafka configuration and the producer factory (see kafka_client.h).
 */
#include "base/kafka_client.h"

#include "base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool kafka_conf_apply(rd_kafka_conf_t *conf, const char *const *settings, char *err, size_t cap)
{
    for (const char *const *kv = settings; kv && *kv; kv++) {
        char key[128], why[256];
        const char *eq = strchr(*kv, '=');
        if (!eq || (size_t)(eq - *kv) >= sizeof key) {
            snprintf(err, cap, "'%.64s': expected key=value", *kv);
            return false;
        }
        memcpy(key, *kv, (size_t)(eq - *kv));
        key[eq - *kv] = 0;
        if (rd_kafka_conf_set(conf, key, eq + 1, why, sizeof why) != RD_KAFKA_CONF_OK) {
            snprintf(err, cap, "%s: %s", key, why);
            return false;
        }
    }
    return true;
}

/* syslog levels: 0-3 errors, 4 warnings, 5-6 notices and information, 7 debugging */
static void library_message(const rd_kafka_t *rk, int level, const char *facility, const char *text)
{
    log_level lv = level <= 3 ? LOG_ERROR : level == 4 ? LOG_WARN : level <= 6 ? LOG_INFO : LOG_DEBUG;
    log_field f[] = {LOG_STR("client", rd_kafka_name(rk)), LOG_STR("facility", facility)};
    ms_log_fields(lv, "kafka.client", f, LOG_NFIELDS(f), "kafka: %s", text);
}

/* librdkafka's error events. Without this callback it logs each again, as facility ERROR, beside the
 * line that already said it; broker connection failures are left to those lines (and the consumer's
 * kafka.unreachable), anything else is logged once here. */
static void library_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__TRANSPORT || err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN ||
        err == RD_KAFKA_RESP_ERR__RESOLVE)
        return;
    log_field f[] = {LOG_STR("client", rd_kafka_name(rk)), LOG_STR("error", rd_kafka_err2name(err))};
    ms_log_fields(err == RD_KAFKA_RESP_ERR__FATAL ? LOG_ERROR : LOG_WARN, "kafka.client", f, LOG_NFIELDS(f),
                  "kafka: %s", reason);
}

void kafka_conf_log_to_ms(rd_kafka_conf_t *conf)
{
    rd_kafka_conf_set_log_cb(conf, library_message);
    rd_kafka_conf_set_error_cb(conf, library_error);
}

rd_kafka_t *kafka_producer_new(const kafka_producer_options *opt, char *err, size_t cap)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *const defaults[] = {"enable.idempotence=true", "linger.ms=5", "log_level=4", NULL};
    char servers[1024];
    snprintf(servers, sizeof servers, "bootstrap.servers=%s", opt->brokers ? opt->brokers : "");
    const char *const brokers[] = {servers, NULL};
    if (!kafka_conf_apply(conf, brokers, err, cap) || !kafka_conf_apply(conf, defaults, err, cap) ||
        !kafka_conf_apply(conf, opt->config, err, cap)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    kafka_conf_log_to_ms(conf);
    if (opt->on_delivery) {
        rd_kafka_conf_set_opaque(conf, opt->opaque);
        rd_kafka_conf_set_dr_msg_cb(conf, opt->on_delivery);
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, cap);
    if (!rk) rd_kafka_conf_destroy(conf); /* rd_kafka_new took it only on success */
    return rk;
}

rd_kafka_t *kafka_reader_new(const char *brokers, const char *group, bool read_committed, const char *const *config,
                             char *err, size_t cap)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char servers[1024], gid[320];
    snprintf(servers, sizeof servers, "bootstrap.servers=%s", brokers ? brokers : "");
    snprintf(gid, sizeof gid, "group.id=%s", group);
    const char *const base[] = {servers,
                                gid,
                                read_committed ? "isolation.level=read_committed" : "isolation.level=read_uncommitted",
                                "enable.partition.eof=true",
                                "enable.auto.commit=false",
                                "auto.offset.reset=earliest",
                                "fetch.wait.max.ms=50",
                                "log_level=4",
                                NULL};
    if (!kafka_conf_apply(conf, base, err, cap) || !kafka_conf_apply(conf, config, err, cap)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    kafka_conf_log_to_ms(conf);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, cap);
    if (!rk) rd_kafka_conf_destroy(conf); /* rd_kafka_new took it only on success */
    return rk;
}

bool kafka_worker_start(kafka_worker *w, const kafka_producer_options *opt, const char *topic, void *(*fn)(void *),
                        void *arg, char *err, size_t cap)
{
    memset(w, 0, sizeof *w);
    if (!(w->rk = kafka_producer_new(opt, err, cap))) return false;
    w->topic = strdup(topic);
    if (!w->topic || pthread_create(&w->thread, NULL, fn, arg) != 0) {
        snprintf(err, cap, "cannot start the thread");
        rd_kafka_destroy(w->rk);
        free(w->topic);
        return false;
    }
    return true;
}

void kafka_worker_stop(kafka_worker *w)
{
    atomic_store(&w->stop, true);
    pthread_join(w->thread, NULL);
    rd_kafka_flush(w->rk, 5000);
    rd_kafka_destroy(w->rk);
    free(w->topic);
}
