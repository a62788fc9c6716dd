// Keyboard shortcuts. Each view registers its keys; `?` lists them. Keys typed into a form field
// stay there.

import { h, replace } from "./dom.js";

let current = {};

/** `keys` maps a key to [description, handler]. */
export function setKeys(keys) { current = keys || {}; }

function typing(target) {
  return target instanceof HTMLElement &&
    (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

export function showHelp() {
  const dialog = document.getElementById("help");
  const list = document.getElementById("help-list");
  const rows = Object.entries({ ...current, "?": ["this list", null] })
    .map(([k, [what]]) => [h("dt", {}, h("kbd", {}, k === "Enter" ? "Enter" : k)), h("dd", {}, what)]);
  replace(list, rows);
  if (!dialog.open) dialog.showModal();
}

export function installKeys() {
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    if (document.querySelector("dialog[open]")) return;
    if (e.key === "?") { e.preventDefault(); showHelp(); return; }
    const entry = current[e.key];
    // Enter on a link or button keeps its own meaning.
    if (e.key === "Enter" && e.target instanceof HTMLElement && e.target.closest("a, button")) return;
    if (entry && entry[1]) { e.preventDefault(); entry[1](e); }
  });
}
