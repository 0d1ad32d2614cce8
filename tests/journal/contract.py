"""The journal-store contract, as a reusable test suite.

A new store passes when a subclass of ``StoreContract`` (and of ``PersistentStoreContract``,
``AssetIndexContract`` or ``LeaseStoreContract`` for what it offers) implements ``open_store``
and every inherited test passes. The tests drive the store through the public ``Journal``
state machine, the way the supervisor does, plus the raw ``apply`` rules the machine relies on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from viggle_async import (
    AssetIndex,
    EntryState,
    Journal,
    JournalClosedError,
    JournalEntry,
    JournalMismatchError,
    JournalStore,
    JournalTransitionError,
    LeaseStore,
    api_key_fingerprint,
)
from viggle_async._journal import request_fingerprint

FP = request_fingerprint({"ref_image": "a.png", "driving_video": "b.mp4"})


def ticker() -> Callable[[], float]:
    counter = itertools.count(1000)
    return lambda: float(next(counter))


IllegalStep = Callable[[Journal], Awaitable[object]]


async def _walk(journal: Journal, key: str, steps: list[str]) -> None:
    for s in steps:
        if s == "intent":
            await journal.record_intent(key, kind="render", fingerprint=FP)
        elif s == "sending":
            await journal.mark_sending(key)
        elif s == "submitted":
            await journal.record_submitted(key, "job_1")
        else:
            await journal.record_final(key, status="failed", error="boom")


def _any_file_contains(root: Path, needle: bytes) -> bool:
    return any(needle in f.read_bytes() for f in root.rglob("*") if f.is_file())


class StoreContract:
    """What every ``JournalStore`` must do. Subclasses implement ``open_store``."""

    async def open_store(self, path: Path, *, clock: Callable[[], float]) -> JournalStore:
        raise NotImplementedError

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[JournalStore]:
        s = await self.open_store(tmp_path / "journal", clock=ticker())
        yield s
        await s.close()

    @pytest.fixture
    def journal(self, store: JournalStore) -> Journal:
        return Journal(store, clock=ticker())

    async def test_is_a_journal_store(self, store: JournalStore) -> None:
        assert isinstance(store, JournalStore)

    async def test_round_trip_through_every_state(self, journal: Journal) -> None:
        e1 = await journal.record_intent("clip-1", kind="render", fingerprint=FP)
        assert (e1.state, e1.attempts, e1.job_id) == (EntryState.INTENT, 1, None)
        e2 = await journal.mark_sending("clip-1")
        assert e2.ambiguous
        e3 = await journal.record_submitted("clip-1", "job_abc123xyz")
        final = await journal.record_final(
            "clip-1", status="complete", outputs=[Path("/out/clip-1.mp4"), "/out/c.mask.mp4"])
        assert final == JournalEntry(
            key="clip-1", kind="render", fingerprint=FP, state=EntryState.FINAL,
            job_id="job_abc123xyz", final_status="complete",
            outputs=("/out/clip-1.mp4", "/out/c.mask.mp4"), error=None, attempts=1,
            created_at=e1.created_at, updated_at=final.updated_at)
        assert e1.created_at < e2.updated_at < e3.updated_at < final.updated_at
        await journal.record_intent("clip-2", kind="character", fingerprint="f2")
        assert await journal.get("clip-1") == final
        assert await journal.get("nope") is None
        assert [e.key for e in await journal.entries()] == ["clip-1", "clip-2"]

    async def test_entries_keep_first_recorded_order(self, journal: Journal) -> None:
        for key in ["b", "a", "c"]:
            await journal.record_intent(key, kind="render", fingerprint=FP)
        await _walk(journal, "a", ["sending", "submitted", "final"])  # an update keeps its place
        assert [e.key for e in await journal.entries()] == ["b", "a", "c"]

    async def test_a_create_refused_outright_goes_final_without_job_id(
            self, journal: Journal) -> None:
        await journal.record_intent("k", kind="render", fingerprint=FP)
        e = await journal.record_final("k", status="rejected", error="400 CS-ORIV-001")
        assert (e.state, e.job_id, e.error) == (EntryState.FINAL, None, "400 CS-ORIV-001")

    @pytest.mark.parametrize(("setup", "step"), [
        ([], lambda j: j.mark_sending("k")),
        ([], lambda j: j.record_submitted("k", "job_1")),
        ([], lambda j: j.record_final("k", status="failed")),
        (["intent"], lambda j: j.record_submitted("k", "job_1")),
        (["intent", "sending"], lambda j: j.mark_sending("k")),
        (["intent", "sending", "submitted"], lambda j: j.mark_sending("k")),
        (["intent", "sending", "submitted"], lambda j: j.record_submitted("k", "job_2")),
        (["intent", "sending", "submitted"],
         lambda j: j.record_intent("k", kind="render", fingerprint=FP, replace=True)),
        (["intent", "sending"], lambda j: j.record_intent("k", kind="render", fingerprint=FP)),
        (["intent", "final"], lambda j: j.record_intent("k", kind="render", fingerprint=FP)),
        (["intent", "final"], lambda j: j.mark_sending("k")),
    ])
    async def test_illegal_transitions_are_refused_and_change_nothing(
        self, journal: Journal, setup: list[str], step: IllegalStep
    ) -> None:
        await _walk(journal, "k", setup)
        before = await journal.get("k")
        with pytest.raises(JournalTransitionError):
            await step(journal)
        assert await journal.get("k") == before

    async def test_same_key_with_other_inputs_is_detected(self, journal: Journal) -> None:
        await journal.record_intent("k", kind="render", fingerprint=FP)
        with pytest.raises(JournalMismatchError):
            await journal.record_intent("k", kind="render", fingerprint="other", replace=True)
        with pytest.raises(JournalMismatchError):
            await journal.record_intent("k", kind="scene", fingerprint=FP)

    async def test_resubmission_rules(self, journal: Journal) -> None:
        # never reached "sending": safe to record the intent again
        await journal.record_intent("k", kind="render", fingerprint=FP)
        again = await journal.record_intent("k", kind="render", fingerprint=FP)
        assert (again.state, again.attempts) == (EntryState.INTENT, 2)
        # ambiguous: only when the user asks
        await journal.mark_sending("k")
        forced = await journal.record_intent("k", kind="render", fingerprint=FP, replace=True)
        assert (forced.state, forced.attempts) == (EntryState.INTENT, 3)
        # a final failure can be retried on request; the old outcome is cleared
        await journal.record_final("k", status="failed", error="CS-UORC01-009")
        retry = await journal.record_intent("k", kind="render", fingerprint=FP, replace=True)
        assert (retry.state, retry.final_status, retry.error, retry.attempts) == (
            EntryState.INTENT, None, None, 4)

    async def test_repeating_the_same_answer_is_a_no_op(self, journal: Journal) -> None:
        await _walk(journal, "k", ["intent", "sending"])
        first = await journal.record_submitted("k", "job_1")
        assert await journal.record_submitted("k", "job_1") == first
        done = await journal.record_final("k", status="complete", outputs=["/o.mp4"])
        assert await journal.record_final("k", status="complete", outputs=["/o.mp4"]) == done

    async def test_a_final_outcome_can_be_recorded_again(self, journal: Journal) -> None:
        # e.g. a rerun found the output file missing and downloaded it again
        await _walk(journal, "k", ["intent", "sending", "submitted"])
        await journal.record_final("k", "complete", ["/gone.mp4"])
        again = await journal.record_final("k", "complete", ["/new.mp4"])
        assert (again.job_id, again.outputs) == ("job_1", ("/new.mp4",))
        assert await journal.get("k") == again

    async def test_secrets_never_reach_the_store(
            self, journal: Journal, tmp_path: Path) -> None:
        await journal.record_intent("k", kind="render", fingerprint=FP)
        e = await journal.record_final(
            "k", status="failed", error="401: Authorization: Bearer sk-live-SECRET123 rejected")
        assert e.error is not None and "SECRET123" not in e.error
        assert "Bearer <redacted>" in e.error
        await journal.close()
        assert not await anyio.to_thread.run_sync(_any_file_contains, tmp_path, b"SECRET123")

    async def test_use_after_close_is_refused(self, journal: Journal) -> None:
        await journal.close()
        await journal.close()  # idempotent
        with pytest.raises(JournalClosedError):
            await journal.record_intent("k", kind="render", fingerprint=FP)
        with pytest.raises(JournalClosedError):
            await journal.entries()
        with pytest.raises(JournalClosedError):
            await journal.get("k")

    async def test_a_refused_transition_stores_nothing(self, store: JournalStore) -> None:
        def refuse(old: JournalEntry | None) -> JournalEntry:
            raise JournalTransitionError("no")

        with pytest.raises(JournalTransitionError):
            await store.apply("k", refuse)
        assert await store.get("k") is None
        assert await store.entries() == []

    async def test_concurrent_writers_are_serialised(self, journal: Journal) -> None:
        async def work(i: int) -> None:
            key = f"k{i}"
            await _walk(journal, key, ["intent", "sending"])
            await journal.record_submitted(key, f"job_{i}")
            await journal.record_final(key, status="complete")

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(work, i)
        entries = await journal.entries()
        assert len(entries) == 40
        assert {(e.state, e.final_status) for e in entries} == {(EntryState.FINAL, "complete")}

    async def test_concurrent_transitions_on_one_key_see_each_other(
            self, journal: Journal) -> None:
        # 20 tasks race to take "k" from intent to sending: exactly one may win, or the same
        # job could be sent twice.
        await journal.record_intent("k", kind="render", fingerprint=FP)
        wins: list[int] = []

        async def race(i: int) -> None:
            try:
                await journal.mark_sending("k")
                wins.append(i)
            except JournalTransitionError:
                pass

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(race, i)
        assert len(wins) == 1
        assert (await journal.get("k")).state is EntryState.SENDING  # type: ignore[union-attr]

    async def test_a_cancelled_write_is_whole_or_absent(self, journal: Journal) -> None:
        # Cancel writes at every point they can be cancelled: each key afterwards holds a
        # state that was really reached, and the store still works.
        for i in range(30):
            key = f"k{i}"
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_walk, journal, key, ["intent", "sending", "submitted"])
                    for _ in range(i % 6):
                        await anyio.lowlevel.checkpoint()
                    scope.cancel()
            e = await journal.get(key)
            assert e is None or e.state in ("intent", "sending", "submitted")
        await journal.record_intent("after", kind="render", fingerprint=FP)
        assert (await journal.get("after")) is not None


    async def test_a_plain_task_cancel_mid_write_leaves_a_whole_step(
            self, journal: Journal) -> None:
        # aiohttp cancels an upload's body writer with task.cancel(), which anyio's shields do
        # not stop, and "sending" is written from inside it (issue 11.12).
        for i in range(24):
            key = f"k{i}"
            await journal.record_intent(key, kind="render", fingerprint=FP)
            task = asyncio.ensure_future(journal.mark_sending(key))
            for _ in range(i % 8):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            e = await journal.get(key)
            assert e is not None and e.state in (EntryState.INTENT, EntryState.SENDING)
            await journal.record_final(key, status="failed")  # the next write still works
        assert len(await journal.entries()) == 24


class PersistentStoreContract(StoreContract):
    """A store that keeps entries across close and reopen (e.g. a file or a server)."""

    async def test_reopening_keeps_every_entry(self, tmp_path: Path) -> None:
        path = tmp_path / "journal"
        first = Journal(await self.open_store(path, clock=ticker()), clock=ticker())
        async with first:
            await _walk(first, "a", ["intent", "sending"])
            await _walk(first, "b", ["intent", "final"])
            await _walk(first, "c", ["intent", "sending", "submitted"])
            before = await first.entries()
        async with Journal(await self.open_store(path, clock=ticker())) as again:
            assert await again.entries() == before
            assert (await again.get("a")).ambiguous  # type: ignore[union-attr]


ACCOUNT_A = api_key_fingerprint("sk-account-a")
ACCOUNT_B = api_key_fingerprint("sk-account-b")


class AssetIndexContract:
    """For stores offering ``AssetIndex``; mix in beside ``StoreContract``."""

    async def test_is_an_asset_index(self, store: JournalStore) -> None:
        assert isinstance(store, AssetIndex)

    async def test_assets_are_found_per_account_and_content(
            self, store: JournalStore) -> None:
        assert isinstance(store, AssetIndex)
        assert await store.find_asset(ACCOUNT_A, "h1") is None
        await store.remember_asset(ACCOUNT_A, "h1", "char_1")
        await store.remember_asset(ACCOUNT_A, "h2", "char_2")
        assert await store.find_asset(ACCOUNT_A, "h1") == "char_1"
        assert await store.find_asset(ACCOUNT_A, "h2") == "char_2"
        # another API key never sees the first one's assets
        assert await store.find_asset(ACCOUNT_B, "h1") is None
        await store.remember_asset(ACCOUNT_B, "h1", "char_9")
        assert await store.find_asset(ACCOUNT_A, "h1") == "char_1"
        # replaced (re-created) and forgotten (deleted on the server)
        await store.remember_asset(ACCOUNT_A, "h1", "char_3")
        assert await store.find_asset(ACCOUNT_A, "h1") == "char_3"
        await store.forget_asset(ACCOUNT_A, "h1")
        await store.forget_asset(ACCOUNT_A, "h1")  # no-op
        assert await store.find_asset(ACCOUNT_A, "h1") is None
        assert await store.find_asset(ACCOUNT_B, "h1") == "char_9"

    async def test_the_key_itself_is_never_stored(self, tmp_path: Path) -> None:
        assert "sk-account-a" not in ACCOUNT_A and len(ACCOUNT_A) == 64
        assert ACCOUNT_A == api_key_fingerprint("sk-account-a") != ACCOUNT_B


class LeaseStoreContract:
    """For stores offering ``LeaseStore``; ``open_store``'s clock times the leases."""

    async def test_a_lease_excludes_other_owners_until_released_or_expired(
            self, tmp_path: Path) -> None:
        now = [100.0]
        store = await self.open_store(tmp_path / "leases", clock=lambda: now[0])  # type: ignore[attr-defined]
        try:
            assert isinstance(store, LeaseStore)
            assert await store.acquire_lease("k", "w1", ttl=10)
            assert not await store.acquire_lease("k", "w2", ttl=10)
            assert await store.acquire_lease("k", "w1", ttl=10)  # renewal, until 110
            assert await store.acquire_lease("other", "w2", ttl=10)
            await store.release_lease("k", "w2")  # not w2's: no effect
            now[0] = 109.0
            assert not await store.acquire_lease("k", "w2", ttl=10)
            now[0] = 110.5
            assert await store.acquire_lease("k", "w2", ttl=10)  # w1's lease expired
            await store.release_lease("k", "w2")
            assert await store.acquire_lease("k", "w1", ttl=10)
        finally:
            await store.close()
