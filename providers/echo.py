"""The built-in offline model: streams the last user message back, word by word."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Sequence

from providers.base import ChatMessage, StreamEnd, Usage

NOTHING = "(nothing to echo)"
_TOKEN = re.compile(r"\S+\s*")


def tokens(text: str) -> list[str]:
    """Word tokens whose concatenation is exactly `text` (leading whitespace joins the first)."""
    found = _TOKEN.findall(text)
    if not found:
        return [text] if text else []
    lead = len(text) - len(text.lstrip())
    if lead:
        found[0] = text[:lead] + found[0]
    return found


class EchoProvider:
    """Deterministic, free and always up: for tests, demos and the fallback of last resort."""

    kind = "echo"

    def __init__(self, *, delay: float = 0.02) -> None:
        self.delay = delay
        self.models = ["echo"]

    def __repr__(self) -> str:
        return f"EchoProvider(delay={self.delay})"

    async def stream(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[str | StreamEnd, None]:
        """Yields the last user message's words, then a StreamEnd with word counts."""
        text = next((m.content for m in reversed(messages) if m.role == "user"), "")
        if not text.strip():
            text = NOTHING
        parts = tokens(text)
        if max_tokens is not None:
            parts = parts[:max_tokens]
        for i, part in enumerate(parts):
            if i:
                await asyncio.sleep(self.delay)
            else:
                await asyncio.sleep(0)
            yield part
        prompt = sum(len(m.content.split()) for m in messages)
        reason = "length" if len(parts) < len(tokens(text)) else "stop"
        yield StreamEnd(usage=Usage(prompt_tokens=prompt, completion_tokens=len(parts)), finish_reason=reason)

    async def list_models(self) -> list[str]:
        """Always ["echo"]."""
        return list(self.models)

    async def health(self) -> float:
        """Always up, no round trip."""
        return 0.0
