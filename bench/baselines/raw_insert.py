"""Store baseline: a raw asyncpg loop inserting message rows, the limit for stores.

Same table (the server's schema), same statement shape: the seq is allocated in the same
statement by bumping conversations.last_seq, one autocommit statement per message. One
task per conversation, each sending its next insert when the previous returns (like a
client waiting for its ack). Prints one JSON line.

usage: python bench/baselines/raw_insert.py --dsn postgresql://... --conversations 1,2,3 --author 1 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import asyncpg
import orjson

INSERT = (
    "WITH c AS (UPDATE conversations SET last_seq = last_seq + 1, activity_at = now()"
    "           WHERE id = $1 RETURNING last_seq)"
    " INSERT INTO messages (conversation_id, seq, role, author_id, content, client_id)"
    " SELECT $1, c.last_seq, 'user', $2, $3, $4 FROM c"
    " RETURNING id, conversation_id, seq, role, author_id, content, model_used, status,"
    " client_id, reply_to, reply_id, prompt_tokens, completion_tokens, created_at"
)


async def main(args: argparse.Namespace) -> None:
    cids = [int(c) for c in args.conversations.split(",")]
    pool = await asyncpg.create_pool(args.dsn, min_size=args.pool, max_size=args.pool)
    counts = dict.fromkeys(cids, 0)
    print(orjson.dumps({"event": "ready"}).decode(), flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    end = start + args.seconds

    async def writer(cid: int) -> None:
        n = 0
        while time.perf_counter() < end and n < args.max:
            n += 1
            await pool.fetchrow(INSERT, cid, args.author, f"b|0|{n}|{time.perf_counter():.3f}|" + "x" * 40, None)
        counts[cid] = n

    await asyncio.gather(*(writer(c) for c in cids))
    elapsed = time.perf_counter() - start
    await pool.close()
    print(orjson.dumps({"event": "done", "elapsed_s": elapsed, "stored": sum(counts.values())}).decode(), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--conversations", required=True)
    parser.add_argument("--author", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--pool", type=int, default=10, help="the server's default pool_max_size")
    parser.add_argument("--max", type=int, default=1_000_000)
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args))
