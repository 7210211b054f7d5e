# medstream - see README.md. `make` builds build/medstream and build/medstream-bench; `make test` builds
# with ASan+UBSan and runs every test; `make demo` runs the main job; `make fuzz` runs the parser fuzzers
# (records, then CSV) for FUZZ_SECONDS in all; `make openapi` regenerates docs/openapi.json from the route table and `make docs`
# docs/options.md from the option tables.
#
# The source tree is the architecture: src/<layer>/ folders, each layer calling only down
# (base < pipeline < store < access < ingest < import, read < export < sinks, notify, views < api < main.c; parquet over base
# alone, for export and the sinks); includes name the layer
# ("store/store.h"). Every layer is one library of objects; the server is src/main.c over it, the
# benchmark tools (tools/bench/) are a second binary over the same library.
CC      ?= cc
# Hyperscan (libhyperscan-dev: the signal rules of src/notify) through its pkg-config file
HS_CFLAGS := $(shell pkg-config --cflags libhs 2>/dev/null || echo -I/usr/include/hs)
HS_LIBS   := $(shell pkg-config --libs libhs 2>/dev/null || echo -lhs)
CFLAGS_COMMON = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread -g -Isrc -Ibuild/gen -I/usr/include/postgresql $(HS_CFLAGS)
CFLAGS  ?= -O2
LIBS    = -lz -lzstd -lsnappy -llmdb -lmicrohttpd -lutf8proc -lxxhash -lssl -lcrypto -largon2 -lrdkafka -lpq $(HS_LIBS) -lpthread
SAN     = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

