// The usage view: what AI replies cost, for the open conversation, for me, or (an admin)
// for everyone. Budget bars (the owner edits the conversation's inline), totals, a chart of
// cost or tokens by model per day (inline SVG, drawn here), the by-model table and the
// models' speed table. Renders from store.usage and store.budgets; never fetches.

import { count, displayName, duration, h, modelName, replace, usd, when } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const SERIES = 8; // colours --s0..--s7 in styles.css; more models reuse them
const RANGES = [7, 30, 90];

export class UsageView {
  constructor(store, actions) {
    this.store = store;
    this.actions = actions;
    this.metric = "cost"; // what the chart shows: "cost" or "tokens" (a view choice, not state)
    this.el = h("section.usage-pane", { hidden: true, "aria-label": "Usage and cost" });
    store.on("usage", () => this.render());
    store.on("budget", () => this.renderBudgets());
    store.on("conv", (cid) => this.store.usage?.cid === cid && this.renderBudgets());
    store.on("notice", (key) => (key === "budget" || key === "budget-ok") && this.renderBudgetNotice());
    new ResizeObserver(() => this.chartBox && this.chartWidth !== this.chartBox.clientWidth && this.renderChart())
      .observe(this.el);
  }

  render() {
    const u = this.store.usage;
    this.el.hidden = !u;
    document.body.classList.toggle("usage-open", !!u);
    if (!u) { replace(this.el); this.chartBox = null; return; }
    this.el.setAttribute("aria-busy", String(!!u.loading));
    const { store } = this;
    const conv = u.cid ? store.conversations.get(u.cid) : null;
    const scopes = [];
    if (store.activeId) scopes.push(["conversation", "This conversation"]);
    scopes.push(["me", "My usage"]);
    if (store.me?.is_admin) scopes.push(["all", "Everyone"]);
    const scopeTabs = h("div.segmented.scopes", { role: "group", "aria-label": "Whose usage" },
      scopes.map(([s, label]) => h("button", {
        type: "button", dataset: { scope: s }, "aria-pressed": String(u.scope === s),
        onclick: () => u.scope !== s && this.actions.openUsage(s, u.days),
      }, label)));
    const rangeTabs = h("div.segmented.ranges", { role: "group", "aria-label": "Period" },
      RANGES.map((d) => h("button", {
        type: "button", dataset: { days: d }, "aria-pressed": String(u.days === d),
        onclick: () => u.days !== d && this.actions.openUsage(u.scope, d),
      }, `${d} days`)));
    const heading = u.scope === "conversation" ? conv?.title || "Conversation"
      : u.scope === "all" ? "Everyone on this server" : `${displayName(store.me)}'s replies`;

    this.budgetsEl = h("div.budgets");
    this.budgetForm = null;
    this.chartBox = h("div.chart-box");
    this.legend = h("ul.legend", { "aria-hidden": "true" });
    const body = [];
    if (u.error) body.push(h("div.form-error", { role: "alert" }, u.error));
    const budgets = h("section.card.budgets-card", h("h3", "Budgets"), this.budgetsEl);
    if (!u.data) {
      body.push(h("p.muted.pad.loading", u.loading ? "Loading usage…" : ""));
    } else {
      body.push(this.totals(u.data.total, u.days, u.data.by_source));
      body.push(h("section.card.chart-card",
        h("div.card-head", h("h3", "By model, per day"),
          h("div.segmented.metric", { role: "group", "aria-label": "Chart shows" },
            [["cost", "Cost"], ["tokens", "Tokens"]].map(([m, label]) => h("button", {
              type: "button", dataset: { metric: m }, "aria-pressed": String(this.metric === m),
              onclick: (e) => {
                this.metric = m;
                for (const b of e.currentTarget.parentElement.children) b.setAttribute("aria-pressed", String(b.dataset.metric === m));
                this.renderChart();
              },
            }, label)))),
        this.chartBox, this.legend));
    }
    body.push(budgets);
    if (u.data) body.push(this.byModel(u.data));
    body.push(this.statsTable(u.stats));
    replace(this.el,
      h("header.usage-head",
        h("button.icon-button.usage-back", { type: "button", "aria-label": "Back to the chat", title: "Back to the chat", onclick: () => this.actions.closeUsage() }, "‹"),
        h("div.usage-title", h("h2", "Usage"), h("div.muted.small.usage-of", heading)),
        u.loading && u.data ? h("span.muted.small.refreshing", "Updating…") : null),
      h("div.usage-controls", scopeTabs, rangeTabs),
      h("div.usage-body", body));
    this.renderBudgets();
    this.renderChart();
  }

