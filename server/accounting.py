"""Accounting of one AI generation, whichever transport asked for it (a chat reply or an API
completion): when it asked, got its first token and ended; what it used and cost.

Without the provider's counts, tokens are estimated at four characters each and marked so."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from providers.base import StreamEnd

from .errors import ChatError
from .pricing import Pricing
from .routing import Router


@dataclass(slots=True)
class Clock:
    """When a generation asked its provider, got the first token, and ended (loop time; 0: not yet)."""

    asked: float = 0.0
    first: float = 0.0
    ended: float = 0.0

    @property
    def ttft_ms(self) -> float | None:
        return (self.first - self.asked) * 1000 if self.asked and self.first else None

    @property
    def gen_ms(self) -> float | None:
        return (self.ended - self.first) * 1000 if self.first and self.ended else None

    @property
    def seconds(self) -> float | None:
        return self.ended - self.asked if self.asked and self.ended else None


@dataclass(frozen=True, slots=True)
class Spent:
    """What a generation used and cost (cost None: no price known for its model)."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool
    cost_usd: Decimal | None


def spent(router: Router, pricing: Pricing, model: str, end: StreamEnd | None, prompt_chars: int,
          completion_chars: int) -> Spent:
    """The provider's token counts, else estimates; priced for the model that generated."""
    usage = end.usage if end is not None else None
    if usage is not None:
        prompt, completion, estimated = usage.prompt_tokens, usage.completion_tokens, False
    else:
        prompt, completion, estimated = -(-prompt_chars // 4), -(-completion_chars // 4), True
    try:
        backend, name = router.resolve(model)
    except ChatError:
        cost = None
    else:
        cost = pricing.cost(backend.id, backend.kind, name, prompt, completion, node=backend.node is not None)
    return Spent(prompt, completion, estimated, cost)
