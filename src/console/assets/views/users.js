// A user's history, strikes and bans, and unban (moderators).

import { h, replace, announce, href, fmtTime, age, table, field } from "../dom.js";
import { api, session } from "../api.js";
import { visibleText } from "../text.js";

export async function usersView(main, route) {
  const userId = route.parts[1] || "";
  const input = h("input", { name: "user", value: userId, required: true, size: 24 });
  const search = h("form", { class: "filters", role: "search", on: { submit: (e) => {
    e.preventDefault();
    if (input.value.trim()) location.hash = href(["users", input.value.trim()]);
  } } }, field("Stream user id", input), h("button", { type: "submit" }, "Show"));
  const out = h("div");
  replace(main, h("h1", {}, "Users"), search, out);
  if (!userId) { input.focus(); return; }

  async function load() {
    let page;
    try {
      page = await api.user(userId);
    } catch (e) {
      replace(out, h("p", { class: e.status === 404 ? "muted" : "error" }, e.message));
      return;
    }
    const unban = session.can("moderator") && page.banned ? h("button", { type: "button", class: "primary", on: { click: async () => {
      try {
        const res = await api.post(`/users/${encodeURIComponent(userId)}/unban`);
        announce(res.lifted ? `${userId} is unbanned (Stream: ${res.outcome.status}).` : `Stream refused the unban: ${res.outcome.error || res.outcome.status}`, res.lifted ? "info" : "error");
        await load();
      } catch (e) { announce(e.message, "error"); }
    } } }, "Unban") : null;
    replace(out,
      h("h2", { dir: "auto" }, visibleText(page.user_id)),
      h("p", {}, h("span", { class: page.banned ? "badge danger" : "badge" }, page.banned ? "banned" : "not banned"),
        ` ${page.active_strikes} active strikes, ${page.previous_bans} earlier bans `, unban),
      table("Decisions", ["When", "Decision", "Scores (tox / spam / expl)", "Channel", "Message", ""], page.decisions.map((d) => h("tr", {},
        h("td", { title: fmtTime(d.received_at) }, age(d.received_at)), h("td", {}, d.decision),
        h("td", { class: "num" }, [d.scores.toxicity, d.scores.spam, d.scores.explicit].map((x) => x.toFixed(2)).join(" / ")),
        h("td", { class: "muted" }, d.cid || "—"), h("td", { class: "msg", dir: "auto" }, visibleText(d.text)),
        h("td", {}, h("a", { href: href(["decisions"], { user: d.user_id || "" }) }, "log"))))),
      table("Strikes", ["Given", "Expires", "Cleared"], page.strikes.map((s) => h("tr", {},
        h("td", {}, fmtTime(s.created_at)), h("td", {}, fmtTime(s.expires_at)), h("td", {}, s.cleared_at ? fmtTime(s.cleared_at) : "—")))),
      table("Bans", ["Started", "Until", "Lifted", "Source", "Reason"], page.bans.map((b) => h("tr", {},
        h("td", {}, fmtTime(b.started_at)), h("td", {}, b.until ? fmtTime(b.until) : "permanent"),
        h("td", {}, b.lifted_at ? fmtTime(b.lifted_at) : "—"), h("td", {}, b.source), h("td", { dir: "auto" }, visibleText(b.reason || "—"))))));
  }
  await load();
}
