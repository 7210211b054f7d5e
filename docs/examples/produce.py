#!/usr/bin/python3
# produce.py - an example producer for a medstream cluster (README "Cluster: past one machine"): sends
# NDJSON records to topic T, each to the partition that owns its shard, keyed by the shard, as medstream's
# own producers (`medstream import --kafka`, `medstream bench --kafka-...`) do.
#
#   shard     = XXH3-64(identity key) mod 4096     identity key = normalized name, NUL, dob (YYYY-MM-DD)
#   partition = shard mod P                        P = T's partition count (a power of two)
#   key       = the shard number in decimal
#
# The identity key must be medstream's (src/pipeline/identity.h): NFKC, case folded, default-ignorable
# code points removed, spaces trimmed and collapsed to one. normalize() below is exact for names in
# ASCII and the Latin scripts; for other scripts use `medstream import --kafka`, or accept that a record
# this gets wrong lands on another partition: the node that consumes it forwards it to the right one
# (it is still stored once, at the cost of one more Kafka write).
#
# Needs Debian's python3-confluent-kafka and python3-xxhash (scripts/deps.sh).
# Run: docs/examples/produce.py --brokers HOST:9092 --topic records FILE.ndjson   (no FILE: standard input)

import argparse
import json
import sys
import unicodedata

import xxhash
from confluent_kafka import Producer

SHARDS = 4096
NAME_FIELD, DOB_FIELD = "name", "dob"  # the schema's identity fields (medstream's defaults)
IGNORABLE = {0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x3164, 0xFEFF, 0xFFA0}


def ignorable(ch):
    c = ord(ch)
    return (c in IGNORABLE or 0x180B <= c <= 0x180F or 0x200B <= c <= 0x200F or 0x202A <= c <= 0x202E
            or 0x2060 <= c <= 0x206F or 0xFE00 <= c <= 0xFE0F or 0x1BCA0 <= c <= 0x1BCA3 or 0x1D173 <= c <= 0x1D17A
            or 0xE0000 <= c <= 0xE0FFF)


def normalize(name):
    """medstream's name normalization: NFKC with case folding, ignorables dropped, spaces collapsed."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKD", name).casefold())
    return " ".join("".join(ch for ch in folded if not ignorable(ch)).split())


def shard_of(record):
    key = normalize(record[NAME_FIELD]).encode() + b"\0" + record[DOB_FIELD].encode()
    return xxhash.xxh3_64_intdigest(key) % SHARDS


def main():
    ap = argparse.ArgumentParser(description="send NDJSON records to a medstream cluster's topic")
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("file", nargs="?")
    a = ap.parse_args()
    p = Producer({"bootstrap.servers": a.brokers, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    parts = len(p.list_topics(a.topic, timeout=15).topics[a.topic].partitions)
    if parts < 1 or parts & (parts - 1) or parts > SHARDS:
        sys.exit("topic %s has %d partitions: a medstream cluster's topic needs a power of two" % (a.topic, parts))
    failed = []

    def delivered(err, _msg):
        if err is not None:
            failed.append(err)

    with open(a.file, encoding="utf-8") if a.file else sys.stdin as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)  # a record without a name or dob: medstream rejects it (dead letter)
            shard = shard_of(record) if NAME_FIELD in record and DOB_FIELD in record else 0
            while True:
                try:
                    p.produce(a.topic, value=line.rstrip("\n").encode(), key=str(shard).encode(),
                              partition=shard % parts, on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    p.poll(0.1)
            p.poll(0)
    if p.flush(120) or failed:
        sys.exit("not every record was delivered (%d failed)" % len(failed))


if __name__ == "__main__":
    main()
