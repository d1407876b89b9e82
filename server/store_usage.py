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
        """Totals, by model, by UTC day, by both, and by source (`chat` replies, `api`
        completions) in [since, until) of one conversation, one requesting user, or (neither
        given) everyone; one statement (GROUPING SETS). A conversation has only chat replies."""
        args: list[Any] = [since, until]
        chat = ["role = 'assistant'", "status <> 'streaming'", "created_at >= $1", "created_at < $2"]
        api = ["status <> 'streaming'", "created_at >= $1", "created_at < $2"]
        if conversation_id is not None:
            args.append(conversation_id)
            chat.append(f"conversation_id = ${len(args)}")
        if user_id is not None:
            args.append(user_id)
            chat.append(f"requested_by = ${len(args)}")
            api.append(f"user_id = ${len(args)}")
        cols = "model_used, created_at, prompt_tokens, completion_tokens, cost_usd, usage_estimated"
        rows_sql = f"SELECT 'chat' AS source, {cols} FROM messages WHERE {' AND '.join(chat)}"
        if conversation_id is None:
            rows_sql += f" UNION ALL SELECT 'api', {cols} FROM completions WHERE {' AND '.join(api)}"
        day = "(created_at AT TIME ZONE 'UTC')::date"
        rows = await self.db.fetch(
            f"SELECT source, model_used AS model, {day} AS day, GROUPING(source) AS no_source,"
            f" GROUPING(model_used) AS no_model, GROUPING({day}) AS no_day, {_SUMS}"
            f" FROM ({rows_sql}) r"
            f" GROUP BY GROUPING SETS ((model_used), ({day}), ({day}, model_used), (source), ())"
            " ORDER BY day NULLS FIRST, model NULLS FIRST, source NULLS FIRST", *args,
        )
        total = {"turns": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "unpriced_turns": 0,
                 "estimated": False}
        by_model, by_day, by_day_model, by_source = [], [], [], []
        for r in rows:
            if not r["no_source"]:
                by_source.append({"source": r["source"], **_bucket(r)})
            elif r["no_model"] and r["no_day"]:
                total = _bucket(r)
            elif r["no_day"]:
                by_model.append({"model": r["model"], **_bucket(r)})
            elif r["no_model"]:
                by_day.append({"day": r["day"].isoformat(), **_bucket(r)})
            else:
                by_day_model.append({"day": r["day"].isoformat(), "model": r["model"], **_bucket(r)})
        by_model.sort(key=lambda b: (-b["cost_usd"], -b["turns"]))
        return {"total": total, "by_model": by_model, "by_day": by_day, "by_day_model": by_day_model,
                "by_source": by_source}

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
            "       FROM (SELECT model_used, status, ttft_ms, gen_ms, completion_tokens, created_at FROM messages"
            "             WHERE role = 'assistant' AND model_used IS NOT NULL"
            "               AND status NOT IN ('streaming', 'cancelled')"
            "               AND created_at > now() - make_interval(secs => $2)"
            "             UNION ALL SELECT model_used, status, ttft_ms, gen_ms, completion_tokens, created_at"
            "             FROM completions WHERE status NOT IN ('streaming', 'cancelled')"
            "               AND created_at > now() - make_interval(secs => $2)) served) recent"
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
