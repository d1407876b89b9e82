"""The OpenAI-compatible transport: `POST /v1/chat/completions` (streaming and not) and
`GET /v1/models`, so any OpenAI client can use this server's models with its own token.

A transport like api.py and ws.py: it parses OpenAI's request shape into a typed
`CompletionRequest`, calls the Node, and shapes OpenAI's responses, chunks and errors.
`openai_error` is the one place an exception becomes an OpenAI error body."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from providers.base import ChatMessage

from . import logs
from .api import read_json
from .auth import bearer
from .completions import Completion, CompletionRequest
from .errors import (
    BadRequest,
    ChatError,
    Invalid,
    NotAllowed,
    NotFound,
    RateLimited,
    UnknownModel,
)
from .node import Node
from .records import User
from .settings import Settings

log = logging.getLogger("chat.openai")

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# What would change the answer and is not passed on: refused, never silently dropped.
UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "logprobs", "audio", "prediction", "stop")

# contract code -> (HTTP status, OpenAI error type, OpenAI error code), as OpenAI answers them
_OPENAI_ERRORS: dict[str, tuple[int, str, str | None]] = {
    "bad_request": (400, "invalid_request_error", None),
    "invalid": (400, "invalid_request_error", "invalid_value"),
    "too_large": (413, "invalid_request_error", "request_too_large"),
    "unauthorized": (401, "invalid_request_error", "invalid_api_key"),
    "forbidden": (403, "permission_error", None),
    "not_found": (404, "invalid_request_error", "not_found"),
    "unknown_model": (404, "invalid_request_error", "model_not_found"),
    "rate_limited": (429, "requests", "rate_limit_exceeded"),
    "budget_exceeded": (429, "insufficient_quota", "insufficient_quota"),
    "unavailable": (503, "server_error", "unavailable"),
    "provider_error": (502, "server_error", "provider_error"),
}


def _error_body(err: ChatError) -> tuple[int, dict[str, Any]]:
    status, kind, code = _OPENAI_ERRORS.get(err.code, (500, "server_error", None))
    if isinstance(err, NotAllowed):
        status = 405
    param = (err.details or {}).get("field") if isinstance(err, Invalid) else "model" if isinstance(
        err, UnknownModel) else None
    return status, {"error": {"message": err.message, "type": kind, "param": param, "code": code or err.code}}


async def openai_error(request: Request, exc: Exception) -> Response:
    """The one place this transport's exceptions become OpenAI error bodies."""
    if isinstance(exc, ChatError):
        err = exc
    elif isinstance(exc, HTTPException):
        err = NotFound(f"no route {request.url.path}") if exc.status_code == 404 else \
            NotAllowed(f"{request.method} is not allowed on {request.url.path}") if exc.status_code == 405 else \
            BadRequest(exc.detail or "bad request")
    else:
        log.exception("openai endpoint failed", exc_info=exc)
        err = ChatError("internal error")
    node = getattr(request.state, "node", None)
    if node is not None:
        node.metrics.error(err.code, "openai")
    status, body = _error_body(err)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(err, RateLimited):
        headers = {"Retry-After": str(max(1, round(err.retry_after)))}
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def completion_request(body: dict[str, Any], settings: Settings) -> CompletionRequest:
    """OpenAI's chat completion body -> a CompletionRequest; fields we cannot honour are refused,
    sampling fields we do not pass on (top_p, seed, user, ...) are ignored."""
    for name in UNSUPPORTED:
        if body.get(name) not in (None, False, [], {}):
            raise Invalid(name, f"{name} is not supported by this server")
    if body.get("n") not in (None, 1):
        raise Invalid("n", "n must be 1")
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise Invalid("response_format", "only the text response format is supported")
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model or len(model) > 200 or "\x00" in model):
        raise Invalid("model", "model must be a model id such as 'echo:echo', or 'auto'")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise Invalid("stream", "stream must be true or false")
    if body.get("stream_options") is not None and not stream:
        raise Invalid("stream_options", "stream_options is only allowed when stream is true")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise Invalid("stream_options", "stream_options must be an object with a boolean include_usage")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                   or not 1 <= max_tokens <= 1_000_000):
        raise Invalid("max_tokens", "max_tokens must be an integer from 1 to 1000000")
    temperature = body.get("temperature")
    if temperature is not None and (not isinstance(temperature, int | float) or isinstance(temperature, bool)
                                    or not 0 <= temperature <= 2):
        raise Invalid("temperature", "temperature must be a number from 0 to 2")
    return CompletionRequest(model or None, _messages(body.get("messages"), settings), stream, max_tokens,
                             None if temperature is None else float(temperature),
                             bool(options.get("include_usage")) if stream else False)


