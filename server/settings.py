"""Settings: the frozen configuration, and the only place that reads the environment."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One configured AI provider (from chat.toml or the environment)."""

    id: str
    kind: str  # "openai" | "anthropic" | "ollama" | "echo"
    label: str
    base_url: str | None = None
    api_key: str | None = None
    models: tuple[str, ...] = ()
    concurrency: int = 0  # 0: the server's provider_concurrency
    prices: dict[str, Any] = field(default_factory=dict, hash=False)  # USD per million tokens (see pricing.py)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server can be told; built once by `load_settings`."""

    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str | None = None
    data_dir: Path = Path("data")
    config_path: Path | None = None
    log_level: str = "info"
    redis_url: str | None = None
    node_id: str = ""
    metrics_token: str | None = None  # who may read GET /metrics: this bearer token, or (unset) loopback only
    log_format: str = "plain"  # or "json": one object per line
    workers: int = 1  # server processes on the port (run.py); more than one needs Redis
    worker_index: int | None = None  # set by run.py's parent in each of its workers

    # HTTP limits
    max_body_bytes: int = 256 * 1024
    max_content_chars: int = 16_000
    max_title_chars: int = 200
    max_display_name_chars: int = 64
    max_participants: int = 100
    max_client_id_chars: int = 64
    token_ttl_seconds: int = 30 * 24 * 3600
    auth_cache_seconds: float = 2.0  # a token revoked on another server still works here for up to this
    auth_rate_per_second: float = 1.0
    auth_rate_burst: int = 20
    send_rate_per_second: float = 10.0  # message sends per user, over all their sockets and REST
    send_rate_burst: int = 60
    pool_min_size: int = 2
    pool_max_size: int = 10
    db_timeout: float = 3.0  # every database call answers within this, or `unavailable`
    # An idle HTTP connection is closed after this. Above a load balancer's idle timeout (AWS ALB: 60 s)
    # so the balancer never sends a request down a connection this server is closing (a reset, a 502).
    http_keep_alive: float = 65.0

    # WebSocket limits
    ws_max_frame_bytes: int = 64 * 1024
    ws_queue_frames: int = 1024
    ws_auth_timeout: float = 10.0
    ws_rate_per_second: float = 20.0
    ws_rate_burst: int = 60
    ws_rate_strikes: int = 20
    ws_typing_per_second: float = 2.0
    ws_max_subscriptions: int = 200
    ws_max_connections_per_user: int = 20
    ws_ping_interval: float = 20.0
    ws_idle_timeout: float = 60.0
    ws_close_timeout: float = 2.0  # a closed client that takes no close frame is then dropped
    ws_token_check_interval: float = 30.0  # open sockets whose token was revoked elsewhere close within this
    ws_allowed_origins: tuple[str, ...] = ()
    presence_refresh_interval: float = 5.0  # shared presence and connection counts expire after 3 of these
    replay_cap: int = 500

    # AI
    default_model: str = "echo:echo"
    echo_delay: float = 0.02
    coalesce_ms: float = 15.0
    coalesce_growth: float = 4.0  # under load the window widens up to coalesce_ms x this (1: fixed)
    history_messages: int = 40
    history_chars: int = 24_000
    prefetch_conversations: int = 256  # conversations whose recent lines are kept to send turns ahead (prefetch.py)
    node_check_interval: float = 30.0
    provider_timeout_connect: float = 5.0
    provider_timeout_first_token: float = 60.0
    provider_timeout_idle: float = 60.0
    provider_timeout_total: float = 600.0
    provider_concurrency: int = 64
    heartbeat_interval: float = 5.0  # a server silent for 3 intervals has its replies marked interrupted
    budget_refresh_interval: float = 10.0  # a budget set on another server applies here within this
    reply_checkpoint_interval: float = 2.0  # a streaming reply's text is stored this often (crash loss bound)
    ai_max_tokens: int | None = None  # a reply's length limit sent to providers (None: theirs)
    ai_temperature: float | None = None  # sampling temperature sent to providers (None: theirs)
    providers: tuple[ProviderConfig, ...] = field(default_factory=tuple)
    aliases: dict[str, str] = field(default_factory=dict, hash=False)  # @alias -> model id (chat.toml [aliases])
    max_instructions_chars: int = 4000
    templates: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)  # chat.toml [templates.<name>]
    routing: dict[str, list[dict[str, Any]]] = field(default_factory=dict, hash=False)  # [[routing.<policy>]] rules

    # OpenAI-compatible endpoint (/v1): a request carries its whole prompt
    api_max_body_bytes: int = 4 * 1024 * 1024
    api_max_messages: int = 1000
    api_max_prompt_chars: int = 1_000_000
    api_max_concurrent_per_user: int = 32
    api_stall_timeout: float = 10.0  # a /v1 stream whose client takes nothing for this long is ended

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


