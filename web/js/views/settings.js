// The room settings panel: everyone reads title, mode, AI, default model, how the AI answers
// (every message or only mentions) and the owner's instructions; only the owner gets
// controls. Errors (403, unknown_model, conflicts, 422) show inline.

import { AI_ANSWERS_LABEL, avatar, displayName, h, instructionsField, modelName, replace } from "./dom.js";

const NOTICES = new Set(["settings", "settings-ok", "settings-ai", "settings-ai-ok"]);

export class SettingsPanel {
  constructor(store, actions, picker) {
    this.store = store;
    this.actions = actions;
    this.picker = picker;
    this.openFor = null;
    this.el = h("aside.settings", { hidden: true, "aria-label": "Room settings" });
    store.on("conv", (cid) => cid === this.openFor && this.render());
    store.on("models", () => this.openFor && this.render());
    store.on("live", (cid) => cid === this.openFor && this.renderPeople());
    store.on("notice", (key) => NOTICES.has(key) && this.renderNotice());
    store.on("active", () => this.close());
  }

  get isOpen() {
    return this.openFor !== null;
  }

  toggle() {
    if (this.isOpen) this.close(); else this.open(this.store.activeId);
  }

  open(cid) {
    if (!cid) return;
    this.openFor = cid;
    for (const key of NOTICES) this.store.setNotice(key, null);
    this.el.hidden = false;
    document.body.classList.add("settings-open");
    this.render();
  }

  close() {
    this.openFor = null;
    this.el.hidden = true;
    document.body.classList.remove("settings-open");
  }

  render() {
    const { store } = this;
    const conv = store.conversations.get(this.openFor);
    if (!conv) { this.close(); return; }
    if (this.el.contains(document.activeElement) && document.activeElement.matches("input[type=text], input:not([type]), textarea")) {
      // Someone else changed the room while the owner types: keep their edit, refresh the rest.
      this.renderPeople();
      return;
    }
    const owner = store.isOwner(conv.id);
    this.el.dataset.role = owner ? "owner" : "member";
    const ownerUser = conv.participants.find((p) => p.id === conv.owner_id);
    const defaultModel = conv.default_model_id;
    const sysDefault = store.models?.default_model_id;
    this.notice = h("div.form-error", { role: "alert", hidden: true });
    this.ok = h("div.form-ok", { role: "status", hidden: true });
    this.people = h("ul.people");
    this.aiNotice = h("div.form-error", { role: "alert", hidden: true });
    this.aiOk = h("div.form-ok", { role: "status", hidden: true });
    const refocus = document.activeElement?.matches?.(".settings input[name=ai_answers]");

    let body;
    if (owner) {
      const title = h("input", { name: "title", value: conv.title, maxlength: 200, "aria-label": "Title" });
      const mode = h("select", { name: "mode", "aria-label": "Mode" },
        ["solo", "partner", "group"].map((m) => h("option", { value: m, selected: m === conv.mode }, m)));
      const withAi = h("input", { type: "checkbox", name: "with_ai", checked: conv.with_ai });
      const modelBtn = h("button.model-field", {
        type: "button", name: "default_model", dataset: { model: defaultModel || "" },
        onclick: () => this.picker.open({
          anchor: modelBtn, purpose: "settings", title: "Room model", selected: defaultModel || sysDefault,
          onPick: (id) => this.actions.updateConversation(conv.id, { default_model_id: id }),
          onClear: defaultModel ? () => this.actions.updateConversation(conv.id, { default_model_id: null }) : null,
          clearLabel: "Use server default",
        }),
      }, defaultModel ? modelName(defaultModel, store) : `Server default (${modelName(sysDefault, store)})`, h("span.caret-down", "▾"));
      const add = h("input", { name: "add", placeholder: "username", autocomplete: "off", "aria-label": "Add people by username" });
      body = [
        h("form.settings-form", {
          onsubmit: (e) => {
            e.preventDefault();
            const changes = {};
            if (title.value.trim() !== conv.title) changes.title = title.value.trim();
            if (mode.value !== conv.mode) changes.mode = mode.value;
            if (withAi.checked !== conv.with_ai) changes.with_ai = withAi.checked;
            if (Object.keys(changes).length) this.actions.updateConversation(conv.id, changes, true);
          },
        },
        h("label.field", h("span", "Title"), title),
        h("label.field", h("span", "Mode"), mode),
        h("label.check", withAi, h("span", "AI replies to messages")),
        h("div.field", h("span", "Default model"), modelBtn),
        h("div.form-actions", h("button.primary", { type: "submit" }, "Save changes"))),
        this.aiOwnerSection(conv),
        h("h3", "People"),
        this.people,
        h("form.add-people", {
          onsubmit: (e) => {
            e.preventDefault();
            const names = add.value.split(/[\s,]+/).map((s) => s.replace(/^@/, "")).filter(Boolean);
            if (names.length) this.actions.addPeople(conv.id, names).then((ok) => { if (ok) add.value = ""; });
          },
        }, add, h("button", { type: "submit" }, "Add")),
      ];
    } else {
      body = [
        h("dl.readonly",
          h("dt", "Title"), h("dd.title", conv.title),
          h("dt", "Mode"), h("dd.mode", conv.mode),
          h("dt", "AI replies"), h("dd.with-ai", conv.with_ai ? "On" : "Off"),
          h("dt", "Default model"), h("dd.default-model", { dataset: { model: defaultModel || "" } },
            defaultModel ? modelName(defaultModel, store) : `Server default (${modelName(sysDefault, store)})`)),
        h("p.muted.small.owner-note", `Only ${displayName(ownerUser)} (the owner) can change these.`),
        this.aiMemberSection(conv),
        h("h3", "People"),
        this.people,
        h("button.danger.leave", { type: "button", onclick: () => this.actions.leave(conv.id) }, "Leave conversation"),
      ];
    }
    replace(this.el,
      h("div.settings-head", h("h2", "Settings"),
        h("button.icon-button", { type: "button", "aria-label": "Close settings", onclick: () => this.close() }, "×")),
      this.notice, this.ok, body);
    this.renderPeople();
    this.renderNotice();
    if (refocus) this.el.querySelector("input[name=ai_answers]:checked")?.focus();
  }

