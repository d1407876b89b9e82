"""HTTP routes: parse the request into typed values, call the Node, shape the response.

Every exception a request causes becomes a contract error body in one place, `error_response`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from providers.registry import NODE_KINDS

from . import inputs, logs, protocol
from .auth import bearer
from .errors import (
    BadRequest,
    ChatError,
    NotAllowed,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
)
from .node import Node
from .records import User
from .settings import Settings
from .turns import Turn

log = logging.getLogger("chat.api")


def json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers, media_type="application/json")


async def error_response(request: Request, exc: Exception) -> Response:
    """The one place a request's exceptions become `{"error": ...}` bodies. Starlette calls it
    for every exception; unexpected ones are answered 500 here and logged once by the server."""
    if isinstance(exc, ChatError):
        err = exc
    elif isinstance(exc, HTTPException):
        if exc.status_code == 404:
            err = NotFound(f"no route {request.url.path}")
        elif exc.status_code == 405:
            err = NotAllowed(f"{request.method} is not allowed on {request.url.path}")
        else:
            err = BadRequest(exc.detail or "bad request")
    else:
        err = ChatError("internal error")
    node = getattr(request.state, "node", None)
    if node is not None:
        node.metrics.error(err.code, "http")
    headers = None
    if isinstance(err, RateLimited):
        headers = {"Retry-After": str(max(1, round(err.retry_after)))}
    if err.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return json({"error": err.body()}, err.status, headers)


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, refusing anything over `limit` bytes before reading it all."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise TooLarge(f"body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"body over {limit} bytes")
    if not body:
        raise BadRequest("body must be a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"body is not valid JSON: {e.msg}") from None
    return inputs.require_object(data)


async def _has_body(request: Request) -> bool:
    """A POST whose body may be left out (empty, or no content)."""
    length = request.headers.get("content-length")
    return bool(length and length != "0") or "transfer-encoding" in request.headers


def path_id(request: Request, name: str = "id") -> int:
    return inputs.integer(request.path_params[name], name, minimum=1)


def query_int(request: Request, name: str, **bounds: int) -> int | None:
    value = request.query_params.get(name)
    return None if value in (None, "") else inputs.integer(value, name, **bounds)


def _node(request: Request) -> Node:
    return request.state.node  # built by the lifespan


class Api:
    """One method per endpoint of the contract."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limit = settings.max_body_bytes

    async def user(self, request: Request) -> User:
        user = await _node(request).user(bearer(request.headers.get("authorization")))
        logs.about(user=user.id)
        return user

    # -- auth -----------------------------------------------------------------

    async def register(self, request: Request) -> Response:
        await _node(request).admit_auth(request.client.host if request.client else "?", "registrations")
        reg = inputs.registration(await read_json(request, self.limit), self.settings)
        token, user = await _node(request).register(reg)
        return json({"token": token, "user": user.wire()}, 201)

    async def token(self, request: Request) -> Response:
        await _node(request).admit_auth(request.client.host if request.client else "?", "login attempts")
        login = inputs.login(await read_json(request, self.limit))
        token, user = await _node(request).login(login)
        return json({"token": token, "user": user.wire()})

    async def logout(self, request: Request) -> Response:
        await self.user(request)
        await _node(request).logout(bearer(request.headers.get("authorization")) or "")
        return Response(status_code=204)

    async def me(self, request: Request) -> Response:
        return json({"user": (await self.user(request)).wire()})

    # -- conversations --------------------------------------------------------

    async def create_conversation(self, request: Request) -> Response:
        user = await self.user(request)
        new = inputs.new_conversation(await read_json(request, self.limit), self.settings)
        return json((await _node(request).create_conversation(user, new)).wire(), 201)

    async def templates(self, request: Request) -> Response:
        await self.user(request)
        return json({"templates": [{"name": name, **t} for name, t in sorted(self.settings.templates.items())]})

    async def list_conversations(self, request: Request) -> Response:
        user = await self.user(request)
        convs = await _node(request).conversations_of(user)
        return json({"conversations": [c.wire() for c in convs]})

    async def get_conversation(self, request: Request) -> Response:
        user = await self.user(request)
        return json((await _node(request).conversation(user, path_id(request))).wire())

    async def update_conversation(self, request: Request) -> Response:
        user = await self.user(request)
        cid = path_id(request)
        changes = inputs.conversation_changes(await read_json(request, self.limit), self.settings)
        return json((await _node(request).update_conversation(user, cid, changes)).wire())

    async def add_participants(self, request: Request) -> Response:
        user = await self.user(request)
        cid = path_id(request)
        body = await read_json(request, self.limit)
        names = inputs.usernames(body, "usernames", self.settings, required=True)
        return json((await _node(request).add_participants(user, cid, names)).wire())

    async def remove_participant(self, request: Request) -> Response:
        user = await self.user(request)
        conv = await _node(request).remove_participant(user, path_id(request), path_id(request, "user_id"))
        return json(conv.wire())

    # -- messages -------------------------------------------------------------

    async def post_message(self, request: Request) -> Response:
        user = await self.user(request)
        cid = path_id(request)
        cmd = protocol.send_message(await read_json(request, self.limit), cid, self.settings)
        await _node(request).admit_send(user)
        sent = await _node(request).send(user, cmd)
        out: dict[str, Any] = {"message": sent.message.wire(), "ai": sent.ai}
        if sent.side_by_side:
            out["ais"] = [t.info() for t in sent.side_by_side]
        if sent.duplicate:
            out["duplicate"] = True
        if sent.turn is not None and "text/event-stream" in request.headers.get("accept", ""):
            # Listen now, not when the body starts: a turn may end before the first chunk is sent.
            frames: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
            sent.turn.listeners.append(lambda kind, frame: frames.put_nowait((kind, frame)))
            return StreamingResponse(self._sse(out, frames), 201, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        if sent.turn is not None and request.query_params.get("wait") in ("true", "1"):
            out["reply"] = (await self._wait(sent.turn)).wire()
            if sent.side_by_side:
                out["replies"] = [(await self._wait(t)).wire() for t in sent.side_by_side]
        return json(out, 201)

    async def regenerate(self, request: Request) -> Response:
        user = await self.user(request)
        body = await read_json(request, self.limit) if await _has_body(request) else {}
        model = inputs.model_id(body, "model")
        turn = await _node(request).regenerate(user, path_id(request), path_id(request, "message_id"), model)
        out: dict[str, Any] = {"ai": turn.info(), "reply_to": turn.trigger.id}
        if request.query_params.get("wait") in ("true", "1"):
            out["reply"] = (await self._wait(turn)).wire()
        return json(out, 201)

    @staticmethod
    async def _wait(turn: Turn) -> Any:
        try:
            return await asyncio.shield(turn.done)
        except asyncio.CancelledError:
            if not turn.done.cancelled():
                raise  # this request was cancelled, not the turn
            raise Unavailable("the server stopped before the reply was stored") from None

    @staticmethod
    async def _sse(ack: dict[str, Any], queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> AsyncIterator[bytes]:
        """The turn's frames as server-sent events, one event per frame, after the ack (for side
        by side sends: the first reply's)."""
        yield b"event: message.ack\ndata: " + orjson.dumps({"type": "message.ack", **ack}) + b"\n\n"
        while True:
            kind, frame = await queue.get()
            yield b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(frame) + b"\n\n"
            if kind in ("ai.done", "ai.error"):
                return

    async def list_messages(self, request: Request) -> Response:
        user = await self.user(request)
        after, before = query_int(request, "after"), query_int(request, "before")
        limit = query_int(request, "limit", minimum=1, maximum=500) or 50
        page, has_more = await _node(request).page(user, path_id(request), after, before, limit)
        return json({"messages": [m.wire() for m in page], "has_more": has_more})

    # -- usage ----------------------------------------------------------------

    async def conversation_usage(self, request: Request) -> Response:
        user = await self.user(request)
        since, until = inputs.time_range(request.query_params)
        return json(await _node(request).conversation_usage(user, path_id(request), since, until))

    async def usage(self, request: Request) -> Response:
        user = await self.user(request)
        since, until = inputs.time_range(request.query_params)
        everyone = request.query_params.get("all") in ("true", "1")
        return json(await _node(request).usage(user, query_int(request, "user_id", minimum=1), everyone, since, until))

    # -- budgets ----------------------------------------------------------------

    async def put_user_budget(self, request: Request) -> Response:
        user = await self.user(request)
        new = inputs.new_budget(await read_json(request, self.limit))
        return json(await _node(request).set_user_budget(user, path_id(request, "user_id"), new))

    async def delete_user_budget(self, request: Request) -> Response:
        user = await self.user(request)
        await _node(request).delete_user_budget(user, path_id(request, "user_id"))
        return Response(status_code=204)

    async def get_user_budget(self, request: Request) -> Response:
        user = await self.user(request)
        return json({"budget": await _node(request).user_budget(user, query_int(request, "user_id", minimum=1))})

    async def put_conversation_budget(self, request: Request) -> Response:
        user = await self.user(request)
        new = inputs.new_budget(await read_json(request, self.limit))
        return json(await _node(request).set_conversation_budget(user, path_id(request), new))

    async def delete_conversation_budget(self, request: Request) -> Response:
        user = await self.user(request)
        await _node(request).delete_conversation_budget(user, path_id(request))
        return Response(status_code=204)

    async def get_conversation_budget(self, request: Request) -> Response:
        user = await self.user(request)
        return json({"budget": await _node(request).conversation_budget(user, path_id(request))})

    # -- AI models and nodes --------------------------------------------------

    async def models(self, request: Request) -> Response:
        await self.user(request)
        return json(_node(request).models())

    async def model_stats(self, request: Request) -> Response:
        await self.user(request)
        return json(_node(request).model_stats())

    async def list_nodes(self, request: Request) -> Response:
        user = await self.user(request)
        return json({"nodes": await _node(request).ai_nodes(user)})

    async def create_node(self, request: Request) -> Response:
        user = await self.user(request)
        new = inputs.new_node(await read_json(request, self.limit), NODE_KINDS)
        return json(await _node(request).add_ai_node(user, new), 201)

    async def delete_node(self, request: Request) -> Response:
        user = await self.user(request)
        await _node(request).remove_ai_node(user, path_id(request))
        return Response(status_code=204)

    # -- operations -----------------------------------------------------------

    async def metrics(self, request: Request) -> Response:
        body = _node(request).scrape(request.client.host if request.client else None,
                                     bearer(request.headers.get("authorization")))
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        return json({"status": "ok", "worker": self.settings.worker_index})

    async def readyz(self, request: Request) -> Response:
        await _node(request).ready()
        return json({"status": "ready"})

    def routes(self) -> list[Route]:
        conv = "/conversations/{id}"
        return [
            Route("/auth/register", self.register, methods=["POST"]),
            Route("/auth/token", self.token, methods=["POST"]),
            Route("/auth/logout", self.logout, methods=["POST"]),
            Route("/me", self.me, methods=["GET"]),
            Route("/conversations", self.create_conversation, methods=["POST"]),
            Route("/conversations", self.list_conversations, methods=["GET"]),
            Route("/templates", self.templates, methods=["GET"]),
            Route(conv, self.get_conversation, methods=["GET"]),
            Route(conv, self.update_conversation, methods=["PUT", "PATCH"]),
            Route(conv + "/participants", self.add_participants, methods=["POST"]),
            Route(conv + "/participants/{user_id}", self.remove_participant, methods=["DELETE"]),
            Route(conv + "/messages", self.post_message, methods=["POST"]),
            Route(conv + "/messages", self.list_messages, methods=["GET"]),
            Route(conv + "/messages/{message_id}/regenerate", self.regenerate, methods=["POST"]),
            Route(conv + "/usage", self.conversation_usage, methods=["GET"]),
            Route("/usage", self.usage, methods=["GET"]),
            Route(conv + "/budget", self.get_conversation_budget, methods=["GET"]),
            Route(conv + "/budget", self.put_conversation_budget, methods=["PUT"]),
            Route(conv + "/budget", self.delete_conversation_budget, methods=["DELETE"]),
            Route("/budget", self.get_user_budget, methods=["GET"]),
            Route("/budgets/users/{user_id}", self.put_user_budget, methods=["PUT"]),
            Route("/budgets/users/{user_id}", self.delete_user_budget, methods=["DELETE"]),
            Route("/ai/models", self.models, methods=["GET"]),
            Route("/ai/stats", self.model_stats, methods=["GET"]),
            Route("/ai/nodes", self.list_nodes, methods=["GET"]),
            Route("/ai/nodes", self.create_node, methods=["POST"]),
            Route("/ai/nodes/{id}", self.delete_node, methods=["DELETE"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
        ]
