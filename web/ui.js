// ui.js - small DOM helpers shared by the views: elements built with textContent only (markup is never
// parsed from a string, so no value from the API can become markup), the box that shows a view's API call and instant, and
// the message of a refused call.

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

// The exact call behind what is shown, copyable, and the instant it reflects.
export function callBox(result) {
  const code = el("code", { text: result.curl, "data-curl": "" });
  const copy = el("button", { type: "button", class: "plain", text: "Copy curl",
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(result.curl);
        copy.textContent = "Copied";
      } catch (e) {
        const r = document.createRange();
        r.selectNodeContents(code);
        getSelection().removeAllRanges();
        getSelection().addRange(r);
        copy.textContent = "Selected: press Ctrl+C";
      }
    } });
  return el("div", { class: "call", role: "group", "aria-label": "The API call behind this view" },
    code, copy, el("span", { class: "asof", "data-asof": "", text: "as of " + result.asOf }));
}

// A refused or failed call: its status and the server's message, and the call that was refused.
export function errorBox(err) {
  const status = err.status ? err.status + ": " : "";
  const what = err.status === 403 ? "Not allowed for your role. " : err.status === 503 ? "Unavailable now. " : "";
  return el("div", {},
    el("p", { class: "error", role: "alert", "data-status": err.status || "", text: what + status + err.message }),
    err.curl ? el("div", { class: "call" }, el("code", { text: err.curl })) : null);
}

export function fields(obj) {
  const dl = el("dl", { class: "fields" });
  for (const [k, v] of Object.entries(obj || {}))
    dl.append(el("dt", { text: k }), el("dd", { text: typeof v === "object" ? JSON.stringify(v) : String(v) }));
  return dl;
}

export function table(columns, rows, cell = (r, c) => r[c]) {
  const head = el("tr", {}, columns.map((c) => el("th", { scope: "col", text: c })));
  const body = rows.map((r) => el("tr", {}, columns.map((c) => {
    const v = cell(r, c);
    return el("td", {}, v instanceof Node ? v : v === undefined || v === null ? "" :
      typeof v === "object" ? JSON.stringify(v) : String(v));
  })));
  return el("div", { class: "scroll" }, el("table", {}, el("thead", {}, head), el("tbody", {}, body)));
}

// Run fn(), showing its result in target or its error: the views' one way to make a call.
export async function show(target, fn) {
  target.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
  try {
    const nodes = await fn();
    target.replaceChildren(...[].concat(nodes));
  } catch (e) {
    target.replaceChildren(errorBox(e));
  }
}