  // -- budgets ------------------------------------------------------------------------------

  renderBudgets() {
    const u = this.store.usage;
    if (!u || !this.budgetsEl) return;
    const { store } = this;
    const mine = store.budgets.get("user");
    const parts = [];
    parts.push(budgetBar(mine, "Your budget", "user",
      "No spending limit is set for you. An admin can set one."));
    if (u.scope === "conversation") {
      const conv = store.conversations.get(u.cid);
      const b = store.budgets.get(`conv:${u.cid}`);
      const owner = store.isOwner(u.cid);
      const ownerUser = conv?.participants.find((p) => p.id === conv.owner_id);
      parts.push(budgetBar(b, "This conversation", "conversation",
        owner ? "No limit on this conversation yet." : `No limit on this conversation. Only ${displayName(ownerUser)} (the owner) can set one.`));
      if (owner) parts.push(this.ownerForm(u.cid, b));
      else if (b) parts.push(h("p.muted.small.owner-note", `Only ${displayName(ownerUser)} (the owner) can change this limit.`));
    }
    const focused = this.budgetForm?.contains(document.activeElement) ? document.activeElement.name : null;
    replace(this.budgetsEl, parts);
    if (focused) this.budgetForm?.querySelector(`[name=${focused}]`)?.focus();
    this.renderBudgetNotice();
  }

  ownerForm(cid, b) {
    const prev = this.budgetForm;
    const keep = (name, fallback) => (prev?.contains(document.activeElement) ? prev.elements[name].value : fallback);
    const limit = h("input", {
      name: "limit_usd", type: "number", step: "0.01", inputmode: "decimal", "aria-label": "Limit in US dollars",
      value: keep("limit_usd", b ? String(b.limit_usd) : ""), placeholder: "10.00",
    });
    const period = h("select", { name: "period", "aria-label": "Period" },
      [["day", "per day"], ["month", "per month"]].map(([v, label]) => h("option", { value: v, selected: (keep("period", b?.period || "month")) === v }, label)));
    const warn = h("input", {
      name: "warn_at", type: "number", step: "1", inputmode: "numeric", "aria-label": "Warn at percent",
      value: keep("warn_at", String(Math.round((b?.warn_at ?? 0.8) * 100))),
    });
    this.budgetNotice = h("div.form-error", { role: "alert", hidden: true });
    this.budgetOk = h("div.form-ok", { role: "status", hidden: true });
    this.budgetForm = h("form.budget-form", {
      novalidate: true, // the server's 422 says what is wrong, inline
      onsubmit: (e) => {
        e.preventDefault();
        const body = { period: period.value, limit_usd: numberOrText(limit.value) };
        if (warn.value.trim() !== "") body.warn_at = typeof numberOrText(warn.value) === "number" ? Number(warn.value) / 100 : warn.value;
        this.actions.saveConversationBudget(cid, body);
      },
    },
    h("div.budget-fields",
      h("label.field", h("span", "Limit (USD)"), h("span.money", h("span.muted", "$"), limit)),
      h("label.field", h("span", "Period"), period),
      h("label.field", h("span", "Warn at (%)"), warn)),
    this.budgetNotice, this.budgetOk,
    h("div.form-actions",
      h("button.primary.small", { type: "submit" }, b ? "Update limit" : "Set limit"),
      b ? h("button.link.danger.remove-budget", { type: "button", onclick: () => this.actions.removeConversationBudget(cid) }, "Remove limit") : null));
    return this.budgetForm;
  }

