"""The /ws endpoint: handshake, auth, the receive loop, and commands handed to the Node.

It speaks raw ASGI rather than Starlette's WebSocket wrapper, and the app routes /ws
here before the router, so outgoing frames reach uvicorn's own `send` unwrapped. Every
exception a frame causes becomes an `error` frame in one place, `error_frame`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send

from . import protocol
from .auth import bearer, token_hash
from .connection import CLOSE_TRY_LATER, CLOSE_UNAUTHORIZED, Connection
from .errors import ChatError, Invalid, RateLimited, TooLarge, Unauthorized, Unavailable
from .metrics import Metrics
from .node import Node
from .protocol import (
    Authenticate,
    Cancel,
    Command,
    FrameError,
    Ping,
    SendMessage,
    Subscribe,
    Typing,
    Unsubscribe,
)
from .ratelimit import TokenBucket
from .records import User
from .settings import Settings

log = logging.getLogger("chat.ws")

CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_GOING_AWAY = 1008, 1009, 1001
SENDS_IN_FLIGHT = 32  # message.send frames of one socket being stored at once


def error_frame(exc: BaseException, ref: Any = None, metrics: Metrics | None = None) -> str:
    """The one place a socket's exceptions become `error` frames (unexpected ones logged once)."""
    if isinstance(exc, FrameError):
        exc, ref = exc.error, exc.ref
    if isinstance(exc, ChatError):
        err = exc
    else:
        log.error("frame failed", exc_info=exc)
        err = Unavailable("internal error; nothing was done, retry")
    if metrics is not None:
        metrics.error(err.code, "ws")
    return protocol.encode(protocol.error(err, ref))


