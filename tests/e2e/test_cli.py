# End-to-end tests of medstream's command line (src/main.c over base/options.c): `medstream --help`
# lists every command of the command table and each answers --help; docs/options.md is what
# `medstream help-reference` prints (regenerate it with `make docs`); a server runs from a config file
# alone, with the command line over it; a bad config line is refused with the file, line and key; values
# outside an option's range and broken rules between options exit 2 with a message naming them; bench
# reads its options from a config file too.
#
# Run: /usr/bin/python3 tests/e2e/test_cli.py   (MEDSTREAM_BIN picks the binary, as for every e2e file)

import json
import os
import subprocess
import time

import harness as H
from harness import check, eq, short, test

COMMANDS = ["init", "serve", "user", "roles", "audit", "bench", "preload", "version", "help-reference"]


def cli(*args, stdin=None, timeout=60):
    return subprocess.run([H.BIN] + list(args), capture_output=True, text=True, timeout=timeout,
                          input=stdin if stdin is not None else None,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


def listed_commands(help_text):
    """The command names of `medstream --help`: the first word of each line under "commands:"."""
    names, inside = [], False
    for line in help_text.splitlines():
        if line.startswith("commands:"):
            inside = True
        elif inside and line.startswith("  ") and line.strip():
            names.append(line.split()[0])
        elif inside and not line.strip():
            break
    return names


@test
def test_help_lists_every_command_and_each_has_help():
    r = cli("--help")
    eq(r.returncode, 0, "medstream --help")
    names = listed_commands(r.stdout)
    for c in COMMANDS:
        check(c in names, "medstream --help lists %s: %s" % (c, names))
    for c in names:
        r = cli(c, "--help")
        eq(r.returncode, 0, "medstream %s --help (stderr %s)" % (c, short(r.stderr)))
        check("usage:" in r.stdout, "medstream %s --help prints a usage: %s" % (c, short(r.stdout)))
    eq(cli().returncode, 2, "no command is a usage error")
    r = cli("frobnicate")
    eq(r.returncode, 2, "an unknown command is a usage error")
    check("unknown command 'frobnicate'" in r.stderr and "commands:" in r.stderr, "it says so and lists them")
    check(cli("version").stdout.startswith("medstream "), "version")


@test
def test_docs_options_md_is_what_the_program_prints():
    r = cli("help-reference")
    eq(r.returncode, 0, "medstream help-reference (stderr %s)" % short(r.stderr))
    path = os.path.join(H.REPO_ROOT, "docs", "options.md")
    with open(path, encoding="utf-8") as f:
        checked_in = f.read()
    if checked_in != r.stdout:
        a, b = checked_in.splitlines(), r.stdout.splitlines()
        first = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
        H.fail("docs/options.md differs from `medstream help-reference` at line %d (run `make docs`):\n"
               "  file:    %r\n  program: %r" % (first + 1, a[first] if first < len(a) else "(end)",
                                                 b[first] if first < len(b) else "(end)"))
    for c in COMMANDS:
        if c != "help-reference":
            check(("\n## %s" % c) in r.stdout, "the reference has a section for %s" % c)
    serve_help = cli("serve", "--help").stdout
    for line in serve_help.splitlines():
        words = line.split()
        if line.startswith("  --") and words[0] != "--help":  # an option's line (not a wrapped one)
            check("`%s" % words[0] in r.stdout, "serve's %s is in the reference" % words[0])


class ConfigServer(H.Server):
    """A server started as `medstream serve --config FILE [extra args]`, FILE written at each start with
    the port picked then."""

    def __init__(self, settings, name, extra_args=()):
        super().__init__(extra_args=extra_args, name=name)
        self.settings = settings
        self.config_path = os.path.join(self.base, "medstream.conf")

    def serve_args(self, port):
        with open(self.config_path, "w") as f:
            f.write("# written by test_cli.py\n\ndata = %s\nlisten = 127.0.0.1:%d\n%s" % (self.data_dir, port,
                                                                                     self.settings))
        return [H.BIN, "serve", "--config", self.config_path] + self.extra_args


@test(timeout=60)
def test_serve_runs_from_a_config_file_alone():
    settings = ("  # limits\n"
                "max-body = 100000\n"
                "token-ttl = 2h\n"
                "header-timeout = 30s\n"
                "postgres-history = trigger\n")
    s = ConfigServer(settings, name="config-only")
    s.start()
    r = s.request("POST", "/v1/auth/token", body=json.dumps({"user": "admin", "password": s.admin_password()}),
                  headers={"Content-Type": "application/json", "Authorization": None})
    eq(r.status, 201, "login")
    ttl = (H.parse_time(r.json()["expires_at"]) - H.parse_time(H.now_rfc3339())).total_seconds()
    check(7100 < ttl <= 7201, "token-ttl = 2h from the file: the token lives %.0f s" % ttl)
    big = H.ndjson([{"name": "x" * 200000, "dob": "1990-01-01"}])
    r = H.raw_request(s.port, "POST", "/v1/records", dict(s.auth_headers(), **{"Content-Type": "application/x-ndjson"}),
                      big)
    eq(r.status, 413, "max-body = 100000 from the file")
    small = s.ingest_ok([{"name": "Conf Igfile", "dob": "1990-01-01", "record_id": "cfg-1"}])
    eq(small["items"][0]["status"], "created", "a record under the limit is stored")
    s.stop()


@test(timeout=60)
def test_command_line_overrides_the_config_file():
    other = H.free_port()
    s = ConfigServer("token-ttl = 2h\n", name="config-override",
                     extra_args=["--listen", "127.0.0.1:%d" % other, "--token-ttl", "600"])
    s.init()
    args = s.serve_args(H.free_port())  # the file names one port, the command line another
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if H.http_request(other, "GET", "/healthz", timeout=1.0).status == 200:
                    break
            except OSError:
                pass
            if p.poll() is not None:
                H.fail("serve exited %d: %s" % (p.returncode, p.stderr.read()))
            time.sleep(0.05)
        else:
            H.fail("serve did not answer on the command line's --listen port %d" % other)
        s.port = other
        with open(os.path.join(s.data_dir, "admin.password")) as f:
            pw = f.read().strip()
        r = H.http_request(other, "POST", "/v1/auth/token", body=json.dumps({"user": "admin", "password": pw}),
                           headers={"Content-Type": "application/json"})
        eq(r.status, 201, "login")
        ttl = (H.parse_time(r.json()["expires_at"]) - H.parse_time(H.now_rfc3339())).total_seconds()
        check(500 < ttl <= 601, "--token-ttl 600 on the command line wins over the file's 2h: %.0f s" % ttl)
    finally:
        p.terminate()
        p.wait(timeout=10)
    eq(p.returncode, 0, "serve stopped cleanly")


@test(timeout=60)
def test_bad_config_lines_are_refused_with_file_line_and_key():
    s = H.Server(name="config-bad")
    s.init()
    path = os.path.join(s.base, "bad.conf")
    cases = [
        ("data = %s\n# fine so far\n\nmax-body = 12Q\n" % s.data_dir,
         "%s:4: key 'max-body': expected a size in bytes" % path),
        ("data = %s\nlisten = 127.0.0.1:0\nlisen = 127.0.0.1:1\n" % s.data_dir, "%s:3: unknown key 'lisen'" % path),
        ("data = %s\nkafka-batch = 0\n" % s.data_dir,
         "%s:2: key 'kafka-batch': expected a whole number in 1..1000000, got '0'" % path),
        ("data = %s\npostgres-history = sometimes\n" % s.data_dir,
         "%s:2: key 'postgres-history': expected one of periods, trigger, auto, got 'sometimes'" % path),
        ("data = %s\ndata = /elsewhere\n" % s.data_dir, "%s:2: key 'data' is already set on line 1" % path),
        ("data %s\n" % s.data_dir, "%s:1: expected 'key = value'" % path),
        ("listen = 127.0.0.1:0\n", "--data is required (or the key 'data' in a --config file)"),
    ]
    for text, want in cases:
        with open(path, "w") as f:
            f.write(text)
        r = cli("serve", "--config", path, timeout=20)
        eq(r.returncode, 2, "exit code for %r (stderr %s)" % (text, short(r.stderr)))
        check(want in r.stderr, "the refusal says %r: %r" % (want, r.stderr))
    r = cli("serve", "--config", os.path.join(s.base, "missing.conf"), timeout=20)
    eq(r.returncode, 2, "a config file that cannot be read")
    check("missing.conf" in r.stderr, "it is named: %r" % r.stderr)
    # a repeatable key from the file reaches librdkafka (which refuses an unknown property by name)
    with open(path, "w") as f:
        f.write("data = %s\nlisten = 127.0.0.1:0\nkafka-brokers = 127.0.0.1:1\nkafka-topic = t\n"
                "kafka-config = client.id=ok\nkafka-config = no.such.setting=1\n" % s.data_dir)
    r = cli("serve", "--config", path, timeout=20)
    check(r.returncode != 0 and "no.such.setting" in r.stderr,
          "the file's kafka-config settings are passed on: %r" % r.stderr[-300:])


@test(timeout=60)
def test_a_config_file_with_a_bom_is_read_and_an_endless_one_is_refused():
    """A config file saved by an editor that writes a UTF-8 byte-order mark was refused as "unknown key
    '\ufeffdata'" (the mark invisible in the message); `--config /dev/zero` (or any endless or huge file) was
    read into memory until the machine ran out of it: the command hung instead of exiting 2."""
    s = H.Server(name="config-bom")
    s.init()
    path = os.path.join(s.base, "bom.conf")
    with open(path, "wb") as f:
        f.write(b"\xef\xbb\xbfdata = %s\r\nlisten = 127.0.0.1:0\r\nkafka-batch = 0\r\n" % s.data_dir.encode())
    r = cli("serve", "--config", path, timeout=20)
    eq(r.returncode, 2, "exit code (stderr %s)" % short(r.stderr))
    check("%s:3: key 'kafka-batch'" % path in r.stderr,
          "the BOM is skipped: line 1 sets data, line 3 is the bad one: %r" % r.stderr)
    for endless in ("/dev/zero", "/dev/urandom"):
        try:
            r = cli("serve", "--config", endless, timeout=20)
        except subprocess.TimeoutExpired:
            H.fail("`serve --config %s` did not exit within 20 s" % endless)
        eq(r.returncode, 2, "exit code of --config %s (stderr %s)" % (endless, short(r.stderr)))
        check(endless in r.stderr and "larger than" in r.stderr, "the refusal names the file: %r" % r.stderr)


@test(timeout=60)
def test_a_bad_postgres_url_is_refused_without_its_password():
    """A --postgres URL libpq could not parse was logged whole in the refusal ("--postgres: end of string
    reached ... in URI: "postgresql://u:PASSWORD@[::1""), and a password with a bad percent escape was quoted
    alone: the database password in the journal."""
    s = H.Server(name="cli-pg-secret")
    s.init()
    secret = "Sup3rS3cretPw"
    for url in ("postgresql://medstream:%s@[::1" % secret, "postgresql://medstream:%s%%zz@db/medstream" % secret,
                "postgres://medstream:%s@db:5432/medstream?sslmode" % secret, "host=db password='%s" % secret):
        r = cli("serve", "--data", s.data_dir, "--listen", "127.0.0.1:0", "--postgres", url, timeout=20)
        eq(r.returncode, 2, "serve with --postgres %r is a usage error (%s)" % (url, short(r.stderr)))
        check("--postgres" in r.stderr, "the refusal names --postgres: %r" % r.stderr[-300:])
        check(secret not in r.stderr and secret not in r.stdout, "the password is not in the log: %r" % r.stderr[-300:])


@test(timeout=60)
def test_import_never_writes_its_reject_or_checkpoint_file_over_an_input_or_the_store():
    """`import month.csv --rejects month.csv` truncated the input to nothing before reading it (and then said
    "the input is empty"): the month's file gone; `--rejects DIR/keys` wrote the rejected rows over the
    store's key file, every patient's data key lost. Both are usage errors now, and nothing is written."""
    s = H.Server(name="import-rejects")
    s.init()
    src = os.path.join(s.base, "month.csv")
    text = "name,dob,record_id\nAnn Lee,1980-01-01,r1\nBob,1980-13-01,r2\n"
    with open(src, "w") as f:
        f.write(text)
    link = os.path.join(s.base, "month-link.csv")
    os.symlink(src, link)
    keys = os.path.join(s.data_dir, "keys")
    keys_before = open(keys, "rb").read()
    cases = [
        (["import", src, "--data", s.data_dir, "--rejects", src], "--rejects %s is the input file" % src),
        (["import", src, "--data", s.data_dir, "--rejects", link], "--rejects %s is the input file" % link),
        (["import", src, "--data", s.data_dir, "--rejects", keys], "--rejects %s is inside the data directory" % keys),
        (["import", src, "--url", "http://127.0.0.1:1", "--token", "t", "--checkpoint", src],
         "--checkpoint %s is the input file" % src),
    ]
    for args, want in cases:
        r = cli(*args, timeout=20)
        eq(r.returncode, 2, "medstream %s exits 2 (stderr %s)" % (" ".join(args[3:]), short(r.stderr)))
        check(want in r.stderr, "it says %r: %r" % (want, r.stderr))
        with open(src) as f:
            eq(f.read(), text, "the input after medstream %s" % " ".join(args[3:]))
    eq(open(keys, "rb").read(), keys_before, "the key file is untouched")


@test(timeout=90)
def test_files_named_by_serve_options_are_checked_at_the_start_and_named_by_their_option():
    """A --webhook-ca that does not exist, is a directory or holds no certificate started the server as if
    all were well, and every https webhook then failed its TLS setup, retried for ever; --schema, --roles,
    --counters and the TLS files that could not be read were refused without the option's name ("cannot
    read /etc/x: Is a directory")."""
    s = H.Server(name="serve-files")
    s.init()
    junk = os.path.join(s.base, "junk.pem")
    with open(junk, "w") as f:
        f.write("not a certificate\n")
    cases = [(["--webhook-ca", os.path.join(s.base, "missing.pem")], "--webhook-ca"),
             (["--webhook-ca", s.base], "--webhook-ca"), (["--webhook-ca", junk], "--webhook-ca"),
             (["--schema", s.base], "--schema"), (["--roles", s.base], "--roles"),
             (["--counters", s.base], "--counters"), (["--tls-cert", s.base, "--tls-key", junk], "--tls-cert")]
    for extra, flag in cases:
        args = ["serve", "--data", s.data_dir, "--listen", "127.0.0.1:%d" % H.free_port()] + extra
        try:
            r = cli(*args, timeout=20)
        except subprocess.TimeoutExpired:
            H.fail("medstream %s started and served" % " ".join(extra))
        eq(r.returncode, 1, "medstream %s exits 1 (stderr %s)" % (" ".join(extra), short(r.stderr)))
        last = r.stderr.strip().splitlines()[-1]
        check(("%s %s" % (flag, extra[extra.index(flag) + 1])) in last,
              "medstream %s names the option and the file: %r" % (" ".join(extra), last))


@test(timeout=60)
def test_usage_errors_name_the_option_and_what_it_accepts():
    s = H.Server(name="cli-usage")
    s.init()
    d = s.data_dir
    cases = [
        (["serve", "--data", d, "--kafka-batch", "0"], "--kafka-batch: expected a whole number in 1..1000000, got '0'"),
        (["serve", "--data", d, "--postgres-history", "x"], "--postgres-history: expected one of periods, trigger, auto"),
        (["serve", "--data", d, "--token-ttl", "0"], "--token-ttl: expected seconds in 1s..365d, got '0'"),
        (["serve", "--data", d, "--header-timeout", "3601"], "--header-timeout: expected seconds in 1s..1h"),
        (["serve", "--data", d, "--max-inflight", "1K"], "--max-inflight: expected a size in bytes of at least 1MiB"),
        (["serve", "--data", d, "--max-connections", "70000"], "--max-connections: expected a whole number in 1..65536"),
        (["serve", "--data", d, "--segment-size", "1GiB", "--max-body", "1GiB"],
         "--segment-size must be at least twice --max-body"),
        (["serve", "--data", d, "--max-body", "1GiB"], "--max-body: %s is made of segments of 1GiB" % d),
        (["serve", "--data", d, "--tls-cert", "/nonexistent.pem"], "--tls-cert and --tls-key go together"),
        (["serve", "--data", d, "--kafka-topic", "t"], "--kafka-brokers and --kafka-topic go together"),
        (["serve", "--data", d, "--nope"], "unknown option '--nope'"),
        (["serve"], "--data is required"),
        (["init"], "expected the data directory"),
        (["user", "bogus", "--data", d], "medstream user: unknown command 'bogus'"),
        (["init", ""], "medstream init: expected the data directory"),
        (["export", "--url", "ftp://x", "--token", "t", "--out", os.path.join(s.base, "x"), "--format", "csv"],
         "--url: bad URL \"ftp://x\": must start with http://"),
        (["import", "--url", "localhost:8080", "--token", "t", os.path.join(s.base, "x.csv")],
         "--url: bad URL \"localhost:8080\""),
        (["audit", "verify"], "--data is required"),
        (["bench", "--size", "10"], "--size: expected a size in bytes in 64..16MiB, got '10'"),
        (["bench", "--repeat-share", "1.5"], "--repeat-share: expected a number in 0..1, got '1.5'"),
        (["bench", "--run-id", "a b"], "--run-id: use 1 to 64 of"),
        (["preload", d, "--patients", "0"], "--patients: expected a whole number in 1..4294967295, got '0'"),
    ]
    for args, want in cases:
        r = cli(*args, timeout=20)
        eq(r.returncode, 2, "medstream %s exits 2 (stderr %s)" % (" ".join(args), short(r.stderr)))
        check(want in r.stderr, "medstream %s says %r: %r" % (" ".join(args), want, r.stderr))


@test(timeout=60)
def test_a_bad_listen_address_or_segment_size_is_a_usage_error_before_the_store_is_touched():
    """A malformed --listen exited 1 (a runtime failure: systemd restarts it for ever) once the store, the
    views and the notifier had started; a --segment-size the segment log cannot take exited 1 without naming
    the option, and `init` left a half-made data directory behind it (LMDB, keys, lock: no admin)."""
    s = H.Server(name="cli-listen")
    s.init()
    d = s.data_dir
    cases = [
        (["serve", "--data", d, "--listen", "127.0.0.1:99999"], "--listen: expected HOST:PORT (IPv4), got '127.0.0.1:99999'"),
        (["serve", "--data", d, "--listen", "127.0.0.1"], "--listen: expected HOST:PORT"),
        (["serve", "--data", d, "--listen", "127.0.0.1:80x"], "--listen: expected HOST:PORT"),
        (["serve", "--data", d, "--listen", "127.0.0.1:0", "--segment-size", "100000"],
         "--segment-size: expected a multiple of 4KiB"),
        (["serve", "--data", d, "--listen", "127.0.0.1:0", "--segment-size", "32K"],
         "--segment-size: expected a size in bytes of at least 64KiB"),
        (["init", os.path.join(s.base, "half"), "--segment-size", "100000"], "--segment-size: expected a multiple of 4KiB"),
        (["init", os.path.join(s.base, "half"), "--segment-size", "4K"], "--segment-size: expected a size in bytes of at least 64KiB"),
    ]
    for args, want in cases:
        r = cli(*args, timeout=20)
        eq(r.returncode, 2, "medstream %s exits 2 (stderr %s)" % (" ".join(args), short(r.stderr)))
        check(want in r.stderr, "medstream %s says %r: %r" % (" ".join(args), want, r.stderr))
        check("notifications:" not in r.stderr and "counters:" not in r.stderr,
              "medstream %s is refused before the server's parts start: %r" % (" ".join(args), r.stderr))
    check(not os.path.exists(os.path.join(s.base, "half")), "init with a bad --segment-size made no directory")
    # units are accepted where the table says so: a server with --token-ttl 1h and --kafka-linger-ms 1s is
    # fine as far as options go (it fails later only because no broker runs, which is not a usage error)
    r = cli("serve", "--data", d, "--listen", "127.0.0.1:0", "--token-ttl", "1h", "--header-timeout", "1m",
            "--max-body", "1MiB", "--kafka-brokers", "127.0.0.1:1", "--kafka-topic", "t", "--kafka-linger-ms", "1s",
            "--kafka-config", "no.such.setting=1", timeout=20)
    check(r.returncode == 1 and "no.such.setting" in r.stderr, "values with units pass: %r" % r.stderr[-300:])


@test(timeout=120)
def test_bench_reads_a_config_file():
    s = H.Server(name="cli-bench")
    s.start()
    path = os.path.join(s.base, "bench.conf")
    with open(path, "w") as f:
        f.write("# a small load\nurl = http://127.0.0.1:%d\ntoken = %s\nrecords = 600\nbatch = 100\nsize = 1KiB\n"
                "connections = 2\nread-rate = 0\nprobe-every = 100\nrun-id = cfgbench\njson = true\n"
                % (s.port, s.token))
    r = cli("bench", "--config", path, "--records", "500", timeout=100)
    eq(r.returncode, 0, "bench --config exit code (stderr %s)" % short(r.stderr))
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    check(lines, "json = true from the file: a JSON line (stdout %s)" % short(r.stdout))
    fig = json.loads(lines[-1])
    eq(fig["records"], 500, "--records 500 on the command line wins over the file's 600")
    eq(fig["batches"], 5, "batch = 100 from the file")
    eq(fig["run_id"], "cfgbench", "run-id from the file")
    eq(fig["failures"], 0, "failures")
    check(s.get("/v1/records/cfgbench-0000000000").status == 200, "the first record is in the store")
    s.stop()


@test(timeout=120)
def test_bench_names_a_rejected_probe_and_the_servers_reason():
    """A sampled record the batch's answer says was rejected is a failure with the server's reason at once,
    not a 30 s wait for a record that was never stored ("acknowledged but not visible")."""
    s = H.Server(name="cli-bench-rejected", extra_args=["--max-record", "512"])
    s.start()
    t0 = time.monotonic()
    r = cli("bench", "--url", "http://127.0.0.1:%d" % s.port, "--token", s.token, "--records", "200", "--batch", "100",
            "--size", "1KiB", "--connections", "1", "--read-rate", "0", "--probe-every", "100", "--run-id", "rej",
            timeout=100)
    took = time.monotonic() - t0
    eq(r.returncode, 1, "bench exit code with every record rejected (stderr %s)" % short(r.stderr))
    check("probe: rej-0000000000 was rejected: line 1:" in r.stderr and "512" in r.stderr,
          "the failure names the record, its line and the server's reason (the limit): %s" % short(r.stderr))
    check("not visible" not in r.stderr, "no wait for a record the answer said was not stored: %s" % short(r.stderr))
    check(took < 20, "the bench did not wait out the probe deadline (%.1f s)" % took)
    eq(s.get("/v1/records/rej-0000000000").status, 404, "the rejected record is not in the store")
    s.stop()


if __name__ == "__main__":
    H.main()