  renderBudgetNotice() {
    if (!this.budgetNotice) return;
    const err = this.store.notices.get("budget");
    this.budgetNotice.hidden = !err;
    this.budgetNotice.textContent = err || "";
    const ok = this.store.notices.get("budget-ok");
    this.budgetOk.hidden = !ok;
    this.budgetOk.textContent = ok || "";
  }

  // -- totals and tables --------------------------------------------------------------------

  totals(t, days, bySource = []) {
    const tokens = t.prompt_tokens + t.completion_tokens;
    const notes = [];
    // Completions asked through /v1 (OpenAI clients) count here too: say how much of it they are.
    const api = bySource.find((b) => b.source === "api");
    if (api) notes.push(`${api.turns} ${api.turns === 1 ? "was" : "were"} asked through the OpenAI-compatible API (${usd(api.cost_usd)})`);
    if (t.estimated) notes.push("some token counts are estimated");
    if (t.unpriced_turns) notes.push(`${t.unpriced_turns} ${t.unpriced_turns === 1 ? "reply" : "replies"} with no known price`);
    return h("section.totals",
      h("div.stat.total-cost", h("span.label", `Cost, last ${days} days`),
        h("strong.value", { dataset: { usd: t.cost_usd } }, usd(t.cost_usd))),
      h("div.stat.total-tokens", h("span.label", "Tokens"),
        h("strong.value", { dataset: { tokens: tokens } }, count(tokens)),
        h("span.muted.small", `${count(t.prompt_tokens)} in · ${count(t.completion_tokens)} out`)),
      h("div.stat.total-turns", h("span.label", api ? "AI replies and completions" : "AI replies"),
        h("strong.value", { dataset: { turns: t.turns } }, String(t.turns))),
      notes.length ? h("p.muted.small.notes", `Note: ${notes.join("; ")}.`) : null);
  }

  byModel(data) {
    const rows = data.by_model.map((b, i) => h("tr", { dataset: { model: b.model } },
      h("th", { scope: "row" }, h("span.swatch", { class: `s${i % SERIES}`, "aria-hidden": "true" }),
        h("span.model-cell", { title: b.model }, modelName(b.model, this.store)),
        b.estimated ? h("span.tag.est", { title: "token counts estimated: the provider did not report them" }, "est.") : null),
      h("td.num.turns", String(b.turns)),
      h("td.num.prompt", count(b.prompt_tokens)),
      h("td.num.completion", count(b.completion_tokens)),
      h("td.num.cost", { dataset: { usd: b.cost_usd }, title: b.unpriced_turns ? `${b.unpriced_turns} replies with no known price` : "" },
        b.unpriced_turns && !b.cost_usd ? "no price" : usd(b.cost_usd))));
    return h("section.card",
      h("h3", "By model"),
      rows.length
        ? h("div.table-wrap", h("table.by-model",
          h("thead", h("tr", h("th", { scope: "col" }, "Model"), h("th.num", { scope: "col" }, "Replies"),
            h("th.num", { scope: "col" }, "In"), h("th.num", { scope: "col" }, "Out"), h("th.num", { scope: "col" }, "Cost"))),
          h("tbody", rows)))
        : h("p.muted.small", "No AI replies in this period."));
  }

