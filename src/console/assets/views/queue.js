// The review queue: filters and sort in the URL, keyset pages (so a page stays right while
// items arrive), open counts per category, polling for new items, and keyboard sweeping
// (j/k/Enter/x/a/r/b/d).

import { h, replace, announce, href, age, field, select, fmtTime } from "../dom.js";
import { api, qs, session } from "../api.js";
import { setKeys } from "../keys.js";
import { banDialog, resolutionLabel } from "./resolve.js";
import { visibleText } from "../text.js";

const POLL_MS = 5000;
// `app` has no field in the form; a shared URL may carry it, and it is passed on as it is.
const FILTERS = ["status", "category", "decision", "channel", "user", "min_score", "created_after", "created_before", "sort", "limit", "app"];

/** The ids of the last queue page shown, for j/k on the item page. */
export const queueContext = { ids: [], hash: "#/queue" };

function filtersFrom(query) {
  const f = {};
  for (const k of FILTERS) if (query.get(k)) f[k] = query.get(k);
  if (!query.has("status")) f.status = "open";
  if (f.status === "all") delete f.status;
  return f;
}

/** datetime-local value <-> RFC 3339. */
function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return "";
  const off = d.getTimezoneOffset() * 60000;
  return new Date(d - off).toISOString().slice(0, 16);
}
function fromLocalInput(v) {
  if (!v) return "";
  const d = new Date(v);
  return isNaN(d) ? "" : d.toISOString();
}

