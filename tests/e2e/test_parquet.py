# End-to-end tests of the project's Parquet writer (src/parquet/) against independent readers: files
# written by tools/parquet_sample (the writer in the sanitizer build, next to $MEDSTREAM_BIN) from rows
# this file makes with a seeded random generator, read back with pyarrow (read_table, ParquetFile
# metadata) and DuckDB (read_parquet, parquet_metadata, parquet_schema, parquet_kv_metadata,
# parquet_file_metadata), and every value compared with what was asked for. Checked: every type
# (STRING, JSON, TIMESTAMP(UTC, micros), INT64, DOUBLE, BOOLEAN), required and optional, with and
# without a dictionary, under SNAPPY, ZSTD and no compression; nulls (also whole columns of them);
# unicode (2-, 3- and 4-byte UTF-8, a unicode column name), empty strings, strings over 1 MiB; int64
# extremes, doubles with NaN, infinities, -0.0, subnormals; the schema (physical, converted and logical
# types, repetition), created_by, key-value metadata, row groups cut by bytes (several, none empty,
# counts adding up), encodings (RLE_DICTIONARY with a dictionary page; PLAIN after the dictionary passes
# 1 MiB), compression per chunk, statistics (min/max true bounds by both readers, null counts, none for
# an all-null or all-NaN chunk or for strings over 4 KiB); a million rows with a JSON column usable as
# JSON in DuckDB; a file of 0 rows; refusals (a null in a required column, a duplicate column name).
#
# The readers come from PyPI into a virtual environment the tests own (build/venv, made with the
# system python3's venv module on first use; this file re-runs itself under it).
#
# Run: MEDSTREAM_BIN=$PWD/build/san/medstream /usr/bin/python3 tests/e2e/test_parquet.py [NAME_SUBSTRING...]
# (needs build/san/parquet_sample: `make build/san/parquet_sample`)

import os
import sys

import harness as H


def _ensure_readers():
    """Re-run this file under build/venv's python, with pyarrow and duckdb installed there."""
    try:
        import duckdb  # noqa: F401
        import pyarrow  # noqa: F401
        return
    except ImportError:
        pass
    try:
        if os.environ.get("MEDSTREAM_PARQUET_VENV") == "1":
            raise RuntimeError("pyarrow or duckdb is missing in %s" % H.VENV)
        vpy = H.venv_python(["pyarrow", "duckdb"], ["pyarrow", "duckdb"])
    except Exception as e:  # noqa: BLE001 - any setup failure is one failed test, with its reason
        print("FAIL setup: the readers could not be installed: %s" % e, flush=True)
        print("0 passed, 1 failed", flush=True)
        sys.exit(1)
    env = dict(os.environ, MEDSTREAM_PARQUET_VENV="1")
    os.execve(vpy, [vpy, os.path.abspath(__file__)] + sys.argv[1:], env)


if __name__ == "__main__":
    _ensure_readers()

import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import struct  # noqa: E402

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import subprocess  # noqa: E402

from harness import check, eq, fail, short, test  # noqa: E402, F401

TOOL = os.environ.get("PARQUET_SAMPLE") or os.path.join(os.path.dirname(H.BIN), "parquet_sample")
CREATED_BY = "medstream version 0.12.0 (build e2e)"
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
TS_MIN, TS_MAX = -62135596800000000, 253402300799999999  # 0001-01-01 .. 9999-12-31T23:59:59.999999Z
TYPES = ["lab", "visit", "patient", "note"]


def tmpdir(tag):
    d = H.tempfile.mkdtemp(prefix="medstream-parquet-%s-" % tag)
    H._temp_dirs.append(d)
    return d


def col(name, type_, optional=False, dictionary=False):
    return {"name": name, "type": type_, "optional": optional, "dict": dictionary}


def encode_value(c, v):
    if v is None:
        return None
    if c["type"] == "double":
        return float(v).hex()  # exact: strtod reads it back bit for bit ("nan", "inf" included)
    return v


def run_tool(args, timeout=180):
    check(os.access(TOOL, os.X_OK), "%s is missing: make build/san/parquet_sample" % TOOL)
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return subprocess.run([TOOL] + args, capture_output=True, timeout=timeout, env=env)


