"""Typed records the store returns, and their wire shapes from the contract."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from providers.registry import Backend, NodeState, Registry

StatsOf = Callable[[str], "dict[str, Any] | None"]  # model id -> its recent figures


def rfc3339(moment: datetime | None) -> str | None:
    """UTC timestamp with milliseconds and a Z: the one timestamp format on the wire."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def latency(ms: float | None) -> float | None:
    """A node's latency as shown everywhere: milliseconds to one decimal."""
    return None if ms is None else round(ms, 1)


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    display_name: str
    is_admin: bool = False

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "display_name": self.display_name,
                "is_admin": self.is_admin}

    def author(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "display_name": self.display_name}


@dataclass(frozen=True, slots=True)
class Participant:
    id: int
    username: str
    display_name: str
    role: str

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "display_name": self.display_name,
                "role": self.role}


@dataclass(frozen=True, slots=True)
class Conversation:
    id: int
    title: str
    mode: str
    with_ai: bool
    default_model_id: str | None
    owner_id: int
    participants: tuple[Participant, ...]
    created_at: datetime
    updated_at: datetime
    last_seq: int
    ai_answers: str = "all"  # "all" messages, or only "mentions" of the AI
    instructions: str | None = None  # the owner's, sent with every turn

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "mode": self.mode, "with_ai": self.with_ai,
            "default_model_id": self.default_model_id, "owner_id": self.owner_id,
            "ai_answers": self.ai_answers, "instructions": self.instructions,
            "participants": [p.wire() for p in self.participants],
            "created_at": rfc3339(self.created_at), "updated_at": rfc3339(self.updated_at),
            "last_seq": self.last_seq,
        }

    def has(self, user_id: int) -> bool:
        return any(p.id == user_id for p in self.participants)

    def member_ids(self) -> list[int]:
        return [p.id for p in self.participants]


@dataclass(frozen=True, slots=True)
class Room:
    """What a send and its AI turn need to know of a conversation (read in the insert itself)."""

    id: int
    mode: str
    with_ai: bool
    default_model_id: str | None
    owner_id: int
    ai_answers: str = "all"


@dataclass(frozen=True, slots=True)
class Line:
    """One message of an AI turn's history: who said what."""

    role: str  # "user" | "assistant"
    content: str
    author: str | None  # the display name of a user message's author


class FinalReply(NamedTuple):
    """A finished reply as MessageStore.finish_reply stores it."""

    message_id: int
    content: str
    status: str
    model_used: str
    tier: str
    fallback_from: str | None
    cancelled_by: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    usage_estimated: bool | None  # the provider reported no usage: counted from characters
    ttft_ms: float | None  # request sent -> first token
    gen_ms: float | None  # first token -> end
    cost_usd: Decimal | None  # None: no price known for the model
    error_code: str | None = None  # why it ended in `error`, as its ai.error said
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    conversation_id: int
    seq: int
    role: str
    author: User | None
    content: str
    model_used: str | None
    status: str
    client_id: str | None
    reply_to: int | None
    reply_id: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    created_at: datetime
    tier: str | None = None  # a reply's: the tier that chose the model that wrote it
    fallback_from: str | None = None  # a reply's: the model that failed before this one took over
    cancelled_by: User | None = None  # a reply's: who stopped it
    usage_estimated: bool | None = None
    ttft_ms: float | None = None
    gen_ms: float | None = None
    cost_usd: Decimal | None = None
    error_code: str | None = None
    error_message: str | None = None
    route_reason: str | None = None  # a reply's: why `auto` chose its model

    def wire(self) -> dict[str, Any]:
        usage = None
        if self.prompt_tokens is not None or self.completion_tokens is not None:
            completion = self.completion_tokens or 0
            usage = {"prompt_tokens": self.prompt_tokens or 0, "completion_tokens": completion,
                     "estimated": bool(self.usage_estimated),
                     "cost_usd": None if self.cost_usd is None else float(self.cost_usd),
                     "ttft_ms": _ms(self.ttft_ms), "gen_ms": _ms(self.gen_ms),
                     "tokens_per_second": round(completion * 1000 / self.gen_ms, 1) if self.gen_ms else None}
        return {
            "id": self.id, "conversation_id": self.conversation_id, "seq": self.seq,
            "role": self.role, "author": self.author.author() if self.author else None,
            "content": self.content, "model_used": self.model_used, "status": self.status,
            "client_id": self.client_id, "reply_to": self.reply_to, "usage": usage,
            "created_at": rfc3339(self.created_at), "tier": self.tier, "fallback_from": self.fallback_from,
            "cancelled_by": self.cancelled_by.author() if self.cancelled_by else None,
            "error": {"code": self.error_code, "message": self.error_message} if self.error_code else None,
            "route_reason": self.route_reason,
        }


