// The open conversation: header (title, presence, model, settings), the message list,
// the live status line, and the composer with Route, @mention completion and Send/Stop.

import { avatar, displayName, h, mentionsIn, modelName, replace, speedText, TIER_LABEL, when } from "./dom.js";
import { fillRow, groupRow, messageRow } from "./message.js";

const TYPING_EVERY_MS = 2500;
/** An @mention being typed just before the caret (not inside an email address). */
const MENTION_AT_CARET = /(?:^|[^\w@])@([A-Za-z0-9_.-]{0,32})$/;

export class RoomView {
  constructor(store, actions, picker) {
    this.store = store;
    this.actions = actions;
    this.picker = picker;
    this.cid = null;
    this.rows = new Map(); // message id -> <li>
    this.pendingRows = new Map(); // client_id -> <li>
    this.lastTyping = 0;
    this.scrollQueued = false;
    this.build();
    store.on("active", () => this.open(store.activeId));
    store.on("messages", (d) => d.cid === this.cid && this.upsert(d.ids));
    store.on("delta", (d) => d.cid === this.cid && this.append(d.id, d.text));
    store.on("outbox", (cid) => cid === this.cid && this.renderPending());
    store.on("live", (cid) => cid === this.cid && this.renderLive());
    store.on("conv", (cid) => cid === this.cid && (this.renderHeader(), this.renderHint()));
    store.on("models", () => this.cid && (this.renderHeader(), this.renderHint()));
    store.on("route", () => this.cid && (this.renderRoute(), this.renderHeader(), this.renderHint()));
    store.on("history", (cid) => cid === this.cid && this.renderHistory());
    store.on("notice", (key) => key === "composer" && this.renderNotice());
    store.on("warnings", () => this.cid && this.renderWarnings());
    setInterval(() => this.cid && this.renderTyping(), 1000);
  }

  build() {
    const a = this.actions;
    this.title = h("h1.room-title");
    this.subtitle = h("div.room-sub");
    this.modelBtn = h("button.model-button", {
      type: "button", "aria-haspopup": "dialog", "aria-expanded": "false",
      onclick: () => this.openModelPicker(),
    });
    this.settingsBtn = h("button.icon-button", {
      type: "button", title: "Room settings", "aria-label": "Room settings", onclick: () => a.toggleSettings(),
    }, gear());
    this.usageBtn = h("button.icon-button.usage-button", {
      type: "button", title: "Usage and cost", "aria-label": "Usage and cost", onclick: () => a.openUsage("conversation"),
    }, barsIcon());
    this.header = h("header.room-header",
      h("button.icon-button.back", { type: "button", "aria-label": "Back to conversations", onclick: () => a.openConversation(null) }, "‹"),
      h("div.room-heading", this.title, this.subtitle),
      this.modelBtn, this.usageBtn, this.settingsBtn);
    this.warnings = h("div.budget-warnings", { role: "status", "aria-live": "polite" });

    this.list = h("ol.messages", { "aria-live": "off" });
    this.pendingList = h("ol.messages.pending-list");
    this.older = h("div.older", { hidden: true });
    this.empty = h("div.room-empty", { hidden: true });
    this.scroller = h("div.scroller", { onscroll: () => this.onScroll() }, this.older, this.empty, this.list, this.pendingList);
    this.pill = h("button.new-pill", { type: "button", hidden: true, onclick: () => this.toBottom(true) }, "New messages ↓");
    this.status = h("div.live-status", { "aria-live": "polite" });

    this.routeChip = h("div.route-chip", { hidden: true });
    this.notice = h("div.composer-notice", { hidden: true, role: "alert" });
    this.hint = h("div.composer-hint", { hidden: true, "aria-live": "polite" });
    this.mention = null; // the open @mention menu: {start, end, options, index}
    this.mentionMenu = h("ul.mention-menu", { id: "mention-menu", role: "listbox", "aria-label": "Mention", hidden: true });
    this.input = h("textarea.input", {
      rows: 1, placeholder: "Message", "aria-label": "Message",
      "aria-autocomplete": "list", "aria-controls": "mention-menu", "aria-expanded": "false",
      oninput: () => this.onInput(),
      onclick: () => this.updateMention(),
      onkeyup: (e) => ["ArrowLeft", "ArrowRight", "Home", "End"].includes(e.key) && this.updateMention(),
      onblur: () => this.closeMention(),
      onkeydown: (e) => {
        if (this.mention && this.mentionKey(e)) return;
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
          e.preventDefault();
          this.submit();
        }
      },
    });
    this.routeBtn = h("button.route-button", {
      type: "button", title: "Route the next message to a model", "aria-haspopup": "dialog", "aria-expanded": "false",
      onclick: () => this.openRoutePicker(),
    }, route(), h("span.label", "Route"));
    this.sendBtn = h("button.send", { type: "submit" }, "Send");
    this.composer = h("form.composer", { onsubmit: (e) => { e.preventDefault(); this.submit(); } },
      this.routeChip, this.notice, this.hint,
      h("div.composer-box", this.mentionMenu, h("div.composer-row", this.routeBtn, this.input, this.sendBtn)));

