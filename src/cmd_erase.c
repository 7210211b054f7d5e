/*
 * cmd_erase.c - `medstream erase --data DIR --reason TEXT PATIENT_ID`: a patient's erasure offline, the
 * same erasure and audit entry as DELETE /v1/patients/{id} (ingest/erasure.h), committed by this process
 * on a store no server holds; it prints the certificate (JSON) on standard output.
 *
 * A server killed (or crashed) leaves its exports in DIR/exports, PHI in the clear, for its next start to
 * remove; no server holds DIR here, so the erasure removes them too (export_jobs_remove_left), as the
 * server's withdraws its own, and the certificate counts them ("exports_withdrawn").
 *
 * Never: erase without the audit entry, leave DIR/exports behind, or print anything of the patient but its id.
 */
#include "commands.h"

#include "base/options.h"
#include "export/export_jobs.h"
#include "ingest/erasure.h"
#include "pipeline/identity.h"
#include "store/store.h"

#include <stdio.h>
#include <string.h>

int cmd_erase(int argc, char **argv)
{
    const char *data = NULL, *reason = NULL;
    /* clang-format off */
    const option opts[] = {
        {.name = "--data", .type = OPT_STRING, .target = &data, .required = true, .metavar = "DIR",
         .help = "data directory"},
        {.name = "--reason", .type = OPT_STRING, .target = &reason, .required = true, .metavar = "TEXT",
         .help = "why (kept in the audit entry: it must hold no PHI), 1-500 characters"},
        {0},
    };
    /* clang-format on */
    const options_command cmd = {
        "erase", "medstream erase --data DIR --reason TEXT PATIENT_ID",
        "Erase a patient (the right to be forgotten) in a store no server holds (with one running,\n"
        "DELETE /v1/patients/PATIENT_ID through it): its PHI, identity, history and public copies\n"
        "leave the store and its data key is overwritten in place, so no byte of it stays readable\n"
        "in DIR; the sinks remove it downstream when they next run. Audited with the reason. Prints\n"
        "the erasure certificate. Erasing again is a no-op that prints the certificate again.",
        opts};
    options_args a;
    int code;
    if (!options_parse_command(&cmd, argc, argv, 2, 1, &a, stdout, stderr, &code)) {
        options_args_free(&a);
        return code;
    }
    erasure c = {.reason = reason, .role = "local", .client = "local", .resource = "medstream erase"};
    const char *problem = erasure_reason_problem(reason, strlen(reason));
    if (a.npos != 1 || !patient_id_parse(a.pos[0], strlen(a.pos[0]), &c.pid)) {
        options_args_free(&a);
        return usage_error("erase", "expected one PATIENT_ID (a UUID)");
    }
    options_args_free(&a);
    if (problem) {
        fprintf(stderr, "medstream erase: --reason %s\n", problem);
        return 2;
    }
    if (!data_dir_ready("erase", data)) return 1;
    char actor[96];
    local_actor(actor, sizeof actor);
    c.user = actor;
    store *s;
    ms_err e = {0};
    store_options so = {.owner = "erase"};
    if (store_open(&s, data, &so, &e) != MS_OK) {
        fprintf(stderr, "medstream erase: %s%s\n", e.msg,
                e.code == MS_ECONFLICT ? " (erase through that server: DELETE /v1/patients/PATIENT_ID)" : "");
        return 1;
    }
    store_write *w;
    ms_code rc = store_write_begin(s, &w, &e);
    if (rc == MS_OK && (rc = erasure_apply(&c, w, &e)) != MS_OK) store_write_abort(w);
    if (rc == MS_OK) rc = store_write_commit(w, NULL, &e);
    code = 1;
    uint32_t withdrawn = 0;
    if (rc != MS_OK) {
        fprintf(stderr, "medstream erase: the patient was not erased: %s\n", e.msg);
    } else if (c.not_found) {
        fprintf(stderr, "medstream erase: no such patient in %s\n", data);
    } else if (export_jobs_remove_left(data, &withdrawn, &e) != MS_OK) {
        fprintf(stderr,
                "medstream erase: erased, but the exports a server left (PHI in the clear) are not removed: %s\n",
                e.msg);
    } else {
        store_read *r;
        buf out = {0};
        buf_putc(&out, '{');
        if ((rc = store_read_begin(s, &r, &e)) == MS_OK) {
            /* offline: the events as the notifier left them (the counters follow at the next start) */
            erasure_view v = {.view = "events", .sink = "notify"};
            rc = erasure_certificate(s, r, &c.pid, &c.report.mark, &v, 1, &out, &e);
            store_read_end(r);
        }
        if (rc == MS_OK) {
            printf("%s,\"erased_by\":\"%s\",\"already_erased\":%s,\"records\":%llu,\"record_versions\":%llu,"
                   "\"patient_versions\":%llu,\"exports_withdrawn\":%u}\n",
                   out.data, actor, c.report.already ? "true" : "false", (unsigned long long)c.report.records,
                   (unsigned long long)c.report.record_versions, (unsigned long long)c.report.patient_versions,
                   withdrawn);
            code = 0;
        } else {
            fprintf(stderr, "medstream erase: erased, but the certificate could not be read: %s\n", e.msg);
        }
        buf_free(&out);
    }
    store_close(s);
    return code;
}
