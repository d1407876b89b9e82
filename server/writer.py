"""MessageWriter: group commit for user messages under load, with no wait when idle."""

from __future__ import annotations

import asyncio

from .errors import NotFound
from .records import Message, Room, User
from .store import DuplicateKey
from .store_messages import MessageStore

Item = tuple[int, User, str, "str | None"]  # conversation, author, content, client_id
Stored = tuple[Message, "Room | None"]


class MessageWriter:
    """Sends that arrive while a write is in flight go out together, in one statement and one
    commit, as soon as it returns. An idle server writes each send at once, so a lone message
    waits for nothing; a busy one pays one commit per batch instead of one per message.

    Order: sends are stored, and their seqs handed out, in the order `insert` is *called*
    (its first step takes the send's place synchronously). A caller that must keep an order
    between its sends calls `insert` with no await before it."""

    def __init__(self, messages: MessageStore, max_batch: int = 128) -> None:
        self.messages = messages
        self.max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Stored]]] = []
        self._busy = False  # a write is in flight; new sends wait for the next batch

    async def insert(self, cid: int, author: User, content: str, client_id: str | None) -> Stored:
        """MessageStore.insert_user's contract, batched with whatever else is being sent."""
        if not self._busy:
            # Idle: write it here, now, alone (no task, no wait); sends arriving meanwhile
            # queue up and go out together when it returns.
            self._busy = True
            try:
                return await self.messages.insert_user(cid, author, content, client_id)
            finally:
                self._release()
        fut: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._pending.append(((cid, author, content, client_id), fut))
        # A cancelled sender cancels only its future: its send keeps its place in the batch and
        # is stored (no shield: that is a second future and two closures per send under load).
        return await fut

    def _release(self) -> None:
        """The write in flight is done: the next batch goes out now, or the writer is idle again."""
        if self._pending:
            asyncio.get_running_loop().create_task(self._drain())
        else:
            self._busy = False

    async def _drain(self) -> None:
        try:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            await self._write(batch)
        finally:
            self._release()

    async def _write(self, batch: list[tuple[Item, asyncio.Future[Stored]]]) -> None:
        if len(batch) > 1:
            try:
                results = await self.messages.insert_users([item for item, _ in batch])
            except DuplicateKey:
                pass  # a resent client_id in the batch: one at a time finds which, below
            except Exception as e:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                return
            else:
                for (item, fut), result in zip(batch, results, strict=True):
                    if fut.done():  # its sender was cancelled; the message is stored all the same
                        continue
                    if result is None:
                        fut.set_exception(NotFound(f"conversation {item[0]} not found"))
                    else:
                        fut.set_result(result)
                return
        for (cid, author, content, client_id), fut in batch:
            try:
                stored = await self.messages.insert_user(cid, author, content, client_id)
            except Exception as e:
                if not fut.done():
                    fut.set_exception(e)
            else:
                if not fut.done():
                    fut.set_result(stored)
