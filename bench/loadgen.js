// WebSocket load generator for bench/: one Node process, pinned to its own core by run.py.
//
// usage: node loadgen.js CONFIG.json
// It connects and subscribes every connection, prints {"event":"ready"}, waits for "go" on
// stdin, runs the load (bounded in count and time), drains, and prints {"event":"done",...}.
// Mode "idle" instead waits for "stop" on stdin after ready. Every line on stdout is JSON.
//
// Content of a sent message: "b|<conn>|<n>|<t ms, performance.now()>|<padding>"; the
// receiver in this same process takes the latency from it, so no clock crosses processes
// (except AI token stamps, which are wall-clock microseconds from the fake provider).
'use strict';

const fs = require('fs');
const readline = require('readline');
const { performance } = require('perf_hooks');
const WebSocket = require('ws');

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const now = () => performance.now();
const wallUs = () => (performance.timeOrigin + performance.now()) * 1000;

const MSG_PREFIX = '{"type":"message","message"';
const RE_SEQ = /"seq":(\d+)/;
const RE_CID = /"conversation_id":(\d+)/;
const RE_CONTENT = /"content":"b\|(\d+)\|(\d+)\|([0-9.]+)\|/;
const RE_STAMP = /<(\d+):(\d+)>/g;

// --- results -------------------------------------------------------------------------

class Samples {
  constructor(cap) { this.a = new Float64Array(cap); this.n = 0; this.dropped = 0; }
  add(v) { if (this.n < this.a.length) this.a[this.n++] = v; else this.dropped++; }
  summary() {
    const s = this.a.subarray(0, this.n).sort();
    const q = (p) => (s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : null);
    let sum = 0;
    for (let i = 0; i < s.length; i++) sum += s[i];
    return { n: this.n, dropped: this.dropped, p50: q(0.5), p90: q(0.9), p99: q(0.99),
             max: s.length ? s[s.length - 1] : null, mean: s.length ? sum / s.length : null };
  }
}

const stats = {
  deliveries: 0, duplicates: 0, gaps: 0, lost: 0, acks: 0, sent: 0, errors: 0,
  unexpected_closes: 0, close_codes: {}, error_samples: [],
};
const latency = new Samples(cfg.latency_cap || 4000000);

// --- connections ---------------------------------------------------------------------

const conns = []; // {ws, idx, subs: Map(cid -> last seq), send, pending: Map(ref -> resolve)}
const subscribers = new Map(); // cid -> number of subscribed connections in this process
const finalSeq = new Map(); // cid -> highest acked seq
const inflight = new Map(); // "conn|n" -> {remaining, acked, conn}
let closing = false;

function connect(spec, idx) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(cfg.url, {
      headers: { Authorization: 'Bearer ' + spec.token },
      perMessageDeflate: false,
      handshakeTimeout: 30000,
    });
    const c = { ws, idx, spec, subs: new Map(), waiters: new Map(), sentN: 0, outstanding: 0,
                nextAt: 0, done: false, ai: null };
    ws.on('open', () => resolve(c));
    ws.on('error', (e) => { if (!closing) { stats.errors++; sample('socket error ' + e.message); } reject(e); });
    ws.on('close', (code) => {
      if (!closing) {
        stats.unexpected_closes++;
        stats.close_codes[code] = (stats.close_codes[code] || 0) + 1;
      }
    });
    ws.on('message', (data) => onFrame(c, data.toString()));
  });
}

function sample(text) {
  if (stats.error_samples.length < 5) stats.error_samples.push(text.slice(0, 300));
}

function request(c, frame) {
  return new Promise((resolve) => {
    c.waiters.set(frame.ref, resolve);
    c.ws.send(JSON.stringify(frame));
  });
}

function onFrame(c, s) {
  if (s.startsWith(MSG_PREFIX)) {
    onMessage(c, s);
    return;
  }
  const f = JSON.parse(s);
  switch (f.type) {
    case 'subscribed':
    case 'message.ack': {
      if (f.type === 'message.ack') onAck(c, f);
      const w = c.waiters.get(f.ref);
      if (w) { c.waiters.delete(f.ref); w(f); }
      break;
    }
    case 'ai.start': case 'ai.delta': case 'ai.done': case 'ai.error':
      onAi(c, f);
      break;
    case 'error':
      stats.errors++;
      sample(s);
      if (f.ref !== undefined && c.waiters.has(f.ref)) { const w = c.waiters.get(f.ref); c.waiters.delete(f.ref); w(f); }
      break;
    default:
      break; // hello, presence, typing, pong
  }
}

