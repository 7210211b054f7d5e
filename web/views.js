// views.js - the console's views, by role. Each names the permissions it needs (GET /v1/me decides which
// are offered; the server refuses the rest anyway), whether it shows PHI (then the audited-access banner
// is up), and renders into its element. Every answer shown comes with its curl line and instant (callBox).

import { call, streamEvents } from "./api.js";
import { el, callBox, errorBox, fields, table, show } from "./ui.js";

function form(onsubmit, ...controls) {
  const f = el("form", { class: "row" }, ...controls);
  f.addEventListener("submit", (ev) => {
    ev.preventDefault();
    onsubmit(new FormData(f));
  });
  return f;
}

function input(label, name, attrs = {}) {
  return el("label", {}, label, el("input", { name, ...attrs }));
}

function select(label, name, options) {
  return el("label", {}, label, el("select", { name }, options.map((o) => el("option", { value: o, text: o || "(any)" }))));
}

const submit = (text) => el("button", { type: "submit", text });
const get = (fd, k) => (fd.get(k) || "").trim();

// ---- clinician: a patient by name and date of birth; state, history, records ----

async function patientView(root) {
  const out = el("div", { "data-part": "patient" });
  root.append(
    form((fd) => findPatient(out, get(fd, "name"), get(fd, "dob"), get(fd, "as_of"), get(fd, "event_at")),
      input("Name", "name", { required: true, autocomplete: "off" }),
      input("Date of birth", "dob", { type: "date", required: true }),
      input("As of (RFC 3339 or snapshot id; empty: now)", "as_of", { placeholder: "now" }),
      input("Event time up to (RFC 3339; optional)", "event_at", { placeholder: "any" }),
      submit("Find patient")),
    out);
}

async function findPatient(out, name, dob, as_of, event_at) {
  await show(out, async () => {
    const r = await call("GET", "/v1/patients", { query: { name, dob, as_of, event_at } });
    const pid = r.data.patient_id;
    const state = el("section", { "aria-labelledby": "state-h" });
    const history = el("section", { "aria-labelledby": "history-h" });
    const records = el("section", { "aria-labelledby": "records-h" });
    renderState(state, r);
    loadHistory(history, state, pid, event_at);
    loadRecords(records, pid, as_of);
    return [el("div", { class: "grid2" }, state, history), records];
  });
}

function renderState(target, r) {
  const d = r.data;
  target.replaceChildren(
    el("h2", { id: "state-h", text: "State" }),
    callBox(r),
    el("p", { "data-version": d.version, text: "Patient " + d.patient_id + ", version " + d.version +
      " (valid from " + d.valid_from + (d.valid_to ? " to " + d.valid_to : "") + ")" }),
    fields(d.fields));
}

