"""Presence: who is in each conversation, counted by their live subscriptions.

`LocalPresence` counts this process's subscriptions: all one process needs, and what it
always did. `RedisPresence` keeps the same counts and shares them the way Centrifugo
does: per conversation a sorted set of `<user>:<process>` entries scored by when they
expire, refreshed by their process every interval, plus each present user's details and
how many processes hold them. Only the first entry of a user anywhere is "joined" news,
and only the last one going (removed, or expired because its process died) is "left".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from .records import User
from .shared import Shared

log = logging.getLogger("chat.presence")

Announce = Callable[[int, User, str], None]  # (conversation, user, "joined" | "left"): news for the room
JOIN_WAIT = 1.0  # a subscribe waits this long for the shared list, then answers with this process's own
BATCH = 500  # presence operations per Redis round trip
CLOSE_WAIT = 1.0  # at shutdown, how long this process's leaving may take


def _nobody(cid: int, user: User, state: str) -> None:
    pass


class Presence(Protocol):
    """join() says who is present; the room hears news through `announce` (set by the hub)."""

    announce: Announce

    async def join(self, cid: int, user: User) -> list[User]: ...
    def leave(self, cid: int, user: User) -> None: ...
    def present(self, cid: int) -> list[User]: ...
    async def refresh(self) -> None:
        """Called every refresh interval: keep this process's entries alive, notice dead ones."""


class Counts:
    """Subscriptions per user per conversation on this process."""

    def __init__(self) -> None:
        self._rooms: dict[int, dict[int, tuple[User, int]]] = {}

    def join(self, cid: int, user: User) -> bool:
        """Count one more subscription; True when the user was not present before."""
        room = self._rooms.setdefault(cid, {})
        _, count = room.get(user.id, (user, 0))
        room[user.id] = (user, count + 1)
        return count == 0

    def leave(self, cid: int, user: User) -> bool:
        """Count one subscription less; True when that was the user's last one."""
        room = self._rooms.get(cid)
        entry = room.get(user.id) if room else None
        if entry is None:
            return False
        if entry[1] > 1:
            room[user.id] = (entry[0], entry[1] - 1)  # type: ignore[index]
            return False
        del room[user.id]  # type: ignore[union-attr]
        if not room:
            del self._rooms[cid]
        return True

    def has(self, cid: int, user_id: int) -> bool:
        return user_id in self._rooms.get(cid, {})

    def present(self, cid: int) -> list[User]:
        return [user for user, _ in self._rooms.get(cid, {}).values()]

    def entries(self) -> Iterator[tuple[int, User]]:
        for cid, room in self._rooms.items():
            for user, _ in room.values():
                yield cid, user


class LocalPresence:
    """One process: the counts are the truth, and news is decided at once."""

    def __init__(self) -> None:
        self.counts = Counts()
        self.announce: Announce = _nobody

    async def join(self, cid: int, user: User) -> list[User]:
        if self.counts.join(cid, user):
            self.announce(cid, user, "joined")
        return self.counts.present(cid)

    def leave(self, cid: int, user: User) -> None:
        if self.counts.leave(cid, user):
            self.announce(cid, user, "left")

    def present(self, cid: int) -> list[User]:
        return self.counts.present(cid)

    async def refresh(self) -> None:
        pass


