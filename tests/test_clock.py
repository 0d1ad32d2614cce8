"""ManualClock moves only when told to and wakes sleepers exactly; SystemClock is the loop's."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from viggle_async._clock import Clock, SystemClock
from viggle_async.testing import ManualClock


async def test_sleepers_wake_in_deadline_order_at_their_own_deadline() -> None:
    clock = ManualClock(start=100.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, deadline: float) -> None:
        await clock.sleep_until(deadline)
        woke.append((name, clock.now()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper, "late", 107.0)
        tg.start_soon(sleeper, "early", 102.5)
        tg.start_soon(sleeper, "middle", 105.0)
        await clock.run_until_idle()
        assert clock.sleepers == 3
        await clock.advance(6.0)
        assert woke == [("early", 102.5), ("middle", 105.0)]
        assert clock.now() == 106.0
        await clock.advance_to(200.0)
    assert woke[-1] == ("late", 107.0)
    assert clock.sleepers == 0


async def test_one_advance_wakes_a_looping_sleeper_at_every_step() -> None:
    clock = ManualClock()
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            await clock.sleep(1.5)
            ticks.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await clock.run_until_idle()
        await clock.advance(7.0)
        tg.cancel_scope.cancel()
    assert ticks == [1.5, 3.0, 4.5, 6.0]


async def test_past_deadline_returns_without_moving_time() -> None:
    clock = ManualClock(start=5.0)
    await clock.sleep_until(4.0)
    await clock.sleep_until(5.0)
    assert clock.now() == 5.0
    assert clock.sleepers == 0


async def test_cancelled_sleeper_leaves_no_waiter_behind() -> None:
    clock = ManualClock()
    finished = False

    async def sleeper() -> None:
        nonlocal finished
        await clock.sleep(10.0)
        finished = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await clock.run_until_idle()
        assert clock.sleepers == 1
        assert clock.next_deadline() == 10.0
        tg.cancel_scope.cancel()
    assert clock.sleepers == 0
    assert clock.next_deadline() is None
    await clock.advance(20.0)
    assert not finished


async def test_time_cannot_go_backwards() -> None:
    clock = ManualClock(start=3.0)
    with pytest.raises(ValueError):
        await clock.advance(-1.0)
    with pytest.raises(ValueError):
        await clock.advance_to(2.0)
    assert clock.now() == 3.0


async def test_run_until_idle_lets_a_chain_of_tasks_finish() -> None:
    clock = ManualClock()
    events = [anyio.Event() for _ in range(50)]
    order: list[int] = []

    async def relay(i: int) -> None:
        await events[i].wait()
        order.append(i)
        if i + 1 < len(events):
            events[i + 1].set()

    async with anyio.create_task_group() as tg:
        for i in range(len(events)):
            tg.start_soon(relay, i)
        await clock.run_until_idle()
        events[0].set()
        await clock.run_until_idle()
        assert order == list(range(50))


async def test_autojump_skips_idle_time() -> None:
    clock = ManualClock()
    seen: list[float] = []

    async def worker(delay: float) -> None:
        await clock.sleep(delay)
        seen.append(clock.now())

    async with clock.autojump():
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker, 3600.0)
            tg.start_soon(worker, 60.0)
        await clock.sleep(1.0)
    assert seen == [60.0, 3600.0]
    assert clock.now() == 3601.0
    assert clock.sleepers == 0


async def test_autojump_cannot_nest() -> None:
    clock = ManualClock()
    async with clock.autojump():
        with pytest.raises(RuntimeError):
            async with clock.autojump():
                pass


async def test_system_clock_follows_the_event_loop() -> None:
    clock: Clock = SystemClock()
    assert isinstance(clock, Clock)
    assert isinstance(ManualClock(), Clock)
    before = anyio.current_time()
    start = clock.now()
    assert before <= start <= anyio.current_time()
    await clock.sleep_until(start - 1.0)  # past: returns at once
    target = clock.now() + 0.005
    await clock.sleep_until(target)
    assert clock.now() >= target


def _slow_read(path: str) -> bytes:
    # A file read that a loaded machine takes a while to finish, in real time.
    time.sleep(0.05)
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("handoff", ["anyio.to_thread", "loop.run_in_executor"])
async def test_autojump_waits_for_work_out_in_a_worker_thread(
        handoff: str, tmp_path: Path) -> None:
    # A request that reads its upload file in a thread (anyio's, or aiohttp's executor) is not
    # waiting on the clock: time must not jump past the other tasks' deadlines meanwhile.
    # Before, the loop's empty ready queue counted as idle and time raced ahead.
    clock = ManualClock()
    path = tmp_path / "upload.bin"
    path.write_bytes(b"x" * 1024)
    seen: list[float] = []

    async def ticker() -> None:
        while True:
            await clock.sleep(1.0)

    async def reader() -> None:
        for _ in range(3):
            if handoff == "anyio.to_thread":
                data = await anyio.to_thread.run_sync(_slow_read, str(path))
            else:
                loop = asyncio.get_running_loop()
                data = await loop.run_in_executor(None, _slow_read, str(path))
            assert len(data) == 1024
            seen.append(clock.now())

    async with clock.autojump(), anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await reader()
        tg.cancel_scope.cancel()
    assert seen == [0.0, 0.0, 0.0]


async def test_run_until_idle_waits_for_a_thread_handoff_chain() -> None:
    # Thread → loop → thread: each hop leaves the ready queue empty for a while.
    clock = ManualClock()
    done: list[int] = []

    async def chain() -> None:
        for i in range(3):
            await anyio.to_thread.run_sync(time.sleep, 0.02)
            done.append(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(chain)
        await clock.run_until_idle()
        assert done == [0, 1, 2]