async function loadHistory(target, stateTarget, pid, event_at) {
  await show(target, async () => {
    const r = await call("GET", "/v1/patients/" + encodeURIComponent(pid) + "/history");
    const versions = r.data.versions || [];
    const list = el("ol", { class: "timeline", "aria-label": "Versions, oldest first" });
    const pick = el("select", { name: "as_of", "aria-label": "Show the state as of a version" },
      el("option", { value: "", text: "now" }),
      versions.map((v) => el("option", { value: v.valid_from, text: "version " + v.version + " · " + v.valid_from })));
    // the event-time control: merge only the records whose event time is at or before it
    const eventAt = el("input", { name: "event_at", value: event_at || "", placeholder: "any (RFC 3339)" });
    const refresh = async () => {
      try {
        const s = await call("GET", "/v1/patients/" + encodeURIComponent(pid),
          { query: { as_of: pick.value, event_at: eventAt.value.trim() } });
        renderState(stateTarget, s);
        for (const li of list.children) li.classList.toggle("current", li.dataset.version === String(s.data.version));
      } catch (e) {
        stateTarget.replaceChildren(errorBox(e));
      }
    };
    pick.addEventListener("change", refresh);
    eventAt.addEventListener("change", refresh);
    const add = (vs, pickable) => {
      for (const v of vs) {
        list.append(el("li", { "data-version": v.version, class: v.valid_to ? "" : "current" },
          el("b", { text: "version " + v.version }), " ", el("span", { class: "muted", text: v.valid_from + " → " + (v.valid_to || "now") }),
          fields(v.fields)));
        if (pickable) pick.append(el("option", { value: v.valid_from, text: "version " + v.version + " · " + v.valid_from }));
      }
    };
    add(versions, false);
    // the history comes a page at a time (oldest first): the next versions on demand
    const more = (cursor) => cursor ? el("button", { type: "button", class: "plain", text: "Next versions",
      onclick: async (ev) => {
        const n = await call("GET", "/v1/patients/" + encodeURIComponent(pid) + "/history", { query: { cursor } });
        add(n.data.versions || [], true);
        ev.target.replaceWith(more(n.data.next_cursor) || "");
      } }) : null;
    return [el("h2", { id: "history-h", text: "History" }), callBox(r),
      el("div", { class: "row" }, el("label", {}, "As of ", pick), el("label", {}, "Event time up to ", eventAt)), list,
      ...(r.data.next_cursor ? [more(r.data.next_cursor)] : [])];
  });
}

async function loadRecords(target, pid, as_of, cursor) {
  await show(target, async () => {
    const r = await call("GET", "/v1/patients/" + encodeURIComponent(pid) + "/records", { query: { as_of, limit: 50, cursor } });
    const children = el("div", { "data-part": "children" });
    const rows = r.data.records || [];
    const more = r.data.next_cursor ? el("button", { type: "button", class: "plain", text: "Next page",
      onclick: () => loadRecords(target, pid, as_of, r.data.next_cursor) }) : null;
    return [el("h2", { id: "records-h", text: "Records" }), callBox(r),
      table(["record_id", "type", "ts", "version", "children"], rows, (rec, c) => c === "children"
        ? el("button", { type: "button", class: "plain", text: "Children",
          onclick: () => show(children, async () => {
            const k = await call("GET", "/v1/records/" + encodeURIComponent(rec.record_id) + "/children", { query: { as_of } });
            return [el("h2", { text: "Children of " + rec.record_id }), callBox(k),
              table(["record_id", "type", "ts", "version"], k.data.children || [])];
          }) })
        : rec[c]),
      more, children];
  });
}

// ---- clinician: live notifications (rule matches as they are stored) ----

let liveStream = null;

async function notificationsView(root) {
  if (liveStream) liveStream.stop();
  const status = el("p", { role: "status", "data-stream": "connecting", text: "Connecting…" });
  const list = el("tbody", {});
  const out = el("div", {});
  const start = (rule) => {
    if (liveStream) liveStream.stop();
    list.replaceChildren();
    liveStream = streamEvents("/v1/events/stream", { rule }, (ev, seq) => {
      list.prepend(el("tr", { "data-seq": seq },
        [ev.seq, ev.rule, ev.patient_id, ev.record_id, ev.type, ev.field, ev.version, ev.committed_at,
          new Date().toISOString()].map((v) => el("td", { text: v === undefined || v === null ? "" : String(v) }))));
    }, (state) => {
      if (state instanceof Error) {
        status.replaceChildren(errorBox(state));
        status.dataset.stream = "refused";
      } else {
        status.textContent = state === "live" ? "Live: new matches appear at the top as they are stored." : state;
        status.dataset.stream = state;
      }
    }, () => root.isConnected);
    out.replaceChildren(callBox({ curl: liveStream.curl, asOf: "live (each event as it is committed)" }));
  };
  root.append(
    form((fd) => start(get(fd, "rule")), input("Rule (empty: every rule)", "rule", { placeholder: "any" }),
      submit("Follow")),
    out, status,
    el("div", { class: "scroll" }, el("table", { "aria-label": "Rule matches, newest first" },
      el("thead", {}, el("tr", {}, ["seq", "rule", "patient_id", "record_id", "type", "field", "version",
        "committed_at", "received_at"].map((c) => el("th", { scope: "col", text: c })))), list)));
  start("");
}

