"""Client input: pure checks that turn decoded JSON into typed values or `Invalid` errors."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from .errors import BadRequest, Invalid
from .settings import Settings

USERNAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")
MODES = ("solo", "partner", "group")
MAX_INT = 2**63 - 1  # PostgreSQL bigint
MAX_PASSWORD_CHARS = 1024
BUDGET_PERIODS = {"day": "daily", "month": "monthly"}  # a budget's period -> how a message names it


def require_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


def text(body: dict[str, Any], name: str, *, max_chars: int, required: bool = True,
         min_chars: int = 1, strip: bool = False) -> str | None:
    """A string field of bounded length; NUL is refused (PostgreSQL text cannot hold it)."""
    value = body.get(name)
    if value is None:
        if required:
            raise Invalid(name, f"{name} is required")
        return None
    if not isinstance(value, str):
        raise Invalid(name, f"{name} must be a string")
    if strip:
        value = value.strip()
    if "\x00" in value:
        raise Invalid(name, f"{name} must not contain NUL characters")
    if len(value) < min_chars:
        raise Invalid(name, f"{name} must be at least {min_chars} character(s)")
    if len(value) > max_chars:
        raise Invalid(name, f"{name} must be at most {max_chars} characters", max=max_chars)
    return value


def boolean(body: dict[str, Any], name: str, default: bool | None = None) -> bool | None:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise Invalid(name, f"{name} must be true or false")
    return value


def integer(value: Any, name: str, *, minimum: int = 0, maximum: int = MAX_INT) -> int:
    """An integer in range; bools and floats are not integers here."""
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,19}", value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(name, f"{name} must be an integer")
    if not minimum <= value <= maximum:
        raise Invalid(name, f"{name} must be between {minimum} and {maximum}")
    return value


def username(value: Any, name: str = "username") -> str:
    if not isinstance(value, str) or not USERNAME.fullmatch(value):
        raise Invalid(name, "usernames are 1-32 characters of A-Z a-z 0-9 _ . -")
    return value


def usernames(body: dict[str, Any], name: str, settings: Settings, *, required: bool) -> list[str]:
    value = body.get(name)
    if value is None:
        if required:
            raise Invalid(name, f"{name} is required")
        return []
    if not isinstance(value, list):
        raise Invalid(name, f"{name} must be a list of usernames")
    if len(value) > settings.max_participants:
        raise Invalid(name, f"at most {settings.max_participants} participants", max=settings.max_participants)
    seen: dict[str, str] = {}
    for v in value:
        seen.setdefault(username(v, name).lower(), v)
    return list(seen.values())


def model_id(body: dict[str, Any], name: str) -> str | None:
    """A model id's shape; whether the registry knows it is checked by the router."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 200 or "\x00" in value:
        raise Invalid(name, f"{name} must be a model id such as 'echo:echo'")
    return value


def mode(body: dict[str, Any], default: str | None) -> str | None:
    """A conversation mode; absent or null: `default`."""
    value = body.get("mode")
    if value is None:
        return default
    if value not in MODES:
        raise Invalid("mode", "mode must be one of solo, partner, group")
    return value  # type: ignore[no-any-return]


# -- REST bodies as typed values ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registration:
    """POST /auth/register."""

    username: str
    password: str
    display_name: str


@dataclass(frozen=True, slots=True)
class Login:
    """POST /auth/token."""

    username: str
    password: str


@dataclass(frozen=True, slots=True)
class NewConversation:
    """POST /conversations; participants by username, the owner left out later."""

    title: str
    mode: str
    with_ai: bool
    default_model_id: str | None
    participant_usernames: list[str]
    ai_answers: str  # "all" (the default), or "mentions"
    instructions: str | None


@dataclass(frozen=True, slots=True)
class ConversationChanges:
    """The settings a PUT names; `default_model_id` is changed only when `sets_model` (None clears it)."""

    title: str | None = None
    mode: str | None = None
    with_ai: bool | None = None
    default_model_id: str | None = None
    sets_model: bool = False
    ai_answers: str | None = None
    instructions: str | None = None
    sets_instructions: bool = False  # instructions given (None clears them)

    def columns(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in (("title", self.title), ("mode", self.mode),
                                                 ("with_ai", self.with_ai), ("ai_answers", self.ai_answers))
                               if v is not None}
        if self.sets_model:
            out["default_model_id"] = self.default_model_id
        if self.sets_instructions:
            out["instructions"] = self.instructions
        return out


@dataclass(frozen=True, slots=True)
class NewBudget:
    """PUT of a user's or a conversation's budget."""

    period: str
    limit_usd: Decimal
    warn_at: float


@dataclass(frozen=True, slots=True)
class NewNode:
    """POST /ai/nodes: a machine an admin registers (its URL may carry credentials)."""

    name: str
    kind: str
    base_url: str
    api_key: str | None


def registration(body: dict[str, Any], settings: Settings) -> Registration:
    name = username(body.get("username"))
    password = text(body, "password", max_chars=MAX_PASSWORD_CHARS, min_chars=8)
    display = text(body, "display_name", max_chars=settings.max_display_name_chars, required=False, strip=True)
    return Registration(name, password, display or name)  # type: ignore[arg-type]


