"""Accounts and tokens: argon2 password hashes, random bearer tokens stored only as hashes."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .errors import Conflict, Unauthorized
from .records import User
from .store import Store

# A real hash to verify against when the user doesn't exist, so timing doesn't reveal it.
_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash("not a password")


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class Auth:
    """Register, log in, log out, and resolve a token to its user."""

    def __init__(self, store: Store, token_ttl_seconds: int, cache_seconds: float = 0.0,
                 cache_size: int = 10_000) -> None:
        self.store = store
        self.ttl = timedelta(seconds=token_ttl_seconds)
        self.hasher = _HASHER
        # token hash -> (user, when to ask the database again): a busy client pays one lookup
        # per `cache_seconds`, not one per request. A logout here drops its entry at once.
        self.cache_seconds = cache_seconds
        self.cache_size = cache_size
        self._cache: dict[bytes, tuple[User, float]] = {}
        self._logouts = 0  # bumped by every logout: a lookup that saw one begin caches nothing
        self._revoked: set[bytes] = set()  # being revoked right now

    async def register(self, username: str, password: str, display_name: str) -> tuple[str, User]:
        # Hashing costs tens of ms of CPU: keep it off the event loop.
        hashed = await asyncio.to_thread(self.hasher.hash, password)
        user = await self.store.create_user(username, display_name, hashed)
        if user is None:
            raise Conflict(f"username {username!r} is taken")
        return await self._issue(user), user

    async def login(self, username: str, password: str) -> tuple[str, User]:
        found = await self.store.user_for_login(username)
        hashed = found[1] if found else _DUMMY_HASH
        try:
            await asyncio.to_thread(self.hasher.verify, hashed, password)
        except (VerificationError, InvalidHashError):
            found = None
        if found is None:
            raise Unauthorized("wrong username or password")
        return await self._issue(found[0]), found[0]

    async def _issue(self, user: User) -> str:
        token = secrets.token_urlsafe(32)
        await self.store.create_token(user.id, token_hash(token), datetime.now(timezone.utc) + self.ttl)
        return token

    async def user(self, token: str | None) -> User:
        """The user a token belongs to; Unauthorized when missing, unknown, expired or revoked."""
        if not token:
            raise Unauthorized("missing bearer token")
        if len(token) > 256:
            raise Unauthorized("unknown token")
        key = token_hash(token)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        logouts = self._logouts
        user = await self.store.user_for_token(key)
        if user is None or key in self._revoked:
            self._cache.pop(key, None)
            raise Unauthorized("unknown, expired or revoked token")
        # A logout here while this lookup was in flight: its answer may predate the revocation.
        if self.cache_seconds > 0 and logouts == self._logouts:
            if len(self._cache) >= self.cache_size:
                self._cache.clear()  # simple and bounded: the busy tokens come back at once
            self._cache[key] = (user, now + self.cache_seconds)
        return user

    async def logout(self, token: str) -> None:
        key = token_hash(token)
        self._logouts += 1
        self._cache.pop(key, None)
        self._revoked.add(key)  # a lookup already in flight must not serve it after this
        try:
            await self.store.revoke_token(key)
        finally:
            self._revoked.discard(key)