// ---- analyst: public records, exports ----

async function publicView(root) {
  const out = el("div", { "data-part": "public" });
  root.append(
    form((fd) => publicPage(out, { type: get(fd, "type"), since: get(fd, "since"), until: get(fd, "until"),
        as_of: get(fd, "as_of"), limit: get(fd, "limit") || 50 }),
      input("Type", "type", { placeholder: "any" }),
      input("Event year from", "since", { placeholder: "YYYY", inputmode: "numeric" }),
      input("Event year to", "until", { placeholder: "YYYY", inputmode: "numeric" }),
      input("Snapshot id (as of)", "as_of", { placeholder: "now" }),
      input("Page size", "limit", { type: "number", min: 1, max: 1000, value: 50 }),
      el("button", { type: "button", class: "plain", text: "New snapshot", onclick: async (ev) => {
        const f = ev.target.form;
        try {
          const s = await call("POST", "/v1/snapshots");
          f.elements.as_of.value = s.data.snapshot_id;
        } catch (e) {
          out.replaceChildren(errorBox(e));
        }
      } }),
      submit("Show records")),
    out);
}

async function publicPage(out, query) {
  await show(out, async () => {
    const r = await call("GET", "/v1/public/records", { query });
    const rows = r.data.records || [];
    const cols = ["patient_id", "record_id"];
    for (const rec of rows) for (const k of Object.keys(rec.fields || {})) if (!cols.includes(k)) cols.push(k);
    return [callBox(r), el("p", { "data-rows": rows.length, text: rows.length + " records on this page" }),
      table(cols, rows, (rec, c) => (c in rec ? rec[c] : (rec.fields || {})[c])),
      r.data.next_cursor ? el("button", { type: "button", class: "plain", text: "Next page",
        onclick: () => publicPage(out, { ...query, cursor: r.data.next_cursor }) }) : null];
  });
}

async function exportsView(root, ctx) {
  const out = el("div", { "data-part": "export" });
  // a phi export needs patients:read too (and is audited with every patient id it holds)
  const scopes = ctx.me.permissions.includes("patients:read") ? ["public", "phi"] : ["public"];
  root.append(
    form((fd) => startExport(out, { scope: get(fd, "scope") || "public", format: get(fd, "format"),
        type: get(fd, "type") || undefined }),
      select("Scope", "scope", scopes),
      select("Format", "format", ["parquet", "csv", "ndjson"]),
      input("Type", "type", { placeholder: "any" }),
      submit("Start export")),
    out);
}

async function startExport(out, body) {
  await show(out, async () => {
    const r = await call("POST", "/v1/exports", { body });
    const progress = el("div", { "data-part": "progress" });
    watchExport(progress, r.data.export_id);
    return [callBox(r), progress];
  });
}

