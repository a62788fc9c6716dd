// The overview: decisions per hour by decision and by category (24 h or 7 d), open items, the
// oldest open item, the median time to resolution, and how often moderators upheld each rule
// and category, the rules that misfire most first.

import { h, replace, href, fmtDuration, pct, table } from "../dom.js";
import { api, qs } from "../api.js";
import { stackedBars, shareBar } from "../charts.js";

const DECISIONS = ["flag", "block", "ban", "allow"];
const CATEGORIES = ["toxicity", "spam", "explicit"];

function upheldTable(caption, first, entries) {
  // Misfires first: the lowest upheld share, then the most reviewed.
  const rows = Object.entries(entries).sort((a, b) => a[1].upheld_share - b[1].upheld_share || b[1].reviewed - a[1].reviewed);
  return table(caption, [first, "Reviewed", "Upheld", "Upheld share"], rows.map(([k, v]) => h("tr", {},
    h("td", {}, k), h("td", { class: "num" }, String(v.reviewed)), h("td", { class: "num" }, String(v.upheld)),
    h("td", { class: "share-cell" }, shareBar(v.upheld_share, `${k}: ${pct(v.upheld_share)} upheld`), " ", pct(v.upheld_share)))),
  { class: "compact" });
}

export async function overviewView(main, route) {
  const win = route.query.get("window") === "7d" ? "7d" : "24h";
  const out = h("div", { class: "overview" });
  replace(main, h("div", { class: "queue-head" }, h("h1", {}, "Overview"),
    h("nav", { class: "tabs", "aria-label": "Window" }, ["24h", "7d"].map((w) =>
      h("a", { href: href(["overview"], { window: w }), "aria-current": w === win ? "page" : false }, w === "24h" ? "Last 24 h" : "Last 7 days")))),
  out);
  let series, stats;
  try {
    [series, stats] = await Promise.all([api.get("/overview/series" + qs({ window: win })), api.get("/stats")]);
  } catch (e) {
    replace(out, h("p", { class: "error" }, e.message));
    return;
  }
  const open = Object.values(stats.open_by_category || {}).reduce((a, b) => a + b, 0);
  const total = series.buckets.reduce((n, b) => n + Object.values(b.by_decision).reduce((x, y) => x + y, 0), 0);
  replace(out,
    h("div", { class: "figures" },
      h("div", { class: "figure" }, h("span", { class: "big", id: "open-items" }, String(open)), h("span", {}, "open items")),
      h("div", { class: "figure" }, h("span", { class: "big" }, fmtDuration(stats.oldest_open_secs)), h("span", {}, "oldest open item")),
      h("div", { class: "figure" }, h("span", { class: "big" }, fmtDuration(stats.median_resolution_secs)), h("span", {}, `median time to resolution (${stats.resolved} resolved)`)),
      h("div", { class: "figure" }, h("span", { class: "big", id: "decision-total" }, String(total)), h("span", {}, `decisions in the last ${win}`))),
    stackedBars("Decisions per hour by decision", series.buckets.map((b) => ({ start: b.start, values: b.by_decision })), DECISIONS),
    stackedBars("Flags, blocks and bans per hour by category", series.buckets.map((b) => ({ start: b.start, values: b.by_category })), CATEGORIES),
    h("div", { class: "grid" },
      h("div", { class: "col" }, upheldTable("Rules: how often moderators upheld them (misfires first)", "Rule", stats.by_rule || {})),
      h("div", { class: "col" }, upheldTable("Categories", "Category", stats.by_category || {}))));
}
