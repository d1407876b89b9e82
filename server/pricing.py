"""Pricing: what a reply cost in USD, from genai-prices' bundled database and chat.toml overrides.

Prices are never fetched at run time: genai-prices carries its data in the package, and
`[providers.<id>] prices` (per provider or per model) wins over it. Local models (Ollama,
the built-in echo, registered nodes) cost nothing unless configured.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

log = logging.getLogger("chat.pricing")

MTOK = Decimal(1_000_000)
FREE_KINDS = frozenset({"ollama", "echo"})


class Pricing:
    """`cost()` of a reply; None when no price is known for its model (shown as unknown, not 0)."""

    def __init__(self, overrides: dict[str, dict[str, Any]] | None = None) -> None:
        # backend id -> {"input", "output"} per million tokens, or {model: {"input", "output"}}
        self.overrides = overrides or {}
        self._unknown: set[tuple[str, str]] = set()

    def cost(self, backend_id: str, kind: str, model: str, prompt_tokens: int,
             completion_tokens: int, *, node: bool = False) -> Decimal | None:
        table = self.overrides.get(backend_id) or {}
        rate = table.get(model) if isinstance(table.get(model), dict) else table
        if rate and ("input" in rate or "output" in rate):
            return (Decimal(str(rate.get("input", 0))) * prompt_tokens
                    + Decimal(str(rate.get("output", 0))) * completion_tokens) / MTOK
        if node or kind in FREE_KINDS:
            return Decimal(0)
        return self._database(kind, model, prompt_tokens, completion_tokens)

    @staticmethod
    def load() -> None:
        """Import genai-prices' tables (~0.25 s of CPU). Run in a thread at startup, so the first
        priced reply does not stall the event loop, and every socket on it, while they load."""
        import genai_prices  # noqa: F401

    def _database(self, kind: str, model: str, prompt_tokens: int, completion_tokens: int) -> Decimal | None:
        from genai_prices import Usage, calc_price  # its data loads on first use

        if (kind, model) in self._unknown:  # genai-prices caches what it finds, not what it does not
            return None
        try:
            price = calc_price(Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens), model_ref=model,
                               provider_id=kind)
        except Exception as e:  # genai-prices raises LookupError-like errors for models it does not know
            if (kind, model) not in self._unknown:
                self._unknown.add((kind, model))
                log.info("no price for %s model %r (%s); its cost is unknown unless chat.toml sets prices",
                         kind, model, e)
            return None
        return Decimal(price.total_price)
