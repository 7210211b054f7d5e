/*
 * unit_store.h - read helpers shared by the store and writer tests: each opens a read transaction,
 * reads one thing, closes it, and fails the test on any error other than "not found".
 */
#ifndef MS_TEST_UNIT_STORE_H
#define MS_TEST_UNIT_STORE_H

#include "unit.h"

#include "store.h"

static inline store_read *unit_rbegin(store *s)
{
    store_read *r;
    ms_err e;
    if (store_read_begin(s, &r, &e) != MS_OK) fail_msg("read begin: %s", e.msg);
    return r;
}

static inline bool unit_record_at(store *s, const char *rid, int64_t as_of, record_version *rv)
{
    store_read *r = unit_rbegin(s);
    bool found = false;
    ms_err e;
    ms_code rc = store_record_at(r, rid, strlen(rid), as_of, rv, &found, &e);
    store_read_end(r);
    if (rc != MS_OK) fail_msg("store_record_at: %s", e.msg);
    return found;
}

static inline bool unit_patient_at(store *s, arena *mem, const patient_id *pid, int64_t as_of, patient_version *pv)
{
    store_read *r = unit_rbegin(s);
    bool found = false;
    ms_err e;
    ms_code rc = store_patient_at(r, pid, as_of, pv, mem, &found, &e);
    store_read_end(r);
    if (rc != MS_OK) fail_msg("store_patient_at: %s", e.msg);
    return found;
}

#endif
