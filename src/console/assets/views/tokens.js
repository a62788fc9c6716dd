// API tokens (admins): list, create (the secret is shown once) and revoke.

import { h, replace, announce, fmtTime, table, field, select } from "../dom.js";
import { api } from "../api.js";

export async function tokensView(main) {
  const list = h("div");
  const secretBox = h("div", { "aria-live": "polite" });
  const name = h("input", { name: "name", required: true, maxlength: 64, size: 20 });
  const form = h("form", { class: "filters", on: { submit: async (e) => {
    e.preventDefault();
    try {
      const res = await api.post("/tokens", { name: name.value.trim(), role: form.elements.role.value });
      name.value = "";
      const secret = h("input", { readonly: true, value: res.secret, size: 50, "aria-label": "The new token's secret", id: "new-secret" });
      replace(secretBox, h("div", { class: "ok-box" },
        h("p", {}, h("strong", {}, `Token ${res.token.name} (${res.token.role}) created.`), " Copy the secret now: it is not shown again."),
        secret, " ", h("button", { type: "button", on: { click: async () => {
          try { await navigator.clipboard.writeText(secret.value); announce("Copied."); } catch { secret.select(); }
        } } }, "Copy"),
        h("button", { type: "button", class: "link", on: { click: () => replace(secretBox) } }, "Done, hide it")));
      secret.select();
      await load();
    } catch (err) { announce(err.message, "error"); }
  } } },
  field("Name", name, "1 to 64 characters"),
  field("Role", select("role", [["viewer", "viewer"], ["moderator", "moderator"], ["admin", "admin"]], "moderator")),
  h("button", { type: "submit", class: "primary" }, "Create"));
  replace(main, h("h1", {}, "Tokens"), form, secretBox, list);

  async function load() {
    const res = await api.get("/tokens");
    replace(list, table("Tokens", ["Name", "Role", "Created", "Last used", "Revoked", ""], res.tokens.map((t) => h("tr", {},
      h("td", {}, t.name), h("td", {}, t.role), h("td", {}, fmtTime(t.created_at)), h("td", {}, fmtTime(t.last_used_at)),
      h("td", {}, t.revoked_at ? fmtTime(t.revoked_at) : "—"),
      h("td", {}, t.revoked_at ? null : h("button", { type: "button", class: "danger", "aria-label": `Revoke ${t.name}`, on: { click: async (e) => {
        const b = e.currentTarget;
        if (b.dataset.confirm !== "1") { b.dataset.confirm = "1"; b.textContent = "Really revoke?"; return; }
        try { await api.del("/tokens/" + encodeURIComponent(t.name)); announce(`${t.name} is revoked.`); await load(); }
        catch (err) { announce(err.message, "error"); }
      } } }, "Revoke"))))));
  }
  await load();
}
