"""Registry: model id grammar, resolution, health checks against real fakes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.base import Timeouts
from providers.echo import EchoProvider
from providers.ollama import OllamaProvider
from providers.openai import OpenAIProvider
from providers.registry import Backend, ModelId, ModelNotServed, NodeState, Registry, parse_model_id
from tests.fakes import FakeOllama, FakeOpenAI, closed_port

FAST = Timeouts(connect=1.0, first_token=1.0, idle=1.0, total=5.0)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize(("text", "expected"), [
    ("openai:gpt-4o-mini", ModelId("openai", None, "gpt-4o-mini")),
    ("anthropic:claude-sonnet-4", ModelId("anthropic", None, "claude-sonnet-4")),
    ("echo:echo", ModelId("echo", None, "echo")),
    ("openai:ft:gpt-4o:org", ModelId("openai", None, "ft:gpt-4o:org")),
    ("ollama:llama3.1:8b", ModelId("ollama", None, "llama3.1:8b")),
    ("client:1:llama3.1", ModelId("client", "1", "llama3.1")),
    ("client:1:llama3.1:8b", ModelId("client", "1", "llama3.1:8b")),
    ("openai:a:", ModelId("openai", None, "a:")),
])
def test_parse_model_id_splits_on_the_first_colons_only(text: str, expected: ModelId) -> None:
    assert parse_model_id(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize("text", [
    "", "openai", "openai:", ":gpt", "client:1", "client:1:", "client::x", "open ai:x", "openai:gpt 4",
    "openai:gpt\t4", "openai:gpt\x00", "openai:gpt\u200b", "OpenAI:gpt", "openai:" + "x" * 200, " openai:x",
])
def test_parse_model_id_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        parse_model_id(text)


@given(provider=st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True),
       model=st.text(alphabet=st.characters(whitelist_categories=("L", "N", "P", "S")), min_size=1, max_size=40))
def test_parse_then_str_round_trips(provider: str, model: str) -> None:
    if provider == "client":
        provider = "clients"
    text = f"{provider}:{model}"
    parsed = parse_model_id(text)
    assert (parsed.provider, parsed.node, parsed.model) == (provider, None, model)
    assert str(parsed) == text


def make_registry() -> Registry:
    registry = Registry("echo:echo")
    registry.add(Backend("echo", "Echo", "echo", EchoProvider(delay=0), ["echo"]))
    registry.add(Backend("client:1", "Mac Studio", "ollama", EchoProvider(delay=0), ["llama3.1:8b"],
                         node=NodeState(1, "Mac Studio")))
    return registry


def test_resolve_maps_ids_back_to_backends() -> None:
    registry = make_registry()
    backend, model = registry.resolve("client:1:llama3.1:8b")
    assert (backend.id, model) == ("client:1", "llama3.1:8b")
    backend, model = registry.resolve("echo:echo")
    assert (backend.id, model) == ("echo", "echo")
    assert registry.knows("echo:echo") and registry.knows("client:1:llama3.1:8b")


@pytest.mark.parametrize("model_id", ["echo:other", "client:2:llama3.1:8b", "openai:gpt-4o", "nonsense", "client:1"])
def test_resolve_raises_model_not_served(model_id: str) -> None:
    registry = make_registry()
    with pytest.raises(ModelNotServed) as info:
        registry.resolve(model_id)
    assert info.value.model_id == model_id
    assert model_id in str(info.value)
    assert isinstance(info.value, LookupError)
    assert not registry.knows(model_id)


def test_add_replaces_and_remove_forgets() -> None:
    registry = make_registry()
    registry.add(Backend("echo", "Echo 2", "echo", EchoProvider(), ["echo", "echo2"]))
    assert [b.id for b in registry.backends()] == ["echo", "client:1"]
    assert registry.knows("echo:echo2")
    removed = registry.remove("client:1")
    assert removed is not None and removed.label == "Mac Studio"
    assert registry.remove("client:1") is None
    assert not registry.knows("client:1:llama3.1:8b")


async def test_check_marks_a_live_node_healthy_and_a_dead_one_not(http: Any) -> None:
    registry = Registry("echo:echo")
    async with FakeOllama(models=["llama3.1:8b"]) as fake:
        live = Backend("client:1", "live", "ollama", OllamaProvider(http, fake.base_url, timeouts=FAST),
                       ["llama3.1:8b"], node=NodeState(1, "live"))
        dead = Backend("client:2", "dead", "ollama",
                       OllamaProvider(http, f"http://127.0.0.1:{closed_port()}", timeouts=FAST),
                       ["old:1b"], node=NodeState(2, "dead", latency_ms=3.0, healthy=True), discover=True)
        registry.add(live)
        registry.add(dead)
        before = datetime.now(UTC)
        await registry.check_all()
    assert live.node is not None and dead.node is not None
    assert live.node.healthy and live.node.latency_ms is not None and 0 < live.node.latency_ms < 1000
    assert not dead.node.healthy and dead.node.latency_ms is None
    assert dead.models == ["old:1b"]  # the last known list survives an outage
    for node in (live.node, dead.node):
        assert node.checked_at is not None and before <= node.checked_at <= datetime.now(UTC) + timedelta(seconds=1)
        assert node.checked_at.tzinfo is not None


async def test_discover_refreshes_models(http: Any) -> None:
    registry = Registry("echo:echo")
    async with FakeOllama(models=["a:1b", "b:7b"]) as fake:
        backend = Backend("ollama", "Ollama", "ollama", OllamaProvider(http, fake.base_url, timeouts=FAST), [],
                          node=NodeState(None, "local"), discover=True)
        registry.add(backend)
        await registry.check(backend)
        assert backend.models == ["a:1b", "b:7b"]
        assert registry.knows("ollama:b:7b")
        fake.models = ["c:3b"]
        await registry.check(backend)
    assert backend.models == ["c:3b"] and not registry.knows("ollama:b:7b")


async def test_http_error_marks_unhealthy(http: Any) -> None:
    registry = Registry("echo:echo")
    async with FakeOllama(fail_status=503) as fake:
        backend = Backend("client:3", "n", "ollama", OllamaProvider(http, fake.base_url, timeouts=FAST), ["m"],
                          node=NodeState(3, "n", healthy=True))
        await registry.check(backend)
    assert backend.node is not None and backend.node.healthy is False


async def test_check_is_bounded_by_its_timeout(http: Any) -> None:
    registry = Registry("echo:echo", check_timeout=0.2)
    slow = Timeouts(connect=5.0, first_token=30.0, idle=30.0, total=60.0)
    async with FakeOllama(model_delay=5.0) as fake:
        backend = Backend("client:4", "slow", "ollama", OllamaProvider(http, fake.base_url, timeouts=slow), ["m"],
                          node=NodeState(4, "slow", healthy=True))
        started = time.monotonic()
        await registry.check(backend)
        elapsed = time.monotonic() - started
    assert backend.node is not None and not backend.node.healthy and backend.node.checked_at is not None
    assert elapsed < 3.0  # the check's 0.2 s, not the endpoint's 5 s


async def test_a_cloud_backend_is_checked_and_keeps_its_configured_models(http: Any) -> None:
    registry = Registry("echo:echo")
    async with FakeOpenAI() as fake:
        backend = Backend("openai", "OpenAI", "openai", OpenAIProvider(http, fake.base_url, timeouts=FAST),
                          ["gpt-configured"])
        await registry.check(backend)
    assert backend.health is not None and backend.health.healthy and backend.health.latency_ms is not None
    assert backend.models == ["gpt-configured"] and backend.node is None
    dead = Backend("openai", "OpenAI", "openai",
                   OpenAIProvider(http, f"http://127.0.0.1:{closed_port()}/v1", timeouts=FAST), ["a"])
    await registry.check(dead)
    assert dead.health is not None and not dead.health.healthy and dead.health.checked_at is not None
