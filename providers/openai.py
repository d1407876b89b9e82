"""OpenAI chat completions over SSE; also vLLM, llama.cpp, LM Studio and OpenRouter."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any

import aiohttp
import orjson

from providers.base import (
    ChatMessage,
    ProviderConnectionError,
    ProviderProtocolError,
    StreamEnd,
    Timeouts,
    Usage,
)
from providers.sse import SSEParser
from providers.transport import ModelListing, Upstream, model_ids, snippet


class OpenAIProvider(ModelListing):
    """Streams `/chat/completions` with usage included; one instance per base URL and key."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        api_key: str | None = None,
        models: Sequence[str] = (),
        timeouts: Timeouts = Timeouts(),
        kind: str = "openai",
    ) -> None:
        self.kind = kind
        self.models = list(models)
        self.timeouts = timeouts
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def __repr__(self) -> str:
        return f"OpenAIProvider({self._base!r}, kind={self.kind!r})"

    async def stream(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[str | StreamEnd, None]:
        """Yields non-empty text deltas, then exactly one StreamEnd."""
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        parser = SSEParser()
        usage: Usage | None = None
        finish: str | None = None
        done = False
        upstream = Upstream(
            self._session, f"{self._base}/chat/completions",
            body=body, headers=self._headers, timeouts=self.timeouts, name=self.kind, sse=True,
        )
        async with upstream:
            while not done:
                chunk = await upstream.read()
                if not chunk:
                    # Some compatible servers omit [DONE]; a finish_reason then a clean end is whole.
                    if finish is None:
                        raise ProviderConnectionError(f"{self.kind}: stream ended before [DONE]")
                    break
                for event in parser.events(chunk):
                    if event.data == "[DONE]":
                        done = True
                        break
                    text, reason, seen = _parse_chunk(event.data, self.kind)
                    if reason is not None:
                        finish = reason
                    if seen is not None:
                        usage = seen
                    if text:
                        upstream.got_token()
                        yield text
            if done:
                await upstream.finish()
        yield StreamEnd(usage=usage, finish_reason=finish)

    async def _get_models(self) -> tuple[list[str], float]:
        return await model_ids(self._session, f"{self._base}/models", headers=self._headers,
                               timeouts=self.timeouts, name=self.kind)


def _parse_chunk(data: str, name: str) -> tuple[str | None, str | None, Usage | None]:
    """One `data:` payload -> (text delta, finish_reason, usage); raises on errors and garbage."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProviderProtocolError(f"{name}: malformed stream event: {snippet(data)!r}") from None
    if not isinstance(obj, dict):
        raise ProviderProtocolError(f"{name}: malformed stream event: {snippet(data)!r}")
    if obj.get("usage") is None and "error" not in obj:
        # The usual chunk: one choice, a text delta, no usage; anything else takes the long way.
        try:
            choice = obj["choices"][0]
            content = choice["delta"]["content"]
            reason = choice["finish_reason"]
        except (KeyError, IndexError, TypeError):
            pass
        else:
            if content.__class__ is str and (reason is None or reason.__class__ is str):
                return content, reason, None
    error = obj.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise ProviderProtocolError(f"{name} stream error: {message or snippet(data)}")
    text = reason = None
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = delta.get("content")
            if isinstance(content, str):
                text = content
        reason = choice.get("finish_reason")
    usage = None
    raw = obj.get("usage")
    if isinstance(raw, dict):
        usage = Usage(
            prompt_tokens=int(raw.get("prompt_tokens") or 0),
            completion_tokens=int(raw.get("completion_tokens") or 0),
        )
    return text, reason, usage
