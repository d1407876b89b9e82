"""CompletionStore: what each completion of the OpenAI-compatible endpoint used and cost.

The prompt and the text are never kept: a completion is a row of accounting. It is written
when the completion ends (one statement, after the last byte went out), or, when a budget
must hold it, opened before the provider is asked so the reservation has a holder."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .database import Database


@dataclass(frozen=True, slots=True)
class CompletionRecord:
    """A finished completion, as stored."""

    user_id: int
    model_used: str
    tier: str
    route_reason: str | None
    fallback_from: str | None
    status: str  # complete | cancelled | error
    error_code: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    usage_estimated: bool | None
    ttft_ms: float | None
    gen_ms: float | None
    cost_usd: Decimal | None


_FIELDS = ("user_id", "model_used", "tier", "route_reason", "fallback_from", "status", "error_code", "prompt_tokens",
           "completion_tokens", "usage_estimated", "ttft_ms", "gen_ms", "cost_usd")
_TYPES = ("bigint", "text", "text", "text", "text", "text", "text", "int", "int", "boolean", "real", "real", "numeric")


class CompletionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self, user_id: int, model: str, tier: str, route_reason: str | None, node_id: str) -> int:
        """A `streaming` row, for a completion whose budget reservation needs a holder."""
        return await self.db.fetchval(
            "INSERT INTO completions (user_id, model_used, tier, route_reason, owner_node)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING id", user_id, model, tier, route_reason, node_id)

    async def save(self, record: CompletionRecord, completion_id: int | None = None) -> int:
        """Store a finished completion: update its open row, or insert it."""
        values = [getattr(record, f) for f in _FIELDS]
        if completion_id is None:
            return await self.db.fetchval(
                f"INSERT INTO completions ({', '.join(_FIELDS)})"
                f" VALUES ({', '.join(f'${i}' for i in range(1, len(_FIELDS) + 1))}) RETURNING id", *values)
        sets = ", ".join(f"{f} = ${i}" for i, f in enumerate(_FIELDS, start=1))
        await self.db.execute(f"UPDATE completions SET {sets} WHERE id = ${len(_FIELDS) + 1}",
                              *values, completion_id)
        return completion_id

    async def save_many(self, records: list[CompletionRecord]) -> None:
        """Insert finished completions: one statement for the lot (completions end in bursts)."""
        columns = [[getattr(r, f) for r in records] for f in _FIELDS]
        await self.db.execute(
            f"INSERT INTO completions ({', '.join(_FIELDS)}) SELECT * FROM unnest("
            + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_TYPES, start=1)) + ")", *columns)

    async def interrupt(self, *, owner_node: str | None = None, stale_after: float | None = None) -> int:
        """Open rows of a node that stopped (by name, at its next start), or of every node silent
        for `stale_after` seconds, become `interrupted`, so their reservations are let go."""
        if owner_node is not None:
            result = await self.db.execute(
                "UPDATE completions SET status = 'interrupted' WHERE status = 'streaming' AND owner_node = $1",
                owner_node)
        else:
            result = await self.db.execute(
                "UPDATE completions SET status = 'interrupted' WHERE status = 'streaming' AND owner_node IN"
                " (SELECT node_id FROM server_nodes WHERE seen_at < now() - make_interval(secs => $1))",
                stale_after)
        return int(result.split()[-1])
