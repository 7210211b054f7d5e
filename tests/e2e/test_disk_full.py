# End-to-end tests of a full disk: the data directory sits on a small tmpfs (mounting one needs root;
# without it the tests are reported as SKIP), so the segment log or LMDB runs into ENOSPC.
#
# 1. Batches are ingested until one is refused. Checked: the refusal is a 503 whose error says nothing
#    was stored; none of that batch's records is readable; every record acknowledged before it is; the
#    server stays up; after a restart the store opens cleanly with every acknowledged record; and once
#    space is back (tmpfs grown), ingest works again.
# 2. With default options (1 GiB segments) on a 64 MiB tmpfs that a filler file has nearly filled: a
#    small batch is still accepted (the segment log preallocates in steps, not a whole segment);
#    filling up gives a 503 that says "disk full"; once the filler is deleted, ingest works again
#    without a restart.
# 3. The same with LMDB as the part that finds the disk full (the segment log has its step already):
#    the 503 says "disk full", not LMDB's "Input/output error", and ingest recovers without a restart.
# 4. The same with the key file as the part that finds the disk full (a batch of new patients, less room
#    left than their key slots): its write cut short still gives a 503 that says "disk full".
#
# Run: /usr/bin/python3 tests/e2e/test_disk_full.py

import os
import subprocess
import time

import harness as H
from harness import check, eq, fail, short, test

FS_BYTES = 48 << 20


def make_batch(tag, n, size):
    pad = "x" * size
    return [{"record_id": "%s-%03d" % (tag, i), "name": "Full Disk %s %d" % (tag, i % 5),
             "dob": "1970-01-0%d" % (1 + i % 5), "notes": pad} for i in range(n)]


def try_mount(path, size):
    if os.geteuid() != 0 or os.environ.get("MEDSTREAM_E2E_NO_MOUNT"):
        return False
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % size, "tmpfs", path],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return r.returncode == 0


def mounted_server(name, size, args=()):
    s = H.Server(extra_args=list(args), name=name)
    if not try_mount(s.data_dir, size):
        raise H.Skip("needs root to mount a small tmpfs for the data directory")
    H.on_exit(lambda: subprocess.run(["umount", "-l", s.data_dir], stderr=subprocess.DEVNULL))
    return s


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path, leave):
    """A filler file in path's file system that leaves `leave` bytes free; its path."""
    filler = os.path.join(path, "filler")
    size = free_bytes(path) - leave
    check(size > 0, "room for a filler file (%d bytes free)" % free_bytes(path))
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    return filler


def ingest_until_refused(s, tag, n, size, limit=400):
    """POST batches until one is refused; (acknowledged record ids, the refused batch, its error)."""
    acked = []
    for i in range(limit):
        b = make_batch("%s%03d" % (tag, i), n, size)
        r = s.ingest(b)
        if r.status == 200:
            acked.extend(x["record_id"] for x in b)
            continue
        eq(r.status, 503, "status of a batch the disk cannot hold (%s)" % short(r.text))
        return acked, b, r.json().get("error", "")
    fail("the disk never filled (%d batches acknowledged)" % limit)


def read_or_refused(s, rid, want, what):
    """GET a record while the disk is full: `want`, or 503 because its audit entry cannot be stored (a PHI
    read is not served without one); never another answer."""
    r = s.get("/v1/records/" + rid)
    if r.status == 503:
        check("audit" in r.json().get("error", ""), "%s: a 503 names the audit log: %s" % (what, short(r.text)))
    else:
        eq(r.status, want, what)


