"""BudgetStore: spending limits, the reservations turns hold while they run, and what was spent.

Correct under concurrency and across server processes: a reservation locks the budgets it
counts against (`FOR UPDATE`), so ten turns started at once near a limit are admitted one
after the other, each seeing the others' reservations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from .database import Database
from .records import rfc3339

_PERIOD_END = "date_trunc(b.period, now() AT TIME ZONE 'UTC') + ('1 ' || b.period)::interval"
_BUDGET_COLS = f"""b.id, b.scope, b.subject_id, b.period, b.limit_usd, b.warn_at,
    date_trunc(b.period, now() AT TIME ZONE 'UTC')::date AS period_start,
    ({_PERIOD_END}) AT TIME ZONE 'UTC' AS resets_at,
    coalesce((SELECT l.spent_usd FROM budget_ledger l
              WHERE l.budget_id = b.id AND l.period_start = date_trunc(b.period, now() AT TIME ZONE 'UTC')::date), 0)
        AS spent_usd,
    coalesce((SELECT sum(r.amount_usd) FROM budget_reservations r
              WHERE r.budget_id = b.id AND r.period_start = date_trunc(b.period, now() AT TIME ZONE 'UTC')::date
                AND r.released_at IS NULL), 0)
        AS reserved_usd"""
RELEASED_KEPT = timedelta(days=1)  # how long a released reservation waits for a late settle (see release_ended)


@dataclass(frozen=True, slots=True)
class Budget:
    """A limit with what its current period has spent and holds in reservations."""

    id: int
    scope: str  # "user" | "conversation"
    subject_id: int
    period: str  # "day" | "month"
    limit_usd: Decimal
    warn_at: float
    spent_usd: Decimal
    reserved_usd: Decimal
    resets_at: datetime

    def wire(self) -> dict[str, Any]:
        remaining = max(Decimal(0), self.limit_usd - self.spent_usd - self.reserved_usd)
        return {"scope": self.scope, f"{self.scope}_id": self.subject_id, "period": self.period,
                "limit_usd": float(self.limit_usd), "warn_at": self.warn_at, "spent_usd": float(self.spent_usd),
                "reserved_usd": float(self.reserved_usd), "remaining_usd": float(remaining),
                "resets_at": rfc3339(self.resets_at)}


@dataclass(frozen=True, slots=True)
class Holder:
    """What holds a reservation: a chat reply (its message id) or an API completion."""

    kind: str  # "message" | "completion"
    id: int

    @property
    def column(self) -> str:
        return "completion_id" if self.kind == "completion" else "message_id"


def _budget(r: Any) -> Budget:
    return Budget(r["id"], r["scope"], r["subject_id"], r["period"], r["limit_usd"], r["warn_at"],
                  r["spent_usd"], r["reserved_usd"], r["resets_at"])


class BudgetStore:
    """Set and read budgets; reserve before a turn asks its provider, settle when it ends."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def set(self, scope: str, subject_id: int, period: str, limit_usd: Decimal, warn_at: float,
                  created_by: int) -> Budget:
        """Create or replace the budget of a user or conversation (one per scope and subject)."""
        async with self.db.transaction() as con:
            await con.execute(
                "INSERT INTO budgets (scope, subject_id, period, limit_usd, warn_at, created_by)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, subject_id) DO UPDATE"
                " SET period = $3, limit_usd = $4, warn_at = $5, created_by = $6",
                scope, subject_id, period, limit_usd, warn_at, created_by)
            row = await con.fetchrow(f"SELECT {_BUDGET_COLS} FROM budgets b WHERE scope = $1 AND subject_id = $2",
                                     scope, subject_id)
        return _budget(row)

    async def delete(self, scope: str, subject_id: int) -> bool:
        result = await self.db.execute("DELETE FROM budgets WHERE scope = $1 AND subject_id = $2", scope, subject_id)
        return result != "DELETE 0"

    async def subjects(self) -> set[tuple[str, int]]:
        """Every (scope, subject id) that has a budget."""
        return {(r["scope"], r["subject_id"]) for r in await self.db.fetch("SELECT scope, subject_id FROM budgets")}

    async def of(self, *, user_id: int | None = None, conversation_id: int | None = None) -> list[Budget]:
        """The budgets a turn asked by this user in this conversation counts against."""
        rows = await self.db.fetch(
            f"SELECT {_BUDGET_COLS} FROM budgets b WHERE (b.scope = 'user' AND b.subject_id = $1)"
            " OR (b.scope = 'conversation' AND b.subject_id = $2) ORDER BY b.scope DESC",
            user_id, conversation_id)
        return [_budget(r) for r in rows]

    async def any_for(self, user_id: int, conversation_id: int | None) -> bool:
        """Whether a turn of this user (in this conversation) counts against any budget."""
        return await self.db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM budgets WHERE (scope = 'user' AND subject_id = $1)"
            " OR (scope = 'conversation' AND subject_id = $2))", user_id, conversation_id)

    async def reserve(self, holder: Holder, user_id: int, conversation_id: int | None,
                      estimate: Decimal) -> Budget | bool:
        """Hold `estimate` against every budget the turn counts against, or hold nothing and
        return the first budget it would exceed (already spent and held, plus this); True when
        something is held, False when no budget applies. Most turns count against no budget:
        one plain read says so before any transaction is opened."""
        if not await self.any_for(user_id, conversation_id):
            return False
        async with self.db.transaction() as con:
            ids = [r["id"] for r in await con.fetch(
                "SELECT id FROM budgets WHERE (scope = 'user' AND subject_id = $1)"
                " OR (scope = 'conversation' AND subject_id = $2) ORDER BY id FOR UPDATE", user_id, conversation_id)]
            if not ids:
                return False
            rows = await con.fetch(f"SELECT {_BUDGET_COLS} FROM budgets b WHERE b.id = any($1::bigint[])"
                                   " ORDER BY b.scope DESC", ids)
            budgets = [_budget(r) for r in rows]
            for b in budgets:
                held = b.spent_usd + b.reserved_usd
                if held >= b.limit_usd or held + estimate > b.limit_usd:
                    return b
            await con.execute(
                f"INSERT INTO budget_reservations ({holder.column}, budget_id, period_start, amount_usd)"
                " SELECT $1, b.id, date_trunc(b.period, now() AT TIME ZONE 'UTC')::date, $3"
                " FROM budgets b WHERE b.id = any($2::bigint[])", holder.id, ids, estimate)
        return True

    async def settle(self, holder: Holder, cost: Decimal) -> list[Budget]:
        """A turn ended: its reservations go, its cost is spent (less what a sweep already charged
        for it, see `release_ended`). Returns the budgets whose warning threshold this crossed
        (each at most once per period)."""
        async with self.db.transaction() as con:
            rows = await con.fetch(
                f"WITH r AS (DELETE FROM budget_reservations WHERE {holder.column} = $1"
                "           RETURNING budget_id, period_start, greatest($2 - coalesce(charged_usd, 0), 0) AS due),"
                " l AS (INSERT INTO budget_ledger AS l (budget_id, period_start, spent_usd)"
                "       SELECT budget_id, period_start, due FROM r ORDER BY budget_id, period_start"
                "       ON CONFLICT (budget_id, period_start) DO UPDATE SET spent_usd = l.spent_usd + excluded.spent_usd"
                "       RETURNING l.budget_id, l.period_start, l.spent_usd, l.warned)"
                " SELECT l.budget_id, l.period_start FROM l JOIN budgets b ON b.id = l.budget_id"
                " WHERE NOT l.warned AND l.spent_usd >= b.limit_usd * b.warn_at",
                holder.id, cost)
            # The ledger rows stay locked until commit: a concurrent settle sees `warned` set.
            crossed = [r["budget_id"] for r in rows]
            if not crossed:
                return []
            await con.execute(
                "UPDATE budget_ledger SET warned = true FROM unnest($1::bigint[], $2::date[]) AS c(id, start)"
                " WHERE budget_ledger.budget_id = c.id AND budget_ledger.period_start = c.start",
                crossed, [r["period_start"] for r in rows])
            found = await con.fetch(f"SELECT {_BUDGET_COLS} FROM budgets b WHERE b.id = any($1::bigint[])", crossed)
        return [_budget(r) for r in found]

    async def release_ended(self) -> int:
        """Reservations of replies and completions that are no longer streaming but were never
        settled (their server died, or was only thought dead): spend what they stored as their
        cost and stop holding the rest. The rows stay, marked with that charge, so that a
        server that was only late settles the difference when its turn ends (`settle`); rows
        nobody settled go after `RELEASED_KEPT`."""
        async with self.db.transaction() as con:
            released = await con.fetchval(
                "WITH ended AS (SELECT r.ctid AS row, coalesce(m.cost_usd, c.cost_usd, 0) AS cost"
                "               FROM budget_reservations r"
                "               LEFT JOIN messages m ON m.id = r.message_id"
                "               LEFT JOIN completions c ON c.id = r.completion_id"
                "               WHERE r.released_at IS NULL AND coalesce(m.status, c.status) <> 'streaming'"
                "               FOR UPDATE OF r SKIP LOCKED),"
                " marked AS (UPDATE budget_reservations r SET released_at = now(), charged_usd = e.cost"
                "            FROM ended e WHERE r.ctid = e.row RETURNING r.budget_id, r.period_start, e.cost),"
                " spent AS (INSERT INTO budget_ledger AS l (budget_id, period_start, spent_usd)"
                "           SELECT budget_id, period_start, sum(cost) FROM marked GROUP BY budget_id, period_start"
                "           ORDER BY budget_id, period_start"
                "           ON CONFLICT (budget_id, period_start)"
                "           DO UPDATE SET spent_usd = l.spent_usd + excluded.spent_usd RETURNING 1)"
                " SELECT count(*) FROM marked")
            await con.execute("DELETE FROM budget_reservations WHERE released_at < now() - $1::interval",
                              RELEASED_KEPT)
        return released
