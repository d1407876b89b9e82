"""Conversations: who may see and change them, the mode rules, and change notices."""

from __future__ import annotations

from typing import Any

from . import inputs
from .errors import Conflict, Forbidden, Invalid, NotFound
from .events import UPDATED, Event, encode
from .hub import Hub
from .records import Conversation, User
from .routing import Router
from .settings import Settings
from .store import Store


def updated_event(conv: Conversation) -> Event:
    return Event(encode({"type": "conversation.updated", "conversation": conv.wire()}),
                 kind=UPDATED, members=tuple(conv.member_ids()))


class Conversations:
    """Every conversation rule lives here, whichever transport asked."""

    def __init__(self, store: Store, hub: Hub, router: Router, settings: Settings) -> None:
        self.store = store
        self.hub = hub
        self.router = router
        self.settings = settings

    async def visible(self, cid: int, user: User) -> Conversation:
        """The conversation if the user takes part in it; otherwise it doesn't exist for them."""
        conv = await self.store.conversation(cid)
        if conv is None or not conv.has(user.id):
            raise NotFound(f"conversation {cid} not found")
        return conv

    async def owned(self, cid: int, user: User) -> Conversation:
        conv = await self.visible(cid, user)
        if conv.owner_id != user.id:
            raise Forbidden("only the owner may change settings or participants")
        return conv

    async def create(self, owner: User, body: dict[str, Any]) -> Conversation:
        s = self.settings
        title = inputs.text(body, "title", max_chars=s.max_title_chars, strip=True)
        mode = inputs.mode(body, "solo")
        with_ai = inputs.boolean(body, "with_ai", True)
        default_model = inputs.model_id(body, "default_model_id")
        names = inputs.usernames(body, "participant_usernames", s, required=False)
        if default_model is not None:
            self.router.check(default_model)
        names = [n for n in names if n.lower() != owner.username.lower()]
        self._check_count(mode, len(names), "participant_usernames")  # type: ignore[arg-type]
        members = await self._users(names, "participant_usernames")
        return await self.store.create_conversation(
            owner.id, title, mode, with_ai, default_model, [u.id for u in members],  # type: ignore[arg-type]
        )

    async def update(self, cid: int, user: User, body: dict[str, Any]) -> Conversation:
        conv = await self.owned(cid, user)
        changes: dict[str, Any] = {}
        if "title" in body:
            changes["title"] = inputs.text(body, "title", max_chars=self.settings.max_title_chars, strip=True)
        if "mode" in body:
            changes["mode"] = inputs.mode(body, None)
            if changes["mode"] is None:
                raise Invalid("mode", "mode must be one of solo, partner, group")
            others = len(conv.participants) - 1
            if changes["mode"] == "solo" and others > 0:
                raise Conflict("a solo conversation has no other participants; remove them first")
            if changes["mode"] == "partner" and others > 1:
                raise Conflict("a partner conversation has exactly one other participant")
        if "with_ai" in body:
            if not isinstance(body["with_ai"], bool):
                raise Invalid("with_ai", "with_ai must be true or false")
            changes["with_ai"] = body["with_ai"]
        if "default_model_id" in body:
            model = inputs.model_id(body, "default_model_id")
            if model is not None:
                self.router.check(model)
            changes["default_model_id"] = model
        conv = await self.store.update_conversation(cid, changes)
        self.hub.publish(cid, updated_event(conv))
        return conv

    async def add(self, cid: int, user: User, body: dict[str, Any]) -> Conversation:
        conv = await self.owned(cid, user)
        names = inputs.usernames(body, "usernames", self.settings, required=True)
        members = [u for u in await self._users(names, "usernames") if not conv.has(u.id)]
        total_others = len(conv.participants) - 1 + len(members)
        if conv.mode == "solo" and members:
            raise Conflict("a solo conversation has no other participants; change its mode first")
        if conv.mode == "partner" and total_others > 1:
            raise Conflict("a partner conversation has exactly one other participant")
        if total_others + 1 > self.settings.max_participants:
            raise Invalid("usernames", f"at most {self.settings.max_participants} participants",
                          max=self.settings.max_participants)
        if not members:
            return conv
        conv = await self.store.add_participants(cid, [u.id for u in members])
        self.hub.publish(cid, updated_event(conv))
        return conv

    async def remove(self, cid: int, user: User, user_id: int) -> Conversation:
        conv = await self.visible(cid, user)
        if user_id != user.id and conv.owner_id != user.id:
            raise Forbidden("only the owner may remove other participants")
        if user_id == conv.owner_id:
            raise Conflict("the owner cannot leave their own conversation")
        if not conv.has(user_id):
            raise NotFound(f"user {user_id} is not a participant")
        conv = await self.store.remove_participant(cid, user_id)
        self.hub.publish(cid, updated_event(conv))
        return conv

    def _check_count(self, mode: str, others: int, field: str) -> None:
        if mode == "solo" and others:
            raise Invalid(field, "a solo conversation has no other participants")
        if mode == "partner" and others != 1:
            raise Invalid(field, "a partner conversation needs exactly one other participant")
        if others + 1 > self.settings.max_participants:
            raise Invalid(field, f"at most {self.settings.max_participants} participants")

    async def _users(self, names: list[str], field: str) -> list[User]:
        found = await self.store.users_by_usernames(names)
        missing = [n for n in names if n.lower() not in found]
        if missing:
            raise Invalid(field, f"unknown user(s): {', '.join(missing)}", unknown=missing)
        return [found[n.lower()] for n in names]
