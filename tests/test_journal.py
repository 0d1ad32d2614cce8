"""The journal's state machine in both stores, SQLite durability, and a SIGKILL crash test."""

from __future__ import annotations

import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from viggle_async._journal import (
    EntryState,
    Journal,
    JournalClosedError,
    JournalEntry,
    JournalFormatError,
    JournalInUseError,
    JournalMismatchError,
    JournalTransitionError,
    MemoryJournal,
    request_fingerprint,
)
from viggle_async._journal_sqlite import SCHEMA_VERSION, SQLiteJournal

FP = request_fingerprint({"ref_image": "a.png", "driving_video": "b.mp4"})


def ticker() -> Callable[[], float]:
    counter = itertools.count(1000)
    return lambda: float(next(counter))


@pytest.fixture(params=["memory", "sqlite"])
async def journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Journal]:
    j: Journal
    if request.param == "memory":
        j = MemoryJournal(clock=ticker())
    else:
        j = await SQLiteJournal.open(tmp_path / "journal.db", clock=ticker())
    yield j
    await j.close()


async def test_round_trip_through_every_state(journal: Journal) -> None:
    e1 = await journal.record_intent("clip-1", kind="render", fingerprint=FP)
    assert (e1.state, e1.attempts, e1.job_id) == (EntryState.INTENT, 1, None)
    e2 = await journal.mark_sending("clip-1")
    assert e2.ambiguous
    e3 = await journal.record_submitted("clip-1", "job_abc123xyz")
    final = await journal.record_final("clip-1", status="complete",
                                       outputs=[Path("/out/clip-1.mp4"), "/out/clip-1.mask.mp4"])
    assert final == JournalEntry(
        key="clip-1", kind="render", fingerprint=FP, state=EntryState.FINAL,
        job_id="job_abc123xyz", final_status="complete",
        outputs=("/out/clip-1.mp4", "/out/clip-1.mask.mp4"), error=None, attempts=1,
        created_at=e1.created_at, updated_at=final.updated_at)
    assert e1.created_at < e2.updated_at < e3.updated_at < final.updated_at
    await journal.record_intent("clip-2", kind="character", fingerprint="f2")
    assert await journal.get("clip-1") == final
    assert await journal.get("nope") is None
    assert [e.key for e in await journal.entries()] == ["clip-1", "clip-2"]


async def test_a_create_refused_outright_goes_final_without_job_id(journal: Journal) -> None:
    await journal.record_intent("k", kind="render", fingerprint=FP)
    e = await journal.record_final("k", status="rejected", error="400 CS-ORIV-001")
    assert (e.state, e.job_id, e.error) == (EntryState.FINAL, None, "400 CS-ORIV-001")


IllegalStep = Callable[[Journal], Awaitable[object]]


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
    journal: Journal, setup: list[str], step: IllegalStep
) -> None:
    for s in setup:
        if s == "intent":
            await journal.record_intent("k", kind="render", fingerprint=FP)
        elif s == "sending":
            await journal.mark_sending("k")
        elif s == "submitted":
            await journal.record_submitted("k", "job_1")
        else:
            await journal.record_final("k", status="failed", error="boom")
    before = await journal.get("k")
    with pytest.raises(JournalTransitionError):
        await step(journal)
    assert await journal.get("k") == before


async def test_same_key_with_other_inputs_is_detected(journal: Journal) -> None:
    await journal.record_intent("k", kind="render", fingerprint=FP)
    with pytest.raises(JournalMismatchError):
        await journal.record_intent("k", kind="render", fingerprint="other", replace=True)
    with pytest.raises(JournalMismatchError):
        await journal.record_intent("k", kind="scene", fingerprint=FP)


async def test_resubmission_rules(journal: Journal) -> None:
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


async def test_repeating_the_same_answer_is_a_no_op(journal: Journal) -> None:
    await journal.record_intent("k", kind="render", fingerprint=FP)
    await journal.mark_sending("k")
    first = await journal.record_submitted("k", "job_1")
    assert await journal.record_submitted("k", "job_1") == first
    done = await journal.record_final("k", status="complete", outputs=["/o.mp4"])
    assert await journal.record_final("k", status="complete", outputs=["/o.mp4"]) == done


async def test_a_final_outcome_can_be_recorded_again(journal: Journal) -> None:
    # e.g. a rerun found the output file missing and downloaded it again
    await journal.record_intent("k", "render", FP)
    await journal.mark_sending("k")
    await journal.record_submitted("k", "job_1")
    await journal.record_final("k", "complete", ["/gone.mp4"])
    again = await journal.record_final("k", "complete", ["/new.mp4"])
    assert (again.job_id, again.outputs) == ("job_1", ("/new.mp4",))
    assert await journal.get("k") == again


async def test_secrets_never_reach_the_store(journal: Journal, tmp_path: Path) -> None:
    await journal.record_intent("k", kind="render", fingerprint=FP)
    e = await journal.record_final(
        "k", status="failed", error="401: Authorization: Bearer sk-live-SECRET123 rejected")
    assert e.error is not None and "SECRET123" not in e.error
    assert "Bearer <redacted>" in e.error
    await journal.close()
    async for f in anyio.Path(tmp_path).iterdir():
        assert b"SECRET123" not in await f.read_bytes()


async def test_use_after_close_is_refused(journal: Journal) -> None:
    await journal.close()
    await journal.close()  # idempotent
    with pytest.raises(JournalClosedError):
        await journal.record_intent("k", kind="render", fingerprint=FP)
    with pytest.raises(JournalClosedError):
        await journal.entries()


