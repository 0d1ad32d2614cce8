"""Journal entries and fingerprints, the run lock, and a SIGKILL crash test. The state
machine and the store contract are tested per store in tests/journal/."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from viggle_async._journal import (
    EntryState,
    JournalEntry,
    JournalInUseError,
    api_key_fingerprint,
    request_fingerprint,
)
from viggle_async._journal_sqlite import SQLiteJournal

FP = request_fingerprint({"ref_image": "a.png", "driving_video": "b.mp4"})


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


def test_api_key_fingerprint_names_an_account_without_the_key() -> None:
    a = api_key_fingerprint("sk-live-SECRET123")
    assert a == api_key_fingerprint("sk-live-SECRET123") != api_key_fingerprint("sk-live-other")
    assert "SECRET123" not in a and len(a) == 64


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
