"""Router: the three-tier model chain, and model ids checked against the registry."""

from __future__ import annotations

import re
from dataclasses import dataclass

from providers.registry import Backend, ModelNotServed, Registry

from .errors import UnknownModel

TIERS = ("message", "conversation", "system")
AI_MENTION = "ai"  # @ai addresses the AI without naming a model
_MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_][A-Za-z0-9_.-]{0,31})")


@dataclass(frozen=True, slots=True)
class Address:
    """Whether a message speaks to the AI, and the model an alias it mentions names."""

    addressed: bool
    model: str | None = None
    alias: str | None = None


def address(content: str, aliases: dict[str, str]) -> Address:
    """`@ai` or `@<alias>` anywhere in the text (not inside an email address); the first alias
    mentioned names the model. Case does not matter; trailing dots and dashes are punctuation."""
    addressed = False
    for name in _MENTION.findall(content):
        name = name.rstrip(".-").lower()
        if name in aliases:
            return Address(True, aliases[name], name)
        addressed = addressed or name == AI_MENTION
    return Address(addressed)


@dataclass(frozen=True, slots=True)
class Choice:
    """A model for a turn, the tier that named it, and the lower tiers to fall back to."""

    model: str
    tier: str
    fallbacks: tuple[tuple[str, str], ...] = ()  # (model, tier), in order


def choose(message_model: str | None, conversation_model: str | None, system_model: str,
           message_tier: str = "message") -> Choice:
    """Message override, else conversation default, else system default; the rest are fallbacks
    (a lower tier naming a model already in the chain is no fallback). A message's model named
    by a mention of an alias reports the tier `mention`."""
    chain: list[tuple[str, str]] = []
    tiers = (message_tier, *TIERS[1:])
    for model, tier in zip((message_model, conversation_model, system_model), tiers, strict=True):
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

    def choose(self, message_model: str | None, conversation_model: str | None,
               message_tier: str = "message") -> Choice:
        return choose(message_model, conversation_model, self.registry.default_model_id, message_tier)

    def resolve(self, model_id: str) -> tuple[Backend, str]:
        try:
            return self.registry.resolve(model_id)
        except ModelNotServed:
            raise UnknownModel(model_id) from None
