# cluster.py - several medstream nodes in one consumer group on a real Apache Kafka broker (issue 16), for
# the tests (tests/e2e/test_cluster_group.py) and the benchmark (scripts/bench_cluster.py).
#
# What it provides, on top of harness.py (whose Server, HTTP, token and temp-directory helpers it reuses):
#   - Broker / shared_broker(): a real Kafka broker from scripts/kafka_broker.sh (KRaft, one JVM on
#     127.0.0.1, free ports, picked again if one was taken meanwhile), one per test module, stopped at exit.
#   - create_topic(), produce(): topics of N partitions (AdminClient), records produced by a confluent_kafka
#     Producer keyed by identity, by random keys, or into given partitions.
#   - Node: one `medstream serve` (own data directory and HTTP port) consuming the topic in a group, with
#     the caller's extra serve arguments (e.g. --cluster-key-file FILE); kill9(), stop(), sigstop(),
#     sigcont(), restart(), wait_ready(), cpu_seconds(), and the identity lookups the tests count with.
#   - group_state(), committed_offsets(), high_watermarks(), wait_drained(): what the broker says of the group.
# Contract: every wait has a deadline and fails (harness.fail) naming what did not happen; nothing here
# writes outside the temporary directories harness.py removes (kept when a test fails), but for Kafka's jars
# that scripts/kafka_broker.sh caches in ~/.cache/medstream. It never decides
# what a test asserts, and it never sends PHI anywhere but to the nodes under test (test data only).
# Needs python3-confluent-kafka (Debian's; /usr/bin/python3) and Java 17 for the broker.

import json
import os
import random
import signal
import subprocess
import time

import harness as H
from harness import fail

SCRIPT = os.path.join(H.REPO_ROOT, "scripts", "kafka_broker.sh")


def have_confluent_kafka():
    try:
        import confluent_kafka  # noqa: F401
        return True
    except ImportError:
        return False


def require_confluent_kafka():
    """Skip the calling test when the client library is missing."""
    if not have_confluent_kafka():
        raise H.Skip("python3-confluent-kafka is not installed")


# ---------------------------------------------------------------------------------------------
# the broker

class Broker:
    """A real one-node Kafka broker on loopback, in a temporary directory harness.py removes."""

    def __init__(self, heap=None):
        self.base = H.tempfile.mkdtemp(prefix="medstream-e2e-kafka-")
        H._temp_dirs.append(self.base)  # removed with the servers' when the run passes
        self.dir = os.path.join(self.base, "broker")
        self.heap = heap
        self.bootstrap = None

    def start(self):
        env = dict(os.environ)
        if self.heap:
            env["KAFKA_HEAP"] = self.heap
        r = None
        for _attempt in range(3):  # again with other ports if one was taken between the pick and the bind
            port, cport = H.free_port(), H.free_port()
            if port == cport:
                continue
            r = subprocess.run(["bash", SCRIPT, "start", self.dir, str(port), str(cport)], capture_output=True,
                               text=True, timeout=600, env=env)
            if r.returncode == 0:
                self.bootstrap = "127.0.0.1:%d" % port
                return self.bootstrap
            try:
                out = open(os.path.join(self.dir, "broker.out")).read()
            except OSError:
                out = ""
            if "Address already in use" not in out:
                break
        fail("scripts/kafka_broker.sh start: %s %s" % (r.stdout[-500:] if r else "", r.stderr[-1500:] if r else ""))

    def pid(self):
        try:
            return int(open(os.path.join(self.dir, "broker.pid")).read().strip())
        except (OSError, ValueError):
            return None

    def stop(self):
        subprocess.run(["bash", SCRIPT, "stop", self.dir], timeout=60)
        self.bootstrap = None


_shared_broker = None


def shared_broker():
    """The module's broker, started on first use and stopped at exit (harness.on_exit)."""
    global _shared_broker
    if _shared_broker is None:
        b = Broker()
        b.start()

        def stop_all():  # the nodes first: a consumer closes quickly while its broker is still there
            for s in H._all_servers:
                if isinstance(s, Node):
                    s.stop()
            b.stop()
        H.on_exit(stop_all)
        _shared_broker = b
    return _shared_broker


# ---------------------------------------------------------------------------------------------
# topics and records