def _messages(value: Any, settings: Settings) -> tuple[ChatMessage, ...]:
    if not isinstance(value, list) or not value:
        raise Invalid("messages", "messages must be a non-empty list")
    if len(value) > settings.api_max_messages:
        raise Invalid("messages", f"at most {settings.api_max_messages} messages", max=settings.api_max_messages)
    out, total = [], 0
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or m["role"] not in ROLES:
            raise Invalid(where, f"{where} must be an object with role system, developer, user or assistant")
        content = m.get("content")
        if isinstance(content, list):  # content parts: text only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise Invalid(where, f"{where}: only text content parts are supported")
            content = "".join(p["text"] for p in content)
        if content is None and m["role"] == "assistant":
            content = ""
        if not isinstance(content, str) or "\x00" in content:
            raise Invalid(where, f"{where}.content must be a string (without NUL) or a list of text parts")
        total += len(content)
        if total > settings.api_max_prompt_chars:
            raise Invalid("messages", f"the messages hold over {settings.api_max_prompt_chars} characters",
                          max=settings.api_max_prompt_chars)
        out.append(ChatMessage(ROLES[m["role"]], content))
    return tuple(out)


def _finish_reason(c: Completion) -> str:
    reason = c.end.finish_reason if c.end is not None else None
    return "length" if reason in ("length", "max_tokens") else "stop"


def _usage(c: Completion) -> dict[str, int] | None:
    s = c.spent
    if s is None or s.prompt_tokens is None:
        return None
    completion = s.completion_tokens or 0
    return {"prompt_tokens": s.prompt_tokens, "completion_tokens": completion,
            "total_tokens": s.prompt_tokens + completion}


def _routing_headers(c: Completion) -> dict[str, str]:
    """How the model was chosen: the chain's tier, `auto`'s reason, the model that failed first
    (ASCII: header values are latin-1, and model names and reasons come from configuration)."""
    out = {"x-chat-model": c.model, "x-chat-tier": c.tier, "x-chat-route-reason": c.choice.reason or "",
           "x-chat-fallback-from": c.fallback_from or ""}
    return {k: v.encode("ascii", "backslashreplace").decode() for k, v in out.items() if v}