@dataclass(frozen=True, slots=True)
class AINode:
    """A backend machine an admin registered (POST /ai/nodes)."""

    id: int
    name: str
    kind: str
    base_url: str
    api_key: str | None
    created_at: datetime

    def wire(self, admin: bool) -> dict[str, Any]:
        """Its address is for admins only, and even they never see a password in it."""
        out: dict[str, Any] = {"id": self.id, "name": self.name, "kind": self.kind,
                               "has_api_key": self.api_key is not None, "created_at": rfc3339(self.created_at)}
        if admin:
            out["base_url"] = redacted(self.base_url)
        return out


def redacted(url: str) -> str:
    """A URL with the password of any `user:password@` part replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def node_state_wire(node: NodeState) -> dict[str, Any]:
    return {"id": node.id, "name": node.name, "latency_ms": latency(node.latency_ms),
            "healthy": node.healthy, "checked_at": rfc3339(node.checked_at)}


def backend_wire(backend: Backend, stats: StatsOf = lambda model_id: None) -> dict[str, Any]:
    """One provider of GET /ai/models; a node's models are available while it is healthy. Other
    providers carry their last check as `health` (their models stay available: a provider whose
    model list fails may still stream)."""
    node, health = backend.node, backend.health
    available = node is None or node.healthy
    return {
        "id": backend.id, "label": backend.label, "kind": backend.kind,
        "node": None if node is None else node_state_wire(node),
        "health": None if health is None else {"healthy": health.healthy, "latency_ms": latency(health.latency_ms),
                                               "checked_at": rfc3339(health.checked_at)},
        "models": [{"id": f"{backend.id}:{m}", "name": m, "available": available,
                    **({} if available else {"reason": _unavailable(node)}),
                    "stats": _model_stats(stats(f"{backend.id}:{m}"))} for m in backend.models],
    }


def _unavailable(node: NodeState | None) -> str:
    if node is None or node.checked_at is None:
        return f"{node.name if node else 'the provider'} has not answered a health check yet"
    return f"{node.name} did not answer its last health check"


def _model_stats(row: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if row is None else {k: v for k, v in row.items() if k != "model"}


def catalog_wire(registry: Registry, stats: StatsOf = lambda model_id: None) -> dict[str, Any]:
    """The GET /ai/models body, from the last checks and the last model stats; never awaits."""
    return {"default_model_id": registry.default_model_id,
            "providers": [backend_wire(b, stats) for b in registry.backends()]}


def openai_models_wire(registry: Registry, policies: Iterable[str]) -> list[dict[str, Any]]:
    """GET /v1/models' `data`: every model id served now (a node's while it is healthy), and
    `auto` with each routing policy, in OpenAI's model object shape."""
    out = [{"id": f"{b.id}:{m}", "object": "model", "created": 0, "owned_by": b.id}
           for b in registry.backends() if b.node is None or b.node.healthy for m in b.models]
    out += [{"id": "auto" if name == "default" else f"auto:{name}", "object": "model", "created": 0,
             "owned_by": "router"} for name in policies]
    return out
