/*
 * bench.c: `medstream bench`, the load generator and freshness probe (contract in bench.h).
 *
 * DESIGN
 *   Options: one table in the option model of base/options.h (flag, type, default, range, help),
 *   from which defaults, validation, --help, its --config file and its section of docs/options.md
 *   come.
 *   Records: record number `seq` (0-based) fully determines its record: whether it is an update of
 *   an earlier record id, whose identity it carries (a new one or one already sent), and every
 *   field, from hashes of (seed, seq). No per-record state is kept, and a seed reproduces a run.
 *   The clinical text is generated once at start-up into a pool; a record's "notes" is a slice of
 *   it, so building a batch is a short snprintf of the small fields plus one memcpy per record.
 *   Threads: N senders (one keep-alive connection each) take batch numbers from an atomic
 *   counter, build the NDJSON body in their own buffer and POST it; a probe thread polls
 *   GET /v1/records/{id} for the sampled records of acknowledged batches until they answer 200
 *   (send-to-visible freshness; a sampled record its batch's answer says was rejected is a failure
 *   named with the server's reason, never waited for); a reader thread GETs /v1/patients/{id} for
 *   patient ids learned from the answers, paced by --read-rate (point-read latency under load). The
 *   main thread reads
 *   /metrics before and after, prints progress, and reports.
 *   Figures: every latency is kept (one double per sample); percentiles are nearest-rank on the
 *   sorted samples.
 *
 * Guarantees: the same options (with --run-id given) send byte-identical batch bodies, apart
 * from "ts", which is relative to the start time; the probe thread is serial, so a probe may
 * wait behind others: that wait is included in freshness and its maximum is reported; update
 * records re-use a record id from batches at least --connections batches earlier, so the
 * original is normally committed first; every thread is joined and every allocation freed
 * before bench_main returns.
 *
 * What it must never do: exit(), print to stdout before the final report, hold a lock across a
 * network call, or build record text with printf per byte of the body (generation must stay far
 * cheaper than the server's ingest, on the same two cores).
 */
#include "bench.h"

#include "base/kafka_client.h"
#include "base/options.h"
#include "base/thread_priority.h"
#include "base/util.h"

#include "base/http_client.h"
#include "base/http_client_url.h"
#include "pipeline/identity.h"
#include "pipeline/shard.h"

#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>
#include <time.h>
#include <unistd.h>

/* ======================================================================================== */
/* Options                                                                                  */
/* ======================================================================================== */

typedef struct {
    const char *url;
    uint64_t records;
    uint64_t size;
    uint64_t batch;
    uint64_t connections;
    double repeat_share;
    double update_share;
    uint64_t probe_every;
    uint64_t read_rate;
    uint64_t rate; /* offered load, records/min (0: as fast as the server answers) */
    const char *token;
    uint64_t seed;
    const char *run_id;
    const char *kafka_brokers; /* produce into Kafka instead of POSTing (the server consumes the topic) */
    const char *kafka_topic;
    const char *postgres; /* also probe freshness in the server's PostgreSQL sink database */
    uint64_t timeout;     /* seconds */
    bool json;
} bench_config;

static bool run_id_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

/* The rules between options, and the one option with a pattern: NULL when they hold, else what is wrong. */
static const char *bench_check(bench_config *cfg)
{
    if (cfg->run_id && !run_id_valid(cfg->run_id)) return "--run-id: use 1 to 64 of A-Z a-z 0-9 . _ -";
    if (!cfg->kafka_brokers != !cfg->kafka_topic) return "--kafka-brokers and --kafka-topic go together";
    if (cfg->batch > cfg->records) cfg->batch = cfg->records;
    return NULL;
}

/* ======================================================================================== */
/* Small utilities                                                                          */
/* ======================================================================================== */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_seconds(double s)
{
    if (s <= 0) return;
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* splitmix64 as a 64-bit mix of x. */
static inline uint64_t mix64(uint64_t x) { return ms_splitmix64(&x); }

/* A hash of (seed, stream, x): independent decisions per stream. */
static inline uint64_t hash3(uint64_t seed, uint64_t stream, uint64_t x)
{
    return mix64(mix64(seed ^ (stream * UINT64_C(0xD1B54A32D192ED03))) ^ x);
}

/* A tiny RNG (splitmix64 stream) for drawing several fields from one seed. */
typedef struct {
    uint64_t state;
} rng;

static inline uint64_t rng_next(rng *r) { return ms_splitmix64(&r->state); }

static inline uint32_t rng_below(rng *r, uint32_t n) { return (uint32_t)(rng_next(r) % n); }

static inline int rng_range(rng *r, int lo, int hi)
{ /* lo..hi inclusive */
    return lo + (int)rng_below(r, (uint32_t)(hi - lo + 1));
}

static inline double unit_interval(uint64_t h) { return (double)(h >> 11) * (1.0 / 9007199254740992.0); }

#define PICK(r, list) ((list)[rng_below((r), (uint32_t)(sizeof(list) / sizeof((list)[0])))])

/* A growable array of latency samples (milliseconds). */
typedef struct {
    double *v;
    size_t n, cap;
    bool oom;
} sample_vec;

static void samples_push(sample_vec *s, double x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        double *p = realloc(s->v, cap * sizeof *p);
        if (!p) {
            s->oom = true;
            return;
        }
        s->v = p;
        s->cap = cap;
    }
    s->v[s->n++] = x;
}

static bool samples_append(sample_vec *dst, const sample_vec *src)
{
    for (size_t i = 0; i < src->n; i++)
        samples_push(dst, src->v[i]);
    dst->oom |= src->oom;
    return !dst->oom;
}

