// The conversation list (most recent activity first, unread counts), the signed-in
// user, and the "new conversation" dialog.

import { AI_ANSWERS_LABEL, avatar, displayName, h, instructionsField, replace, shortTime } from "./dom.js";

export class Sidebar {
  constructor(store, actions) {
    this.store = store;
    this.actions = actions;
    this.items = new Map();
    this.build();
    store.on("list", () => this.schedule());
    store.on("active", () => this.schedule());
    store.on("session", () => this.renderMe());
    store.on("notice", (key) => key === "create" && this.renderCreateError());
    store.on("templates", () => this.renderTemplates());
  }

  build() {
    this.me = h("div.me");
    this.list = h("ul.conversations", { "aria-label": "Conversations" });
    this.filter = h("input.search", {
      type: "search", placeholder: "Search conversations", "aria-label": "Search conversations",
      oninput: () => this.render(),
    });
    this.el = h("aside.sidebar",
      h("div.sidebar-head",
        h("div.brand", h("span.logo", "✳"), h("span", "Chat")),
        h("button.primary.small.new-conversation", { type: "button", onclick: () => this.openCreate() }, "+ New")),
      this.filter,
      this.list,
      this.me);
    this.buildCreate();
  }

  schedule() {
    if (this.queued) return;
    this.queued = true;
    queueMicrotask(() => { this.queued = false; this.render(); });
  }

  render() {
    const { store } = this;
    const q = this.filter.value.trim().toLowerCase();
    const convs = store.ordered().filter((c) => !q || c.title.toLowerCase().includes(q)
      || c.participants.some((p) => displayName(p).toLowerCase().includes(q)));
    const rows = convs.map((c) => {
      const unread = c.id === store.activeId ? 0 : store.unread(c.id);
      const others = c.participants.filter((p) => p.id !== store.me?.id);
      const sub = c.mode === "solo" ? "You and the AI" : others.map(displayName).join(", ");
      return h("li", h("button.conv", {
        type: "button", class: c.id === store.activeId ? "active" : undefined,
        dataset: { id: c.id, unread },
        "aria-current": c.id === store.activeId ? "true" : undefined,
        onclick: () => this.actions.openConversation(c.id),
      },
      convIcon(c, others),
      h("span.conv-text",
        h("span.conv-title", c.title),
        h("span.conv-sub", sub || c.mode)),
      h("span.conv-side",
        h("span.conv-time", shortTime(c.activity)),
        unread ? h("span.badge", { "aria-label": `${unread} unread` }, unread > 99 ? "99+" : String(unread)) : null)));
    });
    if (!rows.length) {
      rows.push(h("li.empty-list", q ? "No conversation matches." : "No conversations yet."));
    }
    replace(this.list, rows);
  }

  renderMe() {
    const me = this.store.me;
    if (!me) { replace(this.me); return; }
    replace(this.me, avatar(me),
      h("div.me-text", h("strong", displayName(me)), h("span.muted.small", "@" + me.username)),
      h("button.link.my-usage", { type: "button", title: "What your AI replies cost", onclick: () => this.actions.openUsage("me") }, "Usage"),
      h("button.link.logout", { type: "button", onclick: () => this.actions.logout() }, "Log out"));
  }

  // -- new conversation ---------------------------------------------------------------

  buildCreate() {
    const f = (this.form = {});
    f.title = h("input", { name: "title", required: true, maxlength: 200, placeholder: "e.g. Trip planning" });
    f.people = h("input", { name: "people", placeholder: "usernames, separated by commas", autocomplete: "off" });
    f.ai = h("input", { type: "checkbox", name: "with_ai", checked: true });
    f.error = h("div.form-error", { role: "alert", hidden: true });
    const mode = (value, label, hint) => h("label.mode-option",
      h("input", { type: "radio", name: "mode", value, checked: value === "solo", onchange: () => { this.edited.add("mode"); this.modeChanged(); } }),
      h("span", h("strong", label), h("span.muted.small", hint)));
    this.peopleRow = h("label.field", { hidden: true }, h("span", "Participants"), f.people);
    // A group's AI answers only mentions unless asked otherwise (sent explicitly: the server's default is all).
    const answer = (value) => h("label.check",
      h("input", { type: "radio", name: "ai_answers", value, checked: value === "mentions", onchange: () => this.edited.add("ai_answers") }),
      h("span", AI_ANSWERS_LABEL[value]));
    this.answersRow = h("fieldset.answers", { hidden: true }, h("legend", "The AI answers"), answer("mentions"), answer("all"));
    f.instructions = instructionsField("", { rows: 3 });
    this.instructionsRow = h("details.instructions-row",
      h("summary", "Instructions for the AI (optional)"),
      f.instructions.textarea,
      h("div.instructions-meta", h("span.muted.small", "Sent with every turn; everyone in the room can read them."), f.instructions.counter));
    // Templates (GET /templates): picking one fills the fields a person has not edited; the
    // POST names it, and the server takes what the form says over what the template says.
    f.template = h("select", { name: "template", onchange: () => this.applyTemplate() });
    f.templateNote = h("span.muted.small.template-note");
    this.templateRow = h("label.field.template-row", { hidden: true }, h("span", "Template"), f.template, f.templateNote);
    this.edited = new Set();
    const mark = (name) => () => this.edited.add(name);
    f.title.addEventListener("input", mark("title"));
    f.ai.addEventListener("change", mark("with_ai"));
    f.instructions.textarea.addEventListener("input", mark("instructions"));
    this.dialog = h("dialog.create",
      h("form", {
        method: "dialog",
        onsubmit: (e) => { e.preventDefault(); this.submitCreate(); },
      },
      h("h2", "New conversation"),
      this.templateRow,
      h("label.field", h("span", "Title"), f.title),
      h("fieldset.modes", h("legend", "Who's in it"),
        mode("solo", "Solo", "Just you and the AI"),
        mode("partner", "Partner", "You and one other person"),
        mode("group", "Group", "Any number of people")),
      this.peopleRow,
      h("label.check", f.ai, h("span", "AI replies to messages")),
      this.answersRow,
      this.instructionsRow,
      f.error,
      h("div.dialog-actions",
        h("button", { type: "button", onclick: () => this.dialog.close() }, "Cancel"),
        h("button.primary", { type: "submit" }, "Create"))));
    this.el.append(this.dialog);
  }

