# End-to-end tests of the data directory's lock: one medstream process writes a data directory at a time
# (DESIGN.md; store.h). Checked with real processes: a second `serve` on a directory in use exits 1
# naming the holder's pid and command while the first goes on serving (records acknowledged before and
# after read back intact); `medstream user add` is refused while serve runs and works once it stopped;
# a restart right after kill -9 starts (the lock died with the process) and then holds the lock itself;
# `medstream audit verify` reads a live store without stopping it and says that it did; a store that
# holds bodies refuses another --segment-size (its bodies would be misread) and names the one it needs;
# a store written in a newer store format than this build knows is refused by every command that opens it.
#
# Run: /usr/bin/python3 tests/e2e/test_data_dir.py [NAME_SUBSTRING...]   (see harness.py, run.sh)

import hashlib
import json
import os
import subprocess

import harness as H
from harness import check, eq, fail, short, test


def run(args, stdin=None, timeout=20):
    """Run BIN with args; (exit code, stdout, stderr). A command that does not end (a second server
    that started) is killed and fails the test."""
    try:
        r = subprocess.run([H.BIN] + args, input=stdin, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        fail("`medstream %s` did not exit within %ds (it was not refused)" % (" ".join(args), timeout))
    return r.returncode, r.stdout, r.stderr


def batch(tag, n=20):
    return [{"record_id": "%s-%02d" % (tag, i), "name": "Lock Test %s" % tag.capitalize(), "dob": "1980-05-%02d" % (1 + i % 28),
             "notes": "n" * 2000} for i in range(n)]


def ingest_and_check(s, tag):
    items = s.ingest_ok(batch(tag))["items"]
    eq({it["status"] for it in items}, {"created"}, "statuses of batch %s" % tag)
    return [it["record_id"] for it in items]


def refusal_names(err, pid, what):
    want = "is in use by medstream pid %d (serve, since " % pid
    check(want in err, "%s names the holder (%r): %s" % (what, want, short(err)))


@test(timeout=60)
def test_second_serve_is_refused_while_the_first_stays_healthy():
    s = H.Server(name="lock-serve")
    s.start()
    acked = ingest_and_check(s, "before")
    rc, out, err = run(["serve", "--data", s.data_dir, "--listen", "127.0.0.1:%d" % H.free_port()])
    eq(rc, 1, "exit code of a second serve on the same directory (%s)" % short(err))
    check(err.startswith("medstream serve: %s is in use" % s.data_dir), "message: %s" % short(err))
    refusal_names(err, s.proc.pid, "the second serve's message")
    check(s.alive(), "the first server still runs")
    eq(s.get("/healthz").status, 200, "healthz of the first server")
    acked += ingest_and_check(s, "after")
    for rid in acked:
        r = s.get("/v1/records/" + rid)
        eq(r.status, 200, "record %s read back (checksum checked) from the first server: %s" % (rid, short(r.text)))
    s.stop()


@test(timeout=60)
def test_user_add_is_refused_while_serve_runs():
    s = H.Server(name="lock-user")
    s.start()
    rc, out, err = run(["user", "add", "bob", "--role", "analyst", "--data", s.data_dir], stdin="pw-bob-12345\n")
    eq(rc, 1, "exit code of user add while serve runs (%s %s)" % (short(out), short(err)))
    refusal_names(err, s.proc.pid, "user add's message")
    eq(s.get("/healthz").status, 200, "healthz after the refused user add")
    s.stop()
    rc, out, err = run(["user", "add", "bob", "--role", "analyst", "--data", s.data_dir], stdin="pw-bob-12345\n")
    eq(rc, 0, "user add once serve stopped (%s)" % short(err))
    s.start()
    s.token_for("bob", "pw-bob-12345")
    s.stop()


@test(timeout=90)
def test_restart_right_after_kill9_starts_and_holds_the_lock():
    s = H.Server(name="lock-kill9")
    s.start()
    acked = []
    for round_no in range(3):
        acked += ingest_and_check(s, "r%d" % round_no)
        s.kill9()
        s.start()        # at once: fails the test if the dead process's lock refused it
        rc, out, err = run(["serve", "--data", s.data_dir, "--listen", "127.0.0.1:%d" % H.free_port()])
        eq(rc, 1, "a second serve beside the restarted one (%s)" % short(err))
        refusal_names(err, s.proc.pid, "the message after restart %d" % (round_no + 1))
    for rid in acked:
        eq(s.get("/v1/records/" + rid).status, 200, "record %s after three kills" % rid)
    s.stop()


@test(timeout=60)
def test_audit_verify_reads_a_live_store_and_says_so():
    s = H.Server(name="lock-audit")
    s.start()
    ingest_and_check(s, "audited")
    rc, out, err = run(["audit", "verify", "--data", s.data_dir])
    eq(rc, 0, "audit verify beside a running server (%s %s)" % (short(out), short(err)))
    check(out.startswith("audit log intact: "), "verify's answer: %s" % short(out))
    entries = int(out.split("intact: ")[1].split()[0])
    check(entries >= 2, "the login and the ingest are audited (%d entries)" % entries)
    want = "(read while medstream pid %d (serve, since " % s.proc.pid
    check(want in out and "entries after this read are not checked)" in out,
          "verify says it read a live store (%r): %s" % (want, short(out)))
    ingest_and_check(s, "later")     # the server goes on writing after the read
    eq(s.get("/healthz").status, 200, "healthz after the verify")
    s.stop()
    rc, out, err = run(["audit", "verify", "--data", s.data_dir])
    eq(rc, 0, "audit verify of the stopped store (%s)" % short(err))
    check("read while" not in out, "no live-store note once the server stopped: %s" % short(out))
    check(int(out.split("intact: ")[1].split()[0]) > entries, "the later entries are verified now: %s" % short(out))


@test(timeout=60)
def test_a_store_keeps_its_segment_size():
    s = H.Server(name="segsize", extra_args=["--segment-size", "8MiB", "--max-body", "2MiB"])
    s.start()
    acked = ingest_and_check(s, "seg")
    s.stop()
    rc, out, err = run(["serve", "--data", s.data_dir, "--listen", "127.0.0.1:%d" % H.free_port(),
                        "--segment-size", "16MiB", "--max-body", "2MiB"])
    eq(rc, 1, "exit code of serve with another --segment-size (%s)" % short(err))
    check("segments of 8388608 bytes" in err and "--segment-size 8388608" in err,
          "the refusal names the size the store needs: %s" % short(err))
    rc, out, err = run(["serve", "--data", s.data_dir, "--listen", "127.0.0.1:%d" % H.free_port()])
    eq(rc, 2, "exit code of serve whose --max-body does not fit the store's segments (%s)" % short(err))
    check("--max-body" in err and "8MiB" in err, "the refusal names --max-body and the store's size: %s" % short(err))
    s.extra_args = ["--max-body", "2MiB"]            # no --segment-size: the one the store was made with
    s.start()
    for rid in acked:
        eq(s.get("/v1/records/" + rid).status, 200, "record %s after the refused starts" % rid)
    s.stop()


@test(timeout=60)
def test_serve_without_segment_size_keeps_the_one_init_made_the_store_with():
    """serve's --segment-size defaulted to 1GiB as if it were asked for: on a store made with `init
    --segment-size 8MiB` the first serve silently re-recorded 1GiB (init's choice lost), and once the store
    held bodies (an offline import) serve without the option refused to start at all."""
    s = H.Server(name="segsize-init", extra_args=["--max-body", "2MiB"])
    rc, out, err = run(["init", s.data_dir, "--segment-size", "8MiB"])
    eq(rc, 0, "init --segment-size 8MiB (%s)" % short(err))
    s.initialized = True
    s.start()
    ingest_and_check(s, "first")
    s.stop()
    segs = os.path.join(s.data_dir, "segments")
    sizes = [os.path.getsize(os.path.join(segs, f)) for f in os.listdir(segs)]
    check(sizes and max(sizes) <= 8 << 20, "segment files of at most 8MiB, as init made the store: %s" % sizes)
    path = os.path.join(s.base, "more.ndjson")
    with open(path, "w") as f:
        for r in batch("import"):
            f.write(json.dumps(r) + "\n")
    rc, out, err = run(["import", path, "--data", s.data_dir])
    eq(rc, 0, "offline import (%s %s)" % (short(out), short(err)))
    acked = [r["record_id"] for r in batch("import")]
    s.start()                                        # no --segment-size: the store's own
    for rid in acked:
        eq(s.get("/v1/records/" + rid).status, 200, "imported record %s" % rid)
    s.stop()

@test(timeout=60)
def test_init_refuses_a_directory_that_holds_other_things():
    """`medstream init DIR` on a directory that held other files (a home directory, /var/lib itself, a
    project folder) made the store among them and said "initialized": the PHI store then lived in a
    directory shared with whatever else was there, and `--data` pointed at it. An empty directory, a
    mount point's lost+found, and a directory init already made (a rerun) are fine."""
    base = H.Server(name="init-other").base
    other = os.path.join(base, "other")
    os.mkdir(other)
    with open(os.path.join(other, "notes.txt"), "w") as f:
        f.write("mine\n")
    rc, out, err = run(["init", other])
    eq(rc, 1, "init on a directory holding other files (%s %s)" % (short(out), short(err)))
    check("%s is not empty" % other in err and "not a medstream data directory" in err,
          "the refusal says why: %s" % short(err))
    eq(os.listdir(other), ["notes.txt"], "the directory is left as it was")
    mount = os.path.join(base, "mount")
    os.makedirs(os.path.join(mount, "lost+found"))
    rc, out, err = run(["init", mount])
    eq(rc, 0, "init on a fresh file system's mount point (%s)" % short(err))
    rc, out, err = run(["init", mount])
    eq(rc, 1, "init again (%s)" % short(err))
    check("already initialized" in err, "a rerun says the directory is initialized: %s" % short(err))


@test(timeout=60)
def test_serve_on_a_directory_whose_init_did_not_finish_says_nobody_can_sign_in():
    """An init stopped before it made the admin (Ctrl-C or kill while it hashed the password) leaves a store
    with no account; serve started on it as if all were well ("serving ... ready"), and nobody could sign
    in, with nothing saying why. It warns now, naming the fix (medstream init DIR finishes it)."""
    import signal
    import time
    s = H.Server(name="half-init")
    p = subprocess.Popen([H.BIN, "init", s.data_dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(os.path.join(s.data_dir, "keys")) and time.monotonic() < deadline:
        time.sleep(0.001)
    p.send_signal(signal.SIGKILL)
    p.wait()
    if os.path.exists(os.path.join(s.data_dir, "admin.password")):
        H.fail("init finished before it could be stopped; the test needs an interrupted one")
    rc, out, err = run(["user", "list", "--data", s.data_dir])
    eq(out.strip().splitlines()[1:], [], "the interrupted init made no account")
    s.initialized = True
    s.admin_password = lambda: "unused"
    s.login = lambda: None
    s.start()
    s.stop()
    with open(s.log_path) as f:
        text = f.read()
    check("no accounts" in text and "medstream init %s" % s.data_dir in text,
          "serve says nobody can sign in and how to finish the init: %s" % short(text[-600:]))
    rc, out, err = run(["init", s.data_dir])
    eq(rc, 0, "init again finishes it (%s)" % short(err))
    check(os.path.exists(os.path.join(s.data_dir, "admin.password")), "admin's password is written")


@test(timeout=90)
def test_export_overwrite_never_replaces_a_data_directory_or_a_lake():
    """`medstream export --out DIR --overwrite` moves whatever DIR holds aside and deletes it once the export
    is in place: pointed at a running server's data directory (a slip of --data for --out) it deleted the
    whole store, lmdb, keys and segments, under the server, which went on answering "ok" and acknowledging
    records that a restart would not find. A data directory, one holding a data directory, and a lake are
    refused now, and left as they were."""
    lake = os.path.join(H.Server(name="unused").base, "lake")
    s = H.Server(name="export-over-data", extra_args=["--lake", lake])
    s.start()
    rids = ingest_and_check(s, "keep")
    url = "http://127.0.0.1:%d" % s.port
    for out in (s.data_dir, s.base, lake, os.path.join(s.data_dir, "segments")):
        before = sorted(os.listdir(out))
        rc, text, err = run(["export", "--url", url, "--token", s.token, "--out", out, "--format", "ndjson",
                             "--overwrite"], timeout=60)
        eq(rc, 1, "export --overwrite into %s (%s %s)" % (out, short(text), short(err)))
        check("--overwrite would delete" in err, "the refusal says why: %s" % short(err))
        eq(sorted(os.listdir(out)), before, "%s is as it was" % out)
    s.stop()
    s.start()
    for rid in rids:
        eq(s.get("/v1/records/" + rid).status, 200, "record %s after a restart" % rid)
    s.stop()
    rc, text, err = run(["export", "--data", s.data_dir, "--out", s.data_dir, "--format", "ndjson", "--overwrite"])
    eq(rc, 1, "an offline export over its own data directory (%s %s)" % (short(text), short(err)))
    check("--overwrite would delete" in err, "the refusal says why: %s" % short(err))


@test(timeout=90)
def test_data_directories_are_owner_only_whatever_they_were_made_with():
    """init and backup filled an existing empty directory and left its mode as it was (0777 from `mkdir -m
    777`, 0755 under umask 022): other local users could list the store and, in a 0777 one, delete or swap
    its key file, lock and admin.password. They make it 0700 now; serve names a data directory that group or
    others may enter or write (one made before, or chmod-ed since)."""
    import stat
    base = H.Server(name="unused").base
    d = os.path.join(base, "open")
    os.mkdir(d)
    os.chmod(d, 0o777)
    rc, out, err = run(["init", d])
    eq(rc, 0, "init into an empty 0777 directory (%s)" % short(err))
    eq(stat.S_IMODE(os.stat(d).st_mode), 0o700, "the data directory's mode after init")
    copy = os.path.join(base, "copy")
    os.mkdir(copy)
    os.chmod(copy, 0o755)
    rc, out, err = run(["backup", "--data", d, "--out", copy])
    eq(rc, 0, "backup into an empty 0755 directory (%s)" % short(err))
    eq(stat.S_IMODE(os.stat(copy).st_mode), 0o700, "the copy's mode after backup")
    s = H.Server(name="dir-mode")
    s.init()
    os.chmod(s.data_dir, 0o755)
    s.start()
    s.stop()
    with open(s.log_path) as f:
        text = f.read()
    check("%s is mode 0755" % s.data_dir in text and "chmod 700 %s" % s.data_dir in text,
          "serve names the directory's mode and the fix: %s" % short(text[-600:]))


def meta_u64(lmdb_dir, key):
    """The be64 meta value `key` of the store at lmdb_dir (None: absent), read with lmdb-utils' mdb_dump."""
    out = subprocess.run(["mdb_dump", "-p", "-s", "meta", lmdb_dir], capture_output=True, text=True, check=True).stdout
    lines = out.split("\n")
    for i, line in enumerate(lines):
        if line == " " + key:
            value = lines[i + 1][1:]
            raw = bytearray()
            j = 0
            while j < len(value):
                if value[j] == "\\" and value[j + 1] != "\\":
                    raw.append(int(value[j + 1:j + 3], 16))
                    j += 3
                elif value[j] == "\\":
                    raw.append(ord("\\"))
                    j += 2
                else:
                    raw.append(ord(value[j]))
                    j += 1
            return int.from_bytes(bytes(raw), "big")
    return None


def set_meta_u64(lmdb_dir, key, value):
    """Write meta `key` = be64(value) behind the store's back (lmdb-utils' mdb_load, print format)."""
    text = "VERSION=3\nformat=print\ntype=btree\nHEADER=END\n %s\n %s\nDATA=END\n" % (
        key, "".join("\\%02x" % b for b in value.to_bytes(8, "big")))
    subprocess.run(["mdb_load", "-s", "meta", lmdb_dir], input=text, text=True, check=True, capture_output=True)


@test(timeout=120)
def test_a_store_of_a_newer_format_is_refused_by_every_command_and_left_as_it_was():
    """The store kept no format version: a store written by a newer medstream, in a layout this build would
    misread, was opened and written by it. Now init records the store format (meta "store_format") and every
    open refuses a newer one, naming both formats and the directory, before writing anything."""
    s = H.Server(name="store-format")
    s.start()
    s.ingest_ok(batch("format", 5))
    s.stop()
    lmdb = os.path.join(s.data_dir, "lmdb")
    eq(meta_u64(lmdb, "store_format"), 1, "the store format init recorded")
    set_meta_u64(lmdb, "store_format", 9)
    eq(meta_u64(lmdb, "store_format"), 9, "the store format set behind the store's back")

    def digest():
        with open(os.path.join(lmdb, "data.mdb"), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest(), sorted(os.listdir(s.data_dir))

    before = digest()
    copy = os.path.join(s.base, "copy")
    for args in (["serve", "--data", s.data_dir, "--listen", "127.0.0.1:%d" % H.free_port()],
                 ["backup", "--data", s.data_dir, "--out", copy],
                 ["audit", "verify", "--data", s.data_dir],
                 ["user", "list", "--data", s.data_dir],
                 ["erase", "00000000-0000-4000-8000-000000000000", "--data", s.data_dir, "--reason", "test"],
                 ["export", "--data", s.data_dir, "--out", os.path.join(s.base, "export"), "--format", "ndjson"]):
        rc, out, err = run(args)
        eq(rc, 1, "medstream %s on a store of format 9 (out %s, err %s)" % (args[0], short(out), short(err)))
        check("%s was written by a newer medstream" % s.data_dir in err and "store format 9" in err and
              "formats up to 1" in err, "medstream %s names the formats and the directory: %s" % (args[0], short(err)))
        eq(digest(), before, "the store after medstream %s" % args[0])
    check(not os.path.exists(copy), "no backup was made")
    set_meta_u64(lmdb, "store_format", 1)  # its own format again: it opens
    s.start()
    eq(s.get("/healthz").status, 200, "healthz on the store of format 1")
    s.stop()


if __name__ == "__main__":
    H.main()
