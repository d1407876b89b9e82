"""Replies: keeping AI replies in the database — their text while they stream (checkpoints),
their end with what they used and cost, the ones that ended while the database was down,
and the ones whose server died (a heartbeat per server; the survivors end its replies).

Turns stream; this module persists and accounts. It never holds live text of its own."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from providers.base import StreamEnd

from . import protocol
from .accounting import spent
from .events import Event
from .hub import Hub
from .metrics import Metrics
from .pricing import Pricing
from .records import FinalReply, Message
from .routing import Router
from .settings import Settings
from .store import Store

if TYPE_CHECKING:
    from .turns import Turn

log = logging.getLogger("chat.replies")


class Replies:
    def __init__(self, store: Store, hub: Hub, router: Router, pricing: Pricing, metrics: Metrics,
                 settings: Settings) -> None:
        self.store = store
        self.hub = hub
        self.router = router
        self.pricing = pricing
        self.metrics = metrics
        self.settings = settings
        self._unsaved: dict[int, FinalReply] = {}  # replies that ended while the database was down
        self._saver: asyncio.Task[None] | None = None

    # -- while streaming --------------------------------------------------------

    def maybe_checkpoint(self, turn: Turn) -> None:
        """Store the text so far, in the background, once per `reply_checkpoint_interval`."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - turn.checkpointed >= self.settings.reply_checkpoint_interval and turn.checkpoint is None:
            turn.checkpointed = now
            turn.checkpoint = loop.create_task(self._checkpoint(turn))

    async def _checkpoint(self, turn: Turn) -> None:
        assert turn.message is not None
        try:
            await self.store.messages.checkpoint_reply(turn.message.id, "".join(turn.parts))
        except Exception as e:  # only means a crash would lose more
            log.info("turn %s: checkpoint failed: %r", turn.reply_id, e)
        finally:
            turn.checkpoint = None

    # -- at the end -------------------------------------------------------------

    def final(self, turn: Turn, status: str, end: StreamEnd | None, error_code: str | None = None,
              error_message: str | None = None) -> FinalReply:
        """The reply as it will be stored: text, status, how it came to be, usage and cost.
        Without the provider's counts, tokens are estimated (see accounting.py)."""
        msg = turn.message
        assert msg is not None
        text = "".join(turn.parts)
        clock = turn.clock
        cancelled_by = turn.cancel_by if status == "cancelled" else None
        if not clock.asked:  # no provider was asked (refused, or cancelled before)
            return FinalReply(msg.id, text, status, turn.model, turn.tier, turn.fallback_from, cancelled_by,
                              None, None, None, None, None, None, error_code, error_message)
        used = spent(self.router, self.pricing, turn.model, end, turn.prompt_chars, len(text))
        return FinalReply(msg.id, text, status, turn.model, turn.tier, turn.fallback_from, cancelled_by,
                          used.prompt_tokens, used.completion_tokens, used.estimated, clock.ttft_ms, clock.gen_ms,
                          used.cost_usd, error_code, error_message)

    async def store_final(self, msg: Message, final: FinalReply) -> Message:
        """The stored reply; or, the database being down, the reply as it will be stored (status
        `error`, code `unavailable`), stored in the background as soon as it answers."""
        try:
            return await self.store.messages.finish_reply(final)
        except Exception as e:
            log.warning("reply %s: storing it failed (%r); retrying in the background", msg.id, e)
            final = final._replace(status="error", error_code="unavailable", error_message=(
                "the reply could not be stored yet (the database is unavailable); it will be stored when it is back"))
            self._unsaved[msg.id] = final
            if self._saver is None or self._saver.done():
                self._saver = asyncio.get_running_loop().create_task(self._save_later(), name="replies-saver")
            return replace(msg, content=final.content, status=final.status, model_used=final.model_used,
                           tier=final.tier, fallback_from=final.fallback_from, error_code=final.error_code,
                           error_message=final.error_message)

    async def _save_later(self) -> None:
        wait = 0.5
        while self._unsaved:
            await asyncio.sleep(wait)
            for message_id, final in list(self._unsaved.items()):
                try:
                    await self.store.messages.finish_reply(final)
                except Exception as e:
                    log.info("storing reply %s still failing: %r", message_id, e)
                    wait = min(wait * 2, 10.0)
                    break
                del self._unsaved[message_id]
                log.info("reply %s stored after the database came back", message_id)

    def count(self, turn: Turn, final: FinalReply) -> None:
        clock = turn.clock
        self.metrics.turn_ended(final.model_used, final.status, final.prompt_tokens, final.completion_tokens,
                                final.cost_usd, final.ttft_ms,
                                clock.ended - clock.asked if clock.asked and clock.ended else None)

    # -- servers that died --------------------------------------------------------

    async def heartbeat(self) -> None:
        """Say this server is alive; end the replies of servers that stopped saying so (run
        every heartbeat_interval)."""
        await self.store.messages.heartbeat(self.settings.node_id)
        for orphan in await self.store.messages.interrupt_orphans(self.settings.heartbeat_interval * 3):
            self._announce_interrupted(orphan)
        await self.store.completions.interrupt(stale_after=self.settings.heartbeat_interval * 3)

    def _announce_interrupted(self, reply: Message) -> None:
        """A reply whose server died ends for its subscribers, wherever they are."""
        log.warning("reply %s of conversation %s: its server stopped answering; marked interrupted",
                    reply.id, reply.conversation_id)
        cid, model = reply.conversation_id, reply.model_used or ""
        done = protocol.ai_done(reply.reply_id or "", model, reply)
        self.hub.publish(cid, Event(protocol.encode(done), after=reply.seq))
        self.hub.publish(cid, Event(protocol.encode(protocol.message(reply)), after=reply.seq))

    async def close(self) -> None:
        if self._saver is not None:
            self._saver.cancel()
            await asyncio.gather(self._saver, return_exceptions=True)
        for message_id, final in self._unsaved.items():
            log.error("reply %s (%d characters) could not be stored before shutdown", message_id, len(final.content))
