"""Periodic: an async job the server runs in the background every so often."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("chat.periodic")


class Periodic:
    """Runs `job` every `interval` seconds (first after `delay`); a failing round is logged and
    the next one tries again (the database may be down for a while)."""

    def __init__(self, name: str, interval: float, job: Callable[[], Awaitable[object]], *,
                 delay: float = 0.0) -> None:
        self.name = name
        self.interval = interval
        self.job = job
        self.delay = delay
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        await asyncio.sleep(self.delay)
        while True:
            try:
                await self.job()
            except Exception as e:
                log.warning("%s failed: %r", self.name, e)
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
