"""Building a backend from a provider kind and a URL: the one place that knows every provider class."""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp

from providers.anthropic import AnthropicProvider
from providers.base import Provider, Timeouts
from providers.echo import EchoProvider
from providers.ollama import OllamaProvider
from providers.openai import OpenAIProvider
from providers.registry import Backend, NodeState, node_backend_id

KINDS = ("openai", "anthropic", "ollama", "echo")
DEFAULT_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "ollama": "http://127.0.0.1:11434",
}


def provider(kind: str, session: aiohttp.ClientSession, base_url: str | None, api_key: str | None,
             models: tuple[str, ...], timeouts: Timeouts) -> Provider:
    """One provider instance for an HTTP kind; ValueError for a kind we don't speak."""
    url = base_url or DEFAULT_URLS.get(kind, "")
    if kind == "openai":
        return OpenAIProvider(session, url, api_key=api_key, models=models, timeouts=timeouts)
    if kind == "anthropic":
        return AnthropicProvider(session, url, api_key=api_key or "", models=models, timeouts=timeouts)
    if kind == "ollama":
        return OllamaProvider(session, url, timeouts=timeouts)
    raise ValueError(f"unknown provider kind {kind!r}")


def echo_backend(backend_id: str, label: str, delay: float, concurrency: int = 0) -> Backend:
    return Backend(backend_id, label, "echo", EchoProvider(delay=delay), ["echo"], concurrency=concurrency)


def configured_backend(backend_id: str, kind: str, label: str, session: aiohttp.ClientSession, *,
                       base_url: str | None, api_key: str | None, models: tuple[str, ...],
                       timeouts: Timeouts, concurrency: int = 0) -> Backend:
    """A provider from the server's configuration. An Ollama URL is a node named after its host;
    a provider configured without a model list discovers its models."""
    made = provider(kind, session, base_url, api_key, models, timeouts)
    node = NodeState(None, urlsplit(base_url or "").hostname or label) if kind == "ollama" else None
    return Backend(backend_id, label, kind, made, list(models), node=node,
                   discover=kind == "ollama" or not models, concurrency=concurrency)


def registered_node(node_id: int, name: str, kind: str, session: aiohttp.ClientSession, *,
                    base_url: str, api_key: str | None, timeouts: Timeouts, concurrency: int = 0) -> Backend:
    """A machine an admin registered: its models are whatever it lists."""
    made = provider(kind, session, base_url, api_key, (), timeouts)
    return Backend(node_backend_id(node_id), name, kind, made, [], node=NodeState(node_id, name),
                   discover=True, concurrency=concurrency)
