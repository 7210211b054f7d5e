/*
 * bench_words.h - what the micro-benchmarks (bench/) make clinical-looking text from: a list of words
 * and a seeded generator, so that every benchmark's text has the same statistics (and compresses alike).
 * Synthetic only; nothing real is read.
 */
#ifndef MS_BENCH_WORDS_H
#define MS_BENCH_WORDS_H

#include "base/util.h"

static const char *const words[] = {
    "patient", "reports", "mild",   "pain",     "in", "the",        "left", "knee",   "since",    "two",
    "weeks",   "denies",  "fever",  "chills",   "or", "weight",     "loss", "blood",  "pressure", "stable",
    "on",      "current", "dose",   "follow",   "up", "advised",    "labs", "within", "normal",   "limits",
    "history", "of",      "asthma", "allergic", "to", "penicillin", "no",   "acute",  "distress", "noted"};

static uint64_t rng_state = 12345;

static inline uint64_t next(void) { return ms_splitmix64(&rng_state); }

#endif
