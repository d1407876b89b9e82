"""Router: the three-tier model chain, and per-provider concurrency limits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from providers.registry import Backend, Registry, UnknownModel as RegistryUnknownModel

from .errors import UnknownModel

TIERS = ("message", "conversation", "system")


@dataclass(frozen=True, slots=True)
class Choice:
    """A model for a turn, the tier that named it, and the lower tiers to fall back to."""

    model: str
    tier: str
    fallbacks: tuple[tuple[str, str], ...] = ()  # (model, tier), in order


class Router:
    """Message override, else conversation default, else system default."""

    def __init__(self, registry: Registry, concurrency: dict[str, int] | None = None,
                 default_concurrency: int = 16) -> None:
        self.registry = registry
        self._limits = concurrency or {}
        self._default_limit = default_concurrency
        self._semaphores: dict[str, asyncio.Semaphore] = {}

    def check(self, model_id: str) -> None:
        """Raise the contract's `unknown_model` unless the registry serves this id."""
        if not self.registry.knows(model_id):
            raise UnknownModel(model_id)

    def choose(self, message_model: str | None, conversation_model: str | None) -> Choice:
        named = zip((message_model, conversation_model, self.registry.default_model_id), TIERS, strict=True)
        chain: list[tuple[str, str]] = []
        for model, tier in named:
            # A lower tier naming the same model is no fallback.
            if model and all(model != m for m, _ in chain):
                chain.append((model, tier))
        model, tier = chain[0]
        return Choice(model, tier, tuple(chain[1:]))

    def resolve(self, model_id: str) -> tuple[Backend, str]:
        try:
            return self.registry.resolve(model_id)
        except RegistryUnknownModel:
            raise UnknownModel(model_id) from None

    def limit(self, backend: Backend) -> asyncio.Semaphore:
        """Turns on one backend queue here instead of overwhelming it."""
        sem = self._semaphores.get(backend.id)
        if sem is None:
            sem = self._semaphores[backend.id] = asyncio.Semaphore(
                self._limits.get(backend.id) or self._default_limit)
        return sem
