// One review item: the message with every matched span highlighted, the scores, the reasons in
// plain words, what was already done, the user's history and standing; claimed on open, and
// resolved with a/r/b/d or the buttons. A refused resolution is shown with a retry.

import { h, replace, announce, href, fmtTime, age, table, field, json } from "../dom.js";
import { api, session, qs } from "../api.js";
import { setKeys } from "../keys.js";
import { scoreBar } from "../charts.js";
import { spans, highlighted, describe, hasControls, visibleText } from "../text.js";
import { queueContext } from "./queue.js";
import { banDialog, resolutionLabel } from "./resolve.js";

/** How often an item whose resolution is still being carried out is read again. */
const RESOLVING_POLL_MS = 1000;

export async function itemView(main, route) {
  const id = Number(route.parts[1]);
  if (!Number.isInteger(id)) { replace(main, h("h1", {}, "No such item")); return; }
  const moderator = session.can("moderator");
  const state = { alive: true, timer: null, detail: null, claim: null, lastAttempt: null, busy: false };

  const claimBox = h("div", { class: "claim", role: "status" });
  const resultBox = h("div", { class: "result", "aria-live": "assertive" });
  const body = h("div", { class: "item-body" });
  replace(main, h("p", { class: "back" }, h("a", { href: queueContext.hash }, "← Queue"), " ",
    h("span", { class: "muted" }, "j/k: next/previous item, u: back, ? for all keys")), body);

  function neighbour(step) {
    const i = queueContext.ids.indexOf(id);
    const next = queueContext.ids[i + step];
    if (i >= 0 && next !== undefined) location.hash = href(["item", next]);
    else announce(step > 0 ? "This is the last item of the queue page." : "This is the first item of the queue page.");
  }

  async function claim(item) {
    if (!moderator || !["open", "claimed"].includes(item.status)) return;
    try {
      const res = await api.post(`/review-items/${id}/claim`);
      state.claim = { mine: true, by: res.item.claimed_by, until: res.item.claim_expires_at };
      sessionStorage.setItem("chatguard.name", res.item.claimed_by || "");
    } catch (e) {
      state.claim = e.status === 409 ? { mine: false, message: e.message } : { mine: false, message: "Not claimed: " + e.message };
    }
  }

  async function release() {
    try {
      await api.post(`/review-items/${id}/release`);
      state.claim = null;
      announce("Claim released.");
      drawClaim(state.detail.item);
    } catch (e) { announce(e.message, "error"); }
  }

  function drawClaim(item) {
    const mine = sessionStorage.getItem("chatguard.name");
    if (item.status === "claimed" && item.claimed_by && item.claimed_by !== mine && new Date(item.claim_expires_at) > new Date()) {
      replace(claimBox, h("span", { class: "badge warn" }, "Claimed"), ` by ${item.claimed_by} until ${fmtTime(item.claim_expires_at)}.`);
    } else if (state.claim && state.claim.mine && item.status !== "resolved") {
      replace(claimBox, h("span", { class: "badge ok" }, "Yours"), ` You hold this item until ${fmtTime(state.claim.until)}. `,
        h("button", { type: "button", class: "link", on: { click: release } }, "Release"));
    } else if (state.claim && state.claim.message) {
      replace(claimBox, h("span", { class: "badge warn" }, "Not claimed"), " ", state.claim.message);
    } else {
      replace(claimBox);
    }
  }

  async function resolve(resolution, extra = {}) {
    if (!moderator || state.busy) return;
    const item = state.detail.item;
    if (item.status === "resolved") { announce("This item is resolved already."); return; }
    const note = body.querySelector("textarea[name=note]");
    const payload = { resolution, ...extra };
    if (note && note.value.trim()) payload.note = note.value.trim();
    state.lastAttempt = payload;
    state.busy = true;
    replace(resultBox, h("p", { class: "muted" }, `${resolutionLabel(resolution)}: working…`));
    try {
      const res = await api.post(`/review-items/${id}/resolve`, payload);
      const o = res.outcome;
      replace(resultBox, h("div", { class: "ok-box" },
        h("strong", {}, res.already_resolved ? "It was resolved before; nothing was done again." : `${resolutionLabel(resolution)}: done.`),
        o ? h("p", {}, `Stream: ${o.status}`, o.calls ? ` (${o.calls.join(", ")})` : "", o.reason ? ` — ${o.reason}` : "", o.error ? ` — ${o.error}` : "") : null,
        res.strike_cleared ? h("p", {}, "The strike this decision gave is cleared.") : null));
      announce(`Item ${id}: ${resolution}.`);
      await refresh();
    } catch (e) {
      replace(resultBox, h("div", { class: "error-box", role: "alert" },
        h("strong", {}, e.status === 502 ? "Stream refused the resolution; the item is as it was." : "Not resolved."),
        h("p", {}, e.message),
        h("button", { type: "button", class: "primary", id: "retry", on: { click: () => resolve(state.lastAttempt.resolution, state.lastAttempt) } }, "Retry")));
    } finally {
      state.busy = false;
    }
  }

  async function ban() {
    const opts = await banDialog({ bulk: 0 });
    if (opts) await resolve("ban", opts);
  }

  function resolvePanel(item) {
    if (!moderator) return null;
    if (item.status === "resolved") return null;
    return h("section", { class: "panel resolve", "aria-labelledby": "resolve-h" },
      h("h2", { id: "resolve-h" }, "Resolve"),
      field("Note (optional)", h("textarea", { name: "note", rows: 2, maxlength: 2000 })),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "ok", "data-resolution": "approve", on: { click: () => resolve("approve") } }, h("kbd", {}, "a"), " Approve"),
        h("button", { type: "button", class: "danger", "data-resolution": "remove", on: { click: () => resolve("remove") } }, h("kbd", {}, "r"), " Remove"),
        h("button", { type: "button", class: "danger", "data-resolution": "ban", on: { click: ban } }, h("kbd", {}, "b"), " Ban…"),
        h("button", { type: "button", "data-resolution": "dismiss", on: { click: () => resolve("dismiss") } }, h("kbd", {}, "d"), " Dismiss")));
  }

  function messagePanel(item, decision) {
    // The engine's offsets are into the decision's text; the item keeps the same text.
    const text = decision ? decision.text : item.text;
    const found = decision ? spans(text, decision.matched_rules) : [];
    const kinds = [...new Set(found.map((f) => f.kind))];
    return h("section", { class: "panel message", "aria-labelledby": "msg-h" },
      h("h2", { id: "msg-h" }, "Message"),
      hasControls(text) ? h("p", { class: "badge warn" }, "Contains invisible or direction-changing characters, shown as U+… markers.") : null,
      h("blockquote", { class: "text", dir: "auto", id: "message-text" }, highlighted(text, found)),
      found.length ? h("div", { class: "legend-row" },
        h("span", { class: "muted" }, "Highlights: "),
        kinds.map((k) => h("span", { class: "hl hl-" + k }, k)),
        h("ul", { class: "spans" }, found.map((f) => h("li", {}, h("mark", { class: "hl hl-" + f.kind }, visibleText(text.slice(f.start, f.end))), " — ", f.label))))
        : h("p", { class: "muted" }, "No stretch of the text matched; the scores come from the model or the whole message."));
  }

  function reasonsPanel(item, decision) {
    const engine = decision && Array.isArray(decision.matched_rules) ? decision.matched_rules.filter((r) => r && typeof r === "object") : [];
    const policy = Array.isArray(item.reasons) ? item.reasons : [];
    return h("section", { class: "panel", "aria-labelledby": "why-h" },
      h("h2", { id: "why-h" }, "Why"),
      h("div", { class: "scores" }, ["toxicity", "spam", "explicit"].map((c) => scoreBar(c, item.scores[c], state.policy && state.policy.thresholds[c]))),
      state.policy ? h("p", { class: "muted legend-row" }, "Ticks: the policy's flag and block thresholds", state.policy.channel_type ? ` for ${state.policy.channel_type} channels` : "", ` (policy ${state.policy.version}).`) : null,
      policy.length ? h("ul", { class: "reasons" }, policy.map((r) => h("li", {}, typeof r === "string" ? r : JSON.stringify(r)))) : null,
      engine.length ? h("details", { open: true }, h("summary", {}, `What the engine found (${engine.length})`),
        h("ul", { class: "reasons" }, engine.map((r) => h("li", {}, describe(r))))) : null);
  }

  function actionPanel(item, decision) {
    return h("section", { class: "panel", "aria-labelledby": "done-h" },
      h("h2", { id: "done-h" }, "Done so far"),
      h("dl", { class: "facts" },
        h("dt", {}, "chatguard's action"), h("dd", {}, h("span", { class: "badge" }, item.action_status),
          decision && decision.action && decision.action.kind ? ` ${decision.action.kind}` : ""),
        item.resolution ? [h("dt", {}, "Resolution"), h("dd", {}, `${item.resolution} by ${item.resolved_by || "?"} ${fmtTime(item.resolved_at)}`)] : null,
        item.note ? [h("dt", {}, "Note"), h("dd", { dir: "auto" }, visibleText(item.note))] : null,
        h("dt", {}, "Flags"), h("dd", {}, String(item.flags))),
      decision && decision.action_result ? h("details", {}, h("summary", {}, "Stream's answers"), json(decision.action_result)) : null,
      decision ? h("details", {}, h("summary", {}, "Planned action"), json(decision.action)) : null);
  }

  function userPanel(item, detail) {
    const st = detail.standing;
    return h("section", { class: "panel", "aria-labelledby": "user-h" },
      h("h2", { id: "user-h" }, "User ", item.user_id ? h("a", { href: href(["users", item.user_id]) }, visibleText(item.user_id)) : "—"),
      h("p", {}, h("span", { class: st.banned ? "badge danger" : "badge" }, st.banned ? "banned" : "not banned"),
        ` ${st.active_strikes} active strike${st.active_strikes === 1 ? "" : "s"}, ${st.previous_bans} earlier ban${st.previous_bans === 1 ? "" : "s"}`),
      table("Recent decisions", ["When", "Decision", "Score", "Message"], detail.history.slice(0, 10).map((d) => h("tr", { class: d.id === item.decision_id ? "current" : "" },
        h("td", { title: fmtTime(d.received_at) }, age(d.received_at)), h("td", {}, d.decision),
        h("td", { class: "num" }, Math.max(d.scores.toxicity, d.scores.spam, d.scores.explicit).toFixed(2)),
        h("td", { class: "msg", dir: "auto" }, visibleText(d.text.length > 80 ? d.text.slice(0, 80) + "…" : d.text)))), { class: "compact" }),
      st.bans.length ? table("Bans", ["Started", "Until", "Source", "Reason"], st.bans.map((b) => h("tr", {},
        h("td", {}, fmtTime(b.started_at)), h("td", {}, b.lifted_at ? "lifted " + fmtTime(b.lifted_at) : b.until ? fmtTime(b.until) : "permanent"),
        h("td", {}, b.source), h("td", { dir: "auto" }, visibleText(b.reason || "—")))), { class: "compact" }) : null);
  }

  function draw() {
    const { item, decision } = state.detail;
    replace(body,
      h("header", { class: "item-head" },
        h("h1", {}, `Item ${item.id}`),
        h("span", { class: "badge status-" + item.status.replace(/[^a-z_]/g, ""), id: "item-status" }, item.status),
        h("span", { class: "cat cat-" + item.category.replace(/[^a-z]/g, "") }, item.category),
        h("span", { class: "badge" }, item.decision),
        h("span", { class: "muted" }, `${item.cid || "no channel"} · ${fmtTime(item.created_at)} (${age(item.created_at)} ago)`)),
      claimBox,
      resultBox,
      h("div", { class: "grid" },
        h("div", { class: "col" }, messagePanel(item, decision), resolvePanel(item), reasonsPanel(item, decision)),
        h("div", { class: "col" }, actionPanel(item, decision), userPanel(item, state.detail))));
    drawClaim(item);
  }

  // While Stream has not yet confirmed a resolution the item is `resolving`: keep reading it.
  async function refresh() {
    state.detail = await api.item(id);
    if (!state.alive) return;
    draw();
    clearTimeout(state.timer);
    if (state.detail.item.status === "resolving") state.timer = setTimeout(() => refresh().catch(() => {}), RESOLVING_POLL_MS);
  }

  try {
    state.detail = await api.item(id);
    const cid = state.detail.item.cid || "";
    const channelType = cid.includes(":") ? cid.slice(0, cid.indexOf(":")) : "";
    // Without the thresholds the bars still show the scores.
    state.policy = await api.get("/policy" + qs({ channel_type: channelType })).catch(() => null);
  } catch (e) {
    replace(body, h("h1", {}, `Item ${id}`), h("p", { class: "error" }, e.message));
    return;
  }
  await claim(state.detail.item);
  if (state.claim && state.claim.mine) state.detail = await api.item(id);
  await refresh();

  const keys = {
    j: ["next item of the queue page", () => neighbour(1)],
    k: ["previous item", () => neighbour(-1)],
    u: ["back to the queue", () => { location.hash = queueContext.hash; }],
  };
  if (moderator) Object.assign(keys, {
    a: ["approve: the message is fine", () => resolve("approve")],
    r: ["remove the message", () => resolve("remove")],
    b: ["ban the user (asks for timeout and reason)", ban],
    d: ["dismiss: nothing on Stream", () => resolve("dismiss")],
  });
  setKeys(keys);
  main.focus();
  return () => {
    state.alive = false;
    clearTimeout(state.timer);
    // Leaving an item unresolved gives it back to the queue rather than holding it until the
    // claim expires.
    const item = state.detail && state.detail.item;
    if (state.claim && state.claim.mine && item && item.status === "claimed") {
      api.post(`/review-items/${id}/release`).catch(() => {});
    }
  };
}