  statsTable(stats) {
    const rows = (stats || []).map((m) => h("tr", { dataset: { model: m.model } },
      h("th", { scope: "row" }, h("span.model-cell", { title: m.model }, modelName(m.model, this.store))),
      h("td.num.ttft", duration(m.ttft_p50_ms)),
      h("td.num.ttft95", duration(m.ttft_p95_ms)),
      h("td.num.tps", m.tokens_per_second == null ? "—" : `${Math.round(m.tokens_per_second)}`),
      h("td.num.errors", { class: m.error_rate >= 0.1 ? "bad" : undefined }, `${Math.round(m.error_rate * 1000) / 10}%`),
      h("td.num.turns", String(m.turns))));
    return h("section.card.stats-card",
      h("h3", "How fast models answer"),
      h("p.muted.small", "Every model's latest 100 replies of the last 24 hours, for everyone on this server."),
      rows.length
        ? h("div.table-wrap", h("table.model-stats",
          h("thead", h("tr", h("th", { scope: "col" }, "Model"),
            h("th.num", { scope: "col", title: "time to first token, median" }, "First token"),
            h("th.num", { scope: "col", title: "time to first token, 95th percentile" }, "p95"),
            h("th.num", { scope: "col" }, "Tok/s"), h("th.num", { scope: "col" }, "Errors"), h("th.num", { scope: "col" }, "Replies"))),
          h("tbody", rows)))
        : h("p.muted.small", stats ? "No replies in the last 24 hours." : "Loading…"));
  }

  // -- the chart ----------------------------------------------------------------------------

  /** Stacked bars: one column per day of the period, one <rect> per model that answered that day. */
  renderChart() {
    const u = this.store.usage;
    const box = this.chartBox;
    if (!u?.data || !box || !box.isConnected) return;
    const models = u.data.by_model.map((b) => b.model);
    const colour = new Map(models.map((m, i) => [m, i % SERIES]));
    const value = (b) => (this.metric === "cost" ? b.cost_usd || 0 : b.prompt_tokens + b.completion_tokens);
    const fmt = this.metric === "cost" ? usd : count;
    const days = [];
    for (let t = Date.parse(u.from); t < Date.parse(u.to); t += 86400000) days.push(new Date(t).toISOString().slice(0, 10));
    const byDay = new Map(u.perDay || []);
    let max = 0;
    for (const d of days) max = Math.max(max, (byDay.get(d) || []).reduce((s, b) => s + value(b), 0));

    const W = Math.max(260, box.clientWidth || 640);
    this.chartWidth = box.clientWidth;
    const H = W < 480 ? 170 : 210;
    const pad = { l: 48, r: 6, t: 10, b: 22 };
    const iw = W - pad.l - pad.r;
    const ih = H - pad.t - pad.b;
    const top = niceMax(max);
    const y = (v) => pad.t + ih - (top ? (v / top) * ih : 0);
    const slot = iw / days.length;
    const bw = Math.max(2, Math.min(28, slot * 0.72));

    const total = u.data.total;
    const svg = s("svg", {
      class: "usage-chart", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": `${this.metric === "cost" ? "Cost" : "Tokens"} by model per day over the last ${u.days} days: `
        + (this.metric === "cost" ? usd(total.cost_usd) : `${count(total.prompt_tokens + total.completion_tokens)} tokens`) + " in all",
    });
    svg.dataset.metric = this.metric;
    const grid = s("g", { class: "grid" });
    for (let i = 0; i <= 2; i++) {
      const v = (top * i) / 2;
      grid.append(s("line", { x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v) }),
        s("text", { x: pad.l - 6, y: y(v) + 4, "text-anchor": "end" }, top ? fmt(v) : i ? "" : "0"));
    }
    svg.append(grid);
    const bars = s("g", { class: "bars" });
    days.forEach((d, i) => {
      const entries = (byDay.get(d) || []).filter((b) => b.turns > 0);
      let acc = 0;
      const x = pad.l + i * slot + (slot - bw) / 2;
      for (const b of sortByModel(entries, models)) {
        const v = value(b);
        const y0 = y(acc);
        acc += v;
        const rect = s("rect", {
          class: `bar s${colour.get(b.model) ?? 0}`, x: x.toFixed(1), y: y(acc).toFixed(1), width: bw.toFixed(1),
          height: Math.max(0, y0 - y(acc)).toFixed(1), rx: Math.min(3, bw / 3),
        }, s("title", {}, `${d} · ${b.model}: ${usd(b.cost_usd)} · ${count(b.prompt_tokens + b.completion_tokens)} tokens · ${b.turns} ${b.turns === 1 ? "reply" : "replies"}`));
        rect.dataset.day = d;
        rect.dataset.model = b.model;
        bars.append(rect);
      }
    });
    svg.append(bars);
    const axis = s("g", { class: "axis" });
    const labelEvery = Math.ceil(days.length / Math.max(2, Math.floor(iw / 64)));
    days.forEach((d, i) => {
      if (i % labelEvery && i !== days.length - 1) return;
      if (i === days.length - 1 && i % labelEvery && (days.length - 1) % labelEvery < labelEvery / 2) return;
      const label = new Date(d + "T12:00:00Z").toLocaleDateString([], { month: "short", day: "numeric", timeZone: "UTC" });
      axis.append(s("text", { x: pad.l + i * slot + slot / 2, y: H - 6, "text-anchor": "middle" }, label));
    });
    svg.append(axis);
    if (!total.turns) svg.append(s("text", { class: "empty", x: pad.l + iw / 2, y: pad.t + ih / 2, "text-anchor": "middle" }, "No AI replies in this period"));
    replace(box, svg);
    replace(this.legend, models.map((m) => h("li", h("span.swatch", { class: `s${colour.get(m)}` }), modelName(m, this.store))));
  }
}

