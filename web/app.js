// app.js - the console's shell: sign-in and sign-out, who is signed in (GET /v1/me: the role's
// permissions decide which views are offered; the server refuses the rest anyway), the audited-access
// banner on views that show PHI, and the router (#/view) that keeps the view in place while a lapsed
// session signs in again.

import { call, session, setSession, signedIn, ApiError } from "./api.js";
import { el, errorBox } from "./ui.js";
import { views } from "./views.js";

const $ = (id) => document.getElementById(id);
let me = null; // {user, role, permissions}

function allowed(view) {
  return me && view.needs.every((p) => me.permissions.includes(p));
}

function currentId() {
  return location.hash.replace(/^#\/?/, "").split("?")[0];
}

function renderNav() {
  const nav = $("nav");
  nav.replaceChildren(...views.filter(allowed).map((v) =>
    el("a", { href: "#/" + v.id, "data-view": v.id, "aria-current": v.id === currentId() ? "page" : false, text: v.title })));
}

let rendered = null;

async function route() {
  if (!me) return;
  const offered = views.filter(allowed);
  let view = offered.find((v) => v.id === currentId());
  if (!view) {
    if (offered.length) location.replace("#/" + offered[0].id);
    else $("main").replaceChildren(el("p", { class: "error", role: "alert",
      text: "Your role (" + me.role + ") holds no permission this console has a view for." }));
    $("banner").hidden = true;
    return;
  }
  renderNav();
  $("banner").hidden = !view.phi;
  $("banner-user").textContent = me.user + ", " + me.role;
  if (rendered === view.id) return;
  const moved = rendered !== null;
  const left = views.find((v) => v.id === rendered);
  if (left && left.leave) left.leave(); // a live stream ends with its view
  rendered = view.id;
  document.title = view.title + " · medstream";
  const main = $("main");
  main.replaceChildren(el("h1", { text: view.title }));
  const body = el("div", { "data-view-body": view.id });
  main.append(body);
  if (moved) main.focus(); // a keyboard or screen-reader user starts at the view they chose
  try {
    await view.render(body, { me });
  } catch (e) {
    body.replaceChildren(errorBox(e));
  }
}

async function loadMe() {
  const r = await call("GET", "/v1/me");
  me = r.data;
  $("who").textContent = "Signed in as " + me.user + " (" + me.role + ")";
  $("signout").hidden = false;
}

// While the sign-in is up, the page behind it can be neither reached by the keyboard nor read aloud.
function behind(inert) {
  for (const id of ["skip", "main", "nav", "signout", "banner"]) $(id).inert = inert;
}

function askSignin(reason) {
  behind(true);
  $("signin-why").textContent = reason || "";
  $("signin-error").hidden = true;
  $("signin").hidden = false;
  const s = session();
  $("signin-user").value = (s && s.user) || (me && me.user) || "";
  ($("signin-user").value ? $("signin-password") : $("signin-user")).focus();
}

async function onSignin(ev) {
  ev.preventDefault();
  const user = $("signin-user").value, password = $("signin-password").value;
  try {
    const r = await call("POST", "/v1/auth/token", { auth: false, body: { user, password } });
    const wasUser = me && me.user;
    setSession({ token: r.data.token, expires_at: r.data.expires_at, user });
    $("signin-password").value = "";
    $("signin").hidden = true;
    behind(false);
    if (wasUser && wasUser !== user) {
      location.reload(); // another user: nothing of the last one's view stays
      return;
    }
    await loadMe();
    signedIn(); // a request that waited for this sign-in goes again
    await route();
  } catch (e) {
    const err = $("signin-error");
    err.textContent = e instanceof ApiError ? e.message : String(e);
    err.hidden = false;
  }
}

async function signOut() {
  try {
    await call("DELETE", "/v1/auth/token", { noRetry: true });
  } catch (e) {
    // revoked or expired already: signed out either way
  }
  setSession(null);
  me = null; // no view renders again before the reload
  history.replaceState(null, "", "/");
  location.reload();
}

async function start() {
  $("signin-form").addEventListener("submit", onSignin);
  $("signout").addEventListener("click", signOut);
  $("skip").addEventListener("click", (ev) => {
    ev.preventDefault(); // "#main" is not a view: move the focus, keep the route
    $("main").focus();
  });
  window.addEventListener("medstream:signin", (ev) => askSignin("Your session ended (" + ev.detail + "): sign in again to go on."));
  window.addEventListener("hashchange", () => route());
  if (!session()) {
    $("main").replaceChildren();
    askSignin("");
    return;
  }
  try {
    await loadMe(); // a lapsed token asks for the sign-in here, then goes on
    await route();
  } catch (e) {
    $("main").replaceChildren(errorBox(e));
  }
}

start();
