/*
 * seal_records.c - what encryption at rest costs per record on one core (src/store/seal.h), the part of
 * ingest and of reads that sealing adds: seal_record (AES-256-GCM) of a 20 KB and a 200 B record,
 * seal_open_record of the same, seal_open_range of a 100-byte value inside a 20 KB record, and the
 * identity MAC (HMAC-SHA256 with a prepared key, identity.h) that finds a record's data key. A thread's two
 * contexts keep the keys of their last calls (seal.c): the 200 B seal is timed under one key, as the writer's
 * open and seal of one patient's versions run, and under three keys in turn, each call setting its key, as
 * records of different patients run; and the three seals the writer makes for a new patient (its identity
 * under its new key, that key wrapped under the store's, its first version under its key again). And a
 * patient id made from its number and read back (identity.h: four HMAC rounds each way). Medians of 5
 * rounds. Build and run: make bench-seal
 */
#include "pipeline/identity.h"
#include "store/seal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

enum { ROUNDS = 5 };
static unsigned char key[32], key2[32], key3[32], iv[12], in[20480], out[20480 + SEAL_OVERHEAD], back[20480];

/* One operation, n times per round: the median over ROUNDS of microseconds per operation. */
static double time_op(int op, size_t len, int n)
{
    double per[ROUNDS];
    patient_id_key mk;
    patient_id_key_init(&mk, key);
    unsigned char mac[32];
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_s();
        for (int i = 0; i < n; i++) {
            bool ok = true;
            iv[11] = (unsigned char)i;
            if (op == 0) ok = seal_record(key, iv, in, len, out);
            if (op == 1) ok = seal_open_record(key, out, len, back);
            if (op == 2) ok = seal_open_range(key, out, 9000, out + SEAL_IV + 8992, 100, back);
            if (op == 3) prepared_hmac(&mk, in, 26, mac);
            if (op == 4) ok = seal_record(i % 3 == 0 ? key : i % 3 == 1 ? key2 : key3, iv, in, len, out);
            if (op == 6) { /* a new patient: its own key (a new one each time), and the store's */
                unsigned char data_key[32], wrapped[SEAL_WRAPPED];
                memcpy(data_key, key3, sizeof data_key);
                memcpy(data_key, &i, sizeof i);
                ok = seal_record(data_key, iv, in, len, out) && seal_wrap(key, (uint64_t)i, data_key, wrapped) &&
                     seal_record(data_key, iv, in, len, out);
            }
            if (op == 5) {
                patient_id pid;
                uint64_t number = 0;
                patient_id_from_number(&mk, (uint64_t)i, &pid);
                ok = patient_id_to_number(&mk, &pid, &number) && number == (uint64_t)i;
            }
            if (!ok) {
                fprintf(stderr, "seal_records: operation %d failed\n", op);
                exit(1);
            }
        }
        per[r] = (now_s() - t0) / n * 1e6;
    }
    qsort(per, ROUNDS, sizeof per[0], cmp);
    return per[ROUNDS / 2];
}

int main(void)
{
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (unsigned char)("{\"notes\":\"lorem ipsum dolor sit amet\"}"[i % 38]);
    memset(key, 7, sizeof key);
    memset(key2, 8, sizeof key2);
    memset(key3, 9, sizeof key3);
    seal_init();
    double s20 = time_op(0, 20480, 20000), s02 = time_op(0, 200, 200000), k02 = time_op(4, 200, 200000);
    seal_record(key, iv, in, 20480, out);
    double o20 = time_op(1, 20480, 20000);
    double rng = time_op(2, 0, 200000), mac = time_op(3, 0, 500000), pid = time_op(5, 0, 200000);
    double fresh = time_op(6, 200, 100000);
    printf("seal 20 KB record:        %6.2f us (%4.0f MB/s)\n", s20, 20480 / s20);
    printf("seal 200 B record:        %6.2f us (the key of the call before), %.2f us (a key to set)\n", s02, k02);
    printf("open 20 KB record (GCM):  %6.2f us (%4.0f MB/s)\n", o20, 20480 / o20);
    printf("open a 100 B value (CTR): %6.2f us\n", rng);
    printf("a new patient's 3 seals:  %6.2f us (its identity and first version of 200 B, its key wrapped)\n", fresh);
    printf("identity MAC:             %6.2f us\n", mac);
    printf("patient id and back:      %6.2f us\n", pid);
    printf("at 1,000,000 records/min of 20 KB: sealing %.1f %% of one core\n", (s20 + mac) * 1e6 / 60 / 1e6 * 100);
    return 0;
}