def write_file(path, columns, rows, codec="snappy", row_group_bytes=None, page_bytes=None, kv=None,
               created_by=CREATED_BY, expect_ok=True):
    """rows: lists of values by column (None a null). Returns the tool's {"rows","bytes"} or the process."""
    src = path + ".ndjson"
    with open(src, "w", encoding="utf-8") as f:
        for i, r in enumerate(rows):
            obj = {}
            for c, v in zip(columns, r):
                if v is None and i % 2 == 0:
                    continue  # a missing member is a null too
                obj[c["name"]] = encode_value(c, v)
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    args = ["--out", path, "--rows", src, "--codec", codec, "--created-by", created_by]
    for c in columns:
        args += ["--column", c["name"] + ":" + c["type"] + (":optional" if c["optional"] else "") +
                 (":dict" if c["dict"] else "")]
    if row_group_bytes:
        args += ["--row-group-bytes", str(row_group_bytes)]
    if page_bytes:
        args += ["--page-bytes", str(page_bytes)]
    for k, v in (kv or {}).items():
        args += ["--kv", "%s=%s" % (k, v)]
    p = run_tool(args)
    if not expect_ok:
        return p
    check(p.returncode == 0, "parquet_sample failed (%d): %s" % (p.returncode, short(p.stderr.decode(errors="replace"))))
    out = json.loads(p.stdout)
    eq(out["rows"], len(rows), "rows written")
    eq(out["bytes"], os.path.getsize(path), "bytes written = file size")
    return out


# ---- comparing values ----

def same(a, b):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, float) or not isinstance(b, float):
            return False
        if math.isnan(a):
            return math.isnan(b)
        return struct.pack("<d", a) == struct.pack("<d", b)  # -0.0 and 0.0 differ
    return type(a) is type(b) and a == b


def compare_column(reader, name, got, want):
    eq(len(got), len(want), "%s: %s row count" % (reader, name))
    for i, (g, w) in enumerate(zip(got, want)):
        if not same(g, w):
            fail("%s: column %s row %d: read %s, wrote %s" % (reader, name, i, short(repr(g), 120), short(repr(w), 120)))


def is_extension(t):
    return isinstance(t, getattr(pa, "BaseExtensionType", pa.ExtensionType))


def arrow_values(table, c):
    a = table.column(c["name"])
    if is_extension(a.type):  # pyarrow reads the JSON logical type as the arrow.json extension type
        a = pa.chunked_array([ch.storage for ch in a.chunks], type=a.type.storage_type)
    if c["type"] == "timestamp":
        a = a.cast(pa.int64())
    return a.to_pylist()


def check_arrow(path, columns, rows):
    table = pq.read_table(path)
    eq(table.num_rows, len(rows), "pyarrow: num_rows")
    eq(table.column_names, [c["name"] for c in columns], "pyarrow: column names")
    for j, c in enumerate(columns):
        f = table.schema.field(c["name"])
        eq(f.nullable, c["optional"], "pyarrow: %s nullable" % c["name"])
        t = f.type
        if is_extension(t):
            check(c["type"] == "json" and getattr(t, "extension_name", "") == "arrow.json",
                  "pyarrow: %s is an extension type %s" % (c["name"], t))
            t = t.storage_type
        ok = {"string": pa.types.is_string, "json": pa.types.is_string, "int64": pa.types.is_int64,
              "double": pa.types.is_float64, "boolean": pa.types.is_boolean,
              "timestamp": lambda x: pa.types.is_timestamp(x) and x.unit == "us" and x.tz in ("UTC", "+00:00")}
        check(ok[c["type"]](t) or (c["type"] in ("string", "json") and pa.types.is_large_string(t)),
              "pyarrow: %s read as %s" % (c["name"], t))
        compare_column("pyarrow", c["name"], arrow_values(table, c), [r[j] for r in rows])


def lit(text):
    return "'" + text.replace("'", "''") + "'"


def qi(name):
    return '"' + name.replace('"', '""') + '"'


def check_duckdb(path, columns, rows):
    con = duckdb.connect()
    sel = []
    for c in columns:
        if c["type"] == "timestamp":
            sel.append("epoch_us(%s)" % qi(c["name"]))
        elif c["type"] == "json":
            sel.append("%s::VARCHAR" % qi(c["name"]))
        else:
            sel.append(qi(c["name"]))
    got = con.execute("SELECT %s FROM read_parquet(?, file_row_number=true) ORDER BY file_row_number" % ", ".join(sel),
                      [path]).fetchall()
    eq(len(got), len(rows), "duckdb: row count")
    for j, c in enumerate(columns):
        compare_column("duckdb", c["name"], [r[j] for r in got], [r[j] for r in rows])
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(%s))"
                             % lit(path)).fetchall())
    want = {"string": ("VARCHAR",), "json": ("JSON", "VARCHAR"), "int64": ("BIGINT",), "double": ("DOUBLE",),
            "boolean": ("BOOLEAN",), "timestamp": ("TIMESTAMP WITH TIME ZONE",)}
    for c in columns:
        check(types.get(c["name"]) in want[c["type"]], "duckdb: %s is %s" % (c["name"], types.get(c["name"])))
    con.close()