# the console (issue 14): web/'s files, embedded into the library by tools/console_embed.c (web/README.md)
WEBSRC  = $(sort $(wildcard web/*.html web/*.css web/*.js web/*.svg))
CONSOLE_GEN = build/gen/console_assets.c
LIBSRC  = $(wildcard src/*/*.c) $(CONSOLE_GEN)
# the HIPAA Safe Harbor restricted 3-digit ZIP areas (issue 15): data/zip3_restricted.txt, the truth, as a
# C initializer list for src/pipeline/transforms.c
ZIP3_GEN = build/gen/zip3_restricted.inc
HEADERS = $(wildcard src/*/*.h src/*.h)
# the command line (src/main.c and the commands beside it): only in the medstream binary
MAINSRC = $(wildcard src/*.c)
BENCHSRC = $(wildcard tools/bench/*.c)
BENCHHDR = $(wildcard tools/bench/*.h)
OBJ     = $(LIBSRC:%.c=build/obj/%.o)
SAN_OBJ = $(LIBSRC:%.c=build/san/%.o)
BENCH_OBJ = $(BENCHSRC:%.c=build/obj/%.o)
SAN_BENCH_OBJ = $(BENCHSRC:%.c=build/san/%.o)
UNIT_SRC = $(wildcard tests/unit/test_*.c)
UNIT_BIN = $(UNIT_SRC:tests/unit/%.c=build/san/%)
FUZZ_SECONDS ?= 60

.PHONY: all test unit e2e demo fuzz fuzz-csv fuzz-build clean bench bench-token bench-log bench-csv bench-parquet bench-rules bench-counter-ops bench-seal bench-scan fuzz-counter fuzz-codec fuzz-wire fuzz-files fuzz-http fuzz-tar openapi docs
all: build/medstream build/medstream-bench

build/obj/%.o: %.c $(HEADERS) $(BENCHHDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -c $< -o $@
build/san/%.o: %.c $(HEADERS) $(BENCHHDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -O1 $(SAN) -c $< -o $@
build/fuzz:
	mkdir -p $@

# The console's files as one generated C file: each file's bytes, content type, served path and hash.
build/console_embed: tools/console_embed.c
	@mkdir -p build
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -o $@ $< -lcrypto
$(CONSOLE_GEN): build/console_embed $(WEBSRC)
	@mkdir -p $(dir $@)
	build/console_embed $@ $(WEBSRC)
# One "NNN", a line; a line that is not a comment, blank or three digits fails the build.
$(ZIP3_GEN): data/zip3_restricted.txt
	@mkdir -p $(dir $@)
	awk '/^#/ || NF == 0 { next } $$1 !~ /^[0-9][0-9][0-9]$$/ || NF != 1 { print FILENAME ":" NR ": not a 3-digit ZIP prefix" > "/dev/stderr"; exit 1 } { printf "\"%s\",\n", $$1 }' $< > $@.tmp && mv $@.tmp $@
build/obj/src/pipeline/transforms.o build/san/src/pipeline/transforms.o: $(ZIP3_GEN)

# The Kafka mock cluster for tests and demos (librdkafka's, real protocol on loopback).
# LD_PRELOAD fault injection of LMDB's writes (tests/e2e/test_lmdb_faults.py)
build/libmsfault.so: tests/fault/ld_fault.c
	@mkdir -p build
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -shared -fPIC -o $@ $< -ldl

build/kafka_mock: tools/kafka_mock.c
	@mkdir -p build
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -o $@ $< -lrdkafka

build/medstream: $(OBJ) $(MAINSRC:%.c=build/obj/%.o)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -o $@ $^ $(LIBS)
build/medstream-bench: $(OBJ) $(BENCH_OBJ)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -o $@ $^ $(LIBS)
build/san/medstream: $(SAN_OBJ) $(MAINSRC:%.c=build/san/%.o)
	$(CC) $(CFLAGS_COMMON) -O1 $(SAN) -o $@ $^ $(LIBS)
build/san/medstream-bench: $(SAN_OBJ) $(SAN_BENCH_OBJ)
	$(CC) $(CFLAGS_COMMON) -O1 $(SAN) -o $@ $^ $(LIBS)
build/san/test_%: tests/unit/test_%.c tests/unit/unit.h tests/unit/unit_store.h $(SAN_OBJ)
	$(CC) $(CFLAGS_COMMON) -O1 $(SAN) -o $@ $< $(SAN_OBJ) $(LIBS) -lcmocka

# Every test: unit tests (cmocka) and end-to-end tests over real HTTP, all on the sanitizer build.
test: build/san/medstream build/san/medstream-bench build/kafka_mock build/san/parquet_sample build/libmsfault.so $(UNIT_BIN)
	@bash tests/run_all.sh $(UNIT_BIN)

unit: $(UNIT_BIN)
	@bash tests/run_all.sh --unit-only $(UNIT_BIN)

demo: all
	@bash scripts/demo.sh

# The option reference comes from the option tables (`medstream help-reference`); tests/e2e/test_cli.py
# fails when the checked-in file differs from what the program prints.
docs: build/medstream build/medstream-bench
	build/medstream help-reference > docs/options.md.tmp && mv docs/options.md.tmp docs/options.md

# libFuzzer over the record scanner and the CSV reader (clang); bounded time: FUZZ_SECONDS in all, half each.
FUZZ_HALF = $$(( $(FUZZ_SECONDS) / 2 > 0 ? $(FUZZ_SECONDS) / 2 : 1 ))
# The library is compiled once for the fuzzers (coverage-instrumented, build/fuzz/obj/) and linked into each.
FUZZ_OBJ = $(LIBSRC:%.c=build/fuzz/obj/%.o)
# a UBSan report stops a fuzzer, as an ASan one does
FUZZ_SAN = -fno-sanitize-recover=undefined
FUZZ_BIN = build/fuzz/fuzz_record build/fuzz/fuzz_csv build/fuzz/fuzz_counter build/fuzz/fuzz_codec \
	build/fuzz/fuzz_wire build/fuzz/fuzz_files build/fuzz/fuzz_http_answer build/fuzz/fuzz_tar
# kept after the link (a pattern rule's objects are intermediate files make would delete): an edit then
# recompiles one object, not the library
.SECONDARY: $(FUZZ_OBJ)
build/fuzz/obj/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	clang $(CFLAGS_COMMON) -O1 -fsanitize=fuzzer-no-link,address,undefined $(FUZZ_SAN) -c $< -o $@
build/fuzz/obj/src/pipeline/transforms.o: $(ZIP3_GEN)
build/fuzz/fuzz_%: fuzz/fuzz_%.c $(FUZZ_OBJ) | build/fuzz
	clang $(CFLAGS_COMMON) -O1 -fsanitize=fuzzer,address,undefined $(FUZZ_SAN) -o $@ $< $(FUZZ_OBJ) $(LIBS)
fuzz-build: $(FUZZ_BIN)
# The counter definitions and the trusted member splitter (issue 13), on their own: make fuzz-counter
fuzz-counter: build/fuzz/fuzz_counter
	@mkdir -p build/fuzz/corpus_counter && cp -n fuzz/corpus_counter/* build/fuzz/corpus_counter/ 2>/dev/null || true
	build/fuzz/fuzz_counter -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=5 -rss_limit_mb=2048 build/fuzz/corpus_counter
# The store's decoders of stored bytes (a corrupted or tampered data directory), on their own: make fuzz-codec
fuzz-codec: build/fuzz/fuzz_codec
	@mkdir -p build/fuzz/corpus_codec && cp -n fuzz/corpus_codec/* build/fuzz/corpus_codec/ 2>/dev/null || true
	build/fuzz/fuzz_codec -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=5 -rss_limit_mb=2048 \
		build/fuzz/corpus_codec
# Bytes from Kafka or another node (changelog, T.seed, message headers): make fuzz-wire
fuzz-wire: build/fuzz/fuzz_wire
	@mkdir -p build/fuzz/corpus_wire && cp -n fuzz/corpus_wire/* build/fuzz/corpus_wire/ 2>/dev/null || true
	build/fuzz/fuzz_wire -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=5 -rss_limit_mb=2048 \
		build/fuzz/corpus_wire
# Files and texts read from disk or the configuration (config, schema, counters.state, lake log, checkpoints,
# rules, times, query parameters): make fuzz-files
fuzz-files: build/fuzz/fuzz_files
	@mkdir -p build/fuzz/corpus_files && cp -n fuzz/corpus_files/* build/fuzz/corpus_files/ 2>/dev/null || true
	build/fuzz/fuzz_files -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=5 -rss_limit_mb=2048 \
		build/fuzz/corpus_files
# The HTTP client reading another server's answer (import to a server, export from one, webhooks): make fuzz-http
fuzz-http: build/fuzz/fuzz_http_answer
	@mkdir -p build/fuzz/corpus_http_answer && cp -n fuzz/corpus_http_answer/* build/fuzz/corpus_http_answer/ \
		2>/dev/null || true
	build/fuzz/fuzz_http_answer -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=5 -rss_limit_mb=2048 \
		build/fuzz/corpus_http_answer
# The tar reader of `export --url` (an archive from a server, extracted under a directory): make fuzz-tar
fuzz-tar: build/fuzz/fuzz_tar
	@mkdir -p build/fuzz/corpus_tar && cp -n fuzz/corpus_tar/*.tar build/fuzz/corpus_tar/ 2>/dev/null || true
	build/fuzz/fuzz_tar -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -timeout=5 -rss_limit_mb=2048 \
		-dict=fuzz/tar.dict build/fuzz/corpus_tar
fuzz: build/fuzz/fuzz_record build/fuzz/fuzz_csv
	@mkdir -p build/fuzz/corpus && cp -n fuzz/corpus/* build/fuzz/corpus/ 2>/dev/null || true
	build/fuzz/fuzz_record -max_total_time=$(FUZZ_HALF) -max_len=8192 -timeout=5 -rss_limit_mb=2048 build/fuzz/corpus
	@$(MAKE) --no-print-directory fuzz-csv FUZZ_SECONDS=$(FUZZ_HALF)
fuzz-csv: build/fuzz/fuzz_csv
	@mkdir -p build/fuzz/corpus_csv && cp -n fuzz/corpus_csv/* build/fuzz/corpus_csv/ 2>/dev/null || true
	build/fuzz/fuzz_csv -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=5 -rss_limit_mb=2048 build/fuzz/corpus_csv

# In-process cost of one bearer-token check (bench/token_check.c), on a throwaway data directory.
build/token_check: bench/token_check.c $(OBJ)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -o $@ $^ $(LIBS)
bench-token: build/medstream build/token_check
	@d=$$(mktemp -d) && build/medstream init $$d/data >/dev/null && build/token_check $$d/data; rm -rf $$d

# The OpenAPI document of the route table (src/api/openapi.c), checked in as docs/openapi.json; the
# end-to-end test test_openapi.py fails while the served document and the checked-in one differ.
build/openapi_doc: tools/openapi_doc.c $(OBJ)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -o $@ $^ $(LIBS)
openapi: build/openapi_doc
	build/openapi_doc > docs/openapi.json.tmp && mv docs/openapi.json.tmp docs/openapi.json

# What one counter operation costs in process (bench/counter_ops.c): counter_add and counter_count, 72h at 1s and 1m.
EVENTS ?= 2000000
build/counter_ops: bench/counter_ops.c $(OBJ)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -o $@ $^ $(LIBS)
bench-counter-ops: build/counter_ops
	@build/counter_ops $(EVENTS)

# What one access-log line costs (bench/log_line.c): format + write, text and JSON, to /dev/null, a file, a pipe.
build/log_line: bench/log_line.c $(OBJ)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -o $@ $^ $(LIBS)
bench-log: build/log_line
	@build/log_line

# How fast CSV becomes record JSON on one core (bench/csv_convert.c): ~1 GiB of ~20 KB rows in 16 MiB chunks.
CSV_MB ?= 1024
build/csv_convert: bench/csv_convert.c $(OBJ)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -o $@ $^ $(LIBS)
bench-csv: build/csv_convert
	@build/csv_convert $(CSV_MB)

# How fast the Parquet writer encodes ~20 KB records' columns (bench/parquet_encode.c): SNAPPY, ZSTD and none,
# MB/s of the records' JSON and the file size against it.
PARQUET_MB ?= 256
build/parquet_encode: bench/parquet_encode.c $(OBJ)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -o $@ $^ $(LIBS)
bench-parquet: build/parquet_encode
	@build/parquet_encode $(PARQUET_MB)

# How fast the signal rules match on one core (bench/rules_match.c): RULES_N rules (RULES_REGEX of them regexes)
# over RULES_RECORDS records with a RULES_KB KiB notes field, as the notifier matches them.
RULES_N ?= 1000
RULES_RECORDS ?= 5000
RULES_KB ?= 20
RULES_REGEX ?= 10
build/rules_match: bench/rules_match.c $(OBJ)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -o $@ $^ $(LIBS)
bench-rules: build/rules_match
	@build/rules_match $(RULES_N) $(RULES_RECORDS) $(RULES_KB) $(RULES_REGEX)

# What encryption at rest costs per record on one core (bench/seal_records.c): seal/open 20 KB and 200 B records,
# open one value in place, the identity MAC.
build/seal_records: bench/seal_records.c $(OBJ)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -o $@ $^ $(LIBS)
bench-seal: build/seal_records
	@build/seal_records

# What stages 1-3 cost a request thread per record on one core (bench/scan_records.c): record_prepare_body over
# 1,000 records of ~20 KB and of ~200 B, and json_scan_object alone.
build/scan_records: bench/scan_records.c $(OBJ)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -o $@ $^ $(LIBS)
bench-scan: build/scan_records
	@build/scan_records

# Parquet files from NDJSON rows or a generator (tools/parquet_sample.c), read back by tests/e2e/test_parquet.py
# with pyarrow and DuckDB; the sanitizer build is the one the tests use.
build/parquet_sample: tools/parquet_sample.c $(OBJ)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -o $@ $^ $(LIBS)
build/san/parquet_sample: tools/parquet_sample.c $(SAN_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -O1 $(SAN) -o $@ $^ $(LIBS)

clean:
	rm -rf build
