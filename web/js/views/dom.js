// Tiny DOM helpers for the views. Strings always become text nodes, never HTML.

/** h("button.primary", {onclick, type: "button"}, "Send") */
export function h(tag, props, ...children) {
  const [name, ...classes] = tag.split(".");
  const el = document.createElement(name || "div");
  if (classes.length) el.className = classes.join(" ");
  if (props && (typeof props !== "object" || props instanceof Node || Array.isArray(props))) {
    children.unshift(props);
    props = null;
  }
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "class") el.className += (el.className ? " " : "") + v;
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function displayName(user) {
  if (!user) return "AI";
  return user.display_name || user.username;
}

export function initials(user) {
  const n = displayName(user).trim();
  const parts = n.split(/[\s._-]+/).filter(Boolean);
  return ((parts[0]?.[0] || "?") + (parts[1]?.[0] || "")).toUpperCase();
}

/** A stable hue per user, for avatars. */
export function hue(id) {
  return (Number(id) * 137) % 360;
}

export function avatar(user, small = false) {
  return h("span.avatar" + (small ? ".small" : ""), { style: `--hue:${user ? hue(user.id) : 265}`, title: displayName(user), "aria-hidden": "true" },
    user ? initials(user) : "AI");
}

export function clock(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function dayLabel(iso) {
  const d = new Date(iso);
  const today = new Date();
  const y = new Date(today);
  y.setDate(today.getDate() - 1);
  if (d.toDateString() === today.toDateString()) return "Today";
  if (d.toDateString() === y.toDateString()) return "Yesterday";
  return d.toLocaleDateString([], { weekday: "short", month: "short", day: "numeric", year: d.getFullYear() === today.getFullYear() ? undefined : "numeric" });
}

export function shortTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return clock(iso);
  return d.toLocaleDateString([], { month: "short", day: "numeric" });
}

/** "echo:echo" -> "echo", "client:1:llama3.1:8b" -> "llama3.1:8b" */
export function modelName(id, store) {
  if (!id) return "none";
  const info = store?.modelInfo(id);
  if (info) return info.model.name;
  const parts = id.split(":");
  return parts[0] === "client" ? parts.slice(2).join(":") : parts.slice(1).join(":") || id;
}

export const TIER_LABEL = { message: "this message", mention: "mentioned", conversation: "room default", system: "server default" };

/** Dollars, short: "$0", "$0.0012", "$0.123", "$12.34"; null (no known price) is "—". */
export function usd(v) {
  if (v === null || v === undefined) return "—";
  if (v === 0) return "$0";
  const a = Math.abs(v);
  if (a < 0.01) return "$" + Number(v.toPrecision(2)).toString();
  if (a < 1) return "$" + v.toFixed(3).replace(/0$/, "");
  return "$" + v.toFixed(2);
}

/** 340 -> "340", 12_345 -> "12.3k", 2_500_000 -> "2.5M" */
export function count(n) {
  if (n === null || n === undefined) return "—";
  if (n < 1000) return String(Math.round(n));
  if (n < 1e6) return (n / 1e3).toFixed(n < 1e4 ? 2 : 1).replace(/\.?0+$/, "") + "k";
  return (n / 1e6).toFixed(n < 1e7 ? 2 : 1).replace(/\.?0+$/, "") + "M";
}

/** 1234 (ms) -> "1.2 s", 340 -> "340 ms" */
export function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
}

/** A model's expected speed from its `stats`: "~1.2 s to first token · 45 tok/s", or null. */
export function speedText(stats) {
  if (!stats || !stats.turns) return null;
  const parts = [];
  if (stats.ttft_p50_ms != null) parts.push(`~${duration(stats.ttft_p50_ms)} to first token`);
  if (stats.tokens_per_second != null) parts.push(`${Math.round(stats.tokens_per_second)} tok/s`);
  return parts.length ? parts.join(" · ") : null;
}

/** A reset time a person reads: "Dec 2, 01:00" in their own time zone. */
export function when(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

/** How a conversation's AI answers (`ai_answers`), in words. */
export const AI_ANSWERS_LABEL = { all: "Every message", mentions: "Only when mentioned (@ai)" };

/** The server's limit on a conversation's `instructions` (README: up to 4,000 characters). */
export const MAX_INSTRUCTIONS = 4000;

/** A textarea for a room's instructions with a live "n / 4000" counter. Not capped with
 * maxlength: the counter turns red past the limit and the server's 422 says the rest. */
export function instructionsField(value, { name = "instructions", rows = 4 } = {}) {
  const counter = h("span.counter", { "aria-live": "polite" });
  const textarea = h("textarea", {
    name, rows, placeholder: "e.g. Answer in French. Keep replies short.",
    "aria-label": "Instructions for the AI", oninput: () => update(),
  });
  textarea.value = value || "";
  function update() {
    const n = textarea.value.length;
    counter.textContent = `${n.toLocaleString("en-US")} / ${MAX_INSTRUCTIONS.toLocaleString("en-US")}`;
    counter.classList.toggle("over", n > MAX_INSTRUCTIONS);
    counter.classList.toggle("near", n <= MAX_INSTRUCTIONS && n > MAX_INSTRUCTIONS * 0.9);
    counter.dataset.count = String(n);
  }
  update();
  return { textarea, counter, update };
}

/** Who a message's text addresses, by the server's rule (server/routing.py `address`): `@ai`
 * or `@<alias>` anywhere, not inside an email address, any case, trailing dots and dashes
 * being punctuation; the first alias mentioned names the model. */
export function mentionsIn(text, aliases) {
  let addressed = false;
  for (const m of (text || "").matchAll(/(?<![\w@])@([A-Za-z0-9_][A-Za-z0-9_.-]{0,31})/g)) {
    const name = m[1].replace(/[.-]+$/, "").toLowerCase();
    if (Object.hasOwn(aliases, name)) return { addressed: true, alias: name, model: aliases[name] };
    addressed = addressed || name === "ai";
  }
  return { addressed, alias: null, model: null };
}