# ---- the expected statistics ----

def plain_bytes(c, v):
    if c["type"] in ("string", "json"):
        return v.encode("utf-8")
    return v


def expected_stats(c, values):
    """(min, max, null_count) as pyarrow's min_raw/max_raw give them, or (None, None, n) for none."""
    nulls = sum(1 for v in values if v is None)
    vals = [v for v in values if v is not None]
    if c["type"] == "double":
        vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return None, None, nulls
    if c["type"] in ("string", "json"):
        bs = [v.encode("utf-8") for v in vals]
        lo, hi = min(bs), max(bs)  # bytes compare unsigned, a prefix first
        if len(lo) > 4096 or len(hi) > 4096:
            return None, None, nulls
        return lo, hi, nulls
    lo, hi = min(vals), max(vals)
    if c["type"] == "double":
        lo = -0.0 if lo == 0 else lo
        hi = 0.0 if hi == 0 else hi
    return lo, hi, nulls


def check_arrow_stats(path, columns, rows_by_group):
    md = pq.ParquetFile(path).metadata
    eq(md.num_row_groups, len(rows_by_group), "pyarrow: row groups")
    for g, grows in enumerate(rows_by_group):
        rg = md.row_group(g)
        for j, c in enumerate(columns):
            st = rg.column(j).statistics
            check(st is not None, "pyarrow: %s has statistics" % c["name"])
            lo, hi, nulls = expected_stats(c, [r[j] for r in grows])
            check(st.has_null_count, "pyarrow: %s null_count written" % c["name"])
            eq(st.null_count, nulls, "pyarrow: %s null_count (row group %d)" % (c["name"], g))
            if lo is None:
                check(not st.has_min_max, "pyarrow: %s has no min/max (row group %d)" % (c["name"], g))
                continue
            check(st.has_min_max, "pyarrow: %s has min/max (row group %d)" % (c["name"], g))
            got_lo, got_hi = st.min_raw, st.max_raw
            if c["type"] == "boolean":
                got_lo, got_hi = bool(got_lo), bool(got_hi)
            check(same(got_lo, lo) and same(got_hi, hi),
                  "pyarrow: %s min/max %s..%s, want %s..%s" % (c["name"], short(repr(got_lo), 60),
                                                               short(repr(got_hi), 60), short(repr(lo), 60),
                                                               short(repr(hi), 60)))


def split_groups(path, rows):
    """The rows of each row group, by the file's row counts."""
    md = pq.ParquetFile(path).metadata
    out, at = [], 0
    for g in range(md.num_row_groups):
        n = md.row_group(g).num_rows
        check(n > 0, "row group %d is empty" % g)
        out.append(rows[at:at + n])
        at += n
    eq(at, len(rows), "rows in row groups")
    return out


# ---- random values ----

ALPHABET = ["a", "b", "z", "A", " ", "0", "é", "ß", "Ω", "中", "文", "😀", "\U0001F9EC", "\n", "\"", "\\", "\t",
            "\u00ff", "\u0800", "\uffff"]


def rand_text(rng, max_len):
    n = rng.choice([0, 0, 1, 2, 5, rng.randint(0, max_len)])
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def rand_value(rng, c, card=None):
    if c["optional"] and rng.random() < 0.2:
        return None
    t = c["type"]
    if t == "string":
        if card:
            return "v%d-%s" % (rng.randrange(card), rng.choice(["", "é", "中"]))
        return rand_text(rng, 40)
    if t == "json":
        return json.dumps({"k": rand_text(rng, 10), "n": rng.randint(-5, 5), "a": [1, None, True]},
                          ensure_ascii=False)
    if t == "int64":
        if card:
            return rng.randrange(card) - card // 2
        return rng.choice([INT64_MIN, INT64_MAX, 0, -1, 1, rng.randint(INT64_MIN, INT64_MAX), rng.randint(-1000, 1000)])
    if t == "timestamp":
        return rng.choice([TS_MIN, TS_MAX, 0, -1, rng.randint(TS_MIN, TS_MAX), 1795000000000000 + rng.randint(0, 10**9)])
    if t == "double":
        return rng.choice([math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, -1.7976931348623157e308,
                           rng.uniform(-1e6, 1e6), rng.random()])
    if t == "boolean":
        return rng.random() < 0.5
    raise AssertionError(t)


