// Sign in / create account.

import { h, replace } from "./dom.js";

export class AuthView {
  constructor(store, actions) {
    this.store = store;
    this.actions = actions;
    this.mode = "signin";
    this.build();
    store.on("notice", (key) => key === "auth" && this.renderError());
  }

  build() {
    this.username = h("input", { name: "username", autocomplete: "username", required: true, maxlength: 32, pattern: "[A-Za-z0-9_.\\-]+", placeholder: "username" });
    this.password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true, placeholder: "password" });
    this.display = h("input", { name: "display_name", autocomplete: "name", placeholder: "how others see you (optional)" });
    this.displayRow = h("label.field", { hidden: true }, h("span", "Display name"), this.display);
    this.error = h("div.form-error", { role: "alert", hidden: true });
    this.submit = h("button.primary.wide", { type: "submit" }, "Sign in");
    this.tabs = h("div.tabs", { role: "tablist" },
      h("button", { type: "button", role: "tab", dataset: { mode: "signin" }, onclick: () => this.setMode("signin") }, "Sign in"),
      h("button", { type: "button", role: "tab", dataset: { mode: "register" }, onclick: () => this.setMode("register") }, "Create account"));
    this.form = h("form.auth-form", {
      onsubmit: async (e) => {
        e.preventDefault();
        this.submit.disabled = true;
        try {
          await this.actions.authenticate(this.mode, this.username.value.trim(), this.password.value, this.display.value.trim());
        } finally {
          this.submit.disabled = false;
        }
      },
    },
    this.tabs,
    h("label.field", h("span", "Username"), this.username),
    h("label.field", h("span", "Password"), this.password),
    this.displayRow,
    this.error,
    this.submit);
    this.el = h("section.auth", { hidden: true },
      h("div.auth-card",
        h("div.brand.big", h("span.logo", "✳"), h("span", "Chat")),
        h("p.muted", "Group chat where the AI is part of the conversation: pick the model, watch it think out loud, stop it any time."),
        this.form));
    this.setMode("signin");
  }

  setMode(mode) {
    this.mode = mode;
    for (const b of this.tabs.children) b.setAttribute("aria-selected", String(b.dataset.mode === mode));
    this.displayRow.hidden = mode !== "register";
    this.password.autocomplete = mode === "register" ? "new-password" : "current-password";
    replace(this.submit, mode === "register" ? "Create account" : "Sign in");
    this.store.setNotice("auth", null);
  }

  renderError() {
    const text = this.store.notices.get("auth");
    this.error.hidden = !text;
    this.error.textContent = text || "";
  }
}
