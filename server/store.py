"""Store: every SQL statement, the asyncpg pool, typed records out."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from .database import Database
from .records import AINode, Conversation, Participant, User
from .store_budgets import BudgetStore
from .store_completions import CompletionStore
from .store_messages import MessageStore
from .store_usage import UsageStore

SCHEMA_LOCK = 7_261_001  # advisory lock key held while schema.sql is applied

# What the writer may catch without importing the driver itself.
DuplicateKey = asyncpg.UniqueViolationError


class SchemaTooNew(RuntimeError):
    """The database was migrated by newer code than this."""


def schema_version(sql: str) -> int:
    """The `-- schema-version: N` line of schema.sql."""
    found = re.search(r"^-- schema-version:\s*(\d+)\s*$", sql, re.M)
    if not found:
        raise ValueError("schema.sql has no '-- schema-version: N' line")
    return int(found.group(1))


_USER_COLS = "id, username, display_name, is_admin"
_NODE_COLS = "id, name, kind, base_url, api_key, created_at"


def _user(r: asyncpg.Record) -> User:
    return User(r["id"], r["username"], r["display_name"], r["is_admin"])


def _node(r: asyncpg.Record) -> AINode:
    return AINode(r["id"], r["name"], r["kind"], r["base_url"], r["api_key"], r["created_at"])


class Store:
    """The one SQL access layer; methods are named for what they do to the data. Statements
    about messages are on `store.messages`, aggregations of usage on `store.usage`. Every call answers within the database deadline
    or raises `Unavailable` (see database.py)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.messages = MessageStore(db)
        self.usage = UsageStore(db)
        self.budgets = BudgetStore(db)
        self.completions = CompletionStore(db)

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 2, max_size: int = 10, deadline: float = 5.0) -> Store:
        return cls(await Database.connect(url, min_size=min_size, max_size=max_size, deadline=deadline))

    async def close(self) -> None:
        await self.db.close()

    # -- schema --------------------------------------------------------------

    async def apply_schema(self, sql: str) -> int:
        """Apply schema.sql under an advisory lock; record and return its version."""
        version = schema_version(sql)
        async with self.db.connection() as con:
            await con.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK)
            try:
                have = None
                if await con.fetchval("SELECT to_regclass('schema_version') IS NOT NULL"):
                    have = await con.fetchval("SELECT version FROM schema_version")
                if have is not None and have > version:
                    raise SchemaTooNew(f"database schema is version {have}, this code knows {version}")
                async with con.transaction():
                    await con.execute(sql)
                    await con.execute(
                        "INSERT INTO schema_version (version) VALUES ($1)"
                        " ON CONFLICT (singleton) DO UPDATE SET version = $1, applied_at = now()"
                        " WHERE schema_version.version <> $1",
                        version,
                    )
            finally:
                await con.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK)
        return version

    async def ping(self) -> None:
        await self.db.fetchval("SELECT 1")

    # -- users and tokens ----------------------------------------------------

    async def create_user(self, username: str, display_name: str, password_hash: str) -> User | None:
        """Insert a user (the first one is admin); None if the name is taken."""
        async with self.db.transaction() as con:
            # Serialize only the empty-table case so two first registrations can't both be admin.
            if not await con.fetchval("SELECT EXISTS (SELECT 1 FROM users)"):
                await con.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK + 1)
            row = await con.fetchrow(
                "INSERT INTO users (username, display_name, password_hash, is_admin)"
                " SELECT $1, $2, $3, NOT EXISTS (SELECT 1 FROM users)"
                f" ON CONFLICT (lower(username)) DO NOTHING RETURNING {_USER_COLS}",
                username, display_name, password_hash,
            )
        return _user(row) if row else None

    async def user_for_login(self, username: str) -> tuple[User, str] | None:
        row = await self.db.fetchrow(
            f"SELECT {_USER_COLS}, password_hash FROM users"
            " WHERE lower(username) = lower($1)", username,
        )
        return (_user(row), row["password_hash"]) if row else None

    async def users_by_usernames(self, usernames: Sequence[str]) -> dict[str, User]:
        """Lower-cased username -> user, for the names that exist."""
        rows = await self.db.fetch(
            f"SELECT {_USER_COLS} FROM users WHERE lower(username) = any($1::text[])", [u.lower() for u in usernames],
        )
        return {r["username"].lower(): _user(r) for r in rows}

    async def create_token(self, user_id: int, token_hash: bytes, expires_at: datetime) -> None:
        await self.db.execute(
            "INSERT INTO auth_tokens (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
            token_hash, user_id, expires_at,
        )

    async def user_for_token(self, token_hash: bytes) -> User | None:
        row = await self.db.fetchrow(
            f"SELECT {_USER_COLS} FROM users WHERE id = (SELECT t.user_id FROM auth_tokens t"
            " WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > now())",
            token_hash,
        )
        return _user(row) if row else None

    async def valid_tokens(self, token_hashes: Sequence[bytes]) -> set[bytes]:
        """Which of these tokens are neither revoked nor expired."""
        rows = await self.db.fetch(
            "SELECT token_hash FROM auth_tokens WHERE token_hash = any($1::bytea[])"
            " AND revoked_at IS NULL AND expires_at > now()", list(token_hashes),
        )
        return {bytes(r["token_hash"]) for r in rows}

    async def revoke_token(self, token_hash: bytes) -> None:
        await self.db.execute(
            "UPDATE auth_tokens SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL",
            token_hash,
        )

    # -- conversations -------------------------------------------------------

    async def create_conversation(
        self, owner_id: int, title: str, mode: str, with_ai: bool,
        default_model_id: str | None, member_ids: Sequence[int], ai_answers: str = "all",
        instructions: str | None = None,
    ) -> Conversation:
        async with self.db.transaction() as con:
            cid = await con.fetchval(
                "INSERT INTO conversations (title, mode, with_ai, default_model_id, owner_id, ai_answers, instructions)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                title, mode, with_ai, default_model_id, owner_id, ai_answers, instructions,
            )
            await con.execute(
                "INSERT INTO participants (conversation_id, user_id, role)"
                " SELECT $1, uid, CASE WHEN uid = $2 THEN 'owner' ELSE 'member' END"
                " FROM unnest($3::bigint[]) AS uid ON CONFLICT DO NOTHING",
                cid, owner_id, [owner_id, *member_ids],
            )
            return await self._conversation(con, cid)  # type: ignore[return-value]

    async def conversation(self, conversation_id: int) -> Conversation | None:
        async with self.db.connection() as con:
            return await self._conversation(con, conversation_id)

    async def _conversation(self, con: Any, conversation_id: int) -> Conversation | None:
        found = await self._conversations(con, [conversation_id])
        return found[0] if found else None

    async def _conversations(self, con: Any, ids: Sequence[int]) -> list[Conversation]:
        """Conversations with their participants, in the order of `ids`: two queries in all."""
        rows = await con.fetch(
            "SELECT id, title, mode, with_ai, default_model_id, owner_id, created_at, updated_at, ai_answers,"
            " instructions,"
            " last_seq FROM conversations WHERE id = any($1::bigint[])", list(ids),
        )
        parts = await con.fetch(
            "SELECT p.conversation_id, u.id, u.username, u.display_name, p.role FROM participants p"
            " JOIN users u ON u.id = p.user_id WHERE p.conversation_id = any($1::bigint[])"
            " ORDER BY p.role = 'owner' DESC, p.joined_at, u.id", list(ids),
        )
        members: dict[int, list[Participant]] = {}
        for p in parts:
            members.setdefault(p["conversation_id"], []).append(
                Participant(p["id"], p["username"], p["display_name"], p["role"]))
        by_id = {
            r["id"]: Conversation(
                id=r["id"], title=r["title"], mode=r["mode"], with_ai=r["with_ai"],
                default_model_id=r["default_model_id"], owner_id=r["owner_id"],
                participants=tuple(members.get(r["id"], ())), created_at=r["created_at"],
                updated_at=r["updated_at"], last_seq=r["last_seq"], ai_answers=r["ai_answers"],
                instructions=r["instructions"],
            )
            for r in rows
        }
        return [by_id[i] for i in ids if i in by_id]

    async def conversations_of(self, user_id: int, limit: int = 200) -> list[Conversation]:
        """The user's conversations, most recent activity first."""
        async with self.db.connection() as con:
            ids = await con.fetch(
                "SELECT c.id FROM conversations c JOIN participants p ON p.conversation_id = c.id"
                " WHERE p.user_id = $1 ORDER BY c.activity_at DESC, c.id DESC LIMIT $2",
                user_id, limit,
            )
            return await self._conversations(con, [r["id"] for r in ids])

    async def update_conversation(self, conversation_id: int, changes: dict[str, Any]) -> Conversation:
        """Apply validated setting changes (title, mode, with_ai, default_model_id)."""
        allowed = ("title", "mode", "with_ai", "default_model_id", "ai_answers", "instructions")
        cols = [c for c in allowed if c in changes]
        sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(cols))
        async with self.db.transaction() as con:
            await con.execute(
                f"UPDATE conversations SET {sets + ', ' if sets else ''}updated_at = now() WHERE id = $1",
                conversation_id, *[changes[c] for c in cols],
            )
            return await self._conversation(con, conversation_id)  # type: ignore[return-value]

    async def add_participants(self, conversation_id: int, user_ids: Sequence[int]) -> Conversation:
        async with self.db.transaction() as con:
            await con.execute(
                "INSERT INTO participants (conversation_id, user_id, role)"
                " SELECT $1, uid, 'member' FROM unnest($2::bigint[]) AS uid ON CONFLICT DO NOTHING",
                conversation_id, list(user_ids),
            )
            await con.execute("UPDATE conversations SET updated_at = now() WHERE id = $1", conversation_id)
            return await self._conversation(con, conversation_id)  # type: ignore[return-value]

    async def remove_participant(self, conversation_id: int, user_id: int) -> Conversation:
        async with self.db.transaction() as con:
            await con.execute(
                "DELETE FROM participants WHERE conversation_id = $1 AND user_id = $2",
                conversation_id, user_id,
            )
            await con.execute("UPDATE conversations SET updated_at = now() WHERE id = $1", conversation_id)
            return await self._conversation(con, conversation_id)  # type: ignore[return-value]

    # -- AI nodes ------------------------------------------------------------

    async def create_node(self, name: str, kind: str, base_url: str, api_key: str | None,
                          created_by: int) -> AINode:
        row = await self.db.fetchrow(
            "INSERT INTO ai_nodes (name, kind, base_url, api_key, created_by) VALUES ($1, $2, $3, $4, $5)"
            f" RETURNING {_NODE_COLS}",
            name, kind, base_url, api_key, created_by,
        )
        return _node(row)

    async def nodes(self) -> list[AINode]:
        rows = await self.db.fetch(f"SELECT {_NODE_COLS} FROM ai_nodes ORDER BY id")
        return [_node(r) for r in rows]

    async def delete_node(self, node_id: int) -> bool:
        return (await self.db.execute("DELETE FROM ai_nodes WHERE id = $1", node_id)) != "DELETE 0"