ALL_COLUMNS = [
    col("id", "string"), col("name", "string", optional=True), col("type", "string", dictionary=True),
    col("ward", "string", optional=True, dictionary=True), col("doc", "json", optional=True),
    col("ts", "timestamp"), col("seen", "timestamp", optional=True, dictionary=True),
    col("n", "int64"), col("code", "int64", optional=True, dictionary=True), col("x", "double", optional=True),
    col("y", "double"), col("ok", "boolean"), col("flag", "boolean", optional=True), col("naïve_名", "string"),
]


def random_rows(seed, n, columns=ALL_COLUMNS):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        r = []
        for c in columns:
            if c["name"] == "id":
                r.append("rec-%d-%d" % (seed, i))
            else:
                r.append(rand_value(rng, c, card=12 if c["dict"] else None))
        rows.append(r)
    return rows


# ---- the tests ----

@test(timeout=120)
def test_every_type_every_codec():
    d = tmpdir("types")
    for k, codec in enumerate(["snappy", "zstd", "none"]):
        rows = random_rows(1000 + k, 3000)
        path = os.path.join(d, "types-%s.parquet" % codec)
        write_file(path, ALL_COLUMNS, rows, codec=codec, page_bytes=8192)
        check_arrow(path, ALL_COLUMNS, rows)
        check_duckdb(path, ALL_COLUMNS, rows)
        check_arrow_stats(path, ALL_COLUMNS, split_groups(path, rows))
        md = pq.ParquetFile(path).metadata
        want = {"snappy": "SNAPPY", "zstd": "ZSTD", "none": "UNCOMPRESSED"}[codec]
        for j in range(len(ALL_COLUMNS)):
            eq(md.row_group(0).column(j).compression, want, "compression of column %d" % j)
        con = duckdb.connect()
        comp = {r[0] for r in con.execute("SELECT DISTINCT compression FROM parquet_metadata(?)", [path]).fetchall()}
        eq(comp, {want}, "duckdb: compression")
        con.close()


@test(timeout=60)
def test_schema_and_file_metadata():
    d = tmpdir("schema")
    path = os.path.join(d, "schema.parquet")
    rows = random_rows(7, 200)
    kv = {"medstream.as_of": "2026-11-29T18:00:00Z", "medstream.scope": "public", "empty": ""}
    write_file(path, ALL_COLUMNS, rows, kv=kv)
    pf = pq.ParquetFile(path)
    md = pf.metadata
    eq(md.created_by, CREATED_BY, "pyarrow: created_by")
    eq(md.num_rows, 200, "pyarrow: num_rows")
    eq(md.num_columns, len(ALL_COLUMNS), "pyarrow: num_columns")
    eq(md.metadata, {k.encode(): v.encode() for k, v in kv.items()}, "pyarrow: key-value metadata")
    want = {"string": ("BYTE_ARRAY", "STRING", "UTF8"), "json": ("BYTE_ARRAY", "JSON", "JSON"),
            "timestamp": ("INT64", "TIMESTAMP", "TIMESTAMP_MICROS"), "int64": ("INT64", "INT", "INT_64"),
            "double": ("DOUBLE", "NONE", "NONE"), "boolean": ("BOOLEAN", "NONE", "NONE")}
    for j, c in enumerate(ALL_COLUMNS):
        sc = md.schema.column(j)
        eq(sc.name, c["name"], "pyarrow: column %d name" % j)
        phys, logical, converted = want[c["type"]]
        eq(sc.physical_type, phys, "pyarrow: %s physical type" % c["name"])
        eq(str(sc.logical_type.type).upper(), logical, "pyarrow: %s logical type" % c["name"])
        eq(sc.converted_type, converted, "pyarrow: %s converted type" % c["name"])
        eq(sc.max_definition_level, 1 if c["optional"] else 0, "pyarrow: %s max definition level" % c["name"])
        if c["type"] == "timestamp":
            s = str(sc.logical_type)
            check("isAdjustedToUTC=true" in s and "microseconds" in s, "pyarrow: timestamp logical type %s" % s)
        if c["type"] == "int64":
            s = str(sc.logical_type)
            check("bitWidth=64" in s and "isSigned=true" in s, "pyarrow: int logical type %s" % s)

    con = duckdb.connect()
    schema = con.execute("SELECT name, type, repetition_type, num_children, converted_type, logical_type "
                         "FROM parquet_schema(?)", [path]).fetchall()
    eq(len(schema), len(ALL_COLUMNS) + 1, "duckdb: schema elements")
    eq(schema[0][3], len(ALL_COLUMNS), "duckdb: root num_children")
    dtype = {"string": "BYTE_ARRAY", "json": "BYTE_ARRAY", "timestamp": "INT64", "int64": "INT64",
             "double": "DOUBLE", "boolean": "BOOLEAN"}
    for c, (name, typ, rep, _, conv, logical) in zip(ALL_COLUMNS, schema[1:]):
        eq(name, c["name"], "duckdb: schema name")
        eq(typ, dtype[c["type"]], "duckdb: %s type" % name)
        eq(rep, "OPTIONAL" if c["optional"] else "REQUIRED", "duckdb: %s repetition" % name)
        if c["type"] in ("double", "boolean"):
            check(conv is None and logical is None, "duckdb: %s has no converted/logical type" % name)
        else:
            eq(conv, want[c["type"]][2], "duckdb: %s converted type" % name)
            check(logical is not None, "duckdb: %s logical type" % name)
    fm = con.execute("SELECT created_by, num_rows, num_row_groups FROM parquet_file_metadata(?)", [path]).fetchone()
    eq(fm, (CREATED_BY, 200, 1), "duckdb: file metadata")
    got_kv = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
              for k, v in con.execute("SELECT key, value FROM parquet_kv_metadata(?)", [path]).fetchall()}
    eq(got_kv, kv, "duckdb: key-value metadata")
    con.close()


