// One WebSocket for the whole app: auth, backoff, resubscribe with `after`, the
// `streaming` snapshot, REST paging when `recovered` is false, and the outbox of
// unacknowledged sends (resent with the same client_id until acknowledged).

import { describe, ApiError } from "./api.js";

const PING_EVERY_MS = 25000;
const PONG_WITHIN_MS = 10000;
const RESEND_AFTER_MS = 8000;

export class Socket {
  constructor(store, api, url) {
    this.store = store;
    this.api = api;
    this.url = url;
    this.ws = null;
    this.attempt = 0;
    this.stopped = true;
    this.timer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.refs = 0;
    this.pendingRefs = new Map(); // ref -> {kind, ...}
    this.sentAt = new Map(); // client_id -> time of the last send on this socket
    this.subscribedAfter = new Map(); // cid -> `after` sent with the last subscribe
    this.onUnauthorized = () => {};
    this.resendTimer = setInterval(() => this.resendStale(), 2000);
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.teardown();
    if (this.ws) this.ws.close(1000, "bye");
    this.ws = null;
    this.store.setConn("offline");
  }

  /** Drop the connection as a network failure would (tests and "reconnect now"). */
  drop() {
    if (this.ws) this.ws.close(4000, "dropped by the client");
  }

  get open() {
    return this.ws && this.ws.readyState === WebSocket.OPEN && this.ready;
  }

