"""Nodes: the registry's contents over time: configured providers, stored AI nodes, periodic checks."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from providers import factory
from providers.base import Timeouts
from providers.registry import Backend, Registry, is_node_backend, node_backend_id

from .inputs import NewNode
from .records import AINode, User, latency
from .settings import ProviderConfig, Settings
from .store import Store

log = logging.getLogger("chat.nodes")


class Nodes:
    """Builds backends from settings and from the database, keeps them in sync, checks their health."""

    def __init__(self, store: Store, registry: Registry, session: aiohttp.ClientSession,
                 settings: Settings) -> None:
        self.store = store
        self.registry = registry
        self.session = session
        self.settings = settings
        self.timeouts = Timeouts(connect=settings.provider_timeout_connect,
                                 first_token=settings.provider_timeout_first_token,
                                 idle=settings.provider_timeout_idle, total=settings.provider_timeout_total)

    async def load(self) -> None:
        """Configured providers (the built-in echo unless configured otherwise), then stored nodes."""
        configs = self.settings.providers
        if not any(c.kind == "echo" for c in configs):
            configs = (ProviderConfig("echo", "echo", "Echo (built-in)"), *configs)
        for cfg in configs:
            self.registry.add(self._configured(cfg))
        await self.sync()

    def _configured(self, cfg: ProviderConfig) -> Backend:
        if cfg.kind == "echo":
            return factory.echo_backend(cfg.id, cfg.label, self.settings.echo_delay, cfg.concurrency)
        return factory.configured_backend(cfg.id, cfg.kind, cfg.label, self.session, base_url=cfg.base_url,
                                          api_key=cfg.api_key, models=cfg.models, timeouts=self.timeouts,
                                          concurrency=cfg.concurrency)

    def _registered(self, node: AINode) -> Backend:
        return factory.registered_node(node.id, node.name, node.kind, self.session, base_url=node.base_url,
                                       api_key=node.api_key, timeouts=self.timeouts)

    async def check_round(self) -> None:
        """Pick up nodes registered elsewhere, then check every backend (run periodically)."""
        try:
            await self.sync()
        finally:
            await self.registry.check_all()

    async def sync(self) -> None:
        """Pick up nodes other servers registered or removed."""
        stored = {node_backend_id(n.id): n for n in await self.store.nodes()}
        for backend in self.registry.backends():
            if is_node_backend(backend.id) and backend.id not in stored:
                self.registry.remove(backend.id)
        for bid, node in stored.items():
            if self.registry.get(bid) is None:
                self.registry.add(self._registered(node))

    async def list(self, user: User) -> list[dict[str, Any]]:
        return [self._wire(node, user.is_admin) for node in await self.store.nodes()]

    def _wire(self, node: AINode, admin: bool) -> dict[str, Any]:
        backend = self.registry.get(node_backend_id(node.id))
        state = backend.node if backend else None
        return {**node.wire(admin), "latency_ms": latency(state.latency_ms) if state else None,
                "healthy": state.healthy if state else False,
                "models": [f"{backend.id}:{m}" for m in backend.models] if backend else []}

    async def create(self, user: User, new: NewNode) -> dict[str, Any]:
        node = await self.store.create_node(new.name, new.kind, new.base_url, new.api_key, user.id)
        backend = self._registered(node)
        self.registry.add(backend)
        await self.registry.check(backend)  # bounded by the registry's check timeout
        return self._wire(node, user.is_admin)

    async def delete(self, node_id: int) -> bool:
        self.registry.remove(node_backend_id(node_id))
        return await self.store.delete_node(node_id)