  /** The owner's AI section: answering applies at once; instructions have Save and Clear. */
  aiOwnerSection(conv) {
    const cid = conv.id;
    const answers = conv.ai_answers || "all";
    const radio = (value) => h("label.check",
      h("input", {
        type: "radio", name: "ai_answers", value, checked: value === answers,
        onchange: (e) => e.target.checked && this.actions.updateAiSettings(cid, { ai_answers: value }),
      }),
      h("span", AI_ANSWERS_LABEL[value]));
    const field = instructionsField(conv.instructions);
    const clear = h("button.clear-instructions", {
      type: "button", disabled: !conv.instructions,
      onclick: () => { field.textarea.value = ""; field.update(); this.actions.updateAiSettings(cid, { instructions: null }); },
    }, "Clear");
    return h("section.ai-settings", { dataset: { answers } },
      h("h3", "AI in this room"),
      h("fieldset.answers", h("legend", "AI answers"), radio("all"), radio("mentions"),
        h("p.muted.small", "Mentions: @ai, or @ and a model's alias to ask that model.")),
      h("form.instructions-form", {
        novalidate: true,
        onsubmit: (e) => {
          e.preventDefault();
          const text = field.textarea.value;
          this.actions.updateAiSettings(cid, { instructions: text.trim() ? text : null });
        },
      },
      h("label.field", h("span", "Instructions for the AI"), field.textarea),
      h("div.instructions-meta", h("span.muted.small", "Sent to the AI with every turn; everyone here can read them."), field.counter),
      h("div.form-actions", h("button.primary.save-instructions", { type: "submit" }, "Save instructions"), clear)),
      this.aiNotice, this.aiOk);
  }

  /** What a member reads: how the AI answers and the owner's instructions, word for word. */
  aiMemberSection(conv) {
    const answers = conv.ai_answers || "all";
    return h("section.ai-settings", { dataset: { answers } },
      h("h3", "AI in this room"),
      h("dl.readonly",
        h("dt", "AI answers"), h("dd.ai-answers", { dataset: { answers } }, AI_ANSWERS_LABEL[answers] || answers)),
      h("div.instructions-label.muted.small", "Instructions for the AI"),
      conv.instructions
        ? h("div.instructions-text", conv.instructions)
        : h("div.instructions-text.none.muted", "None"),
      this.aiNotice, this.aiOk);
  }

  renderPeople() {
    if (!this.people) return;
    const conv = this.store.conversations.get(this.openFor);
    if (!conv) return;
    const owner = this.store.isOwner(conv.id);
    const here = this.store.room(conv.id).present;
    replace(this.people, conv.participants.map((p) => h("li", { dataset: { user: p.id } },
      avatar(p, true),
      h("span.person", displayName(p), p.username !== displayName(p) ? h("span.muted.small", ` @${p.username}`) : null),
      here.has(p.id) ? h("span.dot.online", { title: "here now" }) : null,
      p.role === "owner" ? h("span.tag", "owner") : null,
      owner && p.role !== "owner"
        ? h("button.link.remove", { type: "button", onclick: () => this.actions.removePerson(conv.id, p.id) }, "Remove")
        : null)));
  }

  renderNotice() {
    if (!this.notice) return;
    const err = this.store.notices.get("settings");
    this.notice.hidden = !err;
    this.notice.textContent = err || "";
    const ok = this.store.notices.get("settings-ok");
    this.ok.hidden = !ok;
    this.ok.textContent = ok || "";
    for (const [el, key] of [[this.aiNotice, "settings-ai"], [this.aiOk, "settings-ai-ok"]]) {
      const text = this.store.notices.get(key);
      el.hidden = !text;
      el.textContent = text || "";
    }
  }
}
