"""The ``AccountState`` contract, run against every implementation (today the in-process
one; a store shared across processes plugs into ``ACCOUNTS``)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from viggle_async._account import AccountState, LocalAccountState

ACCOUNTS: dict[str, Callable[[float | None], AccountState]] = {
    "local": lambda budget: LocalAccountState(budget=budget),
}


@pytest.fixture(params=sorted(ACCOUNTS))
def make(request: pytest.FixtureRequest) -> Callable[[float | None], AccountState]:
    return ACCOUNTS[request.param]


async def test_reserve_is_atomic_against_one_committed_total(
        make: Callable[[float | None], AccountState]) -> None:
    account = make(10)
    results: list[str | None] = []

    async def one() -> None:
        results.append(await account.reserve(3))

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(one)
    assert results.count(None) == 3  # 9 of 10 credits; the other three are refused
    assert all("over credit_budget" in r for r in results if r)
    assert await account.committed() == 9


async def test_refund_and_fallback_settle_the_committed_total(
        make: Callable[[float | None], AccountState]) -> None:
    account = make(10)
    assert await account.reserve(8) is None  # a fast render of 4 s
    # submitted standard: half (docs/api/credits.md#costs)
    assert await account.settle_fallback(8) == 4
    assert await account.committed() == 4
    assert await account.reserve(6) is None
    await account.refund(6)  # refused, or failed and refunded by the API
    assert await account.committed() == 4


async def test_an_unknown_cost_is_refused_only_under_a_budget(
        make: Callable[[float | None], AccountState]) -> None:
    assert await make(None).reserve(None) is None
    refusal = await make(100).reserve(None)
    assert refusal is not None and "estimated_seconds" in refusal


async def test_a_stop_refuses_every_later_reservation_and_keeps_its_first_reason(
        make: Callable[[float | None], AccountState]) -> None:
    account = make(None)
    await account.stop("stopped after 402")
    await account.stop("the journal could not be written")
    assert await account.stopped() == "stopped after 402"
    assert await account.reserve(1) == "stopped after 402"


async def test_pauses_only_ever_extend(make: Callable[[float | None], AccountState]) -> None:
    account = make(None)
    await account.pause_creates(30.0)
    await account.pause_creates(10.0)  # a shorter Retry-After later must not cut it short
    await account.pause_polls(5.0)
    assert await account.creates_paused_until() == 30.0
    assert await account.polls_paused_until() == 5.0


async def test_the_fast_gate_closes_for_all_and_one_probe_holds_it(
        make: Callable[[float | None], AccountState]) -> None:
    account = make(None)
    assert await account.fast_open()
    await account.fast_refused()
    await account.fast_refused()
    assert not await account.fast_open()
    assert await account.capacity_rejections() == 2
    inside = 0
    peak = 0

    async def probe(i: int) -> None:
        nonlocal inside, peak
        async with account.probe() as failures:
            inside += 1
            peak = max(peak, inside)
            if i == 0:
                assert failures == 2  # the backoff grows with the refusals so far
                await anyio.lowlevel.checkpoint()
                await account.fast_accepted()
            else:
                assert failures is None  # opened while it queued: no probe needed
            inside -= 1

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(probe, i)
    assert peak == 1
    assert await account.fast_open()