async function watchExport(target, id) {
  for (;;) {
    let r;
    try {
      r = await call("GET", "/v1/exports/" + encodeURIComponent(id));
    } catch (e) {
      target.replaceChildren(errorBox(e));
      return;
    }
    const d = r.data;
    const parts = [callBox(r), el("p", { "data-state": d.state, text: "Export " + d.export_id + ": " + d.state +
      (d.phase ? " (" + d.phase + ")" : "") + ", " + (d.rows || 0) + " rows, as of " + d.as_of })];
    if (d.state !== "done" && d.state !== "failed") parts.push(el("progress", { "aria-label": "Export in progress" }));
    if (d.error) parts.push(el("p", { class: "error", role: "alert", text: d.error }));
    if (d.state === "done") {
      const files = (d.manifest && d.manifest.files) || [];
      parts.push(el("p", {}, el("a", { href: d.download, download: "", "data-download": "", text: "Download (tar)" }),
        el("span", { class: "muted", text: " · the link expires at " + d.download_expires_at }),
        el("span", { "data-total-rows": d.rows, text: " · " + d.rows + " rows in all: " + d.record_rows + " records, " +
          d.patient_rows + " patients" })));
      parts.push(el("p", { class: "muted", text: "Each file's rows and SHA-256 below are the manifest's: check a download against them (sha256sum)." }));
      parts.push(table(["path", "rows", "bytes", "sha256"], files));
    }
    target.replaceChildren(...parts);
    if (d.state === "done" || d.state === "failed") return;
    await new Promise((ok) => setTimeout(ok, 700));
  }
}

// ---- analyst (and anyone with public:read): the rolling-window counters as charts over time ----

const SECONDS = { s: 1, m: 60, h: 3600, d: 86400 };

function seconds(duration) {
  const m = /^(\d+)([smhd])$/.exec(String(duration || ""));
  return m ? Number(m[1]) * SECONDS[m[2]] : 0;
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  for (const c of children) e.append(c);
  return e;
}

// Bars of counts, oldest on the left; each bar's title names its window and count (for screen readers too).
function barChart(points, label) {
  const w = 720, h = 180, pad = 24, max = Math.max(1, ...points.map((p) => p.count));
  const bw = (w - pad) / points.length;
  const chart = svg("svg", { viewBox: "0 0 " + w + " " + (h + pad), role: "img", "aria-label": label, class: "chart" });
  points.forEach((p, i) => {
    const bh = Math.round((p.count / max) * (h - 10));
    const bar = svg("rect", { x: pad + i * bw + 2, y: h - bh, width: Math.max(1, bw - 4), height: bh, class: "bar" },
      svg("title", {}, p.from + " → " + p.to + ": " + p.count));
    bar.setAttribute("data-count", p.count);
    chart.append(bar);
    if (points.length <= 31) chart.append(svg("text", { x: pad + i * bw + bw / 2, y: h + 16, "text-anchor": "middle",
      class: "tick" }, p.label));
  });
  chart.append(svg("text", { x: 0, y: 12, class: "tick" }, String(max)), svg("line", { x1: pad, y1: h, x2: w, y2: h, class: "axis" }));
  return chart;
}

async function countersView(root, ctx) {
  const list = el("div", { "data-part": "counters" });
  const chart = el("section", { "data-part": "chart", "aria-live": "polite" });
  const can = (p) => ctx.me.permissions.includes(p);
  const msg = el("div", { role: "status" });
  if (can("counters:create"))
    root.append(form(async (fd) => {
      const def = { name: get(fd, "name"), max_window: get(fd, "max_window") || "7d", resolution: get(fd, "resolution") || "1m" };
      if (get(fd, "type")) def.type = get(fd, "type");
      try {
        const r = await call("POST", "/v1/counters", { body: def });
        msg.replaceChildren(el("p", { class: "ok", text: "Defined " + r.data.counter.name + " (" + r.data.state + ")" }), callBox(r));
        loadCounters(list, chart, ctx);
      } catch (e) {
        msg.replaceChildren(errorBox(e));
      }
    }, input("New counter", "name", { required: true }), input("Record type", "type", { placeholder: "any" }),
    input("Max window", "max_window", { placeholder: "7d" }), input("Resolution", "resolution", { placeholder: "1m" }),
    submit("Define counter")), msg);
  root.append(list, chart);
  loadCounters(list, chart, ctx);
}

