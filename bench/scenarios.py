"""The scenarios: each runs the chat server and its baseline alternately, N times, and judges.

Every scenario returns rows: (id, metric, ours, baseline, ratio, target, pass), plus the raw
runs. Our figure and the baseline's are medians over the valid runs; the ratio is the median
of the per-run ratios (baseline measured in the same invocation, interleaved with ours).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness import BENCH, LOAD_CPU, NODE, PY, SERVER_CPU, Postgres, Proc, Redis, free_port, log, rest, wait_port

SERVER_ENV = {
    "CHAT_WS_RATE_PER_SECOND": "100000", "CHAT_WS_RATE_BURST": "100000",
    "CHAT_WS_MAX_CONNECTIONS_PER_USER": "100000", "CHAT_MAX_PARTICIPANTS": "2000",
    "CHAT_WS_QUEUE_FRAMES": "4096", "CHAT_LOG_LEVEL": "warning",
    "CHAT_AUTH_RATE_PER_SECOND": "100000", "CHAT_AUTH_RATE_BURST": "100000",
    "CHAT_SEND_RATE_PER_SECOND": "100000", "CHAT_SEND_RATE_BURST": "100000",
    "CHAT_ECHO_DELAY": "0", "CHAT_NODE_CHECK_INTERVAL": "3600",
}
PASSWORD = "bench-password-1"


@dataclass
class Ctx:
    pg: Postgres
    out: Path  # logs and loadgen configs
    runs: int
    smoke: bool
    sizes: dict[str, Any]
    py_spy: str | None = None  # profile the server during each measured window (perturbs the figures)
    redis: Redis | None = None  # the private redis-server of the P6 scenarios, while one runs
    rows: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def size(self, key: str, full: Any, smoke: Any) -> Any:
        value = self.sizes.get(key)
        return value if value is not None else (smoke if self.smoke else full)


# --- servers --------------------------------------------------------------------------

class Chat:
    """Our server on CPU 0, on a fresh database, with users registered."""

    def __init__(self, ctx: Ctx, name: str, users: int, env: dict[str, str] | None = None, workers: int = 1,
                 redis_url: str | None = None) -> None:
        self.port = free_port()
        self.pg = ctx.pg
        self.db = ctx.pg.database(f"bench_{name.lower()}")
        config = ctx.out / f"chat-{name}.toml"
        env = dict(env or {})
        config.write_text(env.pop("_toml", ""))
        argv = [PY, "run.py", "--port", str(self.port), "--database-url", self.db]
        if workers > 1:  # N processes on the port (SO_REUSEPORT); their CPU is summed with the parent's
            argv += ["--workers", str(workers)]
        if redis_url:
            argv += ["--redis-url", redis_url]
        self.proc = Proc("chat", argv, SERVER_CPU, env={**SERVER_ENV, "CHAT_CONFIG": str(config), **env},
                         log=ctx.out / f"chat-{name}.log", tree=workers > 1)
        wait_port(self.port, self.proc)
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.users: list[dict[str, Any]] = []
        for i in range(users):
            r = rest(self.base, "POST", "/auth/register", {"username": f"u{i}", "password": PASSWORD})
            self.users.append({"name": f"u{i}", "token": r["token"], "id": r["user"]["id"]})

    def conversation(self, owner: int, members: list[int], with_ai: bool = False) -> int:
        body = {"title": "bench", "mode": "group", "with_ai": with_ai,
                "participant_usernames": [self.users[m]["name"] for m in members if m != owner]}
        return rest(self.base, "POST", "/conversations", body, self.users[owner]["token"])["id"]

    def stored(self, cids: list[int]) -> int:
        return int(self.pg.sql(f"SELECT count(*) FROM messages WHERE conversation_id = any(ARRAY{cids}::bigint[])"
                               " AND role = 'user'", self.db))

    def stop(self) -> None:
        self.proc.stop()


class Relay:
    """The bare websockets baseline on CPU 0."""

    def __init__(self, ctx: Ctx, name: str) -> None:
        self.port = free_port()
        self.proc = Proc("ws_relay", [PY, str(BENCH / "baselines" / "ws_relay.py"), "--port", str(self.port)],
                         SERVER_CPU, log=ctx.out / f"relay-{name}.log")
        wait_port(self.port, self.proc)
        self.url = f"ws://127.0.0.1:{self.port}/ws"

    def stop(self) -> None:
        self.proc.stop()


# --- one load run ---------------------------------------------------------------------

def load_run(ctx: Ctx, label: str, server: Proc, cfg: dict[str, Any]) -> dict[str, Any]:
    """Start the load generator, measure CPU of server, loadgen and database over go..done."""
    path = ctx.out / f"{label}.json"
    cfg = {"hard_limit": cfg["duration"] + cfg.get("drain_timeout", 10) + 300, **cfg}
    path.write_text(json.dumps(cfg))
    lg = Proc("loadgen", [NODE, str(BENCH / "loadgen.js"), str(path)], LOAD_CPU, stdin=True,
              log=ctx.out / "loadgen.log")
    try:
        ready = lg.event("ready", timeout=300)
        time.sleep(0.5)  # let setup traffic settle before the window opens
        r0 = ctx.redis.cpu() if ctx.redis else 0.0
        s0, l0, d0, t0 = server.cpu(), lg.cpu(), ctx.pg.cpu(), time.monotonic()
        spy = profile(ctx, server, label)
        lg.send("go")
        done = lg.event("done", timeout=cfg["duration"] + cfg.get("drain_timeout", 10) + 120)
        s1, l1, d1, t1 = server.cpu(), lg.cpu(), ctx.pg.cpu(), time.monotonic()
        r1 = ctx.redis.cpu() if ctx.redis else 0.0
        stop_profile(spy)
    finally:
        lg.stop()
    done.update(setup_s=ready["setup_s"], wall_s=t1 - t0, server_cpu_s=s1 - s0, loadgen_cpu_s=l1 - l0,
                db_cpu_s=d1 - d0, redis_cpu_s=r1 - r0)
    done["valid"] = all(done.get(k, 0) == 0 for k in
                        ("lost", "duplicates", "gaps", "errors", "unexpected_closes", "undrained", "unacked"))
    log(f"  {label}: valid={done['valid']} deliveries={done['deliveries']} elapsed={done['elapsed_s']:.2f}s "
        f"server_cpu={done['server_cpu_s']:.2f}s loadgen_cpu={done['loadgen_cpu_s']:.2f}s "
        f"db_cpu={done['db_cpu_s']:.2f}s p50/p99={done['latency_ms']['p50']}/{done['latency_ms']['p99']} "
        f"lost={done['lost']} dup={done['duplicates']} err={done['errors']} closes={done['close_codes']}")
    return done


def profile(ctx: Ctx, server: Proc, label: str) -> Proc | None:
    """py-spy on our server for the measured window, when asked for (--py-spy)."""
    if not ctx.py_spy or server.name != "chat":
        return None
    extra = os.environ.get("BENCH_PY_SPY_ARGS", "").split()  # e.g. --subprocesses (run.py --workers)
    return Proc("py-spy", [ctx.py_spy, "record", "--pid", str(server.pid), "--rate", "250", "--nonblocking",
                           "--format", "raw", "-o", str(ctx.out / f"profile-{label}.txt"), *extra], LOAD_CPU,
                log=ctx.out / "py-spy.log")


def stop_profile(spy: Proc | None) -> None:
    if spy is not None:  # py-spy writes its profile on SIGINT
        os.killpg(spy.pid, signal.SIGINT)
        spy.p.wait(60)


def med(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def row(ctx: Ctx, sid: str, metric: str, ours: float | None, base: float | None, ratio: float | None,
        target: str, ok: bool | None, note: str = "") -> None:
    ctx.rows.append({"id": sid, "metric": metric, "ours": ours, "base": base, "ratio": ratio, "target": target,
                     "pass": ok, "note": note})


def alternate(ctx: Ctx, sid: str, ours: Callable[[int], dict[str, Any]],
              base: Callable[[int], dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Baseline then ours, `runs` times; the pairs."""
    pairs = []
    for i in range(ctx.runs):
        log(f"{sid} run {i + 1}/{ctx.runs}")
        b = base(i)
        o = ours(i)
        pairs.append((o, b))
    ctx.raw[sid] = [{"ours": o, "baseline": b} for o, b in pairs]
    return pairs


