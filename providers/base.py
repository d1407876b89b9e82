"""The provider seam: what every AI backend yields and how it fails."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One turn of the prompt, already flattened to plain text by the caller."""

    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the provider reported them, for accounting."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Last item of every stream."""

    usage: Usage | None
    finish_reason: str | None  # "stop", "length", ... as the provider said


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Limits we enforce ourselves so a stalled upstream fails fast instead of hanging a turn."""

    connect: float = 5.0  # TCP connect (and TLS handshake)
    first_token: float = 30.0  # request sent -> first text delta
    idle: float = 30.0  # max gap between two chunks after the first delta
    total: float = 300.0  # whole stream


# What an upstream's own error text may carry that a user must not see: keys (whole or
# masked, as OpenAI echoes them: "sk-proj-****abcd"), bearer tokens, `key=...` pairs, long
# opaque tokens (letters and digits, no hyphen: not a model name or a UUID), and addresses
# (URLs, IPv4, host:port). Every pattern starts only where a run of its characters starts,
# so a long upstream text costs linear time.
_SECRET = re.compile(r"(?<![\w-])(?:sk|rk|pk|gsk)[-_][\w*-]{3,}|(?<![\w-])AIza[\w-]{10,}"
                     r"|(?i:(?<![\w-])bearer\s+[\w.~+/=-]{8,})"
                     r"|(?i:(?<![\w-])(?:api[_-]?key|key|token|secret|password)\s*[=:]\s*[^\s&,;'\"]+)")
_OPAQUE = re.compile(r"(?<![\w-])[A-Za-z0-9_]{32,}(?![\w-])")
_ADDRESS = re.compile(r"(?<![\w.+-])[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>)]*[^\s'\"<>).,;:]"
                      r"|(?<![\w.:])\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?(?![\w.])"
                      r"|(?<![\w.-])(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+):\d{2,5}(?!\d)")
_REDACT_CHARS = 2000  # what a user is shown of an upstream's text at most


def _opaque(found: re.Match[str]) -> str:
    token = found.group(0)
    return "[redacted]" if any(c.isdigit() for c in token) and any(c.isalpha() for c in token) else token


def redact(text: str) -> str:
    """`text` without credentials or addresses, for an answer to a user."""
    text = text[:_REDACT_CHARS]
    return _ADDRESS.sub("[address]", _OPAQUE.sub(_opaque, _SECRET.sub("[redacted]", text)))


class ProviderError(Exception):
    """A provider failed; `code` is the wire contract's code ("provider_error" or "unavailable").
    Its message is redacted here, the one place, whoever built it from whatever the upstream said."""

    code: str = "provider_error"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 detail: str | None = None) -> None:
        safe = redact(message)
        super().__init__(safe)
        self.message = safe  # safe to show a user: names no address, host or credential
        # for the log: what the transport said, addresses included
        self.detail = detail if safe == message else message if detail is None else f"{message}; {detail}"
        self.status = status
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message if self.detail is None else f"{self.message} ({self.detail})"


class ProviderHTTPError(ProviderError):
    """The upstream answered 4xx/5xx before streaming; the message carries its own error text."""


class ProviderTimeout(ProviderError):
    """One of our `Timeouts` expired; `which` names it ("connect", "first_token", "idle", "total")."""

    def __init__(self, message: str, *, which: str, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.which = which


class ProviderConnectionError(ProviderError):
    """Refused, reset, or closed before the end marker; code "unavailable" if it never connected.
    The socket error, which names the address, is only in `detail`."""


class ProviderProtocolError(ProviderError):
    """The upstream sent something we cannot parse, or reported an error inside the stream."""


class Provider(Protocol):
    """What the server needs from an AI backend: stream a reply, list models, prove it is alive."""

    kind: str  # "openai" | "anthropic" | "ollama" | "echo"

    def stream(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[str | StreamEnd, None]:
        """Yields non-empty text deltas, then exactly one StreamEnd; raises ProviderError subclasses."""
        ...

    async def list_models(self) -> list[str]:
        """Model names the backend serves right now."""
        ...

    async def health(self) -> float:
        """Round trip latency in ms of a cheap request; raises ProviderError when down."""
        ...