function budgetBar(b, title, scope, none) {
  if (!b) return h("div.budget", { dataset: { scope, set: "false" } }, h("div.budget-line", h("strong", title), h("span.muted.small.none", none)));
  const limit = b.limit_usd;
  const pct = (v) => (limit > 0 ? Math.min(100, (v / limit) * 100) : 100);
  const used = b.spent_usd + b.reserved_usd;
  const state = b.remaining_usd <= 0 ? "over" : limit > 0 && used / limit >= b.warn_at ? "warn" : "ok";
  return h("div.budget", { dataset: { scope, set: "true", state } },
    h("div.budget-line",
      h("strong", title),
      h("span.remaining", { dataset: { usd: b.remaining_usd } }, `${usd(b.remaining_usd)} left`),
      h("span.muted.small", ` of ${usd(limit)} per ${b.period}`)),
    h("div.bar", {
      role: "meter", "aria-label": `${title}: spent`, "aria-valuemin": "0", "aria-valuemax": String(limit),
      "aria-valuenow": String(Math.min(used, limit)), "aria-valuetext": `${usd(b.spent_usd)} spent of ${usd(limit)}`,
    },
    h("span.spent", { style: `width:${pct(b.spent_usd)}%` }),
    b.reserved_usd > 0 ? h("span.reserved", { style: `width:${Math.max(0, pct(used) - pct(b.spent_usd))}%`, title: `${usd(b.reserved_usd)} held for replies in progress` }) : null,
    h("span.warn-mark", { style: `left:${Math.round(b.warn_at * 100)}%`, title: `warning at ${Math.round(b.warn_at * 100)}%` })),
    h("div.muted.small.budget-foot",
      `${usd(b.spent_usd)} spent`, b.reserved_usd > 0 ? ` · ${usd(b.reserved_usd)} held` : "",
      " · resets ", h("time.resets", { datetime: b.resets_at, title: new Date(b.resets_at).toLocaleString() }, when(b.resets_at))));
}

function numberOrText(v) {
  const t = v.trim();
  return t !== "" && Number.isFinite(Number(t)) ? Number(t) : t;
}

function sortByModel(entries, models) {
  const at = new Map(models.map((m, i) => [m, i]));
  return [...entries].sort((a, b) => (at.get(a.model) ?? 99) - (at.get(b.model) ?? 99));
}

/** A round top for the axis: 1, 2 or 5 times a power of ten. */
function niceMax(v) {
  if (!v) return 0;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

/** An SVG element; strings become text nodes. */
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}
