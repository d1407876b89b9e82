"""Anthropic Messages API over SSE."""

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

DEFAULT_MAX_TOKENS = 1024  # the API requires max_tokens; a chat reply rarely needs more
PLACEHOLDER = "(conversation start)"  # the API wants a first user turn; history may not have one


class AnthropicProvider(ModelListing):
    """Streams `/v1/messages`; converts our flat history to the API's alternating turns."""

    kind = "anthropic"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str = "https://api.anthropic.com",
        *,
        api_key: str,
        version: str = "2023-06-01",
        models: Sequence[str] = (),
        timeouts: Timeouts = Timeouts(),
    ) -> None:
        self.models = list(models)
        self.timeouts = timeouts
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"x-api-key": api_key, "anthropic-version": version}

    def __repr__(self) -> str:
        return f"AnthropicProvider({self._base!r})"

    async def stream(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[str | StreamEnd, None]:
        """Yields non-empty text deltas, then exactly one StreamEnd."""
        body = request_body(model, messages, max_tokens=max_tokens, temperature=temperature)
        parser = SSEParser()
        state = _State()
        upstream = Upstream(
            self._session, f"{self._base}/v1/messages",
            body=body, headers=self._headers, timeouts=self.timeouts, name=self.kind, sse=True,
        )
        async with upstream:
            while not state.done:
                chunk = await upstream.read()
                if not chunk:
                    raise ProviderConnectionError(f"{self.kind}: stream ended before message_stop")
                for event in parser.events(chunk):
                    text = state.apply(event.event, event.data)
                    if text:
                        upstream.got_token()
                        yield text
                    if state.done:
                        break
            await upstream.finish()
        yield StreamEnd(usage=state.usage(), finish_reason=state.stop_reason)

    async def _get_models(self) -> tuple[list[str], float]:
        return await model_ids(self._session, f"{self._base}/v1/models", headers=self._headers,
                               timeouts=self.timeouts, name=self.kind)


def request_body(
    model: str,
    messages: Sequence[ChatMessage],
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> dict[str, Any]:
    """Our history as the API wants it: system on top, user first, roles alternating."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    turns: list[dict[str, str]] = []
    for m in messages:
        if m.role == "system" or not m.content:
            continue
        role = "assistant" if m.role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + m.content
        else:
            turns.append({"role": role, "content": m.content})
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": PLACEHOLDER})
    body: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "max_tokens": max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS,
        "stream": True,
    }
    if system:
        body["system"] = system
    if temperature is not None:
        body["temperature"] = temperature
    return body


class _State:
    """What the events so far said: usage halves, stop reason, whether message_stop came."""

    __slots__ = ("input_tokens", "output_tokens", "stop_reason", "done")

    def __init__(self) -> None:
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.stop_reason: str | None = None
        self.done = False

    def usage(self) -> Usage | None:
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return Usage(self.input_tokens or 0, self.output_tokens or 0)

    def apply(self, event: str, data: str) -> str | None:
        """Apply one event; return its text delta, if any."""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ProviderProtocolError(f"anthropic: malformed {event} event: {snippet(data)!r}") from None
        if not isinstance(obj, dict):
            raise ProviderProtocolError(f"anthropic: malformed {event} event: {snippet(data)!r}")
        kind = obj.get("type", event)
        if kind == "content_block_delta":
            delta = _dict(obj.get("delta"))
            if delta.get("type") == "text_delta":
                text = delta.get("text")
                return text if isinstance(text, str) else None
        elif kind == "message_start":
            self._take_usage(_dict(obj.get("message")).get("usage"))
        elif kind == "message_delta":
            self._take_usage(obj.get("usage"))
            reason = _dict(obj.get("delta")).get("stop_reason")
            if reason is not None:
                self.stop_reason = reason
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            error = _dict(obj.get("error"))
            message, etype = error.get("message"), error.get("type")
            raise ProviderProtocolError(
                f"anthropic stream error: {message or snippet(data)}" + (f" ({etype})" if etype else "")
            )
        return None  # ping, content_block_start/stop and future event types

    def _take_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        if isinstance(usage.get("input_tokens"), int):
            cached = sum(
                v for k in ("cache_creation_input_tokens", "cache_read_input_tokens")
                if isinstance(v := usage.get(k), int)
            )
            self.input_tokens = usage["input_tokens"] + cached
        if isinstance(usage.get("output_tokens"), int):
            self.output_tokens = usage["output_tokens"]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