async function loadCounters(list, chart, ctx) {
  await show(list, async () => {
    const r = await call("GET", "/v1/counters");
    const counters = r.data.counters || [];
    return [callBox(r), counters.length ? table(["name", "type", "where", "max_window", "resolution", "access", "state", "chart"],
      counters, (c, col) => col !== "chart" ? c[col] : el("span", {},
        el("button", { type: "button", class: "plain", "data-chart": c.name + ":24h", text: "24 h",
          onclick: () => drawCounter(chart, c, 24, 3600) }), " ",
        el("button", { type: "button", class: "plain", "data-chart": c.name + ":7d", text: "7 d",
          onclick: () => drawCounter(chart, c, 7, 86400) }),
        ctx.me.permissions.includes("counters:delete") && c.origin === "api" ? el("button", { type: "button", class: "plain",
          text: "Remove", onclick: async () => {
            try {
              await call("DELETE", "/v1/counters/" + encodeURIComponent(c.name));
              loadCounters(list, chart, ctx);
            } catch (e) {
              list.prepend(errorBox(e));
            }
          } }) : null))
      : el("p", { class: "muted", text: "No counter is defined." })];
  });
}

// bars windows of bucket seconds ending now, fewer when the counter's max_window does not reach so far back.
async function drawCounter(target, c, bars, bucket) {
  await show(target, async () => {
    const n = Math.min(bars, Math.floor(seconds(c.max_window) / bucket));
    if (n < 1) throw new Error("the counter keeps " + c.max_window + ", less than one " + (bucket === 3600 ? "hour" : "day"));
    const window = bucket === 3600 ? "1h" : "24h";
    const ask = (at) => call("GET", "/v1/counters/" + encodeURIComponent(c.name), { query: { window, at, fresh: "false" } });
    const point = (d) => ({ count: d.count, from: d.from, to: d.to, label: bucket === 3600 ? d.to.slice(11, 13) : d.to.slice(5, 10) });
    const latest = await ask(undefined); // the server's now (never the browser's clock), rounded to the resolution
    const end = Date.parse(latest.data.to);
    const points = [point(latest.data)];
    let last = latest;
    for (let k = 1; k < n; k++) {
      last = await ask(new Date(end - k * bucket * 1000).toISOString());
      points.unshift(point(last.data));
    }
    const total = points.reduce((a, p) => a + p.count, 0);
    return [el("h2", { text: c.name + ": " + (bucket === 3600 ? "the last 24 hours, by hour" : "the last 7 days, by day") }),
      el("p", { "data-total": total, text: total + " records in " + n + " windows" + (n < bars ? " (the counter keeps only " + c.max_window + ")" : "") }),
      barChart(points, c.name + " per " + (bucket === 3600 ? "hour" : "day")),
      el("p", { class: "muted", text: "The last of " + n + " calls (one a window):" }), callBox(last)];
  });
}

// ---- auditor: the audit log ----

async function auditView(root) {
  const out = el("div", { "data-part": "audit" });
  const chain = el("section", { "aria-labelledby": "chain-h" });
  const verify = () => show(chain, async () => {
    const r = await call("GET", "/v1/audit/verify");
    const d = r.data;
    return [el("h2", { id: "chain-h", text: "Hash chain" }), callBox(r),
      el("p", { "data-intact": String(d.intact), class: d.intact ? "ok" : "error", role: d.intact ? "status" : "alert",
        text: d.intact ? "Intact: " + d.entries + " entries." : "BROKEN at entry " + d.bad_entry + ": " + d.why }),
      el("p", {}, "Head SHA-256 (anchor it outside this machine): ", el("code", { "data-head": d.head, text: d.head })),
      el("button", { type: "button", class: "plain", text: "Verify again", onclick: verify })];
  });
  verify();
  root.append(chain, el("h2", { text: "Entries" }),
    form((fd) => auditPage(out, { user: get(fd, "user"), action: get(fd, "action"), patient_id: get(fd, "patient_id"),
      since: get(fd, "since"), until: get(fd, "until"), limit: 100 }),
      input("User", "user"), input("Action", "action", { placeholder: "e.g. patients:read" }),
      input("Patient id", "patient_id"),
      input("Since (RFC 3339)", "since", { placeholder: "the first" }),
      input("Until (RFC 3339)", "until", { placeholder: "now" }),
      submit("Show entries")),
    out);
  auditPage(out, { limit: 100 });
}

