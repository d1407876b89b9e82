// Wiring: the store, the REST api, the socket and the views, plus the actions the views
// call. Views never talk to the network; these actions do, then hand results to the store.

import { Api, describe } from "./api.js";
import { Socket } from "./socket.js";
import { Store } from "./store.js";
import { AuthView } from "./views/auth.js";
import { ConnectionBanner } from "./views/connection.js";
import { h } from "./views/dom.js";
import { Picker } from "./views/picker.js";
import { RoomView } from "./views/room.js";
import { SettingsPanel } from "./views/settings.js";
import { Sidebar } from "./views/sidebar.js";
import { UsageView } from "./views/usage.js";

const LIST_REFRESH_MS = 15000;
const DAY_MS = 86400000;

const store = new Store();
const api = new Api("");
const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const socket = new Socket(store, api, wsUrl);
let modelsAt = 0;
let listTimer = null;

const actions = {
  async authenticate(mode, username, password, displayName) {
    store.setNotice("auth", null);
    try {
      const body = mode === "register" ? await api.register(username, password, displayName) : await api.signIn(username, password);
      api.token = body.token;
      store.setSession(body.token, body.user);
      await startSession();
    } catch (e) {
      store.setNotice("auth", describe(e));
    }
  },

  async logout() {
    socket.stop();
    clearInterval(listTimer);
    try { await api.logout(); } catch { /* the token is dropped here either way */ }
    api.token = null;
    store.clearSession();
    showAuth();
  },

  openConversation(cid) {
    store.closeUsage();
    store.setActive(cid);
    history.replaceState(null, "", cid ? `#/c/${cid}` : "#/");
    if (cid && !store.room(cid).loaded) loadLatest(cid);
  },

  newConversation() {
    sidebar.openCreate();
  },

  async createConversation(body) {
    store.setNotice("create", null);
    try {
      const conv = await api.createConversation(body);
      store.putConversation(conv);
      store.room(conv.id).loaded = true;
      socket.subscribe(conv.id);
      actions.openConversation(conv.id);
      return true;
    } catch (e) {
      store.setNotice("create", describe(e));
      return false;
    }
  },

  /** GET /templates for the new-conversation form (an empty list hides its control). */
  async loadTemplates() {
    try { store.setTemplates((await api.templates())?.templates || []); } catch { /* the last list stays */ }
  },

  async loadOlder(cid) {
    const room = store.room(cid);
    if (room.loadingOlder || !room.hasMoreBefore) return;
    const first = room.messages.get(room.order[0]);
    if (!first) return;
    room.loadingOlder = true;
    store.setHistory(cid, {});
    try {
      const body = await api.messages(cid, { before: first.seq, limit: 100 });
      store.putMessages(cid, body.messages);
      room.loadingOlder = false;
      store.setHistory(cid, { hasMoreBefore: body.has_more });
    } catch (e) {
      room.loadingOlder = false;
      store.setHistory(cid, {});
    }
  },

  send(cid, content, model, models) {
    const item = store.queueSend(cid, content, model, models);
    socket.sendMessage(item);
  },

  /** POST .../regenerate: the new reply arrives over the socket like any other; a refusal
   * (the AI is off, an unknown model) shows above the composer. */
  async regenerate(cid, messageId, model) {
    store.setNotice("composer", null);
    try {
      const body = await api.regenerate(cid, messageId, model);
      if (body?.ai) {
        store.mine = (store.mine || new Set()).add(body.ai.reply_id);
        store.noteAis([body.ai]);
      }
      return true;
    } catch (e) {
      store.setNotice("composer", describe(e));
      return false;
    }
  },

  retrySend(clientId) {
    const item = store.retrySend(clientId);
    if (item) socket.sendMessage(item);
  },

  discardSend(clientId) {
    store.discardSend(clientId);
  },

  cancel(replyId) {
    store.markCancelling(replyId);
    socket.cancel(replyId);
  },

  typing(cid, state) {
    socket.typing(cid, state);
  },

  /** PUT /conversations/{id}; a refusal (403, unknown_model, conflict) shows in the settings panel.
   * `where` names the panel's section whose notice shows the outcome: "settings" (the main form)
   * or "settings-ai" (AI answers and instructions). */
  async updateConversation(cid, changes, fromForm = false, where = "settings") {
    for (const key of ["settings", "settings-ok", "settings-ai", "settings-ai-ok"]) store.setNotice(key, null);
    try {
      const conv = await api.updateConversation(cid, changes);
      store.putConversation(conv);
      if (fromForm) store.setNotice(`${where}-ok`, "Saved.");
      return true;
    } catch (e) {
      if (settings.openFor !== cid) settings.open(cid);
      store.setNotice(where, describe(e));
      return false;
    }
  },

  /** The AI section of the settings panel: `ai_answers` and/or `instructions` (null clears them). */
  updateAiSettings(cid, changes) {
    return actions.updateConversation(cid, changes, true, "settings-ai");
  },

  async addPeople(cid, usernames) {
    store.setNotice("settings", null);
    try {
      store.putConversation(await api.addParticipants(cid, usernames));
      return true;
    } catch (e) {
      store.setNotice("settings", describe(e));
      return false;
    }
  },

  async removePerson(cid, userId) {
    store.setNotice("settings", null);
    try {
      store.putConversation(await api.removeParticipant(cid, userId));
    } catch (e) {
      store.setNotice("settings", describe(e));
    }
  },

  async leave(cid) {
    store.setNotice("settings", null);
    try {
      await api.removeParticipant(cid, store.me.id);
      socket.unsubscribe(cid);
      store.removeConversation(cid);
      history.replaceState(null, "", "#/");
    } catch (e) {
      store.setNotice("settings", describe(e));
    }
  },

  toggleSettings() {
    picker.close();
    store.closeUsage();
    settings.toggle();
  },

  async refreshModels(force = false) {
    if (!force && Date.now() - modelsAt < 5000) return;
    modelsAt = Date.now();
    try { store.setModels(await api.models()); } catch { /* the last list stays */ }
  },

  reconnectNow() {
    socket.now();
  },

  // -- usage and budgets -----------------------------------------------------------------

  /** Open the usage view for "conversation" (the open one), "me", or "all" (admins). */
  openUsage(scope = "conversation", days) {
    const cid = store.activeId;
    if (scope === "conversation" && !cid) scope = "me";
    if (scope === "all" && !store.me?.is_admin) scope = "me";
    picker.close();
    settings.close();
    store.setNotice("budget", null);
    store.setNotice("budget-ok", null);
    store.openUsage(scope, cid, days || store.usage?.days || 30);
    loadUsage();
  },

  closeUsage() {
    store.closeUsage();
  },

  /** PUT /conversations/{id}/budget (the owner); a 403 or 422 shows inline in the usage view. */
  async saveConversationBudget(cid, body) {
    store.setNotice("budget", null);
    store.setNotice("budget-ok", null);
    try {
      store.setBudget(`conv:${cid}`, await api.setConversationBudget(cid, body));
      store.setNotice("budget-ok", "Budget saved.");
      return true;
    } catch (e) {
      store.setNotice("budget", describe(e));
      return false;
    }
  },

  async removeConversationBudget(cid) {
    store.setNotice("budget", null);
    store.setNotice("budget-ok", null);
    try {
      await api.deleteConversationBudget(cid);
      store.setBudget(`conv:${cid}`, null);
      store.setNotice("budget-ok", "Budget removed.");
    } catch (e) {
      store.setNotice("budget", describe(e));
    }
  },

  dismissWarning(key) {
    store.dismissWarning(key);
  },
};

