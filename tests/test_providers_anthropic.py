"""AnthropicProvider: history conversion, headers, the recorded stream and error event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from providers.anthropic import DEFAULT_MAX_TOKENS, PLACEHOLDER, AnthropicProvider, request_body
from providers.base import ChatMessage, ProviderHTTPError, ProviderProtocolError, StreamEnd, Timeouts, Usage
from tests.fakes import FakeAnthropic, collect

RECORDINGS = Path(__file__).parent / "recordings"
# No test here is about deadlines (tests/test_providers_errors.py is): these only bound a broken fake.
BOUNDS = Timeouts(connect=2.0, first_token=5.0, idle=5.0, total=10.0)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def test_system_messages_go_to_the_top_level_field() -> None:
    body = request_body("c", [ChatMessage("system", "be brief"), ChatMessage("user", "hi"),
                              ChatMessage("system", "be kind")])
    assert body["system"] == "be brief\n\nbe kind"
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS and body["stream"] is True
    assert "temperature" not in body


def test_consecutive_same_role_messages_are_merged() -> None:
    body = request_body("c", [ChatMessage("user", "alice: hi"), ChatMessage("user", "bob: yo"),
                              ChatMessage("assistant", "hello"), ChatMessage("assistant", "both"),
                              ChatMessage("user", "thanks")])
    assert body["messages"] == [
        {"role": "user", "content": "alice: hi\n\nbob: yo"},
        {"role": "assistant", "content": "hello\n\nboth"},
        {"role": "user", "content": "thanks"},
    ]
    assert "system" not in body


def test_history_starting_with_the_assistant_gets_a_user_turn_first() -> None:
    body = request_body("c", [ChatMessage("assistant", "welcome"), ChatMessage("user", "hi")])
    assert body["messages"] == [{"role": "user", "content": PLACEHOLDER},
                                {"role": "assistant", "content": "welcome"},
                                {"role": "user", "content": "hi"}]


def test_empty_messages_are_dropped_and_max_tokens_passed() -> None:
    body = request_body("c", [ChatMessage("user", "a"), ChatMessage("assistant", ""), ChatMessage("user", "b")],
                        max_tokens=10, temperature=0.0)
    assert body["messages"] == [{"role": "user", "content": "a\n\nb"}]
    assert body["max_tokens"] == 10 and body["temperature"] == 0.0


async def test_headers_and_path(http: Any) -> None:
    async with FakeAnthropic() as fake:
        provider = AnthropicProvider(http, fake.base_url, api_key="sk-ant-x", timeouts=BOUNDS)
        await collect(provider.stream("claude", [ChatMessage("user", "hi")]))
        await provider.list_models()
    chat, models = fake.requests
    assert chat.path == "/v1/messages" and models.path == "/v1/models"
    for sent in (chat, models):
        assert sent.headers["x-api-key"] == "sk-ant-x"
        assert sent.headers["anthropic-version"] == "2023-06-01"
        assert "Authorization" not in sent.headers
    assert chat.json["model"] == "claude"


async def test_recorded_stream_with_ping_and_message_delta_usage(http: Any) -> None:
    raw = (RECORDINGS / "anthropic_stream.sse").read_bytes()
    async with FakeAnthropic(raw=raw, raw_chunk=5) as fake:
        provider = AnthropicProvider(http, fake.base_url, api_key="k", timeouts=BOUNDS)
        deltas, end = await collect(provider.stream("claude", [ChatMessage("user", "Hello")]))
    assert deltas == ["Hello", "!"]
    assert end == StreamEnd(usage=Usage(prompt_tokens=25, completion_tokens=15), finish_reason="end_turn")


async def test_recorded_overloaded_error_event(http: Any) -> None:
    raw = (RECORDINGS / "anthropic_error_event.sse").read_bytes()
    async with FakeAnthropic(raw=raw) as fake:
        provider = AnthropicProvider(http, fake.base_url, api_key="k", timeouts=BOUNDS)
        got: list[Any] = []
        with pytest.raises(ProviderProtocolError) as info:
            async for item in provider.stream("claude", [ChatMessage("user", "Hello")]):
                got.append(item)
    assert got == ["Sure"]
    assert info.value.message == "anthropic stream error: Overloaded (overloaded_error)"


async def test_recorded_401_body(http: Any) -> None:
    body = (RECORDINGS / "anthropic_error.json").read_bytes()
    async with FakeAnthropic(fail_status=401, fail_body=body) as fake:
        provider = AnthropicProvider(http, fake.base_url, api_key="bad", timeouts=BOUNDS)
        with pytest.raises(ProviderHTTPError) as info:
            await collect(provider.stream("claude", [ChatMessage("user", "Hello")]))
    assert info.value.message == "anthropic returned HTTP 401: invalid x-api-key (authentication_error)"


async def test_cached_input_tokens_count_as_prompt_tokens(http: Any) -> None:
    raw = (b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":3,'
           b'"cache_read_input_tokens":100,"cache_creation_input_tokens":20,"output_tokens":1}}}\n\n'
           b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
           b'"delta":{"type":"text_delta","text":"ok"}}\n\n'
           b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},'
           b'"usage":{"output_tokens":2}}\n\n'
           b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    async with FakeAnthropic(raw=raw) as fake:
        provider = AnthropicProvider(http, fake.base_url, api_key="k", timeouts=BOUNDS)
        deltas, end = await collect(provider.stream("claude", [ChatMessage("user", "Hello")]))
    assert deltas == ["ok"]
    assert end == StreamEnd(usage=Usage(123, 2), finish_reason="max_tokens")


async def test_thinking_deltas_are_not_text(http: Any) -> None:
    raw = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
           b'"delta":{"type":"thinking_delta","thinking":"hmm"}}\n\n'
           b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
           b'"delta":{"type":"text_delta","text":"answer"}}\n\n'
           b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    async with FakeAnthropic(raw=raw) as fake:
        provider = AnthropicProvider(http, fake.base_url, api_key="k", timeouts=BOUNDS)
        deltas, end = await collect(provider.stream("claude", [ChatMessage("user", "Hello")]))
    assert deltas == ["answer"] and end == StreamEnd(usage=None, finish_reason=None)
