"""Router: the three-tier model chain, and model ids checked against the registry."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from providers.registry import Backend, ModelNotServed, Registry

from .errors import UnknownModel
from .records import Room

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


def ai_target(room: Room, content: str, model: str | None, ai: bool | None,
              aliases: dict[str, str]) -> tuple[str | None, str] | None:
    """Whether a user message starts one AI turn here, and with which requested model and tier
    (`message`: its own `model` field; `mention`: an @alias); None when it starts none."""
    if not room.with_ai or ai is False:
        return None
    to = address(content, aliases)
    if ai is None and room.ai_answers == "mentions" and not to.addressed:
        return None
    return (model, "message") if model is not None else (to.model, "mention")


@dataclass(frozen=True, slots=True)
class Choice:
    """A model for a turn, the tier that named it, and the lower tiers to fall back to."""

    model: str
    tier: str
    fallbacks: tuple[tuple[str, str], ...] = ()  # (model, tier), in order
    reason: str | None = None  # why `auto` chose this model


AUTO = "auto"
_CODE = re.compile(r"```|^\s{4}\S|\b(def|class|function|return|import|const|let|var|SELECT|#include)\b|[{};]\s*$",
                   re.M)


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of an `auto` policy: its conditions (all must hold) and the model it picks —
    `model`, or among `models` the cheapest usable one whose recent time to first token
    (p50) is within `max_ttft_ms`."""

    model: str = ""
    reason: str = ""
    contains_code: bool | None = None
    min_chars: int | None = None
    max_chars: int | None = None
    pattern: str | None = None
    models: tuple[str, ...] = ()
    max_ttft_ms: float | None = None

    def pick(self, facts: Facts) -> tuple[str, str] | None:
        """(model, reason) when the rule has a usable model now."""
        if not self.models:
            return (self.model, self.why()) if facts.usable(self.model) else None
        fast = [m for m in self.models if facts.usable(m) and (
            self.max_ttft_ms is None or (facts.ttft(m) is not None and facts.ttft(m) <= self.max_ttft_ms))]  # type: ignore[operator]
        if not fast:
            return None
        best = min(fast, key=lambda m: (facts.price(m) is None, facts.price(m) or 0))
        speed = f" under {self.max_ttft_ms:g} ms to first token" if self.max_ttft_ms is not None else ""
        return best, self.reason or f"cheapest{speed}"

    def holds(self, text: str) -> bool:
        if self.contains_code is not None and bool(_CODE.search(text)) != self.contains_code:
            return False
        if self.min_chars is not None and len(text) < self.min_chars:
            return False
        if self.max_chars is not None and len(text) > self.max_chars:
            return False
        return self.pattern is None or re.search(self.pattern, text, re.I) is not None

    def why(self) -> str:
        if self.reason:
            return self.reason
        parts = [("contains code" if self.contains_code else "no code") if self.contains_code is not None else "",
                 f"at least {self.min_chars} characters" if self.min_chars is not None else "",
                 f"at most {self.max_chars} characters" if self.max_chars is not None else "",
                 f"matches /{self.pattern}/" if self.pattern else ""]
        return ", ".join(p for p in parts if p) or "default rule"


@dataclass(frozen=True, slots=True)
class Facts:
    """What auto routing may know of a model now: usable (served, node healthy), its recent
    time to first token p50 in ms (None: no figures yet), its price (None: unknown)."""

    usable: Callable[[str], bool]
    ttft: Callable[[str], float | None] = lambda model: None
    price: Callable[[str], Decimal | None] = lambda model: None


def auto_route(text: str, rules: tuple[Rule, ...], facts: Facts) -> tuple[str, str] | None:
    """The first rule whose conditions hold and that has a usable model now: (model, reason)."""
    for rule in rules:
        if rule.holds(text) and (picked := rule.pick(facts)) is not None:
            return picked
    return None


def choose(message_model: str | None, conversation_model: str | None, system_model: str,
           message_tier: str = "message", route: Callable[[str], tuple[str, str] | None] | None = None) -> Choice:
    """Message override, else conversation default, else system default; the rest are fallbacks
    (a lower tier naming a model already in the chain is no fallback). A message's model named
    by a mention of an alias reports the tier `mention`."""
    chain: list[tuple[str, str]] = []
    tiers = (message_tier, *TIERS[1:])
    reasons: dict[str, str] = {}
    for model, tier in zip((message_model, conversation_model, system_model), tiers, strict=True):
        if model and is_auto(model) and route is not None:
            routed = route(model)
            if routed is None:
                continue  # no rule fits (or none is usable): the next tier answers
            model, reasons[routed[0]] = routed
        if model and all(model != m for m, _ in chain):
            chain.append((model, tier))
    model, tier = chain[0]
    return Choice(model, tier, tuple(chain[1:]), reasons.get(model))


def is_auto(model_id: str) -> bool:
    return model_id == AUTO or model_id.startswith(AUTO + ":")


class Router:
    """The chain over the registry's current contents; the registry's lookups become `unknown_model`."""

    def __init__(self, registry: Registry, policies: dict[str, tuple[Rule, ...]] | None = None,
                 ttft: Callable[[str], float | None] = lambda model: None,
                 price: Callable[[str, str, str], Decimal | None] = lambda backend, kind, name: None) -> None:
        self.registry = registry
        self.policies = policies or {}  # `auto:<name>` -> its rules; plain `auto` is "default"
        self.facts = Facts(self.usable, ttft, self._price)
        self._price_of = price  # (backend id, kind, model name) -> USD for a reference exchange

    def check(self, model_id: str) -> None:
        """Raise the contract's `unknown_model` unless the registry serves this id, or it names
        a configured `auto` policy."""
        if is_auto(model_id):
            if self._policy(model_id) is None:
                raise UnknownModel(model_id)
        elif not self.registry.knows(model_id):
            raise UnknownModel(model_id)

    def choose(self, message_model: str | None, conversation_model: str | None,
               message_tier: str = "message", text: str = "") -> Choice:
        def route(auto_id: str) -> tuple[str, str] | None:
            return auto_route(text, self._policy(auto_id) or (), self.facts)

        return choose(message_model, conversation_model, self.registry.default_model_id, message_tier, route)

    def usable(self, model_id: str) -> bool:
        """Served, and (for a node) healthy at its last check."""
        try:
            backend, _ = self.registry.resolve(model_id)
        except ModelNotServed:
            return False
        return backend.node is None or backend.node.healthy

    def _price(self, model_id: str) -> Decimal | None:
        try:
            backend, name = self.registry.resolve(model_id)
        except ModelNotServed:
            return None
        return self._price_of(backend.id, backend.kind, name)

    def _policy(self, auto_id: str) -> tuple[Rule, ...] | None:
        return self.policies.get(auto_id.partition(":")[2] or "default")

    def resolve(self, model_id: str) -> tuple[Backend, str]:
        try:
            return self.registry.resolve(model_id)
        except ModelNotServed:
            raise UnknownModel(model_id) from None