/** The usage view's data: totals by model and day, a per-day split by model for the chart,
 * model stats and the budgets that apply. Days are UTC, as the server sums them. */
async function loadUsage() {
  const u = store.usage;
  if (!u) return;
  const { req, scope, cid } = u;
  const today = new Date(new Date().toISOString().slice(0, 10) + "T00:00:00Z").getTime();
  const from = isoDay(today - (u.days - 1) * DAY_MS);
  const to = isoDay(today + DAY_MS);
  const fetchUsage = (range) => (scope === "conversation" ? api.conversationUsage(cid, range) : api.usage({ ...range, all: scope === "all" }));
  try {
    const [data, stats, mine, conv] = await Promise.all([
      fetchUsage({ from, to }),
      api.aiStats().catch(() => null),
      api.budget().catch(() => null),
      scope === "conversation" ? api.conversationBudget(cid).catch(() => null) : null,
    ]);
    // The chart's series: each day's figures by model, in the same answer (by_day_model).
    const days = new Map(data.by_day.map((d) => [d.day, []]));
    for (const b of data.by_day_model || []) (days.get(b.day) ?? days.set(b.day, []).get(b.day)).push(b);
    const perDay = [...days.entries()];
    if (mine) store.setBudget("user", mine.budget);
    if (conv) store.setBudget(`conv:${cid}`, conv.budget);
    store.setUsage(req, { loading: false, error: null, data, perDay, from, to, stats: stats?.models ?? u.stats });
  } catch (e) {
    store.setUsage(req, { loading: false, error: describe(e) });
  }
}

