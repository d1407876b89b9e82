"""Records' wire shapes: timestamps, and the GET /ai/models body built from the registry."""

from __future__ import annotations

import asyncio
import inspect
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from providers.base import Timeouts
from providers.ollama import OllamaProvider
from providers.echo import EchoProvider
from providers.registry import Backend, Health, NodeState, Registry
from server.records import catalog_wire, rfc3339
from tests.fakes import FakeOllama
from tests.test_providers_registry import make_registry

FAST = Timeouts(connect=1.0, first_token=1.0, idle=1.0, total=5.0)


def test_rfc3339_is_utc_with_milliseconds_and_a_z() -> None:
    moment = datetime(2025, 1, 2, 5, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    assert rfc3339(moment) == "2025-01-02T03:04:05.678Z"
    assert rfc3339(None) is None


def test_catalog_lists_providers_with_node_health_and_models() -> None:
    registry = make_registry()
    node = registry.resolve("client:1:llama3.1:8b")[0].node
    assert node is not None
    node.healthy, node.latency_ms = True, 12.345
    node.checked_at = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert catalog_wire(registry) == {
        "default_model_id": "echo:echo",
        "providers": [
            {"id": "echo", "label": "Echo", "kind": "echo", "node": None, "health": None,
             "models": [{"id": "echo:echo", "name": "echo", "available": True, "stats": None}]},
            {"id": "client:1", "label": "Mac Studio", "kind": "ollama",
             "node": {"id": 1, "name": "Mac Studio", "latency_ms": 12.3, "healthy": True,
                      "checked_at": "2025-01-02T03:04:05.678Z"}, "health": None,
             "models": [{"id": "client:1:llama3.1:8b", "name": "llama3.1:8b", "available": True, "stats": None}]},
        ],
    }


def test_a_cloud_provider_shows_its_last_check_and_keeps_its_models_available() -> None:
    registry = make_registry()
    cloud = Backend("openai", "OpenAI", "openai", EchoProvider(delay=0), ["gpt-a"],
                    health=Health(latency_ms=None, healthy=False, checked_at=datetime(2025, 1, 2, tzinfo=UTC)))
    registry.add(cloud)
    entry = catalog_wire(registry)["providers"][2]
    assert entry["node"] is None
    assert entry["health"] == {"healthy": False, "latency_ms": None, "checked_at": "2025-01-02T00:00:00.000Z"}
    assert entry["models"] == [{"id": "openai:gpt-a", "name": "gpt-a", "available": True, "stats": None}]


def test_catalog_shows_an_unchecked_nodes_models_unavailable() -> None:
    registry = make_registry()
    client = catalog_wire(registry)["providers"][1]
    assert client["node"] == {"id": 1, "name": "Mac Studio", "latency_ms": None, "healthy": False,
                              "checked_at": None}
    assert client["models"][0]["available"] is False
    assert client["models"][0]["reason"] == "Mac Studio has not answered a health check yet"


async def test_catalog_never_waits_for_a_check_in_progress(http: Any) -> None:
    assert not inspect.iscoroutinefunction(catalog_wire)
    registry = Registry("echo:echo", check_timeout=5.0)
    async with FakeOllama(model_delay=5.0) as fake:
        backend = Backend("client:5", "slow", "ollama", OllamaProvider(http, fake.base_url, timeouts=FAST), ["m"],
                          node=NodeState(5, "slow"))
        registry.add(backend)
        check = asyncio.create_task(registry.check_all())
        await asyncio.sleep(0.05)
        snap = catalog_wire(registry)
        assert not check.done()
        check.cancel()
        with pytest.raises(asyncio.CancelledError):
            await check
    assert snap["providers"][0]["node"]["checked_at"] is None