@test(timeout=120)
def test_dictionary_encoding_and_fallback():
    d = tmpdir("dict")
    cols = [col("type", "string", dictionary=True), col("code", "int64", optional=True, dictionary=True),
            col("uniq", "string", dictionary=True), col("plain", "string")]
    n = 60000
    rows = [[TYPES[i % 4], None if i % 9 == 0 else (i % 50) * 1000003, "u-%028d" % i, "p-%d" % (i % 4)]
            for i in range(n)]  # uniq: 60,000 x 34 bytes of dictionary, past 1 MiB
    path = os.path.join(d, "dict.parquet")
    write_file(path, cols, rows, codec="zstd")
    check_arrow(path, cols, rows)
    check_duckdb(path, cols, rows)
    check_arrow_stats(path, cols, split_groups(path, rows))
    md = pq.ParquetFile(path).metadata
    eq(md.num_row_groups, 1, "one row group")
    cc = [md.row_group(0).column(j) for j in range(4)]
    for j in (0, 1):
        check("RLE_DICTIONARY" in cc[j].encodings, "%s encodings %s" % (cols[j]["name"], cc[j].encodings))
        check(cc[j].has_dictionary_page and cc[j].dictionary_page_offset is not None,
              "%s has a dictionary page" % cols[j]["name"])
        check(cc[j].dictionary_page_offset < cc[j].data_page_offset, "dictionary page first")
        check("PLAIN" in cc[j].encodings, "%s: PLAIN (the dictionary page's encoding) listed" % cols[j]["name"])
    check("RLE_DICTIONARY" in cc[2].encodings and "PLAIN" in cc[2].encodings,
          "uniq falls back: encodings %s" % (cc[2].encodings,))
    check("RLE_DICTIONARY" not in cc[3].encodings and not cc[3].has_dictionary_page, "plain has no dictionary")
    # a dictionary-encoded column is smaller than its plain twin
    check(cc[0].total_uncompressed_size < cc[3].total_uncompressed_size, "dictionary saves bytes")
    con = duckdb.connect()
    enc = dict(con.execute("SELECT path_in_schema, encodings FROM parquet_metadata(?)", [path]).fetchall())
    check("RLE_DICTIONARY" in enc["type"], "duckdb: type encodings %s" % enc["type"])
    offs = con.execute("SELECT dictionary_page_offset, data_page_offset FROM parquet_metadata(?) "
                       "WHERE path_in_schema = 'type'", [path]).fetchone()
    check(offs[0] is not None and offs[0] < offs[1], "duckdb: dictionary_page_offset %s" % (offs,))
    con.close()


@test(timeout=120)
def test_row_groups_cut_by_bytes():
    d = tmpdir("groups")
    cols = [col("id", "string"), col("n", "int64", optional=True), col("note", "string", optional=True)]
    rng = random.Random(99)
    rows = [["r%d" % i, None if rng.random() < 0.1 else i, None if rng.random() < 0.3 else "x" * rng.randint(0, 300)]
            for i in range(40000)]
    path = os.path.join(d, "groups.parquet")
    write_file(path, cols, rows, row_group_bytes=256 * 1024, page_bytes=16 * 1024)
    groups = split_groups(path, rows)
    check(len(groups) >= 10, "several row groups (%d)" % len(groups))
    check_arrow(path, cols, rows)
    check_duckdb(path, cols, rows)
    check_arrow_stats(path, cols, groups)
    con = duckdb.connect()
    counts = con.execute("SELECT row_group_id, max(row_group_num_rows) FROM parquet_metadata(?) GROUP BY 1 ORDER BY 1",
                         [path]).fetchall()
    eq([c[1] for c in counts], [len(g) for g in groups], "duckdb: rows per row group")
    # DuckDB's min/max per row group agree with the values
    st = con.execute("SELECT row_group_id, stats_min_value, stats_max_value, stats_null_count FROM parquet_metadata(?) "
                     "WHERE path_in_schema = 'n' ORDER BY 1", [path]).fetchall()
    for g, (gid, lo, hi, nulls) in enumerate(st):
        vals = [r[1] for r in groups[g] if r[1] is not None]
        eq((int(lo), int(hi), nulls), (min(vals), max(vals), len(groups[g]) - len(vals)), "duckdb: stats of group %d" % g)
    con.close()