export async function queueView(main, route) {
  const query = route.query;
  const filters = filtersFrom(query);
  const cursor = query.get("cursor") || "";
  const state = { items: [], focus: 0, selected: new Set(), next: null, timer: null, alive: true, newest: null };
  const moderator = session.can("moderator");
  const firstPage = href(["queue"], Object.fromEntries([...query].filter(([k]) => k !== "cursor")));

  // Filters form: every change goes into the URL.
  const form = h("form", { class: "filters", "aria-label": "Filters", on: { submit: (e) => { e.preventDefault(); apply(); } } },
    field("Status", select("status", [["open", "open"], ["claimed", "claimed"], ["resolved", "resolved"], ["all", "any"]], query.get("status") || "open")),
    field("Category", select("category", [["", "any"], ["toxicity", "toxicity"], ["spam", "spam"], ["explicit", "explicit"]], filters.category)),
    field("Decision", select("decision", [["", "any"], ["flag", "flag"], ["block", "block"], ["ban", "ban"]], filters.decision)),
    field("Channel", h("input", { name: "channel", value: filters.channel || "", placeholder: "type:id", size: 14 })),
    field("User", h("input", { name: "user", value: filters.user || "", size: 12 })),
    field("Min score", h("input", { name: "min_score", type: "number", min: 0, max: 1, step: 0.05, value: filters.min_score || "" })),
    field("From", h("input", { name: "created_after", type: "datetime-local", value: toLocalInput(filters.created_after) })),
    field("Until", h("input", { name: "created_before", type: "datetime-local", value: toLocalInput(filters.created_before) })),
    field("Sort", select("sort", [["newest", "newest"], ["oldest", "oldest"], ["score", "highest score"]], filters.sort || "newest")),
    field("Per page", select("limit", [["25", "25"], ["50", "50"], ["100", "100"], ["200", "200"]], filters.limit || "50")),
    h("button", { type: "submit" }, "Apply"));
  form.addEventListener("change", (e) => { if (e.target.tagName === "SELECT") apply(); });

  function apply(extra = {}) {
    const data = new FormData(form);
    const q = {};
    for (const [k, v] of data.entries()) {
      const value = k.startsWith("created_") ? fromLocalInput(v) : String(v).trim();
      if (value && !(k === "sort" && value === "newest") && !(k === "limit" && value === "50")) q[k] = value;
    }
    if (!q.status) q.status = "open";
    if (query.get("app")) q.app = query.get("app");
    Object.assign(q, extra);
    location.hash = href(["queue"], q);
  }

  const counts = h("div", { class: "counts", "aria-label": "Open items per category" });
  const notice = h("div", { class: "notice", role: "status" });
  const tbody = h("tbody");
  const bulkBar = h("div", { class: "bulk", "aria-live": "polite" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  const table = h("table", { class: "queue", id: "queue-table" },
    h("caption", { class: "sr-only" }, "Review items; j and k move, Enter opens, x selects, ? lists the keys"),
    h("thead", {}, h("tr", {},
      moderator ? h("th", { scope: "col", class: "sel" }, h("span", { class: "sr-only" }, "Select")) : null,
      ["Score", "Category", "Decision", "Message", "User", "Channel", "Age", "Status"].map((t) => h("th", { scope: "col" }, t)))),
    tbody);
  replace(main, h("div", { class: "queue-head" }, h("h1", {}, "Review queue"), counts), form, notice, bulkBar, table, pager);

  function row(item, i) {
    const focused = i === state.focus;
    const check = moderator ? h("input", {
      type: "checkbox", checked: state.selected.has(item.id), "aria-label": `Select item ${item.id}`,
      tabindex: -1, on: { change: (e) => { toggle(item.id, e.target.checked); } },
    }) : null;
    const status = [h("span", { class: "badge status-" + item.status.replace(/[^a-z_]/g, "") }, item.status)];
    if (item.claimed_by && item.status === "claimed") status.push(h("span", { class: "muted" }, " by ", item.claimed_by));
    if (item.resolution) status.push(h("span", { class: "muted" }, " ", item.resolution));
    return h("tr", {
      class: ["row", focused && "focused", state.selected.has(item.id) && "selected"],
      tabindex: focused ? 0 : -1, "aria-current": focused ? "true" : false, dataset: { id: String(item.id) },
      on: { click: (e) => { if (!e.target.closest("a, input")) { state.focus = i; draw(); } },
            dblclick: () => open(item.id) },
    },
    moderator ? h("td", { class: "sel" }, check) : null,
    h("td", { class: "num" }, item.score.toFixed(2)),
    h("td", {}, h("span", { class: "cat cat-" + item.category.replace(/[^a-z]/g, "") }, item.category)),
    h("td", {}, item.decision),
    h("td", { class: "msg" }, h("a", { href: href(["item", item.id]), class: "excerpt", dir: "auto" }, visibleText(item.excerpt || "(no text)"))),
    h("td", {}, item.user_id ? h("a", { href: href(["users", item.user_id]) }, visibleText(item.user_id)) : "—"),
    h("td", { class: "muted" }, item.cid || "—"),
    h("td", { class: "num", title: fmtTime(item.created_at) }, age(item.created_at)),
    h("td", {}, status));
  }

  function draw() {
    state.focus = Math.max(0, Math.min(state.focus, state.items.length - 1));
    replace(tbody, state.items.length ? state.items.map(row)
      : h("tr", {}, h("td", { colspan: moderator ? 9 : 8, class: "empty" }, "No items match.")));
    queueContext.ids = state.items.map((i) => i.id);
    queueContext.hash = location.hash || "#/queue";
    const n = state.selected.size;
    replace(bulkBar, moderator && n ? [
      h("strong", {}, `${n} selected`), " — resolve all with ",
      ["approve", "remove", "ban", "dismiss"].map((r) => h("button", { type: "button", on: { click: () => bulk(r) } }, resolutionLabel(r))),
      h("button", { type: "button", class: "link", on: { click: () => { state.selected.clear(); draw(); } } }, "clear"),
    ] : null);
    const focusedRow = tbody.querySelector("tr.focused");
    if (focusedRow && table.contains(document.activeElement)) focusedRow.focus();
  }

  function focusRow() {
    draw();
    const r = tbody.querySelector("tr.focused");
    if (r) { r.focus(); r.scrollIntoView({ block: "nearest" }); }
  }

  function toggle(id, on) {
    if (on ?? !state.selected.has(id)) state.selected.add(id); else state.selected.delete(id);
    draw();
  }

  function open(id) { location.hash = href(["item", id]); }

  function current() { return state.items[state.focus]; }

  async function resolveOne(item, resolution, extra = {}) {
    try {
      const res = await api.post(`/review-items/${item.id}/resolve`, { resolution, ...extra });
      const outcome = res.outcome ? ` (Stream: ${res.outcome.status})` : res.already_resolved ? " (it was resolved before)" : "";
      announce(`Item ${item.id}: ${resolution}${outcome}.`);
      await load(true);
    } catch (e) {
      announce(`Item ${item.id} was not resolved: ${e.message}`, "error");
    }
  }

  async function bulk(resolution) {
    const ids = [...state.selected];
    if (!ids.length) return;
    if (resolution === "ban" && !(await banDialog({ bulk: ids.length }))) return;
    try {
      const res = await api.post("/review-items/bulk-resolve", { ids, resolution });
      const ok = res.results.filter((r) => r.status === 200).length;
      const failed = res.results.filter((r) => r.status !== 200);
      state.selected.clear();
      announce(`${ok} of ${ids.length} items: ${resolution}.` +
        (failed.length ? ` Not resolved: ${failed.map((f) => `${f.id} (${f.error ? f.error.message : f.status})`).join("; ")}` : ""),
        failed.length ? "error" : "info");
      await load(true);
    } catch (e) {
      announce(`Bulk resolution failed: ${e.message}`, "error");
    }
  }

  async function act(resolution) {
    if (!moderator) { announce("Your token may only read.", "error"); return; }
    if (state.selected.size) { await bulk(resolution); return; }
    const item = current();
    if (!item) return;
    if (resolution === "ban") {
      const opts = await banDialog({ bulk: 0 });
      if (opts) await resolveOne(item, "ban", opts);
    } else {
      await resolveOne(item, resolution);
    }
  }

  async function loadCounts() {
    try {
      const stats = await api.get("/stats");
      const open = stats.open_by_category || {};
      const total = Object.values(open).reduce((a, b) => a + b, 0);
      replace(counts, h("span", { class: "count total" }, h("strong", {}, String(total)), " open"),
        ["toxicity", "spam", "explicit"].map((c) => h("a", {
          class: ["count", "cat-" + c], href: href(["queue"], { status: "open", category: c }),
        }, h("strong", {}, String(open[c] || 0)), " " + c)));
    } catch (e) { replace(counts, h("span", { class: "error" }, e.message)); }
  }

  async function load(keepFocus) {
    const focusedId = keepFocus && current() ? current().id : null;
    const page = await api.get("/review-items" + qs({ ...filters, cursor }));
    if (!state.alive) return;
    state.items = page.items;
    state.next = page.next_cursor;
    if (focusedId !== null) {
      const i = state.items.findIndex((it) => it.id === focusedId);
      if (i >= 0) state.focus = i;
    }
    for (const id of [...state.selected]) if (!state.items.some((i) => i.id === id)) state.selected.delete(id);
    if (!cursor) state.newest = state.items.length ? state.items[0].id : null;
    draw();
    replace(pager,
      cursor ? h("a", { href: firstPage }, "← First page") : null,
      state.next ? h("a", { href: href(["queue"], { ...Object.fromEntries(query), cursor: state.next }), rel: "next" }, "Next page →") : null);
  }

  // New items: on the first page they are merged in place (focus and selection kept); further
  // on, a notice offers the first page, so the page being worked does not shift.
  async function poll() {
    if (!state.alive) return;
    try {
      await loadCounts();
      if (!cursor) await load(true);
      else {
        const first = await api.get("/review-items" + qs({ ...filters, limit: 1 }));
        if (state.alive && first.items.length && state.newest !== null && first.items[0].id > state.newest) {
          replace(notice, "New items arrived. ", h("a", { href: firstPage }, "Show the first page"));
        }
      }
    } catch { /* shown on the next successful poll */ }
    state.timer = setTimeout(poll, POLL_MS);
  }

  setKeys({
    j: ["next item", () => { state.focus = Math.min(state.focus + 1, state.items.length - 1); focusRow(); }],
    k: ["previous item", () => { state.focus = Math.max(state.focus - 1, 0); focusRow(); }],
    Enter: ["open the item", () => { const it = current(); if (it) open(it.id); }],
    x: ["select for a bulk resolution", () => { const it = current(); if (it && moderator) toggle(it.id); }],
    a: ["approve (the selection, or this item)", () => act("approve")],
    r: ["remove", () => act("remove")],
    b: ["ban", () => act("ban")],
    d: ["dismiss", () => act("dismiss")],
    "/": ["filter", () => form.querySelector("input[name=user]").focus()],
  });

  try {
    await Promise.all([load(false), loadCounts()]);
  } catch (e) {
    replace(tbody, h("tr", {}, h("td", { colspan: 9, class: "error" }, e.message)));
  }
  const first = tbody.querySelector("tr.focused");
  if (first) first.focus();
  // For measurements: when the first page of the queue is on screen.
  if (!performance.getEntriesByName("queue-rendered").length) performance.mark("queue-rendered");
  state.timer = setTimeout(poll, POLL_MS);
  return () => { state.alive = false; clearTimeout(state.timer); };
}