function onMessage(c, s) {
  const seq = +RE_SEQ.exec(s)[1];
  const cid = +RE_CID.exec(s)[1];
  const last = c.subs.get(cid);
  if (last === undefined) return; // replay before subscribed, or not ours
  if (seq === last && cfg.mode === 'ai') return; // a finished reply: same message, updated
  if (seq <= last) { stats.duplicates++; return; }
  if (seq > last + 1) stats.gaps += seq - last - 1;
  c.subs.set(cid, seq);
  stats.deliveries++;
  const m = RE_CONTENT.exec(s);
  if (m === null) return; // an assistant message (AI mode)
  latency.add(now() - +m[3]);
  const key = m[1] + '|' + m[2];
  const rec = inflight.get(key);
  if (rec !== undefined && --rec.remaining === 0 && rec.acked) complete(key, rec);
}

function onAck(c, f) {
  stats.acks++;
  const seq = f.message.seq;
  const cid = f.message.conversation_id;
  if ((finalSeq.get(cid) || 0) < seq) finalSeq.set(cid, seq);
  const key = c.idx + '|' + f.ref;
  const rec = inflight.get(key);
  if (rec === undefined) return;
  rec.acked = true;
  if (rec.remaining <= 0) complete(key, rec);
}

function complete(key, rec) {
  inflight.delete(key);
  const c = rec.conn;
  c.outstanding--;
  if (c.spec.send && c.spec.send.window) pump(c);
  maybeDrained();
}

// --- sending -------------------------------------------------------------------------

let endAt = Infinity;
let drainResolve = null;
const pad = 'x'.repeat(cfg.pad || 40);

function sendOne(c) {
  const sp = c.spec.send;
  const n = ++c.sentN;
  const content = 'b|' + c.idx + '|' + n + '|' + now().toFixed(3) + '|' + pad;
  inflight.set(c.idx + '|' + n, { remaining: subscribers.get(sp.cid) || 0, acked: false, conn: c });
  c.outstanding++;
  stats.sent++;
  c.ws.send('{"type":"message.send","conversation_id":' + sp.cid + ',"content":"' + content + '","ref":' + n + '}');
}

function pump(c) {
  const sp = c.spec.send;
  while (c.outstanding < sp.window && now() < endAt && c.sentN < sp.max) sendOne(c);
}

function ticker(senders) {
  // Fixed-rate senders: one 2 ms ticker sends whatever is due, so the rate doesn't drift.
  return setInterval(() => {
    const t = now();
    for (const c of senders) {
      const sp = c.spec.send;
      while (c.nextAt <= t && t < endAt && c.sentN < sp.max) {
        sendOne(c);
        c.nextAt += 1000 / sp.rate;
      }
    }
  }, 2);
}

function maybeDrained() {
  if (drainResolve && now() >= endAt && inflight.size === 0) { const r = drainResolve; drainResolve = null; r(); }
}

// --- AI turns ------------------------------------------------------------------------

const ttfd = new Samples(100000); // message.send -> first ai.delta, ms (monotonic, this process)
const startToDelta = new Samples(100000); // ai.start -> first ai.delta, ms
const tokenLatency = new Samples(4000000); // token stamped by the fake -> received here, ms (wall)
const ai = { turns: 0, complete: 0, bad_text: 0, index_gaps: 0, tokens: 0, missing_tokens: 0, deltas: 0 };

function startTurn(c) {
  const t = c.ai;
  t.sentAt = now(); t.startAt = null; t.first = null; t.next = 0; t.text = ''; t.nextToken = 0;
  ai.turns++;
  stats.sent++;
  c.ws.send(JSON.stringify({ type: 'message.send', conversation_id: c.spec.ai.cid, content: 'hello ' + ai.turns, ref: 'ai' + ai.turns }));
}

function onAi(c, f) {
  const t = c.ai;
  if (t === null) return;
  const recv = now();
  if (f.type === 'ai.start') { t.startAt = recv; return; }
  if (f.type === 'ai.delta') {
    ai.deltas++;
    if (t.first === null) {
      t.first = recv;
      ttfd.add(recv - t.sentAt);
      if (t.startAt !== null) startToDelta.add(recv - t.startAt);
    }
    if (f.index !== t.next) ai.index_gaps++;
    t.next = f.index + 1;
    t.text += f.text;
    const w = wallUs();
    RE_STAMP.lastIndex = 0;
    let m;
    while ((m = RE_STAMP.exec(f.text)) !== null) {
      if (+m[1] !== t.nextToken) ai.missing_tokens++;
      t.nextToken = +m[1] + 1;
      ai.tokens++;
      tokenLatency.add((w - +m[2]) / 1000);
    }
    return;
  }
  // ai.done / ai.error
  const content = f.type === 'ai.done' ? f.message.content : null;
  if (f.type === 'ai.done' && f.message.status === 'complete' && content === t.text && t.nextToken === cfg.tokens) ai.complete++;
  else { ai.bad_text++; sample(JSON.stringify(f).slice(0, 300)); }
  c.ai.left--;
  if (c.ai.left > 0 && now() < endAt) startTurn(c);
  else { c.done = true; aiFinished(); }
}

