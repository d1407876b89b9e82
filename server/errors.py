"""Typed errors: each carries the wire contract's code and HTTP status."""

from __future__ import annotations

from typing import Any


class ChatError(Exception):
    """Base of every error a client may see; `code` and `status` come from the contract."""

    code = "internal"
    status = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        """The `error` object of a REST body, or the fields of a WS `error` frame."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            out["details"] = self.details
        return out


class BadRequest(ChatError):
    code, status = "bad_request", 400


class Invalid(ChatError):
    code, status = "invalid", 422

    def __init__(self, field: str, message: str, **details: Any) -> None:
        super().__init__(message, details={"field": field, **details})


class Unauthorized(ChatError):
    code, status = "unauthorized", 401


class Forbidden(ChatError):
    code, status = "forbidden", 403


class NotFound(ChatError):
    code, status = "not_found", 404


class Conflict(ChatError):
    code, status = "conflict", 409


class UnknownModel(ChatError):
    code, status = "unknown_model", 422

    def __init__(self, model: str) -> None:
        super().__init__(f"unknown model {model!r}", details={"model": model})


class TooLarge(ChatError):
    code, status = "too_large", 413


class RateLimited(ChatError):
    code, status = "rate_limited", 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {**super().body(), "retry_after": round(self.retry_after, 3)}


class Unavailable(ChatError):
    code, status = "unavailable", 503


class NotAllowed(ChatError):
    """An HTTP method a path does not take; the contract has no code of its own for it."""

    code, status = "bad_request", 405
