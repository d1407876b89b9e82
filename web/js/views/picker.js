// The model picker: GET /ai/models grouped by provider, with node, latency and health;
// unavailable models shown but disabled with the reason; searchable. One instance,
// opened by the header's model button, the Route button and the settings panel.

import { h, replace, speedText, TIER_LABEL } from "./dom.js";

export class Picker {
  constructor(store) {
    this.store = store;
    this.el = h("div.picker", { role: "dialog", "aria-label": "Choose a model", hidden: true });
    this.opts = null;
    this.query = "";
    store.on("models", () => this.opts && this.render());
    document.addEventListener("pointerdown", (e) => {
      if (this.opts && !this.el.contains(e.target) && !this.opts.anchor?.contains(e.target)) this.close();
    });
  }

  get isOpen() {
    return !!this.opts;
  }

  /** opts: {anchor, title, subtitle, selected, readonly, onPick(id), purpose} */
  open(opts) {
    if (this.opts && this.opts.anchor === opts.anchor) { this.close(); return; }
    this.opts = opts;
    this.query = "";
    // Compare mode (the Route picker): models are toggled, 2-3 of them, then applied at once.
    this.multi = opts.onCompare && opts.compare?.length ? [...opts.compare] : null;
    this.el.hidden = false;
    this.el.dataset.purpose = opts.purpose || "";
    this.render();
    this.place();
    this.search?.focus();
    opts.anchor?.setAttribute("aria-expanded", "true");
  }

  close() {
    if (!this.opts) return;
    this.opts.anchor?.setAttribute("aria-expanded", "false");
    this.opts = null;
    this.el.hidden = true;
  }

  place() {
    const a = this.opts.anchor?.getBoundingClientRect();
    const w = Math.min(380, window.innerWidth - 16);
    this.el.style.width = w + "px";
    if (!a) return;
    const left = Math.max(8, Math.min(a.left, window.innerWidth - w - 8));
    this.el.style.left = left + "px";
    const below = window.innerHeight - a.bottom;
    if (below > 320 || below > a.top) {
      this.el.style.top = a.bottom + 6 + "px";
      this.el.style.bottom = "";
      this.el.style.maxHeight = Math.max(200, below - 16) + "px";
    } else {
      this.el.style.top = "";
      this.el.style.bottom = window.innerHeight - a.top + 6 + "px";
      this.el.style.maxHeight = Math.max(200, a.top - 16) + "px";
    }
  }

  render() {
    const { store } = this;
    const o = this.opts;
    const providers = store.models?.providers || [];
    const q = this.query.trim().toLowerCase();
    this.search = h("input.search", {
      type: "search", placeholder: "Search models", value: this.query, "aria-label": "Search models",
      oninput: (e) => { this.query = e.target.value; this.renderList(); },
      onkeydown: (e) => {
        if (e.key === "Enter") {
          e.preventDefault();
          this.list.querySelector("button.model:not([disabled])")?.click();
        }
      },
    });
    this.list = h("div.picker-list");
    replace(this.el,
      h("div.picker-head",
        h("div", h("strong", o.title || "Model"), o.subtitle ? h("div.muted.small", o.subtitle) : null),
        o.onCompare ? h("button.link.compare-toggle", {
          type: "button", "aria-pressed": this.multi ? "true" : "false",
          title: "Ask 2 or 3 models at once, each answering as its own reply",
          onclick: () => { this.multi = this.multi ? null : []; this.render(); },
        }, this.multi ? "Single model" : "Compare") : null,
        o.onClear ? h("button.link", { type: "button", onclick: () => { o.onClear(); this.close(); } }, o.clearLabel || "Clear") : null),
      this.search,
      this.list,
      this.multi ? this.compareFoot() : null);
    this.renderList(q, providers);
  }

  compareFoot() {
    const n = this.multi.length;
    this.foot = h("div.picker-foot",
      h("span.muted.small", n < 2 ? `Pick ${2 - n} more (2-3 models)` : `${n} models side by side`),
      h("button.primary.compare-apply", {
        type: "button", disabled: n < 2,
        onclick: () => { this.opts.onCompare(this.multi); this.close(); },
      }, `Compare ${n || ""}`.trim()));
    return this.foot;
  }

