// The state, and the only place that changes it. Views subscribe to topics and render;
// the socket and the actions call the mutators below. Messages are keyed by `id`
// everywhere (optimistic ones by `client_id` until acknowledged), so a replayed or
// resent frame updates a message instead of duplicating it.

const TYPING_TTL_MS = 6000;

export class Store {
  constructor(storage = window.localStorage) {
    this.storage = storage;
    this.listeners = new Map();
    this.token = storage.getItem("chat.token");
    this.me = null;
    this.conn = { state: "offline", detail: "" };
    this.conversations = new Map(); // id -> conversation (+ `activity`)
    this.rooms = new Map(); // id -> Room
    this.replies = new Map(); // reply_id -> live reply
    this.routeReasons = new Map(); // reply_id -> why `auto` chose its model (ai.start, the ack's ai/ais)
    this.activeId = null;
    this.models = null; // GET /ai/models body
    this.route = null; // model id for the next message only
    this.compare = null; // or 2-3 model ids answering the next message side by side
    this.notices = new Map(); // key -> inline error text ("settings", "auth", "create", "members:<cid>")
    this.seen = {};
    this.outbox = new Map(); // client_id -> {cid, content, model, tries}
    this.bumps = 0; // live activity moves a conversation to the top
    this.bumped = new Map(); // cid -> highest seq that bumped it
    this.usage = null; // the open usage view: {req, scope, cid, days, loading, error, data, perDay, stats}
    this.budgets = new Map(); // "user" | "conv:<cid>" -> budget object or null (none set)
    this.warnings = new Map(); // key -> budget.warning frame, until dismissed
  }

  // -- subscriptions --------------------------------------------------------------

  on(topic, fn) {
    if (!this.listeners.has(topic)) this.listeners.set(topic, new Set());
    this.listeners.get(topic).add(fn);
    return () => this.listeners.get(topic).delete(fn);
  }

  emit(topic, detail) {
    for (const fn of this.listeners.get(topic) || []) fn(detail);
  }

  // -- session --------------------------------------------------------------------

  setSession(token, me) {
    this.token = token;
    this.me = me;
    this.storage.setItem("chat.token", token);
    try { this.seen = JSON.parse(this.storage.getItem(this.key("seen")) || "{}"); } catch { this.seen = {}; }
    try {
      const saved = JSON.parse(this.storage.getItem(this.key("outbox")) || "[]");
      this.outbox = new Map(saved.map((o) => [o.client_id, o]));
    } catch { this.outbox = new Map(); }
    this.emit("session");
  }

  clearSession() {
    this.storage.removeItem("chat.token");
    this.token = null;
    this.me = null;
    this.conversations.clear();
    this.rooms.clear();
    this.replies.clear();
    this.outbox = new Map();
    this.activeId = null;
    this.route = null;
    this.compare = null;
    this.emit("session");
  }

  key(name) {
    return `chat.${name}.${this.me?.id ?? "anon"}`;
  }

  setConn(state, detail = "") {
    this.conn = { state, detail };
    this.emit("conn");
  }

  setNotice(key, text) {
    if (text) this.notices.set(key, text); else this.notices.delete(key);
    this.emit("notice", key);
  }

  // -- conversations ----------------------------------------------------------------

  setConversations(list) {
    const keep = new Set(list.map((c) => c.id));
    for (const id of [...this.conversations.keys()]) if (!keep.has(id)) this.conversations.delete(id);
    // The server lists by activity, most recent first: that order is the base; live messages bump.
    list.forEach((c, i) => {
      this.putConversation(c, false);
      this.conversations.get(c.id).rank = -i;
    });
    if (this.activeId !== null && !keep.has(this.activeId)) this.activeId = null;
    this.emit("list");
    this.emit("active");
  }

