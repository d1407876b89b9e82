"""Token buckets: per connection for frames; per client address for the expensive auth routes
and per user for sends, those two shared by every server process through Redis."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .errors import RateLimited


class TokenBucket:
    """`rate` tokens per second up to `burst`; `take()` returns 0, or how long to wait."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, time.monotonic()

    def take(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class KeyedBuckets:
    """One bucket per key (e.g. client IP), keeping only the most recently seen `size` keys."""

    def __init__(self, rate: float, burst: float, size: int = 10_000) -> None:
        self.rate, self.burst, self.size = rate, burst, size
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, key: str, what: str) -> None:
        wait = self.take(key)
        if wait:
            raise RateLimited(f"too many {what}; retry later", retry_after=wait)

    def take(self, key: str) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
            if len(self._buckets) > self.size:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take()


# One token bucket per key in Redis, as GCRA: the key holds the time (ms, Redis's clock) at
# which the bucket would be full again. KEYS: the bucket. ARGV: ms per token, burst, tokens
# wanted. Takes as many as are there, up to the wanted number. Returns {tokens taken, ms to
# wait for one (when none were)} as strings (Lua numbers would be truncated).
_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local e, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local got = math.min(want, math.floor((now + burst * e - tat) / e))
if got < 1 then return {'0', tostring(tat + e - burst * e - now)} end
tat = tat + got * e
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(tat - now) + 1000)
return {tostring(got), '0'}
"""
LEASE_WAIT = 0.5  # a lease not granted within this falls back to this process's own bucket


class SharedBuckets:
    """`rate`/`burst` per key across every server process.

    The bucket lives in Redis; a process takes tokens from it `lease` at a time and spends
    them locally, so only one take in `lease` costs a round trip (auth takes one at a time:
    exact). Tokens are counted when leased, so the cluster spends at most the bucket plus the
    `lease - 1` each process may still hold; a lease left unspent on one process is lost to
    the others until the bucket refills. Without Redis (one process), or while it is down,
    each process uses its own buckets: the limit then holds per process."""

    def __init__(self, name: str, rate: float, burst: float, shared: Any = None, lease: int = 1,
                 size: int = 10_000) -> None:
        self.name = name
        self.local = KeyedBuckets(rate, burst, size)
        self.shared = shared
        self.lease = max(1, min(lease, int(burst)))
        self._ms_per_token = 1000.0 / rate
        self._burst = burst
        self._script = shared.script(_LEASE) if shared is not None else None
        self._leased: OrderedDict[str, int] = OrderedDict()  # tokens in hand, by key
        self._size = size

    async def check(self, key: str, what: str) -> None:
        """Take one token for `key`, or raise `RateLimited` with how long to wait."""
        wait = await self.take(key)
        if wait:
            raise RateLimited(f"too many {what}; retry later", retry_after=wait)

    async def take(self, key: str) -> float:
        """0 when a token was taken, else the seconds until one will be there."""
        left = self._leased.get(key)
        if left:
            if left == 1:
                del self._leased[key]
            else:
                self._leased[key] = left - 1
            return 0.0
        s = self.shared
        if s is None or s.down:
            return self.local.take(key)
        try:
            got, wait_ms = await asyncio.wait_for(
                self._script(keys=[s.key("rate", self.name, key)],
                             args=[self._ms_per_token, self._burst, self.lease]), LEASE_WAIT)
        except Exception as e:
            s.failed(f"the {self.name} rate limit", e)
            return self.local.take(key)
        got = int(got)
        if got < 1:
            return max(float(wait_ms), 1.0) / 1000
        if got > 1:
            self._leased[key] = got - 1
            if len(self._leased) > self._size:
                self._leased.popitem(last=False)
        return 0.0


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits every process shares: auth attempts per client address, sends per user."""

    auth: SharedBuckets
    sends: SharedBuckets

    @classmethod
    def build(cls, settings: Any, shared: Any = None) -> Limits:
        # A send's lease is a tenth of the burst: one Redis round trip per that many sends.
        return cls(SharedBuckets("auth", settings.auth_rate_per_second, settings.auth_rate_burst, shared),
                   SharedBuckets("send", settings.send_rate_per_second, settings.send_rate_burst, shared,
                                 lease=settings.send_rate_burst // 10))