static void samples_free(sample_vec *s)
{
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void samples_sort(sample_vec *s)
{
    if (s->n > 1) qsort(s->v, s->n, sizeof *s->v, compare_double);
}

/* Nearest-rank percentile of sorted samples; p in (0,1]. */
static double percentile_sorted(const sample_vec *s, double p)
{
    if (s->n == 0) return 0;
    double rank = p * (double)s->n;
    size_t idx = (size_t)rank;
    if ((double)idx < rank) idx++; /* ceil */
    if (idx == 0) idx = 1;
    if (idx > s->n) idx = s->n;
    return s->v[idx - 1];
}

/* ======================================================================================== */
/* Record generation                                                                        */
/* ======================================================================================== */

static const char *const first_names[] = {
    "James",   "Mary",    "Robert",  "Patricia", "John",    "Jennifer", "Michael", "Linda",    "David",    "Elizabeth",
    "William", "Barbara", "Richard", "Susan",    "Joseph",  "Jessica",  "Thomas",  "Sarah",    "Charles",  "Karen",
    "Daniel",  "Lisa",    "Matthew", "Nancy",    "Anthony", "Betty",    "Mark",    "Sandra",   "Donald",   "Ashley",
    "Steven",  "Emily",   "Andrew",  "Kimberly", "Paul",    "Donna",    "Joshua",  "Michelle", "Kenneth",  "Carol",
    "Kevin",   "Amanda",  "Brian",   "Melissa",  "Maria",   "Jose",     "Wei",     "Aisha",    "Mohammed", "Fatima",
    "Hiroshi", "Yuki",    "Olga",    "Ivan",     "Priya",   "Arjun",    "Sofia",   "Mateo",    "Chloe",    "Liam",
    "Noor",    "Omar",    "Ingrid",  "Lars",
};

static const char *const last_names[] = {
    "Smith",     "Johnson",  "Williams",  "Brown",   "Jones",    "Garcia",   "Miller",   "Davis",
    "Rodriguez", "Martinez", "Hernandez", "Lopez",   "Gonzalez", "Wilson",   "Anderson", "Thomas",
    "Taylor",    "Moore",    "Jackson",   "Martin",  "Lee",      "Perez",    "Thompson", "White",
    "Harris",    "Sanchez",  "Clark",     "Ramirez", "Lewis",    "Robinson", "Walker",   "Young",
    "Allen",     "King",     "Wright",    "Scott",   "Torres",   "Nguyen",   "Hill",     "Flores",
    "Green",     "Adams",    "Nelson",    "Baker",   "Hall",     "Rivera",   "Campbell", "Mitchell",
    "Chen",      "Wang",     "Kim",       "Patel",   "Singh",    "Khan",     "Tanaka",   "Ivanova",
    "Muller",    "Rossi",    "Silva",     "Okafor",  "Haddad",   "Larsen",   "Dubois",   "Novak",
};

static const char *const street_names[] = {
    "Oak",    "Maple",  "Cedar",    "Pine",     "Elm",       "Washington", "Lake",    "Hill",
    "Park",   "Main",   "Church",   "Sunset",   "Highland",  "Meadow",     "Forest",  "River",
    "Spring", "Walnut", "Chestnut", "Franklin", "Jefferson", "Lincoln",    "Madison", "Willow",
};

static const char *const street_suffixes[] = {"St", "Ave", "Rd", "Blvd", "Ln", "Dr", "Ct", "Way", "Pl", "Terrace"};

static const struct {
    const char *city, *state;
    int zip_base;
} cities[] = {
    {"Springfield", "IL", 62701}, {"Portland", "OR", 97201}, {"Columbus", "OH", 43201},  {"Austin", "TX", 78701},
    {"Madison", "WI", 53703},     {"Albany", "NY", 12201},   {"Denver", "CO", 80201},    {"Raleigh", "NC", 27601},
    {"Tucson", "AZ", 85701},      {"Boise", "ID", 83701},    {"Richmond", "VA", 23218},  {"Fresno", "CA", 93701},
    {"Omaha", "NE", 68101},       {"Savannah", "GA", 31401}, {"Burlington", "VT", 5401}, {"Lansing", "MI", 48901},
};

static const char *const colors[] = {"red",   "blue", "green", "yellow", "purple", "orange", "teal",   "black",
                                     "white", "pink", "gray",  "brown",  "indigo", "maroon", "silver", "gold"};

static const char *const record_types[] = {"patient", "visit", "visit", "lab", "lab", "lab", "note", "note"};

/* --- clinical text vocabulary --- */

static const char *const symptoms[] = {
    "chest pain",
    "shortness of breath",
    "intermittent headache",
    "lower back pain",
    "fatigue",
    "nausea",
    "dizziness",
    "productive cough",
    "fever and chills",
    "abdominal discomfort",
    "joint stiffness",
    "palpitations",
    "blurred vision",
    "numbness in the left hand",
    "poor appetite",
    "difficulty sleeping",
    "swelling of both ankles",
    "sore throat",
    "a rash on the forearm",
    "burning on urination",
    "wheezing",
    "night sweats",
};
static const char *const conditions[] = {
    "type 2 diabetes mellitus",
    "essential hypertension",
    "hyperlipidemia",
    "chronic obstructive pulmonary disease",
    "asthma",
    "major depressive disorder",
    "generalized anxiety disorder",
    "osteoarthritis of the knee",
    "hypothyroidism",
    "chronic kidney disease stage 3",
    "atrial fibrillation",
    "gastroesophageal reflux disease",
    "migraine without aura",
    "iron deficiency anemia",
    "community acquired pneumonia",
    "urinary tract infection",
    "obstructive sleep apnea",
    "congestive heart failure",
};
static const char *const medications[] = {
    "metformin",  "lisinopril",  "atorvastatin",     "amlodipine", "levothyroxine", "omeprazole",
    "albuterol",  "sertraline",  "metoprolol",       "furosemide", "apixaban",      "gabapentin",
    "prednisone", "amoxicillin", "insulin glargine", "losartan",
};
static const char *const frequencies[] = {
    "once daily", "twice daily", "three times daily", "at bedtime", "every eight hours as needed", "weekly"};
static const char *const lab_tests[] = {
    "hemoglobin A1c", "serum creatinine", "potassium", "sodium",   "TSH", "LDL cholesterol", "white blood cell count",
    "hemoglobin",     "platelet count",   "ALT",       "troponin", "BNP", "fasting glucose", "vitamin D",
};
static const char *const lab_findings[] = {"within normal limits", "mildly elevated",   "slightly decreased",
                                           "unchanged from prior", "markedly elevated", "borderline"};
static const char *const exam_findings[] = {
    "Lungs clear to auscultation bilaterally.",
    "Heart regular rate and rhythm, no murmurs, rubs or gallops.",
    "Abdomen soft, nontender, nondistended, bowel sounds present.",
    "No peripheral edema.",
    "Alert and oriented to person, place and time.",
    "Mild tenderness to palpation over the lumbar spine.",
    "Pupils equal, round and reactive to light.",
    "Skin warm and dry, no lesions noted.",
    "Gait steady, strength 5/5 in all extremities.",
    "Oropharynx mildly erythematous without exudate.",
};
static const char *const trends[] = {"stable",          "improving",         "worsening",
                                     "well controlled", "poorly controlled", "newly diagnosed"};
static const char *const actions[] = {"continue", "start", "increase", "decrease", "hold"};
static const char *const specialties[] = {"cardiology",  "endocrinology",    "nephrology",       "physical therapy",
                                          "pulmonology", "dermatology",      "gastroenterology", "neurology",
                                          "orthopedics", "behavioral health"};
static const char *const closings[] = {
    "Return precautions discussed.",
    "Patient verbalized understanding of the plan.",
    "Encouraged diet and exercise.",
    "Medication reconciliation completed.",
    "Questions answered to the patient's satisfaction.",
    "Care plan reviewed with family.",
};

/* Free narrative: words a clinician's note is made of, drawn at random into sentences so that
 * the text is about as compressible as real notes (not a handful of repeated templates). */
static const char *const narrative_words[] = {
    "patient",    "states",     "that",      "the",         "pain",        "started",   "after",     "while",
    "walking",    "at",         "home",      "and",         "has",         "not",       "improved",  "with",
    "rest",       "or",         "ibuprofen", "she",         "he",          "reports",   "mild",      "moderate",
    "severe",     "episodes",   "of",        "during",      "night",       "morning",   "evening",   "work",
    "exercise",   "meals",      "family",    "history",     "significant", "for",       "mother",    "father",
    "sister",     "brother",    "diabetes",  "stroke",      "cancer",      "heart",     "disease",   "no",
    "recent",     "travel",     "sick",      "contacts",    "smokes",      "half",      "pack",      "per",
    "day",        "drinks",     "alcohol",   "socially",    "lives",       "alone",     "spouse",    "children",
    "retired",    "teacher",    "driver",    "nurse",       "works",       "as",        "an",        "accountant",
    "was",        "seen",       "in",        "urgent",      "care",        "last",      "week",      "month",
    "year",       "given",      "course",    "antibiotics", "which",       "helped",    "partially", "symptoms",
    "returned",   "two",        "three",     "four",        "days",        "later",     "denies",    "fever",
    "weight",     "loss",       "gain",      "appetite",    "is",          "reduced",   "normal",    "sleep",
    "poor",       "due",        "to",        "cough",       "anxiety",     "stress",    "job",       "concerned",
    "about",      "test",       "results",   "wants",       "discuss",     "options",   "prefers",   "avoid",
    "surgery",    "if",         "possible",  "agrees",      "physical",    "therapy",   "trial",     "new",
    "medication", "side",       "effects",   "reviewed",    "including",   "dizziness", "nausea",    "headache",
    "rash",       "swelling",   "left",      "right",       "knee",        "shoulder",  "hip",       "wrist",
    "ankle",      "lower",      "upper",     "back",        "neck",        "chest",     "abdomen",   "worse",
    "better",     "when",       "lying",     "flat",        "standing",    "climbing",  "stairs",    "lifting",
    "bending",    "occasional", "frequent",  "constant",    "sharp",       "dull",      "aching",    "burning",
    "radiating",  "down",       "arm",       "leg",         "into",        "jaw",       "groin",
};

/* Appends one sentence of clinical text (plain ASCII: no quote, backslash or control byte, so
 * any slice of the pool is a valid JSON string body). Returns bytes written (< cap). */
static size_t clinical_sentence(rng *r, char *dst, size_t cap)
{
    int n = 0;
    switch (rng_below(r, 14)) {
    case 0:
        n = snprintf(dst, cap, "Patient reports %s for the past %d %s. ", PICK(r, symptoms), rng_range(r, 2, 14),
                     rng_below(r, 2) ? "days" : "weeks");
        break;
    case 1:
        n = snprintf(dst, cap, "History of %s, managed with %s %d mg %s. ", PICK(r, conditions), PICK(r, medications),
                     5 * rng_range(r, 1, 100), PICK(r, frequencies));
        break;
    case 2:
        n = snprintf(dst, cap,
                     "Vital signs: blood pressure %d/%d mmHg, heart rate %d bpm, temperature "
                     "%d.%d C, oxygen saturation %d%% on room air. ",
                     rng_range(r, 100, 170), rng_range(r, 60, 100), rng_range(r, 52, 118), rng_range(r, 36, 38),
                     rng_range(r, 0, 9), rng_range(r, 90, 100));
        break;
    case 3:
        n = snprintf(dst, cap, "Lab: %s %s at %d.%d. ", PICK(r, lab_tests), PICK(r, lab_findings), rng_range(r, 0, 250),
                     rng_range(r, 0, 9));
        break;
    case 4: n = snprintf(dst, cap, "%s ", PICK(r, exam_findings)); break;
    case 5: n = snprintf(dst, cap, "Assessment: %s, %s. ", PICK(r, conditions), PICK(r, trends)); break;
    case 6:
        n = snprintf(dst, cap, "Plan: %s %s %d mg %s. ", PICK(r, actions), PICK(r, medications),
                     5 * rng_range(r, 1, 100), PICK(r, frequencies));
        break;
    case 7: n = snprintf(dst, cap, "Referral placed to %s. ", PICK(r, specialties)); break;
    case 8: n = snprintf(dst, cap, "Follow up in %d weeks or sooner if symptoms worsen. ", rng_range(r, 1, 12)); break;
    case 9: n = snprintf(dst, cap, "Denies %s. ", PICK(r, symptoms)); break;
    case 10: n = snprintf(dst, cap, "%s ", PICK(r, closings)); break;
    default: { /* narrative: "Patient" and 7 to 23 random words */
        size_t len = 0;
        int words = rng_range(r, 8, 24);
        for (int w = 0; w < words; w++) {
            const char *word = w == 0 ? "Patient" : PICK(r, narrative_words);
            int m = snprintf(dst + len, cap - len, "%s%s", word, w + 1 < words ? " " : ". ");
            if (m < 0 || (size_t)m >= cap - len) return cap - 1;
            len += (size_t)m;
        }
        return len;
    }
    }
    if (n < 0) return 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}

enum {
    RECORD_HEADER_MAX = 640, /* all fields before "notes" text, worst case with a 64-byte run id */
    VECTOR_MIN_SIZE = 4096,  /* records of this size or more are sent as pieces (sender_main) */
    MIN_NOTES = 16,          /* "notes" bytes when --size leaves no room */
    NOTES_SLACK = 512,       /* room to start a slice at a sentence (sentences are < 200 B) */
};

enum {
    STREAM_UPDATE = 1,
    STREAM_UPDATE_TARGET,
    STREAM_REPEAT,
    STREAM_REPEAT_TARGET,
    STREAM_IDENTITY,
    STREAM_RECORD,
    STREAM_KIND,
    STREAM_NOTES_POOL
};

typedef struct bench_gen {
    uint64_t seed;
    double repeat_share, update_share;
    uint64_t batch;
    uint64_t update_lag; /* update targets lie at least this many records before their batch */
    uint64_t size;
    const char *run_id;
    char *notes; /* the text pool */
    size_t notes_len;
    time_t start_time; /* "ts" values are at most 30 days before this */
} record_gen;

static bool gen_setup(record_gen *g, uint64_t seed, double repeat_share, double update_share, uint64_t batch,
                      uint64_t update_lag, uint64_t size, const char *run_id)
{
    memset(g, 0, sizeof *g);
    g->seed = seed;
    g->repeat_share = repeat_share;
    g->update_share = update_share;
    g->batch = batch;
    g->update_lag = update_lag;
    g->size = size;
    g->run_id = run_id;
    g->start_time = time(NULL);
    size_t pool = (size_t)8 << 20;
    if (pool < 2 * size + 4 * NOTES_SLACK) pool = 2 * size + 4 * NOTES_SLACK;
    g->notes = malloc(pool + 1);
    if (!g->notes) return false;
    rng r = {hash3(seed, STREAM_NOTES_POOL, 0)};
    size_t len = 0;
    while (len < pool)
        len += clinical_sentence(&r, g->notes + len, pool + 1 - len);
    g->notes_len = pool;
    g->notes[pool] = '\0';
    return true;
}

static bool gen_init(record_gen *g, const bench_config *cfg, const char *run_id)
{
    return gen_setup(g, cfg->seed, cfg->repeat_share, cfg->update_share, cfg->batch, cfg->batch * cfg->connections,
                     cfg->size, run_id);
}

static void gen_free(record_gen *g)
{
    free(g->notes);
    g->notes = NULL;
}

/* Whether record seq re-uses an earlier record id, and which. */
static bool gen_is_update(const record_gen *g, uint64_t seq, uint64_t *target)
{
    uint64_t batch_start = seq - seq % g->batch;
    if (g->update_share <= 0 || batch_start <= g->update_lag) return false;
    if (unit_interval(hash3(g->seed, STREAM_UPDATE, seq)) >= g->update_share) return false;
    *target = hash3(g->seed, STREAM_UPDATE_TARGET, seq) % (batch_start - g->update_lag);
    return true;
}

/* The record number whose id record seq carries (itself unless it is an update). */
static uint64_t gen_origin(const record_gen *g, uint64_t seq)
{
    uint64_t target;
    while (gen_is_update(g, seq, &target))
        seq = target; /* targets strictly decrease */
    return seq;
}

/* The identity key of record seq: the number of the first record that carried this identity. */
static uint64_t gen_identity(const record_gen *g, uint64_t seq)
{
    for (;;) {
        seq = gen_origin(g, seq);
        if (seq == 0 || g->repeat_share <= 0 || unit_interval(hash3(g->seed, STREAM_REPEAT, seq)) >= g->repeat_share)
            return seq;
        seq = hash3(g->seed, STREAM_REPEAT_TARGET, seq) % seq; /* an earlier record's identity */
    }
}

static bool gen_is_probe_sample(const record_gen *g, uint64_t seq, uint64_t probe_every)
{
    uint64_t unused;
    return probe_every && seq % probe_every == 0 && !gen_is_update(g, seq, &unused);
}

static void gen_record_id(const record_gen *g, uint64_t seq, char *dst, size_t cap)
{
    snprintf(dst, cap, "%s-%010" PRIu64, g->run_id, seq);
}

static int days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : days[month - 1];
}