def per_delivery_us(r: dict[str, Any]) -> float | None:
    return r["server_cpu_s"] * 1e6 / r["deliveries"] if r["deliveries"] else None


def validity(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> tuple[bool, str]:
    bad = sum(not o["valid"] for o, _ in pairs)
    bad_b = sum(not b["valid"] for _, b in pairs)
    note = ""
    if bad or bad_b:
        note = f"INVALID runs: ours {bad}/{len(pairs)}, baseline {bad_b}/{len(pairs)} (loss, duplicates or errors)"
    return bad == 0 and bad_b == 0, note


def loadgen_note(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    lg = med([o["loadgen_cpu_s"] / o["elapsed_s"] for o, _ in pairs] + [b["loadgen_cpu_s"] / b["elapsed_s"]
                                                                      for _, b in pairs])
    return f"loadgen CPU {100 * (lg or 0):.0f}% of a core"


# --- rooms ----------------------------------------------------------------------------

def room_specs(users: list[dict[str, Any]], cid: int, subscribers: int, send: dict[str, Any]) -> list[dict[str, Any]]:
    """User 0 sends (not subscribed); `subscribers` connections spread over the other users."""
    conns = [{"token": users[0]["token"], "subs": [], "send": {"cid": cid, **send}}]
    for i in range(subscribers):
        conns.append({"token": users[1 + i % (len(users) - 1)]["token"], "subs": [cid]})
    return conns


def relay_specs(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**s, "token": "x"} for s in specs]


def room_pairs(ctx: Ctx, sid: str, subs: int, send: dict[str, Any], duration: int, base_cid: int) -> list[Any]:
    """One room of `subs` subscribers, one sender with `send`'s pacing: ours and the relay, alternately."""
    chat, relay = Chat(ctx, sid, ctx.size("users", 21, 6)), Relay(ctx, sid)
    try:
        def cfg(url: str, cid: int, tokens: bool) -> dict[str, Any]:
            specs = room_specs(chat.users, cid, subs, send)
            return {"mode": "room", "url": url, "duration": duration,
                    "conns": specs if tokens else relay_specs(specs)}

        def ours(i: int) -> dict[str, Any]:
            cid = chat.conversation(0, list(range(len(chat.users))))
            return load_run(ctx, f"{sid}-ours-{i}", chat.proc, cfg(chat.url, cid, True))

        def base(i: int) -> dict[str, Any]:
            return load_run(ctx, f"{sid}-base-{i}", relay.proc, cfg(relay.url, base_cid + i, False))

        return alternate(ctx, sid, ours, base)
    finally:
        chat.stop()
        relay.stop()


def f1(ctx: Ctx) -> None:
    subs, rate = ctx.size("subscribers", 1000, 50), ctx.size("rate", 50, 20)
    duration = ctx.size("duration", 10, 2)
    pairs = room_pairs(ctx, "F1", subs, {"rate": rate, "max": int(rate * duration)}, duration, 1000)
    valid, note = validity(pairs)
    o, b = med([per_delivery_us(o) for o, _ in pairs]), med([per_delivery_us(b) for _, b in pairs])
    ratio = med([per_delivery_us(o) / per_delivery_us(b) for o, b in pairs])  # type: ignore[operator]
    row(ctx, "F1", f"server CPU µs/delivery ({subs} subs x {rate} msg/s)", o, b, ratio, "<= 1.25x",
        valid and ratio is not None and ratio <= 1.25, note or loadgen_note(pairs))
    o99, b99 = med([o["latency_ms"]["p99"] for o, _ in pairs]), med([b["latency_ms"]["p99"] for _, b in pairs])
    o50, b50 = med([o["latency_ms"]["p50"] for o, _ in pairs]), med([b["latency_ms"]["p50"] for _, b in pairs])
    diff = med([o["latency_ms"]["p99"] - b["latency_ms"]["p99"] for o, b in pairs])
    row(ctx, "F1", "p99 send->receive ms", o99, b99, o99 / b99 if o99 and b99 else None, "<= base + 5 ms",
        valid and diff is not None and diff <= 5, f"p50 {o50:.1f} vs {b50:.1f} ms; p99 diff {diff:+.1f} ms")


def f2(ctx: Ctx) -> None:
    subs, window = ctx.size("subscribers", 1000, 50), ctx.size("window", 8, 4)
    duration = ctx.size("duration", 10, 2)
    pairs = room_pairs(ctx, "F2", subs, {"window": window}, duration, 2000)
    valid, note = validity(pairs)

    def rate(r: dict[str, Any]) -> float:
        return r["deliveries"] / r["elapsed_s"]

    o, b = med([rate(o) for o, _ in pairs]), med([rate(b) for _, b in pairs])
    ratio = med([rate(o) / rate(b) for o, b in pairs])
    lg_busy = med([b["loadgen_cpu_s"] / b["elapsed_s"] for _, b in pairs]) or 0
    srv_busy_b = med([b["server_cpu_s"] / b["elapsed_s"] for _, b in pairs]) or 0
    srv_busy_o = med([o["server_cpu_s"] / o["elapsed_s"] for o, _ in pairs]) or 0
    busy = (f"server CPU {100 * srv_busy_o:.0f}% (base {100 * srv_busy_b:.0f}%), "
            f"loadgen {100 * lg_busy:.0f}% during the baseline")
    row(ctx, "F2", f"deliveries/s, window {window} (end to end)", o, b, ratio, ">= 0.8x",
        valid and ratio is not None and ratio >= 0.8, note or busy)
    ou, bu = med([per_delivery_us(o) for o, _ in pairs]), med([per_delivery_us(b) for _, b in pairs])
    ratio_u = med([per_delivery_us(o) / per_delivery_us(b) for o, b in pairs])  # type: ignore[operator]
    row(ctx, "F2", "server CPU µs/delivery at max rate", ou, bu, ratio_u, "(reported)", None,
        "the figure to compare when the load generator saturates first" if lg_busy > 0.9 else "")


def f3(ctx: Ctx) -> None:
    rooms, members = ctx.size("rooms", 200, 10), ctx.size("members", 5, 5)
    rate, duration = ctx.size("rate", 5, 5), ctx.size("duration", 10, 2)
    nusers = ctx.size("users", 40, 10)
    chat, relay = Chat(ctx, "F3", nusers), Relay(ctx, "F3")
    try:
        def specs(cids: list[int], tokens: bool) -> list[dict[str, Any]]:
            conns = []
            for r, cid in enumerate(cids):
                for k in range(members):
                    u = chat.users[(r + k) % nusers]
                    conns.append({"token": u["token"] if tokens else "x", "subs": [cid],
                                  "send": {"cid": cid, "rate": rate, "max": int(rate * duration)}})
            return conns

        stored: list[tuple[int, int]] = []

        def ours(i: int) -> dict[str, Any]:
            cids = [chat.conversation(r % nusers, [(r + k) % nusers for k in range(members)]) for r in range(rooms)]
            res = load_run(ctx, f"F3-ours-{i}", chat.proc, {"mode": "room", "url": chat.url, "duration": duration,
                                                           "conns": specs(cids, True), "connect_concurrency": 50})
            res["stored"] = chat.stored(cids)
            stored.append((res["stored"], res["acks"]))
            if res["stored"] != res["acks"]:
                res["valid"] = False
            return res

        def base(i: int) -> dict[str, Any]:
            cids = [3_000_000 + i * 10_000 + r for r in range(rooms)]
            return load_run(ctx, f"F3-base-{i}", relay.proc, {"mode": "room", "url": relay.url, "duration": duration,
                                                             "conns": specs(cids, False)})

        pairs = alternate(ctx, "F3", ours, base)
    finally:
        chat.stop()
        relay.stop()
    valid, note = validity(pairs)
    all_stored = all(s == a for s, a in stored)
    row(ctx, "F3", f"all stored ({rooms} rooms x {members}, {rate} msg/s each)",
        med([o["stored"] for o, _ in pairs]), med([o["acks"] for o, _ in pairs]), None, "stored == acked",
        valid and all_stored, note or f"stored/acked per run: {stored}")
    o99, b99 = med([o["latency_ms"]["p99"] for o, _ in pairs]), med([b["latency_ms"]["p99"] for _, b in pairs])
    o50 = med([o["latency_ms"]["p50"] for o, _ in pairs])
    row(ctx, "F3", "p99 send->receive ms", o99, b99, o99 / b99 if o99 and b99 else None, "<= 50 ms",
        valid and o99 is not None and o99 <= 50, f"p50 {o50:.1f} ms; {loadgen_note(pairs)}")
    ou, bu = med([per_delivery_us(o) for o, _ in pairs]), med([per_delivery_us(b) for _, b in pairs])
    ratio = med([per_delivery_us(o) / per_delivery_us(b) for o, b in pairs])  # type: ignore[operator]
    cores = med([o["server_cpu_s"] / o["elapsed_s"] for o, _ in pairs]) or 0
    db = med([o["db_cpu_s"] / o["elapsed_s"] for o, _ in pairs]) or 0
    row(ctx, "F3", "server CPU µs/delivery", ou, bu, ratio, "(reported)", None,
        f"server {100 * cores:.0f}% of CPU 0, PostgreSQL {100 * db:.0f}% of CPU 1")


def f4(ctx: Ctx) -> None:
    n, rooms = ctx.size("idle", 10_000, 300), ctx.size("rooms", 100, 3)
    nusers = ctx.size("users", 20, 4)
    results: list[tuple[float, float]] = []

    def idle(label: str, proc: Proc, url: str, tokens: list[str], room_ids: list[int]) -> float:
        conns = [{"token": tokens[i % len(tokens)], "subs": [room_ids[i % rooms]]} for i in range(n)]
        path = ctx.out / f"{label}.json"
        path.write_text(json.dumps({"mode": "idle", "url": url, "duration": 0, "conns": conns,
                                    "connect_concurrency": 200, "hard_limit": 600}))
        time.sleep(1)
        before = proc.rss_kb()
        lg = Proc("loadgen", [NODE, str(BENCH / "loadgen.js"), str(path)], LOAD_CPU, stdin=True,
                  log=ctx.out / "loadgen.log")
        try:
            lg.event("ready", timeout=300)
            time.sleep(3)  # idle: let the server settle
            after = proc.rss_kb()
            lg.send("stop")
            done = lg.event("done", timeout=60)
        finally:
            lg.stop()
        per = (after - before) / n
        ok = done["open"] == n and done["unexpected_closes"] == 0 and done["errors"] == 0
        log(f"  {label}: rss {before} -> {after} KB, {per:.1f} KB/conn, open {done['open']}/{n}, valid={ok}")
        return per if ok else float("nan")

    # A fresh server per run: freed memory is not given back to the OS, so a second run
    # on the same process would measure nothing.
    for i in range(ctx.runs):
        log(f"F4 run {i + 1}/{ctx.runs}")
        relay = Relay(ctx, f"F4-{i}")
        try:
            b = idle(f"F4-base-{i}", relay.proc, relay.url, ["x"], [4_000_000 + r for r in range(rooms)])
        finally:
            relay.stop()
        chat = Chat(ctx, f"F4-{i}", nusers)
        try:
            cids = [chat.conversation(0, list(range(nusers))) for _ in range(rooms)]
            o = idle(f"F4-ours-{i}", chat.proc, chat.url, [u["token"] for u in chat.users], cids)
        finally:
            chat.stop()
        results.append((o, b))
    ctx.raw["F4"] = [{"ours_kb_per_conn": o, "baseline_kb_per_conn": b} for o, b in results]
    valid = all(o == o and b == b for o, b in results)  # no NaN
    o, b = med([o for o, _ in results]), med([b for _, b in results])
    ratio = med([o / b for o, b in results])
    row(ctx, "F4", f"RSS KB per idle subscribed connection ({n})", o, b, ratio, "<= 1.5x",
        valid and ratio is not None and ratio <= 1.5,
        "" if valid else "INVALID: connections refused or closed")


def s1(ctx: Ctx) -> None:
    clients, duration = ctx.size("clients", 50, 5), ctx.size("duration", 10, 2)
    nusers = ctx.size("users", 40, 5)
    chat = Chat(ctx, "S1", nusers)
    try:
        def ours(i: int) -> dict[str, Any]:
            cids = [chat.conversation(c % nusers, [c % nusers]) for c in range(clients)]
            conns = [{"token": chat.users[c % nusers]["token"], "subs": [cid], "send": {"cid": cid, "window": 1}}
                     for c, cid in enumerate(cids)]
            res = load_run(ctx, f"S1-ours-{i}", chat.proc, {"mode": "room", "url": chat.url, "duration": duration,
                                                           "conns": conns})
            res["stored"] = chat.stored(cids)
            if res["stored"] != res["acks"]:
                res["valid"] = False
            res["rate"] = res["stored"] / res["elapsed_s"]
            return res

        def base(i: int) -> dict[str, Any]:
            cids = [chat.conversation(c % nusers, [c % nusers]) for c in range(clients)]
            proc = Proc("raw_insert", [PY, str(BENCH / "baselines" / "raw_insert.py"), "--dsn", chat.db,
                                       "--conversations", ",".join(map(str, cids)),
                                       "--author", str(chat.users[0]["id"]), "--seconds", str(duration)],
                        SERVER_CPU, stdin=True, log=ctx.out / "raw_insert.log")
            try:
                proc.event("ready", timeout=60)
                s0, d0 = proc.cpu(), ctx.pg.cpu()
                proc.send("go")
                done = proc.event("done", timeout=duration + 60)
                s1_, d1 = proc.cpu(), ctx.pg.cpu()
            finally:
                proc.stop()
            done.update(rate=done["stored"] / done["elapsed_s"], server_cpu_s=s1_ - s0, db_cpu_s=d1 - d0,
                        valid=True)
            log(f"  S1-base-{i}: {done['rate']:.0f} inserts/s, cpu {done['server_cpu_s']:.2f}s "
                f"db {done['db_cpu_s']:.2f}s")
            return done

        pairs = alternate(ctx, "S1", ours, base)
    finally:
        chat.stop()
    valid = all(o["valid"] for o, _ in pairs)
    o, b = med([o["rate"] for o, _ in pairs]), med([b["rate"] for _, b in pairs])
    ratio = med([o["rate"] / b["rate"] for o, b in pairs])
    db_o = med([o["db_cpu_s"] / o["elapsed_s"] for o, _ in pairs]) or 0
    db_b = med([b["db_cpu_s"] / b["elapsed_s"] for _, b in pairs]) or 0
    srv = med([o["server_cpu_s"] / o["elapsed_s"] for o, _ in pairs]) or 0
    row(ctx, "S1", f"stored+acked msgs/s ({clients} clients, window 1)", o, b, ratio, ">= 0.5x",
        valid and ratio is not None and ratio >= 0.5,
        ("" if valid else "INVALID runs; ") + f"server {100 * srv:.0f}% CPU 0; PostgreSQL {100 * db_o:.0f}% "
        f"(baseline {100 * db_b:.0f}%) of CPU 1")


# --- AI -------------------------------------------------------------------------------

def ai_env(fake_port: int, streams: int) -> dict[str, str]:
    base = f"http://127.0.0.1:{fake_port}/v1"
    toml = (f'[providers.openai]\nbase_url = "{base}"\nmodels = ["fake"]\nconcurrency = {max(16, streams)}\n')
    return {"OPENAI_BASE_URL": base, "OPENAI_API_KEY": "bench", "OPENAI_MODELS": "fake",
            "DEFAULT_MODEL": "openai:fake", "_toml": toml}


def warm_up(chat: Chat, turns: int) -> None:
    """AI turns before the measured window, as the direct client does one: the first reply's cost
    lookup loads genai-prices' tables, and the provider connection is opened (per worker: with
    several, connections land on one or the other, so a few turns reach both)."""
    cid = chat.conversation(0, [0], with_ai=True)
    for i in range(turns):
        rest(chat.base, "POST", f"/conversations/{cid}/messages?wait=true", {"content": f"warm-up {i}"},
             chat.users[0]["token"])


def ai_scenario(ctx: Ctx, sid: str, streams: int, turns: int, tokens: int, delay: float, workers: int = 1,
                redis_url: str | None = None, first_delay: float = 0.0) -> list[Any]:
    fport = free_port()
    fake = Proc("fake", [PY, str(BENCH / "fake_provider.py"), "--port", str(fport), "--tokens", str(tokens),
                         "--delay", str(delay), "--first-delay", str(first_delay)], LOAD_CPU,
                log=ctx.out / f"fake-{sid}.log")
    wait_port(fport, fake)
    nusers = min(streams, ctx.size("users", 40, 4))
    chat = Chat(ctx, sid, nusers, ai_env(fport, streams), workers=workers, redis_url=redis_url)
    try:
        warm_up(chat, 2 * workers)

        def ours(i: int) -> dict[str, Any]:
            cids = [chat.conversation(s % nusers, [s % nusers], with_ai=True) for s in range(streams)]
            conns = [{"token": chat.users[s % nusers]["token"], "subs": [cid], "ai": {"cid": cid, "turns": turns}}
                     for s, cid in enumerate(cids)]
            fake0 = fake.cpu()
            res = load_run(ctx, f"{sid}-ours-{i}", chat.proc, {"mode": "ai", "url": chat.url, "tokens": tokens,
                                                              "duration": 120, "drain_timeout": 60, "conns": conns})
            a = res["ai"]
            res["fake_cpu_s"] = fake.cpu() - fake0
            res["valid"] = (res["valid"] and a["complete"] == streams * turns and a["unfinished"] == 0
                            and a["bad_text"] == 0 and a["index_gaps"] == 0 and a["missing_tokens"] == 0)
            log(f"    ai: {a['complete']}/{streams * turns} complete, ttfd p50 {a['ttfd_ms']['p50']}, "
                f"start->delta p50 {a['start_to_delta_ms']['p50']}, token p50/p99 {a['token_latency_ms']['p50']}/"
                f"{a['token_latency_ms']['p99']} ms, deltas {a['deltas']} for {a['tokens']} tokens")
            return res

        def base(i: int) -> dict[str, Any]:
            return direct(ctx, f"{sid}-base-{i}", f"http://127.0.0.1:{fport}/v1", SERVER_CPU, streams, turns, tokens)

        return alternate(ctx, sid, ours, base)
    finally:
        chat.stop()
        fake.stop()


def a1(ctx: Ctx, sid: str = "A1", first_delay: float = 0.0) -> None:
    turns, tokens = ctx.size("turns", 20, 3), ctx.size("tokens", 500, 50)
    pairs = ai_scenario(ctx, sid, 1, turns, tokens, 0.0, first_delay=first_delay)
    valid = all(o["valid"] and b["valid"] for o, b in pairs)
    o = med([o["ai"]["ttfd_ms"]["p50"] for o, _ in pairs])
    b = med([b["ttfd_ms"]["p50"] for _, b in pairs])
    added = med([o["ai"]["ttfd_ms"]["p50"] - b["ttfd_ms"]["p50"] for o, b in pairs])
    s2d = med([o["ai"]["start_to_delta_ms"]["p50"] for o, _ in pairs])
    first = f"first token after {first_delay * 1000:.0f} ms" if first_delay else "no delay"
    row(ctx, sid, f"time to first delta p50 ms ({tokens} tokens, {first})", o, b, o / b if o and b else None,
        "<= direct + 1 ms", valid and added is not None and added <= 1.0,
        f"added {added:+.2f} ms; ai.start->first delta p50 {s2d:.2f} ms; "
        + ("all text delivered" if valid else "INVALID: text missing or turns failed"))


def a1l(ctx: Ctx) -> None:
    """A1 against a provider that thinks 10 ms before its first token (a near GPU node; cloud APIs
    take 100s of ms). With no delay, the fake's whole reply is made on the core PostgreSQL runs
    on, so the turn's commits and the provider's work queue behind each other there: A1 then
    shows what the server adds on that core, not whether it overlaps the two."""
    a1(ctx, "A1L", 0.010)


def a2(ctx: Ctx) -> None:
    streams, tokens = ctx.size("streams", 1000, 20), ctx.size("tokens", 50, 20)
    delay = ctx.size("delay", 0.02, 0.02)
    pairs = ai_scenario(ctx, "A2", streams, 1, tokens, delay)
    valid = all(o["valid"] and b["valid"] for o, b in pairs)
    o = med([o["ai"]["token_latency_ms"]["p99"] for o, _ in pairs])
    b = med([b["token_latency_ms"]["p99"] for _, b in pairs])
    added = med([o["ai"]["token_latency_ms"]["p99"] - b["token_latency_ms"]["p99"] for o, b in pairs])
    row(ctx, "A2", f"p99 token latency ms ({streams} turns x {tokens} tokens @ {delay * 1000:.0f} ms)", o, b,
        o / b if o and b else None, "<= direct + 20 ms", valid and added is not None and added <= 20,
        f"added {added:+.1f} ms; coalescing window {coalesce_ms()} ms (the server's default); "
        + ("all complete" if valid else "INVALID: turns incomplete"))
    per_tok = med([o["server_cpu_s"] * 1e6 / max(1, o["ai"]["tokens"]) for o, _ in pairs])
    per_tok_b = med([b["server_cpu_s"] * 1e6 / max(1, b["tokens"]) for _, b in pairs])
    elapsed = med([o["elapsed_s"] for o, _ in pairs])
    row(ctx, "A2", "server CPU µs per relayed token", per_tok, per_tok_b,
        per_tok / per_tok_b if per_tok and per_tok_b else None, "(reported)", None,
        f"all turns done in {elapsed:.1f} s (one turn alone: {tokens * delay:.1f} s)")


# --- several processes ------------------------------------------------------------------

def p6(ctx: Ctx) -> None:
    """F1 and F2's room on 2 processes joined by Redis against 1 process with the in-memory broker.

    `run.py --workers 2` (SO_REUSEPORT: the kernel spreads the connections over the two); the
    sender lands on one, the other delivers to its share of the room from Redis. CPU is the
    sum over the parent and both workers; Redis (pinned to CPU 1 with the load generator and
    PostgreSQL) is reported apart, like PostgreSQL."""
    subs, rate = ctx.size("subscribers", 1000, 50), ctx.size("rate", 50, 20)
    window, duration = ctx.size("window", 8, 4), ctx.size("duration", 10, 2)
    ctx.redis = Redis(ctx.out)
    one = two = None
    try:
        one = Chat(ctx, "P6-one", ctx.size("users", 21, 6))
        two = Chat(ctx, "P6-two", ctx.size("users", 21, 6), workers=2, redis_url=ctx.redis.url)
        for shape, send in (("F1", {"rate": rate, "max": int(rate * duration)}), ("F2", {"window": window})):
            def run(chat: Chat, label: str) -> dict[str, Any]:
                cid = chat.conversation(0, list(range(len(chat.users))))
                return load_run(ctx, label, chat.proc, {"mode": "room", "url": chat.url, "duration": duration,
                                                       "conns": room_specs(chat.users, cid, subs, send)})

            sid = f"P6-{shape}"
            pairs = alternate(ctx, sid, lambda i: run(two, f"{sid}-two-{i}"),  # noqa: B023
                              lambda i: run(one, f"{sid}-one-{i}"))  # noqa: B023
            valid, note = validity(pairs)
            o, b = med([per_delivery_us(o) for o, _ in pairs]), med([per_delivery_us(b) for _, b in pairs])
            ratio = med([per_delivery_us(o) / per_delivery_us(b) for o, b in pairs])  # type: ignore[operator]
            redis = med([o["redis_cpu_s"] * 1e6 / o["deliveries"] for o, _ in pairs if o["deliveries"]]) or 0
            rates = med([o["deliveries"] / o["elapsed_s"] for o, _ in pairs]) or 0
            rates_b = med([b["deliveries"] / b["elapsed_s"] for _, b in pairs]) or 0
            what = (f"{subs} subs x {rate} msg/s" if shape == "F1" else f"window {window}, max rate")
            row(ctx, "P6", f"{shape}: server CPU µs/delivery, 2 processes + Redis vs 1 ({what})", o, b, ratio,
                "<= 1.3x", valid and ratio is not None and ratio <= 1.3,
                note or (f"every delivery once and in order; Redis {redis:.2f} µs/delivery on CPU 1; "
                         f"{rates:,.0f} vs {rates_b:,.0f} deliveries/s; {loadgen_note(pairs)}"))
    finally:
        for chat in (one, two):
            if chat is not None:
                chat.stop()
        ctx.redis.stop()
        ctx.redis = None


def p6b(ctx: Ctx) -> None:
    """A2 on 2 processes joined by Redis (both pinned to the server's core, as in every scenario)."""
    streams, tokens = ctx.size("streams", 1000, 20), ctx.size("tokens", 50, 20)
    delay = ctx.size("delay", 0.02, 0.02)
    ctx.redis = Redis(ctx.out)
    try:
        pairs = ai_scenario(ctx, "P6b", streams, 1, tokens, delay, workers=2, redis_url=ctx.redis.url)
    finally:
        ctx.redis.stop()
        ctx.redis = None
    valid = all(o["valid"] and b["valid"] for o, b in pairs)
    o = med([o["ai"]["token_latency_ms"]["p99"] for o, _ in pairs])
    b = med([b["token_latency_ms"]["p99"] for _, b in pairs])
    added = med([o["ai"]["token_latency_ms"]["p99"] - b["token_latency_ms"]["p99"] for o, b in pairs])
    complete = med([o["ai"]["complete"] for o, _ in pairs])
    row(ctx, "P6b", f"p99 token latency ms, 2 processes + Redis ({streams} turns x {tokens} tokens @ "
        f"{delay * 1000:.0f} ms)", o, b, o / b if o and b else None, "all complete, <= direct + 20 ms",
        valid and added is not None and added <= 20,
        f"added {added:+.1f} ms; {complete:.0f}/{streams} complete" + ("" if valid else "; INVALID: turns incomplete"))
    per_tok = med([o["server_cpu_s"] * 1e6 / max(1, o["ai"]["tokens"]) for o, _ in pairs])
    per_tok_b = med([b["server_cpu_s"] * 1e6 / max(1, b["tokens"]) for _, b in pairs])
    redis = med([o["redis_cpu_s"] * 1e6 / max(1, o["ai"]["tokens"]) for o, _ in pairs]) or 0
    row(ctx, "P6b", "server CPU µs per relayed token, 2 processes", per_tok, per_tok_b,
        per_tok / per_tok_b if per_tok and per_tok_b else None, "(reported)", None,
        f"sum over both workers; Redis {redis:.1f} µs/token on CPU 1")


# --- the OpenAI-compatible endpoint -------------------------------------------------------

def direct(ctx: Ctx, label: str, url: str, cpu: str, streams: int, turns: int, tokens: int,
           server: Proc | None = None, **client: str) -> dict[str, Any]:
    """One run of baselines/direct_ai.py: straight at the fake provider (its own CPU is the
    measure), or, given `server`, at our /v1 endpoint (the server's CPU is the measure)."""
    args = [f"--{k}={v}" for k, v in client.items()]
    proc = Proc("direct_ai", [PY, str(BENCH / "baselines" / "direct_ai.py"), "--url", url, "--streams", str(streams),
                              "--turns", str(turns), "--tokens", str(tokens), *args], cpu, stdin=True,
                log=ctx.out / f"direct_ai-{label}.log")
    measured = server or proc
    try:
        proc.event("ready", timeout=60)
        c0 = measured.cpu()
        spy = profile(ctx, server, label) if server else None
        proc.send("go")
        done = proc.event("done", timeout=600)
        done["server_cpu_s"] = measured.cpu() - c0
        stop_profile(spy)
    finally:
        proc.stop()
    done["valid"] = done["complete"] == streams * turns
    log(f"  {label}: {done['complete']}/{streams * turns} complete, ttft p50/p99 {done['ttfd_ms']['p50']:.2f}/"
        f"{done['ttfd_ms']['p99']:.2f} ms, token p50/p99 {done['token_latency_ms']['p50']:.2f}/"
        f"{done['token_latency_ms']['p99']:.2f} ms, cpu {done['server_cpu_s']:.2f} s")
    return done


def openai_scenario(ctx: Ctx, sid: str, streams: int, turns: int, tokens: int, delay: float) -> list[Any]:
    """The same client streams from our /v1 (it on CPU 1, the server on CPU 0) and straight
    from the fake provider (it on CPU 0 in the server's place)."""
    fport = free_port()
    fake = Proc("fake", [PY, str(BENCH / "fake_provider.py"), "--port", str(fport), "--tokens", str(tokens),
                         "--delay", str(delay)], LOAD_CPU, log=ctx.out / f"fake-{sid}.log")
    wait_port(fport, fake)
    chat = Chat(ctx, sid, 1, {**ai_env(fport, streams), "CHAT_API_MAX_CONCURRENT_PER_USER": "100000"})
    try:
        return alternate(
            ctx, sid,
            lambda i: direct(ctx, f"{sid}-ours-{i}", chat.base + "/v1", LOAD_CPU, streams, turns, tokens, chat.proc,
                             token=chat.users[0]["token"], model="openai:fake"),
            lambda i: direct(ctx, f"{sid}-base-{i}", f"http://127.0.0.1:{fport}/v1", SERVER_CPU, streams, turns,
                             tokens))
    finally:
        chat.stop()
        fake.stop()


def o1(ctx: Ctx) -> None:
    turns, tokens = ctx.size("turns", 20, 3), ctx.size("tokens", 500, 50)
    pairs = openai_scenario(ctx, "O1", 1, turns, tokens, 0.0)
    valid = all(o["valid"] and b["valid"] for o, b in pairs)
    o, b = med([o["ttfd_ms"]["p50"] for o, _ in pairs]), med([b["ttfd_ms"]["p50"] for _, b in pairs])
    added = med([o["ttfd_ms"]["p50"] - b["ttfd_ms"]["p50"] for o, b in pairs])
    row(ctx, "O1", f"/v1 time to first token p50 ms ({tokens} tokens, no delay)", o, b, o / b if o and b else None,
        "<= direct + 2 ms", valid and added is not None and added <= 2.0,
        f"added {added:+.2f} ms; " + ("all text delivered" if valid else "INVALID: text missing or requests failed"))


def o2(ctx: Ctx) -> None:
    streams, tokens = ctx.size("streams", 100, 10), ctx.size("tokens", 200, 20)
    delay = ctx.size("delay", 0.01, 0.01)
    pairs = openai_scenario(ctx, "O2", streams, 1, tokens, delay)
    valid = all(o["valid"] and b["valid"] for o, b in pairs)
    o, b = med([o["ttfd_ms"]["p99"] for o, _ in pairs]), med([b["ttfd_ms"]["p99"] for _, b in pairs])
    ratio = med([o["ttfd_ms"]["p99"] / b["ttfd_ms"]["p99"] for o, b in pairs])
    row(ctx, "O2", f"/v1 time to first token p99 ms ({streams} streams x {tokens} tokens @ {delay * 1000:.0f} ms)",
        o, b, ratio, "<= 1.5x direct", valid and ratio is not None and ratio <= 1.5,
        "all complete" if valid else "INVALID: requests incomplete")
    per_tok = med([o["server_cpu_s"] * 1e6 / max(1, o["tokens"]) for o, _ in pairs])
    per_tok_b = med([b["server_cpu_s"] * 1e6 / max(1, b["tokens"]) for _, b in pairs])
    cpu_ratio = per_tok / per_tok_b if per_tok and per_tok_b else None
    row(ctx, "O2", "/v1 server CPU µs per relayed token", per_tok, per_tok_b, cpu_ratio, "<= 2x direct",
        valid and cpu_ratio is not None and cpu_ratio <= 2.0,
        f"token p99 {med([o['token_latency_ms']['p99'] for o, _ in pairs]):.1f} ms vs "
        f"{med([b['token_latency_ms']['p99'] for _, b in pairs]):.1f} ms direct")


SCENARIOS: dict[str, Callable[[Ctx], None]] = {"F1": f1, "F2": f2, "F3": f3, "F4": f4, "S1": s1, "A1": a1, "A1L": a1l,
                                               "A2": a2,
                                               "O1": o1, "O2": o2, "P6": p6, "P6B": p6b}


def coalesce_ms() -> str:
    """The server's default coalescing window, read from its settings module."""
    import re

    text = (BENCH.parent / "server" / "settings.py").read_text()
    found = re.search(r"coalesce_ms: float = ([0-9.]+)", text)
    return found.group(1) if found else "?"