def login(body: dict[str, Any]) -> Login:
    return Login(text(body, "username", max_chars=64),  # type: ignore[arg-type]
                 text(body, "password", max_chars=MAX_PASSWORD_CHARS))  # type: ignore[arg-type]


def new_conversation(body: dict[str, Any], settings: Settings) -> NewConversation:
    """A new conversation; with `template`, the template's settings fill what the body leaves
    out (its title_prefix goes before the title; its title is the default one)."""
    name = body.get("template")
    if name is not None:
        template = settings.templates.get(name) if isinstance(name, str) else None
        if template is None:
            raise Invalid("template", f"no template {name!r}", known=sorted(settings.templates))
        fields = {k: v for k, v in template.items() if k not in ("label", "title_prefix")}
        title = text(body, "title", max_chars=settings.max_title_chars, required=False, strip=True)
        title = title or template.get("title") or template.get("label") or name
        body = {**fields, **body, "title": (template.get("title_prefix") or "") + title}
    kind = mode(body, "solo")
    return NewConversation(
        title=text(body, "title", max_chars=settings.max_title_chars, strip=True),  # type: ignore[arg-type]
        mode=kind,  # type: ignore[arg-type]
        with_ai=boolean(body, "with_ai", True),  # type: ignore[arg-type]
        default_model_id=model_id(body, "default_model_id"),
        participant_usernames=usernames(body, "participant_usernames", settings, required=False),
        # "all" unless asked: the contract says a message in a room with the AI starts a turn
        ai_answers=ai_answers(body) or "all",
        instructions=instructions(body, settings),
    )


def ai_answers(body: dict[str, Any]) -> str | None:
    value = body.get("ai_answers")
    if value is None:
        return None
    if value not in ("all", "mentions"):
        raise Invalid("ai_answers", "ai_answers must be all or mentions")
    return value  # type: ignore[no-any-return]


def instructions(body: dict[str, Any], settings: Settings) -> str | None:
    """The owner's instructions for the AI; blank means none."""
    value = text(body, "instructions", max_chars=settings.max_instructions_chars, required=False, min_chars=0,
                 strip=True)
    return value or None


def conversation_changes(body: dict[str, Any], settings: Settings) -> ConversationChanges:
    if "mode" in body and body["mode"] is None:
        raise Invalid("mode", "mode must be one of solo, partner, group")
    if "with_ai" in body and not isinstance(body["with_ai"], bool):
        raise Invalid("with_ai", "with_ai must be true or false")
    return ConversationChanges(
        title=text(body, "title", max_chars=settings.max_title_chars, strip=True) if "title" in body else None,
        mode=mode(body, None),
        with_ai=boolean(body, "with_ai"),
        default_model_id=model_id(body, "default_model_id"),
        sets_model="default_model_id" in body,
        ai_answers=ai_answers(body),
        instructions=instructions(body, settings),
        sets_instructions="instructions" in body,
    )


def new_budget(body: dict[str, Any]) -> NewBudget:
    period = body.get("period", "month")
    if period not in BUDGET_PERIODS:
        raise Invalid("period", "period must be day or month")
    limit = body.get("limit_usd")
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 0 <= limit <= 1_000_000:
        raise Invalid("limit_usd", "limit_usd must be a number of dollars from 0 to 1000000")
    warn_at = body.get("warn_at", 0.8)
    if isinstance(warn_at, bool) or not isinstance(warn_at, (int, float)) or not 0 < warn_at <= 1:
        raise Invalid("warn_at", "warn_at must be a fraction above 0, at most 1")
    return NewBudget(period, Decimal(str(limit)), float(warn_at))


def new_node(body: dict[str, Any], kinds: tuple[str, ...]) -> NewNode:
    name = text(body, "name", max_chars=64, strip=True)
    kind = body.get("kind")
    if kind not in kinds:
        raise Invalid("kind", "kind must be one of " + ", ".join(repr(k) for k in kinds))
    base_url = text(body, "base_url", max_chars=500, strip=True)
    try:
        parts = urlsplit(base_url)  # type: ignore[arg-type]
        hostname = parts.hostname
    except ValueError:
        raise Invalid("base_url", "base_url must be an http(s) URL") from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise Invalid("base_url", "base_url must be an http(s) URL")
    api_key = text(body, "api_key", max_chars=500, required=False)
    return NewNode(name, kind, base_url.rstrip("/"), api_key)  # type: ignore[arg-type, union-attr]


def moment(value: str, name: str) -> datetime:
    """An RFC 3339 time or a YYYY-MM-DD date (midnight UTC); a time without an offset is UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(name, f"{name} must be an RFC 3339 time or a YYYY-MM-DD date") from None
    if not 2000 <= parsed.year <= 9000:
        raise Invalid(name, f"{name} must be a time between the years 2000 and 9000")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def time_range(query: Mapping[str, str], *, default_days: int = 30, max_days: int = 400) -> tuple[datetime, datetime]:
    """`from` and `to` of a usage query: the last `default_days` days unless given."""
    until = moment(query["to"], "to") if query.get("to") else datetime.now(timezone.utc)
    since = moment(query["from"], "from") if query.get("from") else until - timedelta(days=default_days)
    if since >= until:
        raise Invalid("from", "from must be before to")
    if until - since > timedelta(days=max_days):
        raise Invalid("from", f"a range of at most {max_days} days", max=max_days)
    return since, until