class CompletionStream:
    """The chunks of one completion as an ASGI response. It ends when the completion does,
    when the client leaves (`http.disconnect`), or when the client has taken nothing for
    `stall` seconds (its socket buffers full): then the provider request is closed at once
    and its slots are freed, instead of waiting on a reader that does not read."""

    def __init__(self, node: Node, c: Completion, stall: float) -> None:
        self.node, self.completion, self.stall = node, c, stall
        headers = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
                   "x-accel-buffering": "no", **_routing_headers(c)}
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self._since = 0.0  # loop time a body send began and has not returned; 0: none pending
        self._watchdog: asyncio.TimerHandle | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        body = loop.create_task(self._stream(send))
        gone = loop.create_task(_disconnected(receive))
        self._watchdog = loop.call_later(self.stall, self._watch, body)
        try:
            await asyncio.wait((body, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
            body.cancel()
            gone.cancel()
            await asyncio.gather(body, gone, return_exceptions=True)
            self.node.completions.abandon(self.completion)
        if not body.cancelled() and body.exception() is not None:
            raise body.exception()  # type: ignore[misc]

    def _watch(self, body: asyncio.Task[None]) -> None:
        """One timer per stream (not one per chunk): a send pending for `stall` seconds ends it."""
        loop = asyncio.get_running_loop()
        waited = loop.time() - self._since if self._since else 0.0
        if waited >= self.stall:
            log.info("completion %s: the client took nothing for %.0f s; ended", self.completion.id, waited)
            body.cancel()
            return
        self._watchdog = loop.call_later(self.stall - waited, self._watch, body)

    async def _stream(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        async with contextlib.aclosing(self._chunks(self.node, self.completion)) as chunks:
            async for chunk in chunks:
                self._since = loop.time()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self._since = 0.0
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _chunks(node: Node, c: Completion) -> AsyncIterator[bytes]:
        """`data: <chunk>` per provider delta (the text JSON-encoded once, inside a prefix and
        suffix built once), then the finish chunk, the usage chunk if asked, and `[DONE]`."""
        usage_field = b',"usage":null' if c.request.include_usage else b""
        head = (b'data: {"id":"' + c.id.encode() + b'","object":"chat.completion.chunk","created":'
                + str(c.created).encode() + b',"model":' + orjson.dumps(c.model)
                + b',"system_fingerprint":null,"choices":[{"index":0,"delta":{')
        tail = b'},"logprobs":null,"finish_reason":null}]' + usage_field + b"}\n\n"
        first = True
        async with contextlib.aclosing(node.completions.deltas(c)) as deltas:
            async for text in deltas:
                if first:
                    first = False
                    yield head + b'"role":"assistant","content":' + orjson.dumps(text) + tail
                else:
                    yield head + b'"content":' + orjson.dumps(text) + tail
        if c.error is not None:
            yield b"data: " + orjson.dumps(_error_body(c.error)[1]) + b"\n\n"
            return
        end = head + b'"role":"assistant","content":""' + tail if first else b""  # no text at all: say whose
        end += (head + b'},"logprobs":null,"finish_reason":"' + _finish_reason(c).encode() + b'"}]'
                + usage_field + b"}\n\n")
        if c.request.include_usage:
            end += b"data: " + orjson.dumps({"id": c.id, "object": "chat.completion.chunk", "created": c.created,
                                             "model": c.model, "system_fingerprint": None, "choices": [],
                                             "usage": _usage(c)}) + b"\n\n"
        yield end + b"data: [DONE]\n\n"  # the last events in one write


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (the request body is already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _node(request: Request) -> Node:
    return request.state.node  # built by the lifespan


class OpenAIApi:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def user(self, request: Request) -> User:
        user = await _node(request).user(bearer(request.headers.get("authorization")))
        logs.about(user=user.id)
        return user

    async def chat_completions(self, request: Request) -> Response | CompletionStream:
        user = await self.user(request)
        req = completion_request(await read_json(request, self.settings.api_max_body_bytes), self.settings)
        node = _node(request)
        await node.admit_send(user)  # a completion is a send: the same per-user rate, cluster-wide
        # Until the response starts, a client that leaves cancels the completion too (waiting
        # for a provider slot, for the first token, or for a whole non-streamed text).
        answer = asyncio.ensure_future(self._answer(node, user, req))
        gone = asyncio.ensure_future(_disconnected(request.receive))
        try:
            await asyncio.wait((answer, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not answer.done():  # the client left, or this request is cancelled (shutdown)
                answer.cancel()
                await asyncio.gather(answer, return_exceptions=True)
        if answer.cancelled():
            return Response(status_code=499)  # nobody reads it: the access log says the client left
        return answer.result()

    async def _answer(self, node: Node, user: User, req: CompletionRequest) -> Response | CompletionStream:
        c = await node.completions.open(user, req)
        if req.stream:
            return CompletionStream(node, c, self.settings.api_stall_timeout)
        text = await node.completions.text(c)
        if c.error is not None:
            raise c.error
        return Response(orjson.dumps({
            "id": c.id, "object": "chat.completion", "created": c.created, "model": c.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": _finish_reason(c)}],
            "usage": _usage(c),
        }), media_type="application/json", headers=_routing_headers(c))

    async def models(self, request: Request) -> Response:
        await self.user(request)
        return Response(orjson.dumps({"object": "list", "data": _node(request).openai_models()}),
                        media_type="application/json")

    async def model(self, request: Request) -> Response:
        await self.user(request)
        wanted = request.path_params["model"]
        for m in _node(request).openai_models():
            if m["id"] == wanted:
                return Response(orjson.dumps(m), media_type="application/json")
        raise UnknownModel(wanted)

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{model:path}", self.model, methods=["GET"]),
        ]
