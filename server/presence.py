"""Presence: who is in each conversation on this process, counted by their live subscriptions."""

from __future__ import annotations

from .records import User


class Presence:
    """A user is present while at least one of their connections is subscribed; only the first
    join and the last leave are news to the room."""

    def __init__(self) -> None:
        self._rooms: dict[int, dict[int, tuple[User, int]]] = {}

    def join(self, cid: int, user: User) -> bool:
        """Count one more subscription; True when the user was not present before."""
        room = self._rooms.setdefault(cid, {})
        _, count = room.get(user.id, (user, 0))
        room[user.id] = (user, count + 1)
        return count == 0

    def leave(self, cid: int, user: User) -> bool:
        """Count one subscription less; True when that was the user's last one."""
        room = self._rooms.get(cid)
        entry = room.get(user.id) if room else None
        if entry is None:
            return False
        if entry[1] > 1:
            room[user.id] = (entry[0], entry[1] - 1)  # type: ignore[index]
            return False
        del room[user.id]  # type: ignore[union-attr]
        if not room:
            del self._rooms[cid]
        return True

    def present(self, cid: int) -> list[User]:
        return [user for user, _ in self._rooms.get(cid, {}).values()]
