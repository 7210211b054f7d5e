# End-to-end tests of CSV over HTTP (issue 11): POST /v1/records with Content-Type text/csv, a header row
# first (docs/API.md "CSV"). The same records sent as NDJSON and as CSV are the same records (the CSV after
# the NDJSON is all duplicates, and every record and patient reads back equal); quoting edge cases (BOM,
# CR LF and LF mixed, "" inside quotes, commas and line breaks in quotes, whitespace kept, empty cells
# absent, no final line end); a bad row among good ones (wrong cell count, invalid UTF-8, an unterminated
# quote that does not swallow the rows after it) answered per row with its physical line, byte offset and
# column and never a value; a --schema that maps column names, converts US dates and types numbers and
# booleans; refusals of the whole body (header, Content-Type parameters, the converted size).
#
# Run: /usr/bin/python3 tests/e2e/test_csv.py [NAME_SUBSTRING...]   (see harness.py, run.sh)

import json
import os
import re
import tempfile

import harness as H
from harness import check, eq, short, test

def server(key="csv", args=()):
    return H.shared_server(key, args)


def csv_cell(v):
    """A CSV cell for value v as a careful writer quotes it (always when it must, sometimes when not)."""
    if v is None:
        return ""
    if any(c in v for c in ',"\r\n') or v.startswith(" "):
        return '"' + v.replace('"', '""') + '"'
    return v


def to_csv(columns, records, eol="\r\n", final_eol=True):
    lines = [",".join(csv_cell(c) for c in columns)]
    for r in records:
        lines.append(",".join(csv_cell(r.get(c)) for c in columns))
    return (eol.join(lines) + (eol if final_eol else "")).encode("utf-8")


def compact(records):
    """NDJSON as a common serializer writes it (the escapes csv.h writes too)."""
    return b"".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
                    for r in records)


def post_csv(s, body, content_type="text/csv"):
    r = s.ingest(body, content_type)
    if r.status != 200:
        H.fail("POST text/csv: expected 200, got %d: %s" % (r.status, short(r.text)))
    return r.json()


def items_by_line(answer):
    out = {}
    for it in answer["items"]:
        check(it["line"] not in out, "two items for line %d: %s" % (it["line"], short(answer)))
        out[it["line"]] = it
    return out


def no_values_in(error, values):
    for v in values:
        check(v not in error, "error %r leaks the value %r" % (error, v))


# ---------------------------------------------------------------------------------------------

@test
def test_same_records_as_ndjson_and_csv():
    s = server()
    tag = H.rand_token(8)
    columns = ["name", "dob", "favorite_color", "type", "ts", "notes", "ward"]
    records = [
        {"name": "Ann %s" % tag, "dob": "1990-01-31", "favorite_color": "red", "type": "visit",
         "ts": "2025-03-04T05:06:07Z", "notes": 'said "hi", then left\r\nsecond line\nthird', "ward": "  3B  "},
        {"name": "Bob %s" % tag, "dob": "1980-02-29", "notes": "tab\there, back\\slash, é€😀, bell\x07 \b\f",
         "ward": "x"},
        {"name": "Ann %s" % tag, "dob": "1990-01-31", "type": "lab", "notes": ",", "favorite_color": '"'},
        {"name": "Cy %s" % tag, "dob": "1970-12-01", "notes": "\n", "ward": "\"quoted\""},
    ]
    nd = post_csv(s, compact(records), "application/x-ndjson")
    eq(nd["errors"], False, "NDJSON errors (%s)" % short(nd))
    ans = post_csv(s, to_csv(columns, records))
    eq(ans["errors"], False, "CSV errors (%s)" % short(ans))
    eq(len(ans["items"]), len(records), "items")
    # the CSV's rows are the NDJSON's records: same ids (derived from the content), all duplicates
    for i, (a, b) in enumerate(zip(nd["items"], ans["items"])):
        eq(b["status"], "duplicate", "row %d status" % (i + 1))
        eq(b["record_id"], a["record_id"], "row %d record id" % (i + 1))
        eq(b["patient_id"], a["patient_id"], "row %d patient" % (i + 1))
        eq(b["version"], 1, "row %d version" % (i + 1))
        got = s.get_json("/v1/records/" + a["record_id"])
        eq(got["fields"], records[i], "row %d fields as stored" % (i + 1))
    # physical lines: the header is line 1, row 1's note holds two line breaks
    eq([it["line"] for it in ans["items"]], [2, 5, 6, 7], "CSV item lines")
    # the patient reads the same whichever way it came
    p = s.get_json("/v1/patients?" + H.q({"name": "Ann %s" % tag, "dob": "1990-01-31"}))
    eq(p["version"], 2, "Ann's versions (two records, the CSV added none)")
    eq(p["fields"]["notes"], ",", "Ann's merged notes")


