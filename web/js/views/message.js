// One message row. Final text is rendered as safe Markdown once; while a reply streams,
// its text lives in one Text node that deltas are appended to (no re-render per token).

import { renderMarkdown } from "../markdown.js";
import { avatar, clock, count, displayName, duration, h, mentionsIn, modelName, replace, TIER_LABEL, usd, when } from "./dom.js";

const STATUS_LABEL = { cancelled: "Cancelled", error: "Error", interrupted: "Interrupted", streaming: "Streaming" };

/** A stored message's row (or an optimistic one: {client_id, content, pending}). */
export function messageRow(msg, ctx) {
  const li = h("li.msg");
  fillRow(li, msg, ctx);
  return li;
}

export function fillRow(li, msg, ctx) {
  const { store } = ctx;
  const ai = msg.role === "assistant";
  const mine = !ai && msg.author && msg.author.id === store.me?.id;
  li.className = "msg" + (ai ? " ai" : "") + (mine ? " mine" : "") + (msg.pending ? " pending" : "") + (msg.error && msg.pending ? " failed" : "");
  if (msg.id !== undefined) li.dataset.id = msg.id;
  if (msg.seq !== undefined) li.dataset.seq = msg.seq;
  if (msg.client_id) li.dataset.clientId = msg.client_id;
  li.dataset.status = msg.status || (msg.pending ? "sending" : "");
  li.dataset.author = ai ? "ai" : msg.author?.id ?? "";
  if (msg.created_at) li.dataset.at = msg.created_at;

  const meta = h("div.meta",
    h("span.author", ai ? "Assistant" : displayName(msg.author)),
    h("time", { datetime: msg.created_at || "", title: msg.created_at ? new Date(msg.created_at).toLocaleString() : "" }, clock(msg.created_at)));
  if (ai) meta.append(...aiChips(msg, store));
  if (msg.pending) meta.append(h("span.tag.sending", msg.error ? "Not sent" : "Sending…"));

  const body = h("div.body");
  if (ai && msg.status === "streaming") {
    body.classList.add("streaming");
    li.streamText = document.createTextNode(msg.content || "");
    body.append(h("span.stream-text", li.streamText), h("span.caret", { "aria-hidden": "true" }));
  } else {
    li.streamText = null;
    body.append(renderMarkdown(msg.content || ""));
  }
  const extra = [];
  if (ai && msg.status === "error" && msg.error?.code === "budget_exceeded") {
    // Refused before any model was asked: say so, in the server's words, with a local reset time.
    extra.push(h("div.error-note.budget-note", { role: "note" },
      h("strong", "Not sent to the AI: "), budgetReason(msg.error.message)));
  } else if (ai && msg.status === "error") {
    extra.push(h("div.error-note", msg.error?.message ? `The model failed: ${msg.error.message}` : "The model failed before finishing this reply."));
  }
  if (msg.pending && msg.error) {
    extra.push(h("div.error-note", msg.error,
      h("button.link", { type: "button", onclick: () => ctx.actions.retrySend(msg.client_id) }, "Retry"),
      h("button.link", { type: "button", onclick: () => ctx.actions.discardSend(msg.client_id) }, "Discard")));
  }
  if (ai && msg.id !== undefined && msg.status && msg.status !== "streaming") extra.push(regenerateActions(msg, ctx));
  replace(li, avatar(ai ? null : msg.author), h("div.bubble", meta, body, extra));
}

/** A finished reply: ask again, on the room's chain or on a model picked for it. */
function regenerateActions(msg, ctx) {
  const cid = msg.conversation_id;
  const withBtn = h("button.link.regenerate-with", {
    type: "button", title: "Ask again with another model", "aria-haspopup": "dialog", "aria-expanded": "false",
    onclick: () => ctx.picker?.open({
      anchor: withBtn, purpose: "regenerate", title: "Regenerate with",
      subtitle: "A new reply below; this one stays.", selected: msg.model_used,
      onPick: (id) => ctx.actions.regenerate(cid, msg.id, id),
    }),
  }, "with…");
  return h("div.msg-actions",
    h("button.link.regenerate", {
      type: "button", title: "Ask again: a new reply appears below, this one stays",
      onclick: () => ctx.actions.regenerate(cid, msg.id),
    }, "↻ Regenerate"),
    ctx.picker ? withBtn : null);
}