# name -> (environment variable, type). Flags override env, env overrides chat.toml.
ENV: dict[str, tuple[str, type]] = {
    "host": ("CHAT_HOST", str),
    "port": ("CHAT_PORT", int),
    "database_url": ("DATABASE_URL", str),
    "data_dir": ("CHAT_DATA_DIR", Path),
    "config_path": ("CHAT_CONFIG", Path),
    "log_level": ("CHAT_LOG_LEVEL", str),
    "redis_url": ("REDIS_URL", str),
    "node_id": ("CHAT_NODE_ID", str),
    "metrics_token": ("CHAT_METRICS_TOKEN", str),
    "log_format": ("CHAT_LOG_FORMAT", str),
    "workers": ("CHAT_WORKERS", int),
    "worker_index": ("CHAT_WORKER_INDEX", int),
    "max_body_bytes": ("CHAT_MAX_BODY_BYTES", int),
    "max_content_chars": ("CHAT_MAX_CONTENT_CHARS", int),
    "max_participants": ("CHAT_MAX_PARTICIPANTS", int),
    "token_ttl_seconds": ("CHAT_TOKEN_TTL_SECONDS", int),
    "auth_cache_seconds": ("CHAT_AUTH_CACHE_SECONDS", float),
    "auth_rate_per_second": ("CHAT_AUTH_RATE_PER_SECOND", float),
    "auth_rate_burst": ("CHAT_AUTH_RATE_BURST", int),
    "send_rate_per_second": ("CHAT_SEND_RATE_PER_SECOND", float),
    "send_rate_burst": ("CHAT_SEND_RATE_BURST", int),
    "presence_refresh_interval": ("CHAT_PRESENCE_REFRESH_INTERVAL", float),
    "ws_max_frame_bytes": ("CHAT_WS_MAX_FRAME_BYTES", int),
    "ws_queue_frames": ("CHAT_WS_QUEUE_FRAMES", int),
    "ws_rate_per_second": ("CHAT_WS_RATE_PER_SECOND", float),
    "ws_rate_burst": ("CHAT_WS_RATE_BURST", int),
    "ws_max_subscriptions": ("CHAT_WS_MAX_SUBSCRIPTIONS", int),
    "ws_max_connections_per_user": ("CHAT_WS_MAX_CONNECTIONS_PER_USER", int),
    "http_keep_alive": ("CHAT_HTTP_KEEP_ALIVE", float),
    "ws_ping_interval": ("CHAT_WS_PING_INTERVAL", float),
    "ws_idle_timeout": ("CHAT_WS_IDLE_TIMEOUT", float),
    "ws_close_timeout": ("CHAT_WS_CLOSE_TIMEOUT", float),
    "ws_token_check_interval": ("CHAT_WS_TOKEN_CHECK_INTERVAL", float),
    "ws_allowed_origins": ("CHAT_WS_ALLOWED_ORIGINS", tuple),
    "replay_cap": ("CHAT_REPLAY_CAP", int),
    "default_model": ("DEFAULT_MODEL", str),
    "echo_delay": ("CHAT_ECHO_DELAY", float),
    "coalesce_ms": ("CHAT_COALESCE_MS", float),
    "coalesce_growth": ("CHAT_COALESCE_GROWTH", float),
    "provider_concurrency": ("CHAT_PROVIDER_CONCURRENCY", int),
    "ai_max_tokens": ("CHAT_AI_MAX_TOKENS", int),
    "prefetch_conversations": ("CHAT_PREFETCH_CONVERSATIONS", int),
    "api_max_body_bytes": ("CHAT_API_MAX_BODY_BYTES", int),
    "api_max_messages": ("CHAT_API_MAX_MESSAGES", int),
    "api_max_prompt_chars": ("CHAT_API_MAX_PROMPT_CHARS", int),
    "api_max_concurrent_per_user": ("CHAT_API_MAX_CONCURRENT_PER_USER", int),
    "api_stall_timeout": ("CHAT_API_STALL_TIMEOUT", float),
    "reply_checkpoint_interval": ("CHAT_REPLY_CHECKPOINT_INTERVAL", float),
    "budget_refresh_interval": ("CHAT_BUDGET_REFRESH_INTERVAL", float),
    "heartbeat_interval": ("CHAT_HEARTBEAT_INTERVAL", float),
    "ai_temperature": ("CHAT_AI_TEMPERATURE", float),
    "pool_max_size": ("CHAT_POOL_MAX_SIZE", int),
    "db_timeout": ("CHAT_DB_TIMEOUT", float),
    "node_check_interval": ("CHAT_NODE_CHECK_INTERVAL", float),
}


