"""Shared: this process's handle on the state all server processes keep together in Redis.

Presence, connection counts and rate-limit buckets live under one prefix; each process
writes its own entries under its `proc` id with an expiry it keeps refreshing, so the
entries of a process that died vanish by themselves (Centrifugo's presence model). Redis
being down never refuses service: each user of this handle falls back to this process's
own view, and the handle says so once in the log, and once more when it is back."""

from __future__ import annotations

import logging
import secrets
from typing import Any

log = logging.getLogger("chat.shared")


class Shared:
    """One Redis client (the broker's), this run's id, and whether Redis answered last time."""

    def __init__(self, redis: Any, prefix: str = "chat:") -> None:
        self.redis = redis
        self.proc = secrets.token_hex(6)  # this run of this process: a restart starts with nothing counted
        self.prefix = prefix
        self.down = False

    def script(self, lua: str) -> Any:
        return self.redis.register_script(lua)

    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    def failed(self, what: str, e: BaseException) -> None:
        """A Redis call failed: from now on (until `ok`) callers use this process's own view.
        A call that was only slow (its caller's own deadline) falls back alone: switching every
        shared feature to per-process views would announce presence news Redis would not."""
        if isinstance(e, TimeoutError):
            log.info("redis slow for %s: this call used this process's view", what)
            return
        if not self.down:
            log.error("redis unavailable for %s (%r): presence, connection caps and rate limits are per process"
                      " until it is back", what, e)
        self.down = True

    async def probe(self) -> None:
        """While down: is Redis back? (The regular refresh rounds call this.)"""
        if self.down:
            try:
                await self.redis.ping()
            except Exception:
                return
            self.ok()

    def ok(self) -> None:
        if self.down:
            log.warning("redis is back: presence, connection caps and rate limits are shared again")
        self.down = False
