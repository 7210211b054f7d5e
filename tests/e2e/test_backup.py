# End-to-end tests of `medstream backup --data DIR --out OUT` (src/store/backup.c; src/store/README.md,
# invariant 7: a backup is one instant). Checked with real processes, the server on 8 MiB segments so that
# the copy spans several segment files:
#   - a backup taken while two clients ingest is a data directory a second `serve` opens (on another
#     port): every record acknowledged before the backup began is there and reads equal (records and
#     patients), nothing sent after the backup ended is; `medstream audit verify` passes on the copy; the
#     copy takes new records and reads them back;
#   - the copy's segment files end exactly at the log end its LMDB records (the last file is cut there,
#     no file past it), hold the original's bytes, and the copy holds no lock file and no admin.password;
#   - backup takes no lock: it runs beside serve, says so, and serve still holds its lock (a second serve
#     is refused) and goes on ingesting;
#   - an --out that exists and is not empty (or is a file) is refused, and left as it was;
#   - restore as the README says: stop the server, move the copy into place, start;
#   - a backup killed partway (MEDSTREAM_TEST_BACKUP_CRASH) leaves no OUT, only a partial copy beside it,
#     which the next backup to the same OUT removes.
#
# Run: /usr/bin/python3 tests/e2e/test_backup.py [NAME_SUBSTRING...]   (see harness.py, run.sh)

import os
import re
import shutil
import subprocess
import threading
import time

import harness as H
from harness import check, eq, fail, short, test

SEGMENT = 8 << 20
SERVE_ARGS = ["--segment-size", "8MiB", "--max-body", "2MiB"]
BATCH = 40
NOTES = 12000  # bytes of notes per record: ~0.5 MB per batch, so a few segments fill up