@test
def test_quoting_edge_cases():
    s = server()
    tag = H.rand_token(8)
    body = ("\ufeffrecord_id,name,dob,note,empty\r\n"                           # BOM, CR LF
            "q1-%s,\"Lee, Ann %s\",1990-01-31,\"a \"\"b\"\" c\",\n"             # 2: "" and a comma
            "q2-%s,Lee Bo %s,1990-01-31,\"two\r\nlines\nmixed\",\"\"\n"         # 3-5: line breaks in quotes, ""
            "\n"                                                              # 6: an empty line
            "q3-%s,  Lee Cy %s  ,1990-01-31,   ,\r\n"                          # 7: whitespace kept
            "q4-%s,Lee Di %s,1990-01-31,last,x"                               # 8: no final line end
            ) % (tag, tag, tag, tag, tag, tag, tag, tag)
    ans = post_csv(s, body.encode("utf-8"))
    eq(ans["errors"], False, "errors (%s)" % short(ans))
    by = items_by_line(ans)
    eq(sorted(by), [2, 3, 7, 8], "lines")
    want = {
        "q1": {"record_id": "q1-" + tag, "name": "Lee, Ann " + tag, "dob": "1990-01-31", "note": 'a "b" c'},
        "q2": {"record_id": "q2-" + tag, "name": "Lee Bo " + tag, "dob": "1990-01-31", "note": "two\r\nlines\nmixed"},
        "q3": {"record_id": "q3-" + tag, "name": "  Lee Cy %s  " % tag, "dob": "1990-01-31", "note": "   "},
        "q4": {"record_id": "q4-" + tag, "name": "Lee Di " + tag, "dob": "1990-01-31", "note": "last", "empty": "x"},
    }
    for k, fields in want.items():
        got = s.get_json("/v1/records/%s-%s" % (k, tag))
        eq(got["fields"], fields, "%s fields" % k)
    # whitespace is kept in the record; the identity is normalized (trimmed) as for JSON
    p = s.get_json("/v1/patients?" + H.q({"name": "Lee Cy " + tag, "dob": "1990-01-31"}))
    eq(p["fields"]["name"], "  Lee Cy %s  " % tag, "the name as sent")


