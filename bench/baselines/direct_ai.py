"""AI relay baseline: an aiohttp client streaming straight from the fake provider.

The limit for AI relay: what it costs just to receive the tokens the server would relay.
Time to first delta = request start -> first token seen (monotonic, this process); token
latency = arrival (wall clock) - the fake's stamp in the token. Prints one JSON line.

usage: python bench/baselines/direct_ai.py --url http://127.0.0.1:P/v1 --streams 1000 --turns 1 --tokens 50

With --token and --model it is also the client of our OpenAI-compatible endpoint (O1, O2):
the same requests, sent to the chat server's /v1 instead of the fake provider.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time

import aiohttp
import orjson

STAMP = re.compile(rb"<(\d+):(\d+)>")


def summary(values: list[float]) -> dict[str, float | int | None]:
    s = sorted(values)

    def q(p: float) -> float | None:
        return s[min(len(s) - 1, int(p * len(s)))] if s else None

    return {"n": len(s), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": s[-1] if s else None,
            "mean": sum(s) / len(s) if s else None}


async def turn(session: aiohttp.ClientSession, url: str, tokens: int, ttfd: list[float],
               latency: list[float], model: str = "fake", headers: dict[str, str] | None = None) -> bool:
    body = {"model": model, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hello"}]}
    start = time.perf_counter()
    first = True
    nxt = 0
    tail = b""
    async with session.post(url + "/chat/completions", data=orjson.dumps(body),
                            headers={"Content-Type": "application/json", **(headers or {})}) as resp:
        if resp.status != 200:
            return False
        async for data in resp.content.iter_any():
            now_us = time.time() * 1e6
            data = tail + data
            cut = data.rfind(b"\n\n")  # parse whole events only
            tail, data = data[cut + 2:], data[:cut + 2]
            for m in STAMP.finditer(data):
                if first:  # time to the first text token, as the server's first ai.delta carries one
                    ttfd.append((time.perf_counter() - start) * 1000)
                    first = False
                if int(m.group(1)) != nxt:
                    return False
                nxt += 1
                latency.append((now_us - int(m.group(2))) / 1000)
    return nxt == tokens


async def main(args: argparse.Namespace) -> None:
    ttfd: list[float] = []
    latency: list[float] = []
    ok = 0
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None

    async def stream(session: aiohttp.ClientSession) -> None:
        nonlocal ok
        for _ in range(args.turns):
            done = await turn(session, args.url, args.tokens, ttfd, latency, args.model, headers)
            ok += done  # read ok only after the await: other streams update it meanwhile

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await stream(session)  # warm-up: one turn, opens a keep-alive connection
        ok, ttfd, latency = 0, [], []
        print(orjson.dumps({"event": "ready"}).decode(), flush=True)
        sys.stdin.readline()
        start = time.perf_counter()
        async with asyncio.timeout(args.timeout):
            await asyncio.gather(*(stream(session) for _ in range(args.streams)))
        elapsed = time.perf_counter() - start
    print(orjson.dumps({"event": "done", "elapsed_s": elapsed, "turns": args.streams * args.turns,
                        "complete": ok, "tokens": len(latency), "ttfd_ms": summary(ttfd),
                        "token_latency_ms": summary(latency)}).decode(), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--turns", type=int, default=1, help="sequential turns per stream")
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--model", default="fake", help="the model to ask for")
    parser.add_argument("--token", help="a bearer token (for the chat server's /v1)")
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args))
