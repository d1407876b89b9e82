"""create_app(settings): the Starlette app; its lifespan builds every shared resource."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from providers.registry import Registry

from . import logs
from .api import Api, error_response
from .auth import Auth
from .broker import Broker, LocalBroker, RedisBroker
from .budgets import Budgets
from .completions import Completions
from .conversations import Conversations
from .errors import ChatError
from .hub import Hub
from .metrics import Metrics, gauge_from
from .node import Node
from .nodes import Nodes
from .openai_api import OpenAIApi, openai_error
from .periodic import Periodic
from .prefetch import Prefetcher
from .presence import RedisPresence
from .pricing import Pricing
from .ratelimit import Limits
from .replies import Replies
from .routing import Router, Rule
from .sessions import Sessions
from .settings import Settings
from .shared import Shared
from .stats import ModelStats
from .store import Store
from .turns import Turns
from .ws import SocketEndpoint

log = logging.getLogger("chat")
access = logging.getLogger("chat.access")

SCHEMA = Path(__file__).resolve().parent.parent / "schema.sql"
WEB = Path(__file__).resolve().parent.parent / "web"  # the browser client, served at /


class FrontDoor:
    """The outermost ASGI app. Paths work with and without a trailing slash (no redirect);
    /ws goes straight to the socket endpoint — no router, no middleware frames kept alive per
    socket, and its writes reach uvicorn's `send` unwrapped; /v1/ goes to the OpenAI-compatible
    app; HTTP requests are logged."""

    def __init__(self, app: Starlette, websocket: ASGIApp, openai: ASGIApp) -> None:
        self.app = app
        self.websocket = websocket
        self.openai = openai  # /v1/...: its own app, so its errors take OpenAI's shape

    @property
    def state(self) -> Any:
        return self.app.state

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not `async`: it hands back the chosen app's coroutine instead of wrapping it in another.
        kind = scope["type"]
        if kind == "lifespan":
            return self.app(scope, receive, send)
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
        if kind == "websocket":
            return (self.websocket if scope["path"] == "/ws" else self.app)(scope, receive, send)
        app = self.openai if scope["path"].startswith("/v1/") else self.app
        return self._http(app, scope, receive, send)

    async def _http(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        logs.about(request=secrets.token_hex(6))
        start = time.perf_counter()
        status = 500

        async def logged(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, logged)
        finally:
            # the path only: query strings may carry tokens
            access.info("http method=%s path=%s status=%s ms=%.1f", scope["method"], scope["path"], status,
                        (time.perf_counter() - start) * 1000)


def build_broker(settings: Settings, metrics: Metrics) -> Broker:
    if not settings.redis_url:
        return LocalBroker()
    return RedisBroker(settings.redis_url, on_lag=metrics.broker_lag.observe)


def create_app(settings: Settings) -> FrontDoor:
    api = Api(settings)
    endpoint = SocketEndpoint(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        """Builds every shared resource, hands the Node to the transports (as lifespan state,
        which Starlette and uvicorn put in every request's and socket's scope), and closes them."""
        if not settings.database_url:
            raise RuntimeError("settings.database_url is required (run.py starts an embedded database)")
        store = await Store.connect(settings.database_url, min_size=settings.pool_min_size,
                                    max_size=settings.pool_max_size, deadline=settings.db_timeout)
        version = await store.apply_schema(SCHEMA.read_text())
        interrupted = await store.messages.mark_interrupted(settings.node_id)
        await store.completions.interrupt(owner_node=settings.node_id)
        log.info("schema version %s; %s interrupted replies marked", version, interrupted)
        # No connection cap here: each backend's concurrency is bounded by its own semaphore.
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=0))
        registry = Registry(settings.default_model, default_concurrency=settings.provider_concurrency)
        pricing = Pricing({p.id: p.prices for p in settings.providers if p.prices})
        prices_loaded = asyncio.get_running_loop().run_in_executor(None, pricing.load)  # awaited before serving
        stats = ModelStats(store)
        policies = {name: tuple(Rule(**{**r, "models": tuple(r.get("models", ()))}) for r in rules)
                    for name, rules in settings.routing.items()}
        router = Router(registry, policies, ttft=lambda model: (stats.get(model) or {}).get("ttft_p50_ms"),
                        price=lambda backend, kind, name: pricing.cost(backend, kind, name, 1000, 1000))
        metrics = Metrics()
        broker = build_broker(settings, metrics)
        # With Redis, presence, connection counts and rate limits are shared by every process;
        # alone, each stays in this process's memory.
        shared = Shared(broker.redis) if isinstance(broker, RedisBroker) else None
        presence = RedisPresence(shared, settings.presence_refresh_interval) if shared else None
        hub = Hub(broker, store.messages.replay, settings.replay_cap, presence=presence)
        sessions = Sessions(settings.ws_max_connections_per_user, hub.by_user, shared,
                            settings.presence_refresh_interval)
        budgets = Budgets(store, hub, router, pricing, metrics, settings)
        replies = Replies(store, hub, router, pricing, metrics, settings)
        turns = Turns(store, hub, router, settings, replies, metrics, budgets,
                      Prefetcher(router, budgets, broker, metrics, settings))
        nodes = Nodes(store, registry, session, settings)
        completions = Completions(store, router, budgets, pricing, metrics, settings)
        node = Node(settings, store, Auth(store, settings.token_ttl_seconds, settings.auth_cache_seconds), hub, router,
                    Conversations(store, hub, router, settings), turns, registry, nodes, stats, metrics,
                    budgets, completions, Limits.build(settings, shared), sessions)
        gauge_from(metrics.connections, lambda: len(hub.connections()))
        gauge_from(metrics.subscriptions, hub.subscription_count)
        gauge_from(metrics.pool_in_use, lambda: store.db.pool.get_size() - store.db.pool.get_idle_size())
        metrics.count_from("chat_server_frames_delivered", "Frames handed to connections.", lambda: hub.delivered)
        metrics.count_from("chat_ai_deltas_received", "Text deltas received from providers.", lambda: turns.received)
        await nodes.load()
        if not registry.knows(settings.default_model):
            raise RuntimeError(f"DEFAULT_MODEL {settings.default_model!r} is not served by any provider")
        await hub.start()
        if presence is not None:
            presence.start()
        await budgets.refresh()
        background = [
            Periodic("node checks", settings.node_check_interval, nodes.check_round),
            Periodic("model stats", settings.node_check_interval, stats.refresh),
            Periodic("budget sweep", settings.budget_refresh_interval, budgets.sweep),
            Periodic("heartbeat", settings.heartbeat_interval, replies.heartbeat),
            Periodic("token checks", settings.ws_token_check_interval, node.check_tokens,
                     delay=settings.ws_token_check_interval),
        ]
        if shared is not None:
            async def refresh_shared() -> None:
                await shared.probe()
                await hub.presence.refresh()
                await sessions.refresh()

            background.append(Periodic("shared state", settings.presence_refresh_interval, refresh_shared,
                                       delay=settings.presence_refresh_interval))
        await prices_loaded
        for job in background:
            job.start()
        try:
            yield {"node": node}
        finally:
            endpoint.close_all()
            for job in background:
                await job.close()
            await turns.close()
            await completions.close()
            await replies.close()
            if presence is not None:
                await presence.close()
            await sessions.close()
            await hub.close()
            await session.close()
            await store.close()

    # Browsers' pages on other origins may call the API: bearer tokens, no cookies, so allowing
    # the configured origins (any, when none are configured) exposes nothing ambient.
    cors = Middleware(CORSMiddleware, allow_origins=list(settings.ws_allowed_origins) or ["*"],
                      allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                      # Any request header: the OpenAI SDKs send their own (x-stainless-*), and
                      # with bearer tokens and no cookies a header grants nothing by itself.
                      allow_headers=["*"], max_age=600,
                      expose_headers=["x-chat-model", "x-chat-tier", "x-chat-route-reason", "x-chat-fallback-from",
                                      "retry-after"])
    app = Starlette(
        routes=[*api.routes(), *([Mount("/", StaticFiles(directory=WEB, html=True))] if WEB.is_dir() else [])],
        middleware=[cors],
        # Every exception goes to the one function that answers in the contract's error body.
        exception_handlers={error: error_response for error in (ChatError, HTTPException, Exception)},
        lifespan=lifespan,
    )
    app.state.endpoint = endpoint  # the server's shutdown closes its sockets with 1001
    openai = Starlette(routes=OpenAIApi(settings).routes(), middleware=[cors],
                       exception_handlers={error: openai_error for error in (ChatError, HTTPException, Exception)})
    return FrontDoor(app, endpoint, openai)
