/*
 * rules_match.c - how fast the signal rules match on one core (`make bench-rules`): RULES rules (all but
 * REGEXES of them a phrase or two of one to three words, the rest a regex) compiled into one set, matched
 * against RECORDS generated records whose "notes" field holds NOTES_KB of clinical-looking text, exactly
 * as the notifier does (rule_set_match_record over the record's JSON: the fields found, decoded, scanned).
 * Prints the compile time, the database's size, records/s and MB/s of record JSON on one core, and hits
 * per record. A benchmark prints figures; it asserts nothing.
 *
 * usage: rules_match [RULES [RECORDS [NOTES_KB [REGEXES [TERM_EVERY]]]]]   (defaults 1000 5000 20 10 4000: one word
 * in TERM_EVERY of the notes is a term of some rule, about one hit per record)
 */
#include "notify/rules.h"

#include "base/json_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const words[] = {
    "patient", "reports",  "pain",       "chest",     "since",    "yesterday", "denies",   "fever",      "cough",
    "history", "of",       "diabetes",   "managed",   "with",     "metformin", "blood",    "pressure",   "heart",
    "rate",    "normal",   "exam",       "lungs",     "clear",    "abdomen",   "soft",     "non",        "tender",
    "plan",    "continue", "follow",     "up",        "in",       "two",       "weeks",    "nausea",     "vomiting",
    "mild",    "moderate", "severe",     "left",      "right",    "knee",      "shoulder", "swelling",   "the",
    "and",     "a",        "to",         "was",       "is",       "for",       "on",       "at",         "after",
    "walking", "sleep",    "poor",       "anxiety",   "stress",   "lab",       "glucose",  "elevated",   "within",
    "range",   "referral", "cardiology", "neurology", "headache", "dizziness", "rash",     "assessment", "stable"};
enum { NWORDS = sizeof words / sizeof words[0] };