function isoDay(ms) {
  return new Date(ms).toISOString().slice(0, 10);
}

let usageTimer = null;
/** A reply that ended where the usage view is looking: refresh it (at most once a second). */
store.on("ended", (cid) => {
  const u = store.usage;
  if (!u || (u.scope === "conversation" && u.cid !== cid)) return;
  clearTimeout(usageTimer);
  usageTimer = setTimeout(() => store.usage && store.usage.req === u.req && loadUsage(), 1000);
});

async function loadLatest(cid) {
  try {
    const body = await api.messages(cid, { limit: 50 });
    store.putMessages(cid, body.messages);
    store.setHistory(cid, { hasMoreBefore: body.has_more, loaded: true });
  } catch (e) {
    if (e.status === 404) store.removeConversation(cid);
  }
}

async function refreshConversations() {
  if (!store.me) return;
  try {
    const { conversations } = await api.conversations();
    const known = new Set(store.conversations.keys());
    store.setConversations(conversations);
    for (const c of conversations) if (!known.has(c.id)) socket.subscribe(c.id);
  } catch { /* keep what we have; the next refresh tries again */ }
}

async function startSession() {
  showShell();
  await Promise.all([refreshConversations(), actions.refreshModels(true)]);
  socket.start();
  clearInterval(listTimer);
  listTimer = setInterval(refreshConversations, LIST_REFRESH_MS);
  const fromHash = Number((location.hash.match(/^#\/c\/(\d+)/) || [])[1]);
  const cid = [fromHash, store.savedActive()].find((id) => id && store.conversations.has(id));
  actions.openConversation(cid || null);
}

// -- the page ------------------------------------------------------------------------------

const picker = new Picker(store);
const auth = new AuthView(store, actions);
const sidebar = new Sidebar(store, actions);
const room = new RoomView(store, actions, picker);
const settings = new SettingsPanel(store, actions, picker);
const usage = new UsageView(store, actions);
const banner = new ConnectionBanner(store, actions);
const shell = h("div.shell", { hidden: true }, sidebar.el, room.el, usage.el, settings.el);
document.getElementById("app").replaceChildren(auth.el, shell, banner.el, picker.el);

function showAuth() {
  shell.hidden = true;
  auth.el.hidden = false;
  document.body.dataset.view = "auth";
  auth.username.focus();
}

function showShell() {
  auth.el.hidden = true;
  shell.hidden = false;
}

api.onUnauthorized = () => actions.logout();
socket.onUnauthorized = () => actions.logout();

document.addEventListener("keydown", (e) => {
  if (e.key !== "Escape") return;
  if (picker.isOpen) { picker.close(); e.preventDefault(); } else if (settings.isOpen) { settings.close(); e.preventDefault(); } else if (store.usage) { store.closeUsage(); e.preventDefault(); }
});
window.addEventListener("online", () => socket.now());
window.addEventListener("focus", () => { refreshConversations(); room.seen(); });
document.addEventListener("visibilitychange", () => room.seen());
window.addEventListener("resize", () => picker.isOpen && picker.place());

// A handle for debugging from the console (and for the browser tests).
window.chatApp = { store, actions, socket };

(async () => {
  if (!store.token) { showAuth(); return; }
  api.token = store.token;
  try {
    const { user } = await api.me();
    store.setSession(store.token, user);
    await startSession();
  } catch (e) {
    if (e.status === 401) { store.clearSession(); showAuth(); return; }
    // The server is unreachable: keep the token and try again shortly.
    document.body.dataset.view = "auth";
    showAuth();
    store.setNotice("auth", describe(e));
  }
})();
