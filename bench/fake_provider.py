"""A lean OpenAI-compatible fake whose tokens carry their send time, for the AI benchmarks.

Why not tests/fakes.py: its stream loop writes each token one interval after making it (it
flushes before the sleep), tokens carry no timestamp, and on aiohttp it costs ~30 µs per
token, so 1,000 streams at 20 ms (50k tokens/s) would saturate the fake before the server.
This one is raw asyncio protocols on uvloop: chunked SSE in the same OpenAI chunk shape
(role preamble, one chunk per token, finish chunk, usage chunk, [DONE]); each token's text
is "<index:wall-clock µs> " stamped just before its write. One timer per stream.

usage: python bench/fake_provider.py --port P --tokens 500 --delay 0 [--first-delay 0.01]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson

HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n")


def chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def sse(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def delta(model: str, d: dict, finish: str | None = None) -> dict:
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}


class Fake(asyncio.Protocol):
    tokens = 50
    delay = 0.02
    first_delay = 0.0  # seconds before the first token, when it differs from `delay` (a model's think time)
    streams = 0

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            method, path = head.split(" ", 2)[:2]
            self.route(method, path, body)

    def route(self, method: str, path: str, body: bytes) -> None:
        assert self.transport is not None
        if method == "GET" and path.endswith("/models"):
            out = orjson.dumps({"object": "list", "data": [{"id": "fake", "object": "model", "created": 0,
                                                             "owned_by": "fake"}]})
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(out), out))
        elif method == "POST" and path.endswith("/chat/completions"):
            model = orjson.loads(body).get("model", "fake") if body else "fake"
            self.busy = True
            Fake.streams += 1
            self.transport.write(HEAD + chunk(sse(delta(model, {"role": "assistant", "content": ""}))))
            self.step(model, 0)
        else:
            self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    def step(self, model: str, i: int) -> None:
        """Send token i now (stamped now), then schedule the next."""
        self.timer = None
        if self.transport is None:
            return
        if i == 0 and (self.first_delay or self.delay):
            self.timer = asyncio.get_running_loop().call_later(self.first_delay or self.delay, self.send, model, 0)
        else:
            self.send(model, i)

    def send(self, model: str, i: int) -> None:
        self.timer = None
        t = self.transport
        if t is None:
            return
        loop = asyncio.get_running_loop()
        if not self.delay:  # everything at once, each token still stamped
            parts = [chunk(sse(delta(model, {"content": f"<{k}:{int(time.time() * 1e6)}> "})))
                     for k in range(self.tokens)]
            t.write(b"".join(parts) + self.tail(model))
            self.finish()
            return
        t.write(chunk(sse(delta(model, {"content": f"<{i}:{int(time.time() * 1e6)}> "}))))
        if i + 1 < self.tokens:
            self.timer = loop.call_later(self.delay, self.send, model, i + 1)
        else:
            t.write(self.tail(model))
            self.finish()

    def tail(self, model: str) -> bytes:
        usage = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                 "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": self.tokens,
                                          "total_tokens": self.tokens + 1}}
        return (chunk(sse(delta(model, {}, "stop"))) + chunk(sse(usage)) + chunk(b"data: [DONE]\n\n")
                + b"0\r\n\r\n")

    def finish(self) -> None:
        self.busy = False
        if self.buf:
            self.data_received(b"")


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Fake, "127.0.0.1", port, backlog=4096)
    print(f"http://127.0.0.1:{port}/v1", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.02, help="seconds between tokens (0: all at once)")
    parser.add_argument("--first-delay", type=float, default=0.0, help="seconds before the first token (0: --delay)")
    args = parser.parse_args()
    Fake.tokens, Fake.delay, Fake.first_delay = args.tokens, args.delay, args.first_delay
    import uvloop

    uvloop.run(main(args.port))
