"""The /ws endpoint: handshake, auth, the receive loop, and dispatch by frame type.

It speaks raw ASGI rather than Starlette's WebSocket wrapper, and the app routes /ws
here before the router, so outgoing frames reach uvicorn's own `send` unwrapped.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send

from . import inputs, protocol
from .auth import bearer
from .connection import Connection
from .errors import ChatError, Invalid, RateLimited, TooLarge, Unauthorized
from .events import Event, encode
from .messages import Sent
from .protocol import FrameError
from .ratelimit import TokenBucket
from .records import User, rfc3339
from .services import Services
from .settings import Settings

log = logging.getLogger("chat.ws")

CLOSE_UNAUTHORIZED, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_GOING_AWAY = 4401, 1008, 1009, 1001
SENDS_IN_FLIGHT = 32  # message.send frames of one socket being stored at once


class SocketEndpoint:
    """One instance serves every socket; per-socket state lives in `Connection` and locals."""

    services: Services  # set by the lifespan before the first connection

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connections: set[Connection] = set()
        self.per_user: dict[int, int] = {}

    @property
    def s(self) -> Services:
        return self.services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        origin, authorization = _header(scope, b"origin"), _header(scope, b"authorization")
        allowed = self.settings.ws_allowed_origins
        if origin and allowed and origin not in allowed and "*" not in allowed:
            log.info("ws refused: origin %s not allowed", origin)
            await send({"type": "websocket.close", "code": 4403})  # before accept: HTTP 403
            return
        token = bearer(authorization)
        if token is None:
            token = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token") or [None])[0]
        await send({"type": "websocket.accept"})
        user = await self._authenticate(token, receive, send)
        if user is None:
            return
        if self.per_user.get(user.id, 0) >= self.settings.ws_max_connections_per_user:
            err = RateLimited("too many connections for this user", retry_after=5)
            await send({"type": "websocket.send", "text": encode(protocol.error_frame(err))})
            await send({"type": "websocket.close", "code": CLOSE_POLICY, "reason": "too many connections"})
            return
        conn = Connection(user, send, self.settings.ws_queue_frames)
        self.connections.add(conn)
        self.per_user[user.id] = self.per_user.get(user.id, 0) + 1
        conn.start()
        log.info("ws open conn=%s user=%s", conn.id, user.id)
        conn.enqueue(encode({"type": "hello", "user": user.wire(), "server_time": rfc3339(datetime.now(timezone.utc))}))
        try:
            await self._serve(conn, receive)
        finally:
            self.s.hub.drop(conn)
            self.connections.discard(conn)
            left = self.per_user.get(user.id, 1) - 1
            if left:
                self.per_user[user.id] = left
            else:
                self.per_user.pop(user.id, None)
            conn.close(1000)  # no-op when already closing
            await conn.finish()
            log.info("ws closed conn=%s user=%s code=%s", conn.id, user.id, conn.close_code)

    async def _authenticate(self, token: str | None, receive: Receive, send: Send) -> User | None:
        """Header or ?token= first; otherwise the first frame must be `auth` within the timeout."""
        try:
            if token is None:
                async with asyncio.timeout(self.settings.ws_auth_timeout):
                    msg = await receive()
                if msg["type"] != "websocket.receive":
                    return None
                frame, _ = protocol.decode(msg.get("text") or msg.get("bytes") or b"")
                if frame.get("type") != "auth" or not isinstance(frame.get("token"), str):
                    raise Unauthorized("the first frame must be {\"type\": \"auth\", \"token\": ...}")
                token = frame["token"]
            return await self.s.auth.user(token)
        except (ChatError, FrameError, TimeoutError) as e:
            err = e if isinstance(e, Unauthorized) else Unauthorized("authentication required")
            await send({"type": "websocket.send", "text": encode(protocol.error_frame(err))})
            await send({"type": "websocket.close", "code": CLOSE_UNAUTHORIZED, "reason": "unauthorized"})
            return None

    async def _serve(self, conn: Connection, receive: Receive) -> None:
        s = self.settings
        bucket = TokenBucket(s.ws_rate_per_second, s.ws_rate_burst)
        typing = TokenBucket(s.ws_typing_per_second, s.ws_typing_per_second * 2)
        strikes = 0
        sending: set[asyncio.Task[None]] = set()
        while not conn.closing:
            msg = await receive()
            if msg["type"] != "websocket.receive":
                conn.disconnected(msg.get("code", 1005))
                break
            data = msg.get("text")
            if data is None:
                data = msg.get("bytes") or b""
            ref = None
            try:
                if len(data) > s.ws_max_frame_bytes:
                    conn.enqueue(encode(protocol.error_frame(TooLarge(f"frame over {s.ws_max_frame_bytes} bytes"))))
                    conn.close(CLOSE_TOO_BIG, "frame too big")
                    break
                wait = bucket.take()
                if wait:
                    strikes += 1
                    if strikes > s.ws_rate_strikes:
                        conn.close(CLOSE_POLICY, "rate limit")
                        break
                    raise RateLimited("too many frames", retry_after=wait)
                strikes = 0
                frame, ref = protocol.decode(data)
                if frame["type"] == "message.send":
                    # Sends run as tasks so the next frames are read while this one is stored:
                    # sends arriving during a write share its next commit (see MessageWriter),
                    # in arrival order. A bounded number per socket; then reading waits.
                    while len(sending) >= SENDS_IN_FLIGHT:
                        await asyncio.wait(sending, return_when=asyncio.FIRST_COMPLETED)
                    task = asyncio.get_running_loop().create_task(self._send(conn, frame, ref))
                    sending.add(task)
                    task.add_done_callback(sending.discard)
                    continue
                await self._dispatch(conn, frame, ref, typing)
            except FrameError as e:
                conn.enqueue(encode(protocol.error_frame(e.error, e.ref)))
            except ChatError as e:
                conn.enqueue(encode(protocol.error_frame(e, ref)))
            except Exception:
                log.exception("frame from conn=%s failed", conn.id)
                conn.enqueue(encode({"type": "error", "code": "unavailable", "message": "internal error",
                                     **({"ref": ref} if ref is not None else {})}))

    async def _send(self, conn: Connection, frame: dict[str, Any], ref: Any) -> None:
        """message.send: store, fan out, ack — or answer with the error."""
        try:
            sent = await self.s.messages.send(conn.user, protocol.conversation_id(frame), frame)
        except ChatError as e:
            conn.enqueue(encode(protocol.error_frame(e, ref)))
        except Exception:
            log.exception("send from conn=%s failed", conn.id)
            conn.enqueue(encode({"type": "error", "code": "unavailable", "message": "the message was not stored",
                                 **({"ref": ref} if ref is not None else {})}))
        else:
            conn.enqueue(encode(self._ack(sent, ref)))

    async def _dispatch(self, conn: Connection, frame: dict[str, Any], ref: Any, typing: TokenBucket) -> None:
        kind = frame["type"]
        if kind == "subscribe":
            await self._subscribe(conn, frame, ref)
        elif kind == "typing":
            cid = protocol.conversation_id(frame)
            state = frame.get("state")
            if not isinstance(state, bool):
                raise Invalid("state", "state must be true or false")
            if not self.s.hub.is_subscribed(conn, cid):
                raise Invalid("conversation_id", "subscribe to the conversation before sending typing")
            if typing.take() == 0.0:
                self.s.hub.publish(cid, Event(encode({"type": "typing", "conversation_id": cid,
                                                      "user": conn.user.wire(), "state": state}),
                                              skip_user=conn.user.id))
        elif kind == "unsubscribe":
            cid = protocol.conversation_id(frame)
            self.s.hub.unsubscribe(conn, cid)
            conn.enqueue(encode({"type": "unsubscribed", "conversation_id": cid, "ref": ref}))
        elif kind == "ai.cancel":
            reply_id = inputs.text(frame, "reply_id", max_chars=64)
            await self.s.turns.cancel(reply_id, conn.user)  # type: ignore[arg-type]
            conn.enqueue(encode({"type": "ack", "for": "ai.cancel", "reply_id": reply_id, "ref": ref}))
        elif kind == "ping":
            conn.enqueue(encode({"type": "pong", "ref": ref}))
        elif kind == "auth":
            raise Invalid("type", "already authenticated")

    def _ack(self, sent: Sent, ref: Any) -> dict[str, Any]:
        ack = {"type": "message.ack", "ref": ref, "client_id": sent.message.client_id,
               "message": sent.message.wire(), "ai": sent.ai}
        if sent.duplicate:
            ack["duplicate"] = True
        return ack

    async def _subscribe(self, conn: Connection, frame: dict[str, Any], ref: Any) -> None:
        cid = protocol.conversation_id(frame)
        after = protocol.after(frame)
        hub = self.s.hub
        if not hub.is_subscribed(conn, cid) and len(conn.subscriptions) >= self.settings.ws_max_subscriptions:
            raise Invalid("conversation_id", f"at most {self.settings.ws_max_subscriptions} subscriptions",
                          max=self.settings.ws_max_subscriptions)
        await self.s.conversations.visible(cid, conn.user)
        # Listen first, then read: a message stored while the replay query runs is held
        # in the subscription's buffer and sent after the replay unless the replay had it.
        await hub.subscribe(conn, cid)
        try:
            if after is None:
                replay, last_seq = [], await self.s.store.last_seq(cid)
            else:
                replay, last_seq = await self.s.store.messages_after(cid, after, self.settings.replay_cap)
        except BaseException:
            hub.unsubscribe(conn, cid)
            raise
        # recovered: the client named a position and every message after it was replayed
        recovered = after is not None and after <= last_seq and len(replay) == last_seq - after
        frames = [encode({"type": "message", "message": m.wire()}) for m in replay]

        def subscribed(present: list[dict[str, Any]], streaming: list[dict[str, Any]]) -> str:
            return encode({"type": "subscribed", "conversation_id": cid, "ref": ref, "last_seq": last_seq,
                           "recovered": recovered, "present": present, "streaming": streaming})

        hub.go_live(conn, cid, last_seq, frames, subscribed)

    def close_all(self) -> None:
        """Shutdown: every socket gets 1001 (going away); clients reconnect elsewhere."""
        for conn in list(self.connections):
            conn.close(CLOSE_GOING_AWAY, "server shutting down")


def _header(scope: Scope, name: bytes) -> str | None:
    """One request header, without keeping a dict of all of them alive for the socket's life."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
