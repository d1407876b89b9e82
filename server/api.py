"""HTTP routes: parse the request, call a service, shape the response. Errors become bodies here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from . import inputs
from .auth import bearer
from .errors import BadRequest, ChatError, Forbidden, NotFound, TooLarge, Unavailable
from .ratelimit import KeyedBuckets
from .records import User
from .services import Services
from .settings import Settings

def json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers, media_type="application/json")

def error_response(err: ChatError) -> Response:
    headers = {"Retry-After": str(max(1, round(err.retry_after)))} if hasattr(err, "retry_after") else None
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

def path_id(request: Request, name: str = "id") -> int:
    return inputs.integer(request.path_params[name], name, minimum=1)

class Api:
    """One method per endpoint of the contract."""

    services: Services  # set by the lifespan before the first request

    def __init__(self, settings: Settings) -> None:
        self.limit = settings.max_body_bytes
        # Password hashing costs CPU: registration and login are limited per client address.
        self.auth_limit = KeyedBuckets(settings.auth_rate_per_second, settings.auth_rate_burst)

    @property
    def s(self) -> Services:
        return self.services

    async def user(self, request: Request) -> User:
        return await self.s.auth.user(bearer(request.headers.get("authorization")))

    # -- auth -----------------------------------------------------------------

    async def register(self, request: Request) -> Response:
        self.auth_limit.check(request.client.host if request.client else "?", "registrations")
        body = await read_json(request, self.limit)
        name = inputs.username(body.get("username"))
        password = inputs.text(body, "password", max_chars=1024, min_chars=8)
        display = inputs.text(body, "display_name", max_chars=self.s.settings.max_display_name_chars,
                              required=False, strip=True) or name
        token, user = await self.s.auth.register(name, password, display)  # type: ignore[arg-type]
        return json({"token": token, "user": user.wire()}, 201)

    async def token(self, request: Request) -> Response:
        self.auth_limit.check(request.client.host if request.client else "?", "login attempts")
        body = await read_json(request, self.limit)
        name = inputs.text(body, "username", max_chars=64)
        password = inputs.text(body, "password", max_chars=1024)
        token, user = await self.s.auth.login(name, password)  # type: ignore[arg-type]
        return json({"token": token, "user": user.wire()})

    async def logout(self, request: Request) -> Response:
        await self.user(request)
        await self.s.auth.logout(bearer(request.headers.get("authorization")) or "")
        return Response(status_code=204)

    async def me(self, request: Request) -> Response:
        return json({"user": (await self.user(request)).wire()})

    # -- conversations --------------------------------------------------------

    async def create_conversation(self, request: Request) -> Response:
        user = await self.user(request)
        conv = await self.s.conversations.create(user, await read_json(request, self.limit))
        return json(conv.wire(), 201)

    async def list_conversations(self, request: Request) -> Response:
        user = await self.user(request)
        convs = await self.s.store.conversations_of(user.id)
        return json({"conversations": [c.wire() for c in convs]})

    async def get_conversation(self, request: Request) -> Response:
        user = await self.user(request)
        return json((await self.s.conversations.visible(path_id(request), user)).wire())

    async def update_conversation(self, request: Request) -> Response:
        user = await self.user(request)
        cid = path_id(request)
        body = await read_json(request, self.limit)
        return json((await self.s.conversations.update(cid, user, body)).wire())

    async def add_participants(self, request: Request) -> Response:
        user = await self.user(request)
        cid = path_id(request)
        body = await read_json(request, self.limit)
        return json((await self.s.conversations.add(cid, user, body)).wire())

    async def remove_participant(self, request: Request) -> Response:
        user = await self.user(request)
        conv = await self.s.conversations.remove(path_id(request), user, path_id(request, "user_id"))
        return json(conv.wire())

    # -- messages -------------------------------------------------------------

    async def post_message(self, request: Request) -> Response:
        user = await self.user(request)
        cid = path_id(request)
        body = await read_json(request, self.limit)
        sent = await self.s.messages.send(user, cid, body)
        out: dict[str, Any] = {"message": sent.message.wire(), "ai": sent.ai}
        if sent.duplicate:
            out["duplicate"] = True
        if sent.turn is not None and "text/event-stream" in request.headers.get("accept", ""):
            return StreamingResponse(self._sse(out, sent.turn), 201, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        if sent.turn is not None and request.query_params.get("wait") in ("true", "1"):
            try:
                reply = await asyncio.shield(sent.turn.done)
            except asyncio.CancelledError:
                if not sent.turn.done.cancelled():
                    raise  # this request was cancelled, not the turn
                raise Unavailable("the server stopped before the reply was stored") from None
            out["reply"] = reply.wire()
        return json(out, 201)

    async def _sse(self, ack: dict[str, Any], turn: Any) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        turn.listeners.append(lambda kind, frame: queue.put_nowait((kind, frame)))
        yield b"event: message.ack\ndata: " + orjson.dumps({"type": "message.ack", **ack}) + b"\n\n"
        while True:
            kind, frame = await queue.get()
            yield b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(frame) + b"\n\n"
            if kind in ("ai.done", "ai.error"):
                return

    async def list_messages(self, request: Request) -> Response:
        user = await self.user(request)
        page, has_more = await self.s.messages.page(user, path_id(request), dict(request.query_params))
        return json({"messages": [m.wire() for m in page], "has_more": has_more})

    # -- AI models and nodes --------------------------------------------------

    async def models(self, request: Request) -> Response:
        await self.user(request)
        return json(self.s.registry.snapshot())

    async def list_nodes(self, request: Request) -> Response:
        await self.user(request)
        return json({"nodes": await self.s.nodes.list()})

    async def create_node(self, request: Request) -> Response:
        user = await self.user(request)
        if not user.is_admin:
            raise Forbidden("only an admin may register AI nodes")
        body = await read_json(request, self.limit)
        return json(await self.s.nodes.create(user, body), 201)

    async def delete_node(self, request: Request) -> Response:
        user = await self.user(request)
        if not user.is_admin:
            raise Forbidden("only an admin may remove AI nodes")
        if not await self.s.nodes.delete(path_id(request)):
            raise NotFound("no such node")
        return Response(status_code=204)

    # -- operations -----------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return json({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        await self.s.store.ping()
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
            Route(conv, self.get_conversation, methods=["GET"]),
            Route(conv, self.update_conversation, methods=["PUT", "PATCH"]),
            Route(conv + "/participants", self.add_participants, methods=["POST"]),
            Route(conv + "/participants/{user_id}", self.remove_participant, methods=["DELETE"]),
            Route(conv + "/messages", self.post_message, methods=["POST"]),
            Route(conv + "/messages", self.list_messages, methods=["GET"]),
            Route("/ai/models", self.models, methods=["GET"]),
            Route("/ai/nodes", self.list_nodes, methods=["GET"]),
            Route("/ai/nodes", self.create_node, methods=["POST"]),
            Route("/ai/nodes/{id}", self.delete_node, methods=["DELETE"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
        ]
