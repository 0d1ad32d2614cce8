"""``RowBook``: a distributed run's rows and their dependencies, across "processes" (each
ledger has its own pool)."""

from __future__ import annotations

import anyio
import pytest
from pghelp import LedgerFactory

from viggle_async.pg import LedgerError, RowBook


async def _finish(book: RowBook, key: str, got: list[list[str]]) -> None:
    ready, _ = await book.finish(key, ok=True, outcome={"state": "ready"}, asset_id=f"id-{key}")
    got.append(ready)


async def test_a_render_needing_two_assets_is_queued_once_when_both_finish_together(
        open_ledger: LedgerFactory) -> None:
    for attempt in range(5):  # the race is between two commits: try it a few times
        run = f"run{attempt}"
        a, b = await open_ledger(), await open_ledger()
        ready = await RowBook(a, run).add([
            ("alice", "character", {"n": 1}, ()), ("duo", "scene", {"n": 2}, ()),
            ("r1", "render", {"n": 3}, ("alice", "duo"))])
        assert ready == ["alice", "duo"]
        got: list[list[str]] = []

        async with anyio.create_task_group() as tg:
            tg.start_soon(_finish, RowBook(a, run), "alice", got)
            tg.start_soon(_finish, RowBook(b, run), "duo", got)
        assert sorted(got) == [[], ["r1"]]  # exactly one finisher queues it
        assert await RowBook(a, run).asset_ids(["alice", "duo"]) == {
            "alice": "id-alice", "duo": "id-duo"}


async def test_a_failed_asset_fails_everything_below_it(open_ledger: LedgerFactory) -> None:
    book = RowBook(await open_ledger(), "r")
    await book.add([("c", "character", {}, ()), ("s", "scene", {}, ()),
                    ("r1", "render", {}, ("c",)), ("r2", "render", {}, ("c", "s")),
                    ("r3", "render", {}, ("s",))])
    assert await book.finish("c", ok=False, outcome={"state": "failed"}) == (
        [], ["r1", "r2"])
    row = await book.get("r2")
    assert row is not None and row.state == "failed"
    assert "depends on c, which failed" in str((row.outcome or {})["error"])
    assert await book.finish("s", ok=True, outcome={}, asset_id="x") == (["r3"], [])
    assert (await book.counts()).by_state == {"done": 1, "failed": 3, "queued": 1}


async def test_enqueueing_again_is_idempotent_and_a_changed_row_is_refused(
        open_ledger: LedgerFactory) -> None:
    book = RowBook(await open_ledger(), "r")
    rows = [("c", "character", {"image": "a"}, ()), ("r1", "render", {}, ("c",))]
    assert await book.add(rows) == ["c"]
    await book.finish("c", ok=True, outcome={}, asset_id="x")
    assert await book.add(rows) == ["r1"]  # c stays done; r1 still to run
    with pytest.raises(LedgerError, match=r"row 'c': recorded with other inputs.*--run"):
        await book.add([("c", "character", {"image": "b"}, ())])


async def test_retry_puts_failed_rows_back_unless_a_dependency_stays_failed(
        open_ledger: LedgerFactory) -> None:
    book = RowBook(await open_ledger(), "r")
    await book.add([("c", "character", {}, ()), ("s", "scene", {}, ()),
                    ("r1", "render", {}, ("c",)), ("r2", "render", {}, ("c", "s")),
                    ("r3", "render", {}, ("s",)), ("r4", "render", {}, ())])
    await book.finish("c", ok=False, outcome={"state": "failed"})  # r1, r2 fail with it
    await book.finish("s", ok=False, outcome={"state": "failed"})  # r3 too
    await book.finish("r4", ok=True, outcome={"state": "complete"})
    # c back (and r1 below it); r2 also needs s, which stays failed: r2 keeps its end.
    # r4 is done and "nope" unknown: both left alone.
    assert await book.retry(["c", "r1", "r2", "r4", "nope"]) == (["c", "r1"], ["c"])
    assert {r.key: r.state for r in await book.rows()} == {
        "c": "queued", "s": "failed", "r1": "waiting", "r2": "failed", "r3": "failed",
        "r4": "done"}
    assert (await book.get("c")).outcome is None  # type: ignore[union-attr]
    # Once c is done, r1 is queued by the usual path.
    assert await book.finish("c", ok=True, outcome={}, asset_id="x") == (["r1"], [])
    # Rows already queued come back too (as from add): deferring again is a no-op.
    assert await book.retry(["s", "r2", "r3"]) == (["s", "r2", "r3"], ["s", "r1"])