  putConversation(conv, notify = true) {
    const old = this.conversations.get(conv.id);
    const merged = { ...old, ...conv };
    merged.last_seq = Math.max(old?.last_seq ?? 0, conv.last_seq ?? 0);
    merged.activity = maxTime(old?.activity, conv.updated_at, conv.created_at);
    if (!old) merged.rank = ++this.bumps;
    this.conversations.set(conv.id, merged);
    const room = this.room(conv.id);
    room.lastSeq = Math.max(room.lastSeq, 0);
    if (notify) {
      this.emit("list");
      this.emit("conv", conv.id);
    }
  }

  removeConversation(cid) {
    this.conversations.delete(cid);
    this.rooms.delete(cid);
    if (this.activeId === cid) {
      this.activeId = null;
      this.emit("active");
    }
    this.emit("list");
  }

  /** Conversations, most recent activity first. */
  ordered() {
    return [...this.conversations.values()].sort((a, b) => (b.rank ?? 0) - (a.rank ?? 0) || b.id - a.id);
  }

  unread(cid) {
    const c = this.conversations.get(cid);
    if (!c) return 0;
    return Math.max(0, (c.last_seq || 0) - (this.seen[cid] || 0));
  }

  markSeen(cid) {
    const c = this.conversations.get(cid);
    if (!c || (this.seen[cid] || 0) >= c.last_seq) return;
    this.seen[cid] = c.last_seq;
    this.storage.setItem(this.key("seen"), JSON.stringify(this.seen));
    this.emit("list");
  }

  setActive(cid) {
    if (this.activeId === cid) return;
    this.activeId = cid;
    this.route = null;
    this.compare = null;
    this.storage.setItem(this.key("active"), String(cid ?? ""));
    this.emit("active");
    this.emit("route");
  }

  savedActive() {
    const v = Number(this.storage.getItem(this.key("active")));
    return v || null;
  }

  isOwner(cid) {
    return !!this.me && this.conversations.get(cid)?.owner_id === this.me.id;
  }

  // -- rooms and messages -----------------------------------------------------------

  room(cid) {
    let r = this.rooms.get(cid);
    if (!r) {
      r = {
        id: cid, messages: new Map(), order: [], loaded: false, hasMoreBefore: false,
        lastSeq: 0, present: new Map(), typing: new Map(), synced: false,
      };
      this.rooms.set(cid, r);
    }
    return r;
  }

  /** Merge stored messages (from REST, replay or live frames); returns nothing. */
  putMessages(cid, messages, { live = false } = {}) {
    if (!messages.length) return;
    const room = this.room(cid);
    const conv = this.conversations.get(cid);
    const changed = [];
    for (const m of messages) {
      if (m.client_id && m.author && this.me && m.author.id === this.me.id) this.settle(m.client_id);
      const old = room.messages.get(m.id);
      const merged = old ? { ...old, ...m } : { ...m };
      if (m.status === "streaming") {
        // A stored row says "" while the reply streams: keep the text we have appended. Its
        // tier is the first model's until the reply ends: a fallback is known from ai.start.
        const reply = this.replyFor(m.id);
        if (reply) {
          merged.content = reply.text;
          if (reply.tier) merged.tier = reply.tier;
          if (reply.fallbackFrom) merged.fallback_from = reply.fallbackFrom;
        } else if (old && old.content.length > m.content.length) merged.content = old.content;
      }
      if (m.status !== "streaming" && old?.status === "streaming") {
        for (const [rid, r] of this.replies) if (r.messageId === m.id) this.endReply(rid);
      }
      room.messages.set(m.id, merged);
      if (!old) insertSorted(room.order, room.messages, m.id);
      room.lastSeq = Math.max(room.lastSeq, m.seq);
      if (conv) {
        conv.last_seq = Math.max(conv.last_seq || 0, m.seq);
        if (live && m.seq > (this.bumped.get(cid) || 0)) {
          this.bumped.set(cid, m.seq);
          conv.rank = ++this.bumps;
          conv.activity = maxTime(conv.activity, m.created_at);
        }
      }
      changed.push(m.id);
    }
    this.emit("messages", { cid, ids: changed });
    this.emit("list");
  }

