// Message text: highlights from the engine's stored byte offsets, invisible and bidi control
// characters made visible, and the engine's reasons in plain words. Text is only ever put into
// text nodes.

import { h } from "./dom.js";

/** Bidi controls and zero-width characters: shown as a visible marker instead of acting. */
const CONTROLS = {
  0x061c: "ARABIC LETTER MARK", 0x200b: "ZERO WIDTH SPACE", 0x200c: "ZERO WIDTH NON-JOINER",
  0x200d: "ZERO WIDTH JOINER", 0x200e: "LEFT-TO-RIGHT MARK", 0x200f: "RIGHT-TO-LEFT MARK",
  0x202a: "LEFT-TO-RIGHT EMBEDDING", 0x202b: "RIGHT-TO-LEFT EMBEDDING", 0x202c: "POP DIRECTIONAL FORMATTING",
  0x202d: "LEFT-TO-RIGHT OVERRIDE", 0x202e: "RIGHT-TO-LEFT OVERRIDE", 0x2060: "WORD JOINER",
  0x2066: "LEFT-TO-RIGHT ISOLATE", 0x2067: "RIGHT-TO-LEFT ISOLATE", 0x2068: "FIRST STRONG ISOLATE",
  0x2069: "POP DIRECTIONAL ISOLATE", 0xfeff: "ZERO WIDTH NO-BREAK SPACE",
};

export function hasControls(text) {
  for (const ch of text) if (CONTROLS[ch.codePointAt(0)]) return true;
  return false;
}

/** Text nodes, with each control character replaced by a marker naming it. */
export function visibleText(text) {
  const out = [];
  let run = "";
  for (const ch of text) {
    const cp = ch.codePointAt(0);
    const name = CONTROLS[cp];
    if (name) {
      if (run) out.push(document.createTextNode(run));
      run = "";
      const code = "U+" + cp.toString(16).toUpperCase().padStart(4, "0");
      out.push(h("span", { class: "ctl", title: name, "aria-label": name }, code));
    } else {
      run += ch;
    }
  }
  if (run) out.push(document.createTextNode(run));
  return out;
}

/** Maps UTF-8 byte offsets (as the engine stores them) to string (UTF-16) indices. */
export function byteToIndex(text) {
  const map = new Map();
  let byte = 0;
  let index = 0;
  for (const ch of text) {
    map.set(byte, index);
    const cp = ch.codePointAt(0);
    byte += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    index += ch.length;
  }
  map.set(byte, index);
  return (b) => {
    for (let x = b; x >= 0; x--) if (map.has(x)) return map.get(x);
    return 0;
  };
}

/** The engine's reason as a phrase. */
export function describe(r) {
  const n = (x) => (typeof x === "number" ? x.toFixed(2) : "?");
  switch (r.kind) {
    case "term":
      return `term “${r.term}” (${r.category}, severity ${r.severity})`;
    case "rule":
      return `rule ${r.rule_id} (${r.category}, score ${n(r.score)}${r.mode === "shadow" ? ", shadow: changes nothing" : ""}${r.action ? ", asks for " + r.action : ""})`;
    case "signal":
      return `signal ${r.signal} (${r.category}, value ${n(r.value)}, adds ${n(r.score)})`;
    case "model": {
      const top = (r.top || []).slice(0, 3).map((c) => `${c.feature} ${c.weight >= 0 ? "+" : ""}${n(c.weight)}`);
      return `model: ${r.category} probability ${n(r.probability)}${top.length ? "; strongest features " + top.join(", ") : ""}`;
    }
    default:
      return JSON.stringify(r);
  }
}

/** The engine reasons that point at a stretch of the text. */
export function spans(text, reasons) {
  if (!Array.isArray(reasons)) return [];
  const toIndex = byteToIndex(text);
  return reasons
    .filter((r) => r && typeof r === "object" && Number.isInteger(r.start) && Number.isInteger(r.end) && r.end > r.start)
    .map((r) => ({ start: toIndex(r.start), end: toIndex(r.end), kind: r.kind, label: describe(r) }))
    .filter((s) => s.end > s.start && s.start < text.length);
}

/**
 * The message as nodes with every span marked: where spans overlap, each stretch is marked with
 * all of them (`hl-multi`), and the title names each one.
 */
export function highlighted(text, found) {
  const cuts = new Set([0, text.length]);
  for (const sp of found) { cuts.add(sp.start); cuts.add(Math.min(sp.end, text.length)); }
  const points = [...cuts].sort((a, b) => a - b);
  const out = [];
  for (let i = 0; i + 1 < points.length; i++) {
    const [a, b] = [points[i], points[i + 1]];
    const piece = text.slice(a, b);
    const over = found.filter((sp) => sp.start <= a && sp.end >= b);
    if (!over.length) { out.push(...visibleText(piece)); continue; }
    const kinds = [...new Set(over.map((sp) => sp.kind))];
    const label = over.map((sp) => sp.label).join("; ");
    out.push(h("mark", {
      class: ["hl", kinds.length > 1 ? "hl-multi" : "hl-" + kinds[0]],
      title: label,
      "data-kinds": kinds.join(" "),
    }, visibleText(piece), h("span", { class: "sr-only" }, ` [${label}]`)));
  }
  return out;
}