# KEYS: entries (zset member "<uid>:<proc>" -> expiry ms), users (hash uid -> user JSON),
# holders (hash uid -> entries alive). ARGV: op (add | remove | get), member, uid, user JSON,
# ttl ms, "1" to return the present users. Expired entries are swept first, by whoever
# comes by; the time is Redis's own, so the servers' clocks need not agree.
# Returns {news (first entry added / last removed), users whose last entry expired, present}.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[5])
local gone = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], m)
  local uid = string.match(m, '^[^:]+')
  if redis.call('HINCRBY', KEYS[3], uid, -1) <= 0 then
    redis.call('HDEL', KEYS[3], uid)
    local info = redis.call('HGET', KEYS[2], uid)
    redis.call('HDEL', KEYS[2], uid)
    if info then gone[#gone + 1] = info end
  end
end
local op, member, uid = ARGV[1], ARGV[2], ARGV[3]
local news = 0
if op == 'add' then
  if redis.call('ZADD', KEYS[1], now + ttl, member) == 1 then
    if redis.call('HINCRBY', KEYS[3], uid, 1) == 1 then news = 1 end
  end
  redis.call('HSET', KEYS[2], uid, ARGV[4])
elseif op == 'remove' then
  if redis.call('ZREM', KEYS[1], member) == 1 then
    if redis.call('HINCRBY', KEYS[3], uid, -1) <= 0 then
      redis.call('HDEL', KEYS[3], uid)
      redis.call('HDEL', KEYS[2], uid)
      news = 1
    end
  end
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], 2 * ttl) end
local present = {}
if ARGV[6] == '1' then present = redis.call('HVALS', KEYS[2]) end
return {news, gone, present}
"""


@dataclass(slots=True)
class _Op:
    kind: str  # join | get | refresh | remove | forget (a removal Redis missed, made later)
    cid: int
    user: User
    answer: asyncio.Future[list[User]] | None = field(default=None)

    @property
    def lua_op(self) -> str:
        return {"join": "add", "refresh": "add", "remove": "remove", "forget": "remove"}.get(self.kind, "get")


class RedisPresence:
    """Several processes: this process's counts, shared in Redis with an expiry it refreshes.

    Every Redis operation goes through one task, in the order asked, as many per round trip
    as are waiting: a leave never overtakes the join it undoes. When Redis cannot answer,
    this process's own counts decide (and announce) instead, and the removals Redis missed
    are made when it is back."""

    def __init__(self, shared: Shared, refresh_interval: float) -> None:
        self.shared = shared
        self.ttl_ms = max(1, int(refresh_interval * 3 * 1000))  # three refreshes missed: gone
        self.counts = Counts()
        self.announce: Announce = _nobody
        self._script = shared.script(_SCRIPT)
        self._queue: list[_Op] = []
        self._wake = asyncio.Event()
        self._stale: dict[tuple[int, int], User] = {}  # left while Redis could not hear it
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # a batch is in flight

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="presence")

    async def close(self) -> None:
        """Shutdown: this process's users leave now (news included), not when their entries expire."""
        for cid, user in list(self.counts.entries()):
            self._push(_Op("remove", cid, user))
        self.counts = Counts()  # the sockets closing after this count nothing more
        try:
            async with asyncio.timeout(CLOSE_WAIT):
                while self._queue or self._busy:
                    await asyncio.sleep(0.02)
        except TimeoutError:
            log.warning("presence: %d updates not made in Redis at shutdown; they expire", len(self._queue))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def join(self, cid: int, user: User) -> list[User]:
        first = self.counts.join(cid, user)
        stale = self._stale.pop((cid, user.id), None)  # left during an outage, back now
        if self.shared.down:
            if first:
                self.announce(cid, user, "joined")
            return self.counts.present(cid)
        if stale is not None:  # Redis still holds the old entry: end it, so this join is news again
            self._push(_Op("forget", cid, stale))
        answer: asyncio.Future[list[User]] = asyncio.get_running_loop().create_future()
        self._push(_Op("join" if first else "get", cid, user, answer))
        try:
            return await asyncio.wait_for(asyncio.shield(answer), JOIN_WAIT)
        except Exception:  # Redis is slow or down: this process's view (the news is the task's)
            return self.counts.present(cid)

    def leave(self, cid: int, user: User) -> None:
        if not self.counts.leave(cid, user):
            return
        if self.shared.down:
            self._stale[(cid, user.id)] = user
            self.announce(cid, user, "left")
            return
        self._push(_Op("remove", cid, user))

    def present(self, cid: int) -> list[User]:
        """This process's own subscribers only (the shared list comes with `join`)."""
        return self.counts.present(cid)

    async def refresh(self) -> None:
        """Renew this process's entries, make the removals Redis missed, sweep the expired
        entries of conversations this process serves (announcing those users' leaving)."""
        for (cid, uid), user in list(self._stale.items()):
            del self._stale[(cid, uid)]
            if not self.counts.has(cid, uid):
                self._push(_Op("forget", cid, user))
        for cid, user in self.counts.entries():
            self._push(_Op("refresh", cid, user))

    def _push(self, op: _Op) -> None:
        self._queue.append(op)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:BATCH], self._queue[BATCH:]
                self._busy = True
                try:
                    results = await self._execute(batch)
                except Exception as e:
                    self.shared.failed("presence", e)
                    for op in batch:
                        self._without_redis(op)
                    continue
                finally:
                    self._busy = False
                self.shared.ok()
                for op, result in zip(batch, results):
                    try:
                        self._settle(op, result)
                    except Exception:  # one bad entry must not stop presence for everyone
                        log.exception("presence update for conversation %s failed", op.cid)

    async def _execute(self, batch: list[_Op]) -> list[Any]:
        s = self.shared
        async with s.redis.pipeline(transaction=False) as pipe:
            for op in batch:
                base = s.key("presence", op.cid)
                await self._script(keys=[base, base + ":users", base + ":n"],
                                   args=[op.lua_op, f"{op.user.id}:{s.proc}", op.user.id,
                                         orjson.dumps(op.user.wire()), self.ttl_ms,
                                         "1" if op.answer is not None else "0"], client=pipe)
            return await pipe.execute()

    def _settle(self, op: _Op, result: Any) -> None:
        news, gone, present = result
        for info in gone:
            self.announce(op.cid, User(**orjson.loads(info)), "left")
        if news:
            self.announce(op.cid, op.user, "joined" if op.lua_op == "add" else "left")
        if op.answer is not None and not op.answer.done():
            op.answer.set_result([User(**orjson.loads(info)) for info in present])

    def _without_redis(self, op: _Op) -> None:
        """Redis did not take it: decide with this process's counts."""
        if op.kind == "join":
            self.announce(op.cid, op.user, "joined")
        elif op.kind in ("remove", "forget"):
            self._stale[(op.cid, op.user.id)] = op.user
            if op.kind == "remove":
                self.announce(op.cid, op.user, "left")
        if op.answer is not None and not op.answer.done():
            op.answer.set_result(self.counts.present(op.cid))
