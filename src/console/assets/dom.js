// DOM helpers. Everything the console shows is built from nodes: strings only ever become text
// nodes or attribute values, never markup, so message text cannot turn into HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") {
      for (const [event, fn] of Object.entries(v)) el.addEventListener(event, fn);
    } else if (k === "class") {
      el.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : v);
    } else if (k === "dataset") {
      Object.assign(el.dataset, v);
    } else if (k === "value" || k === "checked" || k === "selected" || k === "disabled") {
      el[k] = v;
    } else if (k.startsWith("on")) {
      throw new Error("event handlers go in `on`, never in attributes");
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** An HTML element: h("a", {href: "#/queue"}, "Queue"). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A hash link that keeps values out of the markup: `link(["item", 42], "open")`. */
export function href(parts, query) {
  const path = parts.map((p) => encodeURIComponent(String(p))).join("/");
  const q = query ? new URLSearchParams(query).toString() : "";
  return "#/" + path + (q ? "?" + q : "");
}

/** Announces a message to screen readers and shows it in the status line. */
export function announce(text, kind = "info") {
  const el = document.getElementById("status");
  if (!el) return;
  replace(el, text);
  el.className = "status " + kind;
  clearTimeout(announce.timer);
  if (kind === "info") announce.timer = setTimeout(() => replace(el), 6000);
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

/** "3 min", "2 h", "5 d" from seconds. */
export function fmtDuration(secs) {
  if (secs === null || secs === undefined || isNaN(secs)) return "—";
  const s = Math.max(0, secs);
  if (s < 90) return Math.round(s) + " s";
  if (s < 90 * 60) return Math.round(s / 60) + " min";
  if (s < 36 * 3600) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

export function age(iso) {
  return fmtDuration((Date.now() - new Date(iso).getTime()) / 1000);
}

export function pct(x) {
  return (x * 100).toFixed(0) + "%";
}

/** A table with a caption, header row and body rows (arrays of cells). */
export function table(caption, headers, rows, attrs = {}) {
  return h("table", attrs,
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "empty" }, "Nothing here."))));
}

/** A label wrapping its control, so every input has an accessible name. */
export function field(label, control, hint) {
  return h("label", { class: "field" }, h("span", { class: "label" }, label), control,
    hint ? h("span", { class: "hint" }, hint) : null);
}

export function select(name, options, value) {
  return h("select", { name },
    options.map(([v, label]) => h("option", { value: v, selected: v === (value || "") }, label)));
}

/** Pretty JSON as text. */
export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}
