#!/usr/bin/env python3
# run_measured.py - run a command and measure it: wall seconds, peak resident memory (getrusage maxrss:
# every resident page, file-backed mappings such as LMDB's included) and, sampled from /proc/PID/status
# every 0.1 s, the peak of its own memory (RssAnon + RssShmem: what the program itself holds, its body
# cache (a memfd) included, as opposed to mapped file pages the kernel may drop). Used by scripts/bench_import.sh.
# Usage: scripts/run_measured.py OUT.json CMD [ARG...]   (CMD's stdout and stderr pass through; the
# exit code is CMD's)
import json
import resource
import subprocess
import sys
import time


def anon_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            return sum(int(line.split()[1]) for line in f if line.startswith(("RssAnon:", "RssShmem:")))
    except OSError:
        return 0


t0 = time.monotonic()
p = subprocess.Popen(sys.argv[2:])
peak = 0
while p.poll() is None:
    peak = max(peak, anon_kib(p.pid))
    time.sleep(0.1)
secs = time.monotonic() - t0
maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
with open(sys.argv[1], "w") as f:
    json.dump({"seconds": round(secs, 2), "rss_mib": round(maxrss / 1024), "anon_mib": round(peak / 1024)}, f)
sys.exit(p.returncode)