def wait_reads_served(s, rid, limit=10.0):
    """Once space is back the writer's retry (every second) commits again and PHI reads are served."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and s.get("/v1/records/" + rid).status == 503:
        time.sleep(0.2)


def check_recovers(s, acked, refused):
    for rec in refused:
        read_or_refused(s, rec["record_id"], 404, "record of the refused batch")
    time.sleep(2.5)  # the writer probes the store every second meanwhile: a probe must not call it healthy
    h = s.get("/healthz")
    eq((h.status, h.json().get("status")), (200, "degraded"), "healthz after the refusal: %s" % short(h.text))
    check("disk full" in h.json().get("store", ""), "healthz names the cause: %s" % short(h.text))
    for rid in acked[::5]:
        read_or_refused(s, rid, 200, "acknowledged record %s after the refusal" % rid)
    os.unlink(os.path.join(s.data_dir, "filler"))
    wait_reads_served(s, acked[0])
    for rec in refused:
        eq(s.get("/v1/records/" + rec["record_id"]).status, 404, "record of the refused batch, space back")
    for rid in acked[::5]:
        eq(s.get("/v1/records/" + rid).status, 200, "acknowledged record %s, space back" % rid)
    r = s.ingest(refused)
    eq(r.status, 200, "the refused batch once the filler is deleted, without a restart: %s" % short(r.text))
    eq({it["status"] for it in r.json()["items"]}, {"created"}, "statuses of the once-refused batch")
    for rec in refused:
        eq(s.get("/v1/records/" + rec["record_id"]).status, 200, "record stored after space came back")


@test(timeout=120)
def test_default_options_take_small_batches_on_a_nearly_full_disk():
    s = mounted_server("diskfull-default", 64 << 20)
    s.start()
    fill(s.data_dir, 6 << 20)
    small = make_batch("small", 5, 1000)
    r = s.ingest(small)
    eq(r.status, 200, "a small batch with 6 MiB free and default options: %s" % short(r.text))
    eq({it["status"] for it in r.json()["items"]}, {"created"}, "statuses of the small batch")
    acked, refused, err = ingest_until_refused(s, "fill", 20, 40000)
    check("nothing of this batch was stored" in err and "disk full" in err,
          "the 503 says nothing was stored and that the disk is full: %r" % err)
    check(len(acked) > 0, "batches were acknowledged until the disk filled")
    check_recovers(s, acked + [x["record_id"] for x in small], refused)
    seg = os.path.join(s.data_dir, "segments", "000000000000.seg")
    check(os.path.getsize(seg) < 64 << 20, "the segment file grew in steps (%d bytes), not to its 1 GiB"
          % os.path.getsize(seg))
    s.stop()
    subprocess.run(["umount", s.data_dir], stderr=subprocess.DEVNULL)


@test(timeout=120)
def test_lmdb_on_a_full_disk_says_disk_full():
    s = mounted_server("diskfull-lmdb", 160 << 20)
    s.start()
    s.ingest_ok(make_batch("first", 5, 1000))    # the segment log takes its first step (64 MiB) now
    fill(s.data_dir, 256 << 10)
    acked, refused, err = ingest_until_refused(s, "lmdb", 200, 300, limit=2000)
    check("nothing of this batch was stored" in err and "disk full" in err,
          "the 503 says nothing was stored and that the disk is full: %r" % err)
    check("store: " in err and "segment log" not in err, "LMDB found the disk full (the segment log had room): %r" % err)
    check_recovers(s, acked, refused)
    s.stop()
    subprocess.run(["umount", s.data_dir], stderr=subprocess.DEVNULL)


def new_patients_batch(tag, n):
    """n small records, each of a patient never seen before (a new data key slot each)."""
    return [{"record_id": "%s-%04d" % (tag, i), "name": "New Patient %s %d" % (tag, i),
             "dob": "1980-02-0%d" % (1 + i % 9), "notes": "n"} for i in range(n)]


@test(timeout=120)
def test_new_patients_on_a_full_disk_say_disk_full():
    # Each new patient's key slot goes into DIR/keys, a commit's slots in one write of up to 64 KiB: on a
    # full disk that write can be cut short, which sets no errno. Whichever part finds the disk full (the
    # key file, LMDB or the segment log), the 503 must say so.
    s = mounted_server("diskfull-keys", 96 << 20)
    s.start()
    first = new_patients_batch("first", 5)
    s.ingest_ok(first)                      # the segment log takes its first step (64 MiB) now
    fill(s.data_dir, 32 << 10)              # less than one batch's key slots (64 KiB)
    acked = [x["record_id"] for x in first]
    for i in range(400):
        b = new_patients_batch("k%03d" % i, 1000)
        r = s.ingest(b)
        if r.status == 200:
            acked.extend(x["record_id"] for x in b)
            continue
        eq(r.status, 503, "status of a batch the disk cannot hold (%s)" % short(r.text))
        err = r.json().get("error", "")
        check("nothing of this batch was stored" in err and "disk full" in err,
              "the 503 says nothing was stored and that the disk is full: %r" % err)
        check_recovers(s, acked, b)
        break
    else:
        fail("the disk never filled (%d records acknowledged)" % len(acked))
    s.stop()
    subprocess.run(["umount", s.data_dir], stderr=subprocess.DEVNULL)


@test(timeout=120)
def test_full_disk_gets_503_and_a_clean_store():
    args = ["--segment-size", "8MiB", "--max-body", "2MiB", "--body-cache", "0"]
    s = H.Server(extra_args=args, name="diskfull")
    mounted = try_mount(s.data_dir, FS_BYTES)
    if not mounted:
        raise H.Skip("needs root to mount a small tmpfs for the data directory")
    H.on_exit(lambda: subprocess.run(["umount", "-l", s.data_dir], stderr=subprocess.DEVNULL))
    s.start()
    acked, refused = [], None
    for i in range(400):
        batch = make_batch("b%03d" % i, 20, 40000)
        r = s.ingest(batch)
        if r.status == 200:
            acked.extend(b["record_id"] for b in batch)
            continue
        eq(r.status, 503, "status of a batch the disk cannot hold (%s)" % short(r.text))
        refused = batch
        err = r.json().get("error", "")
        check("nothing of this batch was stored" in err, "503 error says nothing was stored: %r" % err)
        break
    check(refused is not None, "the disk never filled (%d batches acknowledged)" % (len(acked) // 20))
    check(len(acked) > 0, "some batches were acknowledged before the disk filled")
    for rec in refused:
        read_or_refused(s, rec["record_id"], 404, "record of the refused batch")
    eq(s.get("/healthz").status, 200, "healthz after the refusal")
    for rid in acked[::7]:
        read_or_refused(s, rid, 200, "acknowledged record %s after the refusal" % rid)
    s.stop()
    s.start()
    for rid in acked[::7]:
        read_or_refused(s, rid, 200, "acknowledged record %s after restart, disk still full" % rid)
    r = subprocess.run(["mount", "-o", "remount,size=%d" % (4 * FS_BYTES), s.data_dir])
    eq(r.returncode, 0, "growing the tmpfs")
    wait_reads_served(s, acked[0])
    for rid in acked:
        eq(s.get("/v1/records/" + rid).status, 200, "acknowledged record %s after restart, space back" % rid)
    for rec in refused:
        eq(s.get("/v1/records/" + rec["record_id"]).status, 404, "record of the refused batch after restart")
    r = s.ingest(refused)
    eq(r.status, 200, "the refused batch once space is back: %s" % short(r.text))
    statuses = {it["status"] for it in r.json()["items"]}
    eq(statuses, {"created"}, "statuses of the once-refused batch")
    for rec in refused:
        eq(s.get("/v1/records/" + rec["record_id"]).status, 200, "record stored after space came back")
    s.stop()
    subprocess.run(["umount", s.data_dir], stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    H.main()