void bench_identity(uint64_t seed, uint64_t identity, char *name, size_t cap, int *year, int *month, int *day)
{
    /* the same first draws, in the same order, as gen_record's */
    rng who = {hash3(seed, STREAM_IDENTITY, identity)};
    const char *first = PICK(&who, first_names);
    const char *last = PICK(&who, last_names);
    *year = rng_range(&who, 1930, 2020);
    *month = rng_range(&who, 1, 12);
    *day = rng_range(&who, 1, days_in_month(*year, *month));
    snprintf(name, cap, "%s %s %" PRIu64, first, last, identity + 1);
}

/* Record seq's head: its line (NDJSON, or csv: a CSV row of the columns of BENCH_CSV_HEADER with the same values)
 * up to its "notes" text, at dst (cap bytes available, cap >= RECORD_HEADER_MAX); the text is *notes_len bytes of
 * the pool at *notes, and RECORD_TAIL (or CSV_TAIL) ends the line. Returns the head's length, 0 if it did not fit. */
#define RECORD_TAIL "\"}\n"
#define CSV_TAIL "\"\n"
static size_t gen_record_head(const record_gen *g, uint64_t seq, bool csv, char *dst, size_t cap, const char **notes_at,
                              size_t *notes_len)
{
    uint64_t origin = gen_origin(g, seq);
    uint64_t identity = gen_identity(g, seq);

    rng who = {hash3(g->seed, STREAM_IDENTITY, identity)};
    const char *first = PICK(&who, first_names);
    const char *last = PICK(&who, last_names);
    int year = rng_range(&who, 1930, 2020);
    int month = rng_range(&who, 1, 12);
    int day = rng_range(&who, 1, days_in_month(year, month));
    int ssn_area = rng_range(&who, 1, 899);
    if (ssn_area == 666) ssn_area = 667;
    int ssn_group = rng_range(&who, 1, 99), ssn_serial = rng_range(&who, 1, 9999);
    int phone_area = rng_range(&who, 201, 989), phone_exchange = rng_range(&who, 200, 999);
    int phone_line = rng_range(&who, 0, 9999), house = rng_range(&who, 1, 9899);
    const char *street = PICK(&who, street_names);
    const char *suffix = PICK(&who, street_suffixes);
    unsigned city = rng_below(&who, (uint32_t)(sizeof cities / sizeof cities[0]));
    int zip = cities[city].zip_base + rng_range(&who, 0, 40);

    rng kind = {hash3(g->seed, STREAM_KIND, origin)}; /* an update keeps its record's type */
    const char *type = PICK(&kind, record_types);

    /* a favourite colour belongs to the patient; about 1 record in 20 reports a new one */
    const char *color = PICK(&who, colors);
    rng rec = {hash3(g->seed, STREAM_RECORD, seq)};
    if (rng_below(&rec, 20) == 0) color = PICK(&rec, colors);
    time_t ts = g->start_time - (time_t)rng_below(&rec, 30u * 86400u);
    struct tm tm;
    gmtime_r(&ts, &tm);

    /* the same values in both forms (the text pool and the names hold no '"' and no '\\'); the notes'
     * length and slice come from the NDJSON form, so that the CSV row holds the same text */
    static const char json_form[] = "{\"record_id\":\"%s-%010" PRIu64 "\",\"name\":\"%s %s %" PRIu64 "\","
                                    "\"dob\":\"%04d-%02d-%02d\",\"ssn\":\"%03d-%02d-%04d\","
                                    "\"phone\":\"+1-%03d-%03d-%04d\",\"address\":\"%d %s %s, %s, %s %05d\","
                                    "\"favorite_color\":\"%s\",\"type\":\"%s\","
                                    "\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02dZ\",\"notes\":\"";
    static const char csv_form[] = "%s-%010" PRIu64 ",%s %s %" PRIu64 ",%04d-%02d-%02d,%03d-%02d-%04d,"
                                   "+1-%03d-%03d-%04d,\"%d %s %s, %s, %s %05d\",%s,%s,"
                                   "%04d-%02d-%02dT%02d:%02d:%02dZ,\"";
    int json_n = 0, n = 0;
    for (int form = 0; form <= (csv ? 1 : 0); form++) {
        n = snprintf(dst, cap, form ? csv_form : json_form, g->run_id, origin, first, last, identity + 1, year, month,
                     day, ssn_area, ssn_group, ssn_serial, phone_area, phone_exchange, phone_line, house, street,
                     suffix, cities[city].city, cities[city].state, zip, color, type, tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        if (n < 0 || (size_t)n >= cap) return 0;
        if (!form) json_n = n;
    }
    size_t notes = g->size > (size_t)json_n + 3 + MIN_NOTES ? g->size - (size_t)json_n - 3 : MIN_NOTES;

    /* A slice of the pool that starts a sentence (after ". "), as a note would. */
    size_t off = (size_t)(rng_next(&rec) % (g->notes_len - notes - NOTES_SLACK));
    size_t stop = off + NOTES_SLACK - 2;
    while (off < stop && !(g->notes[off] == '.' && g->notes[off + 1] == ' '))
        off++;
    *notes_at = g->notes + off + 2;
    *notes_len = notes;
    return (size_t)n;
}

/* Writes record seq as one NDJSON line of about g->size bytes at dst (cap bytes available,
 * cap >= max(size, RECORD_HEADER_MAX + MIN_NOTES + 3)), or (csv) as one CSV row of the columns of
 * BENCH_CSV_HEADER with the same values. Returns its length, 0 if it did not fit. */
static size_t gen_record_as(const record_gen *g, uint64_t seq, bool csv, char *dst, size_t cap)
{
    const char *notes;
    size_t notes_len, used = gen_record_head(g, seq, csv, dst, cap, &notes, &notes_len);
    const char *tail = csv ? CSV_TAIL : RECORD_TAIL;
    size_t tail_len = strlen(tail);
    if (used == 0 || used + notes_len + tail_len > cap) return 0;
    memcpy(dst + used, notes, notes_len);
    memcpy(dst + used + notes_len, tail, tail_len);
    return used + notes_len + tail_len;
}

static size_t gen_record(const record_gen *g, uint64_t seq, char *dst, size_t cap)
{
    return gen_record_as(g, seq, false, dst, cap);
}

bench_gen *bench_gen_new(uint64_t seed, uint64_t size, double repeat_share, double update_share, uint64_t batch,
                         const char *run_id)
{
    bench_gen *g = malloc(sizeof *g);
    if (g && !gen_setup(g, seed, repeat_share, update_share, batch, batch, size, run_id)) {
        free(g);
        g = NULL;
    }
    return g;
}

size_t bench_gen_record(const bench_gen *g, uint64_t seq, bool csv, char *dst, size_t cap)
{
    return gen_record_as(g, seq, csv, dst, cap);
}

void bench_gen_free(bench_gen *g)
{
    if (!g) return;
    gen_free(g);
    free(g);
}

/* ======================================================================================== */
/* Shared run state                                                                         */
/* ======================================================================================== */

enum {
    ID_MAX = 96,
    PATIENT_ID_MAX = 64,
    PATIENT_RING = 4096,
    PATIENT_IDS_PER_BATCH = 8,
    MAX_ERROR_MESSAGES = 20,
    MAX_CONSECUTIVE_FAILURES = 5
};

#define PROBE_DEADLINE_S 30.0 /* a sampled record not visible this long after its ack: failure */
#define PROBE_POLL_S 0.0005   /* pause between GETs of a record not yet visible */

typedef struct {
    char record_id[ID_MAX];
    double sent_at;  /* monotonic seconds just before its batch was sent */
    double acked_at; /* when its batch's answer arrived (and it was queued for the probe) */
    uint32_t item;   /* its place in its batch */
    char status[12]; /* the batch answer's status for it: "created", "updated", "duplicate" */
} probe_entry;

/* A queue of probes between threads: pushed by senders (or the HTTP prober), popped by one prober. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    probe_entry *entries;
    size_t head, len, cap;
    bool closed; /* nothing more will be pushed */
} probe_queue;

static void probe_queue_init(probe_queue *q)
{
    memset(q, 0, sizeof *q);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
}

static void probe_queue_free(probe_queue *q)
{
    free(q->entries);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
}

