// Small hand-written SVG charts: stacked bars per hour. Colours come from the stylesheet
// (`.series-N`), so both themes apply.

import { h, s } from "./dom.js";

/**
 * A stacked bar chart. `buckets` is [{start, values: {key: n}}], oldest first; `keys` the stack
 * order. Each bar has a <title> with its numbers; the chart's label sums them up.
 */
export function stackedBars(title, buckets, keys, { width = 720, height = 180 } = {}) {
  const pad = { l: 36, r: 8, t: 8, b: 22 };
  const totals = buckets.map((b) => keys.reduce((n, k) => n + (b.values[k] || 0), 0));
  const max = Math.max(1, ...totals);
  const step = (width - pad.l - pad.r) / Math.max(1, buckets.length);
  const bw = Math.max(1, step * 0.8);
  const y = (v) => pad.t + (height - pad.t - pad.b) * (1 - v / max);
  const sum = totals.reduce((a, b) => a + b, 0);
  const perKey = keys.map((k) => `${k} ${buckets.reduce((n, b) => n + (b.values[k] || 0), 0)}`).join(", ");
  const svg = s("svg", {
    class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `${title}: ${sum} in all (${perKey})`, preserveAspectRatio: "none",
  }, s("title", {}, title));
  for (const frac of [0, 0.5, 1]) {
    const v = Math.round(max * frac);
    svg.append(s("line", { class: "grid", x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v) }),
      s("text", { class: "axis", x: pad.l - 4, y: y(v) + 4, "text-anchor": "end" }, String(v)));
  }
  const labelEvery = Math.ceil(buckets.length / 8);
  buckets.forEach((b, i) => {
    const x = pad.l + i * step + (step - bw) / 2;
    let acc = 0;
    const when = new Date(b.start);
    const g = s("g", { class: "bar" },
      s("title", {}, `${when.toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" })}: ` +
        keys.map((k) => `${k} ${b.values[k] || 0}`).join(", ")));
    keys.forEach((k, ki) => {
      const v = b.values[k] || 0;
      if (!v) return;
      g.append(s("rect", { class: "series-" + ki, x, width: bw, y: y(acc + v), height: y(acc) - y(acc + v) }));
      acc += v;
    });
    svg.append(g);
    if (i % labelEvery === 0) {
      const text = buckets.length > 24
        ? when.toLocaleDateString(undefined, { month: "short", day: "numeric" })
        : when.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
      svg.append(s("text", { class: "axis", x: x + bw / 2, y: height - 6, "text-anchor": "middle" }, text));
    }
  });
  const legend = h("ul", { class: "legend", "aria-hidden": "true" },
    keys.map((k, ki) => h("li", {}, h("span", { class: "swatch series-" + ki }), k)));
  return h("figure", { class: "chart-box" }, h("figcaption", {}, title), svg, legend);
}

/** A horizontal bar for a share in [0, 1]. */
export function shareBar(share, label) {
  const bar = s("svg", { class: "share", viewBox: "0 0 100 8", preserveAspectRatio: "none", role: "img", "aria-label": label },
    s("rect", { class: "track", x: 0, y: 0, width: 100, height: 8 }),
    s("rect", { class: "fill", x: 0, y: 0, width: Math.max(0, Math.min(1, share)) * 100, height: 8 }));
  return bar;
}

/** A score bar in [0, 1]. */
export function scoreBar(name, value, levels) {
  const v = Math.max(0, Math.min(1, value || 0));
  // Coloured by the policy's levels when known: under flag, flagged, blocked.
  const level = levels
    ? (v >= levels.block ? "high" : v >= levels.flag ? "mid" : "low")
    : (v >= 0.8 ? "high" : v >= 0.5 ? "mid" : "low");
  const label = levels
    ? `${name} ${v.toFixed(2)}; flag at ${levels.flag.toFixed(2)}, block at ${levels.block.toFixed(2)}`
    : `${name} ${v.toFixed(2)}`;
  const tick = (at, cls) => s("rect", { class: "tick " + cls, x: Math.max(0, Math.min(99, at * 100 - 0.5)), y: 0, width: 1, height: 10 });
  return h("div", { class: "score-row" },
    h("span", { class: "score-name" }, name),
    s("svg", { class: "score-bar " + level, viewBox: "0 0 100 10", preserveAspectRatio: "none", role: "img", "aria-label": label },
      s("rect", { class: "track", x: 0, y: 0, width: 100, height: 10 }),
      s("rect", { class: "fill", x: 0, y: 0, width: v * 100, height: 10 }),
      levels ? tick(levels.flag, "flag") : null,
      levels ? tick(levels.block, "block") : null),
    h("span", { class: "score-value" }, v.toFixed(2)));
}
