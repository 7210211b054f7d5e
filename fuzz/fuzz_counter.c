/*
 * fuzz_counter.c - libFuzzer target for the counter definitions (views/counter_def.h) and the trusted
 * member splitter the counters read record bodies with (base/json_scan.h, json_split_object).
 *
 * Beyond "no crash, no sanitizer report", on every input:
 *   - a definition is accepted or refused with a message that starts with "counter: ";
 *   - an accepted one's canonical form parses again to the same canonical form, its name is 1-64 of
 *     A-Z a-z 0-9 _ . -, its max_window a multiple of its resolution within the bucket limit;
 *   - on any input json_scan_object accepts, json_split_object finds the same members.
 * Build and run: make fuzz-counter FUZZ_SECONDS=20 (seeds: fuzz/corpus_counter/).
 */
#include "fuzz_check.h"
#include "base/json_scan.h"
#include "views/counter_def.h"

#include <ctype.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    counter_def d;
    ms_err e = {0};
    if (counter_def_parse(&d, text, size, &e) == MS_OK) {
        size_t nl = strlen(d.name);
        CHECK(nl >= 1 && nl <= COUNTER_NAME_MAX);
        for (size_t i = 0; i < nl; i++)
            CHECK(isalnum((unsigned char)d.name[i]) || strchr("_.-", d.name[i]));
        CHECK(d.resolution_us >= 1000000 && d.max_window_us % d.resolution_us == 0);
        CHECK(d.max_window_us / d.resolution_us <= COUNTER_BUCKETS_MAX);
        buf a = {0}, b = {0};
        counter_def_json(&d, &a);
        counter_def again;
        CHECK(counter_def_parse(&again, a.data, a.len, &e) == MS_OK);
        counter_def_json(&again, &b);
        CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
        counter_def_free(&again);
        counter_def_free(&d);
        buf_free(&a);
        buf_free(&b);
    } else {
        CHECK(strncmp(e.msg, "counter: ", 9) == 0);
    }
    json_member m1[64], m2[64];
    json_error je;
    int n1 = json_scan_object(text, size, m1, 64, &je);
    int n2 = json_split_object(text, size, m2, 64);
    if (n1 >= 0) {
        CHECK(n2 == n1);
        for (int i = 0; i < n1; i++)
            CHECK(m1[i].key == m2[i].key && m1[i].key_len == m2[i].key_len && m1[i].val == m2[i].val &&
                  m1[i].val_len == m2[i].val_len && m1[i].type == m2[i].type);
    }
    return 0;
}
