"""OpenAIProvider against the fake and the recorded OpenAI stream: what we send, what we read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from providers.base import ChatMessage, ProviderHTTPError, ProviderProtocolError, StreamEnd, Timeouts, Usage
from providers.openai import OpenAIProvider
from tests.fakes import FakeOpenAI, collect

RECORDINGS = Path(__file__).parent / "recordings"
# No test here is about deadlines (tests/test_providers_errors.py is): these only bound a broken fake.
BOUNDS = Timeouts(connect=2.0, first_token=5.0, idle=5.0, total=10.0)
MESSAGES = [ChatMessage("system", "be brief"), ChatMessage("user", "hi"), ChatMessage("assistant", "hello"),
            ChatMessage("user", "how are you")]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_request_asks_for_a_stream_with_usage_and_sends_bearer_key(http: Any) -> None:
    async with FakeOpenAI() as fake:
        provider = OpenAIProvider(http, fake.base_url, api_key="sk-secret", timeouts=BOUNDS)
        await collect(provider.stream("gpt-4o-mini", MESSAGES, max_tokens=50, temperature=0.2))
    sent = fake.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == "Bearer sk-secret"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.json == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                     {"role": "assistant", "content": "hello"}, {"role": "user", "content": "how are you"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 50,
        "temperature": 0.2,
    }


async def test_no_key_means_no_authorization_header_and_no_optional_fields(http: Any) -> None:
    async with FakeOpenAI() as fake:
        provider = OpenAIProvider(http, fake.base_url + "/", timeouts=BOUNDS)
        await collect(provider.stream("local", MESSAGES))
        await provider.list_models()
    assert all("Authorization" not in r.headers for r in fake.requests)
    assert "max_tokens" not in fake.requests[0].json and "temperature" not in fake.requests[0].json
    assert [r.path for r in fake.requests] == ["/v1/chat/completions", "/v1/models"]


async def test_recorded_stream_replayed_in_small_pieces(http: Any) -> None:
    raw = (RECORDINGS / "openai_stream.sse").read_bytes()
    async with FakeOpenAI(raw=raw, raw_chunk=7) as fake:
        provider = OpenAIProvider(http, fake.base_url, timeouts=BOUNDS)
        deltas, end = await collect(provider.stream("gpt-4o-mini", MESSAGES))
    assert "".join(deltas) == "Hello! How can I assist you today?"
    assert len(deltas) == 9  # the role chunk's empty content is not a delta
    assert end == StreamEnd(usage=Usage(prompt_tokens=19, completion_tokens=9), finish_reason="stop")


async def test_recorded_401_error_body_gives_the_api_message(http: Any) -> None:
    body = (RECORDINGS / "openai_error.json").read_bytes()
    async with FakeOpenAI(fail_status=401, fail_body=body) as fake:
        provider = OpenAIProvider(http, fake.base_url, api_key="sk-abc123", timeouts=BOUNDS)
        with pytest.raises(ProviderHTTPError) as info:
            await collect(provider.stream("gpt-4o-mini", MESSAGES))
    assert info.value.status == 401
    assert info.value.message.startswith("openai returned HTTP 401: Incorrect API key provided")
    assert "invalid_request_error" in info.value.message
    assert "sk-abc123" not in str(info.value)  # neither the user nor the log gets the key


async def test_stream_without_usage_chunk_ends_with_usage_none(http: Any) -> None:
    raw = (b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\n\n'
           b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}\n\n'
           b"data: [DONE]\n\n")
    async with FakeOpenAI(raw=raw) as fake:
        provider = OpenAIProvider(http, fake.base_url, timeouts=BOUNDS)
        deltas, end = await collect(provider.stream("m", MESSAGES))
    assert deltas == ["x"]
    assert end == StreamEnd(usage=None, finish_reason="length")


async def test_compatible_server_without_done_marker_ends_after_finish_reason(http: Any) -> None:
    raw = (b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\r\n\r\n'
           b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\r\n\r\n')
    async with FakeOpenAI(raw=raw) as fake:
        provider = OpenAIProvider(http, fake.base_url, kind="llamacpp", timeouts=BOUNDS)
        deltas, end = await collect(provider.stream("m", MESSAGES))
    assert deltas == ["x"] and end.finish_reason == "stop"


async def test_json_answer_instead_of_a_stream_is_a_protocol_error(http: Any) -> None:
    async with FakeOpenAI(raw=b'{"error": {"message": "streaming is disabled"}}') as fake:
        fake.content_type = "application/json"
        provider = OpenAIProvider(http, fake.base_url, kind="vllm", timeouts=BOUNDS)
        with pytest.raises(ProviderProtocolError) as info:
            await collect(provider.stream("m", MESSAGES))
    assert info.value.message.startswith("vllm: expected a stream")
    assert "streaming is disabled" in info.value.message


async def test_models_come_from_the_endpoint_not_the_configuration(http: Any) -> None:
    async with FakeOpenAI(models=["a", "ft:gpt-4o:org"]) as fake:
        provider = OpenAIProvider(http, fake.base_url, models=["configured"], timeouts=BOUNDS)
        assert await provider.list_models() == ["a", "ft:gpt-4o:org"]
    assert provider.models == ["configured"]
