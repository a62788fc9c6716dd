// The console's shell: sign-in and sign-out, the navigation (by role), and a hash router.
// Routes and filters live in the URL fragment, so a view can be shared; the token never does.

import { h, replace, announce } from "./dom.js";
import { session, signIn, setUnauthorizedHandler } from "./api.js";
import { installKeys, setKeys } from "./keys.js";
import { queueView } from "./views/queue.js";
import { itemView } from "./views/item.js";
import { usersView } from "./views/users.js";
import { decisionsView, auditView } from "./views/logs.js";
import { tokensView } from "./views/tokens.js";
import { overviewView } from "./views/overview.js";

const SECTIONS = [
  ["queue", "Queue", "viewer"],
  ["users", "Users", "viewer"],
  ["decisions", "Decisions", "viewer"],
  ["overview", "Overview", "viewer"],
  ["audit", "Audit log", "admin"],
  ["tokens", "Tokens", "admin"],
];

const VIEWS = {
  queue: queueView, item: itemView, users: usersView, decisions: decisionsView,
  audit: auditView, tokens: tokensView, overview: overviewView,
};

let cleanup = null;

/** Goes to `hash`, rendering again when it is the current one (no hashchange then). */
export function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

export function parseRoute() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?", 2);
  const parts = path.split("/").filter(Boolean).map((p) => {
    try { return decodeURIComponent(p); } catch { return p; }
  });
  return { parts: parts.length ? parts : ["queue"], query: new URLSearchParams(query || "") };
}

function nav(active) {
  const navEl = document.getElementById("nav");
  const who = document.getElementById("who");
  if (!session.token) { replace(navEl); replace(who); return; }
  replace(navEl, h("ul", {}, SECTIONS.filter(([, , role]) => session.can(role)).map(([id, label]) =>
    h("li", {}, h("a", { href: "#/" + id, "aria-current": id === active ? "page" : false }, label)))));
  replace(who, h("span", { class: "role", title: "What this token may do" }, session.role),
    h("button", { type: "button", class: "link", id: "sign-out", on: { click: signOut } }, "Sign out"));
}

function signOut() {
  session.clear();
  if (cleanup) { cleanup(); cleanup = null; }
  announce("Signed out: the token is forgotten.");
  go("#/signin");
}

function signInView(main) {
  const input = h("input", { type: "password", name: "token", id: "token", autocomplete: "off", required: true, spellcheck: "false" });
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "signin", on: { submit: async (e) => {
    e.preventDefault();
    replace(error);
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const role = await signIn(input.value.trim());
      input.value = "";
      announce(`Signed in as ${role}.`);
      go(location.hash.startsWith("#/signin") || !location.hash ? "#/queue" : location.hash);
    } catch (err) {
      replace(error, err.status === 401 ? "That token is unknown or revoked." : err.message);
    } finally {
      button.disabled = false;
    }
  } } },
  h("h1", {}, "Sign in"),
  h("p", {}, "Paste an API token (", h("code", {}, "chatguard token create"), "). It is kept for this browser tab only."),
  h("label", { for: "token" }, "API token"), input, error,
  h("button", { type: "submit", class: "primary" }, "Sign in"));
  replace(main, form);
  input.focus();
}

async function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  setKeys({});
  const main = document.getElementById("view");
  const r = parseRoute();
  if (!session.token || r.parts[0] === "signin") {
    if (session.token) { go("#/queue"); return; }
    nav(null);
    signInView(main);
    return;
  }
  const view = VIEWS[r.parts[0]];
  const section = r.parts[0] === "item" ? "queue" : r.parts[0];
  nav(section);
  if (!view) { replace(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/queue" }, "Back to the queue"))); return; }
  const needs = SECTIONS.find(([id]) => id === section);
  if (needs && !session.can(needs[2])) { replace(main, h("h1", {}, "Not allowed"), h("p", {}, `This needs the ${needs[2]} role.`)); return; }
  try {
    cleanup = (await view(main, r)) || null;
  } catch (e) {
    replace(main, h("h1", {}, "Something went wrong"), h("p", { class: "error" }, e.message));
  }
}

setUnauthorizedHandler(() => {
  session.clear();
  announce("The token is no longer valid; sign in again.", "error");
  go("#/signin");
});

// A fault in the console itself is shown, not swallowed (the browser tests check for none).
function fault(message) {
  document.body.dataset.faults = String(Number(document.body.dataset.faults || 0) + 1);
  announce(`Console fault: ${message}`, "fault");
}
window.addEventListener("error", (e) => fault(e.message));
window.addEventListener("unhandledrejection", (e) => fault(e.reason && e.reason.message ? e.reason.message : String(e.reason)));

installKeys();
window.addEventListener("hashchange", route);
route();