  connect() {
    clearTimeout(this.timer);
    if (this.stopped || !this.store.token) return;
    this.store.setConn(this.attempt ? "reconnecting" : "connecting", "connecting…");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    this.ready = false;
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: this.store.token }));
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      let frame;
      try { frame = JSON.parse(ev.data); } catch { return; }
      this.handle(frame);
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.teardown();
      this.ws = null;
      if (ev.code === 4401) {
        this.store.setConn("offline", "signed out");
        this.onUnauthorized();
        return;
      }
      if (!this.stopped) this.retry();
    };
  }

  retry() {
    const base = Math.min(15000, 500 * 2 ** this.attempt);
    const wait = Math.round(base * (0.75 + Math.random() * 0.5));
    this.attempt++;
    const until = Date.now() + wait;
    const tick = () => {
      const left = Math.ceil((until - Date.now()) / 1000);
      this.store.setConn("reconnecting", left > 0 ? `reconnecting in ${left}s` : "reconnecting…");
    };
    tick();
    const countdown = setInterval(tick, 1000);
    this.timer = setTimeout(() => { clearInterval(countdown); this.connect(); }, wait);
    this.countdown = countdown;
  }

  /** Reconnect now (the network came back, or the person asked). */
  now() {
    if (this.stopped) return;
    if (this.ws) return;
    clearInterval(this.countdown);
    this.connect();
  }

  teardown() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
    clearInterval(this.countdown);
    this.pendingRefs.clear();
    this.sentAt.clear();
    this.subscribedAfter.clear();
    this.ready = false;
    for (const room of this.store.rooms.values()) room.synced = false;
  }

  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  ref(info) {
    const ref = ++this.refs;
    this.pendingRefs.set(ref, info);
    return ref;
  }

  // -- what the app asks for ---------------------------------------------------------

  subscribe(cid) {
    if (!this.open) return;
    const room = this.store.rooms.get(cid);
    const conv = this.store.conversations.get(cid);
    const after = Math.max(room?.lastSeq || 0, conv?.last_seq || 0);
    this.subscribedAfter.set(cid, after);
    this.send({ type: "subscribe", conversation_id: cid, after, ref: this.ref({ kind: "subscribe", cid, after }) });
  }

  unsubscribe(cid) {
    this.send({ type: "unsubscribe", conversation_id: cid });
  }

  /** Send an outbox item; it stays queued until its ack. */
  sendMessage(item) {
    if (!this.open || item.error) return;
    const frame = { type: "message.send", conversation_id: item.cid, content: item.content, client_id: item.client_id };
    if (item.models) frame.models = item.models; else if (item.model) frame.model = item.model;
    if (item.ai === true || item.ai === false) frame.ai = item.ai;
    frame.ref = this.ref({ kind: "send", client_id: item.client_id });
    if (this.send(frame)) this.sentAt.set(item.client_id, Date.now());
  }

  cancel(replyId) {
    return this.send({ type: "ai.cancel", reply_id: replyId, ref: this.ref({ kind: "cancel", replyId }) });
  }

  typing(cid, state) {
    if (this.open && this.store.rooms.get(cid)?.synced) this.send({ type: "typing", conversation_id: cid, state });
  }

  resendStale() {
    if (!this.open) return;
    const now = Date.now();
    for (const item of this.store.outbox.values()) {
      const at = this.sentAt.get(item.client_id);
      if (!item.error && (at === undefined || now - at > RESEND_AFTER_MS)) this.sendMessage(item);
    }
  }

  // -- frames ----------------------------------------------------------------------------

  handle(f) {
    const s = this.store;
    switch (f.type) {
      case "hello":
        this.attempt = 0;
        this.ready = true;
        s.setConn("online");
        this.pingTimer = setInterval(() => this.ping(), PING_EVERY_MS);
        for (const cid of s.conversations.keys()) this.subscribe(cid);
        for (const item of s.outbox.values()) this.sendMessage(item);
        break;
      case "subscribed":
        this.subscribed(f);
        break;
      case "message": {
        const m = f.message;
        const room = s.rooms.get(m.conversation_id);
        if (room?.synced && m.seq > room.lastSeq + 1) {
          // A gap: something was missed. Ask again from the last contiguous position.
          room.synced = false;
          this.subscribe(m.conversation_id);
          return;
        }
        s.putMessages(m.conversation_id, [m], { live: true });
        break;
      }
      case "message.ack":
        this.pendingRefs.delete(f.ref);
        this.sentAt.delete(f.client_id);
        s.putMessages(f.message.conversation_id, [f.message], { live: true });
        if (f.ai) s.mine = (s.mine || new Set()).add(f.ai.reply_id);
        for (const a of f.ais || []) s.mine = (s.mine || new Set()).add(a.reply_id);
        s.noteAis(f.ais || (f.ai ? [f.ai] : []));
        break;
      case "ai.start":
        s.aiStart(f);
        break;
      case "ai.delta":
        s.aiDelta(f);
        break;
      case "ai.done":
      case "ai.error":
        s.aiEnd(f);
        break;
      case "typing":
        if (f.user.id !== s.me?.id) s.typing(f.conversation_id, f.user, f.state);
        break;
      case "presence":
        s.presence(f.conversation_id, f.user, f.state);
        break;
      case "conversation.updated":
        this.updated(f.conversation);
        break;
      case "budget.warning":
        s.budgetWarning(f);
        break;
      case "pong":
        clearTimeout(this.pongTimer);
        break;
      case "error":
        this.error(f);
        break;
      default:
        break; // ack, unsubscribed: nothing to do
    }
  }

  async subscribed(f) {
    const s = this.store;
    const cid = f.conversation_id;
    const info = this.pendingRefs.get(f.ref);
    this.pendingRefs.delete(f.ref);
    const room = s.room(cid);
    room.synced = true;
    room.lastSeq = Math.max(room.lastSeq, f.last_seq);
    const conv = s.conversations.get(cid);
    if (conv && f.last_seq > (conv.last_seq || 0)) s.putConversation({ ...conv, last_seq: f.last_seq });
    s.setPresent(cid, f.present || []);
    const gone = s.applyStreaming(cid, f.streaming || []);
    try {
      // Replies that ended while we were away: their final row has an old seq, so no replay carries it.
      for (const id of gone) {
        const msg = s.message(cid, id);
        if (msg) s.putMessages(cid, (await this.api.messages(cid, { after: msg.seq - 1, limit: 1 })).messages);
      }
      if (!f.recovered && info && room.loaded) await this.page(cid, info.after);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
    }
  }

  /** More was missed than the server replays: read it over REST, oldest first. */
  async page(cid, after) {
    for (;;) {
      const body = await this.api.messages(cid, { after, limit: 500 });
      this.store.putMessages(cid, body.messages);
      if (!body.has_more || !body.messages.length) return;
      after = body.messages[body.messages.length - 1].seq;
    }
  }

  updated(conv) {
    const s = this.store;
    if (s.me && !conv.participants.some((p) => p.id === s.me.id)) {
      this.unsubscribe(conv.id);
      s.removeConversation(conv.id);
      return;
    }
    const known = s.conversations.has(conv.id);
    s.putConversation(conv);
    if (!known) this.subscribe(conv.id);
  }

  error(f) {
    const s = this.store;
    const info = this.pendingRefs.get(f.ref);
    this.pendingRefs.delete(f.ref);
    if (!info) {
      if (f.code === "rate_limited") s.setNotice("socket", "Slow down: too many actions at once.");
      return;
    }
    if (info.kind === "send") {
      this.sentAt.delete(info.client_id);
      if (f.code === "rate_limited" || f.code === "unavailable") {
        // Retried by resendStale with the same client_id; nothing is lost.
        this.sentAt.set(info.client_id, Date.now() - RESEND_AFTER_MS + 1000 * Math.max(1, f.retry_after || 1));
        return;
      }
      s.failSend(info.client_id, describe(new ApiError(0, f.code, f.message, f.details, f.retry_after)));
    } else if (info.kind === "subscribe" && (f.code === "not_found" || f.code === "forbidden")) {
      s.removeConversation(info.cid);
    } else if (info.kind === "cancel") {
      s.setNotice("composer", describe(new ApiError(0, f.code, f.message)));
    }
  }

  ping() {
    if (!this.send({ type: "ping", ref: "keepalive" })) return;
    clearTimeout(this.pongTimer);
    this.pongTimer = setTimeout(() => this.drop(), PONG_WITHIN_MS);
  }
}