@test(timeout=120)
def test_large_and_unicode_strings():
    d = tmpdir("large")
    cols = [col("s", "string", optional=True), col("j", "json", optional=True)]
    big = "é" * (600 * 1024) + "tail"  # 1.2 MB of UTF-8
    huge = "中😀" * (300 * 1024)  # 2.1 MB
    rows = [["", "{}"], [big, json.dumps({"t": big}, ensure_ascii=False)], [None, None], ["a", "[]"],
            [huge, json.dumps([huge])], ["\U0001F9EC", "\"\\u00e9\""], ["", None]]
    path = os.path.join(d, "large.parquet")
    write_file(path, cols, rows)
    check_arrow(path, cols, rows)
    check_duckdb(path, cols, rows)
    check_arrow_stats(path, cols, split_groups(path, rows))
    st = pq.ParquetFile(path).metadata.row_group(0).column(0).statistics
    eq((st.min_raw, st.max_raw, st.null_count), (b"", "\U0001F9EC".encode(), 1), "long values, short bounds")
    # a bound over 4 KiB: no min/max at all (null_count still there)
    p1 = os.path.join(d, "longmax.parquet")
    long_rows = [["a", "[]"], ["b" * 5000, "[" + "1," * 3000 + "1]"], [None, None]]
    write_file(p1, cols, long_rows)
    check_arrow(p1, cols, long_rows)
    check_duckdb(p1, cols, long_rows)
    check_arrow_stats(p1, cols, split_groups(p1, long_rows))
    for j in range(2):
        st = pq.ParquetFile(p1).metadata.row_group(0).column(j).statistics
        check(not st.has_min_max and st.null_count == 1, "a max over 4 KiB: no min/max, null_count 1")
    # short unicode strings: min/max by unsigned bytes ("z" < "é" < "中" < "😀")
    small = [["z"], ["é"], ["😀"], ["中"], ["Z"], ["ZZ"]]
    p2 = os.path.join(d, "unicode.parquet")
    write_file(p2, cols[:1], small)
    check_arrow(p2, cols[:1], small)
    check_duckdb(p2, cols[:1], small)
    st = pq.ParquetFile(p2).metadata.row_group(0).column(0).statistics
    eq((st.min_raw, st.max_raw), ("Z".encode(), "😀".encode()), "pyarrow: string min/max by bytes")
    con = duckdb.connect()
    lo, hi = con.execute("SELECT stats_min_value, stats_max_value FROM parquet_metadata(?)", [p2]).fetchone()
    eq((lo, hi), ("Z", "😀"), "duckdb: string min/max")
    con.close()


