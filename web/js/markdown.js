// A small, safe Markdown subset rendered straight to DOM nodes.
// No HTML is ever parsed from message text: every piece of text goes in through
// createTextNode, so `<img onerror>` or `<script>` in a message is shown as text.
// Supported: paragraphs, line breaks, **bold**, *italic* / _italic_, `code`,
// ``` fenced blocks ```, [links](https://...) and bare http(s) URLs, - / 1. lists,
// # headings and > quotes.

const SAFE_URL = /^https?:\/\/[^\s<>"']+$/i;

/** Render `text` into a DocumentFragment. */
export function renderMarkdown(text) {
  const frag = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*```\s*([\w+-]*)\s*$/);
    if (fence) {
      const body = [];
      i++;
      while (i < lines.length && !/^\s*```\s*$/.test(lines[i])) body.push(lines[i++]);
      i++; // the closing fence (or the end of an unfinished block)
      const pre = el("pre");
      const code = el("code");
      if (fence[1]) code.dataset.lang = fence[1];
      code.textContent = body.join("\n");
      pre.append(code);
      frag.append(pre);
      continue;
    }
    if (/^\s*$/.test(line)) { i++; continue; }
    const heading = line.match(/^(#{1,3})\s+(.*)$/);
    if (heading) {
      const h = el("h" + (heading[1].length + 2)); // h3..h5: inside a message, not a page
      inline(h, heading[2]);
      frag.append(h);
      i++;
      continue;
    }
    if (/^\s*>\s?/.test(line)) {
      const quote = [];
      while (i < lines.length && /^\s*>\s?/.test(lines[i])) quote.push(lines[i++].replace(/^\s*>\s?/, ""));
      const bq = el("blockquote");
      bq.append(renderMarkdown(quote.join("\n")));
      frag.append(bq);
      continue;
    }
    const item = listItem(line);
    if (item) {
      const list = el(item.ordered ? "ol" : "ul");
      if (item.ordered && item.start !== 1) list.start = item.start;
      while (i < lines.length) {
        const it = listItem(lines[i]);
        if (!it || it.ordered !== item.ordered) break;
        const li = el("li");
        inline(li, it.text);
        list.append(li);
        i++;
      }
      frag.append(list);
      continue;
    }
    const para = [];
    while (i < lines.length && !/^\s*$/.test(lines[i]) && !/^\s*```/.test(lines[i])
           && !listItem(lines[i]) && !/^#{1,3}\s/.test(lines[i]) && !/^\s*>/.test(lines[i])) {
      para.push(lines[i++]);
    }
    const p = el("p");
    para.forEach((l, n) => {
      if (n) p.append(el("br"));
      inline(p, l);
    });
    frag.append(p);
  }
  return frag;
}

function listItem(line) {
  let m = line.match(/^\s*[-*+]\s+(.*)$/);
  if (m) return { ordered: false, text: m[1] };
  m = line.match(/^\s*(\d{1,9})[.)]\s+(.*)$/);
  if (m) return { ordered: true, start: Number(m[1]), text: m[2] };
  return null;
}

// Inline spans: code first (nothing inside it is markup), then links, bold, italic.
const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\[([^\]\n]+)\]\(([^)\s]+)\)|(https?:\/\/[^\s<>()"']+[^\s<>()"'.,;:!?])|\*\*([^*\n]+?)\*\*|__([^_\n]+?)__|\*([^*\s][^*\n]*?)\*|(?<![\w])_([^_\s][^_\n]*?)_(?![\w])/;

function inline(parent, text) {
  let rest = text;
  while (rest) {
    const m = rest.match(INLINE);
    if (!m) { parent.append(document.createTextNode(rest)); return; }
    if (m.index) parent.append(document.createTextNode(rest.slice(0, m.index)));
    if (m[1]) {
      const code = el("code");
      code.textContent = m[2];
      parent.append(code);
    } else if (m[3]) {
      parent.append(link(m[4], m[3]));
    } else if (m[5]) {
      parent.append(link(m[5], m[5]));
    } else if (m[6] || m[7]) {
      const b = el("strong");
      inline(b, m[6] || m[7]);
      parent.append(b);
    } else {
      const it = el("em");
      inline(it, m[8] || m[9]);
      parent.append(it);
    }
    rest = rest.slice(m.index + m[0].length);
  }
}

function link(href, label) {
  if (!SAFE_URL.test(href)) return document.createTextNode(label === href ? href : `${label} (${href})`);
  const a = el("a");
  a.href = href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  a.textContent = label;
  return a;
}

function el(tag) {
  return document.createElement(tag);
}
