"""Nodes: building the model registry from settings and stored AI nodes, and checking their health."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from providers.anthropic import AnthropicProvider
from providers.base import Provider, Timeouts
from providers.echo import EchoProvider
from providers.ollama import OllamaProvider
from providers.openai import OpenAIProvider
from providers.registry import Backend, NodeState, Registry

from . import inputs
from .errors import Invalid
from .records import Node, User
from .settings import ProviderConfig, Settings
from .store import Store

log = logging.getLogger("chat.nodes")


def timeouts(settings: Settings) -> Timeouts:
    return Timeouts(connect=settings.provider_timeout_connect, first_token=settings.provider_timeout_first_token,
                    idle=settings.provider_timeout_idle, total=settings.provider_timeout_total)


def provider_for(kind: str, session: aiohttp.ClientSession, base_url: str | None, api_key: str | None,
                 models: tuple[str, ...], t: Timeouts) -> Provider:
    if kind == "openai":
        return OpenAIProvider(session, base_url or "https://api.openai.com/v1", api_key=api_key, models=models,
                              timeouts=t)
    if kind == "anthropic":
        return AnthropicProvider(session, base_url or "https://api.anthropic.com", api_key=api_key or "",
                                 models=models, timeouts=t)
    if kind == "ollama":
        return OllamaProvider(session, base_url or "http://127.0.0.1:11434", timeouts=t)
    raise ValueError(f"unknown provider kind {kind!r}")


def configured_backend(cfg: ProviderConfig, session: aiohttp.ClientSession, settings: Settings) -> Backend:
    """A provider from chat.toml or the environment; an Ollama URL is a node named after its host."""
    if cfg.kind == "echo":
        return Backend(cfg.id, cfg.label, "echo", EchoProvider(delay=settings.echo_delay), ["echo"])
    provider = provider_for(cfg.kind, session, cfg.base_url, cfg.api_key, cfg.models, timeouts(settings))
    node = NodeState(None, urlsplit(cfg.base_url or "").hostname or cfg.label) if cfg.kind == "ollama" else None
    return Backend(cfg.id, cfg.label, cfg.kind, provider, list(cfg.models), node=node,
                   discover=cfg.kind == "ollama" or not cfg.models)


def node_backend(node: Node, session: aiohttp.ClientSession, settings: Settings) -> Backend:
    """A machine registered through POST /ai/nodes: its models are whatever it lists."""
    provider = provider_for(node.kind, session, node.base_url, node.api_key, (), timeouts(settings))
    return Backend(f"client:{node.id}", node.name, node.kind, provider, [],
                   node=NodeState(node.id, node.name), discover=True)


class Nodes:
    """The registry's contents over time: configured providers, stored nodes, periodic checks."""

    def __init__(self, store: Store, registry: Registry, session: aiohttp.ClientSession,
                 settings: Settings) -> None:
        self.store = store
        self.registry = registry
        self.session = session
        self.settings = settings
        self._task: asyncio.Task[None] | None = None

    async def load(self) -> None:
        if not any(c.kind == "echo" for c in self.settings.providers):
            self.registry.add(configured_backend(ProviderConfig("echo", "echo", "Echo (built-in)"),
                                                 self.session, self.settings))
        for cfg in self.settings.providers:
            self.registry.add(configured_backend(cfg, self.session, self.settings))
        await self.sync()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._checks(), name="node-checks")

    async def _checks(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception:
                log.exception("reading AI nodes failed")
            await self.registry.check_all()
            await asyncio.sleep(self.settings.node_check_interval)

    async def sync(self) -> None:
        """Pick up nodes other servers registered or removed."""
        stored = {f"client:{n.id}": n for n in await self.store.nodes()}
        for backend in self.registry.backends():
            if backend.id.startswith("client:") and backend.id not in stored:
                self.registry.remove(backend.id)
        for bid, node in stored.items():
            if self.registry.get(bid) is None:
                self.registry.add(node_backend(node, self.session, self.settings))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def list(self) -> list[dict[str, Any]]:
        out = []
        for node in await self.store.nodes():
            backend = self.registry.get(f"client:{node.id}")
            state = backend.node if backend else None
            out.append({**node.wire(), "latency_ms": state.latency_ms if state else None,
                        "healthy": state.healthy if state else False,
                        "models": [f"client:{node.id}:{m}" for m in backend.models] if backend else []})
        return out

    async def create(self, user: User, body: dict[str, Any]) -> dict[str, Any]:
        name = inputs.text(body, "name", max_chars=64, strip=True)
        kind = body.get("kind")
        if kind not in ("ollama", "openai"):
            raise Invalid("kind", "kind must be 'ollama' or 'openai'")
        base_url = inputs.text(body, "base_url", max_chars=500, strip=True)
        parts = urlsplit(base_url)  # type: ignore[arg-type]
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Invalid("base_url", "base_url must be an http(s) URL")
        api_key = inputs.text(body, "api_key", max_chars=500, required=False)
        node = await self.store.create_node(name, kind, base_url.rstrip("/"), api_key, user.id)  # type: ignore
        backend = node_backend(node, self.session, self.settings)
        self.registry.add(backend)
        await self.registry.check(backend)  # bounded by the registry's check timeout
        return (await self._one(node.id)) or node.wire()

    async def _one(self, node_id: int) -> dict[str, Any] | None:
        return next((n for n in await self.list() if n["id"] == node_id), None)

    async def delete(self, node_id: int) -> bool:
        self.registry.remove(f"client:{node_id}")
        return await self.store.delete_node(node_id)