@test(timeout=60)
def test_int64_extremes_and_doubles():
    d = tmpdir("numbers")
    cols = [col("i", "int64"), col("t", "timestamp"), col("x", "double", optional=True)]
    rows = [[INT64_MIN, TS_MIN, math.nan], [INT64_MAX, TS_MAX, math.inf], [0, 0, -math.inf], [-1, -1, -0.0],
            [1, 1, 0.0], [INT64_MIN + 1, 1795000000123456, 5e-324], [INT64_MAX - 1, -123, None],
            [42, 42, 1.7976931348623157e308]]
    path = os.path.join(d, "numbers.parquet")
    write_file(path, cols, rows, codec="zstd")
    check_arrow(path, cols, rows)
    check_duckdb(path, cols, rows)
    check_arrow_stats(path, cols, split_groups(path, rows))
    st = pq.ParquetFile(path).metadata.row_group(0).column(0).statistics
    eq((st.min_raw, st.max_raw), (INT64_MIN, INT64_MAX), "int64 extremes as min/max")
    xs = pq.ParquetFile(path).metadata.row_group(0).column(2).statistics
    eq((xs.min_raw, xs.max_raw), (-math.inf, math.inf), "double min/max skip NaN")
    # zeros of both signs only: min -0.0, max +0.0
    zeros = [[0, 0, 0.0], [0, 0, -0.0], [0, 0, math.nan]]
    p2 = os.path.join(d, "zeros.parquet")
    write_file(p2, cols, zeros)
    check_arrow(p2, cols, zeros)
    zs = pq.ParquetFile(p2).metadata.row_group(0).column(2).statistics
    check(math.copysign(1, zs.min_raw) < 0 and zs.min_raw == 0, "zero min is -0.0 (%r)" % zs.min_raw)
    check(math.copysign(1, zs.max_raw) > 0 and zs.max_raw == 0, "zero max is +0.0 (%r)" % zs.max_raw)
    # only NaN and nulls: no min/max
    nans = [[0, 0, math.nan], [0, 0, None]]
    p3 = os.path.join(d, "nans.parquet")
    write_file(p3, cols, nans)
    check_arrow(p3, cols, nans)
    check_duckdb(p3, cols, nans)
    ns = pq.ParquetFile(p3).metadata.row_group(0).column(2).statistics
    check(not ns.has_min_max and ns.null_count == 1, "all NaN: no min/max")
    con = duckdb.connect()
    n = con.execute("SELECT count(*) FROM read_parquet(?) WHERE i = ?", [path, INT64_MIN]).fetchone()[0]
    eq(n, 1, "duckdb finds INT64_MIN (statistics not misleading)")
    n = con.execute("SELECT count(*) FROM read_parquet(?) WHERE x = 0", [path]).fetchone()[0]
    eq(n, 2, "duckdb finds both zeros")
    con.close()


@test(timeout=60)
def test_nulls_only_and_zero_rows():
    d = tmpdir("empty")
    cols = [col("s", "string", optional=True, dictionary=True), col("i", "int64", optional=True),
            col("b", "boolean", optional=True), col("r", "string")]
    rows = [[None, None, None, "x%d" % i] for i in range(100)]
    path = os.path.join(d, "nulls.parquet")
    write_file(path, cols, rows)
    check_arrow(path, cols, rows)
    check_duckdb(path, cols, rows)
    check_arrow_stats(path, cols, split_groups(path, rows))

    p0 = os.path.join(d, "zero.parquet")
    write_file(p0, ALL_COLUMNS, [])
    t = pq.read_table(p0)
    eq(t.num_rows, 0, "pyarrow: 0 rows")
    eq(t.column_names, [c["name"] for c in ALL_COLUMNS], "pyarrow: 0-row schema")
    eq(pq.ParquetFile(p0).metadata.num_row_groups, 0, "pyarrow: no row group")
    con = duckdb.connect()
    eq(con.execute("SELECT count(*) FROM read_parquet(?)", [p0]).fetchone()[0], 0, "duckdb: 0 rows")
    eq(con.execute("SELECT num_row_groups FROM parquet_file_metadata(?)", [p0]).fetchone()[0], 0, "duckdb: no row group")
    eq(len(con.execute("DESCRIBE SELECT * FROM read_parquet(%s)" % lit(p0)).fetchall()), len(ALL_COLUMNS),
       "duckdb: schema")
    con.close()
    with open(p0, "rb") as f:
        data = f.read()
    check(data[:4] == b"PAR1" and data[-4:] == b"PAR1", "PAR1 at both ends")
    eq(struct.unpack("<I", data[-8:-4])[0], len(data) - 12, "footer length")


@test(timeout=60)
def test_refusals():
    d = tmpdir("refuse")
    cols = [col("a", "string"), col("b", "int64", optional=True)]
    p = write_file(os.path.join(d, "null.parquet"), cols, [["x", 1], [None, 2]], expect_ok=False)
    eq(p.returncode, 1, "a null in a required column: exit 1")
    err = p.stderr.decode(errors="replace")
    check("column a" in err and "required" in err, "the refusal names the column: %s" % short(err))
    p = write_file(os.path.join(d, "dup.parquet"), [col("a", "string"), col("a", "int64")], [["x", 1]],
                   expect_ok=False)
    eq(p.returncode, 1, "a duplicate column: exit 1")
    check("twice" in p.stderr.decode(errors="replace"), "the refusal says why: %s" % short(p.stderr))