def _convert(kind: type, value: Any) -> Any:
    if kind is tuple:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return tuple(value)
    if kind is Path:
        return Path(value)
    return kind(value)


def _providers(toml: Mapping[str, Any], env: Mapping[str, str]) -> tuple[ProviderConfig, ...]:
    """Providers from chat.toml's [providers.<id>] tables, then the well-known env keys."""
    found: dict[str, ProviderConfig] = {}
    for pid, table in (toml.get("providers") or {}).items():
        found[pid] = ProviderConfig(
            id=pid,
            kind=table.get("kind", pid),
            label=table.get("label", pid),
            base_url=table.get("base_url"),
            api_key=table.get("api_key") or (env.get(table["api_key_env"]) if "api_key_env" in table else None),
            models=tuple(table.get("models", ())),
            concurrency=int(table.get("concurrency", 0)),
            prices=dict(table.get("prices") or {}),
        )
    for pid, label, trigger, url_var, default_url, models_var, default_models in _ENV_PROVIDERS:
        if not any(env.get(var) for var in trigger):
            continue
        base = found.get(pid)
        found[pid] = ProviderConfig(
            id=pid,
            kind=pid,
            label=base.label if base else label,
            base_url=env.get(url_var) or (base.base_url if base else None) or default_url,
            api_key=env.get(f"{pid.upper()}_API_KEY") or (base.api_key if base else None),
            models=_env_models(env, models_var) or (base.models if base else default_models),
            concurrency=base.concurrency if base else 0,
            prices=base.prices if base else {},
        )
    return tuple(found.values())


# id, label, env vars that switch it on, URL var, default URL, models var, default models
_ENV_PROVIDERS = (
    ("openai", "OpenAI", ("OPENAI_API_KEY", "OPENAI_BASE_URL"), "OPENAI_BASE_URL", "https://api.openai.com/v1",
     "OPENAI_MODELS", ("gpt-4o-mini", "gpt-4o")),
    ("anthropic", "Anthropic", ("ANTHROPIC_API_KEY",), "ANTHROPIC_BASE_URL", "https://api.anthropic.com",
     "ANTHROPIC_MODELS", ("claude-sonnet-4", "claude-haiku-4")),
    ("ollama", "Ollama", ("OLLAMA_URL",), "OLLAMA_URL", "http://127.0.0.1:11434", "OLLAMA_MODELS", ()),
)


def _aliases(table: Mapping[str, Any], where: Any) -> dict[str, str]:
    """chat.toml's [aliases]: `claude = "anthropic:claude-sonnet-4"` lets `@claude` ask that model."""
    out: dict[str, str] = {}
    for name, model in table.items():
        key = str(name).lower()
        if not re.fullmatch(r"[a-z0-9_][a-z0-9_.-]{0,31}", key) or key == "ai" or not isinstance(model, str):
            raise ValueError(f"bad alias {name!r} = {model!r} in {where} (a name of a-z 0-9 _ . -, not 'ai', "
                             "for a model id)")
        out[key] = model
    return out


