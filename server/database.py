"""Database: the asyncpg pool with a deadline on every call, and the driver's failures as `unavailable`.

A database that stops answering (stopped, restarting, frozen) must cost a caller a few
seconds and a clear `unavailable`, never a hang. asyncpg carries the deadlines itself:
`command_timeout` bounds each statement (and the cancel request it sends when one runs
late), `timeout` bounds connecting, and acquiring and releasing a pooled connection are
given the same budget each. A send that timed out may still commit once the database wakes: it was answered
`unavailable`, never acknowledged, and a resend with its `client_id` finds it.

A pool that is only busy is not a database that is gone: when every connection stays taken
for a whole deadline (a burst of AI turns, a slow disk) but statements keep completing, a
caller waits on in line, up to `BUSY_DEADLINES` deadlines in all; when none has completed
for a deadline, or past that, it is `unavailable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from .errors import Unavailable

# The driver's ways of saying the database cannot answer now (as opposed to refusing a statement).
_DOWN: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)


BUSY_DEADLINES = 5  # the longest a caller waits in line for a connection of a busy pool, in deadlines


async def _keep_session(con: asyncpg.Connection) -> None:
    """Pool reset hook: asyncpg still rolls back an open transaction; nothing else to undo."""


class Database:
    """fetch / fetchrow / fetchval / execute on the pool, or `connection()` / `transaction()` for
    several statements; each statement within `deadline` seconds or `Unavailable`, after at most
    a deadline in line for a connection (`BUSY_DEADLINES` while the database keeps answering)."""

    def __init__(self, pool: asyncpg.Pool, deadline: float) -> None:
        self.pool = pool
        self.deadline = deadline
        self.answered = asyncio.get_running_loop().time()  # when a statement last completed
        self._returning: set[asyncio.Task[None]] = set()

    @classmethod
    async def connect(cls, url: str, *, min_size: int, max_size: int, deadline: float) -> Database:
        # No reset query on release: this code keeps no session state (no LISTEN, SET or held
        # advisory lock), and asyncpg's default reset is a second round trip per statement.
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, reset=_keep_session,
                                         command_timeout=deadline, timeout=deadline)
        return cls(pool, deadline)

    async def close(self) -> None:
        await self.pool.close()

    async def _acquire(self) -> Any:
        # asyncio.timeout rather than acquire(timeout=): on Python 3.11 the latter is a
        # wait_for, a task per statement.
        try:
            async with asyncio.timeout(self.deadline):
                return await self.pool.acquire()
        except TimeoutError as e:
            if not self._answering():
                raise Unavailable("the database is unavailable; retry") from e
        except _DOWN as e:
            raise Unavailable("the database is unavailable; retry") from e
        return await self._acquire_busy()

    def _heard(self) -> None:
        """A statement completed, or was refused: the database answers."""
        self.answered = asyncio.get_running_loop().time()

    def _answering(self) -> bool:
        return asyncio.get_running_loop().time() - self.answered <= self.deadline

    async def _acquire_busy(self) -> Any:
        """Every connection was taken for a whole deadline, yet statements complete: wait on in
        line while they go on completing, within `BUSY_DEADLINES` deadlines in all (asyncpg's
        pool does not keep a waiter's place, so a bound is what keeps one caller from waiting forever)."""
        waiting = asyncio.ensure_future(self.pool.acquire())
        give_up = asyncio.get_running_loop().time() + (BUSY_DEADLINES - 1) * self.deadline
        try:
            while not (await asyncio.wait({waiting}, timeout=self.deadline))[0]:
                if not self._answering() or asyncio.get_running_loop().time() >= give_up:
                    raise Unavailable("the database is unavailable; retry")
        except BaseException:
            waiting.cancel()
            waiting.add_done_callback(self._give_back)  # it may have got one just now
            raise
        try:
            return waiting.result()
        except _DOWN as e:
            raise Unavailable("the database is unavailable; retry") from e

    def _give_back(self, waiting: asyncio.Future[Any]) -> None:
        """An abandoned wait that got a connection anyway hands it back."""
        if not waiting.cancelled() and waiting.exception() is None:
            task = asyncio.ensure_future(self._release(waiting.result()))
            self._returning.add(task)
            task.add_done_callback(self._returning.discard)

    async def _release(self, con: Any) -> None:
        try:
            await self.pool.release(con, timeout=self.deadline)
        except _DOWN:
            pass  # asyncpg terminated it (a cancel it sent went unanswered); the pool opens another

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        con = await self._acquire()
        try:
            yield con
            self._heard()
        except _DOWN as e:
            raise Unavailable("the database is unavailable; retry") from e
        except asyncpg.PostgresError:
            self._heard()
            raise
        finally:
            await self._release(con)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        async with self.connection() as con, con.transaction():
            yield con

    async def _call(self, method: str, sql: str, args: tuple[Any, ...]) -> Any:
        con = await self._acquire()
        try:
            result = await getattr(con, method)(sql, *args)
            self._heard()
            return result
        except _DOWN as e:
            raise Unavailable("the database is unavailable; retry") from e
        except asyncpg.PostgresError:
            self._heard()
            raise
        finally:
            await self._release(con)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return await self._call("fetch", sql, args)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        return await self._call("fetchrow", sql, args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._call("fetchval", sql, args)

    async def execute(self, sql: str, *args: Any) -> str:
        return await self._call("execute", sql, args)
