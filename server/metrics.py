"""Metrics: what an operator scrapes from GET /metrics, through prometheus-client.

One registry per app (no module globals). The hottest counts — frames delivered, tokens
relayed — are plain integers the hub and the turns already bump, read only when scraped
(a custom collector), so fan-out and token relay pay nothing for them. Label values are
bounded: model ids (from the registry), error codes, close reasons, statuses; never users.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

# The close codes a server sends, by what they mean.
CLOSE_REASONS = {1000: "normal", 1001: "going_away", 1008: "policy", 1009: "too_big", 1013: "slow",
                 4401: "unauthorized", 4403: "forbidden"}
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _Counted(Collector):
    """Counters kept as plain integers elsewhere, turned into metrics at scrape time."""

    def __init__(self, sources: dict[str, tuple[str, Callable[[], float]]]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, (doc, read) in self.sources.items():
            yield CounterMetricFamily(name, doc, value=read())


class Metrics:
    """The app's metrics; `render()` is the scrape body."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge("chat_server_num_clients", "Open WebSocket connections.", registry=registry)
        self.subscriptions = Gauge("chat_server_num_subscriptions", "Live conversation subscriptions.",
                                   registry=registry)
        self.pool_in_use = Gauge("chat_db_pool_connections_in_use", "Database connections checked out.",
                                 registry=registry)
        self.messages_stored = Counter("chat_server_messages_stored", "User messages stored.", registry=registry)
        self.store_seconds = Histogram("chat_server_message_store_seconds", "Time to store a user message.",
                                       buckets=_LATENCY, registry=registry)
        self.disconnects = Counter("chat_server_disconnects", "Sockets the server closed, by reason.",
                                   ["reason"], registry=registry)
        self.errors = Counter("chat_server_errors", "Errors answered to clients, by contract code.",
                              ["code", "transport"], registry=registry)
        self.turns = Counter("chat_ai_turns", "AI turns ended, by model and final status.", ["model", "status"],
                             registry=registry)
        self.tokens = Counter("chat_ai_tokens", "Tokens used by AI turns.", ["model", "direction"],
                              registry=registry)
        self.cost = Counter("chat_ai_cost_usd", "What AI turns cost, in USD.", ["model"], registry=registry)
        self.provider_errors = Counter("chat_ai_provider_errors", "Provider failures, by model and kind.",
                                       ["model", "kind"], registry=registry)
        self.time_to_first_token = Histogram("chat_ai_time_to_first_token_seconds",
                                             "Provider request to first token.", ["model"], buckets=_LATENCY,
                                             registry=registry)
        self.turn_seconds = Histogram("chat_ai_turn_duration_seconds", "Provider request to the end of a turn.",
                                      ["model"], buckets=_LATENCY, registry=registry)
        self.broker_lag = Histogram("chat_broker_publish_to_deliver_seconds",
                                    "Lag of events from another server process, publish to delivery.",
                                    buckets=_LATENCY, registry=registry)
        self.budget_warnings = Counter("chat_budget_warnings", "Budget warnings sent, by scope.", ["scope"],
                                       registry=registry)
        self.budget_refusals = Counter("chat_budget_refusals", "Turns refused over a budget, by scope.", ["scope"],
                                       registry=registry)
        self.prefetches = Counter("chat_ai_prefetches", "Provider requests sent ahead of a turn's history read "
                                  "(prefetch.py), by what became of them: used, missed (the prompt or model "
                                  "differed), unused (the turn ended first).", ["outcome"], registry=registry)
        self._counted: dict[str, tuple[str, Callable[[], float]]] = {}
        registry.register(_Counted(self._counted))

    def count_from(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A counter whose value another object keeps (read at scrape time)."""
        self._counted[name] = (doc, read)

    def closed(self, code: int) -> None:
        self.disconnects.labels(CLOSE_REASONS.get(code, "other")).inc()

    def turn_ended(self, model: str, status: str, prompt_tokens: int | None, completion_tokens: int | None,
                   cost_usd: Any, ttft_ms: float | None, seconds: float | None) -> None:
        """An AI turn (a chat reply or an API completion) ended: what it used, cost and took."""
        self.turns.labels(model, status).inc()
        if prompt_tokens is not None:
            self.tokens.labels(model, "prompt").inc(prompt_tokens)
            self.tokens.labels(model, "completion").inc(completion_tokens or 0)
        if cost_usd:
            self.cost.labels(model).inc(float(cost_usd))
        if ttft_ms is not None:
            self.time_to_first_token.labels(model).observe(ttft_ms / 1000)
        if seconds is not None:
            self.turn_seconds.labels(model).observe(seconds)

    def provider_failed(self, model: str, err: Exception) -> None:
        """ProviderTimeout -> kind "timeout": a short, bounded label."""
        kind = type(err).__name__.removeprefix("Provider").removesuffix("Error").lower()
        self.provider_errors.labels(model, kind or "other").inc()

    def error(self, code: str, transport: str) -> None:
        self.errors.labels(code, transport).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def gauge_from(gauge: Gauge, read: Callable[[], Any]) -> None:
    gauge.set_function(lambda: float(read()))