async function auditPage(out, query) {
  await show(out, async () => {
    const r = await call("GET", "/v1/audit", { query });
    const rows = r.data.entries || [];
    return [callBox(r), table(["seq", "time", "user", "role", "action", "resource", "outcome", "client", "patient_ids"], rows),
      r.data.next_cursor ? el("button", { type: "button", class: "plain", text: "Next page",
        onclick: () => auditPage(out, { ...query, cursor: r.data.next_cursor }) }) : null];
  });
}

// ---- admin: users, health ----

let ROLES = ["clinician", "analyst", "auditor", "ingest", "admin"]; // replaced by GET /v1/roles (a role file's own)

async function usersView(root, ctx) {
  try {
    ROLES = ((await call("GET", "/v1/roles")).data.roles || []).map((r) => r.role);
  } catch (e) {
    root.append(errorBox(e)); // the default table's names stay offered; the server refuses an unknown role
  }
  const out = el("div", { "data-part": "users" });
  const msg = el("div", { role: "status" });
  root.append(
    form(async (fd) => {
      try {
        const r = await call("POST", "/v1/users", { body: { user: get(fd, "user"), password: fd.get("password"), role: get(fd, "role") } });
        msg.replaceChildren(el("p", { class: "ok", text: "Created " + r.data.user + " (" + r.data.role + ")" }), callBox(r));
        listUsers(out, ctx);
      } catch (e) {
        msg.replaceChildren(errorBox(e));
      }
    },
    input("New user", "user", { required: true, autocomplete: "off" }),
    input("Password", "password", { type: "password", required: true, autocomplete: "new-password" }),
    // no role is chosen for the admin: the table's order says nothing of privilege
    el("label", {}, "Role", el("select", { name: "role", required: true },
      el("option", { value: "", text: "choose a role" }), ROLES.map((o) => el("option", { value: o, text: o })))),
    submit("Create user")),
    msg, out);
  listUsers(out, ctx);
}

async function listUsers(out, ctx) {
  await show(out, async () => {
    const r = await call("GET", "/v1/users");
    const act = (u, body, late) => async () => {
      try {
        if (late) body = { role: late() };
        await call("PATCH", "/v1/users/" + encodeURIComponent(u.user), { body });
        listUsers(out, ctx);
      } catch (e) {
        out.prepend(errorBox(e));
      }
    };
    const removal = async (u, method, path, say) => {
      try {
        const d = await call(method, path);
        if (say) out.prepend(el("p", { class: "ok", role: "status", text: say(d.data) }));
        else listUsers(out, ctx);
      } catch (e) {
        out.prepend(errorBox(e));
      }
    };
    const roleSelect = (u) => {
      const sel = el("select", { "aria-label": "Role of " + u.user, "data-role-of": u.user },
        ROLES.map((x) => el("option", { value: x, text: x, selected: x === u.role })));
      sel.addEventListener("change", act(u, { role: sel.value }, () => sel.value));
      return sel;
    };
    const reset = (u) => {
      const box = el("span", {});
      const open = el("button", { type: "button", class: "plain", text: "Reset password", "data-reset": u.user,
        onclick: () => {
          const pw = el("input", { type: "password", autocomplete: "new-password", minlength: 8, required: true,
            "aria-label": "New password for " + u.user });
          const f = el("form", { class: "row" }, pw, el("button", { type: "submit", text: "Set" }));
          f.addEventListener("submit", async (ev) => {
            ev.preventDefault();
            try {
              await call("PUT", "/v1/users/" + encodeURIComponent(u.user) + "/password", { body: { password: pw.value } });
              box.replaceChildren(el("span", { class: "ok", role: "status", text: "Password set; their other sessions ended." }));
            } catch (e) {
              box.replaceChildren(errorBox(e));
            }
          });
          box.replaceChildren(f);
          pw.focus();
        } });
      box.append(open);
      return box;
    };
    return [callBox(r), table(["user", "role", "disabled", "created_at", "changed_at", "actions"], r.data.users || [],
      (u, c) => c === "role" && u.user !== ctx.me.user ? roleSelect(u) : c !== "actions" ? u[c] : u.user === ctx.me.user ? "(you)" :
        el("span", {}, el("button", { type: "button", class: "plain", text: u.disabled ? "Enable" : "Disable",
          "data-toggle": u.user, onclick: act(u, { disabled: !u.disabled }) }), " ", reset(u), " ",
          el("button", { type: "button", class: "plain", text: "End sessions", "data-revoke": u.user,
            onclick: () => removal(u, "DELETE", "/v1/users/" + encodeURIComponent(u.user) + "/tokens",
              (d) => "Ended " + d.revoked + " sessions of " + u.user + ".") }), " ",
          el("button", { type: "button", class: "plain", text: "Delete…", "data-delete": u.user,
            onclick: (ev) => {
              // two steps, no dialog: the first click arms, the second deletes
              if (ev.target.dataset.armed) return removal(u, "DELETE", "/v1/users/" + encodeURIComponent(u.user), null);
              ev.target.dataset.armed = "1";
              ev.target.textContent = "Delete " + u.user + "? Click again";
            } })))];
  });
}