def run(args, timeout=60):
    try:
        r = subprocess.run([H.BIN] + args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        fail("`medstream %s` did not exit within %ds" % (" ".join(args), timeout))
    return r.returncode, r.stdout, r.stderr


BACKUP_RE = re.compile(r"^backup of \S+ in \S+: commit (\d+) \(\S+\), log end (\d+) in (\d+) segment files of (\d+) "
                       r"bytes, LMDB (\d+) bytes")


def backup(data, out):
    """Run the backup; (commit position, log end, segment files, segment size, stdout)."""
    rc, out_text, err = run(["backup", "--data", data, "--out", out])
    eq(rc, 0, "backup exit code (%s %s)" % (short(out_text), short(err)))
    m = BACKUP_RE.match(out_text)
    check(m, "backup's summary: %s" % short(out_text))
    commit, log_end, files, seg = (int(m.group(i)) for i in range(1, 5))
    return commit, log_end, files, seg, out_text


class CopyServer(H.Server):
    """A server on a copy of another server's data directory: no init, and the original's admin password
    (the copy has the accounts, not admin.password)."""

    def __init__(self, data_dir, password, name):
        H.Server.__init__(self, extra_args=SERVE_ARGS, name=name)
        self.data_dir = data_dir
        self.initialized = True
        self.password = password

    def admin_password(self):
        return self.password


class Loader:
    """Client threads that POST batches of new patients' records until stopped, remembering for every
    batch when it was sent and when it was acknowledged (monotonic clock)."""

    def __init__(self, server, tag, threads=2):
        self.server = server
        self.tag = tag
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.batches = []        # (sent_at, acked_at, [record ids])
        self.problems = []
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)]

    def start(self):
        for th in self.threads:
            th.start()

    def finish(self):
        self.stop.set()
        for th in self.threads:
            th.join(30)
        check(not any(th.is_alive() for th in self.threads), "the loader threads ended")
        check(not self.problems, "every batch was acknowledged: %s" % self.problems[:3])

    def acked(self):
        with self.lock:
            return len(self.batches)

    def sent_after(self, t):
        with self.lock:
            return len([b for b in self.batches if b[0] > t])

    def _run(self, t):
        client = H.KeepAliveClient(self.server.port, timeout=30,
                                   headers={"Authorization": "Bearer " + self.server.token,
                                            "Content-Type": "application/x-ndjson"})
        b = 0
        try:
            while not self.stop.is_set():
                ids = ["bk-%s-t%d-b%d-%d" % (self.tag, t, b, i) for i in range(BATCH)]
                recs = [{"record_id": rid, "name": "Backup %s %s" % (self.tag, H.rand_token(8)),
                         "dob": "1970-01-%02d" % (1 + i % 28), "type": "visit", "notes": os.urandom(NOTES // 2).hex()}
                        for i, rid in enumerate(ids)]
                sent = time.monotonic()
                r = client.request("POST", "/v1/records", body=H.ndjson(recs))
                acked = time.monotonic()
                if r.status != 200 or {it["status"] for it in r.json()["items"]} != {"created"}:
                    with self.lock:
                        self.problems.append("batch %d: HTTP %d %s" % (b, r.status, short(r.text)))
                    return
                with self.lock:
                    self.batches.append((sent, acked, ids))
                b += 1
        except Exception as e:  # noqa: BLE001 - reported as a test failure by finish()
            with self.lock:
                self.problems.append("%s: %s" % (e.__class__.__name__, e))
        finally:
            client.close()


def segment_files(d):
    names = sorted(os.listdir(d))
    check(all(re.match(r"^\d{12}\.seg$", n) for n in names), "only segment files in %s: %s" % (d, names))
    return names


def check_segments(original, copy, log_end, files, seg):
    """The copy's segment files end exactly at log_end: whole files below its segment, that one cut at it,
    none past it; each holds the original's bytes."""
    eq(seg, SEGMENT, "segment size the store recorded")
    check(log_end > 2 * SEGMENT, "the copy spans several segments (log end %d)" % log_end)
    eq(log_end % 4096, 0, "log end on a 4 KiB boundary")
    names = segment_files(os.path.join(copy, "segments"))
    last = (log_end - 1) // SEGMENT
    eq(names, ["%012d.seg" % i for i in range(last + 1)], "segment files of the copy")
    eq(files, len(names), "segment files the backup reported")
    for i, n in enumerate(names):
        c = os.path.join(copy, "segments", n)
        o = os.path.join(original, "segments", n)
        size = os.path.getsize(c)
        if i == last:
            eq(size, log_end - last * SEGMENT, "size of the last copied segment (cut at the log end)")
            check(size == SEGMENT or os.path.getsize(o) > size,
                  "the original's segment %s goes on past the copy's end (%d > %d)" % (n, os.path.getsize(o), size))
        else:
            check(size <= SEGMENT, "segment %s within the segment size" % n)
        with open(c, "rb") as fc, open(o, "rb") as fo:
            while True:
                a = fc.read(1 << 20)
                if not a:
                    break
                check(a == fo.read(len(a)), "segment %s holds the original's bytes" % n)


def read_json(server, path):
    r = server.get(path)
    return r.status, (r.json() if r.status == 200 else None)


@test(timeout=240)
def test_backup_while_ingesting_is_a_consistent_copy_a_second_server_serves():
    s = H.Server(extra_args=SERVE_ARGS, name="backup-live")
    s.start()
    loader = Loader(s, "live")
    loader.start()
    deadline = time.monotonic() + 60
    while loader.acked() < 45 and time.monotonic() < deadline and not loader.problems:
        time.sleep(0.05)
    check(loader.acked() >= 45, "batches acknowledged before the backup (%d; %s)" % (loader.acked(), loader.problems))
    copy = os.path.join(s.base, "copy")
    began = time.monotonic()
    commit, log_end, files, seg, summary = backup(s.data_dir, copy)
    ended = time.monotonic()
    check("(copied while medstream pid %d (serve, since " % s.proc.pid in summary,
          "backup says it copied a live store: %s" % short(summary))
    while loader.sent_after(ended) < 4 and not loader.problems:
        time.sleep(0.05)  # a few batches sent after the backup ended
    loader.finish()
    before = [rid for sent, acked, ids in loader.batches if acked < began for rid in ids]
    after = [rid for sent, acked, ids in loader.batches if sent > ended for rid in ids]
    check(len(before) >= 45 * BATCH and after, "records acknowledged before (%d) and sent after (%d) the backup"
          % (len(before), len(after)))

    print("  backup at commit %d in %.2f s: log end %d in %d segment files; %d records acknowledged before it began, "
          "%d sent after it ended" % (commit, ended - began, log_end, files, len(before), len(after)), flush=True)
    check_segments(s.data_dir, copy, log_end, files, seg)
    eq(sorted(os.listdir(copy)), ["keys", "lmdb", "segments"],
       "what the copy holds (the data keys; no lock file, no admin.password)")
    eq(sorted(os.listdir(os.path.join(copy, "lmdb"))), ["data.mdb"], "the copy's LMDB directory")

    rc, out, err = run(["audit", "verify", "--data", copy])
    eq(rc, 0, "audit verify on the copy (%s %s)" % (short(out), short(err)))
    check(out.startswith("audit log intact: "), "audit verify's answer on the copy: %s" % short(out))

    c = CopyServer(copy, s.admin_password(), "backup-copy")
    c.start()
    for rid in before:
        st_o, rec_o = read_json(s, "/v1/records/" + rid)
        st_c, rec_c = read_json(c, "/v1/records/" + rid)
        eq(st_o, 200, "record %s on the original" % rid)
        eq(st_c, 200, "record %s, acknowledged before the backup began, on the copy" % rid)
        eq(rec_c, rec_o, "record %s on the copy and the original" % rid)
    for rid in before[::25]:  # every record is its own patient: same state on both
        pid = s.get_json("/v1/records/" + rid)["patient_id"]
        eq(c.get_json("/v1/patients/" + pid), s.get_json("/v1/patients/" + pid), "patient of %s on both" % rid)
    for rid in after:
        eq(c.get("/v1/records/" + rid).status, 404, "record %s, sent after the backup ended, not in the copy" % rid)
    # the copy holds no bearer token: a token revoked after the backup (stolen, its account disabled) must not
    # work again on a restored copy; everyone signs in again (CopyServer did, with the admin's password)
    r = H.http_request(c.port, "GET", "/v1/records/" + before[0], headers={"Authorization": "Bearer " + s.token})
    eq(r.status, 401, "a token of the original, unexpired, on the copy")
    check(re.search(r"LMDB \d+ bytes, [1-9]\d* bearer tokens left out", summary),
          "the backup says so: %s" % short(summary))

    new = [{"record_id": "bk-copy-%d" % i, "name": "Backup Copy %s" % H.rand_token(6), "dob": "1980-02-02",
            "notes": "x" * 5000} for i in range(20)]
    eq({it["status"] for it in c.ingest_ok(new)["items"]}, {"created"}, "the copy takes new records")
    for r in new:
        eq(c.get("/v1/records/" + r["record_id"]).status, 200, "new record %s read back from the copy"
           % r["record_id"])
    c.stop()
    c.start()  # and again after a restart: the new bodies were appended past the copied end
    for r in new:
        eq(c.get_json("/v1/records/" + r["record_id"])["fields"], r, "new record %s after a restart of the copy"
           % r["record_id"])
    c.stop()
    eq(s.get("/healthz").status, 200, "the original server after the backup")
    s.stop()


@test(timeout=90)
def test_backup_takes_no_lock_and_serve_keeps_its_own():
    s = H.Server(extra_args=SERVE_ARGS, name="backup-lock")
    s.start()
    s.ingest_ok([{"record_id": "bk-lock-%d" % i, "name": "Backup Lock", "dob": "1990-03-03"} for i in range(5)])
    lock = os.path.join(s.data_dir, "medstream.lock")
    with open(lock) as f:
        holder = f.read()
    copy = os.path.join(s.base, "copy")
    _, _, _, _, summary = backup(s.data_dir, copy)
    check("(copied while medstream pid %d (serve, since " % s.proc.pid in summary,
          "backup names the server it ran beside: %s" % short(summary))
    with open(lock) as f:
        eq(f.read(), holder, "the lock file after the backup")
    rc, out, err = run(["serve", "--data", s.data_dir, "--listen", "127.0.0.1:%d" % H.free_port()] + SERVE_ARGS,
                        timeout=20)
    eq(rc, 1, "a second serve beside the first, after the backup (%s)" % short(err))
    check("is in use by medstream pid %d (serve, since " % s.proc.pid in err, "still held by serve: %s" % short(err))
    s.ingest_ok([{"record_id": "bk-lock-after", "name": "Backup Lock", "dob": "1990-03-03"}])
    eq(s.get("/healthz").status, 200, "healthz after the backup")
    s.stop()
    copy2 = os.path.join(s.base, "copy2")
    _, _, _, _, summary = backup(s.data_dir, copy2)
    check("copied while" not in summary, "no live-server note once the server stopped: %s" % short(summary))


@test(timeout=60)
def test_backup_refuses_an_out_that_exists_and_is_not_empty():
    s = H.Server(name="backup-refuse")
    s.start()
    s.stop()
    out = os.path.join(s.base, "taken")
    os.mkdir(out)
    with open(os.path.join(out, "keep.txt"), "w") as f:
        f.write("mine\n")
    rc, text, err = run(["backup", "--data", s.data_dir, "--out", out])
    eq(rc, 1, "backup into a non-empty directory (%s %s)" % (short(text), short(err)))
    check("%s exists and is not empty" % out in err, "the refusal says why: %s" % short(err))
    eq(os.listdir(out), ["keep.txt"], "the directory is left as it was")
    with open(os.path.join(out, "keep.txt")) as f:
        eq(f.read(), "mine\n", "its file is untouched")
    afile = os.path.join(s.base, "a-file")
    with open(afile, "w") as f:
        f.write("x")
    rc, text, err = run(["backup", "--data", s.data_dir, "--out", afile])
    eq(rc, 1, "backup onto a file (%s)" % short(err))
    check("exists and is not a directory" in err, "the refusal says why: %s" % short(err))
    rc, text, err = run(["backup", "--data", s.data_dir])
    eq(rc, 2, "backup without --out is a usage error (%s)" % short(err))
    empty = os.path.join(s.base, "empty")
    os.mkdir(empty)
    backup(s.data_dir, empty)  # an empty directory is fine
    eq(sorted(os.listdir(empty)), ["keys", "lmdb", "segments"], "the copy in the empty directory")


@test(timeout=90)
def test_restore_by_moving_the_copy_into_place():
    s = H.Server(extra_args=SERVE_ARGS, name="backup-restore")
    s.start()
    kept = [{"record_id": "bk-restore-%d" % i, "name": "Backup Restore %s" % H.rand_token(6), "dob": "1985-04-04",
             "notes": "n" * 3000} for i in range(30)]
    s.ingest_ok(kept)
    copy = os.path.join(s.base, "copy")
    backup(s.data_dir, copy)
    s.ingest_ok([{"record_id": "bk-restore-lost", "name": "Backup Restore Lost", "dob": "1985-04-04"}])
    password = s.admin_password()
    s.stop()                                            # 1. stop the server
    shutil.move(s.data_dir, s.data_dir + ".old")        # 2. move the copy into place
    shutil.move(copy, s.data_dir)
    check(not os.path.exists(os.path.join(s.data_dir, "admin.password")), "the backup did not copy admin.password")
    s.admin_password = lambda: password                 # the same accounts: the same password logs in
    s.start()                                           # 3. start
    for r in kept:
        eq(s.get_json("/v1/records/" + r["record_id"])["fields"], r, "record %s after the restore" % r["record_id"])
    eq(s.get("/v1/records/bk-restore-lost").status, 404, "a record committed after the backup is not restored")
    s.ingest_ok([{"record_id": "bk-restore-new", "name": "Backup Restore New", "dob": "1985-04-04"}])
    eq(s.get("/v1/records/bk-restore-new").status, 200, "the restored store takes new records")
    s.stop()


@test(timeout=90)
def test_a_copy_with_a_truncated_lmdb_file_is_refused_by_name_not_a_crash():
    """A copy cut short on its way (a full disk, a partial scp) crashed every command that opened it with
    SIGBUS: LMDB maps data.mdb and reads the pages its last commit names, which were past the file's end."""
    s = H.Server(extra_args=SERVE_ARGS, name="backup-truncated")
    s.start()
    s.ingest_ok([{"record_id": "bk-trunc-%d" % i, "name": "Backup Truncated %d" % i, "dob": "1985-04-04",
                  "notes": "n" * NOTES} for i in range(BATCH)])
    s.stop()
    good = os.path.join(s.base, "good")
    backup(s.data_dir, good)
    cut = os.path.join(s.base, "cut")
    shutil.copytree(good, cut)
    mdb = os.path.join(cut, "lmdb", "data.mdb")
    os.truncate(mdb, os.path.getsize(mdb) // 2)
    for args in (["audit", "verify", "--data", cut],
                 ["serve", "--data", cut, "--listen", "127.0.0.1:%d" % H.free_port()] + SERVE_ARGS,
                 ["backup", "--data", cut, "--out", cut + ".again"],
                 ["user", "list", "--data", cut]):
        rc, out, err = run(args, timeout=20)
        eq(rc, 1, "medstream %s exits 1 (out %s, err %s)" % (" ".join(args[:2]), short(out), short(err)))
        check("data.mdb" in err and "truncated" in err and "Sanitizer" not in err,
              "medstream %s names the cut file: %s" % (" ".join(args[:2]), short(err)))
    check(not os.path.exists(cut + ".again"), "no backup of the damaged copy is left behind")
    eq(run(["audit", "verify", "--data", good])[0], 0, "the undamaged copy verifies")

@test(timeout=60)
def test_backup_refuses_an_out_inside_the_data_directory():
    """A backup into DIR itself (DIR/copy, or through a symlink) was made: the data directory then held a
    second copy of its PHI and data keys that an erasure does not reach (DESIGN: erasure leaves no readable
    byte of the patient in the data directory)."""
    s = H.Server(name="backup-inside")
    s.start()
    s.ingest_ok([{"record_id": "bk-inside", "name": "Backup Inside", "dob": "1990-03-03"}])
    s.stop()
    link = os.path.join(s.base, "data-link")
    os.symlink(s.data_dir, link)
    os.mkdir(os.path.join(s.data_dir, "empty"))
    before = sorted(os.listdir(s.data_dir))
    for out in (os.path.join(s.data_dir, "copy"), os.path.join(s.data_dir, "segments", "copy"),
                os.path.join(link, "copy"), os.path.join(s.data_dir, "empty")):
        rc, text, err = run(["backup", "--data", s.data_dir, "--out", out])
        eq(rc, 1, "backup into %s (%s %s)" % (out, short(text), short(err)))
        check("inside the data directory" in err, "the refusal says why: %s" % short(err))
        check(not os.path.exists(out) or os.listdir(out) == [], "nothing was written in %s" % out)
    eq(sorted(os.listdir(s.data_dir)), before, "the data directory is as it was")
    rc, text, err = run(["backup", "--data", link, "--out", os.path.join(s.base, "outside")])
    eq(rc, 0, "a backup outside the data directory, named through a link (%s)" % short(err))


@test(timeout=120)
def test_a_copy_whose_key_file_is_cut_short_or_lost_is_refused_not_read_as_erased():
    """A copy whose DIR/keys was cut short, emptied or left behind started a healthy server (an empty or
    missing key file was taken for a new store's and written afresh), and every patient's records answered
    "the patient's data key is gone (erased)": the PHI of every patient silently unreadable, reported as
    erasures nobody made; `audit verify` said intact."""
    s = H.Server(extra_args=SERVE_ARGS, name="backup-keys")
    s.start()
    s.ingest_ok([{"record_id": "bk-keys-%d" % i, "name": "Backup Keys %d" % i, "dob": "1985-04-04",
                  "notes": "n" * 100} for i in range(200)])
    s.stop()
    good = os.path.join(s.base, "good")
    backup(s.data_dir, good)
    keys_size = os.path.getsize(os.path.join(good, "keys"))
    for name, damage in (("cut", lambda p: os.truncate(p, keys_size // 2)), ("empty", lambda p: os.truncate(p, 0)),
                         ("header-only", lambda p: os.truncate(p, 64)), ("lost", os.remove)):
        copy = os.path.join(s.base, "keys-" + name)
        shutil.copytree(good, copy)
        damage(os.path.join(copy, "keys"))
        for args in (["audit", "verify", "--data", copy],
                     ["serve", "--data", copy, "--listen", "127.0.0.1:%d" % H.free_port()] + SERVE_ARGS,
                     ["user", "list", "--data", copy]):
            rc, out, err = run(args, timeout=20)
            eq(rc, 1, "medstream %s on a key file %s exits 1 (out %s, err %s)" % (args[0], name, short(out), short(err)))
            check("%s/keys" % copy in err and "cut short or lost" in err,
                  "medstream %s names the key file (%s): %s" % (args[0], name, short(err)))
        check(name == "lost" or os.path.getsize(os.path.join(copy, "keys")) < keys_size,
              "the damaged key file is left as it was (%s)" % name)
        check(name != "lost" or not os.path.exists(os.path.join(copy, "keys")), "no key file made afresh")
    eq(run(["audit", "verify", "--data", good])[0], 0, "the undamaged copy verifies")


@test(timeout=120)
def test_a_copy_without_its_segment_files_is_refused_by_name():
    """A copy whose segments/ was left behind (or one of its files) started a healthy server and an intact
    `audit verify`; every record body was then unreadable ("segment log: short read", a 500) and new
    appends went into files made afresh at the old positions."""
    s = H.Server(extra_args=SERVE_ARGS, name="backup-segments")
    s.start()
    for b in range(20):
        s.ingest_ok([{"record_id": "bk-seg-%d-%d" % (b, i), "name": "Backup Segments %d" % i, "dob": "1985-04-04",
                      "notes": "n" * NOTES} for i in range(BATCH)])
    s.stop()
    good = os.path.join(s.base, "good")
    _, _, files, _, _ = backup(s.data_dir, good)
    check(files >= 2, "the copy spans several segment files (%d)" % files)
    no_dir = os.path.join(s.base, "no-segments")
    shutil.copytree(good, no_dir)
    shutil.rmtree(os.path.join(no_dir, "segments"))
    no_first = os.path.join(s.base, "no-first")
    shutil.copytree(good, no_first)
    os.remove(os.path.join(no_first, "segments", "000000000000.seg"))
    for copy in (no_dir, no_first):
        for args in (["audit", "verify", "--data", copy],
                     ["serve", "--data", copy, "--listen", "127.0.0.1:%d" % H.free_port()] + SERVE_ARGS):
            rc, out, err = run(args, timeout=20)
            eq(rc, 1, "medstream %s exits 1 (out %s, err %s)" % (args[0], short(out), short(err)))
            check("000000000000.seg is missing" in err, "medstream %s names the missing file: %s" % (args[0], short(err)))
        check(not os.path.exists(os.path.join(copy, "segments", "000000000000.seg")), "no segment file made afresh")


@test(timeout=180)
def test_an_interrupted_backup_leaves_no_out_and_the_next_one_clears_its_partial():
    """A backup killed partway (kill -9, a power loss) left OUT holding what it had copied so far: a partial
    directory that looked like a store (lmdb/data.mdb, the bearer tokens not yet dropped, segment files up to
    where it stopped), PHI outside the data directory, and OUT not empty, so the next backup to it was refused.
    The copy is made in a sibling `.NAME.partial-PID` and renamed to OUT once synced; a partial left by a
    killed backup is removed by the next backup beside it. MEDSTREAM_TEST_BACKUP_CRASH kills the backup with
    SIGKILL once a step is done."""
    s = H.Server(extra_args=SERVE_ARGS, name="backup-killed")
    s.start()
    for b in range(5):
        s.ingest_ok([{"record_id": "bk-kill-%d-%d" % (b, i), "name": "Backup Killed %d" % i, "dob": "1985-04-04",
                      "notes": "n" * NOTES} for i in range(BATCH)])
    s.login()  # a bearer token in the store: a partial copy would hold it
    s.stop()
    empty = os.path.join(s.base, "empty")
    os.mkdir(empty)
    for step in ("lmdb", "segments", "keys", "synced"):
        for out, existed in ((os.path.join(s.base, "out-" + step), False), (empty, True)):
            r = subprocess.run([H.BIN, "backup", "--data", s.data_dir, "--out", out], capture_output=True, text=True,
                               timeout=60, env=dict(os.environ, MEDSTREAM_TEST_BACKUP_CRASH=step))
            eq(r.returncode, -9, "the backup killed after %s (%s)" % (step, short(r.stderr)))
            if existed:
                eq(os.listdir(out), [], "the empty OUT after a backup killed after %s" % step)
            else:
                check(not os.path.exists(out), "no OUT after a backup killed after %s" % step)
            rc, text, err = run(["audit", "verify", "--data", out], timeout=20)
            eq(rc, 1, "audit verify of the OUT of a killed backup (%s %s)" % (short(text), short(err)))
            check("is not a medstream data directory" in err, "not a data directory: %s" % short(err))
            partials = [n for n in os.listdir(s.base) if ".partial-" in n]
            eq(len(partials), 1, "the killed backup's partial copy, beside OUT (%s)" % partials)
            check(partials[0].startswith("." + os.path.basename(out) + ".partial-"), "named for OUT: %s" % partials)
            eq(os.stat(os.path.join(s.base, partials[0])).st_mode & 0o777, 0o700, "the partial copy's mode")
            _, _, _, _, summary = backup(s.data_dir, out)  # the next backup to the same OUT
            check("removed a partial copy left by an interrupted backup" in summary,
                  "the next backup says it removed the partial copy: %s" % short(summary))
            eq([n for n in os.listdir(s.base) if ".partial-" in n], [], "no partial copy left")
            eq(sorted(os.listdir(out)), ["keys", "lmdb", "segments"], "the copy")
            eq(os.stat(out).st_mode & 0o777, 0o700, "OUT's mode")
            eq(run(["audit", "verify", "--data", out])[0], 0, "the copy verifies")
            if existed:
                shutil.rmtree(out)
                os.mkdir(out)


if __name__ == "__main__":
    H.main()
