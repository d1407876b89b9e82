"""Conversations: who may see and change them, the mode rules, and change notices."""

from __future__ import annotations

from . import protocol
from .errors import Conflict, Forbidden, Invalid, NotFound
from .events import Event
from .hub import Hub
from .inputs import ConversationChanges, NewConversation
from .records import Conversation, User
from .routing import Router
from .settings import Settings
from .store import Store


def mode_problem(mode: str, others: int, max_participants: int) -> str | None:
    """What is wrong with `others` participants beside the owner in a conversation of `mode`."""
    if mode == "solo" and others:
        return "a solo conversation has no other participants"
    if mode == "partner" and others != 1:
        return "a partner conversation has exactly one other participant"
    if others + 1 > max_participants:
        return f"at most {max_participants} participants"
    return None


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

    async def of(self, user: User) -> list[Conversation]:
        """The user's conversations, most recent activity first."""
        return await self.store.conversations_of(user.id)

    async def create(self, owner: User, new: NewConversation) -> Conversation:
        if new.default_model_id is not None:
            self.router.check(new.default_model_id)
        names = [n for n in new.participant_usernames if n.lower() != owner.username.lower()]
        # The body contradicts itself: that is invalid input, not a conflict with stored state.
        if problem := mode_problem(new.mode, len(names), self.settings.max_participants):
            raise Invalid("participant_usernames", problem)
        members = await self._users(names, "participant_usernames")
        return await self.store.create_conversation(
            owner.id, new.title, new.mode, new.with_ai, new.default_model_id, [u.id for u in members],
            new.ai_answers, new.instructions,
        )

    async def update(self, cid: int, user: User, changes: ConversationChanges) -> Conversation:
        conv = await self.owned(cid, user)
        if changes.mode is not None and changes.mode != conv.mode:
            # Changing the mode must fit the participants the conversation has now (except
            # that a partner conversation may wait for its partner).
            others = len(conv.participants) - 1
            problem = mode_problem(changes.mode, others, self.settings.max_participants)
            if problem and not (changes.mode == "partner" and others == 0):
                raise Conflict(problem)
        if changes.sets_model and changes.default_model_id is not None:
            self.router.check(changes.default_model_id)
        conv = await self.store.update_conversation(cid, changes.columns())
        self.hub.publish(cid, updated_event(conv))
        return conv

    async def add(self, cid: int, user: User, usernames: list[str]) -> Conversation:
        conv = await self.owned(cid, user)
        members = [u for u in await self._users(usernames, "usernames") if not conv.has(u.id)]
        others = len(conv.participants) - 1 + len(members)
        if others + 1 > self.settings.max_participants:
            raise Invalid("usernames", f"at most {self.settings.max_participants} participants",
                          max=self.settings.max_participants)
        if not members:
            return conv
        if problem := mode_problem(conv.mode, others, self.settings.max_participants):
            raise Conflict(problem)
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

    async def _users(self, names: list[str], field: str) -> list[User]:
        found = await self.store.users_by_usernames(names)
        missing = [n for n in names if n.lower() not in found]
        if missing:
            raise Invalid(field, f"unknown user(s): {', '.join(missing)}", unknown=missing)
        return [found[n.lower()] for n in names]


def updated_event(conv: Conversation) -> Event:
    """conversation.updated: subscribers who are no longer members stop listening."""
    return Event(protocol.encode(protocol.conversation_updated(conv)), members=tuple(conv.member_ids()))
