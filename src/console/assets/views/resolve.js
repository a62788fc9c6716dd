// Resolution helpers shared by the queue and the item page.

import { h, field } from "../dom.js";

export function resolutionLabel(r) {
  return { approve: "Approve", remove: "Remove", ban: "Ban", dismiss: "Dismiss" }[r] || r;
}

/**
 * Asks for a ban's length and reason (a single item) or confirms a bulk ban (which bans without
 * a timeout). Resolves to the extra body fields, or null when cancelled.
 */
export function banDialog({ bulk }) {
  return new Promise((resolve) => {
    const timeout = h("input", { type: "number", name: "ban_timeout_minutes", min: 1, max: 525600, step: 1, placeholder: "until unbanned" });
    const reason = h("input", { type: "text", name: "reason", maxlength: 200 });
    const del = h("input", { type: "checkbox", name: "delete_message" });
    const dialog = h("dialog", { class: "ban-dialog", "aria-labelledby": "ban-title" });
    const done = (value) => { dialog.close(); dialog.remove(); resolve(value); };
    const form = h("form", { method: "dialog", on: { submit: (e) => {
      e.preventDefault();
      if (bulk) { done({}); return; }
      const out = {};
      if (timeout.value) out.ban_timeout_minutes = Math.max(1, Math.round(Number(timeout.value)));
      if (reason.value.trim()) out.reason = reason.value.trim();
      if (del.checked) out.delete_message = true;
      done(out);
    } } },
    h("h2", { id: "ban-title" }, bulk ? `Ban the authors of ${bulk} items?` : "Ban the author"),
    bulk ? h("p", {}, "A bulk ban has no timeout: the users stay banned until unbanned.")
      : [field("Timeout (minutes)", timeout, "empty: until unbanned"), field("Reason", reason),
        h("label", { class: "check" }, del, " also delete the message")],
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "danger" }, "Ban"),
      h("button", { type: "button", on: { click: () => done(null) } }, "Cancel")));
    dialog.addEventListener("cancel", (e) => { e.preventDefault(); done(null); });
    dialog.append(form);
    document.body.append(dialog);
    dialog.showModal();
    (bulk ? form.querySelector("button") : timeout).focus();
  });
}
