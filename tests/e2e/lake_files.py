# lake_files.py - every data file of a lake (`serve --lake DIR`) as its readers see it, for the lake's tests
# (test_lake.py, test_erasure_sinks.py); not a test file, it registers no test.
#
# read(python, lake, needle=b"", strict=True) runs READER under `python` (a venv with pyarrow and DuckDB:
# test_export.py's venv_python) and returns {"files": [{"path", "rows"}], "problems": [...], "holding":
# [...], "duck": [[path, record_id, version]...]}:
#   - each file outside _medstream against the commits log's last word on its path (a roll's line, or a
#     later line's "rewritten" list): its bytes, SHA-256 and rows; a visible file no line names, or a named
#     file missing, is a problem;
#   - each file read whole on its own by pyarrow (year= and date= directories of two schemas do not make
#     one Hive dataset), its rows as dicts;
#   - the files holding `needle` anywhere in their bytes;
#   - DuckDB's (file, record_id, version) over every record file at once (union_by_name), checked against
#     pyarrow's rows.
# strict: fail the calling test on any problem (a lake caught mid-crash is read with strict=False).

import json
import subprocess

from harness import check, eq, fail, short

READER = r"""
import hashlib, json, os, sys
import duckdb, pyarrow.parquet as pq
lake, needle = sys.argv[1], bytes.fromhex(sys.argv[2])
last = {}
log = os.path.join(lake, "_medstream", "commits")
if os.path.exists(log):
    for line in open(log, encoding="utf-8"):
        en = json.loads(line)
        for f in en["files"] + en.get("rewritten", []):
            last[f["path"]] = f
problems, files, holding, visible = [], [], [], []
for root, dirs, names in os.walk(lake):
    rel = os.path.relpath(root, lake)
    if rel == "_medstream" or rel.startswith("_medstream" + os.sep):
        continue
    for fn in names:
        p = os.path.relpath(os.path.join(root, fn), lake)
        visible.append(p)
        data = open(os.path.join(lake, p), "rb").read()
        if needle and needle in data:
            holding.append(p)
        f = last.get(p)
        if f is None:
            problems.append("visible but not in the commits log: " + p)
        elif len(data) != f["bytes"] or hashlib.sha256(data).hexdigest() != f["sha256"]:
            problems.append("bytes or sha256 differ from the log's last word on it: " + p)
        t = pq.read_table(os.path.join(lake, p), partitioning=None)
        if f is not None and t.num_rows != f["rows"]:
            problems.append("rows differ from the log: " + p)
        files.append({"path": p, "rows": t.to_pylist()})
problems += ["listed in the commits log but missing: " + p for p in last if p not in visible]
duck = []
paths = sorted(os.path.join(lake, p) for p in visible if p.startswith("records/"))
if paths:
    q = ("select filename, record_id, version from read_parquet([%s], union_by_name=true, filename=true, "
         "hive_partitioning=false)" % ",".join("'%s'" % f.replace("'", "''") for f in paths))
    duck = [[os.path.relpath(f, lake), r, v] for f, r, v in duckdb.sql(q).fetchall()]
print(json.dumps({"problems": problems, "files": files, "duck": duck, "holding": holding}, default=str))
"""


def read(python, lake, needle=b"", strict=True):
    r = subprocess.run([python, "-c", READER, lake, needle.hex()], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        fail("pyarrow/duckdb could not read the lake %s: %s" % (lake, short(r.stderr, 1500)))
    res = json.loads(r.stdout)
    if strict:
        check(not res["problems"], "lake problems: %s" % short(res["problems"], 800))
        eq(sorted(map(tuple, res["duck"])),
           sorted((f["path"], x["record_id"], x["version"]) for f in res["files"] if f["path"].startswith("records/")
                  for x in f["rows"]), "(file, record_id, version) read by DuckDB vs pyarrow")
    return res
