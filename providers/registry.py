"""Model ids -> providers and nodes, with the health the server last saw."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime

from providers.base import Provider, ProviderError

log = logging.getLogger(__name__)

MAX_MODEL_ID = 200
NODE_PROVIDER = "client"  # the one provider whose ids carry a node: client:<node>:<model>
NODE_KINDS = ("ollama", "openai")  # the provider kinds an admin may register as a node
_PROVIDER = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def node_backend_id(node_id: int) -> str:
    """The backend id of a registered node: its models are `client:<node id>:<model>`."""
    return f"{NODE_PROVIDER}:{node_id}"


def is_node_backend(backend_id: str) -> bool:
    return backend_id.startswith(NODE_PROVIDER + ":")


@dataclass(frozen=True, slots=True)
class ModelId:
    """A parsed model id; `node` is set only for `client:<node>:<model>`."""

    provider: str
    node: str | None
    model: str

    def __str__(self) -> str:
        if self.node is None:
            return f"{self.provider}:{self.model}"
        return f"{self.provider}:{self.node}:{self.model}"

    @property
    def backend_id(self) -> str:
        """The id of the Backend that serves this model ("openai", "client:1")."""
        return self.provider if self.node is None else f"{self.provider}:{self.node}"


def parse_model_id(model_id: str) -> ModelId:
    """Split on the first colon (two for "client"); the model part keeps any further colons."""
    if not isinstance(model_id, str) or not model_id:
        raise ValueError("model id must be a non-empty string")
    if len(model_id) > MAX_MODEL_ID:
        raise ValueError(f"model id longer than {MAX_MODEL_ID} characters")
    if any(c.isspace() or unicodedata.category(c)[0] == "C" for c in model_id):
        raise ValueError("model id contains whitespace or control characters")
    provider, sep, rest = model_id.partition(":")
    if not sep:
        raise ValueError("model id must look like <provider>:<model>")
    if not _PROVIDER.fullmatch(provider):
        raise ValueError(f"bad provider {provider!r} in model id")
    node: str | None = None
    if provider == NODE_PROVIDER:
        node, sep, rest = rest.partition(":")
        if not sep or not node:
            raise ValueError("client model id must look like client:<node>:<model>")
    if not rest:
        raise ValueError("model id has an empty model part")
    return ModelId(provider, node, rest)


@dataclass(slots=True)
class NodeState:
    """Health of one backend machine."""

    id: int | None
    name: str
    latency_ms: float | None = None
    healthy: bool = False
    checked_at: datetime | None = None


@dataclass(slots=True)
class Health:
    """What the last check of a provider that is not a node saw (nodes keep theirs in NodeState)."""

    latency_ms: float | None = None
    healthy: bool = False
    checked_at: datetime | None = None


@dataclass(slots=True)
class Backend:
    """One entry under GET /ai/models."""

    id: str  # "openai", "anthropic", "ollama", "echo", or "client:<node id>" for DB nodes
    label: str
    kind: str  # provider kind
    provider: Provider
    models: list[str] = field(default_factory=list)  # model names (not ids)
    node: NodeState | None = None  # set for nodes; None for cloud APIs and echo
    discover: bool = False  # refresh `models` from provider.list_models() on each check
    health: Health | None = None  # set by the checks, for every HTTP provider that is not a node
    concurrency: int = 0  # turns streaming from it at once; 0: the registry's default
    limit: asyncio.Semaphore | None = field(default=None, repr=False)  # made by Registry.add


class ModelNotServed(LookupError):
    """No backend serves this model id (the server maps it to its `unknown_model` error)."""

    def __init__(self, model_id: str, reason: str) -> None:
        super().__init__(model_id)
        self.model_id = model_id
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason}: {self.model_id}"


class Registry:
    """Every backend the server can route to; checks are explicit so reads never wait."""

    def __init__(self, default_model_id: str, *, check_timeout: float = 10.0,
                 default_concurrency: int = 64) -> None:
        self.default_model_id = default_model_id
        self.check_timeout = check_timeout
        self.default_concurrency = default_concurrency
        self._backends: dict[str, Backend] = {}

    def add(self, backend: Backend) -> None:
        """Add, or replace the backend with the same id (a replacement keeps the old one's queue)."""
        old = self._backends.get(backend.id)
        if backend.limit is None:
            backend.limit = old.limit if old is not None and old.limit is not None else \
                asyncio.Semaphore(backend.concurrency or self.default_concurrency)
        self._backends[backend.id] = backend

    def remove(self, backend_id: str) -> Backend | None:
        """Forget a backend; returns it if it was there."""
        return self._backends.pop(backend_id, None)

    def backends(self) -> list[Backend]:
        """All backends, in the order they were first added."""
        return list(self._backends.values())

    def get(self, backend_id: str) -> Backend | None:
        """The backend with this id, if any."""
        return self._backends.get(backend_id)

    def resolve(self, model_id: str) -> tuple[Backend, str]:
        """(backend, model name) for a model id; raises ModelNotServed."""
        try:
            parsed = parse_model_id(model_id)
        except ValueError as exc:
            raise ModelNotServed(model_id, f"malformed model id ({exc})") from None
        backend = self._backends.get(parsed.backend_id)
        if backend is None:
            raise ModelNotServed(model_id, f"no provider {parsed.backend_id!r}")
        if parsed.model not in backend.models:
            raise ModelNotServed(model_id, f"{parsed.backend_id!r} has no model {parsed.model!r}")
        return backend, parsed.model

    def knows(self, model_id: str) -> bool:
        """True when resolve() would succeed."""
        try:
            self.resolve(model_id)
        except ModelNotServed:
            return False
        return True

    async def check(self, backend: Backend) -> None:
        """Refresh a backend's health and (if discover) its models; never raises. Every HTTP
        provider is checked; a discovering one's model list is its health check."""
        if backend.kind == "echo" and backend.node is None:
            return
        started = time.perf_counter()
        latency: float | None = None
        ok = True
        try:
            async with asyncio.timeout(self.check_timeout):
                if backend.discover:
                    backend.models = list(await backend.provider.list_models())
                    latency = (time.perf_counter() - started) * 1000.0
                else:
                    latency = await backend.provider.health()
        except ProviderError as exc:
            ok = False
            log.info("backend %s unhealthy: %s", backend.id, exc)
        except TimeoutError:
            ok = False
            log.info("backend %s check timed out after %.1fs", backend.id, time.perf_counter() - started)
        except Exception:  # noqa: BLE001 - a check runs on a schedule; one bad backend must not stop it
            ok = False
            log.exception("backend %s check failed", backend.id)
        state: NodeState | Health
        if backend.node is not None:
            state = backend.node
        else:
            state = backend.health = backend.health or Health()
        state.healthy = ok
        state.latency_ms = latency if ok else None
        state.checked_at = datetime.now(UTC)

    async def check_all(self) -> None:
        """Check every backend concurrently; never raises."""
        await asyncio.gather(*(self.check(b) for b in self.backends()), return_exceptions=True)
