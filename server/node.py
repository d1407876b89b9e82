"""Node: the one domain facade both transports call (REST routes and the socket endpoint).

Modelled on Centrifuge's Node: the transports parse input into typed commands and turn
results and errors into their own shapes; every rule and every side effect is here or in
the collaborators the lifespan builds and hands in."""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from providers.registry import Registry

from . import protocol
from .auth import Auth, token_hash
from .budgets import Budgets
from .completions import Completions
from .connection import CLOSE_UNAUTHORIZED, Connection
from .conversations import Conversations
from .errors import (
    ChatError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from .events import Event
from .hub import Hub
from .inputs import (
    ConversationChanges,
    Login,
    NewBudget,
    NewConversation,
    NewNode,
    Registration,
)
from .metrics import Metrics
from .nodes import Nodes
from .prefetch import Prefetch
from .protocol import SendMessage, Subscribe, Typing
from .ratelimit import Limits
from .records import (
    Conversation,
    Message,
    Room,
    User,
    catalog_wire,
    openai_models_wire,
    rfc3339,
)
from .routing import Router, ai_target
from .sessions import Sessions
from .settings import Settings
from .stats import ModelStats
from .store import Store
from .turns import Turn, Turns
from .writer import MessageWriter

log = logging.getLogger("chat.node")

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
CANCEL_WAIT = 1.0  # how long a cancel waits for the process running the reply to answer
STREAMING_WAIT = 0.5  # how long a subscribe waits for other processes' live replies


@dataclass(frozen=True, slots=True)
class Sent:
    """What a send produced: the stored message, the AI turn it started, whether it was a resend."""

    message: Message
    turn: Turn | None
    ai: dict[str, Any] | None
    duplicate: bool
    side_by_side: list[Turn] | None = None  # every reply when it asked several models


class Node:
    """Send, subscribe and resume, typing, cancel, conversations, accounts, models."""

    def __init__(self, settings: Settings, store: Store, auth: Auth, hub: Hub, router: Router,
                 conversations: Conversations, turns: Turns, registry: Registry, nodes: Nodes,
                 stats: ModelStats, metrics: Metrics, budgets: Budgets, completions: Completions,
                 limits: Limits, sessions: Sessions) -> None:
        self.settings = settings
        self.store = store
        self.auth = auth
        self.hub = hub
        self.router = router
        self.conversations = conversations
        self.turns = turns
        self.prefetcher = turns.prefetcher
        self.registry = registry
        self.nodes = nodes
        self.stats = stats
        self.metrics = metrics
        self.budgets = budgets
        self.completions = completions  # the OpenAI-compatible endpoint's (openai_api.py)
        self.limits = limits
        self.sessions = sessions
        self.writer = MessageWriter(store.messages)
        hub.broker.on_ask = self.answer  # questions from other server processes

    # -- accounts ---------------------------------------------------------------

    async def user(self, token: str | None) -> User:
        return await self.auth.user(token)

    async def admit_auth(self, client: str, what: str) -> None:
        """Registration and login cost a password hash: limited per client address, cluster-wide."""
        await self.limits.auth.check(client, what)

    async def admit_send(self, user: User) -> None:
        """Sends start database writes and AI turns: limited per user over all their sockets
        and processes. Called before `send`, never inside it (see its note on order)."""
        await self.limits.sends.check(str(user.id), "messages")

    async def register(self, reg: Registration) -> tuple[str, User]:
        return await self.auth.register(reg.username, reg.password, reg.display_name)

    async def login(self, login: Login) -> tuple[str, User]:
        return await self.auth.login(login.username, login.password)

    async def logout(self, token: str) -> None:
        """Revoke the token; its sockets here close at once, elsewhere within the check interval."""
        await self.auth.logout(token)
        self._close_unauthorized({token_hash(token)})

    async def check_tokens(self) -> None:
        """Close every socket whose token was revoked or expired since it connected."""
        conns = self.hub.connections()
        if conns:
            valid = await self.store.valid_tokens(list({c.token for c in conns}))
            self._close_unauthorized({c.token for c in conns} - valid)

    def _close_unauthorized(self, hashes: set[bytes]) -> None:
        for conn in self.hub.connections():
            if conn.token in hashes:
                conn.close(CLOSE_UNAUTHORIZED, "token revoked or expired")

    # -- conversations ----------------------------------------------------------

    async def conversations_of(self, user: User) -> list[Conversation]:
        return await self.conversations.of(user)

    async def conversation(self, user: User, cid: int) -> Conversation:
        return await self.conversations.visible(cid, user)

    async def create_conversation(self, user: User, new: NewConversation) -> Conversation:
        return await self.conversations.create(user, new)

    async def update_conversation(self, user: User, cid: int, changes: ConversationChanges) -> Conversation:
        try:
            return await self.conversations.update(cid, user, changes)
        finally:  # a turn's request sent ahead is built from the settings remembered
            self.prefetcher.forget(cid)

    async def add_participants(self, user: User, cid: int, usernames: list[str]) -> Conversation:
        return await self.conversations.add(cid, user, usernames)

    async def remove_participant(self, user: User, cid: int, user_id: int) -> Conversation:
        try:
            return await self.conversations.remove(cid, user, user_id)
        finally:
            self.prefetcher.forget(cid)  # who may have a turn sent ahead: members only

    # -- messages ---------------------------------------------------------------

    async def send(self, user: User, cmd: SendMessage) -> Sent:
        """Store first, then fan out and start the AI turn; a repeated client_id changes nothing.

        Order: a socket's pipelined sends are stored in the order this is called, because
        nothing here awaits before the writer takes the send (MessageWriter.insert's first
        step is synchronous). Keep it that way: an await above the insert reorders them."""
        for model in (cmd.model,) if cmd.models is None else cmd.models:
            if model is not None:
                self.router.check(model)
        cid = cmd.conversation_id
        # the AI turn's provider request, sent while the message is stored (prefetch.py)
        ahead = self.prefetcher.begin(user, cid, cmd.content, cmd.model, cmd.ai,
                                      cmd.models is None and self.turns.idle(cid))
        sent: Sent | None = None
        try:
            sent = await self._store_and_start(user, cmd, ahead)
            return sent
        finally:
            await self.prefetcher.end(cid, ahead, sent is not None and sent.turn is not None
                                      and sent.turn.ahead is ahead)

    async def _store_and_start(self, user: User, cmd: SendMessage, ahead: Prefetch | None) -> Sent:
        started = time.perf_counter()
        msg, room = await self.writer.insert(cmd.conversation_id, user, cmd.content, cmd.client_id)
        self.metrics.store_seconds.observe(time.perf_counter() - started)
        if room is None:
            turn = self.turns.for_trigger(msg.id)
            ai = turn.info() if turn else await self._past_reply(msg)
            return Sent(msg, turn, ai, True)
        self.metrics.messages_stored.inc()
        self.prefetcher.stored(msg, room)
        self.hub.publish(msg.conversation_id, protocol.message_event(msg))
        target = ai_target(room, cmd.content, cmd.model, cmd.ai, self.settings.aliases)
        if target is None:
            return Sent(msg, None, None, False)
        if cmd.models is not None:
            turns = self.turns.start_side_by_side(room, msg, list(cmd.models), user)
            return Sent(msg, turns[0], turns[0].info(), False, turns)
        turn = self.turns.start(room, msg, target[0], user, target[1], ahead)
        return Sent(msg, turn, turn.info(), False)

    async def _past_reply(self, msg: Message) -> dict[str, Any] | None:
        reply = await self.store.messages.reply_to(msg.id)
        if reply is None or reply.reply_id is None:
            return None
        return protocol.ai_info(reply.reply_id, reply.model_used, None)

    async def regenerate(self, user: User, cid: int, message_id: int, model: str | None) -> Turn:
        """Answer a message again (or the message a reply answered), optionally with another
        model: a new reply to the same trigger; the room sees both."""
        conv = await self.conversations.visible(cid, user)
        if not conv.with_ai:
            raise Conflict("the AI is off in this conversation")
        if model is not None:
            self.router.check(model)
        found = await self.store.messages.one(cid, message_id)
        if found is not None and found.role == "assistant":
            found = await self.store.messages.one(cid, found.reply_to) if found.reply_to else None
        if found is None:
            raise NotFound(f"message {message_id} not found")
        room = Room(cid, conv.mode, conv.with_ai, conv.default_model_id, conv.owner_id, conv.ai_answers)
        return self.turns.start(room, found, model, user)

    async def page(self, user: User, cid: int, after: int | None, before: int | None,
                   limit: int) -> tuple[list[Message], bool]:
        await self.conversations.visible(cid, user)
        return await self.store.messages.page(cid, after=after, before=before, limit=limit)

    async def cancel(self, user: User, reply_id: str) -> None:
        """Stop a reply, on whichever server process runs it."""
        if self.turns.by_reply.get(reply_id) is not None:
            await self.turns.cancel(reply_id, user)
            return
        answers = await self.hub.broker.ask("cancel", {"reply_id": reply_id, "user": user.wire()}, CANCEL_WAIT)
        answer = answers[0] if answers else None
        if answer is None or answer.get("code") == "not_found":
            raise NotFound(f"no running reply {reply_id!r}")
        if answer.get("code") == "forbidden":
            raise Forbidden(answer.get("message") or "only the message's author or the conversation owner may cancel")

    async def answer(self, topic: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Another process's question, about replies running here (else no answer): their
        text so far (`streaming`), or a cancel."""
        if topic == "streaming":
            live = [x.wire_with_step() for x in self.turns.streaming(payload["conversation_id"])
                    if x.reply_id in payload["reply_ids"]]
            return {"streaming": live} if live else None
        if topic != "cancel" or payload.get("reply_id") not in self.turns.by_reply:
            return None
        try:
            await self.turns.cancel(payload["reply_id"], User(**payload["user"]))
        except ChatError as e:
            return {"code": e.code, "message": e.message}
        return {"ok": True}

    # -- live -------------------------------------------------------------------

    async def subscribe(self, conn: Connection, cmd: Subscribe, ref: Any) -> None:
        """Listen first, then read: a message stored while the replay query runs is held in the
        subscription's buffer and sent after the replay unless the replay had it. Then the
        replay, `subscribed` (with who is present and the replies streaming now), and live frames."""
        cid, after, hub = cmd.conversation_id, cmd.after, self.hub
        limit = self.settings.ws_max_subscriptions
        if not hub.is_subscribed(conn, cid) and len(conn.subscriptions) >= limit:
            raise Invalid("conversation_id", f"at most {limit} subscriptions", max=limit)
        await self.conversations.visible(cid, conn.user)
        await hub.subscribe(conn, cid)
        try:
            if after is None:
                replay, last_seq = [], await self.store.messages.last_seq(cid)
            else:
                replay, last_seq = await self.store.messages.replay(cid, after, self.settings.replay_cap)
            elsewhere = await self._streaming_elsewhere(cid)
            present = await hub.join(conn, cid)
        except BaseException:
            hub.unsubscribe(conn, cid)
            raise
        # recovered: the client named a position and every message after it was replayed
        recovered = after is not None and after <= last_seq and len(replay) == last_seq - after
        streaming = self.turns.streaming(cid) + elsewhere
        frames = [protocol.encode(protocol.message(m)) for m in replay]
        frames.append(protocol.encode(protocol.subscribed(cid, ref, last_seq, recovered, present, streaming)))
        hub.go_live(conn, cid, last_seq, frames, {live.reply_id: live.step for live in streaming})

    async def _streaming_elsewhere(self, cid: int) -> list[protocol.Live]:
        """Replies of this conversation generated by other processes, with their text so far
        (asked of them; the step each covers keeps the frames after it exact)."""
        if not self.hub.broker.shared:
            return []
        try:
            remote = await self.store.messages.streaming_elsewhere(cid, self.settings.node_id)
        except Unavailable:
            return []
        if not remote:
            return []
        answers = await self.hub.broker.ask("streaming", {"conversation_id": cid, "reply_ids": remote},
                                            STREAMING_WAIT, want=len(remote))
        return [protocol.Live(**live) for a in answers for live in a["streaming"]]

    def unsubscribe(self, conn: Connection, cid: int) -> None:
        self.hub.unsubscribe(conn, cid)

    def typing(self, conn: Connection, cmd: Typing, publish: bool = True) -> None:
        if not self.hub.is_subscribed(conn, cmd.conversation_id):
            raise Invalid("conversation_id", "subscribe to the conversation before sending typing")
        if not publish:
            return
        frame = protocol.typing(cmd.conversation_id, conn.user, cmd.state)
        self.hub.publish(cmd.conversation_id, Event(protocol.encode(frame), skip_user=conn.user.id))

    async def connect(self, conn: Connection) -> None:
        """An authenticated socket joins, within its user's connection limit (on every process)."""
        if not await self.sessions.open(conn.user.id):
            raise RateLimited("too many connections for this user", retry_after=5)
        self.hub.connect(conn)

    def disconnect(self, conn: Connection) -> None:
        """A closed socket leaves every conversation."""
        self.hub.drop(conn)
        self.sessions.end(conn.user.id)

    # -- models and AI nodes ----------------------------------------------------

    def models(self) -> dict[str, Any]:
        return {**catalog_wire(self.registry, self.stats.get), "aliases": self.settings.aliases}

    def openai_models(self) -> list[dict[str, Any]]:
        return openai_models_wire(self.registry, self.router.policies)

    def model_stats(self) -> dict[str, Any]:
        return self.stats.table()

    # -- budgets ----------------------------------------------------------------

    async def set_user_budget(self, user: User, user_id: int, new: NewBudget) -> dict[str, Any]:
        if not user.is_admin:
            raise Forbidden("only an admin may set a user's budget")
        budget = await self.store.budgets.set("user", user_id, new.period, new.limit_usd, new.warn_at, user.id)
        self.budgets.changed("user", user_id, True)
        return budget.wire()

    async def delete_user_budget(self, user: User, user_id: int) -> None:
        if not user.is_admin:
            raise Forbidden("only an admin may remove a user's budget")
        if not await self.store.budgets.delete("user", user_id):
            raise NotFound("that user has no budget")
        self.budgets.changed("user", user_id, False)

    async def set_conversation_budget(self, user: User, cid: int, new: NewBudget) -> dict[str, Any]:
        await self.conversations.owned(cid, user)
        budget = await self.store.budgets.set("conversation", cid, new.period, new.limit_usd, new.warn_at, user.id)
        self.budgets.changed("conversation", cid, True)
        return budget.wire()

    async def delete_conversation_budget(self, user: User, cid: int) -> None:
        await self.conversations.owned(cid, user)
        if not await self.store.budgets.delete("conversation", cid):
            raise NotFound("this conversation has no budget")
        self.budgets.changed("conversation", cid, False)

    async def conversation_budget(self, user: User, cid: int) -> dict[str, Any] | None:
        await self.conversations.visible(cid, user)
        found = await self.store.budgets.of(conversation_id=cid)
        return found[0].wire() if found else None

    async def user_budget(self, user: User, user_id: int | None) -> dict[str, Any] | None:
        """The caller's own budget; an admin may ask for anyone's."""
        if user_id is not None and user_id != user.id and not user.is_admin:
            raise Forbidden("only an admin may see other users' budgets")
        found = await self.store.budgets.of(user_id=user_id or user.id)
        return found[0].wire() if found else None

    # -- usage ------------------------------------------------------------------

    async def conversation_usage(self, user: User, cid: int, since: datetime, until: datetime) -> dict[str, Any]:
        """What a conversation's replies used and cost; its participants may see it."""
        await self.conversations.visible(cid, user)
        summary = await self.store.usage.summary(conversation_id=cid, since=since, until=until)
        return {"conversation_id": cid, "from": rfc3339(since), "to": rfc3339(until), **summary}

    async def usage(self, user: User, user_id: int | None, everyone: bool, since: datetime,
                    until: datetime) -> dict[str, Any]:
        """The caller's own usage (the replies they asked for); an admin may ask for anyone's, or all."""
        if (everyone or (user_id is not None and user_id != user.id)) and not user.is_admin:
            raise Forbidden("only an admin may see other users' usage")
        who = None if everyone else (user_id if user_id is not None else user.id)
        summary = await self.store.usage.summary(user_id=who, since=since, until=until)
        return {"user_id": who, "from": rfc3339(since), "to": rfc3339(until), **summary}

    async def ai_nodes(self, user: User) -> list[dict[str, Any]]:
        return await self.nodes.list(user)

    async def add_ai_node(self, user: User, new: NewNode) -> dict[str, Any]:
        if not user.is_admin:
            raise Forbidden("only an admin may register AI nodes")
        return await self.nodes.create(user, new)

    async def remove_ai_node(self, user: User, node_id: int) -> None:
        if not user.is_admin:
            raise Forbidden("only an admin may remove AI nodes")
        if not await self.nodes.delete(node_id):
            raise NotFound("no such node")

    # -- operations -------------------------------------------------------------

    async def ready(self) -> None:
        await self.store.ping()

    def scrape(self, client_host: str | None, token: str | None) -> bytes:
        """The /metrics body for a caller allowed to read it: with `metrics_token` set, whoever
        presents it; otherwise callers on this machine only."""
        expected = self.settings.metrics_token
        if expected:
            if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
                raise Unauthorized("the metrics need the metrics token")
        elif client_host not in LOOPBACK:
            raise Forbidden("the metrics are served to this machine only (set metrics_token to allow others)")
        return self.metrics.render()