class SocketEndpoint:
    """One instance serves every socket; per-socket state lives in `Connection` and locals."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connections: set[Connection] = set()  # this endpoint's open sockets, for shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        node: Node = scope["state"]["node"]
        conn = await self._open(node, scope, receive, send)
        if conn is None:
            return
        try:
            await self._serve(node, conn, receive)
        finally:
            node.disconnect(conn)
            self.connections.discard(conn)
            conn.close(1000)  # no-op when already closing
            if conn.closed_by_server:
                node.metrics.closed(conn.close_code)
            await conn.finish()
            log.info("ws closed conn=%s user=%s code=%s", conn.id, conn.user.id, conn.close_code,
                     extra={"conn": conn.id, "user": conn.user.id})

    async def _open(self, node: Node, scope: Scope, receive: Receive, send: Send) -> Connection | None:
        """Origin check, accept, auth, the user's connection limit; then `hello`. Its own frame,
        so the headers and the token it reads are not kept alive for the socket's life."""
        origin, authorization = _header(scope, b"origin"), _header(scope, b"authorization")
        allowed = self.settings.ws_allowed_origins
        if origin and allowed and origin not in allowed and "*" not in allowed:
            log.info("ws refused: origin %s not allowed", origin)
            await send({"type": "websocket.close", "code": 4403})  # before accept: HTTP 403
            return None
        token = bearer(authorization)
        if token is None:
            token = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token") or [None])[0]
        await send({"type": "websocket.accept"})
        found = await self._authenticate(node, token, receive, send)
        if found is None:
            return None
        user, token = found
        conn = Connection(user, send, self.settings.ws_queue_frames, close_timeout=self.settings.ws_close_timeout,
                          token=token_hash(token))
        try:
            await node.connect(conn)
        except ChatError as e:
            await _refuse(send, e, CLOSE_POLICY, "too many connections", node.metrics)
            return None
        self.connections.add(conn)
        conn.start()
        log.info("ws open conn=%s user=%s", conn.id, user.id, extra={"conn": conn.id, "user": user.id})
        conn.enqueue(protocol.encode(protocol.hello(user, datetime.now(timezone.utc))))
        return conn

    async def _authenticate(self, node: Node, token: str | None, receive: Receive,
                            send: Send) -> tuple[User, str] | None:
        """Header or ?token= first; otherwise the first frame must be `auth` within the timeout.
        A bad token closes 4401; a database that cannot answer, 1013 (try again later)."""
        try:
            if token is None:
                async with asyncio.timeout(self.settings.ws_auth_timeout):
                    msg = await receive()
                if msg["type"] != "websocket.receive":
                    return None
                cmd, _ = protocol.parse(_data(msg), self.settings)
                if not isinstance(cmd, Authenticate):
                    raise Unauthorized("the first frame must be {\"type\": \"auth\", \"token\": ...}")
                token = cmd.token
            return await node.user(token), token  # type: ignore[return-value]
        except Unavailable as e:
            await _refuse(send, e, CLOSE_TRY_LATER, "try again later", node.metrics)
        except (ChatError, FrameError, TimeoutError) as e:
            err = e if isinstance(e, Unauthorized) else Unauthorized("authentication required")
            await _refuse(send, err, CLOSE_UNAUTHORIZED, "unauthorized", node.metrics)
        except Exception as e:
            await _refuse(send, e, CLOSE_TRY_LATER, "try again later", node.metrics)
        return None

    async def _serve(self, node: Node, conn: Connection, receive: Receive) -> None:
        """The reading loop. While it waits for a frame it holds nothing of the last one, and
        the typing bucket and the set of sends in flight exist only once a frame needs them."""
        s = self.settings
        bucket = TokenBucket(s.ws_rate_per_second, s.ws_rate_burst)
        typing: TokenBucket | None = None
        strikes = 0
        sending: set[asyncio.Task[None]] | None = None
        msg: dict[str, Any] | None
        data: str | bytes | None
        cmd: Command | None
        while not conn.closing:
            msg = data = cmd = ref = None  # waiting for a frame, nothing of the last one is kept
            msg = await receive()
            if msg["type"] != "websocket.receive":
                conn.disconnected(msg.get("code", 1005))
                break
            data = _data(msg)
            if len(data) > s.ws_max_frame_bytes:
                conn.enqueue(error_frame(TooLarge(f"frame over {s.ws_max_frame_bytes} bytes"), None, node.metrics))
                conn.close(CLOSE_TOO_BIG, "frame too big")
                break
            wait = bucket.take()
            if wait:
                strikes += 1
                if strikes > s.ws_rate_strikes:
                    conn.close(CLOSE_POLICY, "rate limit")
                    break
                conn.enqueue(error_frame(RateLimited("too many frames", retry_after=wait), protocol.ref_of(data),
                                         node.metrics))
                continue
            strikes = 0
            try:
                cmd, ref = protocol.parse(data, s)
                if isinstance(cmd, SendMessage):
                    # The user's send budget, shared by their sockets: awaited here, in the
                    # reading loop, so the sends still reach the writer in the order sent.
                    await node.admit_send(conn.user)
                    # Sends run as tasks so the next frames are read while this one is stored:
                    # sends arriving during a write share its next commit, in arrival order
                    # (see Node.send). A bounded number per socket; then reading waits.
                    if sending is None:
                        sending = set()
                    while len(sending) >= SENDS_IN_FLIGHT:
                        await asyncio.wait(sending, return_when=asyncio.FIRST_COMPLETED)
                    task = asyncio.get_running_loop().create_task(self._send(node, conn, cmd, ref))
                    sending.add(task)
                    task.add_done_callback(sending.discard)
                    continue
                if isinstance(cmd, Typing) and typing is None:
                    typing = TokenBucket(s.ws_typing_per_second, s.ws_typing_per_second * 2)
                await self._dispatch(node, conn, cmd, ref, typing)
            except Exception as e:
                conn.enqueue(error_frame(e, ref, node.metrics))

    @staticmethod
    async def _send(node: Node, conn: Connection, cmd: SendMessage, ref: Any) -> None:
        """message.send: the ack once stored, or the error."""
        try:
            sent = await node.send(conn.user, cmd)
        except Exception as e:
            conn.enqueue(error_frame(e, ref, node.metrics))
        else:
            ais = [t.info() for t in sent.side_by_side] if sent.side_by_side else None
            conn.enqueue(protocol.encode(protocol.message_ack(ref, sent.message, sent.ai, sent.duplicate, ais)))

    async def _dispatch(self, node: Node, conn: Connection, cmd: Command, ref: Any,
                        typing: TokenBucket | None) -> None:
        if isinstance(cmd, Subscribe):
            await node.subscribe(conn, cmd, ref)
        elif isinstance(cmd, Typing):
            # over the typing rate it is dropped quietly: it is only a hint
            node.typing(conn, cmd, publish=typing is not None and typing.take() == 0.0)
        elif isinstance(cmd, Unsubscribe):
            node.unsubscribe(conn, cmd.conversation_id)
            conn.enqueue(protocol.encode(protocol.unsubscribed(cmd.conversation_id, ref)))
        elif isinstance(cmd, Cancel):
            await node.cancel(conn.user, cmd.reply_id)
            conn.enqueue(protocol.encode(protocol.cancel_ack(cmd.reply_id, ref)))
        elif isinstance(cmd, Ping):
            conn.enqueue(protocol.encode(protocol.pong(ref)))
        elif isinstance(cmd, Authenticate):
            raise Invalid("type", "already authenticated")

    def close_all(self) -> None:
        """Shutdown: every socket gets 1001 (going away); clients reconnect elsewhere."""
        for conn in list(self.connections):
            conn.close(CLOSE_GOING_AWAY, "server shutting down")


async def _refuse(send: Send, exc: BaseException, code: int, reason: str, metrics: Metrics) -> None:
    """Before a Connection exists: one error frame, then the close."""
    metrics.closed(code)
    await send({"type": "websocket.send", "text": error_frame(exc, None, metrics)})
    await send({"type": "websocket.close", "code": code, "reason": reason})


def _data(msg: dict[str, Any]) -> str | bytes:
    text = msg.get("text")
    return text if text is not None else (msg.get("bytes") or b"")


def _header(scope: Scope, name: bytes) -> str | None:
    """One request header, without keeping a dict of all of them alive for the socket's life."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
