"""Completions: a prompt answered outside any conversation, for the OpenAI-compatible endpoint.

The same registry, three-tier chain (the request's model, else the system default; `auto`
too), fallback before the first token, budgets and accounting as a chat turn; no room,
no history, nothing fanned out. `open()` returns once the first token is in (so a failure
before it is an HTTP error, not a broken stream); `deltas()` streams the rest and ends it."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

from providers.base import ChatMessage, ProviderError, StreamEnd

from .accounting import Clock, spent
from .budgets import Budgets
from .errors import ChatError, RateLimited, Unavailable
from .metrics import Metrics
from .pricing import Pricing
from .records import User
from .routing import Choice, Router
from .settings import Settings
from .store import Store
from .store_budgets import Holder
from .store_completions import CompletionRecord

log = logging.getLogger("chat.completions")

SAVE_BATCH = 500  # completions stored per statement
MAX_UNSAVED = 100_000  # kept while the database is down; older ones are dropped past this


class ProviderFailed(ChatError):
    """Every model of the chain failed before its first token."""

    code, status = "provider_error", 502

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = 503 if code == "unavailable" else 502


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """What an API client asked: the prompt as given (it carries its own history)."""

    model: str | None
    messages: tuple[ChatMessage, ...]
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    include_usage: bool = False


@dataclass(eq=False)
class Completion:
    """One completion, from its first token to its accounting."""

    id: str
    created: int
    user: User
    request: CompletionRequest
    choice: Choice
    model: str = ""  # the model generating (a fallback changes it)
    tier: str = ""  # the tier that named it
    fallback_from: str | None = None
    first: str = ""  # the first text, already received when open() returns
    chars: int = 0  # characters generated so far
    end: StreamEnd | None = None
    status: str = "streaming"
    closing: bool = False  # something has taken on ending it
    error: ChatError | None = None  # why it ended in `error`
    clock: Clock = field(default_factory=Clock)
    row_id: int | None = None  # its row, opened early when a budget holds it
    reserved: bool = False
    spent: CompletionRecord | None = None  # once accounted (then it no longer counts against the cap)
    _stream: AsyncGenerator[str | StreamEnd, None] | None = None
    _limit: asyncio.Semaphore | None = None

    @property
    def prompt_chars(self) -> int:
        return sum(len(m.content) for m in self.request.messages)


class Completions:
    def __init__(self, store: Store, router: Router, budgets: Budgets, pricing: Pricing, metrics: Metrics,
                 settings: Settings) -> None:
        self.store = store
        self.router = router
        self.budgets = budgets
        self.pricing = pricing
        self.metrics = metrics
        self.settings = settings
        self._running: dict[int, int] = {}  # user id -> completions streaming now
        self._accounting: set[asyncio.Task[None]] = set()
        self._unsaved: list[CompletionRecord] = []  # ended, to be stored by the saver
        self._saver: asyncio.Task[None] | None = None

    async def open(self, user: User, request: CompletionRequest) -> Completion:
        """Choose the model, hold the budget, ask down the chain until one yields its first
        token (or ends with none). Raises ChatError when it cannot."""
        running = self._running.get(user.id, 0)
        if running >= self.settings.api_max_concurrent_per_user:
            raise RateLimited(f"at most {self.settings.api_max_concurrent_per_user} completions at once per user",
                              retry_after=1.0)
        if request.model is not None:
            self.router.check(request.model)
        text = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        choice = self.router.choose(request.model, None, "message", text)
        c = Completion("chatcmpl-" + secrets.token_hex(12), int(time.time()), user, request, choice, choice.model,
                       choice.tier)
        self._running[user.id] = running + 1
        try:
            # A budget needs a row to hold its reservation; most users have none (one read says so).
            if self.budgets.applies(user.id, None) and await self.store.budgets.any_for(user.id, None):
                c.row_id = await self.store.completions.open(user.id, c.model, choice.tier, choice.reason,
                                                             self.settings.node_id)
                try:
                    c.reserved = await self.budgets.reserve(Holder("completion", c.row_id), user.id, None, c.model,
                                                            c.prompt_chars, request.max_tokens)
                except ChatError as e:
                    self._end(c, "error", e)
                    raise
            await self._first(c)
        except BaseException:
            if c.spent is None:  # cancelled (shutdown): close and account in the background
                c.closing = True
                self._spawn(self._close(c, "cancelled"), f"completion-{c.id}")
            raise
        return c

    async def deltas(self, c: Completion) -> AsyncIterator[str]:
        """The completion's text, first token included, as the provider sends it. When it ends,
        it is accounted before this returns (`c.spent`); when the client goes away first, the
        provider request is closed and accounted in the background (this task is being cancelled)."""
        c.closing = True  # from here on, this generator ends it
        try:
            if c.first:
                yield c.first
            assert c._stream is not None
            async for item in c._stream:
                if isinstance(item, StreamEnd):
                    c.end = item
                    continue
                c.chars += len(item)
                yield item
            self._release_limit(c)
            self._end(c, "complete", None)
        except ProviderError as e:
            log.info("completion %s on %s failed mid-stream: %s", c.id, c.model, e)
            self._release_limit(c)
            self._end(c, "error", ProviderFailed(e.message, e.code))
        except Exception as e:  # not the provider's failure: ours, but it ends the same way
            log.exception("completion %s on %s failed mid-stream", c.id, c.model)
            await self._close_stream(c)
            self._end(c, "error", ProviderFailed(f"the completion failed: {e.__class__.__name__}", "provider_error"))
        finally:
            if c.spent is None:
                self._spawn(self._close(c, "cancelled"), f"completion-{c.id}")

    def abandon(self, c: Completion) -> None:
        """The response ended without streaming this completion (the client left first)."""
        if not c.closing and c.spent is None:
            c.closing = True
            self._spawn(self._close(c, "cancelled"), f"completion-{c.id}")

    async def text(self, c: Completion) -> str:
        """The whole text (for a request that does not stream)."""
        return "".join([piece async for piece in self.deltas(c)])

    async def ended(self) -> None:
        """Wait for the accounting of completions that ended (tests)."""
        while self._accounting:
            await asyncio.gather(*list(self._accounting), return_exceptions=True)

    async def close(self, grace: float = 5.0) -> None:
        """Shutdown: let the accounting finish for a while, then say what could not be stored."""
        try:
            await asyncio.wait_for(self.ended(), grace)
        except TimeoutError:
            for task in list(self._accounting):
                task.cancel()
            log.error("shutdown: %d completions could not be stored (database unavailable)", len(self._unsaved))

    # -- inside ---------------------------------------------------------------

    async def _first(self, c: Completion) -> None:
        """Ask the chain's models in turn until one yields text (or ends without any)."""
        s, loop = self.settings, asyncio.get_running_loop()
        candidates = [(c.choice.model, c.choice.tier), *c.choice.fallbacks]
        for i, (model, tier) in enumerate(candidates):
            if i > 0:
                c.fallback_from, c.model, c.tier = c.model, model, tier
            try:
                backend, name = self.router.resolve(model)
                limit = backend.limit
                if limit is not None:
                    await limit.acquire()
                c._limit = limit
                c.clock.asked = loop.time()
                stream = backend.provider.stream(name, c.request.messages, max_tokens=c.request.max_tokens or
                                                 s.ai_max_tokens, temperature=c.request.temperature)
                c._stream = stream
                async for item in stream:
                    c.clock.first = loop.time()
                    if isinstance(item, StreamEnd):
                        c.end = item
                    else:
                        c.first, c.chars = item, len(item)
                    return
                return
            except (ChatError, ProviderError) as e:
                await self._close_stream(c)
                if isinstance(e, ProviderError):
                    self.metrics.provider_failed(model, e)
                log.info("completion %s on %s failed before its first token: %s", c.id, model, e)
                if i == len(candidates) - 1:
                    err = e if isinstance(e, ChatError) else ProviderFailed(e.message, e.code)
                    self._end(c, "error", err)
                    raise err from None
        raise AssertionError("unreachable")

    async def _close_stream(self, c: Completion) -> None:
        stream, c._stream = c._stream, None
        if stream is not None:
            try:
                await stream.aclose()  # closes the upstream request
            except Exception as e:  # closing a failed stream may fail again; nothing to keep
                log.debug("completion %s: closing its stream: %r", c.id, e)
        self._release_limit(c)

    def _release_limit(self, c: Completion) -> None:
        if c._limit is not None:
            c._limit.release()
            c._limit = None

    async def _close(self, c: Completion, status: str) -> None:
        await self._close_stream(c)
        if c.spent is None:
            self._end(c, status, None)

    def _end(self, c: Completion, status: str, error: ChatError | None) -> None:
        """Account the completion, once (`_close` and `open` check `c.spent`); its row is
        stored in the background: the response is not held for it."""
        loop = asyncio.get_running_loop()
        c.clock.ended = c.clock.ended or loop.time()
        left = self._running.get(c.user.id, 1) - 1  # it no longer counts against its user's cap
        if left > 0:
            self._running[c.user.id] = left
        else:
            self._running.pop(c.user.id, None)
        c.status, c.error = status, error
        asked = bool(c.clock.asked)
        used = spent(self.router, self.pricing, c.model, c.end, c.prompt_chars, c.chars) if asked else None
        c.spent = CompletionRecord(
            c.user.id, c.model, c.tier, c.choice.reason, c.fallback_from, status,
            error.code if error is not None else None,
            used.prompt_tokens if used else None, used.completion_tokens if used else None,
            used.estimated if used else None, c.clock.ttft_ms, c.clock.gen_ms, used.cost_usd if used else None)
        self.metrics.turn_ended(c.model, status, c.spent.prompt_tokens, c.spent.completion_tokens,
                                c.spent.cost_usd, c.clock.ttft_ms, c.clock.seconds)
        self._save(c)

    def _save(self, c: Completion) -> None:
        """Store it: an open row (a budget held it) at once, with its settlement; the rest in
        batches, one statement per burst of completions that end together."""
        assert c.spent is not None
        if c.row_id is not None:
            self._spawn(self._save_held(c), f"completion-save-{c.id}")
            return
        self._unsaved.append(c.spent)
        if len(self._unsaved) > MAX_UNSAVED:
            del self._unsaved[0]
            log.error("completion accounting dropped: %d are waiting for the database", MAX_UNSAVED)
        if self._saver is None or self._saver.done():
            self._saver = self._spawn(self._save_batches(), "completions-saver")

    async def _save_batches(self) -> None:
        wait = 0.5
        while self._unsaved:
            batch, self._unsaved = self._unsaved[:SAVE_BATCH], self._unsaved[SAVE_BATCH:]
            try:
                await self.store.completions.save_many(batch)
                wait = 0.5
            except Unavailable as e:  # kept and retried: usage must not be lost to an outage
                self._unsaved[:0] = batch
                log.warning("storing %d completions failed (%r); retrying in %.1f s", len(self._unsaved), e, wait)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 10.0)
            except Exception:  # a row the database refuses (its user deleted...): one by one, the rest stored
                for record in batch:
                    try:
                        await self.store.completions.save(record)
                    except Exception as e:
                        log.error("a completion of user %s could not be stored and is dropped: %r", record.user_id, e)

    async def _save_held(self, c: Completion) -> None:
        assert c.spent is not None and c.row_id is not None
        wait = 0.5
        while True:
            try:
                await self.store.completions.save(c.spent, c.row_id)
                break
            except Unavailable as e:  # retried: its row and budget hold stay open until stored
                log.warning("completion %s could not be stored (%r); retrying in %.1f s", c.id, e, wait)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 10.0)
            except Exception as e:  # refused for good: the heartbeat sweep ends its row, the budget sweep its hold
                log.error("completion %s could not be stored and is dropped: %r", c.id, e)
                return
        if c.reserved:
            try:
                await self.budgets.settle(Holder("completion", c.row_id), c.spent.cost_usd, None, c.user.id, None)
            except Exception as e:  # the budget sweep settles holds of ended rows
                log.warning("completion %s: settling its budget failed: %r", c.id, e)

    def _spawn(self, job: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A background task of the accounting, which `ended()` and `close()` wait for."""
        task = asyncio.get_running_loop().create_task(job, name=name)
        self._accounting.add(task)
        task.add_done_callback(self._accounting.discard)
        return task
