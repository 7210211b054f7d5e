# medstream - see README.md. `make` builds build/medstream; `make test` builds with ASan+UBSan and runs
# every test; `make demo` runs the main job; `make fuzz` runs the parser fuzzer for FUZZ_SECONDS.
CC      ?= cc
CFLAGS_COMMON = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread -g -I/usr/include/postgresql
CFLAGS  ?= -O2
LIBS    = -llmdb -lmicrohttpd -lutf8proc -lxxhash -lcrypto -largon2 -lrdkafka -lpq -lpthread
SAN     = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

SRC     = $(wildcard src/*.c)
LIBSRC  = $(filter-out src/main.c,$(SRC))
OBJ     = $(SRC:src/%.c=build/obj/%.o)
SAN_OBJ = $(SRC:src/%.c=build/san/%.o)
SAN_LIBOBJ = $(filter-out build/san/main.o,$(SAN_OBJ))
UNIT_SRC = $(wildcard tests/unit/test_*.c)
UNIT_BIN = $(UNIT_SRC:tests/unit/%.c=build/san/%)
FUZZ_SECONDS ?= 60

.PHONY: all test unit e2e demo fuzz clean bench bench-token
all: build/medstream

build/obj/%.o: src/%.c $(wildcard src/*.h) | build/obj
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -c $< -o $@
build/san/%.o: src/%.c $(wildcard src/*.h) | build/san
	$(CC) $(CFLAGS_COMMON) -O1 $(SAN) -c $< -o $@
build/obj build/san build/fuzz:
	mkdir -p $@

# The Kafka mock cluster for tests and demos (librdkafka's, real protocol on loopback).
build/kafka_mock: tools/kafka_mock.c | build/obj
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -o $@ $< -lrdkafka

build/medstream: $(OBJ)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -o $@ $(OBJ) $(LIBS)
build/san/medstream: $(SAN_OBJ)
	$(CC) $(CFLAGS_COMMON) -O1 $(SAN) -o $@ $(SAN_OBJ) $(LIBS)
build/san/test_%: tests/unit/test_%.c tests/unit/unit.h $(SAN_LIBOBJ)
	$(CC) $(CFLAGS_COMMON) -O1 $(SAN) -Isrc -o $@ $< $(SAN_LIBOBJ) $(LIBS) -lcmocka

# Every test: unit tests (cmocka) and end-to-end tests over real HTTP, all on the sanitizer build.
test: build/san/medstream build/kafka_mock $(UNIT_BIN)
	@bash tests/run_all.sh $(UNIT_BIN)

unit: $(UNIT_BIN)
	@bash tests/run_all.sh --unit-only $(UNIT_BIN)

demo: build/medstream
	@bash scripts/demo.sh

# libFuzzer over the record scanner (clang); bounded time.
build/fuzz/fuzz_record: fuzz/fuzz_record.c $(LIBSRC) | build/fuzz
	clang $(CFLAGS_COMMON) -O1 -fsanitize=fuzzer,address,undefined -Isrc -o $@ fuzz/fuzz_record.c $(LIBSRC) $(LIBS)
fuzz: build/fuzz/fuzz_record
	@mkdir -p build/fuzz/corpus && cp -n fuzz/corpus/* build/fuzz/corpus/ 2>/dev/null || true
	build/fuzz/fuzz_record -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -timeout=5 -rss_limit_mb=2048 build/fuzz/corpus

# In-process cost of one bearer-token check (bench/token_check.c), on a throwaway data directory.
build/token_check: bench/token_check.c $(filter-out build/obj/main.o,$(OBJ))
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -Isrc -o $@ $< $(filter-out build/obj/main.o,$(OBJ)) $(LIBS)
bench-token: build/medstream build/token_check
	@d=$$(mktemp -d) && build/medstream init $$d/data >/dev/null && build/token_check $$d/data; rm -rf $$d

clean:
	rm -rf build
