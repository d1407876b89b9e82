"""Ollama's native /api/chat over NDJSON."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any

import aiohttp

from providers.base import (
    ChatMessage,
    ProviderConnectionError,
    ProviderProtocolError,
    StreamEnd,
    Timeouts,
    Usage,
)
from providers.ndjson import NDJSONDecoder, NDJSONError
from providers.transport import ModelListing, Upstream, get_json


_EOF = object()  # sentinel: this chunk's lines are used up


class OllamaProvider(ModelListing):
    """Streams `/api/chat` from one Ollama machine (a node)."""

    kind = "ollama"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str = "http://127.0.0.1:11434",
        *,
        timeouts: Timeouts = Timeouts(),
    ) -> None:
        self.timeouts = timeouts
        self._session = session
        self._base = base_url.rstrip("/")

    def __repr__(self) -> str:
        return f"OllamaProvider({self._base!r})"

    async def stream(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[str | StreamEnd, None]:
        """Yields non-empty text deltas, then exactly one StreamEnd."""
        options: dict[str, Any] = {}
        if max_tokens is not None:
            options["num_predict"] = max_tokens
        if temperature is not None:
            options["temperature"] = temperature
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
        }
        if options:
            body["options"] = options
        decoder = NDJSONDecoder()
        end: StreamEnd | None = None
        upstream = Upstream(
            self._session, f"{self._base}/api/chat",
            body=body, headers={}, timeouts=self.timeouts, name=self.kind, sse=False,
        )
        async with upstream:
            while end is None:
                chunk = await upstream.read()
                lines = decoder.feed(chunk) if chunk else decoder.close()
                while end is None:
                    try:
                        obj = next(lines, _EOF)
                    except NDJSONError as exc:
                        raise ProviderProtocolError(f"{self.kind}: {exc}") from None
                    if obj is _EOF:
                        break
                    text, end = _parse_line(obj)
                    if text:
                        upstream.got_token()
                        yield text
                if not chunk and end is None:
                    raise ProviderConnectionError(f"{self.kind}: stream ended before done")
            await upstream.finish()
        yield end

    async def _get_models(self) -> tuple[list[str], float]:
        value, elapsed = await get_json(
            self._session, f"{self._base}/api/tags",
            headers={}, timeouts=self.timeouts, name=self.kind,
        )
        models = value.get("models") if isinstance(value, dict) else None
        if not isinstance(models, list):
            raise ProviderProtocolError(f"{self.kind}: /api/tags answer has no models list")
        return [str(m["name"]) for m in models if isinstance(m, dict) and "name" in m], elapsed


def _parse_line(obj: Any) -> tuple[str | None, StreamEnd | None]:
    """One NDJSON value -> (text delta, StreamEnd if this was the done line)."""
    if not isinstance(obj, dict):
        raise ProviderProtocolError(f"ollama: unexpected line {obj!r:.80}")
    if obj.get("error"):
        raise ProviderProtocolError(f"ollama stream error: {obj['error']}")
    message = obj.get("message")
    text = message.get("content") if isinstance(message, dict) else None
    text = text if isinstance(text, str) else None
    if not obj.get("done"):
        return text, None
    prompt, completion = obj.get("prompt_eval_count"), obj.get("eval_count")
    usage = None
    if isinstance(prompt, int) or isinstance(completion, int):
        usage = Usage(prompt if isinstance(prompt, int) else 0, completion if isinstance(completion, int) else 0)
    reason = obj.get("done_reason")
    return text, StreamEnd(usage=usage, finish_reason=reason if isinstance(reason, str) else "stop")
