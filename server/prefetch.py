"""Prefetch: an AI turn's provider request sent while its user message is still being stored.

A turn's prompt is the history `MessageStore.start_reply` reads, and that read can only run
once the user message is committed: two commits in a row before the provider hears of the
turn. So, for a conversation whose recent lines this process has just seen, a send that will
start a turn also starts the provider request at once, built from those lines (`Recent`).
Once `start_reply` has read the real history, the turn adopts the request only if the prompt
and the model it would send now are exactly the ones sent ahead; otherwise the request is
dropped unread and the turn asks again. The database stays the one source of the history: the
memory here only guesses it, and a wrong guess costs a cancelled request, never a wrong prompt.

A guess is made only when nothing can make it wrong quietly: one server process (another's
messages would be unseen here), no budget to check first, the conversation's turns idle, a free
slot at the provider. `prefetch_conversations` bounds the memory (0 turns this off)."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from providers.base import ChatMessage, StreamEnd
from providers.registry import Backend

from .broker import Broker
from .budgets import Budgets
from .errors import ChatError
from .metrics import Metrics
from .prompt import prompt_for, window
from .records import Line, Message, Room, User
from .routing import Router, ai_target
from .settings import Settings

log = logging.getLogger("chat.prefetch")

@dataclass(eq=False)
class Recent:
    """One conversation as this process last saw it: enough to predict the next turn's prompt.

    `lines` are (seq, line) of the history `start_reply` would read, oldest first; every seq up to
    `covered` is accounted for (a line, a message history leaves out, or a reply in `open`)."""

    room: Room
    instructions: str | None
    lines: list[tuple[int, Line]]
    covered: int
    open: set[int] = field(default_factory=set)  # seqs of replies still streaming
    members: set[int] = field(default_factory=set)  # users seen taking part: only their sends are guessed


@dataclass(eq=False)
class Prefetch:
    """A provider request sent ahead. `task` awaits its first item (a text delta, or the end)
    and holds one of the backend's slots from its start; whoever ends up with the request
    (the turn's relay once adopted, else `close`) closes its stream and frees that slot."""

    model: str
    backend: Backend
    name: str
    prompt: list[ChatMessage]
    asked: float  # loop time the request went out
    first_at: float = 0.0  # loop time its first item came in
    stream: AsyncIterator[str | StreamEnd] | None = None
    task: asyncio.Task[str | StreamEnd | None] | None = None
    taken: bool = False  # adopted by a turn, or dropped
    closed: bool = False

    async def _first(self, provider: Any, max_tokens: int | None, temperature: float | None
                     ) -> str | StreamEnd | None:
        limit = self.backend.limit
        assert limit is not None
        await limit.acquire()  # free when guessed; taken since, it waits in line like any turn
        try:
            self.stream = provider.stream(self.name, self.prompt, max_tokens=max_tokens, temperature=temperature)
            first = await anext(self.stream, None)
            self.first_at = asyncio.get_running_loop().time()
            return first
        except BaseException:
            try:
                if self.stream is not None:
                    await self.stream.aclose()  # type: ignore[attr-defined]
            finally:
                limit.release()
            raise

    async def close(self) -> None:
        """Stop the request, close its stream, free its slot, whatever state it is in (once)."""
        if self.closed or self.task is None:
            return
        self.closed = True
        if not self.task.done():
            self.task.cancel()  # _first closes and releases on its way out
            await asyncio.gather(self.task, return_exceptions=True)
        elif not self.task.cancelled() and self.task.exception() is None:
            assert self.stream is not None and self.backend.limit is not None
            try:
                await self.stream.aclose()  # type: ignore[attr-defined]
            finally:
                self.backend.limit.release()


class Prefetcher:
    """The conversations seen lately (`Recent`, least recently used first) and the guesses made from them."""

    def __init__(self, router: Router, budgets: Budgets, broker: Broker, metrics: Metrics,
                 settings: Settings) -> None:
        self.router = router
        self.budgets = budgets
        self.broker = broker
        self.metrics = metrics
        self.settings = settings
        self.recent: OrderedDict[int, Recent] = OrderedDict()
        self.sending: dict[int, int] = {}  # conversation -> its sends being stored now

    # -- guessing and adopting ----------------------------------------------------

    def begin(self, user: User, cid: int, content: str, model: str | None, ai: bool | None,
              may_guess: bool) -> Prefetch | None:
        """A send is about to be stored: the request its turn would make, when it can be
        predicted. Every `begin` is followed by one `end`."""
        ahead = None
        if may_guess and not self.sending.get(cid):  # one in flight would come first, unseen
            try:
                ahead = self._guess(user, cid, content, model, ai)
            except Exception:  # a guess must never cost the send
                log.exception("guessing a turn of conversation %s failed", cid)
        self.sending[cid] = self.sending.get(cid, 0) + 1
        return ahead

    async def end(self, cid: int, ahead: Prefetch | None, kept: bool) -> None:
        """The send is stored (or failed); its guess went to its turn only if `kept`."""
        left = self.sending.pop(cid, 1) - 1
        if left:
            self.sending[cid] = left
        if ahead is not None and not kept:
            await self.drop(ahead)

    def _guess(self, user: User, cid: int, content: str, model: str | None, ai: bool | None) -> Prefetch | None:
        known = self.recent.get(cid)
        # Another process's messages are unseen here; a budget must be reserved before any request.
        if known is None or known.open or user.id not in known.members or self.broker.shared \
                or self.budgets.applies(user.id, cid):
            return None
        target = ai_target(known.room, content, model, ai, self.settings.aliases)
        if target is None:
            return None
        try:
            choice = self.router.choose(target[0], known.room.default_model_id, target[1], content)
            backend, name = self.router.resolve(choice.model)
        except ChatError:
            return None
        if backend.limit is None or backend.limit.locked():
            return None  # it would wait in line: the turn's own request waits there as well
        s = self.settings
        lines = self._window([*known.lines, (known.covered + 1, Line("user", content, user.display_name))])
        loop = asyncio.get_running_loop()
        ahead = Prefetch(choice.model, backend, name,
                         prompt_for(known.room.mode, [line for _, line in lines], known.instructions), loop.time())
        ahead.task = loop.create_task(ahead._first(backend.provider, s.ai_max_tokens, s.ai_temperature),
                                      name=f"prefetch-{cid}")
        self.recent.move_to_end(cid)
        return ahead

    async def adopt(self, ahead: Prefetch, model: str, backend: Backend, name: str,
                    sent: list[ChatMessage]) -> Prefetch | None:
        """The request sent ahead, if it is exactly the one the turn would send now; else closed.
        Once adopted, closing it is the caller's."""
        if ahead.taken:
            return None
        ahead.taken = True
        if ahead.model == model and ahead.backend is backend and ahead.name == name and ahead.prompt == sent:
            self.metrics.prefetches.labels("used").inc()
            return ahead
        self.metrics.prefetches.labels("missed").inc()
        await ahead.close()
        return None

    async def drop(self, ahead: Prefetch) -> None:
        """A guess its turn never got to use (cancelled, refused, failed before asking)."""
        if not ahead.taken:
            ahead.taken = True
            self.metrics.prefetches.labels("unused").inc()
            await ahead.close()

    # -- what this process sees of a conversation -------------------------------------

    def stored(self, msg: Message, room: Room) -> None:
        """A user message stored here: the next line, unless someone else's came in between."""
        known = self.recent.get(msg.conversation_id)
        if known is None:
            return
        if msg.seq != known.covered + 1:
            self.forget(msg.conversation_id)
            return
        author = msg.author.display_name if msg.author else None
        known.lines = self._window([*known.lines, (msg.seq, Line("user", msg.content, author))])
        known.covered, known.room = msg.seq, room
        if msg.author is not None:
            known.members.add(msg.author.id)

    def started(self, room: Room, trigger: Message, reply: Message, history: list[tuple[int, Line]],
                instructions: str | None, requested_by: int) -> None:
        """A reply row stored with the history it answers: that history, read just now, is the
        best knowledge there is, if nothing lies between the trigger and the reply."""
        cid = room.id
        if self.settings.prefetch_conversations <= 0:
            return
        if reply.seq != trigger.seq + 1:
            self.forget(cid)
            return
        known = self.recent.get(cid)
        members = {requested_by, *(known.members if known else ())}
        self.recent[cid] = Recent(room, instructions, history, reply.seq, {reply.seq}, members)
        self.recent.move_to_end(cid)
        while len(self.recent) > self.settings.prefetch_conversations:
            self.recent.popitem(last=False)

    def ended(self, reply: Message) -> None:
        """A reply ended: a complete one with text is a line of the history from now on."""
        known = self.recent.get(reply.conversation_id)
        if known is None or reply.seq not in known.open:
            return
        known.open.discard(reply.seq)
        if reply.status == "complete" and reply.content:
            lines = [*known.lines, (reply.seq, Line("assistant", reply.content, None))]
            lines.sort(key=lambda x: x[0])
            known.lines = self._window(lines)

    def _window(self, lines: list[tuple[int, Line]]) -> list[tuple[int, Line]]:
        """What is kept: a line out of the window now stays out, as only newer lines can come."""
        return window(lines, self.settings.history_messages, self.settings.history_chars)

    def forget(self, cid: int) -> None:
        """What this process knew of the conversation may be out of date (its settings or
        members changed, or a seq it did not see)."""
        self.recent.pop(cid, None)
