"""Client input: pure checks that turn decoded JSON into typed values or `Invalid` errors."""

from __future__ import annotations

import re
from typing import Any

from .errors import BadRequest, Invalid
from .settings import Settings

USERNAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")
MODES = ("solo", "partner", "group")
MAX_INT = 2**63 - 1  # PostgreSQL bigint


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
    value = body.get("mode", default)
    if value is None:
        return None
    if value not in MODES:
        raise Invalid("mode", "mode must be one of solo, partner, group")
    return value


def client_id(body: dict[str, Any], settings: Settings) -> str | None:
    return text(body, "client_id", max_chars=settings.max_client_id_chars, required=False)


def content(body: dict[str, Any], settings: Settings) -> str:
    value = text(body, "content", max_chars=settings.max_content_chars)
    if not value.strip():  # type: ignore[union-attr]
        raise Invalid("content", "content must not be blank")
    return value  # type: ignore[return-value]