async function rulesView(root, ctx) {
  const out = el("div", { "data-part": "rules" });
  const msg = el("div", { role: "status" });
  const split = (v) => v.split(",").map((x) => x.trim()).filter(Boolean);
  if (ctx.me.permissions.includes("rules:create"))
    root.append(form(async (fd) => {
      const rule = { name: get(fd, "name"), fields: split(get(fd, "fields")), any: split(get(fd, "any")) };
      if (get(fd, "types")) rule.types = split(get(fd, "types"));
      try {
        const r = await call("POST", "/v1/rules", { body: rule });
        msg.replaceChildren(el("p", { class: "ok", text: (r.status === 201 ? "Defined " : "Replaced ") + r.data.name }), callBox(r));
        listRules(out, ctx);
      } catch (e) {
        msg.replaceChildren(errorBox(e));
      }
    }, input("Rule", "name", { required: true }), input("Fields (comma-separated)", "fields", { required: true, placeholder: "notes" }),
    input("Words or phrases (comma-separated)", "any", { required: true }), input("Record types", "types", { placeholder: "any" }),
    submit("Define rule")), msg);
  root.append(out);
  listRules(out, ctx);
}

async function listRules(out, ctx) {
  await show(out, async () => {
    const r = await call("GET", "/v1/rules");
    return [callBox(r), table(["name", "fields", "any", "regex", "types", "whole_words", "source", ""], r.data.rules || [],
      (x, c) => c !== "" ? x[c] : x.source === "api" && ctx.me.permissions.includes("rules:delete")
        ? el("button", { type: "button", class: "plain", text: "Delete", "data-delete-rule": x.name, onclick: async () => {
          try {
            await call("DELETE", "/v1/rules/" + encodeURIComponent(x.name));
            listRules(out, ctx);
          } catch (e) {
            out.prepend(errorBox(e));
          }
        } }) : "")];
  });
}

// The Prometheus text as {"name{labels}": value} (comments and malformed lines skipped).
function parseMetrics(text) {
  const out = {};
  for (const line of String(text).split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    const v = Number(line.slice(i + 1));
    if (i > 0 && !Number.isNaN(v)) out[line.slice(0, i)] = v;
  }
  return out;
}

