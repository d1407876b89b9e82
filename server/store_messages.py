"""MessageStore: the statements about messages (the Store holds one; one SQL layer)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import asyncpg
import orjson

from .database import Database
from .errors import NotFound
from .records import FinalReply, Line, Message, Room, User

# A message row: `m` joined to its author `u` and to whoever cancelled it `cu`. Statements
# that RETURN from `messages` alone select `_RETURNING` and fill the names themselves
# (`_NO_NAMES`), or join the returned rows as `m` (`_JOINS`).
_COLS = """m.id, m.conversation_id, m.seq, m.role, m.author_id, m.content, m.model_used, m.status,
    m.client_id, m.reply_to, m.reply_id, m.prompt_tokens, m.completion_tokens, m.created_at,
    m.tier, m.fallback_from, m.cancelled_by, m.usage_estimated, m.ttft_ms, m.gen_ms, m.cost_usd,
    m.error_code, m.error_message, m.route_reason,
    u.username, u.display_name,
    cu.username AS cancelled_username, cu.display_name AS cancelled_display_name"""
_JOINS = "LEFT JOIN users u ON u.id = m.author_id LEFT JOIN users cu ON cu.id = m.cancelled_by"
_FROM = f"messages m {_JOINS}"
_RETURNING = """RETURNING id, conversation_id, seq, role, author_id, content, model_used, status,
    client_id, reply_to, reply_id, prompt_tokens, completion_tokens, created_at, tier, fallback_from,
    cancelled_by, usage_estimated, ttft_ms, gen_ms, cost_usd, error_code, error_message, route_reason"""
_NO_CANCEL = "NULL::text AS cancelled_username, NULL::text AS cancelled_display_name"
_NO_NAMES = f"NULL::text AS username, NULL::text AS display_name, {_NO_CANCEL}"


def _message(r: Any) -> Message:
    author = None
    if r["author_id"] is not None:
        author = User(r["author_id"], r["username"], r["display_name"])
    cancelled_by = None
    if r["cancelled_by"] is not None:
        cancelled_by = User(r["cancelled_by"], r["cancelled_username"], r["cancelled_display_name"])
    return Message(
        id=r["id"], conversation_id=r["conversation_id"], seq=r["seq"], role=r["role"],
        author=author, content=r["content"], model_used=r["model_used"], status=r["status"],
        client_id=r["client_id"], reply_to=r["reply_to"], reply_id=r["reply_id"],
        prompt_tokens=r["prompt_tokens"], completion_tokens=r["completion_tokens"],
        created_at=r["created_at"], tier=r["tier"], fallback_from=r["fallback_from"], cancelled_by=cancelled_by,
        usage_estimated=r["usage_estimated"], ttft_ms=r["ttft_ms"], gen_ms=r["gen_ms"], cost_usd=r["cost_usd"],
        error_code=r["error_code"], error_message=r["error_message"], route_reason=r["route_reason"],
    )


def _room(cid: int, r: Any) -> Room:
    return Room(cid, r["mode"], r["with_ai"], r["default_model_id"], r["owner_id"], r["ai_answers"])


class MessageStore:
    """Messages: seq allocation in the insert itself, AI reply rows with their history, paging, replay."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert_user(
        self, conversation_id: int, author: User, content: str, client_id: str | None,
    ) -> tuple[Message, Room | None]:
        """Store a user message with the next seq, in one round trip that also checks the author
        takes part. Returns (message, its room), or (the already stored one, None) when this
        author sent this client_id here before. Raises NotFound for a conversation they're not in."""
        try:
            # One statement: the UPDATE's row lock on the conversation is held until commit,
            # so concurrent writers commit in seq order and seq has no gaps. A unique-key
            # conflict on client_id aborts the whole statement, the counter included.
            row = await self.db.fetchrow(
                "WITH c AS (UPDATE conversations SET last_seq = last_seq + 1, activity_at = now()"
                "           WHERE id = $1 AND EXISTS (SELECT 1 FROM participants"
                "                                     WHERE conversation_id = $1 AND user_id = $2)"
                "           RETURNING last_seq, mode, with_ai, default_model_id, owner_id, ai_answers),"
                " m AS (INSERT INTO messages (conversation_id, seq, role, author_id, content, client_id)"
                f"       SELECT $1, c.last_seq, 'user', $2, $3, $4 FROM c {_RETURNING})"
                f" SELECT m.*, $5::text AS username, $6::text AS display_name, {_NO_CANCEL},"
                " c.mode, c.with_ai, c.default_model_id, c.owner_id, c.ai_answers FROM m, c",
                conversation_id, author.id, content, client_id, author.username, author.display_name,
            )
        except asyncpg.UniqueViolationError:
            found = await self.by_client_id(conversation_id, author.id, client_id or "")
            if found is None:
                raise
            return found, None
        if row is None:
            raise NotFound(f"conversation {conversation_id} not found")
        return _message(row), _room(conversation_id, row)

    async def insert_users(
        self, items: Sequence[tuple[int, User, str, str | None]],
    ) -> list[tuple[Message, Room] | None]:
        """Group commit: store many user messages (conversation, author, content, client_id) in one
        statement and one commit. Per item: (message, room), or None when the author is not in
        that conversation. Seqs are handed out per conversation in item order, under row locks
        taken in id order. A client_id conflict raises UniqueViolationError for the whole batch."""
        rows = await self.db.fetch(
            "WITH input AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[])"
            "               WITH ORDINALITY AS t(cid, author, content, client_id, ord)),"
            " ok AS (SELECT i.* FROM input i WHERE EXISTS (SELECT 1 FROM participants p"
            "        WHERE p.conversation_id = i.cid AND p.user_id = i.author)),"
            " locked AS (SELECT id FROM conversations WHERE id IN (SELECT cid FROM ok) ORDER BY id FOR UPDATE),"
            " counts AS (SELECT cid, count(*) AS n FROM ok GROUP BY cid),"
            " c AS (UPDATE conversations SET last_seq = conversations.last_seq + counts.n, activity_at = now()"
            "       FROM counts WHERE conversations.id = counts.cid AND conversations.id IN (SELECT id FROM locked)"
            "       RETURNING conversations.id, conversations.last_seq, counts.n, conversations.mode,"
            "       conversations.with_ai, conversations.default_model_id, conversations.owner_id,"
            "       conversations.ai_answers),"
            " numbered AS (SELECT ok.*, c.last_seq - c.n + row_number() OVER (PARTITION BY ok.cid ORDER BY ok.ord)"
            "              AS seq, c.mode, c.with_ai, c.default_model_id, c.owner_id, c.ai_answers"
            "       FROM ok JOIN c ON c.id = ok.cid),"
            " m AS (INSERT INTO messages (conversation_id, seq, role, author_id, content, client_id)"
            "       SELECT cid, seq, 'user', author, content, client_id FROM numbered ORDER BY cid, seq"
            f"       {_RETURNING})"
            f" SELECT m.*, n.ord, n.mode, n.with_ai, n.default_model_id, n.owner_id, n.ai_answers, {_NO_NAMES}"
            " FROM m JOIN numbered n ON n.cid = m.conversation_id AND n.seq = m.seq",
            [i[0] for i in items], [i[1].id for i in items], [i[2] for i in items], [i[3] for i in items],
        )
        out: list[tuple[Message, Room] | None] = [None] * len(items)
        for r in rows:
            cid, author = items[r["ord"] - 1][0], items[r["ord"] - 1][1]
            out[r["ord"] - 1] = (replace(_message(r), author=author), _room(cid, r))
        return out

    async def by_client_id(self, conversation_id: int, author_id: int, client_id: str) -> Message | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLS} FROM {_FROM} WHERE m.conversation_id = $1 AND m.author_id = $2 AND m.client_id = $3",
            conversation_id, author_id, client_id,
        )
        return _message(row) if row else None

    async def start_reply(
        self, conversation_id: int, trigger_id: int, trigger_seq: int, reply_id: str, model: str, tier: str,
        requested_by: int, owner_node: str, history_messages: int, history_chars: int,
        route_reason: str | None = None,
    ) -> tuple[Message, list[tuple[int, Line]], str | None]:
        """Store an empty `streaming` reply (which fixes its seq) and read the history it answers
        (seq, line) and the conversation's instructions, in one round trip. The history is the
        latest `history_messages` messages up to the trigger, oldest first, as far back as their
        content fits in `history_chars` characters (the newest one always, cut to the budget);
        replies that did not complete are left out. A reply to an earlier message that was stored
        after the trigger (the trigger was sent while it was queued) and has completed since is
        in it too, right after its own trigger: the model knows what it answered before, and the
        trigger stays the last line."""
        row = await self.db.fetchrow(
            "WITH c AS (UPDATE conversations SET last_seq = last_seq + 1, activity_at = now()"
            "           WHERE id = $1 RETURNING last_seq, instructions),"
            " r AS (INSERT INTO messages (conversation_id, seq, role, content, model_used, status,"
            "                             reply_to, reply_id, owner_node, tier, requested_by, route_reason)"
            f"      SELECT $1, c.last_seq, 'assistant', '', $4, 'streaming', $2, $3, $5, $9, $10, $11 FROM c"
            f"      {_RETURNING}),"
            " upto AS (SELECT role, content, author_id, seq, seq AS at FROM messages"
            "          WHERE conversation_id = $1 AND seq <= $6"
            "            AND (role = 'user' OR (status = 'complete' AND content <> ''))"
            "          ORDER BY seq DESC LIMIT $7),"
            # replies to earlier messages that were stored after the trigger (it was sent while
            # they were queued) and have completed since: each in its place, after its own trigger
            # (only the window's triggers can have one the window keeps: looked up by reply_to)
            " late AS (SELECT m.role, m.content, m.author_id, m.seq, t.seq AS at"
            "          FROM (SELECT id, seq FROM messages WHERE conversation_id = $1 AND role = 'user'"
            "                AND seq < $6 ORDER BY seq DESC LIMIT $7) AS t"
            "          JOIN messages m ON m.reply_to = t.id"
            "          WHERE m.seq > $6 AND m.status = 'complete' AND m.content <> ''),"
            " h AS (SELECT role, content, author_id, seq, at,"
            "              sum(length(content)) OVER (ORDER BY at DESC, seq DESC) AS total"
            "       FROM (SELECT * FROM upto UNION ALL SELECT * FROM late) AS lines"
            "       ORDER BY at DESC, seq DESC LIMIT $7)"
            f" SELECT r.*, {_NO_NAMES}, (SELECT instructions FROM c) AS instructions,"
            "  (SELECT coalesce(json_agg(json_build_array(h.role, right(h.content, $8), hu.display_name, h.seq)"
            "                            ORDER BY h.at, h.seq), '[]')"
            "   FROM h LEFT JOIN users hu ON hu.id = h.author_id"
            "   WHERE h.total <= $8 OR h.total = length(h.content)) AS history"
            " FROM r",
            conversation_id, trigger_id, reply_id, model, owner_node, trigger_seq, history_messages, history_chars,
            tier, requested_by, route_reason,
        )
        if row is None:
            raise NotFound(f"conversation {conversation_id} not found")
        history = [(seq, Line(role, content, author)) for role, content, author, seq in orjson.loads(row["history"])]
        return _message(row), history, row["instructions"]

    async def finish_reply(self, final: FinalReply) -> Message:
        """A reply's end: its text, status, the model and tier that wrote it, who cancelled it, usage."""
        row = await self.db.fetchrow(
            "WITH m AS (UPDATE messages SET content = $2, status = $3, model_used = $4, tier = $5,"
            " fallback_from = $6, cancelled_by = $7, prompt_tokens = $8, completion_tokens = $9,"
            " usage_estimated = $10, ttft_ms = $11, gen_ms = $12, cost_usd = $13,"
            " error_code = $14, error_message = $15,"
            f" updated_at = now() WHERE id = $1 {_RETURNING})"
            f" SELECT {_COLS} FROM m {_JOINS}",
            *final,
        )
        return _message(row)

    async def checkpoint_reply(self, message_id: int, content: str) -> None:
        """A streaming reply's text so far, so a crash loses at most what came since; a reply that
        already ended is left alone."""
        await self.db.execute(
            "UPDATE messages SET content = $2 WHERE id = $1 AND status = 'streaming'", message_id, content)

    async def page(
        self, conversation_id: int, *, after: int | None, before: int | None, limit: int,
    ) -> tuple[list[Message], bool]:
        """A page by seq, ascending; has_more says another page lies beyond it."""
        where = ["m.conversation_id = $1"]
        args: list[Any] = [conversation_id]
        if after is not None:
            args.append(after)
            where.append(f"m.seq > ${len(args)}")
        if before is not None:
            args.append(before)
            where.append(f"m.seq < ${len(args)}")
        # With `after` alone we page forward; otherwise the newest first, reversed below.
        order = "ASC" if after is not None and before is None else "DESC"
        args.append(limit + 1)
        rows = await self.db.fetch(
            f"SELECT {_COLS} FROM {_FROM} WHERE {' AND '.join(where)}"
            f" ORDER BY m.seq {order} LIMIT ${len(args)}", *args,
        )
        has_more = len(rows) > limit
        page = [_message(r) for r in rows[:limit]]
        if order == "DESC":
            page.reverse()
        return page, has_more

    async def replay(self, conversation_id: int, after: int, cap: int) -> tuple[list[Message], int]:
        """For a resuming subscriber: every message after `after` if there are at most `cap`
        (else none), and the conversation's last_seq."""
        async with self.db.connection() as con:
            last_seq = await con.fetchval("SELECT last_seq FROM conversations WHERE id = $1", conversation_id)
            if last_seq is None or last_seq - after > cap or last_seq <= after:
                return [], last_seq or 0
            rows = await con.fetch(
                f"SELECT {_COLS} FROM {_FROM} WHERE m.conversation_id = $1 AND m.seq > $2 AND m.seq <= $3"
                " ORDER BY m.seq",
                conversation_id, after, last_seq,
            )
            return [_message(r) for r in rows], last_seq

    async def last_seq(self, conversation_id: int) -> int:
        return await self.db.fetchval(
            "SELECT last_seq FROM conversations WHERE id = $1", conversation_id) or 0

    async def one(self, conversation_id: int, message_id: int) -> Message | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLS} FROM {_FROM} WHERE m.conversation_id = $1 AND m.id = $2", conversation_id, message_id)
        return _message(row) if row else None

    async def reply_to(self, message_id: int) -> Message | None:
        """The first AI reply to a message, if one was started."""
        row = await self.db.fetchrow(
            f"SELECT {_COLS} FROM {_FROM} WHERE m.reply_to = $1 ORDER BY m.id LIMIT 1", message_id,
        )
        return _message(row) if row else None

    async def streaming_elsewhere(self, conversation_id: int, node_id: str) -> list[str]:
        """The reply ids of this conversation's replies being generated by other servers."""
        rows = await self.db.fetch(
            "SELECT reply_id FROM messages WHERE status = 'streaming' AND conversation_id = $1"
            " AND owner_node IS DISTINCT FROM $2 AND reply_id IS NOT NULL", conversation_id, node_id)
        return [r["reply_id"] for r in rows]

    async def heartbeat(self, node_id: str) -> None:
        """This server is alive (see interrupt_orphans)."""
        await self.db.execute(
            "INSERT INTO server_nodes (node_id, seen_at) VALUES ($1, now())"
            " ON CONFLICT (node_id) DO UPDATE SET seen_at = now()", node_id)

    async def interrupt_orphans(self, stale_after: float) -> list[Message]:
        """Replies still `streaming` on a server that has not said it is alive for `stale_after`
        seconds become `interrupted`, with the text of their last checkpoint; returned so their
        subscribers can be told. Each is taken by one survivor only (the UPDATE's row lock)."""
        rows = await self.db.fetch(
            "WITH m AS (UPDATE messages SET status = 'interrupted', updated_at = now()"
            "           WHERE status = 'streaming' AND owner_node IN (SELECT node_id FROM server_nodes"
            "                 WHERE seen_at < now() - make_interval(secs => $1))"
            f"          {_RETURNING})"
            f" SELECT {_COLS} FROM m {_JOINS}", stale_after)
        return [_message(r) for r in rows]

    async def mark_interrupted(self, owner_node: str) -> int:
        """Replies this node left `streaming` when it stopped become `interrupted`."""
        result = await self.db.execute(
            "UPDATE messages SET status = 'interrupted', updated_at = now()"
            " WHERE status = 'streaming' AND owner_node = $1", owner_node,
        )
        return int(result.split()[-1])
