"""EchoProvider: deterministic word tokens, exact concatenation, delay, cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.base import ChatMessage, StreamEnd, Usage
from providers.echo import NOTHING, EchoProvider, tokens
from tests.fakes import collect


async def test_echoes_the_last_user_message_word_by_word() -> None:
    messages = [ChatMessage("system", "be nice to people"), ChatMessage("user", "first one"),
                ChatMessage("assistant", "ok then"), ChatMessage("user", "  hello  big world ")]
    deltas, end = await collect(EchoProvider(delay=0).stream("echo", messages))
    assert deltas == ["  hello  ", "big ", "world "]
    assert "".join(deltas) == "  hello  big world "
    assert end == StreamEnd(usage=Usage(prompt_tokens=4 + 2 + 2 + 3, completion_tokens=3), finish_reason="stop")


async def test_no_user_message_echoes_a_placeholder() -> None:
    deltas, end = await collect(EchoProvider(delay=0).stream("echo", [ChatMessage("system", "s")]))
    assert "".join(deltas) == NOTHING == "(nothing to echo)"
    assert end.usage == Usage(1, 3)


async def test_same_input_same_output() -> None:
    messages = [ChatMessage("user", "a b c")]
    assert await collect(EchoProvider(delay=0).stream("echo", messages)) == \
        await collect(EchoProvider(delay=0).stream("echo", messages))


async def test_max_tokens_truncates_with_finish_reason_length() -> None:
    deltas, end = await collect(EchoProvider(delay=0).stream("echo", [ChatMessage("user", "a b c d")], max_tokens=2))
    assert deltas == ["a ", "b "] and end.finish_reason == "length"


async def test_delay_is_slept_between_tokens() -> None:
    started = time.monotonic()
    deltas, _ = await collect(EchoProvider(delay=0.03).stream("echo", [ChatMessage("user", "a b c d e")]))
    assert len(deltas) == 5
    assert 0.11 <= time.monotonic() - started < 2.0


async def test_zero_delay_still_yields_control_to_the_loop() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await collect(EchoProvider(delay=0).stream("echo", [ChatMessage("user", "w " * 50)]))
    task.cancel()
    assert ticks >= 50


async def test_cancel_stops_at_once() -> None:
    got: list[object] = []

    async def consume() -> None:
        async for item in EchoProvider(delay=10).stream("echo", [ChatMessage("user", "a b c")]):
            got.append(item)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.02)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1.0  # not the 10 s sleep
    assert got == ["a "]


async def test_list_models_and_health() -> None:
    provider = EchoProvider()
    assert provider.kind == "echo"
    assert await provider.list_models() == ["echo"]
    assert await provider.health() == 0.0


@given(st.text(max_size=200))
def test_tokens_concatenate_to_the_text(text: str) -> None:
    parts = tokens(text)
    assert "".join(parts) == text
    assert all(parts)
    assert len(parts) == max(1, len(text.split())) if text else parts == []