const sum = (m, re) => Object.entries(m).filter(([k]) => re.test(k)).reduce((a, [, v]) => a + v, 0);
const KEY_METRICS = /^medstream_(records_total|ingest_bytes_total|http_(requests|errors)_total|commits_total|commit_position|patients|freshness_seconds_(sum|count)|[a-z_]*lag_[a-z]+|[a-z_]*_position|[a-z_]*_up)\b/;

async function healthView(root) {
  const out = el("div", { "data-part": "health" });
  root.append(out);
  let prev = null; // {t, m}: the last refresh's metrics, for rates over the interval
  const refresh = async () => {
    if (!out.isConnected) return;
    await show(out, async () => {
      const h = await call("GET", "/healthz", { auth: false });
      const r = await call("GET", "/metrics");
      const m = parseMetrics(r.data), t = Date.now() / 1000;
      const rate = (re) => prev ? (sum(m, re) - sum(prev.m, re)) / Math.max(0.001, t - prev.t) : null;
      const fresh = prev ? [sum(m, /^medstream_freshness_seconds_sum/) - sum(prev.m, /^medstream_freshness_seconds_sum/),
        sum(m, /^medstream_freshness_seconds_count/) - sum(prev.m, /^medstream_freshness_seconds_count/)] : null;
      const figure = (label, value, key) => el("div", { class: "figure" }, el("span", { class: "muted", text: label }),
        el("b", { "data-figure": key, text: value }));
      const fmt = (v, unit, digits = 1) => v === null ? "…" : v.toFixed(digits) + " " + unit;
      const lags = Object.entries(m).filter(([k]) => /_lag_/.test(k));
      const shown = [el("h2", { text: "Health" }), callBox(h),
        el("p", { "data-health": h.data.status, class: h.data.status === "ok" ? "ok" : "error", text: "Status: " + h.data.status }),
        fields(h.data),
        el("h2", { text: "Now (over the last refresh)" }),
        el("div", { class: "figures" },
          figure("ingest", fmt(rate(/^medstream_records_total/), "records/s"), "ingest-rate"),
          figure("ingest bytes", fmt(rate(/^medstream_ingest_bytes_total/) === null ? null : rate(/^medstream_ingest_bytes_total/) / 1e6, "MB/s", 2), "ingest-mbps"),
          figure("requests", fmt(rate(/^medstream_http_requests_total/), "/s"), "request-rate"),
          figure("freshness (mean)", fresh === null ? "…" : fresh[1] ? (1000 * fresh[0] / fresh[1]).toFixed(1) + " ms" : "no ingest", "freshness"),
          lags.map(([k, v]) => figure(k.replace(/^medstream_/, ""), String(v), "lag"))),
        el("h2", { text: "Key metrics" }), callBox(r),
        table(["metric", "value"], Object.entries(m).filter(([k]) => KEY_METRICS.test(k)).map(([metric, value]) => ({ metric, value })))];
      prev = { t, m }; // after the rates above were taken against the last refresh
      return shown;
    });
    setTimeout(refresh, 5000);
  };
  refresh();
}

export const views = [
  { id: "patients", title: "Patients", needs: ["patients:read"], phi: true, render: patientView },
  { id: "notifications", title: "Notifications", needs: ["notifications:read"], phi: true, render: notificationsView,
    leave: () => liveStream && liveStream.stop() },
  { id: "public", title: "Public records", needs: ["public:read"], phi: false, render: publicView },
  { id: "counters", title: "Counters", needs: ["public:read"], phi: false, render: countersView },
  { id: "exports", title: "Exports", needs: ["exports:create", "exports:read"], phi: false, render: exportsView },
  { id: "audit", title: "Audit log", needs: ["audit:read"], phi: true, render: auditView },
  { id: "users", title: "Users", needs: ["users:read"], phi: false, render: usersView },
  { id: "rules", title: "Rules", needs: ["rules:read"], phi: false, render: rulesView },
  { id: "health", title: "Health", needs: ["metrics:read"], phi: false, render: healthView },
];