    this.main = h("section.room", { hidden: true },
      this.header, this.warnings, h("div.scroll-wrap", this.scroller, this.pill), this.status, this.composer);
    this.placeholder = h("section.room-placeholder",
      h("div.placeholder-card",
        h("div.logo-big", "✳"),
        h("h2", "Pick a conversation"),
        h("p.muted", "Or start a new one: just you and the AI, a partner, or a whole group."),
        h("button.primary", { type: "button", onclick: () => this.actions.newConversation() }, "New conversation")));
    this.el = h("div.room-pane", this.main, this.placeholder);
  }

  // -- opening a room ----------------------------------------------------------------

  open(cid) {
    const prev = this.cid;
    if (prev !== null && prev !== cid) {
      this.store.setDraft(prev, this.input.value);
      this.stopTyping();
    }
    this.cid = cid;
    this.rows.clear();
    this.pendingRows.clear();
    this.list.replaceChildren();
    this.pendingList.replaceChildren();
    this.picker.close();
    document.body.dataset.view = cid ? "room" : "list";
    this.main.hidden = !cid;
    this.placeholder.hidden = !!cid;
    if (!cid) return;
    this.input.value = this.store.draft(cid);
    this.autosize();
    this.renderHeader();
    this.upsert(this.store.room(cid).order);
    this.renderPending();
    this.renderLive();
    this.renderRoute();
    this.renderHistory();
    this.renderNotice();
    this.renderWarnings();
    this.closeMention();
    this.renderHint();
    this.toBottom(true);
    if (matchMedia("(min-width: 721px)").matches) this.input.focus();
  }

  // -- messages --------------------------------------------------------------------------

  atBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 48;
  }

  upsert(ids) {
    const room = this.store.room(this.cid);
    const wasBottom = this.atBottom();
    const fromBottom = this.scroller.scrollHeight - this.scroller.scrollTop;
    let above = false;
    let appended = false;
    const ctx = { store: this.store, actions: this.actions, picker: this.picker };
    const fresh = [];
    for (const id of ids) {
      const msg = room.messages.get(id);
      if (!msg) continue;
      let li = this.rows.get(id);
      if (li) {
        fillRow(li, msg, ctx);
        groupRow(li);
        continue;
      }
      li = messageRow(msg, ctx);
      this.rows.set(id, li);
      fresh.push([msg.seq, li]);
    }
    if (fresh.length) {
      fresh.sort((a, b) => a[0] - b[0]);
      const lastRow = this.list.lastElementChild;
      const lastSeq = lastRow ? Number(lastRow.dataset.seq) : -Infinity;
      if (fresh[0][0] > lastSeq) {
        // The common case (live messages, first load): one append.
        const frag = document.createDocumentFragment();
        for (const [, li] of fresh) frag.append(li);
        this.list.append(frag);
        appended = true;
      } else {
        for (const [seq, li] of fresh) {
          const next = this.nextRow(seq);
          if (next) { this.list.insertBefore(li, next); above = true; } else { this.list.append(li); appended = true; }
        }
      }
      for (const [, li] of fresh) {
        groupRow(li);
        if (li.nextElementSibling) groupRow(li.nextElementSibling);
      }
    }
    this.empty.hidden = room.order.length > 0 || this.store.pending(this.cid).length > 0;
    if (!room.order.length) replace(this.empty, room.loaded ? "No messages yet. Say hello." : "Loading…");
    if (above && !wasBottom) this.scroller.scrollTop = this.scroller.scrollHeight - fromBottom;
    if (wasBottom) this.toBottom();
    else if (appended && fresh.length) this.pill.hidden = false;
    this.seen();
  }

  nextRow(seq) {
    // Rows are in seq order: binary search the first row with a larger seq.
    const rows = this.list.children;
    let lo = 0;
    let hi = rows.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (Number(rows[mid].dataset.seq) < seq) lo = mid + 1; else hi = mid;
    }
    return rows[lo] || null;
  }

  /** A streamed delta: append to the row's Text node; nothing else is re-rendered. */
  append(id, text) {
    const li = this.rows.get(id);
    if (!li) return;
    if (!li.streamText) {
      const msg = this.store.message(this.cid, id);
      if (msg) fillRow(li, msg, { store: this.store, actions: this.actions });
      return;
    }
    const wasBottom = this.atBottom();
    li.streamText.appendData(text);
    if (wasBottom) this.toBottom();
  }

  renderPending() {
    const items = this.store.pending(this.cid);
    const wasBottom = this.atBottom();
    const keep = new Set(items.map((i) => i.client_id));
    for (const [cid, li] of this.pendingRows) if (!keep.has(cid)) { li.remove(); this.pendingRows.delete(cid); }
    const ctx = { store: this.store, actions: this.actions, picker: this.picker };
    for (const item of items) {
      const msg = { client_id: item.client_id, role: "user", author: this.store.me, content: item.content, created_at: item.created_at, pending: true, error: item.error };
      let li = this.pendingRows.get(item.client_id);
      if (li) fillRow(li, msg, ctx);
      else {
        li = messageRow(msg, ctx);
        this.pendingRows.set(item.client_id, li);
        this.pendingList.append(li);
      }
    }
    this.empty.hidden = this.store.room(this.cid).order.length > 0 || items.length > 0;
    if (wasBottom) this.toBottom();
  }

  toBottom(now = false) {
    if (now) {
      this.scroller.scrollTop = this.scroller.scrollHeight;
      this.pill.hidden = true;
      return;
    }
    if (this.scrollQueued) return;
    this.scrollQueued = true;
    requestAnimationFrame(() => {
      this.scrollQueued = false;
      this.scroller.scrollTop = this.scroller.scrollHeight;
      this.pill.hidden = true;
      this.seen();
    });
  }

  onScroll() {
    if (this.atBottom()) {
      this.pill.hidden = true;
      this.seen();
    }
    const room = this.store.room(this.cid);
    if (this.scroller.scrollTop < 400 && room.hasMoreBefore && !room.loadingOlder) this.actions.loadOlder(this.cid);
  }

  seen() {
    if (this.cid && this.atBottom() && document.visibilityState === "visible") this.store.markSeen(this.cid);
  }

  renderHistory() {
    const room = this.store.room(this.cid);
    this.older.hidden = !room.hasMoreBefore && !room.loadingOlder;
    replace(this.older, room.loadingOlder ? "Loading earlier messages…" : room.hasMoreBefore ? "Scroll up for earlier messages" : "");
    this.empty.hidden = room.order.length > 0 || this.store.pending(this.cid).length > 0;
    if (!room.order.length) replace(this.empty, room.loaded ? "No messages yet. Say hello." : "Loading…");
  }

  // -- header ----------------------------------------------------------------------------

  renderHeader() {
    const { store } = this;
    const conv = store.conversations.get(this.cid);
    if (!conv) return;
    replace(this.title, conv.title);
    const others = conv.participants.length;
    replace(this.subtitle,
      h("span.mode", { dataset: { mode: conv.mode } }, conv.mode),
      " · ",
      h("span", `${others} ${others === 1 ? "person" : "people"}`));
    const eff = store.effectiveModel(this.cid);
    this.modelBtn.dataset.model = eff.id || "";
    this.modelBtn.dataset.tier = eff.tier;
    if (!conv.with_ai) {
      replace(this.modelBtn, h("span.chip.off", "AI off"));
    } else {
      const info = eff.id ? store.modelInfo(eff.id) : null;
      const down = info && !info.model.available;
      replace(this.modelBtn,
        h("span.chip.model-chip", { class: down ? "down" : undefined }, `AI • ${modelName(eff.id, store)}`),
        h("span.tier", TIER_LABEL[eff.tier]),
        h("span.caret-down", "▾"));
    }
    const speed = eff.id ? speedText(store.modelInfo(eff.id)?.model.stats) : null;
    this.modelBtn.title = `Next reply: ${eff.id || "unknown"} (${TIER_LABEL[eff.tier]})${speed ? `\n${speed}` : ""}`;
    this.renderLive();
  }

  openModelPicker() {
    const { store } = this;
    const conv = store.conversations.get(this.cid);
    if (!conv) return;
    const owner = store.isOwner(this.cid);
    const ownerName = displayName(conv.participants.find((p) => p.id === conv.owner_id));
    this.actions.refreshModels();
    this.picker.open({
      anchor: this.modelBtn, purpose: "default",
      title: "Room model",
      subtitle: conv.default_model_id ? `Set by the owner for everyone here` : `Using the server default (${modelName(store.models?.default_model_id, store)})`,
      selected: conv.default_model_id || store.models?.default_model_id,
      readonly: !owner,
      readonlyNote: `Only ${ownerName} (the owner) can change the room's model. Use Route to pick one for your next message.`,
      onPick: (id) => this.actions.updateConversation(this.cid, { default_model_id: id }),
      onClear: owner && conv.default_model_id ? () => this.actions.updateConversation(this.cid, { default_model_id: null }) : null,
      clearLabel: "Use server default",
    });
  }

  openRoutePicker() {
    this.actions.refreshModels();
    this.picker.open({
      anchor: this.routeBtn, purpose: "route",
      title: "Route the next message",
      subtitle: "This model answers your next message only.",
      selected: this.store.route,
      onPick: (id) => this.store.setRoute(id),
      onClear: this.store.route || this.store.compare ? () => this.store.setRoute(null) : null,
      clearLabel: "Back to room model",
      // Compare: 2-3 models answer the next message side by side.
      compare: this.store.compare || [],
      onCompare: (ids) => this.store.setCompare(ids),
    });
  }

  renderRoute() {
    const r = this.store.route;
    const many = this.store.compare;
    this.routeChip.hidden = !r && !many;
    this.routeBtn.classList.toggle("active", !!(r || many));
    this.routeBtn.dataset.model = r || "";
    this.routeChip.dataset.compare = many ? many.join(",") : "";
    if (many) {
      const names = many.flatMap((id, i) => [i ? h("span.muted", " vs ") : null, h("strong", { dataset: { model: id } }, modelName(id, this.store))]);
      replace(this.routeChip, h("span", "Next message → "), ...names.filter(Boolean),
        h("span.muted", " (side by side, this message only)"),
        h("button.chip-x", { type: "button", "aria-label": "Clear compare", onclick: () => this.store.setRoute(null) }, "×"));
    } else if (r) {
      replace(this.routeChip, h("span", "Next message → "), h("strong", { dataset: { model: r } }, modelName(r, this.store)),
        h("span.muted", " (this message only)"),
        h("button.chip-x", { type: "button", "aria-label": "Clear route", onclick: () => this.store.setRoute(null) }, "×"));
    }
  }

  // -- live status -----------------------------------------------------------------------

  renderLive() {
    if (!this.cid) return;
    this.renderTyping();
    this.renderSend();
    this.renderHeaderLine();
  }

  renderHeaderLine() {
    const conv = this.store.conversations.get(this.cid);
    if (!conv) return;
    const room = this.store.room(this.cid);
    const here = [...room.present.values()];
    const cur = this.subtitle.querySelector(".present");
    const next = here.length ? h("span.present", { title: here.map(displayName).join(", ") },
      h("span.dot.online"), `${here.length} here`, h("span.faces", here.slice(0, 4).map((u) => avatar(u, true)))) : null;
    if (cur) {
      if (next) cur.replaceWith(next); else { cur.previousSibling?.remove(); cur.remove(); }
    } else if (next) this.subtitle.append(" · ", next);
  }

  renderTyping() {
    const typers = this.store.typers(this.cid);
    const replies = this.store.liveReplies(this.cid);
    const parts = [];
    if (replies.length) {
      parts.push(h("span.ai-replying", h("span.dots", h("i"), h("i"), h("i")),
        `AI is replying with ${modelName(replies[0].model, this.store)}…`));
    }
    if (typers.length) {
      const names = typers.map(displayName);
      const text = names.length === 1 ? `${names[0]} is typing…` : names.length === 2 ? `${names[0]} and ${names[1]} are typing…` : `${names.length} people are typing…`;
      parts.push(h("span.typing", text));
    }
    this.status.hidden = !parts.length;
    replace(this.status, parts);
  }

  /** Send becomes Stop while a reply streams, for its requester and the owner. */
  stoppable() {
    const s = this.store;
    return s.liveReplies(this.cid).filter((r) => {
      if (s.isOwner(this.cid) || s.mine?.has(r.replyId)) return true;
      const trigger = r.replyTo && s.message(this.cid, r.replyTo);
      return trigger?.author?.id === s.me?.id;
    });
  }

  renderSend() {
    const stop = this.input.value.trim() === "" && this.stoppable().length > 0;
    this.sendBtn.classList.toggle("stop", stop);
    this.sendBtn.textContent = stop ? "Stop" : "Send";
    this.sendBtn.setAttribute("aria-label", stop ? "Stop the reply" : "Send");
  }

  /** budget.warning notices for this room (its own budget's, and the user's), each dismissible. */
  renderWarnings() {
    const list = this.store.warningsFor(this.cid);
    this.warnings.hidden = !list.length;
    replace(this.warnings, list.map((w) => h("div.budget-warning", { dataset: { key: w.key, scope: w.budget?.scope } },
      h("span.glyph", { "aria-hidden": "true" }, "⚠"),
      h("span.text",
        h("strong", w.budget?.scope === "user" ? "Your AI budget: " : "This conversation's AI budget: "),
        w.message, w.budget?.resets_at ? ` · resets ${when(w.budget.resets_at)}` : ""),
      h("button.link.view-usage", { type: "button", onclick: () => this.actions.openUsage("conversation") }, "View usage"),
      h("button.chip-x.dismiss", { type: "button", "aria-label": "Dismiss budget warning", onclick: () => this.actions.dismissWarning(w.key) }, "×"))));
  }

  renderNotice() {
    const text = this.store.notices.get("composer");
    this.notice.hidden = !text;
    this.notice.textContent = text || "";
  }

  // -- composing -------------------------------------------------------------------------

  onInput() {
    this.autosize();
    this.store.setDraft(this.cid, this.input.value);
    this.renderSend();
    this.updateMention();
    this.renderHint();
    if (this.store.notices.has("composer")) this.store.setNotice("composer", null);
    const now = Date.now();
    if (this.input.value.trim()) {
      if (now - this.lastTyping > TYPING_EVERY_MS) {
        this.lastTyping = now;
        this.actions.typing(this.cid, true);
      }
    } else this.stopTyping();
  }

  stopTyping() {
    if (this.lastTyping && this.cid) this.actions.typing(this.cid, false);
    this.lastTyping = 0;
  }

  autosize() {
    this.input.style.height = "auto";
    this.input.style.height = Math.min(200, this.input.scrollHeight) + "px";
  }

  submit() {
    if (this.sendBtn.classList.contains("stop")) {
      for (const r of this.stoppable()) this.actions.cancel(r.replyId);
      return;
    }
    const text = this.input.value;
    if (!text.trim()) return;
    this.stopTyping();
    this.actions.send(this.cid, text, this.store.route, this.store.compare);
    this.input.value = "";
    this.store.setDraft(this.cid, "");
    this.store.setRoute(null);
    this.autosize();
    this.renderSend();
    this.closeMention();
    this.renderHint();
    this.toBottom(true);
  }

  // -- @mentions -------------------------------------------------------------------------

  /** What `@` offers here: @ai (the room's model), then every alias from GET /ai/models. */
  mentionOptions() {
    const { store } = this;
    const eff = store.effectiveModel(this.cid);
    const aliases = Object.entries(store.models?.aliases || {}).sort(([a], [b]) => a.localeCompare(b));
    return [
      { name: "ai", model: eff.id, detail: `the AI · ${modelName(eff.id, store)}` },
      ...aliases.filter(([name]) => name !== "ai").map(([name, id]) => ({ name, model: id, detail: modelName(id, store) })),
    ];
  }

  /** Open, filter or close the menu from the text before the caret. */
  updateMention() {
    const el = this.input;
    const conv = this.store.conversations.get(this.cid);
    const pos = el.selectionStart;
    const m = conv?.with_ai && pos === el.selectionEnd ? el.value.slice(0, pos).match(MENTION_AT_CARET) : null;
    if (!m) { this.closeMention(); return; }
    const q = m[1].toLowerCase();
    const options = this.mentionOptions().filter((o) => o.name.startsWith(q));
    if (!options.length) { this.closeMention(); return; }
    const prev = this.mention?.options[this.mention.index]?.name;
    const index = Math.max(0, options.findIndex((o) => o.name === prev));
    this.mention = { start: pos - m[1].length - 1, end: pos, options, index };
    this.renderMention();
  }

  renderMention() {
    const mm = this.mention;
    this.mentionMenu.hidden = !mm;
    this.input.setAttribute("aria-expanded", String(!!mm));
    if (!mm) { this.input.removeAttribute("aria-activedescendant"); replace(this.mentionMenu); return; }
    replace(this.mentionMenu, mm.options.map((o, i) => h("li.mention-option", {
      id: `mention-${o.name}`, role: "option", "aria-selected": String(i === mm.index),
      dataset: { name: o.name, model: o.model || "" }, title: o.model || "",
      onmousedown: (e) => { e.preventDefault(); mm.index = i; this.completeMention(); },
    }, h("strong", `@${o.name}`), h("span.muted", o.detail))));
    this.input.setAttribute("aria-activedescendant", `mention-${mm.options[mm.index].name}`);
    this.mentionMenu.children[mm.index]?.scrollIntoView({ block: "nearest" });
  }

  /** Keys while the menu is open; true when the key was the menu's. */
  mentionKey(e) {
    const mm = this.mention;
    const n = mm.options.length;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      mm.index = (mm.index + (e.key === "ArrowDown" ? 1 : n - 1)) % n;
      this.renderMention();
    } else if ((e.key === "Enter" && !e.shiftKey && !e.isComposing) || (e.key === "Tab" && !e.shiftKey)) {
      this.completeMention();
    } else if (e.key === "Escape") {
      this.closeMention();
      e.stopPropagation(); // Esc closes the menu only, not the settings panel or the picker
    } else return false;
    e.preventDefault();
    return true;
  }

  /** Replace the partial "@cl" with "@claude " and put the caret after it. */
  completeMention() {
    const mm = this.mention;
    if (!mm) return;
    const el = this.input;
    const space = /^\s/.test(el.value.slice(mm.end)) ? "" : " ";
    el.setRangeText(`@${mm.options[mm.index].name}${space}`, mm.start, mm.end, "end");
    if (!space) el.setSelectionRange(el.selectionStart + 1, el.selectionStart + 1);
    this.closeMention();
    this.onInput();
  }

  closeMention() {
    if (!this.mention && this.mentionMenu.hidden) return;
    this.mention = null;
    this.renderMention();
  }

  /** In a room whose AI answers only mentions: a quiet line saying so, and who a mention in
   * the draft will ask. A routed message is sent with `ai: true`, so it is answered too. */
  renderHint() {
    const { store } = this;
    const conv = store.conversations.get(this.cid);
    const show = !!conv?.with_ai && conv.ai_answers === "mentions";
    this.hint.hidden = !show;
    if (!show) { replace(this.hint); return; }
    const to = mentionsIn(this.input.value, store.models?.aliases || {});
    let state = "none";
    let text = ["The AI answers only when mentioned: ", h("strong", "mention @ai to ask the AI"), "."];
    if (store.compare) {
      state = "route";
      text = [h("strong", store.compare.map((id) => modelName(id, store)).join(" and ")), " will answer this message side by side."];
    } else if (store.route) {
      state = "route";
      text = [h("strong", modelName(store.route, store)), " will answer this message (routed)."];
    } else if (to.alias) {
      state = "alias";
      text = [h("strong", `@${to.alias}`), ` asks ${modelName(to.model, store)}.`];
    } else if (to.addressed) {
      state = "ai";
      text = [h("strong", "@ai"), ` asks the AI (${modelName(store.effectiveModel(this.cid).id, store)}).`];
    }
    this.hint.dataset.state = state;
    replace(this.hint, text);
  }
}

function gear() {
  return h("span.glyph", { "aria-hidden": "true" }, "⚙");
}

/** Three bars, drawn as SVG (no icon font). */
function barsIcon() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 20 20");
  svg.setAttribute("width", "18");
  svg.setAttribute("height", "18");
  svg.setAttribute("aria-hidden", "true");
  for (const [x, y] of [[3, 10], [8.5, 4], [14, 7]]) {
    const r = document.createElementNS(ns, "rect");
    for (const [k, v] of Object.entries({ x, y, width: 3.5, height: 17 - y, rx: 1, fill: "currentColor" })) r.setAttribute(k, String(v));
    svg.append(r);
  }
  return svg;
}

function route() {
  return h("span.glyph", { "aria-hidden": "true" }, "⇄");
}
