"""Sessions: how many sockets each user has open, for the per-user connection cap.

One process counts its own (the hub's connections by user). With Redis each process also
keeps its count per user in a hash with an expiry it refreshes, so the cap holds across
processes and a dead process's sockets stop counting within three refresh intervals."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .shared import Shared

log = logging.getLogger("chat.sessions")

OPEN_WAIT = 1.0  # a connect waits this long for Redis's count, then trusts this process's
BATCH = 500

# KEYS: counts (hash proc -> sockets), seen (zset proc -> expiry ms). ARGV: proc, n, cap (0: no
# check), ttl ms, mode ("add": add n if the total stays within cap; "set": this process has n).
# Processes whose entry expired are dropped first. Returns 1, or 0 when the cap refused it.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, p in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  redis.call('ZREM', KEYS[2], p)
  redis.call('HDEL', KEYS[1], p)
end
local proc, n, cap, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if ARGV[5] == 'add' then
  if cap > 0 then
    local total = 0
    for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
    if total + n > cap then return 0 end
  end
  n = redis.call('HINCRBY', KEYS[1], proc, n)
end
if n <= 0 then
  redis.call('HDEL', KEYS[1], proc)
  redis.call('ZREM', KEYS[2], proc)
  return 1
end
redis.call('HSET', KEYS[1], proc, n)
redis.call('ZADD', KEYS[2], now + ttl, proc)
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
redis.call('PEXPIRE', KEYS[2], 2 * ttl)
return 1
"""


class Sessions:
    """`open` before a socket counts (False: over the cap), `end` when it ends."""

    def __init__(self, cap: int, by_user: dict[int, Any], shared: Shared | None = None,
                 refresh_interval: float = 5.0) -> None:
        self.cap = cap
        self.by_user = by_user  # the hub's open connections by user: this process's counts
        self.shared = shared
        self.ttl_ms = max(1, int(refresh_interval * 3 * 1000))
        self._script = shared.script(_SCRIPT) if shared else None
        self._counted: dict[int, int] = {}  # sockets this process added to Redis's count, by user
        self._tasks: set[asyncio.Task[None]] = set()

    def _local(self, user_id: int) -> int:
        return len(self.by_user.get(user_id, ()))

    async def open(self, user_id: int) -> bool:
        if self._local(user_id) >= self.cap:
            return False
        s = self.shared
        if s is None or s.down:
            return True
        try:
            ok = await asyncio.wait_for(self._call(user_id, 1, "add", self.cap), OPEN_WAIT)
        except Exception as e:  # slow or down: this process's count decided above
            s.failed("connection caps", e)
            return True
        if ok:
            self._counted[user_id] = self._counted.get(user_id, 0) + 1
        return bool(ok)

    def end(self, user_id: int) -> None:
        counted = self._counted.get(user_id, 0)
        if not counted or self.shared is None:
            return
        if counted == 1:
            del self._counted[user_id]
        else:
            self._counted[user_id] = counted - 1
        task = asyncio.get_running_loop().create_task(self._call(user_id, -1, "add", 0))
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self.shared is not None:
            self.shared.failed("connection caps", task.exception())  # type: ignore[arg-type]

    async def refresh(self) -> None:
        """Every refresh interval: this process's exact count per user, with a new expiry
        (this also heals a count a lost decrement or an outage left wrong)."""
        s = self.shared
        if s is None or self._script is None:
            return
        users = list({*self.by_user, *self._counted})
        for i in range(0, len(users), BATCH):
            try:
                async with s.redis.pipeline(transaction=False) as pipe:
                    for uid in users[i:i + BATCH]:
                        await self._call(uid, self._local(uid), "set", 0, pipe)
                    await pipe.execute()
            except Exception as e:
                s.failed("connection caps", e)
                return
            s.ok()
        for uid in users:  # only these: a user whose first socket opened meanwhile stays counted
            if n := self._local(uid):
                self._counted[uid] = n
            else:
                self._counted.pop(uid, None)

    async def close(self) -> None:
        """Shutdown: this process's sockets stop counting now, so their users may reconnect
        elsewhere at once rather than after the expiry."""
        s = self.shared
        if s is None or s.down or not self._counted:
            return
        try:
            async with asyncio.timeout(OPEN_WAIT):
                async with s.redis.pipeline(transaction=False) as pipe:
                    for uid in self._counted:
                        await self._call(uid, 0, "set", 0, pipe)
                    await pipe.execute()
        except Exception as e:
            log.warning("connection counts not cleared at shutdown (%r); they expire", e)
        self._counted.clear()

    async def _call(self, user_id: int, n: int, mode: str, cap: int, client: Any = None) -> Any:
        assert self.shared is not None and self._script is not None
        base = self.shared.key("conns", user_id)
        return await self._script(keys=[base, base + ":seen"], args=[self.shared.proc, n, cap, self.ttl_ms, mode],
                                  client=client)