  setHistory(cid, { hasMoreBefore, loaded }) {
    const room = this.room(cid);
    if (hasMoreBefore !== undefined) room.hasMoreBefore = hasMoreBefore;
    if (loaded !== undefined) room.loaded = loaded;
    this.emit("history", cid);
  }

  message(cid, id) {
    return this.rooms.get(cid)?.messages.get(id);
  }

  // -- optimistic sends ---------------------------------------------------------------

  queueSend(cid, content, model, models) {
    const client_id = `web-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
    models = models && models.length >= 2 ? [...models] : null;
    // A message routed to a model (or to models side by side) asks the AI, even where the AI answers only mentions.
    const item = {
      client_id, cid, content, model: models ? null : model || null, models,
      ai: model || models ? true : null, created_at: new Date().toISOString(), error: null,
    };
    this.outbox.set(client_id, item);
    this.saveOutbox();
    this.emit("outbox", cid);
    return item;
  }

  pending(cid) {
    return [...this.outbox.values()].filter((o) => o.cid === cid);
  }

  /** The server stored it: the optimistic copy goes; the stored one takes its place. */
  settle(client_id) {
    const item = this.outbox.get(client_id);
    if (!item) return;
    this.outbox.delete(client_id);
    this.saveOutbox();
    this.emit("outbox", item.cid);
  }

  failSend(client_id, text) {
    const item = this.outbox.get(client_id);
    if (!item) return;
    item.error = text;
    this.saveOutbox();
    this.emit("outbox", item.cid);
  }

  retrySend(client_id) {
    const item = this.outbox.get(client_id);
    if (item) item.error = null;
    this.saveOutbox();
    if (item) this.emit("outbox", item.cid);
    return item;
  }

  discardSend(client_id) {
    this.settle(client_id);
  }

  saveOutbox() {
    this.storage.setItem(this.key("outbox"), JSON.stringify([...this.outbox.values()]));
  }

  // -- AI replies -------------------------------------------------------------------

  replyFor(messageId) {
    for (const r of this.replies.values()) if (r.messageId === messageId) return r;
    return null;
  }

  liveReplies(cid) {
    return [...this.replies.values()].filter((r) => r.cid === cid);
  }

  aiStart(f) {
    let r = this.replies.get(f.reply_id);
    if (!r) {
      r = { replyId: f.reply_id, cid: f.conversation_id, messageId: f.message_id, text: "", next: 0, indexed: true };
      this.replies.set(f.reply_id, r);
    }
    Object.assign(r, { model: f.model, tier: f.tier, replyTo: f.reply_to });
    if (f.fallback_from) r.fallbackFrom = f.fallback_from;
    // The model id `auto` chose this model: the frame (or the ack before it) says why.
    const reason = f.route_reason ?? this.routeReasons.get(f.reply_id);
    if (reason != null) this.routeReasons.set(f.reply_id, reason);
    this.decorate(f.conversation_id, f.message_id, {
      model_used: f.model, tier: f.tier, fallback_from: r.fallbackFrom || null, reply_id: f.reply_id, reply_to: f.reply_to,
      ...(reason != null ? { route_reason: reason } : {}),
    });
    this.emit("live", f.conversation_id);
  }

  /** Append streamed text; a delta the reply already holds (by index) is dropped. */
  aiDelta(f) {
    const r = this.replies.get(f.reply_id);
    if (!r) return;
    if (r.indexed && f.index < r.next) return;
    r.indexed = true;
    r.next = f.index + 1;
    r.text += f.text;
    r.model = f.model;
    const msg = this.message(r.cid, r.messageId);
    if (msg) msg.content = r.text;
    this.emit("delta", { cid: r.cid, id: r.messageId, text: f.text });
  }

  /** ai.done / ai.error: the stored message is final. */
  aiEnd(f) {
    const msg = f.type === "ai.done" ? f.message : f.message_obj;
    const r = this.replies.get(f.reply_id);
    const cid = f.conversation_id;
    if (msg) {
      // The stored message says how it came to be (tier, fallback_from, cancelled_by); what the
      // live frames said is only a stand-in for a server that does not send those fields.
      const extra = {
        tier: msg.tier ?? r?.tier ?? null,
        fallback_from: "fallback_from" in msg ? msg.fallback_from : r?.fallbackFrom || null,
        reply_id: f.reply_id,
      };
      const reason = msg.route_reason ?? this.routeReasons.get(f.reply_id);
      if (reason != null) extra.route_reason = reason;
      if (f.type === "ai.error") extra.error = { code: f.code, message: f.message };
      const prev = this.message(cid, msg.id);
      if (r?.cancelledByMe) extra.cancelled_by_me = true;
      this.room(cid).messages.set(msg.id, { ...prev, ...msg, ...extra });
      this.endReply(f.reply_id);
      this.putMessages(cid, [{ ...this.room(cid).messages.get(msg.id) }], { live: true });
    } else {
      this.endReply(f.reply_id);
    }
    this.emit("live", cid);
    this.emit("ended", cid);
  }

  endReply(replyId) {
    const r = this.replies.get(replyId);
    if (!r) return;
    this.replies.delete(replyId);
    this.emit("live", r.cid);
  }

  markCancelling(replyId) {
    const r = this.replies.get(replyId);
    if (r) r.cancelledByMe = true;
    this.emit("live", r?.cid);
  }

  /** subscribed.streaming: replies in progress, with the text so far; later deltas append. */
  applyStreaming(cid, entries) {
    const live = new Set();
    for (const s of entries) {
      live.add(s.reply_id);
      const r = this.replies.get(s.reply_id) || { replyId: s.reply_id, cid };
      Object.assign(r, {
        cid, model: s.model, tier: s.tier ?? r.tier, messageId: s.message_id ?? r.messageId,
        text: s.text, indexed: false, next: 0,
      });
      this.replies.set(s.reply_id, r);
      if (r.messageId !== undefined) {
        this.decorate(cid, r.messageId, { content: s.text, status: "streaming", model_used: s.model, tier: r.tier, reply_id: s.reply_id });
      }
    }
    const gone = [];
    for (const [rid, r] of this.replies) {
      if (r.cid === cid && !live.has(rid)) {
        gone.push(r.messageId);
        this.replies.delete(rid);
      }
    }
    this.emit("live", cid);
    return gone; // replies that ended while we were away: re-read them
  }

  /** The ack's `ai` (and `ais`): remember why `auto` chose each reply's model. */
  noteAis(ais) {
    for (const a of ais) if (a?.reply_id != null && a.route_reason != null) this.routeReasons.set(a.reply_id, a.route_reason);
  }

  /** Client-side fields on a message (tier, fallback, live text); creates nothing. */
  decorate(cid, id, fields) {
    const room = this.room(cid);
    const msg = room.messages.get(id);
    if (!msg) return;
    Object.assign(msg, fields);
    this.emit("messages", { cid, ids: [id] });
  }

  // -- presence and typing ---------------------------------------------------------------

  setPresent(cid, users) {
    const room = this.room(cid);
    room.present = new Map(users.map((u) => [u.id, u]));
    this.emit("live", cid);
  }

  presence(cid, user, state) {
    const room = this.room(cid);
    if (state === "joined") room.present.set(user.id, user); else room.present.delete(user.id);
    this.emit("live", cid);
  }

  typing(cid, user, state) {
    const room = this.room(cid);
    if (state) room.typing.set(user.id, { user, until: Date.now() + TYPING_TTL_MS });
    else room.typing.delete(user.id);
    this.emit("live", cid);
  }

  typers(cid) {
    const room = this.rooms.get(cid);
    if (!room) return [];
    const now = Date.now();
    for (const [id, t] of room.typing) if (t.until <= now) room.typing.delete(id);
    return [...room.typing.values()].map((t) => t.user);
  }

  // -- models -----------------------------------------------------------------------------

  setModels(body) {
    this.models = body;
    this.emit("models");
  }

  modelInfo(id) {
    for (const p of this.models?.providers || []) {
      const m = p.models.find((x) => x.id === id);
      if (m) return { model: m, provider: p };
    }
    return null;
  }

  /** Which model answers the next message here, and which tier chose it. */
  effectiveModel(cid) {
    const conv = this.conversations.get(cid);
    if (this.route) return { id: this.route, tier: "message" };
    if (this.compare) return { id: this.compare[0], tier: "message" };
    if (conv?.default_model_id) return { id: conv.default_model_id, tier: "conversation" };
    return { id: this.models?.default_model_id ?? null, tier: "system" };
  }

  setTemplates(list) {
    this.templates = list;
    this.emit("templates");
  }

  setRoute(model) {
    this.route = model || null;
    this.compare = null;
    this.emit("route");
  }

  /** Side by side: 2-3 models answer the next message, each as its own reply. */
  setCompare(models) {
    this.compare = models && models.length >= 2 ? [...models] : null;
    this.route = null;
    this.emit("route");
  }

  // -- usage and budgets ------------------------------------------------------------------

  /** Open (or switch) the usage view: scope "conversation" (cid), "me" or "all" (admins). */
  openUsage(scope, cid, days) {
    const prev = this.usage;
    const same = prev && prev.scope === scope && prev.cid === (scope === "conversation" ? cid : null);
    this.usage = {
      req: (prev?.req || 0) + 1, scope, cid: scope === "conversation" ? cid : null, days,
      loading: true, error: null,
      // Keep what is shown while the same scope reloads; a different scope starts empty.
      data: same ? prev.data : null,
      perDay: same ? prev.perDay : null,
      from: same ? prev.from : null,
      to: same ? prev.to : null,
      stats: prev?.stats || null,
    };
    this.emit("usage");
    return this.usage.req;
  }

  /** A usage answer for request `req`; an answer for a scope no longer shown is dropped. */
  setUsage(req, fields) {
    if (!this.usage || this.usage.req !== req) return;
    Object.assign(this.usage, fields);
    this.emit("usage");
  }

  closeUsage() {
    if (!this.usage) return;
    this.usage = null;
    this.emit("usage");
  }

  setBudget(key, budget) {
    this.budgets.set(key, budget || null);
    this.emit("budget", key);
  }

  /** budget.warning: kept (once per budget and period) until dismissed; the budget is updated. */
  budgetWarning(f) {
    const b = f.budget || {};
    const key = `${b.scope}:${b.scope === "user" ? b.user_id : b.conversation_id}:${b.resets_at}`;
    if (b.scope === "user") this.setBudget("user", b);
    else if (b.scope === "conversation") this.setBudget(`conv:${b.conversation_id}`, b);
    this.warnings.set(key, { ...f, key });
    this.emit("warnings");
  }

  dismissWarning(key) {
    this.warnings.delete(key);
    this.emit("warnings");
  }

  /** Warnings that concern a conversation: its own budget's, and the user's (shown everywhere). */
  warningsFor(cid) {
    return [...this.warnings.values()].filter((w) => w.budget?.scope === "user" || w.conversation_id === cid);
  }

  // -- drafts -----------------------------------------------------------------------------

  draft(cid) {
    return this.storage.getItem(this.key(`draft.${cid}`)) || "";
  }

  setDraft(cid, text) {
    if (text) this.storage.setItem(this.key(`draft.${cid}`), text);
    else this.storage.removeItem(this.key(`draft.${cid}`));
  }
}

function insertSorted(order, messages, id) {
  const seq = messages.get(id).seq;
  let lo = 0;
  let hi = order.length;
  if (hi === 0 || messages.get(order[hi - 1]).seq < seq) { order.push(id); return; }
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (messages.get(order[mid]).seq < seq) lo = mid + 1; else hi = mid;
  }
  order.splice(lo, 0, id);
}

function maxTime(...values) {
  return values.filter(Boolean).sort().pop() || "";
}