TEMPLATE_KEYS = frozenset({"label", "title", "title_prefix", "mode", "with_ai", "default_model_id", "ai_answers",
                           "instructions"})


def _templates(table: Mapping[str, Any], where: Any) -> dict[str, dict[str, Any]]:
    """chat.toml's [templates.<name>]: what a conversation created from it starts with."""
    out: dict[str, dict[str, Any]] = {}
    for name, t in table.items():
        unknown = set(t) - TEMPLATE_KEYS if isinstance(t, Mapping) else {"(not a table)"}
        if unknown or not re.fullmatch(r"[a-z0-9_][a-z0-9_.-]{0,63}", str(name)):
            raise ValueError(f"bad template {name!r} in {where}: unknown keys {sorted(unknown)}; "
                             f"known: {sorted(TEMPLATE_KEYS)}")
        out[str(name)] = dict(t)
    return out


RULE_KEYS = frozenset({"model", "models", "max_ttft_ms", "reason", "contains_code", "min_chars", "max_chars",
                       "pattern"})


def _routing(table: Mapping[str, Any], where: Any) -> dict[str, list[dict[str, Any]]]:
    """chat.toml's [[routing.<policy>]] tables: ordered rules for the model id `auto:<policy>`
    (`auto` alone is the policy named `default`)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, rules in table.items():
        if not isinstance(rules, list) or not rules:
            raise ValueError(f"[[routing.{name}]] in {where} must be a list of rules")
        for rule in rules:
            unknown = set(rule) - RULE_KEYS
            picks = isinstance(rule.get("model"), str) != isinstance(rule.get("models"), list)
            if unknown or not picks:
                raise ValueError(f"bad rule in [[routing.{name}]] in {where}: needs a model or a list of models; "
                                 f"unknown keys {sorted(unknown)}; known: {sorted(RULE_KEYS)}")
            if "pattern" in rule:
                re.compile(rule["pattern"])
        out[str(name)] = [dict(r) for r in rules]
    return out


def _env_models(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in env.get(key, "").split(",") if m.strip())


POSITIVE = ("auth_rate_per_second", "auth_rate_burst", "send_rate_per_second", "send_rate_burst",
            "ws_rate_per_second", "ws_rate_burst", "ws_typing_per_second", "presence_refresh_interval",
            "heartbeat_interval", "db_timeout", "http_keep_alive", "api_stall_timeout",
            "api_max_concurrent_per_user")


def load_settings(
    overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Defaults < chat.toml < environment < explicit overrides (command-line flags)."""
    env = os.environ if env is None else env
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    config_path = overrides.get("config_path") or env.get("CHAT_CONFIG")
    if config_path is None and Path("chat.toml").exists():
        config_path = "chat.toml"
    toml: dict[str, Any] = {}
    if config_path:
        with open(config_path, "rb") as f:
            toml = tomllib.load(f)
    values: dict[str, Any] = {}
    names = {f.name: f for f in dataclasses.fields(Settings)}
    server_table = toml.get("server", {})
    for name, value in server_table.items():
        if name not in names or name == "providers":
            raise ValueError(f"unknown setting [server].{name} in {config_path}")
        kind = ENV.get(name, (None, type(getattr(Settings(), name))))[1]
        values[name] = _convert(kind, value)
    for name, (var, kind) in ENV.items():
        if var in env and env[var] != "":
            values[name] = _convert(kind, env[var])
    for name, value in overrides.items():
        kind = ENV.get(name, (None, type(getattr(Settings(), name))))[1]
        values[name] = _convert(kind, value)
    if config_path:
        values["config_path"] = Path(config_path)
    values["providers"] = _providers(toml, env)
    values["aliases"] = _aliases(toml.get("aliases") or {}, config_path)
    values["templates"] = _templates(toml.get("templates") or {}, config_path)
    values["routing"] = _routing(toml.get("routing") or {}, config_path)
    for name in POSITIVE:  # a rate or a period of 0 would divide by zero or spin, not switch a limit off
        if name in values and not values[name] > 0:
            raise ValueError(f"setting {name} must be greater than 0 (got {values[name]!r})")
    return Settings(**values)
