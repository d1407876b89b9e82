// REST calls. The one place an error body ({"error": {"code", "message"}}) becomes a message.

export class ApiError extends Error {
  constructor(status, code, message, details, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfter = retryAfter;
  }
}

/** What a person should read for an error: clear, short, never a stack. */
export function describe(err) {
  if (!(err instanceof ApiError)) return "Can't reach the server. Check your connection and try again.";
  switch (err.code) {
    case "rate_limited": {
      const s = Math.max(1, Math.ceil(err.retryAfter || 1));
      return `Too many attempts. Try again in ${s} second${s === 1 ? "" : "s"}.`;
    }
    case "unauthorized":
      return /password/i.test(err.message) ? "Wrong username or password." : "Your session has ended. Sign in again.";
    case "conflict":
      return /taken|exists/i.test(err.message) ? "That username is taken. Pick another one." : err.message;
    case "forbidden":
      return `Not allowed: ${err.message}.`;
    case "unknown_model":
      return `Unknown model ${err.details?.model ?? ""}: it isn't offered by this server.`.replace("  ", " ");
    case "unavailable":
      return "The server is busy or a dependency is down. Try again shortly.";
    default:
      return err.message || `Request failed (${err.status}).`;
  }
}

export class Api {
  constructor(base = "") {
    this.base = base;
    this.token = null;
    this.onUnauthorized = () => {};
  }

  async call(method, path, body) {
    const headers = { Accept: "application/json" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(this.base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new ApiError(0, "network", "network error");
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: described by status */ }
    if (res.ok) return data;
    const e = data?.error || {};
    const retry = e.retry_after ?? data?.retry_after ?? Number(res.headers.get("Retry-After") || 0);
    const err = new ApiError(res.status, e.code || "http_" + res.status, e.message || res.statusText, e.details, retry);
    if (res.status === 401 && this.token && !path.startsWith("/auth/")) this.onUnauthorized(err);
    throw err;
  }

  register(username, password, display_name) {
    const body = { username, password };
    if (display_name) body.display_name = display_name;
    return this.call("POST", "/auth/register", body);
  }
  signIn(username, password) { return this.call("POST", "/auth/token", { username, password }); }
  logout() { return this.call("POST", "/auth/logout"); }
  me() { return this.call("GET", "/me"); }

  conversations() { return this.call("GET", "/conversations"); }
  conversation(id) { return this.call("GET", `/conversations/${id}`); }
  createConversation(body) { return this.call("POST", "/conversations", body); }
  updateConversation(id, changes) { return this.call("PUT", `/conversations/${id}`, changes); }
  addParticipants(id, usernames) { return this.call("POST", `/conversations/${id}/participants`, { usernames }); }
  removeParticipant(id, userId) { return this.call("DELETE", `/conversations/${id}/participants/${userId}`); }

  /** One page of history: {messages, has_more}. Pass {after} or {before} (seq values). */
  messages(id, { after, before, limit = 50 } = {}) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (after !== undefined) q.set("after", String(after));
    if (before !== undefined) q.set("before", String(before));
    return this.call("GET", `/conversations/${id}/messages?${q}`);
  }

  /** Answer a message again (or, given an AI reply, the message it answered) as a new reply. */
  regenerate(cid, messageId, model) {
    return this.call("POST", `/conversations/${cid}/messages/${messageId}/regenerate`, model ? { model } : {});
  }
  templates() { return this.call("GET", "/templates"); }

  models() { return this.call("GET", "/ai/models"); }
  aiStats() { return this.call("GET", "/ai/stats"); }

  /** Usage of one conversation's replies: {total, by_model, by_day, by_day_model}. from/to: YYYY-MM-DD (UTC), `to` exclusive. */
  conversationUsage(id, { from, to } = {}) {
    return this.call("GET", `/conversations/${id}/usage?${range(from, to)}`);
  }
  /** The caller's usage; an admin may pass {all: true} or {userId}. */
  usage({ from, to, all = false, userId } = {}) {
    const q = range(from, to);
    if (all) q.set("all", "true");
    if (userId !== undefined) q.set("user_id", String(userId));
    return this.call("GET", `/usage?${q}`);
  }

  budget() { return this.call("GET", "/budget"); }
  conversationBudget(id) { return this.call("GET", `/conversations/${id}/budget`); }
  setConversationBudget(id, body) { return this.call("PUT", `/conversations/${id}/budget`, body); }
  deleteConversationBudget(id) { return this.call("DELETE", `/conversations/${id}/budget`); }
}

function range(from, to) {
  const q = new URLSearchParams();
  if (from) q.set("from", from);
  if (to) q.set("to", to);
  return q;
}