  modeChanged() {
    const mode = this.dialog.querySelector("input[name=mode]:checked").value;
    this.peopleRow.hidden = mode === "solo";
    this.answersRow.hidden = mode !== "group";
    this.form.people.placeholder = mode === "partner" ? "their username" : "usernames, separated by commas";
  }

  renderTemplates() {
    const list = this.store.templates || [];
    const f = this.form;
    const keep = f.template.value;
    this.templateRow.hidden = !list.length;
    replace(f.template, h("option", { value: "" }, "None"),
      list.map((t) => h("option", { value: t.name }, t.label || t.name)));
    f.template.value = list.some((t) => t.name === keep) ? keep : "";
  }

  /** Fill the form from the picked template; a field the person already edited keeps its value. */
  applyTemplate() {
    const f = this.form;
    const t = (this.store.templates || []).find((x) => x.name === f.template.value);
    f.templateNote.textContent = t?.title_prefix ? `Titled “${t.title_prefix}…”` : "";
    if (!t) return;
    const free = (name) => !this.edited.has(name) && t[name] !== undefined && t[name] !== null;
    if (free("title")) f.title.value = t.title;
    if (free("mode")) {
      const radio = this.dialog.querySelector(`input[name=mode][value="${CSS.escape(t.mode)}"]`);
      if (radio) radio.checked = true;
      this.modeChanged();
    }
    if (free("with_ai")) f.ai.checked = !!t.with_ai;
    if (free("ai_answers")) {
      const radio = this.dialog.querySelector(`input[name=ai_answers][value="${CSS.escape(t.ai_answers)}"]`);
      if (radio) radio.checked = true;
    }
    if (free("instructions")) {
      f.instructions.textarea.value = t.instructions;
      f.instructions.update();
      this.instructionsRow.open = !!t.instructions;
    }
  }

  openCreate() {
    this.edited.clear();
    this.form.template.value = "";
    this.form.templateNote.textContent = "";
    this.actions.loadTemplates();
    this.form.title.value = "";
    this.form.people.value = "";
    this.form.instructions.textarea.value = "";
    this.form.instructions.update();
    this.instructionsRow.open = false;
    this.modeChanged();
    this.dialog.querySelector("input[name=ai_answers][value=mentions]").checked = true;
    this.store.setNotice("create", null);
    this.dialog.showModal();
    this.form.title.focus();
  }

  async submitCreate() {
    const mode = this.dialog.querySelector("input[name=mode]:checked").value;
    const people = this.form.people.value.split(/[\s,]+/).map((s) => s.replace(/^@/, "")).filter(Boolean);
    const body = { title: this.form.title.value.trim(), mode, with_ai: this.form.ai.checked };
    if (mode !== "solo") body.participant_usernames = people;
    if (mode === "group") body.ai_answers = this.dialog.querySelector("input[name=ai_answers]:checked").value;
    const instructions = this.form.instructions.textarea.value;
    if (instructions.trim()) body.instructions = instructions;
    if (this.form.template.value) body.template = this.form.template.value;
    const ok = await this.actions.createConversation(body);
    if (ok) this.dialog.close();
  }

  renderCreateError() {
    const text = this.store.notices.get("create");
    this.form.error.hidden = !text;
    this.form.error.textContent = text || "";
  }
}

function convIcon(c, others) {
  if (c.mode === "solo") return h("span.avatar.ai-avatar", { "aria-hidden": "true" }, "✳");
  if (c.mode === "partner" && others[0]) return avatar(others[0]);
  return h("span.avatar.group", { "aria-hidden": "true" }, (c.title.trim()[0] || "#").toUpperCase());
}
