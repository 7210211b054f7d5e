# End-to-end test of a full disk: the data directory sits on a small tmpfs (mounting one needs root;
# without it the test is reported as SKIP), so the segment log or LMDB runs into ENOSPC. Batches are ingested until one is refused. Checked:
# the refusal is a 503 whose error says nothing was stored; none of that batch's records is readable;
# every record acknowledged before it is; the server stays up; after a restart the store opens cleanly
# with every acknowledged record; and once space is back (tmpfs grown), ingest works again.
#
# Run: /usr/bin/python3 tests/e2e/test_disk_full.py

import os
import subprocess

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
        eq(s.get("/v1/records/" + rec["record_id"]).status, 404, "record of the refused batch")
    eq(s.get("/healthz").status, 200, "healthz after the refusal")
    for rid in acked[::7]:
        eq(s.get("/v1/records/" + rid).status, 200, "acknowledged record %s after the refusal" % rid)
    s.stop()
    s.start()
    for rid in acked:
        r = s.get("/v1/records/" + rid)
        eq(r.status, 200, "acknowledged record %s after restart" % rid)
    r = subprocess.run(["mount", "-o", "remount,size=%d" % (4 * FS_BYTES), s.data_dir])
    eq(r.returncode, 0, "growing the tmpfs")
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