/* False when out of memory (nothing pushed). */
static bool probe_queue_push(probe_queue *q, const probe_entry *entries, size_t n)
{
    if (n == 0) return true;
    bool ok = true;
    pthread_mutex_lock(&q->mu);
    if (q->head > 0 && q->head == q->len) q->head = q->len = 0;
    if (q->len + n > q->cap) {
        size_t live = q->len - q->head;
        if (live && q->head) memmove(q->entries, q->entries + q->head, live * sizeof *q->entries);
        q->head = 0;
        q->len = live;
        if (live + n > q->cap) {
            size_t cap = q->cap ? q->cap * 2 : 256;
            while (cap < live + n)
                cap *= 2;
            probe_entry *p = realloc(q->entries, cap * sizeof *p);
            if (p) {
                q->entries = p;
                q->cap = cap;
            } else {
                ok = false;
            }
        }
    }
    if (ok) {
        memcpy(q->entries + q->len, entries, n * sizeof *entries);
        q->len += n;
        pthread_cond_signal(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return ok;
}

/* Wait for the next probe; false once the queue is closed and empty, or *stop (if given) is set. */
static bool probe_queue_pop(probe_queue *q, probe_entry *out, const atomic_bool *stop)
{
    pthread_mutex_lock(&q->mu);
    while (q->head == q->len && !q->closed && !(stop && atomic_load(stop)))
        pthread_cond_wait(&q->cv, &q->mu);
    bool have = q->head < q->len && !(stop && atomic_load(stop));
    if (have) *out = q->entries[q->head++];
    pthread_mutex_unlock(&q->mu);
    return have;
}

static void probe_queue_close(probe_queue *q)
{
    pthread_mutex_lock(&q->mu);
    q->closed = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

enum { ST_CREATED, ST_UPDATED, ST_DUPLICATE, ST_REJECTED, ST_COUNT };
static const char *const status_names[ST_COUNT] = {"created", "updated", "duplicate", "rejected"};

typedef struct {
    const bench_config *cfg;
    record_gen gen;
    http_client_url url;
    char records_path[320];
    char metrics_path[320];
    char auth_value[1024];
    http_client_header headers_post[3];
    http_client_header headers_get[2];
    int timeout_ms;

    uint64_t batches;
    atomic_uint_fast64_t next_batch;
    double load_start; /* now_seconds() when the senders start: the --rate schedule's origin */
    atomic_bool stop;  /* abort: too many failures, or out of memory */
    atomic_uint senders_finished;

    atomic_uint_fast64_t acked_records, acked_bytes, failed_records;
    atomic_uint_fast64_t status_counts[ST_COUNT];
    atomic_uint_fast64_t post_failures, probe_failures, read_failures;

    struct pg_prober *pg;  /* --postgres: probes visible over HTTP go on to it */
    probe_queue probes;    /* sampled records of acknowledged batches, for the probe thread */
    atomic_bool load_done; /* the senders are done */

    pthread_mutex_t patient_mu; /* guards the ring of learned patient ids */
    char (*patient_ids)[PATIENT_ID_MAX];
    size_t patient_count, patient_next;

    pthread_mutex_t error_mu; /* serializes error messages */
    unsigned errors_shown;
} bench_run;

static void report_error(bench_run *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void report_error(bench_run *b, const char *fmt, ...)
{
    pthread_mutex_lock(&b->error_mu);
    if (b->errors_shown < MAX_ERROR_MESSAGES) {
        va_list ap;
        va_start(ap, fmt);
        fputs("medstream bench: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    } else if (b->errors_shown == MAX_ERROR_MESSAGES) {
        fputs("medstream bench: further errors are counted, not shown\n", stderr);
    }
    b->errors_shown++;
    pthread_mutex_unlock(&b->error_mu);
}

/* Up to 200 bytes of an answer body, for error messages (control bytes shown as spaces). */
static void body_excerpt(const http_client_response *resp, char *dst, size_t cap)
{
    size_t n = resp->body_len < cap - 1 ? resp->body_len : cap - 1;
    if (n > 200) n = 200;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)resp->body[i];
        dst[i] = c < 0x20 ? ' ' : (char)c;
    }
    dst[n] = '\0';
}

static const char *skip_json_space(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

/* After a "key" match at p (just past the closing quote): the string value's start, or NULL. */
static const char *json_string_value(const char *p)
{
    p = skip_json_space(p);
    if (*p != ':') return NULL;
    p = skip_json_space(p + 1);
    return *p == '"' ? p + 1 : NULL;
}

/* Counts item statuses in an ingest answer: each "status" key's string value. */
static void count_statuses(const char *body, uint64_t counts[ST_COUNT])
{
    const char *p = body;
    while ((p = strstr(p, "\"status\"")) != NULL) {
        p += 8;
        const char *v = json_string_value(p);
        if (!v) continue;
        for (int s = 0; s < ST_COUNT; s++) {
            size_t len = strlen(status_names[s]);
            if (strncmp(v, status_names[s], len) == 0 && v[len] == '"') {
                counts[s]++;
                break;
            }
        }
    }
}

static bool patient_id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.';
}

/* The status of item `item` of an ingest answer (its `item`-th "status" key: error texts are escaped JSON
 * strings, so they never hold one) into status, and for a rejected item its error, unescaped no further, into
 * err. False: the answer has fewer items. */
static bool item_answer(const char *body, uint32_t item, char *status, size_t status_cap, char *err, size_t err_cap)
{
    const char *p = body, *v = NULL;
    for (uint32_t k = 0; k <= item; k++) {
        if ((p = strstr(p, "\"status\"")) == NULL) return false;
        p += 8;
        if ((v = json_string_value(p)) == NULL) return false;
    }
    size_t n = strcspn(v, "\"");
    snprintf(status, status_cap, "%.*s", (int)n, v);
    err[0] = '\0';
    const char *next = strstr(v, "\"status\""), *at = strstr(v, "\"error\"");
    const char *ev = at && (!next || at < next) ? json_string_value(at + 7) : NULL;
    if (ev) {
        size_t el = 0;
        while (ev[el] && ev[el] != '"')
            el += ev[el] == '\\' && ev[el + 1] ? 2 : 1;
        snprintf(err, err_cap, "%.*s", (int)el, ev);
    }
    return true;
}

/* Remembers about PATIENT_IDS_PER_BATCH patient ids from an ingest answer for the point reads. */
static void learn_patient_ids(bench_run *b, const char *body, uint64_t items)
{
    uint64_t stride = items / PATIENT_IDS_PER_BATCH;
    if (stride == 0) stride = 1;
    char found[PATIENT_IDS_PER_BATCH][PATIENT_ID_MAX];
    size_t nfound = 0;
    uint64_t index = 0;
    const char *p = body;
    while (nfound < PATIENT_IDS_PER_BATCH && (p = strstr(p, "\"patient_id\"")) != NULL) {
        p += 12;
        const char *v = json_string_value(p);
        if (!v || index++ % stride != 0) continue;
        size_t len = 0;
        while (len < PATIENT_ID_MAX - 1 && patient_id_char(v[len]))
            len++;
        if (len == 0 || v[len] != '"') continue;
        memcpy(found[nfound], v, len);
        found[nfound][len] = '\0';
        nfound++;
    }
    if (nfound == 0) return;
    pthread_mutex_lock(&b->patient_mu);
    for (size_t i = 0; i < nfound; i++) {
        memcpy(b->patient_ids[b->patient_next], found[i], PATIENT_ID_MAX);
        b->patient_next = (b->patient_next + 1) % PATIENT_RING;
        if (b->patient_count < PATIENT_RING) b->patient_count++;
    }
    pthread_mutex_unlock(&b->patient_mu);
}

static bool probes_enqueue(bench_run *b, const probe_entry *entries, size_t n)
{
    return probe_queue_push(&b->probes, entries, n);
}

/* ======================================================================================== */
/* Sender threads                                                                           */
/* ======================================================================================== */

typedef struct {
    bench_run *run;
    pthread_t thread;
    bool started;
    sample_vec batch_ms;
    rd_kafka_t *producer;                   /* Kafka mode: this sender's producer, made and warmed before the clock */
    int32_t partitions;                     /* Kafka mode: the topic's (a record goes to its shard's, shard.h) */
    atomic_uint_fast64_t delivery_failures; /* its delivery reports with an error */
} sender;

/* Kafka delivery reports: count the messages the brokers did not take. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    if (m->err) atomic_fetch_add((atomic_uint_fast64_t *)opaque, 1);
}

/* Kafka mode: a sender's idempotent producer (medstream's one producer factory). */
static bool sender_producer_new(bench_run *b, sender *snd)
{
    char err[256];
    const char *const settings[] = {"queue.buffering.max.kbytes=1048576", NULL};
    kafka_producer_options po = {.brokers = b->cfg->kafka_brokers,
                                 .config = settings,
                                 .on_delivery = on_delivery,
                                 .opaque = &snd->delivery_failures};
    if (!(snd->producer = kafka_producer_new(&po, err, sizeof err))) {
        fprintf(stderr, "medstream bench: kafka producer: %s\n", err);
        return false;
    }
    rd_kafka_topic_t *t = rd_kafka_topic_new(snd->producer, b->cfg->kafka_topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(snd->producer, 0, t, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 &&
        !md->topics[0].err)
        snd->partitions = md->topics[0].partition_cnt;
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    if (snd->partitions <= 0) {
        fprintf(stderr, "medstream bench: kafka: topic %s: no partitions (does it exist?)\n", b->cfg->kafka_topic);
        return false;
    }
    return true;
}

/* Kafka mode: the partition of identity (its shard's, shard.h, as a cluster routes it) and its key: the
 * shard number (never the name). Names that do not normalize go to partition 0 (the server rejects them). */
static int32_t identity_partition(const bench_run *b, const sender *snd, uint64_t identity, char *key, size_t cap,
                                  int *kl)
{
    char name[160], norm[IDENTITY_NAME_MAX], ik[IDENTITY_KEY_MAX];
    int y, m, d;
    const char *why;
    bench_identity(b->gen.seed, identity, name, sizeof name, &y, &m, &d);
    int nl = identity_normalize_name(name, strlen(name), norm, &why);
    uint32_t shard = nl < 0 ? 0 : shard_of_key(ik, identity_key(norm, (size_t)nl, y, m, d, ik));
    *kl = snprintf(key, cap, "%u", shard);
    return shard_partition(shard, snd->partitions);
}

/* Kafka mode, before the clock starts: each producer sends one warm-up record and waits until the server
 * shows it, so that connecting and the consumer group's first join (seconds on the mock cluster) are not
 * counted as freshness. */
static bool kafka_warm_up(bench_run *b, http_client_conn *conn, sender *snd, unsigned k)
{
    const bench_config *cfg = b->cfg;
    char id[ID_MAX + 16], msg[ID_MAX + 128], path[512];
    snprintf(id, sizeof id, "%s-warm%u", b->gen.run_id, k);
    int n = snprintf(msg, sizeof msg, "{\"record_id\":\"%s\",\"name\":\"Warm Up\",\"dob\":\"1990-01-01\"}", id);
    bool ok =
        rd_kafka_producev(snd->producer, RD_KAFKA_V_TOPIC(cfg->kafka_topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_VALUE(msg, (size_t)n), RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_flush(snd->producer, (int)b->timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        atomic_load(&snd->delivery_failures) == 0;
    if (!ok) {
        fprintf(stderr, "medstream bench: kafka: a warm-up record was not delivered to %s\n", cfg->kafka_brokers);
        return false;
    }
    snprintf(path, sizeof path, "%s/v1/records/%s", b->url.base_path, id);
    http_client_response resp;
    http_client_response_init(&resp);
    double deadline = now_seconds() + 60.0;
    int status = 0;
    while (now_seconds() < deadline) {
        if (http_client_request(conn, "GET", path, b->headers_get, NULL, 0, &resp) == HTTP_CLIENT_OK)
            status = resp.status;
        if (status == 200) break;
        sleep_seconds(0.02);
    }
    http_client_response_free(&resp);
    if (status != 200)
        fprintf(stderr, "medstream bench: the server did not consume the warm-up record from %s within 60 s\n",
                cfg->kafka_topic);
    return status == 200;
}

static void *sender_main(void *arg)
{
    /* The load generator shares the machine with the server: run it at a lower CPU priority, like the
     * server's own bulk work, so that the probes measure the server's reads, not this thread's load. */
    thread_priority_set(THREAD_BULK);
    sender *s = arg;
    bench_run *b = s->run;
    const bench_config *cfg = b->cfg;
    size_t record_cap = cfg->size;
    if (record_cap < RECORD_HEADER_MAX + MIN_NOTES + 3) record_cap = RECORD_HEADER_MAX + MIN_NOTES + 3;
    rd_kafka_t *producer = s->producer;
    /* Records of VECTOR_MIN_SIZE bytes or more go out as pieces (http_client_request_iov): each one's head
     * written in body (after the tail of the one before), its text from the pool where it lies, not copied
     * into a batch buffer (4 us a record of 20 KB, ~5 % of a closed loop's two cores here); smaller ones (and
     * Kafka's messages) are written whole into body. */
    bool pieces = !producer && cfg->size >= VECTOR_MIN_SIZE;
    size_t body_cap = pieces ? (size_t)cfg->batch * (RECORD_HEADER_MAX + 3) + 3 : (size_t)cfg->batch * record_cap;
    size_t probe_cap = cfg->probe_every ? (size_t)(cfg->batch / cfg->probe_every) + 2 : 0;
    char *body = malloc(body_cap);
    struct iovec *iov = pieces ? malloc(sizeof *iov * (2 * (size_t)cfg->batch + 1)) : NULL;
    probe_entry *probes = probe_cap ? malloc(probe_cap * sizeof *probes) : NULL;
    http_client_conn *conn = http_client_conn_new(b->url.host, b->url.port, b->timeout_ms, 0);
    http_client_response resp;
    http_client_response_init(&resp);
    if (!body || (pieces && !iov) || !conn || (probe_cap && !probes)) {
        report_error(b, "sender: out of memory (batch buffer of %zu bytes)", body_cap);
        atomic_store(&b->stop, true);
        goto done;
    }

    unsigned consecutive_failures = 0;
    while (!atomic_load(&b->stop)) {
        uint64_t batch_no = atomic_fetch_add(&b->next_batch, 1);
        if (batch_no >= b->batches) break;
        uint64_t first = batch_no * cfg->batch;
        uint64_t end = first + cfg->batch < cfg->records ? first + cfg->batch : cfg->records;
        size_t len = 0, nprobes = 0, used = 0; /* len: the batch's bytes; used: of body, for pieces */
        int niov = 0;
        for (uint64_t seq = first; seq < end; seq++) {
            size_t n;
            if (pieces) { /* the previous record's tail and this one's head, then its text */
                const char *notes;
                size_t notes_len, t = seq == first ? 0 : strlen(RECORD_TAIL);
                memcpy(body + used, RECORD_TAIL, t);
                n = gen_record_head(&b->gen, seq, false, body + used + t, body_cap - used - t, &notes, &notes_len);
                if (n) {
                    iov[niov++] = (struct iovec){.iov_base = body + used, .iov_len = t + n};
                    iov[niov++] = (struct iovec){.iov_base = (void *)(uintptr_t)notes, .iov_len = notes_len};
                    used += t + n;
                    n += t + notes_len;
                }
            } else {
                n = gen_record(&b->gen, seq, body + len, body_cap - len);
            }
            if (n == 0) { /* cannot happen: body_cap covers the worst case */
                report_error(b, "sender: record %" PRIu64 " does not fit its buffer", seq);
                atomic_store(&b->stop, true);
                goto done;
            }
            len += n;
            if (nprobes < probe_cap && gen_is_probe_sample(&b->gen, seq, cfg->probe_every)) {
                probes[nprobes].item = (uint32_t)(seq - first);
                gen_record_id(&b->gen, seq, probes[nprobes++].record_id, ID_MAX);
            }
        }
        if (pieces) { /* the last record's tail */
            memcpy(body + used, RECORD_TAIL, strlen(RECORD_TAIL));
            iov[niov++] = (struct iovec){.iov_base = body + used, .iov_len = strlen(RECORD_TAIL)};
            len += strlen(RECORD_TAIL);
        }
        uint64_t items = end - first;
        if (cfg->rate) { /* open loop: batch k leaves at load_start + k * batch / rate */
            double due = b->load_start + (double)first * 60.0 / (double)cfg->rate;
            double now = now_seconds();
            if (due > now) sleep_seconds(due - now);
        }

        double t0 = now_seconds();
        if (producer) { /* one message per record, in its shard's partition: one patient, one partition */
            uint64_t before = atomic_load(&s->delivery_failures);
            size_t at = 0;
            for (uint64_t seq = first; seq < end; seq++) {
                const char *nl = memchr(body + at, '\n', len - at);
                size_t rl = nl ? (size_t)(nl - (body + at)) : len - at;
                char key[32];
                int kl;
                int32_t part = identity_partition(b, s, gen_identity(&b->gen, seq), key, sizeof key, &kl);
                while (rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(cfg->kafka_topic), RD_KAFKA_V_PARTITION(part),
                                         RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, (size_t)kl),
                                         RD_KAFKA_V_VALUE(body + at, rl),
                                         RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                    rd_kafka_poll(producer, 10);
                at += rl + 1;
            }
            rd_kafka_flush(producer, (int)b->timeout_ms);
            double t1 = now_seconds();
            if (rd_kafka_outq_len(producer) > 0 || atomic_load(&s->delivery_failures) != before) {
                report_error(b, "kafka: a batch was not delivered");
                atomic_fetch_add(&b->post_failures, 1);
                atomic_fetch_add(&b->failed_records, items);
                continue;
            }
            samples_push(&s->batch_ms, (t1 - t0) * 1000.0);
            atomic_fetch_add(&b->acked_records, items);
            atomic_fetch_add(&b->acked_bytes, len);
            for (size_t k = 0; k < nprobes; k++) {
                probes[k].sent_at = t0;
                probes[k].acked_at = t0; /* visible only once the server has consumed it */
                probes[k].status[0] = '\0';
            }
            if (!probes_enqueue(b, probes, nprobes)) {
                report_error(b, "probe queue: out of memory");
                atomic_store(&b->stop, true);
            }
            continue;
        }
        struct iovec whole = {.iov_base = body, .iov_len = len};
        http_client_err e = http_client_request_iov(conn, "POST", b->records_path, b->headers_post,
                                                    pieces ? iov : &whole, pieces ? niov : 1, &resp);
        double t1 = now_seconds();
        if (e != HTTP_CLIENT_OK || resp.status != 200) {
            if (e != HTTP_CLIENT_OK) {
                report_error(b, "POST %s: %s", b->records_path, http_client_conn_error(conn));
            } else {
                char excerpt[256];
                body_excerpt(&resp, excerpt, sizeof excerpt);
                report_error(b, "POST %s: HTTP %d: %s", b->records_path, resp.status, excerpt);
            }
            atomic_fetch_add(&b->post_failures, 1);
            atomic_fetch_add(&b->failed_records, items);
            if (++consecutive_failures >= MAX_CONSECUTIVE_FAILURES) {
                report_error(b, "giving up after %d failed POSTs in a row", MAX_CONSECUTIVE_FAILURES);
                atomic_store(&b->stop, true);
            }
            continue;
        }
        consecutive_failures = 0;
        samples_push(&s->batch_ms, (t1 - t0) * 1000.0);
        atomic_fetch_add(&b->acked_records, items);
        atomic_fetch_add(&b->acked_bytes, len);
        uint64_t counts[ST_COUNT] = {0};
        count_statuses(resp.body, counts);
        for (int k = 0; k < ST_COUNT; k++)
            atomic_fetch_add(&b->status_counts[k], counts[k]);
        if (cfg->read_rate) learn_patient_ids(b, resp.body, items);
        size_t kept = 0; /* a probe the answer says was not stored is a failure, not a record to wait for */
        for (size_t k = 0; k < nprobes; k++) {
            char err[256];
            probe_entry *pe = &probes[k];
            if (!item_answer(resp.body, pe->item, pe->status, sizeof pe->status, err, sizeof err)) {
                report_error(b, "POST %s: the answer has no item %u (%s)", b->records_path, pe->item + 1,
                             pe->record_id);
                atomic_fetch_add(&b->probe_failures, 1);
                continue;
            }
            if (strcmp(pe->status, "rejected") == 0) {
                report_error(b, "probe: %s was rejected: %s", pe->record_id, err);
                atomic_fetch_add(&b->probe_failures, 1);
                continue;
            }
            pe->sent_at = t0;
            pe->acked_at = t1;
            probes[kept++] = *pe;
        }
        nprobes = kept;
        if (!probes_enqueue(b, probes, nprobes)) {
            report_error(b, "probe queue: out of memory");
            atomic_store(&b->stop, true);
        }
    }
done:
    http_client_response_free(&resp);
    http_client_conn_free(conn);
    free(probes);
    free(iov);
    free(body);
    atomic_fetch_add(&b->senders_finished, 1);
    return NULL;
}

/* ======================================================================================== */
/* Freshness probe thread                                                                   */
/* ======================================================================================== */

/* ======================================================================================== */
/* PostgreSQL probe thread (--postgres)                                                     */
/* ======================================================================================== */

/* Probes visible over HTTP are handed here and polled in SQL until their row is in phi_records (a row
 * reaches PostgreSQL only after its commit, so the hand-off adds nothing while this thread keeps up). */
typedef struct pg_prober {
    bench_run *run;
    pthread_t thread;
    bool started;
    probe_queue queue; /* probes already visible over HTTP */
    sample_vec fresh_ms;
} pg_prober;

static void *pg_prober_main(void *arg)
{
    pg_prober *pg = arg;
    bench_run *b = pg->run;
    PGconn *c = PQconnectdb(b->cfg->postgres);
    if (PQstatus(c) != CONNECTION_OK) {
        report_error(b, "--postgres: cannot connect: %s", PQerrorMessage(c));
        atomic_fetch_add(&b->probe_failures, 1);
        PQfinish(c);
        c = NULL;
    }
    probe_entry entry;
    while (probe_queue_pop(&pg->queue, &entry, NULL)) {
        if (!c) continue;
        const char *params[1] = {entry.record_id};
        for (;;) {
            PGresult *res = PQexecParams(c, "SELECT 1 FROM medstream.phi_records WHERE record_id = $1 LIMIT 1", 1, NULL,
                                         params, NULL, NULL, 0);
            double t = now_seconds();
            bool ok = PQresultStatus(res) == PGRES_TUPLES_OK, seen = ok && PQntuples(res) > 0;
            PQclear(res);
            if (seen) {
                samples_push(&pg->fresh_ms, (t - entry.sent_at) * 1000.0);
                break;
            }
            if (!ok || t > entry.acked_at + PROBE_DEADLINE_S * 2) {
                report_error(b, "postgres probe: %s %s", entry.record_id,
                             ok ? "not in phi_records within the deadline" : PQerrorMessage(c));
                atomic_fetch_add(&b->probe_failures, 1);
                break;
            }
            sleep_seconds(0.001);
        }
    }
    if (c) PQfinish(c);
    return NULL;
}

typedef struct {
    bench_run *run;
    pthread_t thread;
    bool started;
    sample_vec fresh_ms;
    double max_queue_wait; /* seconds a probe waited for the probe thread; inflates freshness */
    uint64_t late;         /* probes answered 404 after their batch's ack (the API says visible) */
} prober;

static void *prober_main(void *arg)
{
    prober *pr = arg;
    bench_run *b = pr->run;
    http_client_conn *conn = http_client_conn_new(b->url.host, b->url.port, b->timeout_ms, 0);
    http_client_response resp;
    http_client_response_init(&resp);
    char path[512];
    if (!conn) {
        report_error(b, "probe: out of memory");
        atomic_store(&b->stop, true);
        goto done;
    }
    for (;;) {
        probe_entry entry;
        if (!probe_queue_pop(&b->probes, &entry, &b->stop)) break;

        snprintf(path, sizeof path, "%s/v1/records/%s", b->url.base_path, entry.record_id);
        double started = now_seconds();
        if (started - entry.acked_at > pr->max_queue_wait) pr->max_queue_wait = started - entry.acked_at;
        double deadline = entry.acked_at + PROBE_DEADLINE_S; /* from its ack: lost probes do not queue up */
        bool counted_late = false;
        for (;;) {
            http_client_err e = http_client_request(conn, "GET", path, b->headers_get, NULL, 0, &resp);
            double t = now_seconds();
            if (e == HTTP_CLIENT_OK && resp.status == 200) {
                samples_push(&pr->fresh_ms, (t - entry.sent_at) * 1000.0);
                if (b->pg) probe_queue_push(&b->pg->queue, &entry, 1); /* out of memory: one sample fewer */
                /* Kafka mode has no POST answers to learn patient ids from: the probes' records give them */
                if (b->cfg->kafka_brokers && b->cfg->read_rate) learn_patient_ids(b, resp.body, 1);
                break;
            }
            if (e == HTTP_CLIENT_OK && resp.status != 404) {
                char excerpt[256];
                body_excerpt(&resp, excerpt, sizeof excerpt);
                report_error(b, "probe GET %s: HTTP %d: %s", path, resp.status, excerpt);
                atomic_fetch_add(&b->probe_failures, 1);
                break;
            }
            if (t > deadline || atomic_load(&b->stop)) {
                if (e == HTTP_CLIENT_OK) {
                    char excerpt[256];
                    body_excerpt(&resp, excerpt, sizeof excerpt);
                    report_error(b, "probe: %s acknowledged (%s) but not visible after %.0f s: GET answers 404: %s",
                                 entry.record_id, entry.status[0] ? entry.status : "sent", PROBE_DEADLINE_S, excerpt);
                } else
                    report_error(b, "probe GET %s: %s", path, http_client_conn_error(conn));
                atomic_fetch_add(&b->probe_failures, 1);
                break;
            }
            if (e == HTTP_CLIENT_OK && !counted_late) {
                pr->late++;
                counted_late = true;
            }
            sleep_seconds(e == HTTP_CLIENT_OK ? PROBE_POLL_S : 0.01);
        }
    }
done:
    http_client_response_free(&resp);
    http_client_conn_free(conn);
    return NULL;
}

/* ======================================================================================== */
/* Point-read thread                                                                        */
/* ======================================================================================== */

typedef struct {
    bench_run *run;
    pthread_t thread;
    bool started;
    sample_vec read_ms;
} reader_thread;

static void *reader_main(void *arg)
{
    reader_thread *rd = arg;
    bench_run *b = rd->run;
    /* a measuring thread: woken first, like the server's point reads, so that it times the server's
     * answer and not its own wait for a CPU behind the senders (thread_priority.h) */
    thread_priority_set(THREAD_LATENCY);
    http_client_conn *conn = http_client_conn_new(b->url.host, b->url.port, b->timeout_ms, 0);
    http_client_response resp;
    http_client_response_init(&resp);
    char path[512], patient_id[PATIENT_ID_MAX];
    rng r = {hash3(b->cfg->seed, 99, 0)};
    double interval = 1.0 / (double)b->cfg->read_rate;
    double next = now_seconds();
    if (!conn) {
        report_error(b, "point reads: out of memory");
        atomic_store(&b->stop, true);
        goto done;
    }
    while (!atomic_load(&b->load_done) && !atomic_load(&b->stop)) {
        bool have = false;
        pthread_mutex_lock(&b->patient_mu);
        if (b->patient_count > 0) {
            memcpy(patient_id, b->patient_ids[rng_below(&r, (uint32_t)b->patient_count)], PATIENT_ID_MAX);
            have = true;
        }
        pthread_mutex_unlock(&b->patient_mu);
        if (!have) {
            sleep_seconds(0.01);
            next = now_seconds();
            continue;
        }
        snprintf(path, sizeof path, "%s/v1/patients/%s", b->url.base_path, patient_id);
        double t0 = now_seconds();
        http_client_err e = http_client_request(conn, "GET", path, b->headers_get, NULL, 0, &resp);
        double t1 = now_seconds();
        if (e == HTTP_CLIENT_OK && resp.status == 200) {
            samples_push(&rd->read_ms, (t1 - t0) * 1000.0);
        } else {
            if (e != HTTP_CLIENT_OK) {
                report_error(b, "point read GET %s: %s", path, http_client_conn_error(conn));
            } else {
                char excerpt[256];
                body_excerpt(&resp, excerpt, sizeof excerpt);
                report_error(b, "point read GET %s: HTTP %d: %s", path, resp.status, excerpt);
            }
            atomic_fetch_add(&b->read_failures, 1);
            next = t1 + 0.1; /* back off; do not hammer a failing server */
        }
        next += interval;
        double now = now_seconds();
        if (next < now) next = now; /* no catch-up bursts after a slow read */
        sleep_seconds(next - now);
    }
done:
    http_client_response_free(&resp);
    http_client_conn_free(conn);
    return NULL;
}

/* ======================================================================================== */
/* Metrics                                                                                  */
/* ======================================================================================== */

typedef struct {
    bool have_disk, have_rss;
    double disk_write_bytes, peak_rss_bytes;
} server_metrics;

/* Finds "NAME value" (or "NAME{labels} value") at a line start in Prometheus text. */
static bool metric_value(const char *text, const char *name, double *out)
{
    size_t n = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, n) != 0) continue;
        const char *v = p + n;
        if (*v == '{') {
            v = strchr(v, '}');
            if (!v) return false;
            v++;
        }
        if (*v != ' ' && *v != '\t') continue;
        char *end;
        double x = strtod(v, &end);
        if (end == v) continue;
        *out = x;
        return true;
    }
    return false;
}

/* GET /metrics. Returns HTTP_CLIENT_OK when the server answered (whatever the status); the
 * figures it lacks are marked missing. */
static http_client_err fetch_metrics(bench_run *b, http_client_conn *conn, server_metrics *m)
{
    http_client_response resp;
    http_client_response_init(&resp);
    memset(m, 0, sizeof *m);
    http_client_err e = http_client_request(conn, "GET", b->metrics_path, b->headers_get, NULL, 0, &resp);
    if (e == HTTP_CLIENT_OK && resp.status == 200) {
        /* the device's own count (what reached the disk) when the server exposes it; else the
         * process's write_bytes, which over-counts buffered rewrites of the same page */
        m->have_disk = metric_value(resp.body, "medstream_disk_device_write_bytes", &m->disk_write_bytes) ||
                       metric_value(resp.body, "medstream_process_disk_write_bytes", &m->disk_write_bytes);
        m->have_rss = metric_value(resp.body, "medstream_process_peak_rss_bytes", &m->peak_rss_bytes);
    } else if (e == HTTP_CLIENT_OK) {
        report_error(b, "GET %s: HTTP %d (disk and memory figures will be n/a)", b->metrics_path, resp.status);
    }
    http_client_response_free(&resp);
    return e;
}

/* ======================================================================================== */
/* Report                                                                                   */
/* ======================================================================================== */

typedef struct {
    double value;
    bool have;
} figure;

static void print_figure(FILE *out, const char *fmt, figure f)
{
    if (f.have)
        fprintf(out, fmt, f.value);
    else
        fputs("n/a", out);
}

/* Prints s as a JSON string (quotes, backslashes and control bytes escaped). */
static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

static void json_figure(FILE *out, const char *key, figure f, bool comma)
{
    if (f.have)
        fprintf(out, "\"%s\":%.3f", key, f.value);
    else
        fprintf(out, "\"%s\":null", key);
    if (comma) fputc(',', out);
}

typedef struct {
    uint64_t records_sent, records_failed, body_bytes, batches, fresh_n, fresh_late, read_n, pg_fresh_n;
    uint64_t counts[ST_COUNT];
    uint64_t post_failures, probe_failures, read_failures, failures;
    double seconds;
    double probe_queue_wait_ms;
    figure pg_fresh_p50, pg_fresh_p99;
    figure records_per_min, mb_per_s, batch_p50, batch_p99, fresh_p50, fresh_p99, read_p50, read_p99, disk_written,
        disk_ratio, peak_rss_mib;
} bench_report;

static figure pct(sample_vec *s, double p)
{
    figure f = {0, s->n > 0};
    if (f.have) f.value = percentile_sorted(s, p);
    return f;
}

static void print_report(const bench_run *b, const bench_report *r)
{
    const bench_config *cfg = b->cfg;
    printf("medstream bench: %s, run %s: %" PRIu64 " records of ~%" PRIu64 " B, batches of %" PRIu64 ", %" PRIu64
           " connections, offered load ",
           cfg->url, b->gen.run_id, cfg->records, cfg->size, cfg->batch, cfg->connections);
    if (cfg->rate)
        printf("%" PRIu64 " records/min\n", cfg->rate);
    else
        printf("unlimited\n");
    printf("records sent        %" PRIu64 " acknowledged (%" PRIu64 " in failed batches)\n", r->records_sent,
           r->records_failed);
    printf("seconds             %.3f\n", r->seconds);
    printf("records/min         ");
    print_figure(stdout, "%.0f", r->records_per_min);
    printf("\nMB/s request body   ");
    print_figure(stdout, "%.1f", r->mb_per_s);
    printf("\nbatch latency ms    p50 ");
    print_figure(stdout, "%.2f", r->batch_p50);
    printf("  p99 ");
    print_figure(stdout, "%.2f", r->batch_p99);
    printf("  (%" PRIu64 " batches)\nfreshness ms        p50 ", r->batches);
    print_figure(stdout, "%.2f", r->fresh_p50);
    printf("  p99 ");
    print_figure(stdout, "%.2f", r->fresh_p99);
    if (cfg->kafka_brokers)
        printf("  (%" PRIu64 " samples, produce to visible; probe queue wait max %.1f ms)\n", r->fresh_n,
               r->probe_queue_wait_ms);
    else
        printf("  (%" PRIu64 " samples, send to visible; %" PRIu64
               " answered 404 after ack; probe queue wait max %.1f ms)\n",
               r->fresh_n, r->fresh_late, r->probe_queue_wait_ms);
    if (cfg->postgres) {
        printf("in PostgreSQL ms    p50 ");
        print_figure(stdout, "%.2f", r->pg_fresh_p50);
        printf("  p99 ");
        print_figure(stdout, "%.2f", r->pg_fresh_p99);
        printf("  (%" PRIu64 " samples, send to row visible in SQL)\n", r->pg_fresh_n);
    }
    printf("point read ms       p50 ");
    print_figure(stdout, "%.3f", r->read_p50);
    printf("  p99 ");
    print_figure(stdout, "%.3f", r->read_p99);
    printf("  (%" PRIu64 " reads)\ndisk written/body   ", r->read_n);
    print_figure(stdout, "%.3f", r->disk_ratio);
    if (r->disk_written.have) printf("  (%.0f B written / %" PRIu64 " B body)", r->disk_written.value, r->body_bytes);
    printf("\nserver peak RSS     ");
    print_figure(stdout, "%.1f MiB", r->peak_rss_mib);
    if (cfg->kafka_brokers)
        printf("\nstatus counts       n/a (a Kafka producer gets no per-record answers)\n");
    else
        printf("\nstatus counts       created %" PRIu64 "  updated %" PRIu64 "  duplicate %" PRIu64
               "  rejected %" PRIu64 "\n",
               r->counts[ST_CREATED], r->counts[ST_UPDATED], r->counts[ST_DUPLICATE], r->counts[ST_REJECTED]);
    printf("failures            %" PRIu64 "  (POST %" PRIu64 ", probe %" PRIu64 ", read %" PRIu64 ")\n", r->failures,
           r->post_failures, r->probe_failures, r->read_failures);
    if (cfg->json) {
        printf("{\"url\":");
        json_string(stdout, cfg->url);
        printf(",\"run_id\":");
        json_string(stdout, b->gen.run_id);
        printf(",\"records\":%" PRIu64 ",\"size\":%" PRIu64 ",\"batch\":%" PRIu64 ",\"connections\":%" PRIu64
               ",\"offered_rate_per_min\":%" PRIu64 ",",
               cfg->records, cfg->size, cfg->batch, cfg->connections, cfg->rate);
        printf("\"records_sent\":%" PRIu64 ",\"records_failed\":%" PRIu64 ",\"seconds\":%.3f,", r->records_sent,
               r->records_failed, r->seconds);
        json_figure(stdout, "records_per_min", r->records_per_min, true);
        json_figure(stdout, "body_mb_per_s", r->mb_per_s, true);
        printf("\"body_bytes\":%" PRIu64 ",\"batches\":%" PRIu64 ",", r->body_bytes, r->batches);
        json_figure(stdout, "batch_ms_p50", r->batch_p50, true);
        json_figure(stdout, "batch_ms_p99", r->batch_p99, true);
        printf("\"freshness_samples\":%" PRIu64 ",\"freshness_404_after_ack\":%" PRIu64
               ",\"probe_queue_wait_ms_max\":%.3f,",
               r->fresh_n, r->fresh_late, r->probe_queue_wait_ms);
        json_figure(stdout, "freshness_ms_p50", r->fresh_p50, true);
        json_figure(stdout, "freshness_ms_p99", r->fresh_p99, true);
        if (cfg->postgres) {
            printf("\"postgres_freshness_samples\":%" PRIu64 ",", r->pg_fresh_n);
            json_figure(stdout, "postgres_freshness_ms_p50", r->pg_fresh_p50, true);
            json_figure(stdout, "postgres_freshness_ms_p99", r->pg_fresh_p99, true);
        }
        printf("\"point_reads\":%" PRIu64 ",", r->read_n);
        json_figure(stdout, "point_read_ms_p50", r->read_p50, true);
        json_figure(stdout, "point_read_ms_p99", r->read_p99, true);
        json_figure(stdout, "disk_write_bytes", r->disk_written, true);
        json_figure(stdout, "disk_write_ratio", r->disk_ratio, true);
        json_figure(stdout, "server_peak_rss_mib", r->peak_rss_mib, true);
        printf("\"created\":%" PRIu64 ",\"updated\":%" PRIu64 ",\"duplicate\":%" PRIu64 ",\"rejected\":%" PRIu64 ",",
               r->counts[ST_CREATED], r->counts[ST_UPDATED], r->counts[ST_DUPLICATE], r->counts[ST_REJECTED]);
        printf("\"post_failures\":%" PRIu64 ",\"probe_failures\":%" PRIu64 ",\"read_failures\":%" PRIu64
               ",\"failures\":%" PRIu64 "}\n",
               r->post_failures, r->probe_failures, r->read_failures, r->failures);
    }
    fflush(stdout);
}

/* ======================================================================================== */
/* Main                                                                                     */
/* ======================================================================================== */

static void print_progress(bench_run *b, double elapsed)
{
    uint64_t acked = atomic_load(&b->acked_records);
    uint64_t bytes = atomic_load(&b->acked_bytes);
    fprintf(stderr, "\r\033[Kbench: %" PRIu64 "/%" PRIu64 " records, %.0f records/min, %.1f MB/s", acked,
            b->cfg->records, elapsed > 0 ? (double)acked * 60.0 / elapsed : 0.0,
            elapsed > 0 ? (double)bytes / elapsed / 1e6 : 0.0);
}

static void finish_load(bench_run *b)
{
    atomic_store(&b->load_done, true);
    probe_queue_close(&b->probes);
}

/* The run proper once options are valid; returns the exit code. */
static int bench_run_all(const bench_config *cfg)
{
    int exit_code = 1;
    bench_run *b = calloc(1, sizeof *b);
    sender *senders = calloc(cfg->connections, sizeof *senders);
    prober probe = {0};
    pg_prober pg = {0};
    probe_queue_init(&pg.queue);
    reader_thread reader = {0};
    http_client_conn *main_conn = NULL;
    char run_id[80];
    char url_error[320];
    if (!b || !senders) {
        fprintf(stderr, "medstream bench: out of memory\n");
        free(b);
        free(senders);
        return 1;
    }
    b->cfg = cfg;
    probe_queue_init(&b->probes);
    pthread_mutex_init(&b->patient_mu, NULL);
    pthread_mutex_init(&b->error_mu, NULL);

    if (http_client_url_parse(cfg->url, &b->url, url_error, sizeof url_error) != HTTP_CLIENT_OK) {
        fprintf(stderr, "medstream bench: --url: %s\n", url_error);
        exit_code = 2;
        goto out;
    }
    snprintf(b->records_path, sizeof b->records_path, "%s/v1/records", b->url.base_path);
    snprintf(b->metrics_path, sizeof b->metrics_path, "%s/metrics", b->url.base_path);
    b->timeout_ms = (int)cfg->timeout * 1000;
    size_t nh = 0;
    b->headers_post[nh++] = (http_client_header){"Content-Type", "application/x-ndjson"};
    if (cfg->token) {
        if (strlen(cfg->token) > sizeof b->auth_value - 8) {
            fprintf(stderr, "medstream bench: --token: too long\n");
            exit_code = 2;
            goto out;
        }
        snprintf(b->auth_value, sizeof b->auth_value, "Bearer %s", cfg->token);
        b->headers_post[nh++] = (http_client_header){"Authorization", b->auth_value};
        b->headers_get[0] = (http_client_header){"Authorization", b->auth_value};
    }
    b->headers_post[nh] = (http_client_header){NULL, NULL};

    if (cfg->run_id) {
        snprintf(run_id, sizeof run_id, "%s", cfg->run_id);
    } else {
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        snprintf(run_id, sizeof run_id, "r%04d%02d%02d%02d%02d%02d-%ld", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                 tm.tm_hour, tm.tm_min, tm.tm_sec, (long)getpid());
    }
    size_t record_cap = cfg->size < RECORD_HEADER_MAX + MIN_NOTES + 3 ? RECORD_HEADER_MAX + MIN_NOTES + 3 : cfg->size;
    if (cfg->batch > ((size_t)1 << 30) / record_cap) {
        fprintf(stderr, "medstream bench: --batch x --size is over 1 GiB per connection\n");
        exit_code = 2;
        goto out;
    }
    b->batches = (cfg->records + cfg->batch - 1) / cfg->batch;
    b->patient_ids = calloc(PATIENT_RING, sizeof *b->patient_ids);
    main_conn = http_client_conn_new(b->url.host, b->url.port, b->timeout_ms, 0);
    if (!b->patient_ids || !main_conn || !gen_init(&b->gen, cfg, run_id)) {
        fprintf(stderr, "medstream bench: out of memory\n");
        goto out;
    }

    server_metrics before, after;
    if (fetch_metrics(b, main_conn, &before) != HTTP_CLIENT_OK) {
        fprintf(stderr, "medstream bench: cannot reach the server: %s\n", http_client_conn_error(main_conn));
        goto out;
    }

    for (unsigned i = 0; cfg->kafka_brokers && i < cfg->connections; i++)
        if (!sender_producer_new(b, &senders[i]) || !kafka_warm_up(b, main_conn, &senders[i], i)) goto out;
    double t_start = now_seconds();
    b->load_start = t_start;
    if (cfg->probe_every) {
        probe.run = b;
        probe.started = pthread_create(&probe.thread, NULL, prober_main, &probe) == 0;
    }
    if (cfg->postgres && cfg->probe_every) {
        pg.run = b;
        pg.started = pthread_create(&pg.thread, NULL, pg_prober_main, &pg) == 0;
        if (pg.started) b->pg = &pg;
    }
    if (cfg->read_rate) {
        reader.run = b;
        reader.started = pthread_create(&reader.thread, NULL, reader_main, &reader) == 0;
    }
    unsigned started = 0;
    for (uint64_t i = 0; i < cfg->connections; i++) {
        senders[i].run = b;
        senders[i].started = pthread_create(&senders[i].thread, NULL, sender_main, &senders[i]) == 0;
        if (senders[i].started) started++;
    }
    if (started < cfg->connections || (cfg->probe_every && !probe.started) || (cfg->read_rate && !reader.started)) {
        report_error(b, "cannot start threads");
        atomic_store(&b->stop, true);
    }

    bool progress = isatty(STDERR_FILENO);
    double last_progress = t_start;
    while (atomic_load(&b->senders_finished) < started) {
        sleep_seconds(0.05);
        double t = now_seconds();
        if (progress && t - last_progress >= 1.0) {
            print_progress(b, t - t_start);
            last_progress = t;
        }
    }
    for (uint64_t i = 0; i < cfg->connections; i++)
        if (senders[i].started) pthread_join(senders[i].thread, NULL);
    double t_end = now_seconds();
    if (progress && t_end - t_start >= 1.0) {
        print_progress(b, t_end - t_start);
        fputc('\n', stderr);
    }
    finish_load(b);
    if (probe.started) pthread_join(probe.thread, NULL);
    if (pg.started) {
        probe_queue_close(&pg.queue);
        pthread_join(pg.thread, NULL);
    }
    if (reader.started) pthread_join(reader.thread, NULL);

    if (fetch_metrics(b, main_conn, &after) != HTTP_CLIENT_OK) {
        report_error(b, "GET %s after the run: %s", b->metrics_path, http_client_conn_error(main_conn));
        after.have_disk = after.have_rss = false;
    }

    bench_report r;
    memset(&r, 0, sizeof r);
    sample_vec batch_ms = {0};
    for (uint64_t i = 0; i < cfg->connections; i++)
        samples_append(&batch_ms, &senders[i].batch_ms);
    bool oom = batch_ms.oom || probe.fresh_ms.oom || reader.read_ms.oom;
    samples_sort(&batch_ms);
    samples_sort(&probe.fresh_ms);
    samples_sort(&pg.fresh_ms);
    samples_sort(&reader.read_ms);

    r.records_sent = atomic_load(&b->acked_records);
    r.records_failed = atomic_load(&b->failed_records);
    r.body_bytes = atomic_load(&b->acked_bytes);
    r.seconds = t_end - t_start;
    r.batches = batch_ms.n;
    r.fresh_n = probe.fresh_ms.n;
    r.fresh_late = probe.late;
    r.probe_queue_wait_ms = probe.max_queue_wait * 1000.0;
    r.read_n = reader.read_ms.n;
    for (int k = 0; k < ST_COUNT; k++)
        r.counts[k] = atomic_load(&b->status_counts[k]);
    r.post_failures = atomic_load(&b->post_failures);
    r.probe_failures = atomic_load(&b->probe_failures);
    r.read_failures = atomic_load(&b->read_failures);
    r.failures = r.post_failures + r.probe_failures + r.read_failures;
    bool timed = r.seconds > 0;
    r.records_per_min = (figure){timed ? (double)r.records_sent * 60.0 / r.seconds : 0, timed};
    r.mb_per_s = (figure){timed ? (double)r.body_bytes / r.seconds / 1e6 : 0, timed};
    r.batch_p50 = pct(&batch_ms, 0.50);
    r.batch_p99 = pct(&batch_ms, 0.99);
    r.fresh_p50 = pct(&probe.fresh_ms, 0.50);
    r.fresh_p99 = pct(&probe.fresh_ms, 0.99);
    r.pg_fresh_n = pg.fresh_ms.n;
    r.pg_fresh_p50 = pct(&pg.fresh_ms, 0.50);
    r.pg_fresh_p99 = pct(&pg.fresh_ms, 0.99);
    r.read_p50 = pct(&reader.read_ms, 0.50);
    r.read_p99 = pct(&reader.read_ms, 0.99);
    if (before.have_disk && after.have_disk) {
        r.disk_written = (figure){after.disk_write_bytes - before.disk_write_bytes, true};
        r.disk_ratio = (figure){r.body_bytes ? r.disk_written.value / (double)r.body_bytes : 0, r.body_bytes > 0};
    }
    if (after.have_rss) r.peak_rss_mib = (figure){after.peak_rss_bytes / 1048576.0, true};
    print_report(b, &r);
    samples_free(&batch_ms);

    if (oom) fprintf(stderr, "medstream bench: out of memory for samples; figures are partial\n");
    exit_code = (r.failures == 0 && !atomic_load(&b->stop) && !oom) ? 0 : 1;

out:
    if (senders)
        for (uint64_t i = 0; i < cfg->connections; i++) {
            samples_free(&senders[i].batch_ms);
            if (senders[i].producer) rd_kafka_destroy(senders[i].producer);
        }
    samples_free(&probe.fresh_ms);
    samples_free(&pg.fresh_ms);
    probe_queue_free(&pg.queue);
    samples_free(&reader.read_ms);
    http_client_conn_free(main_conn);
    gen_free(&b->gen);
    free(b->patient_ids);
    probe_queue_free(&b->probes);
    pthread_mutex_destroy(&b->patient_mu);
    pthread_mutex_destroy(&b->error_mu);
    free(b);
    free(senders);
    return exit_code;
}

int bench_main(int argc, char **argv)
{
    /* Numbers in and out ("0.5", JSON, Prometheus text) are in the C locale whatever the
     * program's locale; uselocale() is per thread and restored below. */
    locale_t c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    locale_t previous = c_locale ? uselocale(c_locale) : (locale_t)0;

    bench_config cfg;
    /* clang-format off */
    const option opts[] = {
        {.name = "--config", .type = OPT_CONFIG, .metavar = "FILE",
         .help = "read these options from FILE, one `key = value` a line, keys without -- (docs/options.md); "
                 "the command line overrides it"},
        {.name = "--url", .type = OPT_STRING, .target = &cfg.url, .def = "http://127.0.0.1:8080", .metavar = "URL",
         .help = "server to load: http://HOST:PORT[/PREFIX]"},
        {.name = "--records", .type = OPT_UINT, .target = &cfg.records, .def = "100000", .min = 1,
         .max = UINT64_C(9999999999), .help = "total records to send"},
        {.name = "--size", .type = OPT_BYTES, .target = &cfg.size, .def = "20480", .min = 64, .max = 16u << 20,
         .help = "approximate size of each record (one NDJSON line); its fixed fields take ~250 bytes, so a smaller "
                 "size gives records of ~267 (--json's body_bytes: what was sent)"},
        {.name = "--batch", .type = OPT_UINT, .target = &cfg.batch, .def = "1000", .min = 1, .max = 1000000,
         .help = "records per POST"},
        {.name = "--connections", .type = OPT_UINT, .target = &cfg.connections, .def = "3", .min = 1, .max = 256,
         .help = "concurrent sending connections, one thread each"},
        {.name = "--repeat-share", .type = OPT_SHARE, .target = &cfg.repeat_share, .def = "0.5",
         .help = "share of new records whose patient identity was already sent"},
        {.name = "--update-share", .type = OPT_SHARE, .target = &cfg.update_share, .def = "0.05",
         .help = "share of records re-using an earlier record_id with new content"},
        {.name = "--probe-every", .type = OPT_UINT, .target = &cfg.probe_every, .def = "500",
         .max = UINT64_C(1000000000), .help = "sample one record in N for the freshness probe (0: no probe)"},
        {.name = "--rate", .type = OPT_UINT, .target = &cfg.rate, .def = "0", .max = UINT64_C(1000000000),
         .help = "offered load in records/min: batches leave on a fixed schedule (0: as fast as answered)"},
        {.name = "--read-rate", .type = OPT_UINT, .target = &cfg.read_rate, .def = "200", .max = 100000,
         .help = "point reads (GET /v1/patients/ID) per second during the load (0: none)"},
        {.name = "--token", .type = OPT_STRING, .target = &cfg.token, .metavar = "T",
         .help = "send \"Authorization: Bearer T\" on every request"},
        {.name = "--seed", .type = OPT_UINT, .target = &cfg.seed, .def = "1",
         .help = "RNG seed (same seed, same records)"},
        {.name = "--kafka-brokers", .type = OPT_STRING, .target = &cfg.kafka_brokers, .metavar = "HOST:PORT[,...]",
         .help = "produce the records into Kafka (with --kafka-topic) instead of POSTing them; freshness is "
                 "produce to visible"},
        {.name = "--kafka-topic", .type = OPT_STRING, .target = &cfg.kafka_topic, .metavar = "TOPIC",
         .help = "topic the server consumes"},
        {.name = "--postgres", .type = OPT_STRING, .target = &cfg.postgres, .metavar = "URL",
         .help = "also measure freshness in PostgreSQL (the server's --postgres database): send to row visible in "
                 "SQL"},
        {.name = "--run-id", .type = OPT_STRING, .target = &cfg.run_id, .metavar = "S",
         .help = "prefix for record ids, [A-Za-z0-9._-]{1,64} (default: from time and pid)"},
        {.name = "--timeout", .type = OPT_SECONDS, .target = &cfg.timeout, .def = "120", .min = 1, .max = 3600,
         .help = "network timeout of each connect, send and receive step"},
        {.name = "--json", .type = OPT_FLAG, .target = &cfg.json,
         .help = "also print the figures as one JSON object line at the end"},
        {0},
    };
    /* clang-format on */
    const options_command cmd = {
        "bench", "medstream bench [options]",
        "Load generator and freshness probe: sends synthetic patient records to a running\n"
        "medstream server and reports records/min, batch, freshness and point-read latency,\n"
        "disk bytes written per byte ingested and peak memory (from GET /metrics).\n"
        "Exit status: 0 ok, 1 runtime failure (unreachable server, failed request or probe), 2 usage error.",
        opts};
    memset(&cfg, 0, sizeof cfg);
    options_args a;
    int code;
    if (options_parse_command(&cmd, argc, argv, 1, 0, &a, stdout, stderr, &code)) {
        const char *bad = bench_check(&cfg);
        if (bad) fprintf(stderr, "medstream bench: %s (see medstream bench --help)\n", bad);
        code = bad ? 2 : bench_run_all(&cfg);
    }
    options_args_free(&a);

    if (c_locale) {
        uselocale(previous);
        freelocale(c_locale);
    }
    return code;
}