def test_entries_cannot_hold_illegal_states() -> None:
    with pytest.raises(ValueError):
        JournalEntry("k", "render", FP, EntryState.SUBMITTED)  # no job id
    with pytest.raises(ValueError):
        JournalEntry("k", "render", FP, EntryState.SENDING, job_id="job_1")
    with pytest.raises(ValueError):
        JournalEntry("k", "render", FP, EntryState.FINAL, job_id="job_1")  # no status


def test_request_fingerprint_is_stable_and_input_sensitive() -> None:
    a = request_fingerprint({"x": 1, "y": [1, 2], "p": Path("/a")})
    assert a == request_fingerprint({"p": Path("/a"), "y": [1, 2], "x": 1})
    assert a != request_fingerprint({"x": 1, "y": [2, 1], "p": Path("/a")})


async def test_sqlite_reopens_with_everything_and_the_declared_format(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with await SQLiteJournal.open(path) as j:
        await j.record_intent("a", kind="render", fingerprint=FP)
        await j.mark_sending("a")
        await j.record_intent("b", kind="render", fingerprint=FP)
        await j.record_final("b", status="rejected", error="400")
        before = await j.entries()
    async with await SQLiteJournal.open(path) as j:
        assert await j.entries() == before
        assert (await j.get("a")).ambiguous  # type: ignore[union-attr]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


async def test_sqlite_serialises_concurrent_writers(tmp_path: Path) -> None:
    async with await SQLiteJournal.open(tmp_path / "j.db") as j:

        async def work(i: int) -> None:
            key = f"k{i}"
            await j.record_intent(key, kind="render", fingerprint=FP)
            await j.mark_sending(key)
            await j.record_submitted(key, f"job_{i}")
            await j.record_final(key, status="complete")

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(work, i)
        entries = await j.entries()
    assert len(entries) == 40
    assert {(e.state, e.final_status) for e in entries} == {(EntryState.FINAL, "complete")}


async def _make_foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()


async def _make_future(path: Path) -> None:
    await (await SQLiteJournal.open(path)).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 2")
    conn.close()


async def _make_text(path: Path) -> None:
    await anyio.Path(path).write_bytes(b"this is not a database, just text " * 200)


@pytest.mark.parametrize("make", [_make_foreign, _make_future, _make_text],
                         ids=["other-sqlite-db", "newer-schema", "not-sqlite"])
async def test_sqlite_refuses_incompatible_files(
    tmp_path: Path, make: Callable[[Path], Awaitable[None]]
) -> None:
    path = tmp_path / "j.db"
    await make(path)
    with pytest.raises(JournalFormatError):
        await SQLiteJournal.open(path)


CHILD = r"""
import sys, anyio
from viggle_async import SQLiteJournal

async def main(path, n):
    j = await SQLiteJournal.open(path)
    for i in range(n):
        key = f"k{i}"
        await j.record_intent(key, kind="render", fingerprint="fp")
        print(key, "intent", flush=True)
        await j.mark_sending(key)
        print(key, "sending", flush=True)
        await j.record_submitted(key, f"job_{i}")
        print(key, "submitted", flush=True)
        await j.record_final(key, status="complete", outputs=[f"/o/{i}.mp4"])
        print(key, "final", flush=True)
    await j.close()
    print("done", flush=True)

anyio.run(main, sys.argv[1], int(sys.argv[2]))
"""
STEPS = {"intent": 1, "sending": 2, "submitted": 3, "final": 4}


def test_sigkill_at_random_points_leaves_a_consistent_journal(tmp_path: Path) -> None:
    rng = random.Random(20240607)
    n = 20
    for it in range(5):
        path = tmp_path / f"crash{it}.db"
        kill_after = rng.randrange(0, 2 * n)  # leaves the child 2n steps to die in
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(n)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        acked = 0
        try:
            while acked < kill_after:
                line = proc.stdout.readline()
                assert line and line != "done\n", "child ended early"
                acked += 1
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            # the child may have run ahead of our reading: count what it acknowledged
            acked += sum(1 for line in proc.stdout.read().splitlines() if line != "done")
            proc.stdout.close()
        if not path.exists():
            assert acked == 0
            continue
        # reopening must work, every row must be a legal entry, and the file must reflect
        # every acknowledged step plus at most the one that was being written
        entries = anyio.run(_read_all, path)
        committed = sum(STEPS[e.state] for e in entries)
        assert acked <= committed <= acked + 1, (it, acked, committed)
        for i, e in enumerate(entries):
            assert e.key == f"k{i}"
            if i < len(entries) - 1:
                assert (e.state, e.job_id, e.outputs) == ("final", f"job_{i}", (f"/o/{i}.mp4",))
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()


async def _read_all(path: Path) -> list[JournalEntry]:
    async with await SQLiteJournal.open(path) as j:
        return await j.entries()


async def test_a_journal_open_in_another_run_is_refused(tmp_path: Path) -> None:
    """Two runs resuming one journal could both submit a key: the second open is refused
    until the first closes."""
    path = tmp_path / "run.journal"
    first = await SQLiteJournal.open(path)
    with pytest.raises(JournalInUseError, match="open in another run"):
        await SQLiteJournal.open(path)
    proc = await anyio.run_process(
        [sys.executable, "-c", "import sys, anyio\nfrom viggle_async import SQLiteJournal\n"
         "anyio.run(SQLiteJournal.open, sys.argv[1])", str(path)], check=False)
    assert proc.returncode != 0 and b"JournalInUseError" in proc.stderr
    await first.record_intent("k", kind="render", fingerprint=FP)
    await first.close()
    async with await SQLiteJournal.open(path) as again:
        assert (await again.get("k")) is not None
