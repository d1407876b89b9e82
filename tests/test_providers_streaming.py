"""Failure behaviour every HTTP provider shares, run against each wire format's fake server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from providers.anthropic import AnthropicProvider
from providers.base import (
    ChatMessage,
    Provider,
    ProviderConnectionError,
    ProviderHTTPError,
    ProviderProtocolError,
    ProviderTimeout,
    StreamEnd,
    Timeouts,
    Usage,
)
from providers.ollama import OllamaProvider
from providers.openai import OpenAIProvider
from tests.fakes import FakeAnthropic, FakeOllama, FakeOpenAI, FakeServer, closed_port, collect

BOUNDS = Timeouts(connect=2.0, first_token=5.0, idle=5.0, total=10.0)  # never reached unless a test means to
HELLO = [ChatMessage("user", "hello there")]


@dataclass(frozen=True)
class Kind:
    fake: type[FakeServer]
    make: Callable[[aiohttp.ClientSession, str, Timeouts], Provider]
    base_path: str
    finish: str

    def __repr__(self) -> str:
        return self.fake.__name__


KINDS = [
    Kind(FakeOpenAI, lambda s, url, t: OpenAIProvider(s, url, api_key="sk-test", timeouts=t), "/v1", "stop"),
    Kind(FakeAnthropic, lambda s, url, t: AnthropicProvider(s, url, api_key="k", timeouts=t), "", "end_turn"),
    Kind(FakeOllama, lambda s, url, t: OllamaProvider(s, url, timeouts=t), "", "stop"),
]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(params=KINDS, ids=repr)
def kind(request: pytest.FixtureRequest) -> Kind:
    return request.param


async def test_happy_path_yields_tokens_usage_and_finish_reason(http: Any, kind: Kind) -> None:
    async with kind.fake(tokens=["Hi", " there", "!"], usage=(7, 3)) as fake:
        provider = kind.make(http, fake.base_url, BOUNDS)
        deltas, end = await collect(provider.stream("m1", HELLO))
    assert deltas == ["Hi", " there", "!"]
    assert end == StreamEnd(usage=Usage(7, 3), finish_reason=kind.finish)
    assert fake.requests[-1].json["model"] == "m1"
    assert fake.requests[-1].json["stream"] is True


async def test_connection_is_reused_after_a_complete_stream(http: Any, kind: Kind) -> None:
    async with kind.fake(tokens=["a", "b"], tail_delay=0.05) as fake:
        provider = kind.make(http, fake.base_url, BOUNDS)
        for _ in range(3):
            deltas, _ = await collect(provider.stream("m", HELLO))
            assert deltas == ["a", "b"]
    assert len(fake.requests) == 3
    assert len({r.peer for r in fake.requests}) == 1  # one kept-alive connection, not three


async def test_http_4xx_json_error_message_is_the_upstreams(http: Any, kind: Kind) -> None:
    async with kind.fake(fail_status=429) as fake:
        provider = kind.make(http, fake.base_url, BOUNDS)
        with pytest.raises(ProviderHTTPError) as info:
            await collect(provider.stream("m", HELLO))
    assert info.value.status == 429
    assert info.value.code == "provider_error"
    assert "429" in info.value.message and "fake failure 429" in info.value.message


async def test_http_5xx_html_error_is_short_and_clear(http: Any, kind: Kind) -> None:
    page = "<html><head><style>body{color:red}</style><title>500 Internal Server Error</title></head>" \
        "<body><h1>Oops</h1>" + "<p>lots of text</p>" * 500 + "</body></html>"
    async with kind.fake(fail_status=500, fail_body=page, fail_content_type="text/html") as fake:
        provider = kind.make(http, fake.base_url, BOUNDS)
        with pytest.raises(ProviderHTTPError) as info:
            await collect(provider.stream("m", HELLO))
    message = info.value.message
    assert info.value.status == 500
    assert "HTTP 500" in message and "500 Internal Server Error" in message
    assert "<" not in message and "lots of text" not in message and len(message) < 120


async def test_connection_refused_is_unavailable(http: Any, kind: Kind) -> None:
    provider = kind.make(http, f"http://127.0.0.1:{closed_port()}{kind.base_path}", BOUNDS)
    with pytest.raises(ProviderConnectionError) as info:
        await collect(provider.stream("m", HELLO))
    assert info.value.code == "unavailable"


async def test_reset_mid_stream_is_a_connection_error_after_the_first_tokens(http: Any, kind: Kind) -> None:
    async with kind.fake(tokens=["one", " two", " three"], fail_after=2, fail_mode="reset") as fake:
        provider = kind.make(http, fake.base_url, BOUNDS)
        got: list[str] = []
        with pytest.raises(ProviderConnectionError) as info:
            async for item in provider.stream("m", HELLO):
                got.append(item)  # type: ignore[arg-type]
    assert got == ["one", " two"]
    assert info.value.code == "provider_error"


async def test_malformed_line_is_a_protocol_error(http: Any, kind: Kind) -> None:
    async with kind.fake(tokens=["ok", "never"], fail_after=1, fail_mode="malformed") as fake:
        provider = kind.make(http, fake.base_url, BOUNDS)
        got: list[Any] = []
        with pytest.raises(ProviderProtocolError) as info:
            async for item in provider.stream("m", HELLO):
                got.append(item)
    assert got == ["ok"]
    assert "malformed" in info.value.message


async def test_in_stream_error_event_is_a_protocol_error_with_its_message(http: Any, kind: Kind) -> None:
    async with kind.fake(tokens=["ok", "never"], fail_after=1, fail_mode="error_event") as fake:
        provider = kind.make(http, fake.base_url, BOUNDS)
        got: list[Any] = []
        with pytest.raises(ProviderProtocolError) as info:
            async for item in provider.stream("m", HELLO):
                got.append(item)
    assert got == ["ok"]
    expected = {FakeOpenAI: "server had an error", FakeAnthropic: "Overloaded", FakeOllama: "unexpected EOF"}
    assert expected[kind.fake] in info.value.message


async def test_stall_after_first_token_times_out_within_idle(http: Any, kind: Kind) -> None:
    async with kind.fake(tokens=["a", "b"], fail_after=1, fail_mode="stall") as fake:
        provider = kind.make(http, fake.base_url, Timeouts(connect=2.0, first_token=5.0, idle=0.2, total=10.0))
        got: list[Any] = []
        started = time.monotonic()
        with pytest.raises(ProviderTimeout) as info:
            async for item in provider.stream("m", HELLO):
                got.append(item)
        elapsed = time.monotonic() - started
        assert await fake.wait_disconnects(1) == 1
    assert got == ["a"]
    assert info.value.which == "idle" and "0.2s" in info.value.message
    assert 0.15 < elapsed < 3.0


async def test_stall_after_first_token_times_out_within_idle_even_when_first_token_allows_longer(
        http: Any, kind: Kind) -> None:
    timeouts = Timeouts(connect=1.0, first_token=30.0, idle=0.2, total=60.0)
    async with kind.fake(tokens=["a", "b"], fail_after=1, fail_mode="stall") as fake:
        provider = kind.make(http, fake.base_url, timeouts)
        started = time.monotonic()
        with pytest.raises(ProviderTimeout) as info:
            await collect(provider.stream("m", HELLO))
    assert info.value.which == "idle"
    assert time.monotonic() - started < 10.0  # the idle deadline, not the first-token one (30 s)


async def test_steady_stream_longer_than_first_token_and_idle_limits_completes(http: Any, kind: Kind) -> None:
    timeouts = Timeouts(connect=2.0, first_token=1.0, idle=1.0, total=10.0)
    async with kind.fake(tokens=["t"] * 40, delay=0.05) as fake:  # two seconds
        provider = kind.make(http, fake.base_url, timeouts)
        deltas, end = await collect(provider.stream("m", HELLO))
    assert deltas == ["t"] * 40 and end.finish_reason is not None


async def test_stall_before_first_token_times_out_as_first_token(http: Any, kind: Kind) -> None:
    async with kind.fake(tokens=["a"], fail_after=0, fail_mode="stall") as fake:
        provider = kind.make(http, fake.base_url, Timeouts(connect=2.0, first_token=0.3, idle=0.2, total=10.0))
        started = time.monotonic()
        with pytest.raises(ProviderTimeout) as info:
            await collect(provider.stream("m", HELLO))
        elapsed = time.monotonic() - started
    assert info.value.which == "first_token" and "first token" in info.value.message
    assert 0.25 < elapsed < 3.0


async def test_total_timeout_cuts_a_slow_but_steady_stream(http: Any, kind: Kind) -> None:
    timeouts = Timeouts(connect=1.0, first_token=1.0, idle=1.0, total=0.3)
    async with kind.fake(tokens=["t"] * 50, delay=0.05) as fake:
        provider = kind.make(http, fake.base_url, timeouts)
        started = time.monotonic()
        with pytest.raises(ProviderTimeout) as info:
            await collect(provider.stream("m", HELLO))
    assert info.value.which == "total"
    assert time.monotonic() - started < 2.5  # far less than the 50 tokens' 2.5 s


async def test_clean_eof_without_end_marker_is_a_connection_error(http: Any, kind: Kind) -> None:
    async with kind.fake(tokens=["a", "b"], fail_after=2, fail_mode="eof") as fake:
        provider = kind.make(http, fake.base_url, BOUNDS)
        got: list[Any] = []
        with pytest.raises(ProviderConnectionError) as info:
            async for item in provider.stream("m", HELLO):
                got.append(item)
    assert got == ["a", "b"]
    assert "ended" in info.value.message


async def test_early_aclose_closes_the_upstream_response(http: Any, kind: Kind) -> None:
    async with kind.fake(tokens=[f"w{i} " for i in range(200)], delay=0.02) as fake:
        provider = kind.make(http, fake.base_url, BOUNDS)
        stream = provider.stream("m", HELLO)
        assert await anext(stream) == "w0 "
        assert await anext(stream) == "w1 "
        await stream.aclose()
        assert await fake.wait_disconnects(1, timeout=5.0) == 1
        assert fake.completed == 0


async def test_cancelling_the_consuming_task_closes_the_upstream_response(http: Any, kind: Kind) -> None:
    async with kind.fake(tokens=[f"w{i} " for i in range(200)], delay=0.02) as fake:
        provider = kind.make(http, fake.base_url, BOUNDS)
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in provider.stream("m", HELLO):
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 5.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await fake.wait_disconnects(1, timeout=5.0) == 1


async def test_list_models_and_health(http: Any, kind: Kind) -> None:
    async with kind.fake(models=["alpha", "beta:7b"]) as fake:
        provider = kind.make(http, fake.base_url, BOUNDS)
        assert await provider.list_models() == ["alpha", "beta:7b"]
        latency = await provider.health()
    assert isinstance(latency, float) and 0.0 < latency < 1000.0


async def test_health_raises_when_down(http: Any, kind: Kind) -> None:
    provider = kind.make(http, f"http://127.0.0.1:{closed_port()}{kind.base_path}", BOUNDS)
    with pytest.raises(ProviderConnectionError) as info:
        await provider.health()
    assert info.value.code == "unavailable"


async def test_health_raises_http_error_on_5xx(http: Any, kind: Kind) -> None:
    async with kind.fake(fail_status=503) as fake:
        provider = kind.make(http, fake.base_url, BOUNDS)
        with pytest.raises(ProviderHTTPError) as info:
            await provider.list_models()
    assert info.value.status == 503


async def test_slow_models_endpoint_times_out(http: Any, kind: Kind) -> None:
    async with kind.fake(model_delay=5.0) as fake:
        provider = kind.make(http, fake.base_url, Timeouts(connect=1.0, first_token=0.3, idle=0.2, total=5.0))
        started = time.monotonic()
        with pytest.raises(ProviderTimeout):
            await provider.health()
    assert time.monotonic() - started < 3.0


async def test_html_page_with_200_status_is_a_protocol_error(http: Any, kind: Kind) -> None:
    async with kind.fake(raw=b"<html><title>Captive portal</title></html>") as fake:
        fake.content_type = "text/html"
        provider = kind.make(http, fake.base_url, BOUNDS)
        with pytest.raises(ProviderProtocolError) as info:
            await collect(provider.stream("m", HELLO))
    assert "Captive portal" in info.value.message


async def test_many_concurrent_streams_share_one_session(http: Any, kind: Kind) -> None:
    async with kind.fake(tokens=[f"t{i} " for i in range(20)], delay=0.005) as fake:
        # Deadlines a busy CI machine meets with 50 streams at once: this test is about sharing.
        provider = kind.make(http, fake.base_url, Timeouts(connect=10, first_token=10, idle=10, total=60))
        results = await asyncio.gather(*(collect(provider.stream("m", HELLO)) for _ in range(50)))
    assert all("".join(d) == "".join(f"t{i} " for i in range(20)) for d, _ in results)
    assert fake.completed == 50 and fake.max_active > 1