@test
def test_bad_rows_among_good_ones():
    s = server()
    tag = H.rand_token(8)
    secret = "Zebulon" + tag
    lines = [
        "record_id,name,dob,note",                                      # 1
        "b1-%s,Good One %s,1990-01-01,fine" % (tag, tag),               # 2
        "b2-%s,%s,1990-01-01" % (tag, secret),                          # 3: three cells
        "b3-%s,%s\udcff,1990-01-01,x" % (tag, secret),                  # 4: invalid UTF-8 (a lone 0xff byte)
        "b7-%s,Good Three %s,1990-01-01,\"multi\nline\"" % (tag, tag),  # 5-6
        "b4-%s,%s,1990-01-01,\"never closed" % (tag, secret),           # 7: unterminated quote ...
        "b5-%s,Good Two %s,1990-01-01,fine" % (tag, tag),               # 8: ... that does not swallow this
        "b6-%s,%s,2990-01-01,x" % (tag, secret),                        # 9: a date in the future (stage 2)
    ]
    body = "\n".join(lines).encode("utf-8", "surrogateescape") + b"\n"
    ans = post_csv(s, body)
    eq(ans["errors"], True, "errors flag")
    by = items_by_line(ans)
    eq(sorted(by), [2, 3, 4, 5, 7, 8, 9], "lines (%s)" % short(ans))
    for line in (2, 5, 8):
        eq(by[line]["status"], "created", "line %d (%s)" % (line, short(by[line])))
    offsets = [0, 0]
    for ln in body.split(b"\n"):
        offsets.append(offsets[-1] + len(ln) + 1)          # offsets[n]: byte offset of physical line n
    expect = {
        3: r"^line 3, byte %d: 3 cells, the header has 4$" % offsets[3],
        4: r"^line 4, byte %d: column 2 \(\"name\"\) is not valid UTF-8$" % offsets[4],
        7: r"^line 7, byte %d: column 4 \(\"note\"\) has an unterminated quote; the line was skipped$" % offsets[7],
        9: r"^line 9: field \"dob\" is in the future$",
    }
    for line, pattern in expect.items():
        it = by[line]
        eq(it["status"], "rejected", "line %d" % line)
        check(re.match(pattern, it["error"]), "line %d error %r !~ %r" % (line, it["error"], pattern))
        no_values_in(it["error"], [secret, tag, "never closed"])
    for k in ("b1", "b5", "b7"):
        eq(s.get("/v1/records/%s-%s" % (k, tag)).status, 200, "%s stored" % k)
    for k in ("b2", "b3", "b4", "b6"):
        eq(s.get("/v1/records/%s-%s" % (k, tag)).status, 404, "%s not stored" % k)
    eq(s.get_json("/v1/records/b7-%s" % tag)["fields"]["note"], "multi\nline", "b7's note")
    # a quote broken over several lines: the span is one rejected item, the rows after it are read
    body = ("record_id,name,dob\n"
            "c1-%s,\"%s,1990-01-01\n"     # 2: the quote runs on ...
            "junk\n"                     # 3
            "c2-%s,Good %s,1990-01-01\n"  # 4: ... but this line is a row
            ) % (tag, secret, tag, tag)
    ans = post_csv(s, body.encode())
    by = items_by_line(ans)
    eq(sorted(by), [2, 4], "span lines (%s)" % short(ans))
    check(re.match(r"^lines 2-3, byte 19: column 2 \(\"name\"\) has an unterminated quote", by[2]["error"]),
          "span error %r" % by[2]["error"])
    eq(by[4]["status"], "created", "the row after the span")


@test
def test_schema_mapped_columns_us_dates_and_types():
    d = tempfile.mkdtemp(prefix="medstream-e2e-csv-schema-")
    H._temp_dirs.append(d)
    path = os.path.join(d, "schema.json")
    with open(path, "w") as f:
        json.dump({"columns": {"Patient Name": "name", "Birth Date": "dob", "Wt (kg)": "weight"},
                   "types": {"weight": "number", "smoker": "boolean"},
                   "dob_format": "%m/%d/%Y",
                   "public": {"favorite_color": "copy", "type": "copy", "ts": "year"}}, f)
    s = server("csv-schema", ["--schema", path])
    tag = H.rand_token(8)
    body = ("record_id,Patient Name,Birth Date,Wt (kg),smoker\r\n"
            "m1-{t},Mia {t},01/31/1990,70.5,TRUE\r\n"      # 2
            "m2-{t},Mia {t},1/31/1990,,0\r\n"              # 3: the same patient; an empty weight is absent
            "m3-{t},Max {t},1990-01-31,80,true\r\n"        # 4: not the schema's format
            "m4-{t},Max {t},02/30/1990,80,true\r\n"        # 5: not a real date
            "m5-{t},Max {t},03/01/1990,eighty,true\r\n"    # 6
            "m6-{t},Max {t},03/01/1990,80,maybe\r\n"       # 7
            ).format(t=tag)
    ans = post_csv(s, body.encode())
    by = items_by_line(ans)
    eq(by[2]["status"], "created", "line 2 (%s)" % short(by[2]))
    eq(by[3]["status"], "created", "line 3 (%s)" % short(by[3]))
    eq(by[3]["patient_id"], by[2]["patient_id"], "one patient for 01/31/1990 and 1/31/1990")
    eq(s.get_json("/v1/records/m1-" + tag)["fields"],
       {"record_id": "m1-" + tag, "name": "Mia " + tag, "dob": "1990-01-31", "weight": 70.5, "smoker": True},
       "m1 fields: mapped names, the ISO date, a number and a boolean")
    eq(s.get_json("/v1/records/m2-" + tag)["fields"],
       {"record_id": "m2-" + tag, "name": "Mia " + tag, "dob": "1990-01-31", "smoker": False}, "m2 fields")
    p = s.get_json("/v1/patients?" + H.q({"name": "Mia " + tag, "dob": "1990-01-31"}))
    eq(p["patient_id"], by[2]["patient_id"], "lookup by the converted date")
    expect = {4: 'column 3 ("Birth Date") does not match the date format %m/%d/%Y',
              5: 'column 3 ("Birth Date") is not a real date',
              6: 'column 4 ("Wt (kg)") is not a number',
              7: 'column 5 ("smoker") is not a boolean (true, false, 1 or 0)'}
    for line, text in expect.items():
        eq(by[line]["status"], "rejected", "line %d" % line)
        check(by[line]["error"].startswith("line %d, byte " % line) and by[line]["error"].endswith(text),
              "line %d error %r" % (line, by[line]["error"]))
        no_values_in(by[line]["error"], ["Max", tag, "eighty", "maybe", "1990-01-31"])
    # a header whose two columns become one field
    r = s.ingest(b"Patient Name,name,Birth Date\nA,B,01/01/1990\n", "text/csv")
    eq(r.status, 400, "two columns for one field")
    eq(r.json()["error"], 'CSV header: column 1 ("Patient Name") and column 2 ("name") are both field "name"',
       "its message")