def million_expected(seed, n):
    i = range(n)
    return {
        "record_id": ["r-%d-%d" % (seed, k) for k in i],
        "patient_id": ["p-%d" % (k * 7919 % 65536) for k in i],
        "version": [k % 7 + 1 for k in i],
        "type": [TYPES[(k // 3) % 4] for k in i],
        "ts": [1700000000000000 + k * 1000003 + seed for k in i],
        "score": [None if k % 7 == 3 else k * 0.25 - 1000 for k in i],
        "flag": [None if k % 11 == 5 else k % 3 == 0 for k in i],
        "doc": [None if k % 13 == 0 else '{"i":%d,"note":"row %d of %d","u":"é中"}' % (k, k, seed) for k in i],
    }


@test(timeout=280)
def test_million_rows_with_json():
    d = tmpdir("million")
    n, seed = 1000000, 20261129
    path = os.path.join(d, "million.parquet")
    p = run_tool(["--out", path, "--generate", str(n), "--seed", str(seed), "--row-group-bytes", str(32 << 20),
                  "--kv", "medstream.rows=%d" % n], timeout=240)
    check(p.returncode == 0, "parquet_sample --generate failed: %s" % short(p.stderr.decode(errors="replace")))
    eq(json.loads(p.stdout)["rows"], n, "rows written")
    md = pq.ParquetFile(path).metadata
    eq(md.num_rows, n, "pyarrow: num_rows")
    check(md.num_row_groups >= 3, "several row groups (%d)" % md.num_row_groups)
    eq(sum(md.row_group(g).num_rows for g in range(md.num_row_groups)), n, "row groups add up")
    check(all(md.row_group(g).num_rows > 0 for g in range(md.num_row_groups)), "no empty row group")
    for g in range(md.num_row_groups):
        for j, name in ((1, "patient_id"), (3, "type")):
            check("RLE_DICTIONARY" in md.row_group(g).column(j).encodings, "%s dictionary-encoded" % name)
    table = pq.read_table(path)
    want = million_expected(seed, n)
    for name, values in want.items():
        a = table.column(name)
        if is_extension(a.type):
            a = pa.chunked_array([ch.storage for ch in a.chunks], type=a.type.storage_type)
        got = a.cast(pa.int64()).to_pylist() if name == "ts" else a.to_pylist()
        if got != values:
            k = next(k for k in range(n) if not same(got[k], values[k]))
            fail("pyarrow: %s row %d: read %r, wrote %r" % (name, k, got[k], values[k]))
    del table, want

    con = duckdb.connect()
    bad = con.execute("""
        SELECT count(*) FROM read_parquet(?, file_row_number=true) WHERE (
            record_id = concat('r-', ?, '-', file_row_number)
            AND patient_id = concat('p-', file_row_number * 7919 % 65536)
            AND version = file_row_number % 7 + 1
            AND type = ['lab', 'visit', 'patient', 'note'][(file_row_number // 3) % 4 + 1]
            AND epoch_us(ts) = 1700000000000000 + file_row_number * 1000003 + ?
            AND score IS NOT DISTINCT FROM (CASE WHEN file_row_number % 7 = 3 THEN NULL
                                            ELSE file_row_number::DOUBLE * 0.25 - 1000.0 END)
            AND flag IS NOT DISTINCT FROM (CASE WHEN file_row_number % 11 = 5 THEN NULL
                                           ELSE file_row_number % 3 = 0 END)
            AND doc::VARCHAR IS NOT DISTINCT FROM (CASE WHEN file_row_number % 13 = 0 THEN NULL
                ELSE concat('{"i":', file_row_number, ',"note":"row ', file_row_number, ' of ', ?, '","u":"é中"}')
                END)
        ) IS NOT TRUE""", [path, str(seed), seed, str(seed)]).fetchone()[0]
    eq(bad, 0, "duckdb: rows that differ")
    eq(con.execute("SELECT count(*) FROM read_parquet(?)", [path]).fetchone()[0], n, "duckdb: count")
    # the JSON column is JSON to DuckDB
    s = con.execute("SELECT sum(json_extract(doc, '$.i')::BIGINT), count(doc) FROM read_parquet(?)", [path]).fetchone()
    want_sum = sum(k for k in range(n) if k % 13 != 0)
    eq(s, (want_sum, n - len(range(0, n, 13))), "duckdb: json_extract over the JSON column")
    eq(con.execute("SELECT count(DISTINCT row_group_id) FROM parquet_metadata(?)", [path]).fetchone()[0],
       md.num_row_groups, "duckdb: row groups")
    con.close()
    # statistics: ts grows with the row number, so each row group's bounds are its first and last rows
    at = 0
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        st = rg.column(4).statistics
        first, last = at, at + rg.num_rows - 1
        eq((st.min_raw, st.max_raw), (1700000000000000 + first * 1000003 + seed, 1700000000000000 + last * 1000003 + seed),
           "pyarrow: ts bounds of row group %d" % g)
        eq(rg.column(0).statistics.null_count, 0, "record_id null_count")
        eq(rg.column(7).statistics.null_count, len(range((first + 12) // 13 * 13, last + 1, 13)),
           "doc null_count of row group %d" % g)
        at += rg.num_rows


if __name__ == "__main__":
    H.main()
