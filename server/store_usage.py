"""UsageStore: what replies used and cost, summed in SQL by model and by day; models' recent speed."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from .database import Database

_SUMS = """count(*) AS turns, coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
    coalesce(sum(completion_tokens), 0) AS completion_tokens, sum(cost_usd) AS cost_usd,
    count(*) FILTER (WHERE cost_usd IS NULL AND completion_tokens IS NOT NULL) AS unpriced_turns,
    coalesce(bool_or(usage_estimated), false) AS estimated"""


def _bucket(r: Any) -> dict[str, Any]:
    cost = r["cost_usd"]
    return {"turns": r["turns"], "prompt_tokens": r["prompt_tokens"], "completion_tokens": r["completion_tokens"],
            "cost_usd": float(round(cost, 8)) if isinstance(cost, Decimal) else 0.0,
            "unpriced_turns": r["unpriced_turns"], "estimated": r["estimated"]}


class UsageStore:
    """Aggregations over stored replies (the partial indexes of schema step 5 serve them)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def summary(self, *, conversation_id: int | None = None, user_id: int | None = None,
                      since: datetime, until: datetime) -> dict[str, Any]:
        """Totals, by model, by UTC day and by both, of the replies in [since, until) of one conversation,
        one requesting user, or (neither given) everyone; one statement (GROUPING SETS)."""
        where = ["role = 'assistant'", "status <> 'streaming'", "created_at >= $1", "created_at < $2"]
        args: list[Any] = [since, until]
        if conversation_id is not None:
            args.append(conversation_id)
            where.append(f"conversation_id = ${len(args)}")
        if user_id is not None:
            args.append(user_id)
            where.append(f"requested_by = ${len(args)}")
        rows = await self.db.fetch(
            f"SELECT model_used AS model, (created_at AT TIME ZONE 'UTC')::date AS day,"
            f" GROUPING(model_used) AS no_model, GROUPING((created_at AT TIME ZONE 'UTC')::date) AS no_day, {_SUMS}"
            f" FROM messages WHERE {' AND '.join(where)}"
            " GROUP BY GROUPING SETS ((model_used), ((created_at AT TIME ZONE 'UTC')::date),"
            "                         ((created_at AT TIME ZONE 'UTC')::date, model_used), ())"
            " ORDER BY day NULLS FIRST, model NULLS FIRST", *args,
        )
        total = {"turns": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "unpriced_turns": 0,
                 "estimated": False}
        by_model, by_day, by_day_model = [], [], []
        for r in rows:
            if r["no_model"] and r["no_day"]:
                total = _bucket(r)
            elif r["no_day"]:
                by_model.append({"model": r["model"], **_bucket(r)})
            elif r["no_model"]:
                by_day.append({"day": r["day"].isoformat(), **_bucket(r)})
            else:
                by_day_model.append({"day": r["day"].isoformat(), "model": r["model"], **_bucket(r)})
        by_model.sort(key=lambda b: (-b["cost_usd"], -b["turns"]))
        return {"total": total, "by_model": by_model, "by_day": by_day, "by_day_model": by_day_model}

    async def model_stats(self, last_turns: int, hours: float) -> list[dict[str, Any]]:
        """Per model, over its latest `last_turns` replies within `hours`: turns, error rate, time
        to first token p50/p95, generation speed (median tokens per second)."""
        rows = await self.db.fetch(
            "SELECT model_used AS model, count(*) AS turns, count(*) FILTER (WHERE status = 'error') AS errors,"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY ttft_ms) AS ttft_p50,"
            " percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_ms) AS ttft_p95,"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY completion_tokens * 1000.0 / nullif(gen_ms, 0)) AS tps"
            " FROM (SELECT model_used, status, ttft_ms, gen_ms, completion_tokens,"
            "              row_number() OVER (PARTITION BY model_used ORDER BY created_at DESC) AS n"
            "       FROM messages WHERE role = 'assistant' AND model_used IS NOT NULL"
            "         AND status NOT IN ('streaming', 'cancelled')"
            "         AND created_at > now() - make_interval(secs => $2)) recent"
            " WHERE n <= $1 GROUP BY model_used ORDER BY model_used",
            last_turns, hours * 3600,
        )
        return [{
            "model": r["model"], "turns": r["turns"], "errors": r["errors"],
            "error_rate": round(r["errors"] / r["turns"], 4) if r["turns"] else 0.0,
            "ttft_p50_ms": _round(r["ttft_p50"]), "ttft_p95_ms": _round(r["ttft_p95"]),
            "tokens_per_second": _round(r["tps"]),
        } for r in rows]


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)
