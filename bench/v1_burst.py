"""Server CPU per /v1/chat/completions request: bursts of concurrent streaming requests.

What O2's time to first token at 100 streams depends on: every request of a burst waits for
the starts of all the others. Runs `run.py` against `fake_provider.py` on a given PostgreSQL,
warms up with one burst, then measures the server's CPU over `--rounds` bursts (optionally
under py-spy; summarise with profile_summary.py). Not pinned, not a pass/fail scenario: a
tool for finding where a request's time goes.

usage: python bench/v1_burst.py --database-url postgresql://... [--rounds 20] [--tokens 1]
       [--delay 0] [--py-spy .venv/bin/py-spy --out /tmp/burst.txt]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import BENCH, PY, ROOT, free_port  # noqa: E402

BURST = 100


async def main(args: argparse.Namespace) -> None:
    fport, port = free_port(), free_port()
    fake = subprocess.Popen([PY, str(BENCH / "fake_provider.py"), "--port", str(fport), "--tokens", str(args.tokens),
                             "--delay", str(args.delay)])
    config = Path(tempfile.mkdtemp()) / "chat.toml"
    config.write_text(f'[providers.openai]\nbase_url = "http://127.0.0.1:{fport}/v1"\nmodels = ["fake"]\n'
                      f"concurrency = {BURST * 10}\n")
    env = {**os.environ, "CHAT_CONFIG": str(config), "DEFAULT_MODEL": "openai:fake", "CHAT_LOG_LEVEL": "warning",
           "CHAT_API_MAX_CONCURRENT_PER_USER": "100000", "CHAT_SEND_RATE_PER_SECOND": "100000",
           "CHAT_SEND_RATE_BURST": "100000", "CHAT_AUTH_RATE_PER_SECOND": "10000", "CHAT_AUTH_RATE_BURST": "10000"}
    server = subprocess.Popen([PY, str(ROOT / "run.py"), "--port", str(port), "--database-url", args.database_url],
                              env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            for _ in range(100):
                try:
                    async with http.get(base + "/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            async with http.post(base + "/auth/register",
                                 json={"username": f"burst{port}", "password": "bench-password-1"}) as r:
                token = (await r.json())["token"]
            body = orjson.dumps({"model": "openai:fake", "stream": True,
                                 "messages": [{"role": "user", "content": "hi"}]})
            headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}

            async def one() -> None:
                async with http.post(base + "/v1/chat/completions", data=body, headers=headers) as r:
                    async for _ in r.content.iter_any():
                        pass

            await asyncio.gather(*(one() for _ in range(BURST)))  # warm-up: connections, caches
            proc = psutil.Process(server.pid)
            spy = None if not args.py_spy else subprocess.Popen(
                [args.py_spy, "record", "--pid", str(server.pid), "--rate", "500", "--nonblocking", "--format",
                 "raw", "-o", args.out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t = proc.cpu_times()
            before = t.user + t.system
            for _ in range(args.rounds):
                await asyncio.gather(*(one() for _ in range(BURST)))
            t = proc.cpu_times()
            print(f"server CPU per request: {(t.user + t.system - before) / (args.rounds * BURST) * 1e6:.0f} µs "
                  f"({args.rounds} bursts of {BURST}, {args.tokens} tokens each)")
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait()
    finally:
        server.terminate()
        fake.terminate()
        server.wait()
        fake.wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database-url", required=True)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--tokens", type=int, default=1)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--py-spy", help="path to py-spy: profile the server during the measured bursts")
    p.add_argument("--out", default="profile-v1-burst.txt")
    asyncio.run(main(p.parse_args()))
