"""OllamaProvider: request shape, the recorded NDJSON stream, Ollama's error bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from providers.base import ChatMessage, ProviderHTTPError, StreamEnd, Timeouts, Usage
from providers.ollama import OllamaProvider
from tests.fakes import FakeOllama, collect

RECORDINGS = Path(__file__).parent / "recordings"
# No test here is about deadlines (tests/test_providers_errors.py is): these only bound a broken fake.
BOUNDS = Timeouts(connect=2.0, first_token=5.0, idle=5.0, total=10.0)
HI = [ChatMessage("system", "be brief"), ChatMessage("user", "why is the sky blue?")]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_request_shape_with_options(http: Any) -> None:
    async with FakeOllama() as fake:
        provider = OllamaProvider(http, fake.base_url, timeouts=BOUNDS)
        await collect(provider.stream("llama3.1:8b", HI, max_tokens=64, temperature=0.7))
        await collect(provider.stream("llama3.1:8b", HI))
    with_options, without = fake.requests
    assert with_options.path == "/api/chat"
    assert with_options.json == {
        "model": "llama3.1:8b",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "why is the sky blue?"}],
        "stream": True,
        "options": {"num_predict": 64, "temperature": 0.7},
    }
    assert "options" not in without.json


async def test_recorded_stream(http: Any) -> None:
    raw = (RECORDINGS / "ollama_chat.ndjson").read_bytes()
    async with FakeOllama(raw=raw, raw_chunk=11) as fake:
        provider = OllamaProvider(http, fake.base_url, timeouts=BOUNDS)
        deltas, end = await collect(provider.stream("llama3.2", HI))
    assert "".join(deltas) == "The sky is blue because of Rayleigh scattering."
    assert end == StreamEnd(usage=Usage(prompt_tokens=26, completion_tokens=9), finish_reason="stop")


async def test_final_line_without_newline_still_ends_the_stream(http: Any) -> None:
    raw = (RECORDINGS / "ollama_chat.ndjson").read_bytes().rstrip(b"\n")
    async with FakeOllama(raw=raw) as fake:
        provider = OllamaProvider(http, fake.base_url, timeouts=BOUNDS)
        deltas, end = await collect(provider.stream("llama3.2", HI))
    assert len(deltas) == 9 and end.finish_reason == "stop"


async def test_missing_model_404_gives_ollamas_message(http: Any) -> None:
    body = b'{"error":"model \\"nope\\" not found, try pulling it first"}'
    async with FakeOllama(fail_status=404, fail_body=body) as fake:
        provider = OllamaProvider(http, fake.base_url, timeouts=BOUNDS)
        with pytest.raises(ProviderHTTPError) as info:
            await collect(provider.stream("nope", HI))
    assert info.value.message == 'ollama returned HTTP 404: model "nope" not found, try pulling it first'


async def test_list_models_and_health_use_api_tags(http: Any) -> None:
    async with FakeOllama(models=["llama3.1:8b", "qwen2.5:0.5b"]) as fake:
        provider = OllamaProvider(http, fake.base_url, timeouts=BOUNDS)
        assert await provider.list_models() == ["llama3.1:8b", "qwen2.5:0.5b"]
        assert await provider.health() >= 0.0
    assert [r.path for r in fake.requests] == ["/api/tags", "/api/tags"]