@test
def test_refusals():
    s = server()
    cases = [
        (b"", "text/csv", 400, "CSV: no header row (the input is empty)"),
        (b"\xef\xbb\xbf", "text/csv", 400, "CSV: no header row (the input is empty)"),
        (b"name,dob\n", "text/csv", 400, "empty body: a CSV header row and no records"),
        (b"name,dob\n\n\n", "text/csv", 400, "empty body: a CSV header row and no records"),
        (b"name,,dob\nA,,1990-01-01\n", "text/csv", 400, "CSV header: column 2 has no name"),
        (b"name,dob,name\n", "text/csv", 400, 'CSV header: column 3 ("name") has the name of column 1'),
        (b"name,\"dob\n", "text/csv", 400, "CSV header: column 2 has an unterminated quote"),
        (b"n\xffame,dob\n", "text/csv", 400, "CSV header: column 1: its name is not valid UTF-8"),
        (b"name,dob\nA,1990-01-01\n", "text/csv; charset=ISO-8859-1", 415, "text/csv must be UTF-8 (charset=utf-8)"),
        (b"name,dob\nA,1990-01-01\n", "text/csv; header=absent", 415,
         "text/csv needs its header row (header=present): it names the fields"),
        (b"name,dob\nA,1990-01-01\n", "text/csvx", 415, None),
    ]
    for body, ct, status, message in cases:
        r = s.ingest(body, ct)
        eq(r.status, status, "%r as %s (%s)" % (body[:30], ct, short(r.text)))
        if message is not None:
            eq(r.json().get("error"), message, "%r as %s: message" % (body[:30], ct))
    # parameters that are fine
    tag = H.rand_token(8)
    for i, ct in enumerate(("text/csv; charset=utf-8", "TEXT/CSV;charset=\"UTF-8\"; header=present",
                            "text/csv ; charset=us-ascii")):
        body = ("record_id,name,dob\nct%d-%s,Ct %s,1990-01-01\n" % (i, tag, tag)).encode()
        ans = post_csv(s, body, ct)
        eq(ans["items"][0]["status"], "created", "as %s (%s)" % (ct, short(ans)))
    check(s.alive(), "server alive")


@test
def test_converted_body_over_twice_max_body_413():
    s = server("csv-small", ["--max-body", "8192"])
    names = ["c%d_" % i + "x" * 300 for i in range(3)]
    header = ",".join(names) + "\n"
    body = (header + "a,b,c\n" * 1000).encode()
    check(len(body) <= 8192, "the body itself is under the limit (%d)" % len(body))
    r = s.ingest(body, "text/csv")
    eq(r.status, 413, "records of 1000 short rows under long names (%s)" % short(r.text))
    check(re.match(r"^the CSV body makes \d+ bytes of records, more than 16384 \(twice --max-body\); "
                   r"send fewer rows a request$", r.json()["error"]), "message %r" % r.json()["error"])
    tag = H.rand_token(8)
    ok = ("record_id,name,dob\nsm-%s,Small %s,1990-01-01\n" % (tag, tag)).encode()
    eq(post_csv(s, ok)["items"][0]["status"], "created", "a small CSV on the same server")


if __name__ == "__main__":
    H.main()
