"""Coalescing a reply's deltas into frames: the first at once, all text in order, the window's width."""

from __future__ import annotations

import asyncio
import random
import time

from server.coalescing import PROBE, Coalescer, Window


def collector(window: Window) -> tuple[Coalescer, list[str]]:
    frames: list[str] = []
    return Coalescer(frames.append, window), frames


async def test_first_delta_goes_out_at_once_even_with_the_widest_window() -> None:
    coalescer, frames = collector(Window(base=10.0, cap=10.0))
    coalescer.add("Hel")
    assert frames == ["Hel"]  # synchronously, inside add()
    coalescer.add("lo")
    coalescer.add(" there")
    await asyncio.sleep(0.02)
    assert frames == ["Hel"]  # inside the window: held
    coalescer.close()
    assert frames == ["Hel", "lo there"]


async def test_tokens_of_one_read_share_a_frame_once_the_window_has_passed() -> None:
    coalescer, frames = collector(Window(base=0.0, cap=0.0))
    coalescer.add("a")
    for token in ("b", "c", "d"):  # what one read parses: no await between them
        coalescer.add(token)
    await asyncio.sleep(0)
    assert frames == ["a", "bcd"]


async def test_a_held_frame_goes_out_when_its_window_ends() -> None:
    coalescer, frames = collector(Window(base=0.05, cap=0.05))
    coalescer.add("a")
    coalescer.add("b")
    await asyncio.sleep(0.2)
    assert frames == ["a", "b"]
    coalescer.close()
    assert frames == ["a", "b"]


async def test_random_arrivals_lose_nothing_and_keep_order() -> None:
    rng = random.Random(7)
    for _ in range(20):
        window = Window(base=rng.choice([0.0, 0.002, 0.01]), cap=0.03)
        window.observe(rng.choice([0.0, 0.005, 0.05]))  # a loop under some load, or none
        coalescer, frames = collector(window)
        tokens = [f"<{i}>" for i in range(rng.randint(1, 40))]
        for token in tokens:
            coalescer.add(token)
            if rng.random() < 0.5:
                await asyncio.sleep(rng.choice([0, 0.001, 0.004]))
        assert frames[0] == tokens[0]
        coalescer.close()
        assert "".join(frames) == "".join(tokens)
        assert all(frames)


async def test_close_with_nothing_pending_sends_nothing_more() -> None:
    coalescer, frames = collector(Window(base=0.01, cap=0.01))
    coalescer.close()
    assert frames == []
    coalescer.add("x")
    coalescer.close()
    assert frames == ["x"]


def test_window_follows_lag_up_to_its_cap_and_narrows_back_to_base() -> None:
    window = Window(base=0.015, cap=0.06)
    window.observe(0.001)
    assert window.value == 0.015  # keeping up: the configured window
    window.observe(0.02)
    assert window.value == 0.04  # twice the lag
    window.observe(0.5)
    assert window.value == 0.06  # never past the cap
    for _ in range(60):
        window.observe(0.0)
    assert window.value == 0.015


def test_window_widens_with_how_busy_the_process_is_from_60_to_90_percent() -> None:
    window = Window(base=0.01, cap=0.07)
    window.observe(0.0, busy=0.5)
    assert window.value == 0.01
    window.observe(0.0, busy=0.75)
    assert abs(window.value - 0.04) < 1e-9  # halfway between 60% and 90%: halfway to the cap
    window.observe(0.0, busy=1.0)
    assert window.value == 0.07
    for _ in range(60):
        window.observe(0.0, busy=0.1)
    assert window.value == 0.01


def test_window_of_zero_growth_never_widens() -> None:
    window = Window(base=0.0, cap=0.0)
    window.observe(1.0, busy=1.0)
    assert window.value == 0.0


async def test_a_blocked_loop_widens_the_window_while_replies_stream() -> None:
    window = Window(base=0.001, cap=0.2)
    window.enter()
    try:
        await asyncio.sleep(PROBE / 2)
        time.sleep(PROBE * 2)  # the loop is stuck: the probe runs late by about this much
        await asyncio.sleep(PROBE * 1.5)
        assert window.value > 0.05
    finally:
        window.leave()
    assert window.value == 0.001  # no reply streaming: back to the base, and no probe left running
