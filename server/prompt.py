"""Prompt: what an AI turn sends its provider: the server's system prompt, the room's
instructions, and the history window `MessageStore.start_reply` reads (mirrored by `window`
for the requests prefetch.py sends ahead)."""

from __future__ import annotations

from providers.base import ChatMessage

from .records import Line

SYSTEM_PROMPT = (
    "You are the AI participant of a chat conversation. Answer the latest message helpfully "
    "and concisely."
)


def prompt_for(mode: str, history: list[Line], instructions: str | None) -> list[ChatMessage]:
    """What a turn sends: the server's system prompt, the room's instructions after it, then the
    history; in rooms each user line says who spoke."""
    named = mode != "solo"
    system = [ChatMessage("system", SYSTEM_PROMPT)]
    if instructions:
        system.append(ChatMessage("system", f"Instructions for this conversation, from its owner:\n{instructions}"))
    return [*system, *(
        ChatMessage(line.role, f"{line.author}: {line.content}"
                    if named and line.role == "user" and line.author is not None else line.content)
        for line in history
    )]


def window(lines: list[tuple[int, Line]], messages: int, chars: int) -> list[tuple[int, Line]]:
    """The history `start_reply` reads, from (seq, line) filtered as it filters them: the latest
    `messages`, as far back as their content fits in `chars` (the newest always, cut to it).
    Only for lines in seq order, each reply right after its trigger: the late replies
    `start_reply` moves up never occur where prefetch keeps a conversation (`Prefetcher.started`)."""
    out: list[tuple[int, Line]] = []
    total = 0
    for seq, line in reversed(lines[-messages:] if messages > 0 else []):
        total += len(line.content)
        if total <= chars or total == len(line.content):
            cut = max(0, len(line.content) - chars)  # SQL's right(content, chars)
            out.append((seq, Line(line.role, line.content[cut:], line.author) if cut else line))
    out.reverse()
    return out

