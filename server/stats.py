"""ModelStats: each model's recent speed and error rate, recomputed from stored replies.

Kept in memory between refreshes so GET /ai/models never waits on the database for it,
and read from the database again after a restart (nothing is lost with the process)."""

from __future__ import annotations

import logging
from typing import Any

from .store import Store

log = logging.getLogger("chat.stats")


class ModelStats:
    """`get(model id)` and `table()` from the last `refresh()` (the lifespan runs it periodically)."""

    def __init__(self, store: Store, last_turns: int = 100, hours: float = 24.0) -> None:
        self.store = store
        self.last_turns = last_turns
        self.hours = hours
        self._rows: dict[str, dict[str, Any]] = {}

    def get(self, model_id: str) -> dict[str, Any] | None:
        return self._rows.get(model_id)

    def table(self) -> dict[str, Any]:
        return {"window": {"last_turns": self.last_turns, "hours": self.hours},
                "models": list(self._rows.values())}

    async def refresh(self) -> None:
        rows = await self.store.usage.model_stats(self.last_turns, self.hours)
        self._rows = {r["model"]: r for r in rows}

