"""A worker's events: each instance's handled strictly in order, different instances' at the
same time (so their transitions share group commits), never more than the limit at once."""

from __future__ import annotations

import asyncio

from zapgate.sessions.key_order import KeyOrder


async def test_one_key_in_order_while_a_blocked_key_does_not_hold_up_the_others() -> None:
    order = KeyOrder()
    handled: list[tuple[str, int]] = []
    gate = asyncio.Event()

    async def handle(key: str, n: int) -> None:
        if key == "slow" and n == 0:
            await gate.wait()
        await asyncio.sleep(0.001 * ((7 * n) % 3))  # later items of a key may finish sooner
        handled.append((key, n))

    for n in range(5):
        for key in ("slow", "a", "b"):
            await order.submit(key, lambda key=key, n=n: handle(key, n))
    while len(handled) < 10:  # every item of the keys not blocked
        await asyncio.sleep(0.001)
    assert not [item for item in handled if item[0] == "slow"]
    gate.set()
    await order.drain()
    for key in ("slow", "a", "b"):
        assert [n for k, n in handled if k == key] == list(range(5))


async def test_at_most_limit_in_flight_and_the_reader_waits_for_room() -> None:
    order = KeyOrder(limit=3)
    running = 0
    most = 0
    release = asyncio.Event()

    async def handle() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1

    for n in range(3):
        await order.submit(f"k{n}", handle)
    fourth = asyncio.create_task(order.submit("k3", handle))
    await asyncio.sleep(0.01)
    assert not fourth.done()  # no room: the stream is not read further
    release.set()
    await fourth
    await order.drain()
    assert most == 3
    assert running == 0


async def test_a_failing_item_does_not_stop_the_next_of_its_key() -> None:
    order = KeyOrder()
    handled: list[int] = []

    async def fail() -> None:
        raise RuntimeError("boom")

    async def handle() -> None:
        handled.append(1)

    await order.submit("k", fail)
    await order.submit("k", handle)
    await order.drain()
    assert handled == [1]