def admin(bootstrap):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap, topic, partitions, config=None):
    from confluent_kafka.admin import NewTopic
    a = admin(bootstrap)  # kept referenced until the futures resolve (a destroyed client fails them)
    fs = a.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=dict(config or {}))])
    for f in fs.values():
        f.result(timeout=60)
    # the topic's leaders are known before anyone produces or consumes (metadata is eventually consistent)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = a.list_topics(topic, timeout=10)
        t = md.topics.get(topic)
        if t and not t.error and len(t.partitions) == partitions and all(p.leader >= 0 for p in t.partitions.values()):
            return
        time.sleep(0.1)
    fail("topic %s: %d partitions with leaders not seen within 30 s" % (topic, partitions))


def delete_topics(bootstrap, topics):
    """Delete topics (a benchmark's, once measured: their bytes would fill the disk); waits for the answer."""
    a = admin(bootstrap)  # kept referenced until the futures resolve
    for f in a.delete_topics(list(topics), operation_timeout=60).values():
        try:
            f.result(timeout=90)
        except Exception:  # noqa: B902 - already gone
            pass


def read_topic(bootstrap, topic, committed=False, timeout=120.0):
    """Every message of topic to the end of each partition (read_committed if committed), as confluent_kafka
    Message objects in each partition's order; fails unless every partition reached its end in time."""
    from confluent_kafka import Consumer, TopicPartition
    conf = {"bootstrap.servers": bootstrap, "group.id": "read-%d" % random.randrange(1 << 30),
            "enable.partition.eof": True, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    if committed:
        conf["isolation.level"] = "read_committed"
    c = Consumer(conf)
    parts = list(c.list_topics(topic, timeout=30).topics[topic].partitions)
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    open_parts, out, t0 = set(parts), [], time.monotonic()
    while open_parts and time.monotonic() - t0 < timeout:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                open_parts.discard(m.partition())
            continue
        out.append(m)
    c.close()
    if open_parts:
        fail("read %s to its end within %.0f s (left: %s)" % (topic, timeout, sorted(open_parts)))
    return out


def identity_key(rec):
    """The message key the tests' producers use by default: name|dob."""
    return (rec["name"] + "|" + rec["dob"]).encode()


def shard_of(rec):
    """The shard of an ASCII-named record as medstream computes it (src/pipeline/shard.h: XXH3-64 of the
    identity key, the normalized name NUL the date of birth, mod 4096); for ASCII names normalization is
    lower case with whitespace collapsed and trimmed. Needs python3-xxhash."""
    import xxhash
    name = rec["name"]
    if not name.isascii():
        raise ValueError("shard_of: only ASCII names (the rest needs NFKC and case folding)")
    norm = " ".join(name.lower().split())
    return xxhash.xxh3_64_intdigest(norm.encode() + b"\0" + rec["dob"].encode()) % 4096


def shard_partition(partitions):
    """A produce() partition function: each record to its shard's partition (shard mod partitions), as
    medstream's own producers send them."""
    return lambda _i, rec: shard_of(rec) % partitions


def producer(bootstrap, **conf):
    from confluent_kafka import Producer
    c = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    c.update(conf)
    return Producer(c)


def produce(bootstrap, topic, records, keys="identity", partition=None, p=None, flush=True, delivered=None):
    """Produce records (dicts, sent as JSON; or bytes, sent as they are). keys: "identity" (name|dob, dicts
    only), "random" (16 random bytes), None (no key) or a function record -> bytes. partition: None (the
    producer's partitioner), an int, or a function (index, record) -> int. delivered: a dict that gets
    record_id -> partition as the broker acknowledges each dict record. Returns the Producer (reuse it
    with p=); with flush, fails unless every message was delivered within 120 s."""
    if p is None:  # (not `p or`: a Producer's len() is its queue length, so an idle one is falsy)
        p = producer(bootstrap)
    for i, r in enumerate(records):
        value = r if isinstance(r, (bytes, bytearray)) else json.dumps(r).encode()
        if keys == "identity":
            key = identity_key(r)
        elif keys == "random":
            key = os.urandom(16)
        elif keys is None:
            key = None
        else:
            key = keys(r)
        kw = {}
        if delivered is not None and isinstance(r, dict):
            def note(err, msg, rid=r.get("record_id")):
                if err is None:
                    delivered[rid] = msg.partition()
            kw["on_delivery"] = note
        if partition is not None:
            kw["partition"] = partition(i, r) if callable(partition) else partition
        while True:
            try:
                p.produce(topic, key=key, value=value, **kw)
                break
            except BufferError:  # the local queue is full: let it drain
                p.poll(0.05)
        p.poll(0)
    if flush and p.flush(120) != 0:
        fail("not every message delivered to the broker within 120 s")
    return p


_FILLER = None


def padded_record(i, size, identities, prefix="cl"):
    """A record of about size bytes of JSON (a "note" of letters from a fixed random pool makes up the rest):
    record id PREFIX-i, of the identity i % identities."""
    global _FILLER
    if _FILLER is None:
        rng = random.Random(16)
        _FILLER = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz     ") for _ in range(1 << 20))
    who = i % identities
    r = {"record_id": "%s-%d" % (prefix, i), "name": "Cluster Person %d" % who,
         "dob": "19%02d-%02d-%02d" % (40 + who % 60, 1 + who % 12, 1 + who % 28), "type": "visit",
         "ts": "2026-01-01T00:00:00Z", "n": i}
    need = size - len(json.dumps(r)) - len(', "note": ""')
    if need > 0:
        at = (i * 7919) % (len(_FILLER) - need) if need < len(_FILLER) else 0
        r["note"] = _FILLER[at:at + need]
    return r


# ---------------------------------------------------------------------------------------------
# what the broker says of the group

class GroupProbe:
    """One Consumer of the group that never subscribes (so never joins it): the topic's high watermarks and
    the group's committed offsets (an OffsetFetch). Debian's confluent-kafka 1.7 has no
    AdminClient.list_consumer_group_offsets. Close it (or use it in a with block)."""

    def __init__(self, bootstrap, group, topic):
        from confluent_kafka import Consumer
        self.topic = topic
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        self.parts = None

    def _partitions(self):
        from confluent_kafka import TopicPartition
        if self.parts is None:
            md = self.c.list_topics(self.topic, timeout=10)
            self.parts = [TopicPartition(self.topic, pid) for pid in sorted(md.topics[self.topic].partitions)]
        return self.parts

    def high_watermarks(self, limit=30.0):
        """{partition: high watermark}; errors the broker calls retriable (a new topic's leaders not known
        yet: NOT_LEADER_FOR_PARTITION) are asked again for up to limit seconds."""
        from confluent_kafka import KafkaError, KafkaException
        deadline = time.monotonic() + limit
        while True:
            try:
                return {tp.partition: self.c.get_watermark_offsets(tp, timeout=10)[1] for tp in self._partitions()}
            except KafkaException as e:
                err = e.args[0]  # leaders of a topic just made: not known yet for a moment
                moving = err.retriable() or err.code() in (KafkaError.NOT_LEADER_FOR_PARTITION,
                                                           KafkaError.LEADER_NOT_AVAILABLE,
                                                           KafkaError.UNKNOWN_TOPIC_OR_PART)
                if not moving or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def committed(self):
        """{partition: the group's committed offset} (negative where none)."""
        return {tp.partition: tp.offset for tp in self.c.committed(self._partitions(), timeout=30)}

    def close(self):
        self.c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def high_watermarks(bootstrap, topic):
    """{partition: high watermark} of every partition of topic."""
    with GroupProbe(bootstrap, "medstream-cluster-probe", topic) as g:
        return g.high_watermarks()


def committed_offsets(bootstrap, group, topic):
    """{partition: the group's committed offset} (negative where none)."""
    with GroupProbe(bootstrap, group, topic) as g:
        return g.committed()


def _assignment_partitions(blob):
    """The partitions in a member's assignment (Kafka's ConsumerProtocolAssignment: int16 version, then
    [topic string, [int32 partition]], then user data)."""
    import struct
    out, pos = [], 2
    try:
        (ntopics,) = struct.unpack_from(">i", blob, pos)
        pos += 4
        for _ in range(max(ntopics, 0)):
            (tlen,) = struct.unpack_from(">h", blob, pos)
            pos += 2 + tlen
            (nparts,) = struct.unpack_from(">i", blob, pos)
            pos += 4
            out += list(struct.unpack_from(">%di" % nparts, blob, pos))
            pos += 4 * nparts
    except (struct.error, TypeError):
        pass
    return sorted(out)


def group_state(bootstrap, group):
    """(state, [(client id, member id, [partitions])]) from AdminClient.list_groups; state as the broker
    says it ("Stable", "PreparingRebalance", "CompletingRebalance", "Empty", "Dead", "Unknown"). A Node's
    client id is its name (it passes --kafka-config client.id=NAME)."""
    a = admin(bootstrap)
    groups = a.list_groups(group, timeout=10)
    if not groups:
        return "Unknown", []
    g = groups[0]
    return g.state, [(m.client_id, m.id, _assignment_partitions(m.assignment)) for m in g.members]


def wait_group(bootstrap, group, members, timeout=60.0):
    """Until the group is stable with exactly `members` members, each assigned at least one partition;
    returns {client id: [partitions]} (member ids where client ids repeat)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = group_state(bootstrap, group)
            state, m = last
            if state == "Stable" and len(m) == members and all(parts for _c, _m, parts in m):
                clients = [c for c, _m, _p in m]
                unique = len(set(clients)) == len(clients)
                return {(c if unique else mid): parts for c, mid, parts in m}
        except Exception as e:  # noqa: B902 - the group is not known yet, or the coordinator is loading
            last = repr(e)
        time.sleep(0.2)
    fail("group %s: not stable with %d members within %.0f s (last: %s)" % (group, members, timeout, last))


def lag(bootstrap, group, topic):
    """Messages between the group's committed offsets and the high watermarks (total)."""
    with GroupProbe(bootstrap, group, topic) as g:
        hw, co = g.high_watermarks(), g.committed()
    return sum(hi - max(co.get(p, 0), 0) for p, hi in hw.items())


def wait_drained(nodes, topic=None, timeout=120.0, poll=0.25, bootstrap=None, group=None, progress=None):
    """Until the group's committed offsets reach the high watermarks of every partition of topic (the
    nodes' group, topic and brokers unless given); fails on a node that died meanwhile, or at the timeout
    naming the partitions behind. Errors the broker calls retriable (a coordinator loading or moving) are
    waited out. Returns the seconds it waited; a progress dict gets "first_commit" (time.monotonic() when
    a committed offset was first seen above 0, to poll's precision)."""
    from confluent_kafka import KafkaException
    n0 = nodes[0]
    bootstrap, group, topic = bootstrap or n0.bootstrap, group or n0.group, topic or n0.topic
    t0 = time.monotonic()
    last = None
    with GroupProbe(bootstrap, group, topic) as g:
        while time.monotonic() - t0 < timeout:
            for n in nodes:
                rc = n.note_if_died()
                if rc is not None:
                    fail("node %s died (exit %s) while draining: %s" % (n.name, rc, n.log_tail()))
            try:
                hw, co = g.high_watermarks(), g.committed()
                if progress is not None and "first_commit" not in progress and any(o > 0 for o in co.values()):
                    progress["first_commit"] = time.monotonic()
                last = {p: (co.get(p), hi) for p, hi in hw.items() if hi > 0 and co.get(p, -1) < hi}
                if not last:
                    return time.monotonic() - t0
            except KafkaException as e:
                last = str(e)
            time.sleep(poll)
    fail("group %s not drained on %s within %.0f s (partition: (committed, high watermark)) %s"
         % (group, topic, timeout, last))


def kafka_log_lines(node):
    """The lines of a node's whole log (every start) that speak of Kafka or the cluster."""
    try:
        with open(node.log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if "kafka" in ln or "cluster" in ln]


def eventually(check_fn, limit=30.0, pause=0.5):
    """Run check_fn until it passes (returns its value) or limit seconds have gone by (its last failure
    then stands). A cluster node commits a batch's offsets in its Kafka transaction *before* the batch goes
    into LMDB (cluster.h), so a drained group (wait_drained) may still have its last batch on the way into a
    node's store for a moment: checks of what a node stores run through this."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return check_fn()
        except H.TestFailure:
            if time.monotonic() > deadline:
                raise
            time.sleep(pause)

# ---------------------------------------------------------------------------------------------
# a node

def cpu_seconds(pid):
    """utime + stime of a process from /proc/PID/stat, in seconds; None if there is no such process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except (OSError, TypeError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Node(H.Server):
    """One `medstream serve` in the group: its own data directory and HTTP port (harness.Server), consuming
    topic from bootstrap as group, with extra serve arguments (e.g. --kafka-batch, --cluster-key-file); its
    Kafka client id is its name, so group_state() tells the nodes apart."""

    def __init__(self, bootstrap, topic, group, extra_args=(), name="node"):
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.kafka = True
        super().__init__(extra_args=list(extra_args), name=name)

    def serve_args(self, port):
        kafka = ["--kafka-brokers", self.bootstrap, "--kafka-topic", self.topic, "--kafka-group", self.group,
                 "--kafka-config", "client.id=" + self.name] if self.kafka else []
        return super().serve_args(port) + kafka

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def sigstop(self):
        """SIGSTOP: the process freezes (no heartbeats); it keeps its sockets and state."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def sigcont(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self):
        """SIGCONT first (a stopped process would not act on SIGTERM), then harness's SIGTERM/SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        return super().stop()

    def restart(self, kafka=True):
        """Stop (SIGTERM) if running, start again on the same data directory (a new HTTP port: self.port);
        kafka=False starts it without joining the group (to read its store alone)."""
        self.stop()
        self.kafka = kafka
        return self.start()

    def wait_ready(self, timeout=30.0):
        """Until /healthz is 200 and, since this start, the log says the consumer got partitions
        (kafka.assigned, "partitions assigned" in the text and the JSON line alike)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                fail("node %s is not running: %s" % (self.name, self.log_tail()))
            try:
                ok = H.http_request(self.port, "GET", "/healthz", timeout=2.0).status == 200
            except OSError:
                ok = False
            if ok and (not self.kafka or "partitions assigned" in self.log_text_since_start()):
                return
            time.sleep(0.1)
        fail("node %s not ready within %.0f s: %s" % (self.name, timeout, self.log_tail()))

    def start(self, health_timeout=H.HEALTH_TIMEOUT):
        try:
            self._log_mark = os.path.getsize(self.log_path)
        except OSError:
            self._log_mark = 0
        return super().start(health_timeout)

    def log_text_since_start(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(getattr(self, "_log_mark", 0))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def cpu_seconds(self):
        """utime + stime of the running process, in seconds; None when not running."""
        return cpu_seconds(self.proc.pid) if self.proc is not None else None

    def patient_id(self, name, dob):
        """The patient id this node's store has for the identity, or None (404)."""
        r = self.get("/v1/patients?" + H.q({"name": name, "dob": dob}))
        if r.status == 404:
            return None
        if r.status != 200:
            fail("node %s: GET /v1/patients: HTTP %d: %s" % (self.name, r.status, H.short(r.text)))
        return r.json()["patient_id"]

    def patient_records(self, patient_id):
        """Every record of the patient in this node's store (all pages): [{record_id, version, ...}]."""
        return self.get_all("/v1/patients/%s/records" % patient_id, "records")

    def records_of(self, name, dob):
        """(patient id or None, this node's records of the identity)."""
        pid = self.patient_id(name, dob)
        return pid, (self.patient_records(pid) if pid else [])


def cluster_key_file():
    """A fresh cluster key file (64 hex characters, mode 0600) in a directory removed at exit."""
    d = H.tempfile.mkdtemp(prefix="medstream-e2e-cluster-key-")
    H._temp_dirs.append(d)
    path = os.path.join(d, "cluster.key")
    with open(path, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    os.chmod(path, 0o600)
    return path


class Member(Node):
    """A node of a medstream cluster (--kafka-cluster, README "Cluster"): its store made by `medstream init
    --cluster-key-file KEY`, served with the same key. key None: a plain Node."""

    def __init__(self, bootstrap, topic, group, key, extra_args=(), name="node"):
        self.key = key
        super().__init__(bootstrap, topic, group, extra_args=list(extra_args), name=name)

    def init(self):
        if not self.key:
            return super().init()
        r = H.subprocess.run([H.BIN, "init", self.data_dir, "--cluster-key-file", self.key], capture_output=True,
                             text=True, timeout=60, stdin=H.subprocess.DEVNULL)
        if r.returncode != 0:
            fail("init %s: %s" % (self.name, H.short(r.stderr)))
        self.initialized = True

    def serve_args(self, port):
        return super().serve_args(port) + (["--kafka-cluster", "--cluster-key-file", self.key] if self.key else [])


def cleanup():
    """For scripts that do not run under harness.main(): stop every node and broker, remove their
    directories."""
    H._cleanup_all(remove_dirs=not os.environ.get("MEDSTREAM_E2E_KEEP"))
