"""Fake AI providers: real aiohttp servers on 127.0.0.1 speaking each wire format byte for byte."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from providers.base import StreamEnd

FAIL_MODES = ("reset", "error_event", "malformed", "stall", "eof")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """What a fake received, so tests can assert what the provider sent."""

    method: str
    path: str
    headers: CIMultiDict[str]
    json: Any
    peer: tuple[str, int] | None  # client address: same peer = reused keep-alive connection


class FakeServer:
    """A real HTTP server with knobs; subclasses render one wire format.

    Knobs are plain attributes and may be changed between requests:
    tokens, delay, fail_status/fail_body/fail_content_type, fail_after + fail_mode,
    models, usage, finish_reason, raw (+ raw_chunk), model_delay, tail_delay, record.
    """

    content_type = "text/event-stream"
    chat_path = ""
    models_path = ""
    base_path = ""

    def __init__(
        self,
        *,
        tokens: list[str] | tuple[str, ...] = ("Hello", ",", " world", "!"),
        delay: float = 0.0,
        fail_status: int | None = None,
        fail_body: bytes | str | dict[str, Any] | None = None,
        fail_content_type: str | None = None,
        fail_after: int | None = None,
        fail_mode: str = "reset",
        models: list[str] | tuple[str, ...] = ("fake-model",),
        usage: tuple[int, int] | None = None,
        finish_reason: str | None = None,
        raw: bytes | None = None,
        raw_chunk: int | None = None,
        model_delay: float = 0.0,
        tail_delay: float = 0.0,
        record: bool = True,
    ) -> None:
        self.tokens = list(tokens)
        self.delay = delay  # seconds before each token (and between raw pieces)
        self.fail_status = fail_status  # answer every request with this status instead
        self.fail_body = fail_body  # default: the format's JSON error
        self.fail_content_type = fail_content_type  # default: application/json
        self.fail_after = fail_after  # after this many tokens, do fail_mode
        self.fail_mode = fail_mode  # one of FAIL_MODES
        self.models = list(models)
        self.usage = usage  # (prompt, completion); default: words sent, len(tokens)
        self.finish_reason = finish_reason  # default: the format's normal stop reason
        self.raw = raw  # send these bytes verbatim as the stream body
        self.raw_chunk = raw_chunk  # in pieces of this many bytes
        self.model_delay = model_delay  # seconds before answering the models endpoint
        self.tail_delay = tail_delay  # seconds between the end marker and the end of the body
        self.record = record  # False: keep no request log (long benchmarks)
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0  # streams the client closed before we finished
        self.completed = 0  # streams we sent to the end
        self.active = 0
        self.max_active = 0
        self.port = 0  # set before start() to listen on a fixed port
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._changed = asyncio.Event()

    @property
    def url(self) -> str:
        """Scheme, host and port."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What the matching provider takes as base_url."""
        return self.url + self.base_path

    async def __aenter__(self) -> FakeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        app = web.Application()
        app.router.add_post(self.chat_path, self._chat)
        app.router.add_get(self.models_path, self._models)
        self.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))  # 0 (the default) picks a free port
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, backlog=4096).start()

    async def close(self) -> None:
        """Stop listening and end stalled handlers."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_disconnects(self, count: int = 1, timeout: float = 2.0) -> int:
        """Wait until the fake has seen `count` client disconnects mid-stream."""
        async with asyncio.timeout(timeout):
            while self.disconnects < count:
                self._changed.clear()
                await self._changed.wait()
        return self.disconnects

    # --- what subclasses render -------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """Extra endpoints of the format."""

    def preamble(self, model: str, usage: tuple[int, int]) -> bytes:
        return b""

    def token(self, model: str, text: str) -> bytes:
        raise NotImplementedError

    def epilogue(self, model: str, usage: tuple[int, int], body: Any) -> bytes:
        raise NotImplementedError

    def error_event(self) -> bytes:
        raise NotImplementedError

    def garbage(self) -> bytes:
        raise NotImplementedError

    def error_json(self, status: int) -> dict[str, Any]:
        raise NotImplementedError

    def models_json(self) -> dict[str, Any]:
        raise NotImplementedError

    # --- handlers -----------------------------------------------------------------

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw
        if not self.record:
            return body
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(
            RecordedRequest(request.method, request.path, CIMultiDict(request.headers), body, peer)
        )
        return body

    def _failure(self) -> web.Response:
        status = self.fail_status or 500
        body = self.fail_body if self.fail_body is not None else self.error_json(status)
        if isinstance(body, dict):
            body = orjson.dumps(body)
        elif isinstance(body, str):
            body = body.encode()
        ctype = self.fail_content_type or "application/json"
        return web.Response(status=status, body=body, headers={"Content-Type": ctype})

    async def _models(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        if self.model_delay:
            try:
                await asyncio.wait_for(self._closing.wait(), self.model_delay)
            except TimeoutError:
                pass
        if self.fail_status:
            return self._failure()
        return web.Response(body=orjson.dumps(self.models_json()), content_type="application/json")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if self.fail_status:
            return self._failure()
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            resp = web.StreamResponse(headers={"Content-Type": self.content_type, "Cache-Control": "no-cache"})
            await resp.prepare(request)
            try:
                if self.raw is not None:
                    await self._send_raw(resp)
                else:
                    await self._send_stream(request, resp, body)
            except (ConnectionError, OSError):
                self.disconnects += 1
                self._changed.set()
            return resp
        finally:
            self.active -= 1

    async def _send_raw(self, resp: web.StreamResponse) -> None:
        raw = self.raw or b""
        size = self.raw_chunk or len(raw) or 1
        for i in range(0, len(raw), size):
            if self.delay:
                await asyncio.sleep(self.delay)
            await resp.write(raw[i : i + size])
        await resp.write_eof()
        self.completed += 1

    async def _send_stream(self, request: web.Request, resp: web.StreamResponse, body: Any) -> None:
        model = body.get("model", "") if isinstance(body, dict) else ""
        usage = self.usage or (_words(body), len(self.tokens))
        pending = bytearray(self.preamble(model, usage))
        for i, text in enumerate(self.tokens):
            if i == self.fail_after:
                await self._fail(request, resp, pending)
                return
            if self.delay:
                if pending:
                    await resp.write(bytes(pending))
                    pending.clear()
                await asyncio.sleep(self.delay)
            pending += self.token(model, text)
        if self.fail_after is not None and self.fail_after >= len(self.tokens):
            await self._fail(request, resp, pending)
            return
        pending += self.epilogue(model, usage, body)
        await resp.write(bytes(pending))
        if self.tail_delay:
            await asyncio.sleep(self.tail_delay)
        await resp.write_eof()
        self.completed += 1

    async def _fail(self, request: web.Request, resp: web.StreamResponse, pending: bytearray) -> None:
        mode = self.fail_mode
        if mode == "error_event":
            pending += self.error_event()
        elif mode == "malformed":
            pending += self.garbage()
        elif mode not in FAIL_MODES:
            raise ValueError(f"unknown fail_mode {mode!r}")
        if pending:
            await resp.write(bytes(pending))
        if mode == "reset":
            await asyncio.sleep(0.01)  # let the tokens leave before the RST discards them
            transport = request.transport
            if transport is not None:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            return
        if mode == "stall":
            while not self._closing.is_set():
                transport = request.transport
                if transport is None or transport.is_closing():
                    raise ConnectionResetError("client went away during stall")
                await asyncio.sleep(0.01)
            return
        await resp.write_eof()


def _words(body: Any) -> int:
    messages = body.get("messages", []) if isinstance(body, dict) else []
    count = sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))
    system = body.get("system") if isinstance(body, dict) else None
    return count + (len(system.split()) if isinstance(system, str) else 0)


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    payload = data if isinstance(data, bytes) else orjson.dumps(data)
    return head + b"data: " + payload + b"\n\n"


class FakeOpenAI(FakeServer):
    """POST /v1/chat/completions as SSE chunks, GET /v1/models."""

    chat_path = "/v1/chat/completions"
    models_path = "/v1/models"
    base_path = "/v1"
    omit_usage = False  # like llama.cpp's server: no usage chunk even when asked for one

    def _chunk(self, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            "usage": None,
        }

    def preamble(self, model: str, usage: tuple[int, int]) -> bytes:
        return _sse(self._chunk(model, {"role": "assistant", "content": "", "refusal": None}, None))

    def token(self, model: str, text: str) -> bytes:
        return _sse(self._chunk(model, {"content": text}, None))

    def epilogue(self, model: str, usage: tuple[int, int], body: Any) -> bytes:
        out = _sse(self._chunk(model, {}, self.finish_reason or "stop"))
        options = body.get("stream_options") if isinstance(body, dict) else None
        if isinstance(options, dict) and options.get("include_usage") and not self.omit_usage:
            out += _sse({
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model, "system_fingerprint": "fp_fake", "choices": [],
                "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                          "total_tokens": usage[0] + usage[1]},
            })
        return out + b"data: [DONE]\n\n"

    def error_event(self) -> bytes:
        return _sse({"error": {"message": "The server had an error while processing your request.",
                               "type": "server_error", "param": None, "code": None}})

    def garbage(self) -> bytes:
        return b'data: {"id":"chatcmpl-fake","choices":[{"delta":\n\n'

    def error_json(self, status: int) -> dict[str, Any]:
        return {"error": {"message": f"fake failure {status}", "type": "server_error", "param": None, "code": None}}

    def models_json(self) -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"} for m in self.models
        ]}


class FakeAnthropic(FakeServer):
    """POST /v1/messages as typed SSE events, GET /v1/models."""

    chat_path = "/v1/messages"
    models_path = "/v1/models"

    def preamble(self, model: str, usage: tuple[int, int]) -> bytes:
        return (
            _sse({"type": "message_start", "message": {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": usage[0], "output_tokens": 1}}}, "message_start")
            + _sse({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}, "content_block_start")
            + _sse({"type": "ping"}, "ping")
        )

    def token(self, model: str, text: str) -> bytes:
        return _sse({"type": "content_block_delta", "index": 0,
                     "delta": {"type": "text_delta", "text": text}}, "content_block_delta")

    def epilogue(self, model: str, usage: tuple[int, int], body: Any) -> bytes:
        return (
            _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            + _sse({"type": "message_delta",
                    "delta": {"stop_reason": self.finish_reason or "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": usage[1]}}, "message_delta")
            + _sse({"type": "message_stop"}, "message_stop")
        )

    def error_event(self) -> bytes:
        return _sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")

    def garbage(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": \n\n'

    def error_json(self, status: int) -> dict[str, Any]:
        return {"type": "error", "error": {"type": "api_error", "message": f"fake failure {status}"}}

    def models_json(self) -> dict[str, Any]:
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                for m in self.models]
        return {"data": data, "has_more": False,
                "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


class FakeOllama(FakeServer):
    """POST /api/chat as NDJSON, GET /api/tags and /api/version."""

    content_type = "application/x-ndjson"
    chat_path = "/api/chat"
    models_path = "/api/tags"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/version", self._version)

    async def _version(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return web.json_response({"version": "0.5.7"})

    def _line(self, value: dict[str, Any]) -> bytes:
        return orjson.dumps(value) + b"\n"

    def token(self, model: str, text: str) -> bytes:
        return self._line({"model": model, "created_at": "2025-01-01T00:00:00.000000Z",
                           "message": {"role": "assistant", "content": text}, "done": False})

    def epilogue(self, model: str, usage: tuple[int, int], body: Any) -> bytes:
        return self._line({
            "model": model, "created_at": "2025-01-01T00:00:01.000000Z",
            "message": {"role": "assistant", "content": ""}, "done": True,
            "done_reason": self.finish_reason or "stop", "total_duration": 1000000,
            "load_duration": 1000, "prompt_eval_count": usage[0], "prompt_eval_duration": 1000,
            "eval_count": usage[1], "eval_duration": 1000,
        })

    def error_event(self) -> bytes:
        return self._line({"error": "an error was encountered while running the model: unexpected EOF"})

    def garbage(self) -> bytes:
        return b'{"model": "x", "message": \n'

    def error_json(self, status: int) -> dict[str, Any]:
        return {"error": f"fake failure {status}"}

    def models_json(self) -> dict[str, Any]:
        return {"models": [
            {"name": m, "model": m, "modified_at": "2025-01-01T00:00:00Z", "size": 4661224676,
             "digest": "0" * 64, "details": {"format": "gguf", "family": "llama",
                                             "parameter_size": "8.0B", "quantization_level": "Q4_0"}}
            for m in self.models
        ]}


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def collect(stream: Any) -> tuple[list[str], StreamEnd]:
    """Drain a provider stream, checking its shape: non-empty deltas, then exactly one StreamEnd."""
    items = [item async for item in stream]
    assert items and isinstance(items[-1], StreamEnd), items
    deltas = items[:-1]
    assert all(isinstance(d, str) and d for d in deltas), deltas
    return deltas, items[-1]


def main() -> None:
    """Run one fake as its own process, e.g. for benchmarks: python -m tests.fakes openai --port 8001."""
    import argparse

    kinds: dict[str, type[FakeServer]] = {"openai": FakeOpenAI, "anthropic": FakeAnthropic, "ollama": FakeOllama}
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("kind", choices=sorted(kinds))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=50, help="number of tokens per reply")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds before each token")
    args = parser.parse_args()

    async def serve() -> None:
        tokens = [f"tok{i} " for i in range(args.tokens)]
        fake = kinds[args.kind](tokens=tokens, delay=args.delay, record=False)
        fake.port = args.port
        await fake.start()
        print(fake.base_url, flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