function aiChips(msg, store) {
  const chips = [];
  const model = msg.model_used;
  const why = msg.route_reason != null ? `auto: ${msg.route_reason}` : null;
  chips.push(h("span.chip.model-chip", {
    title: why ? `${model || ""}\n${why}` : model || "", dataset: { model: model || "", routeReason: msg.route_reason ?? "" },
  }, `AI • ${modelName(model, store)}`));
  if (why) chips.push(h("span.tag.auto", { title: why, "aria-label": `Chosen automatically: ${msg.route_reason}` }, "auto"));
  if (msg.tier === "mention") {
    const alias = mentionAlias(msg, store);
    const title = alias ? `Mentioned: @${alias} asked ${model}` : `Mentioned: an @alias in the message asked ${model}`;
    chips.push(h("span.tag.tier", { dataset: { tier: msg.tier, alias: alias || "" }, title, "aria-label": title }, TIER_LABEL.mention));
  } else if (msg.tier) {
    chips.push(h("span.tag.tier", { dataset: { tier: msg.tier }, title: `chosen by the ${msg.tier} tier` }, TIER_LABEL[msg.tier] || msg.tier));
  }
  if (msg.fallback_from) chips.push(h("span.tag.fallback", { title: `${msg.fallback_from} failed before its first token` }, `fallback from ${modelName(msg.fallback_from, store)}`));
  const status = msg.status;
  if (status === "complete") {
    chips.push(h("span.status.complete", { title: "complete" }, "✓"));
  } else if (status) {
    let label = STATUS_LABEL[status] || status;
    if (status === "cancelled") label = cancelledLabel(msg, store);
    if (status === "error" && msg.error?.code) label = msg.error.code === "budget_exceeded" ? "Budget reached" : `Error (${msg.error.code})`;
    chips.push(h("span.status", { class: status }, label));
  }
  const hint = usageHint(msg);
  if (hint) chips.push(hint);
  return chips;
}

/** Which alias routed a `mention` reply: the one its trigger message mentions when that is
 * loaded (the server's rule), else the one alias naming the reply's model; null if unknown. */
function mentionAlias(msg, store) {
  const aliases = store.models?.aliases || {};
  const trigger = msg.reply_to != null ? store.message(msg.conversation_id, msg.reply_to) : null;
  const said = trigger ? mentionsIn(trigger.content, aliases) : null;
  if (said?.alias && said.model === msg.model_used) return said.alias;
  const named = Object.keys(aliases).filter((a) => aliases[a] === msg.model_used);
  return named.length === 1 ? named[0] : null;
}

/** A finished reply's cost and tokens, quietly: "$0.0012 · 340 tok" ("est." when counted by
 * the server, not reported by the provider); speed and the split in the tooltip. */
function usageHint(msg) {
  const u = msg.usage;
  if (!u || msg.status === "streaming") return null;
  const tokens = (u.prompt_tokens || 0) + (u.completion_tokens || 0);
  if (!tokens && u.cost_usd == null) return null;
  const text = [u.cost_usd ? usd(u.cost_usd) : null, `${count(tokens)} tok`].filter(Boolean).join(" · ") + (u.estimated ? " est." : "");
  const tip = [
    `${u.prompt_tokens} prompt + ${u.completion_tokens} completion tokens${u.estimated ? " (estimated: the provider did not report them)" : ""}`,
    u.cost_usd == null ? "cost unknown (no price for this model)" : `cost ${u.cost_usd === 0 ? "$0" : "$" + u.cost_usd.toFixed(6).replace(/0+$/, "")}`,
    u.ttft_ms != null ? `first token after ${duration(u.ttft_ms)}` : null,
    u.tokens_per_second != null ? `${Math.round(u.tokens_per_second)} tok/s` : null,
  ].filter(Boolean).join("\n");
  return h("span.usage-hint", {
    title: tip, "aria-label": tip.replaceAll("\n", "; "),
    dataset: { usd: u.cost_usd ?? "", tokens, estimated: String(!!u.estimated) },
  }, text);
}

/** "your monthly AI budget ... resets at 2026-12-01T00:00:00.000Z" -> "Your monthly ... resets Dec 1, 01:00." */
function budgetReason(message) {
  const text = (message || "an AI budget is spent").replace(/resets at (\d{4}-\d\d-\d\dT[\d:.]+Z)/, (_, iso) => `resets ${when(iso)}`);
  return text[0].toUpperCase() + text.slice(1) + (/[.!]$/.test(text) ? "" : ".");
}

/** Who stopped a reply, from the stored `cancelled_by` (so everyone, and history, sees it). */
function cancelledLabel(msg, store) {
  const by = msg.cancelled_by;
  if (by && store.me && by.id === store.me.id) return "Cancelled by you";
  if (by) return `Cancelled by ${displayName(by)}`;
  return msg.cancelled_by_me ? "Cancelled by you" : "Cancelled";
}

/** Consecutive messages by the same author within 5 minutes read as one block. */
export function groupRow(li) {
  const prev = li.previousElementSibling;
  const same = prev && prev.dataset.author === li.dataset.author && li.dataset.author !== "ai"
    && prev.dataset.at && li.dataset.at && Date.parse(li.dataset.at) - Date.parse(prev.dataset.at) < 5 * 60 * 1000;
  li.classList.toggle("cont", !!same);
}
