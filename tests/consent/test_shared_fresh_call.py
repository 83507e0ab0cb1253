"""The asyncio server's shared head look keeps FreshRead's promise for coroutines: no check is
answered by a look that began before the check arrived; checks arriving during a look share the
next one; a failure reaches every caller sharing it; one caller's cancellation spares the rest.
Each caller raises an error object of its own."""

from __future__ import annotations

import asyncio

import pytest

from services.consent.async_checks import SharedFreshCall


class GatedHead:
    """A head whose looks, numbered in the order they begin, can be held open or made to fail."""

    def __init__(self) -> None:
        self.looks = 0
        self.fail = False
        self.gate = asyncio.Event()

    async def look(self) -> int:
        self.looks += 1
        number = self.looks
        try:
            await asyncio.wait_for(self.gate.wait(), 10)
        except TimeoutError:
            raise TimeoutError("the test never opened the gate") from None
        if self.fail:
            raise RuntimeError("store down")
        return number


async def until(condition) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


def frames(traceback) -> int:
    count = 0
    while traceback is not None:
        count, traceback = count + 1, traceback.tb_next
    return count


async def a_look_held_open() -> tuple[GatedHead, SharedFreshCall, asyncio.Task]:
    """A shared call whose first look has begun and waits at the gate; the task awaiting it."""
    head = GatedHead()
    shared = SharedFreshCall(head.look)
    first = asyncio.create_task(shared())
    await until(lambda: head.looks == 1)
    return head, shared, first


def test_callers_arriving_during_a_look_share_the_next_one():
    async def scenario() -> None:
        head, shared, first = await a_look_held_open()
        later = [asyncio.create_task(shared()) for _ in range(50)]
        await asyncio.sleep(0.01)
        assert head.looks == 1  # nobody else began a look while one runs
        head.gate.set()
        assert await first == 1
        assert await asyncio.gather(*later) == [2] * 50  # the look that began after they arrived
        assert head.looks == 2
        assert await shared() == 3  # nothing running: a caller begins its own look

    asyncio.run(scenario())


def test_a_caller_arriving_while_the_shared_look_runs_waits_for_a_third():
    async def scenario() -> None:
        head, shared, first = await a_look_held_open()
        second = asyncio.create_task(shared())
        await asyncio.sleep(0.01)
        head.gate.set()
        assert await first == 1
        head.gate.clear()
        await until(lambda: head.looks == 2)  # the second's look runs, held open
        third = asyncio.create_task(shared())
        await asyncio.sleep(0.01)
        head.gate.set()
        assert (await second, await third) == (2, 3)

    asyncio.run(scenario())


def test_a_failed_look_reaches_every_caller_sharing_it_and_the_next_caller_looks_again():
    async def scenario() -> None:
        head, shared, first = await a_look_held_open()
        later = [asyncio.create_task(shared()) for _ in range(5)]
        await asyncio.sleep(0.01)
        head.fail = True
        head.gate.set()
        raised = []
        for task in [first, *later]:
            with pytest.raises(RuntimeError, match="store down") as failed:
                await task
            raised.append(failed.value)
        # Each caller raises an error of its own (one object raised by all would gather every
        # caller's frames in its traceback), caused by its look's own: the first caller's look,
        # and the one the five later callers shared.
        assert len({id(e) for e in raised}) == 6
        assert len({id(e.__cause__) for e in raised[1:]}) == 1
        assert raised[0].__cause__ is not raised[1].__cause__
        assert isinstance(raised[0].__cause__, RuntimeError)
        assert max(frames(e.__traceback__) for e in raised) == frames(raised[0].__traceback__)
        head.fail = False
        assert await shared() == 3

    asyncio.run(scenario())


def test_a_cancelled_caller_leaves_the_others_their_look():
    async def scenario() -> None:
        head, shared, first = await a_look_held_open()
        leaving, staying = asyncio.create_task(shared()), asyncio.create_task(shared())
        await asyncio.sleep(0.01)
        leaving.cancel()
        first.cancel()
        head.gate.set()
        assert await staying == 2
        assert leaving.cancelled()
        assert first.cancelled()
        assert await shared() == 3

    asyncio.run(scenario())


def test_no_look_begins_for_callers_that_all_left():
    async def scenario() -> None:
        head, shared, first = await a_look_held_open()
        leaving = [asyncio.create_task(shared()) for _ in range(3)]
        await asyncio.sleep(0.01)
        for task in leaving:
            task.cancel()
        head.gate.set()
        assert await first == 1
        await asyncio.sleep(0.05)
        assert head.looks == 1  # nobody is waiting for a second look (a server shutting down)

    asyncio.run(scenario())
