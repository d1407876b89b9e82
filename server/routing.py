"""Router: the three-tier model chain, and model ids checked against the registry."""

from __future__ import annotations

from dataclasses import dataclass

from providers.registry import Backend, ModelNotServed, Registry

from .errors import UnknownModel

TIERS = ("message", "conversation", "system")


@dataclass(frozen=True, slots=True)
class Choice:
    """A model for a turn, the tier that named it, and the lower tiers to fall back to."""

    model: str
    tier: str
    fallbacks: tuple[tuple[str, str], ...] = ()  # (model, tier), in order


def choose(message_model: str | None, conversation_model: str | None, system_model: str) -> Choice:
    """Message override, else conversation default, else system default; the rest are fallbacks
    (a lower tier naming a model already in the chain is no fallback)."""
    chain: list[tuple[str, str]] = []
    for model, tier in zip((message_model, conversation_model, system_model), TIERS, strict=True):
        if model and all(model != m for m, _ in chain):
            chain.append((model, tier))
    model, tier = chain[0]
    return Choice(model, tier, tuple(chain[1:]))


class Router:
    """The chain over the registry's current contents; the registry's lookups become `unknown_model`."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def check(self, model_id: str) -> None:
        """Raise the contract's `unknown_model` unless the registry serves this id."""
        if not self.registry.knows(model_id):
            raise UnknownModel(model_id)

    def choose(self, message_model: str | None, conversation_model: str | None) -> Choice:
        return choose(message_model, conversation_model, self.registry.default_model_id)

    def resolve(self, model_id: str) -> tuple[Backend, str]:
        try:
            return self.registry.resolve(model_id)
        except ModelNotServed:
            raise UnknownModel(model_id) from None
