// The decision log (filtered, paged) and the audit log (admins).

import { h, replace, href, fmtTime, table, field, select, json } from "../dom.js";
import { api, qs } from "../api.js";
import { visibleText } from "../text.js";

export async function decisionsView(main, route) {
  const q = route.query;
  const f = (k) => q.get(k) || "";
  const form = h("form", { class: "filters", role: "search", on: { submit: (e) => {
    e.preventDefault();
    const out = {};
    for (const [k, v] of new FormData(form).entries()) if (String(v).trim()) out[k] = String(v).trim();
    location.hash = href(["decisions"], out);
  } } },
  field("User", h("input", { name: "user", value: f("user"), size: 14 })),
  field("Decision", select("decision", [["", "any"], ["allow", "allow"], ["flag", "flag"], ["block", "block"], ["ban", "ban"]], f("decision"))),
  field("Channel", h("input", { name: "channel", value: f("channel"), size: 14, placeholder: "type:id" })),
  field("Received after (RFC 3339)", h("input", { name: "received_after", value: f("received_after"), size: 22 })),
  field("Received before", h("input", { name: "received_before", value: f("received_before"), size: 22 })),
  h("button", { type: "submit" }, "Search"));
  const out = h("div");
  replace(main, h("h1", {}, "Decisions"), form, out);
  const params = {};
  for (const k of ["user", "decision", "channel", "received_after", "received_before", "before_id"]) if (f(k)) params[k] = f(k);
  try {
    const page = await api.get("/decisions" + qs(params));
    replace(out,
      table("Decisions, newest first", ["Id", "Received", "Decision", "Tox", "Spam", "Expl", "User", "Channel", "Message", "Action"],
        page.decisions.map((d) => h("tr", {},
          h("td", { class: "num" }, String(d.id)), h("td", {}, fmtTime(d.received_at)), h("td", {}, d.decision),
          ["toxicity", "spam", "explicit"].map((c) => h("td", { class: "num" }, d.scores[c].toFixed(2))),
          h("td", {}, d.user_id ? h("a", { href: href(["users", d.user_id]) }, visibleText(d.user_id)) : "—"),
          h("td", { class: "muted" }, d.cid || "—"),
          h("td", { class: "msg", dir: "auto" }, visibleText(d.text)),
          h("td", {}, d.action_status)))),
      page.next_before_id ? h("nav", { class: "pager" }, h("a", { href: href(["decisions"], { ...params, before_id: page.next_before_id }) }, "Older →")) : null);
  } catch (e) {
    replace(out, h("p", { class: "error" }, e.message));
  }
}

export async function auditView(main, route) {
  const before = route.query.get("before_id") || "";
  const out = h("div");
  replace(main, h("h1", {}, "Audit log"), out);
  try {
    const page = await api.get("/audit-log" + qs({ before_id: before }));
    replace(out,
      table("Every change, newest first", ["When", "Who", "What", "Target", "Before / after"], page.entries.map((e) => h("tr", {},
        h("td", {}, fmtTime(e.at)), h("td", {}, e.actor), h("td", {}, e.action), h("td", {}, e.target),
        h("td", {}, h("details", {}, h("summary", {}, "show"), e.before ? [h("h3", {}, "Before"), json(e.before)] : null,
          e.after ? [h("h3", {}, "After"), json(e.after)] : null))))),
      page.next_before_id ? h("nav", { class: "pager" }, h("a", { href: href(["audit"], { before_id: page.next_before_id }) }, "Older →")) : null);
  } catch (e) {
    replace(out, h("p", { class: "error" }, e.message));
  }
}
