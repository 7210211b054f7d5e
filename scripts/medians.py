#!/usr/bin/env python3
# The medians of `medstream bench --json` runs: reads the JSON lines of FILE (other lines are skipped) and
# prints the median of every numeric figure. Used by scripts/bench_reference.sh and bench_kafka.sh.
# Usage: scripts/medians.py FILE
import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
if not rows:
    sys.exit("no run produced figures")


def med(k):
    v = [r[k] for r in rows if r.get(k) is not None]
    return statistics.median(v) if v else None


print("medians of %d runs:" % len(rows))
for k in rows[0]:
    if isinstance(rows[0][k], (int, float)) and not isinstance(rows[0][k], bool):
        print("  %-28s %s" % (k, med(k)))