function aiFinished() {
  if (drainResolve && conns.every((c) => !c.ai || c.done)) { const r = drainResolve; drainResolve = null; r(); }
}

// --- main ----------------------------------------------------------------------------

async function pool(items, limit, fn) {
  let i = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (i < items.length) { const k = i++; await fn(items[k], k); }
  });
  await Promise.all(workers);
}

function cpuMs() { const u = process.cpuUsage(); return (u.user + u.system) / 1000; }

async function main() {
  const hardStop = setTimeout(() => { out({ event: 'fatal', error: 'hard time limit' }); process.exit(2); },
                              (cfg.hard_limit || 600) * 1000);
  hardStop.unref();
  const t0 = now();
  await pool(cfg.conns, cfg.connect_concurrency || 100, async (spec, idx) => {
    conns[idx] = await connect(spec, idx);
  });
  let ref = 0;
  await pool(conns, cfg.connect_concurrency || 100, async (c) => {
    for (const cid of c.spec.subs || []) {
      const f = await request(c, { type: 'subscribe', conversation_id: cid, ref: 's' + (++ref) });
      if (f.type !== 'subscribed') throw new Error('subscribe failed: ' + JSON.stringify(f));
      c.subs.set(cid, f.last_seq);
      subscribers.set(cid, (subscribers.get(cid) || 0) + 1);
      if ((finalSeq.get(cid) || 0) < f.last_seq) finalSeq.set(cid, f.last_seq);
    }
  });
  out({ event: 'ready', conns: conns.length, setup_s: (now() - t0) / 1000 });

  const rl = readline.createInterface({ input: process.stdin });
  const lines = rl[Symbol.asyncIterator]();
  const cmd = (await lines.next()).value;
  if (cfg.mode === 'idle') {
    // F4: hold until told to stop; count what the server closed meanwhile.
    const open = conns.filter((c) => c.ws.readyState === WebSocket.OPEN).length;
    closing = true;
    out({ event: 'done', open, ...stats });
    for (const c of conns) c.ws.terminate();
    process.exit(0);
  }
  if (cmd !== 'go') throw new Error('expected go, got ' + cmd);

  for (const c of conns) if (c.spec.send && !c.spec.send.max) c.spec.send.max = Infinity;
  const cpu0 = cpuMs();
  const go = now();
  endAt = go + cfg.duration * 1000;
  const drained = new Promise((r) => { drainResolve = r; });
  let timer = null;
  if (cfg.mode === 'ai') {
    for (const c of conns) if (c.spec.ai) { c.ai = { left: c.spec.ai.turns }; startTurn(c); }
    aiFinished();
  } else {
    const rated = conns.filter((c) => c.spec.send && c.spec.send.rate);
    for (const c of rated) c.nextAt = go + Math.random() * (1000 / c.spec.send.rate);
    timer = ticker(rated);
    for (const c of conns) if (c.spec.send && c.spec.send.window) pump(c);
    setTimeout(maybeDrained, cfg.duration * 1000 + 5);
  }
  const limit = new Promise((r) => setTimeout(r, (cfg.duration + (cfg.drain_timeout || 10)) * 1000));
  await Promise.race([drained, limit]);
  const end = now();
  if (timer) clearInterval(timer);
  closing = true;
  // Loss: every subscription should have reached the last acked seq of its conversation.
  if (cfg.mode !== 'ai') {
    for (const c of conns) for (const [cid, last] of c.subs) stats.lost += Math.max(0, (finalSeq.get(cid) || 0) - last);
  }
  const result = {
    event: 'done', elapsed_s: (end - go) / 1000, send_window_s: cfg.duration, cpu_ms: cpuMs() - cpu0,
    ...stats, lost: stats.lost, unacked: stats.sent - stats.acks, undrained: inflight.size,
    latency_ms: latency.summary(),
  };
  if (cfg.mode === 'ai') {
    result.ai = { ...ai, unfinished: conns.filter((c) => c.ai && !c.done).length,
                  ttfd_ms: ttfd.summary(), start_to_delta_ms: startToDelta.summary(),
                  token_latency_ms: tokenLatency.summary() };
  }
  out(result);
  for (const c of conns) c.ws.terminate();
  process.exit(0);
}

main().catch((e) => { out({ event: 'fatal', error: String(e && e.stack || e) }); process.exit(1); });