/* Terms of the rules: made-up clinical-sounding words, a few of which the notes contain now and then. */
static void term(uint64_t *s, char *out, size_t cap)
{
    static const char *const syl[] = {"ka",  "lo",  "mir", "zen", "tor", "vas", "pul", "nep", "hex", "dra",
                                      "qui", "bel", "sor", "tan", "gri", "mo",  "rex", "fal", "dun", "ost"};
    int n = 2 + (int)(ms_splitmix64(s) % 3);
    size_t len = 0;
    for (int i = 0; i < n && len + 4 < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s", syl[ms_splitmix64(s) % 20]);
    out[len] = 0;
}

int main(int argc, char **argv)
{
    size_t nrules = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000;
    size_t nrecords = argc > 2 ? strtoul(argv[2], NULL, 10) : 5000;
    size_t notes_kb = argc > 3 ? strtoul(argv[3], NULL, 10) : 20;
    size_t nregex = argc > 4 ? strtoul(argv[4], NULL, 10) : 10;
    uint64_t term_every = argc > 5 ? strtoull(argv[5], NULL, 10) : 4000;
    if (nregex > nrules) nregex = nrules;
    uint64_t seed = 42;

    /* the rules */
    rule_def *defs = ms_calloc(nrules, sizeof *defs);
    const rule_def **ptr = ms_calloc(nrules, sizeof *ptr);
    buf json = {0};
    char t1[64], t2[64];
    for (size_t i = 0; i < nrules; i++) {
        json.len = 0;
        term(&seed, t1, sizeof t1);
        term(&seed, t2, sizeof t2);
        if (i < nrules - nregex) {
            buf_printf(&json, "{\"name\":\"r%zu\",\"fields\":[\"notes\"],\"any\":[\"%s %s\",\"%s\"]}", i, t1,
                       words[ms_splitmix64(&seed) % NWORDS], t2);
        } else { /* a few regexes: a term and a number, a choice of words */
            buf_printf(
                &json,
                "{\"name\":\"x%zu\",\"fields\":[\"notes\"],\"regex\":\"\\\\b%s\\\\s+(level|score)\\\\s*[>=]\\\\s*"
                "[0-9]{2,3}\\\\b\"}",
                i, t1);
        }
        ms_err e;
        if (rule_parse(json.data, json.len, &defs[i], &e) != MS_OK) {
            fprintf(stderr, "rule %zu: %s\n", i, e.msg);
            return 1;
        }
        ptr[i] = &defs[i];
    }
    double t0 = ms_mono_s();
    rule_set *rs;
    ms_err e;
    if (rule_set_compile(ptr, nrules, &rs, &e) != MS_OK) {
        fprintf(stderr, "compile: %s\n", e.msg);
        return 1;
    }
    double compile_s = ms_mono_s() - t0;

    /* the records: JSON objects with a NOTES_KB "notes" field; one word in TERM_EVERY is a rule's term */
    buf *recs = ms_calloc(nrecords, sizeof *recs);
    size_t total = 0;
    for (size_t i = 0; i < nrecords; i++) {
        buf *b = &recs[i];
        buf_printf(b,
                   "{\"record_id\":\"b%zu\",\"name\":\"Pat %zu\",\"dob\":\"1970-01-01\",\"type\":\"note\",\"notes\":\"",
                   i, i);
        size_t start = b->len;
        while (b->len - start < notes_kb * 1024) {
            uint64_t r = ms_splitmix64(&seed);
            if (r % term_every == 0) {
                const rule_def *d = &defs[(r >> 20) % nrules];
                if (d->nany) buf_puts(b, d->any[1]);
            } else {
                buf_puts(b, words[(r >> 8) % NWORDS]);
            }
            buf_putc(b, (r >> 40) % 12 == 0 ? '.' : ' ');
        }
        buf_puts(b, "\"}");
        total += b->len;
    }

    rule_scratch *sc = rule_scratch_new();
    if (rule_scratch_fit(sc, rs, &e) != MS_OK) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    size_t hits = 0;
    t0 = ms_mono_s();
    for (size_t i = 0; i < nrecords; i++) {
        const rule_hit *h;
        hits += rule_set_match_record(rs, sc, "note", 4, recs[i].data, recs[i].len, &h);
    }
    double s = ms_mono_s() - t0;
    /* the same notes handed over as decoded text (no JSON to scan): Hyperscan's share of the time */
    size_t hits_text = 0;
    t0 = ms_mono_s();
    for (size_t i = 0; i < nrecords; i++) {
        const char *notes = strstr(recs[i].data, "\"notes\":\"") + 9;
        rule_text t = {"notes", 5, notes, (size_t)(recs[i].data + recs[i].len - 2 - notes)};
        const rule_hit *h;
        hits_text += rule_set_match_texts(rs, sc, "note", 4, &t, 1, &h);
    }
    double s_text = ms_mono_s() - t0;
    printf("rules %zu (%zu regexes): compiled in %.3f s, database %.1f KiB\n", nrules, nregex, compile_s,
           (double)rule_set_bytes(rs) / 1024);
    printf("records %zu of %.1f KB (notes %zu KiB): %.3f s on one core = %.0f records/s, %.0f MB/s of record JSON "
           "(%.0f records/min)\n",
           nrecords, (double)total / (double)nrecords / 1000, notes_kb, s, (double)nrecords / s,
           (double)total / s / 1e6, (double)nrecords / s * 60);
    printf("hits %zu (%.2f per record)\n", hits, (double)hits / (double)nrecords);
    printf("the notes alone, as decoded text: %.0f MB/s (%zu hits): JSON scanning and decoding take the rest\n",
           (double)total / s_text / 1e6, hits_text);
    rule_scratch_free(sc);
    rule_set_free(rs);
    for (size_t i = 0; i < nrecords; i++)
        buf_free(&recs[i]);
    free(recs);
    for (size_t i = 0; i < nrules; i++)
        rule_def_free(&defs[i]);
    free(defs);
    free(ptr);
    buf_free(&json);
    return 0;
}
