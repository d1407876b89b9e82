"""Budgets: a turn reserves its estimated cost against its user's and conversation's limits before
any provider is called, and spends its real cost when it ends; crossing a warning threshold
tells the affected user once per period.

Which users and conversations have a budget at all is kept in memory (refreshed every
`budget_refresh_interval`, and at once for changes made here), so a turn with no budget
pays no database round trip for this."""

from __future__ import annotations

import logging
from decimal import Decimal

from . import protocol
from .errors import ChatError
from .events import Event
from .hub import Hub
from .inputs import BUDGET_PERIODS
from .metrics import Metrics
from .pricing import Pricing
from .routing import Router
from .settings import Settings
from .store import Store
from .store_budgets import Budget, Holder

log = logging.getLogger("chat.budgets")

EXPECTED_REPLY_TOKENS = 1024  # what a reply is assumed to cost when no ai_max_tokens caps it


class BudgetExceeded(ChatError):
    """A turn that would start over a spending limit."""

    code, status = "budget_exceeded", 402

    def __init__(self, budget: Budget) -> None:
        what = "your" if budget.scope == "user" else "this conversation's"
        wire = budget.wire()
        super().__init__(
            f"{what} {BUDGET_PERIODS[budget.period]} AI budget of ${budget.limit_usd:.2f} is spent "
            f"(${budget.spent_usd + budget.reserved_usd:.2f} used or held); it resets at {wire['resets_at']}",
            details={"scope": budget.scope, "period": budget.period, "limit_usd": wire["limit_usd"],
                     "spent_usd": wire["spent_usd"], "resets_at": wire["resets_at"]})


class Budgets:
    def __init__(self, store: Store, hub: Hub, router: Router, pricing: Pricing, metrics: Metrics,
                 settings: Settings) -> None:
        self.store = store
        self.hub = hub
        self.router = router
        self.pricing = pricing
        self.metrics = metrics
        self.settings = settings
        self._subjects: set[tuple[str, int]] = set()  # (scope, id) with a budget

    def applies(self, user_id: int, conversation_id: int | None) -> bool:
        """Whether a turn must ask the database. With several server processes, always: a
        budget set through another one must hold at once, not after the next refresh."""
        if self.hub.broker.shared:
            return True
        return ("user", user_id) in self._subjects or ("conversation", conversation_id) in self._subjects

    def changed(self, scope: str, subject_id: int, exists: bool) -> None:
        (self._subjects.add if exists else self._subjects.discard)((scope, subject_id))

    def estimate(self, model_id: str, prompt_chars: int, max_tokens: int | None = None) -> Decimal:
        """What a turn may cost: its prompt, and a reply as long as it may be. Unpriced models: 0."""
        try:
            backend, name = self.router.resolve(model_id)
        except ChatError:
            return Decimal(0)
        out = max_tokens or self.settings.ai_max_tokens or EXPECTED_REPLY_TOKENS
        cost = self.pricing.cost(backend.id, backend.kind, name, -(-prompt_chars // 4), out,
                                 node=backend.node is not None)
        return cost or Decimal(0)

    async def reserve(self, holder: Holder, user_id: int, conversation_id: int | None, model_id: str,
                      prompt_chars: int, max_tokens: int | None = None) -> bool:
        """Hold the turn's estimate; raises BudgetExceeded. True when something was reserved."""
        if not self.applies(user_id, conversation_id):
            return False
        held = await self.store.budgets.reserve(holder, user_id, conversation_id,
                                                self.estimate(model_id, prompt_chars, max_tokens))
        if isinstance(held, Budget):
            self.metrics.budget_refusals.labels(held.scope).inc()
            raise BudgetExceeded(held)
        return held

    async def settle(self, holder: Holder, cost: Decimal | None, conversation_id: int | None, requester: int,
                     owner: int | None) -> None:
        """Spend the turn's cost; warn whoever a crossed threshold concerns (in the conversation;
        a completion has none, so its warning is only logged and counted)."""
        for budget in await self.store.budgets.settle(holder, cost or Decimal(0)):
            who = requester if budget.scope == "user" else owner
            log.warning("budget %s of %s %s crossed %.0f%%", budget.period, budget.scope, budget.subject_id,
                        budget.warn_at * 100)
            self.metrics.budget_warnings.labels(budget.scope).inc()
            if conversation_id is None:
                continue
            frame = protocol.budget_warning(budget.wire(), conversation_id)
            self.hub.publish(conversation_id, Event(protocol.encode(frame), only_user=who))

    async def refresh(self) -> None:
        self._subjects = await self.store.budgets.subjects()

    async def sweep(self) -> None:
        """Pick up budgets set elsewhere; settle reservations their server left behind."""
        await self.refresh()
        await self.store.budgets.release_ended()