  renderList() {
    const { store } = this;
    const o = this.opts;
    const q = this.query.trim().toLowerCase();
    const groups = [];
    if (!store.models) groups.push(h("p.muted.pad", "Loading models…"));
    for (const p of store.models?.providers || []) {
      const models = p.models.filter((m) => !q || `${m.id} ${m.name} ${p.label} ${p.node?.name || ""}`.toLowerCase().includes(q));
      if (!models.length) continue;
      const node = p.node;
      const state = providerState(p);
      const meta = [];
      if (node && node.name !== (p.label || p.id)) meta.push(node.name);
      const latency = (node || p.health)?.latency_ms;
      if (latency != null) meta.push(`${Math.round(latency)} ms`);
      groups.push(h("section.provider", { dataset: { provider: p.id, health: state.health } },
        h("header",
          h("span.provider-name", p.label || p.id),
          meta.length ? h("span.muted.small.latency", meta.join(" · ")) : null,
          h("span.health", { class: state.health, title: state.title }, state.label)),
        models.map((m) => {
          const isDefault = m.id === store.models.default_model_id;
          const multi = this.multi;
          const selected = multi ? multi.includes(m.id) : m.id === o.selected;
          const full = multi && !selected && multi.length >= 3;
          // The server says why a model is unavailable; the client's own guess is for an older server.
          const reason = m.available ? null
            : m.reason || (node && !node.healthy ? `node ${node.name} is unreachable` : "unavailable right now");
          return h("button.model", {
            type: "button", disabled: !m.available || o.readonly || full, dataset: { model: m.id },
            "aria-pressed": selected ? "true" : "false", class: selected ? "selected" : undefined,
            title: reason || m.id,
            onclick: () => {
              if (o.readonly) return;
              if (multi) {
                this.multi = selected ? multi.filter((x) => x !== m.id) : [...multi, m.id];
                this.renderList();
                this.foot?.replaceWith(this.compareFoot());
                return;
              }
              o.onPick(m.id);
              this.close();
            },
          },
          h("span.model-main", h("span.model-name", m.name),
            speedText(m.stats) ? h("span.model-speed.muted.small", {
              title: `over its last ${m.stats.turns} ${m.stats.turns === 1 ? "reply" : "replies"}: p95 first token ${Math.round(m.stats.ttft_p95_ms ?? 0)} ms, ${Math.round(m.stats.error_rate * 100)}% errors`,
            }, speedText(m.stats)) : null),
          isDefault ? h("span.tag", "server default") : null,
          reason ? h("span.reason", reason) : h("span.model-id.muted.small", m.id),
          selected ? h("span.tick", "✓") : null);
        })));
    }
    if (store.models && !groups.length) groups.push(h("p.muted.pad", `No model matches “${this.query}”.`));
    if (o.readonly) groups.unshift(h("p.note", o.readonlyNote || "Only the owner can change this."));
    replace(this.list, groups);
  }
}

/** A provider's health line: a node's (its models follow it), or the last check of a cloud or
 * OpenAI-compatible provider (`health`; its models stay available whatever it says). */
function providerState(p) {
  const node = p.node;
  if (node) {
    const health = node.healthy ? "healthy" : "unreachable";
    return { health, label: health, title: `node ${health}${checked(node.checked_at)}` };
  }
  const last = p.health;
  if (!last) return { health: "ready", label: "ready", title: "provider configured" };
  if (last.healthy) return { health: "healthy", label: "healthy", title: `last check passed${checked(last.checked_at)}` };
  return {
    health: "unhealthy", label: "check failed",
    title: `the last health check failed${checked(last.checked_at)}; its models may still answer`,
  };
}

function checked(at) {
  return at ? ` (checked ${new Date(at).toLocaleTimeString()})` : "";
}

export function tierText(tier) {
  return TIER_LABEL[tier] || tier || "";
}
