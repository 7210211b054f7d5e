// api.js - every request the console makes goes through call(): same origin only, the bearer token from
// the session (sessionStorage: gone when the tab closes; never localStorage, never a cookie), and for each
// answer the curl line that repeats it (with $MEDSTREAM_TOKEN in place of the token, which is never shown)
// and the instant it reflects. A 401 on a signed-in session raises "medstream:signin" and waits for the
// sign-in to come back, then repeats the request once, so the view that asked keeps its place.

const KEY = "medstream.session";

export function session() {
  try {
    const s = JSON.parse(sessionStorage.getItem(KEY) || "null");
    return s && s.token ? s : null;
  } catch (e) {
    return null;
  }
}

export function setSession(s) {
  if (s) sessionStorage.setItem(KEY, JSON.stringify(s));
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, message, curl) {
    super(message);
    this.status = status;
    this.curl = curl;
  }
}

function shellQuote(s) {
  return "'" + String(s).replace(/'/g, "'\\''") + "'";
}

export function queryString(query) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {}))
    if (v !== undefined && v !== null && v !== "") q.append(k, v);
  const s = q.toString();
  return s ? "?" + s : "";
}

// The curl line that makes the same request from a shell (the token as $MEDSTREAM_TOKEN).
export function curlLine(method, url, body, auth) {
  const parts = ["curl", "-sS"];
  if (method !== "GET") parts.push("-X", method);
  if (auth) parts.push("-H", '"Authorization: Bearer $MEDSTREAM_TOKEN"');
  if (body !== undefined) parts.push("-H", shellQuote("Content-Type: application/json"), "--data", shellQuote(JSON.stringify(body)));
  parts.push(shellQuote(location.origin + url));
  return parts.join(" ");
}

let waitingForSignin = null; // a promise that resolves once the user has signed in again

export function signinAgain(reason) {
  if (!waitingForSignin) {
    let done;
    waitingForSignin = new Promise((resolve) => (done = resolve));
    waitingForSignin.resolve = done;
    window.dispatchEvent(new CustomEvent("medstream:signin", { detail: reason }));
  }
  return waitingForSignin;
}

export function signedIn() {
  if (waitingForSignin) {
    const w = waitingForSignin;
    waitingForSignin = null;
    w.resolve();
  }
}

// call("GET", "/v1/patients", {query: {...}}) -> {status, data, curl, asOf, headers}
export async function call(method, path, opts = {}) {
  const url = path + queryString(opts.query);
  const auth = opts.auth !== false;
  const curl = curlLine(method, url, opts.body, auth);
  const headers = {};
  const s = session();
  if (auth && s) headers["Authorization"] = "Bearer " + s.token;
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(url, {
    method,
    headers,
    body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
    credentials: "omit",
    cache: "no-store",
    redirect: "error",
  });
  const type = res.headers.get("content-type") || "";
  let data = null;
  if (res.status !== 204) data = type.startsWith("application/json") ? await res.json().catch(() => null) : await res.text();
  if (res.status === 401 && auth && s && !opts.noRetry) {
    await signinAgain((data && data.error) || "your session ended");
    return call(method, path, { ...opts, noRetry: true });
  }
  if (!res.ok) {
    const msg = (data && data.error) || res.status + " " + res.statusText;
    throw new ApiError(res.status, msg, curl);
  }
  const date = res.headers.get("date");
  // the instant the answer reflects: its as_of (or a counter's at), else the as_of asked for, else the server's now
  const asOf = (data && typeof data === "object" && (data.as_of || data.at)) || (opts.query && opts.query.as_of) ||
    "now (" + (date ? new Date(date) : new Date()).toISOString().replace(".000Z", "Z") + ")";
  return { status: res.status, data, curl, asOf, headers: res.headers };
}

// A Server-Sent Events stream read with fetch (EventSource cannot send the bearer token): onEvent(event,
// seq) for each "match" event, onState(text) as the connection opens, drops and comes back (after the
// last seq seen: Last-Event-ID). Returns {curl, stop()}; it stops by itself once alive() is false.
export function streamEvents(path, query, onEvent, onState, alive) {
  const url = path + queryString(query);
  const ctl = new AbortController();
  let last = null, stopped = false;
  const stop = () => {
    stopped = true;
    ctl.abort();
  };
  async function once() {
    const s = session();
    const headers = { Authorization: "Bearer " + (s ? s.token : ""), Accept: "text/event-stream" };
    if (last !== null) headers["Last-Event-ID"] = String(last);
    const res = await fetch(url, { headers, signal: ctl.signal, credentials: "omit", cache: "no-store" });
    if (res.status === 401) {
      await signinAgain("your session ended");
      return;
    }
    if (!res.ok) {
      const data = await res.json().catch(() => null);
      throw new ApiError(res.status, (data && data.error) || res.statusText, curlLine("GET", url, undefined, true));
    }
    onState("live");
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "", ev = {};
    for (;;) {
      if (!alive()) return stop();
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, "");
        buf = buf.slice(nl + 1);
        if (line === "") {
          if (ev.data !== undefined && (ev.event || "message") === "match") {
            if (ev.id) last = ev.id;
            onEvent(JSON.parse(ev.data), ev.id);
          }
          ev = {};
        } else if (!line.startsWith(":")) {
          const i = line.indexOf(":");
          const k = i < 0 ? line : line.slice(0, i), v = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
          ev[k] = k === "data" && ev.data !== undefined ? ev.data + "\n" + v : v;
        }
      }
    }
  }
  (async () => {
    while (!stopped && alive()) {
      try {
        await once();
      } catch (e) {
        if (stopped || e.name === "AbortError") return;
        onState(e instanceof ApiError ? e : "reconnecting: " + e.message);
        if (e instanceof ApiError && e.status !== 503) return;
      }
      if (!stopped && alive()) {
        onState("reconnecting");
        await new Promise((ok) => setTimeout(ok, 1000));
      }
    }
  })();
  return { curl: curlLine("GET", url, undefined, true).replace("curl -sS", "curl -sSN"), stop };
}
