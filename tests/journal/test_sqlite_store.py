"""What only the SQLite store does: the file format (refusal, migration), contention with
another program's write lock, storage failures as ``JournalError``, and ``open_journal``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from viggle_async import (
    EntryState,
    Journal,
    JournalBusyError,
    JournalError,
    JournalFormatError,
    JournalInUseError,
    JournalWriteError,
    MemoryJournal,
    SQLiteJournal,
    SQLiteJournalStore,
    open_journal,
)
from viggle_async._journal_sqlite import SCHEMA_VERSION, _lock, _unlock
from viggle_async.testing import ManualClock

FP = "fp"


# --- the file format ------------------------------------------------------------------------

async def test_a_new_file_declares_its_format(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    await (await SQLiteJournal.open(path)).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x56474A31
    finally:
        conn.close()


V1_SCHEMA = """
CREATE TABLE entries (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, fingerprint TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('intent', 'sending', 'submitted', 'final')),
    job_id TEXT, final_status TEXT, outputs TEXT NOT NULL, error TEXT,
    attempts INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL)
"""


def _write_v1_journal(path: Path) -> None:
    """A journal exactly as viggle-async 0.1 (schema 1) left it, mid-run."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(V1_SCHEMA)
    conn.execute("PRAGMA application_id = 1447512625")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO entries VALUES ('done', 'render', 'fp', 'final', 'job_1', "
                 "'complete', ?, NULL, 1, 1.0, 2.0)", (json.dumps(["/o/done.mp4"]),))
    conn.execute("INSERT INTO entries VALUES ('running', 'render', 'fp', 'submitted', 'job_2', "
                 "NULL, '[]', NULL, 1, 1.0, 2.0)")
    conn.execute("INSERT INTO entries VALUES ('unsure', 'render', 'fp', 'sending', NULL, "
                 "NULL, '[]', NULL, 2, 1.0, 2.0)")
    conn.close()


async def test_an_older_journal_is_migrated_and_resumed(tmp_path: Path) -> None:
    path = tmp_path / "old.journal"
    _write_v1_journal(path)
    async with await SQLiteJournal.open(path) as j:
        entries = {e.key: e for e in await j.entries()}
        assert (entries["done"].state, entries["done"].outputs) == ("final", ("/o/done.mp4",))
        assert entries["running"].job_id == "job_2"
        assert entries["unsure"].ambiguous and entries["unsure"].attempts == 2
        await j.record_final("running", status="complete")
        assert isinstance(j.store, SQLiteJournalStore)
        await j.store.remember_asset("acct", "h", "char_1")  # the table schema 2 added
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()
    async with await SQLiteJournal.open(path) as j:  # and again, already migrated
        assert (await j.get("running")).final_status == "complete"  # type: ignore[union-attr]


async def test_a_newer_journal_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.journal"
    async with await SQLiteJournal.open(path) as j:
        await j.record_intent("k", kind="render", fingerprint=FP)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(JournalFormatError, match=r"schema version \d+.*newer.*upgrade") as info:
        await SQLiteJournal.open(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before
    # and the refused open released the file: the newer library can still use it
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.close()
    async with await SQLiteJournal.open(path) as j:
        assert (await j.get("k")) is not None


def _make_foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()


def _make_text(path: Path) -> None:
    path.write_bytes(b"this is not a database, just text " * 200)


def _make_bad_row(path: Path) -> None:
    _write_v1_journal(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE entries SET outputs = 'not json' WHERE key = 'done'")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("make", [_make_foreign, _make_text],
                         ids=["other-sqlite-db", "not-sqlite"])
async def test_files_that_are_not_journals_are_refused(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    path = tmp_path / "j.db"
    make(path)
    with pytest.raises(JournalFormatError, match=r"j\.db"):
        await SQLiteJournal.open(path)


async def test_an_unreadable_entry_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    _make_bad_row(path)
    async with await SQLiteJournal.open(path) as j:
        with pytest.raises(JournalFormatError, match="'done'"):
            await j.entries()
        with pytest.raises(JournalFormatError):
            await j.record_final("done", status="complete")
        assert (await j.get("running")) is not None  # the rest stays usable


# --- contention: another program holds the write lock -----------------------------------

@contextlib.contextmanager
def write_locked(path: Path) -> Iterator[sqlite3.Connection]:
    """A second, real connection holding the write lock, like a DB browser mid-edit."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield holder
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()


async def test_a_write_waits_out_a_lock_held_past_sqlites_own_timeout(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    clock = ManualClock()
    waits: list[float] = []
    holders: list[sqlite3.Connection] = []

    def on_busy(waited: float) -> None:
        waits.append(waited)
        if waited >= 45 and holders[0].in_transaction:  # held 45 s, then released
            holders[0].execute("ROLLBACK")

    # the default busy_timeout: a minute
    async with (clock.autojump(),
                await SQLiteJournal.open(path, busy_clock=clock, on_busy=on_busy) as j):
        with write_locked(path) as holder:
            holders.append(holder)
            e = await j.record_intent("k", kind="render", fingerprint=FP)
    assert e.state is EntryState.INTENT
    assert waits == sorted(waits) and 45 <= waits[-1] < 60
    async with await SQLiteJournal.open(path) as again:
        assert await again.get("k") == e


async def test_opening_waits_for_the_lock_too(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    clock = ManualClock()
    holders: list[sqlite3.Connection] = []

    def on_busy(waited: float) -> None:
        if waited >= 3 and holders[0].in_transaction:
            holders[0].execute("ROLLBACK")

    async with clock.autojump():
        with write_locked(path) as holder:  # a new, empty file, locked before we create it
            holders.append(holder)
            async with await SQLiteJournal.open(path, busy_clock=clock, on_busy=on_busy) as j:
                await j.record_intent("k", kind="render", fingerprint=FP)
    assert clock.now() >= 3


async def test_a_lock_held_past_busy_timeout_is_a_journal_error(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with await SQLiteJournal.open(path) as j:
        await j.record_intent("k", kind="render", fingerprint=FP)
    clock = ManualClock()
    waits: list[float] = []
    async with clock.autojump():
        j = await SQLiteJournal.open(path, busy_timeout=20.0, busy_clock=clock,
                                     on_busy=waits.append)
        try:
            with write_locked(path):
                with pytest.raises(JournalBusyError) as info:
                    await j.mark_sending("k")
                assert clock.now() == pytest.approx(20.0)
            # the lock is gone: nothing was recorded, and the journal still works
            assert (await j.get("k")).state is EntryState.INTENT  # type: ignore[union-attr]
            assert (await j.mark_sending("k")).ambiguous
        finally:
            await j.close()
    err = info.value
    assert isinstance(err, JournalWriteError) and not isinstance(err, sqlite3.Error)
    assert err.path == str(path) and "busy_timeout=20 s" in str(err) and str(path) in str(err)
    assert waits and waits[-1] < 20.0


async def test_a_cancel_while_waiting_for_the_lock_records_nothing(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    clock = ManualClock()
    async with clock.autojump(), await SQLiteJournal.open(path, busy_clock=clock) as j:
        with write_locked(path):
            with anyio.move_on_after(0.3):  # real time: a few backoff rounds
                await j.record_intent("k", kind="render", fingerprint=FP)
        assert await j.get("k") is None
        await j.record_intent("k", kind="render", fingerprint=FP)  # no transaction left open


def test_busy_timeout_must_not_be_negative(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="busy_timeout"):
        anyio.run(lambda: SQLiteJournal.open(tmp_path / "j", busy_timeout=-1))


# --- a journal that cannot be written ------------------------------------------------------

@contextlib.contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """Make files or folders unwritable, even for root (the immutable attribute)."""
    if os.geteuid() != 0:
        modes = [p.stat().st_mode for p in paths]
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, m in zip(paths, modes, strict=True):
                p.chmod(m)
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: cannot make a file read-only")
    done = []
    try:
        for p in paths:
            if subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode:
                pytest.skip("this filesystem has no immutable attribute (chattr +i)")
            done.append(p)
        yield
    finally:
        for p in done:
            subprocess.run(["chattr", "-i", str(p)], check=True)


@pytest.mark.parametrize("what", ["file", "folder"])
async def test_a_read_only_journal_is_a_journal_error(tmp_path: Path, what: str) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    path = folder / "run.journal"
    async with await SQLiteJournal.open(path) as j:
        await j.record_intent("k", kind="render", fingerprint=FP)
    # The lock file is removed on close: the next open makes it again in the folder.
    with (read_only(path if what == "file" else folder),
          pytest.raises(JournalWriteError) as info):
        async with await SQLiteJournal.open(path) as j:
            await j.mark_sending("k")
    assert info.value.path == str(path)
    assert str(path) in str(info.value) and info.value.cause
    assert not isinstance(info.value, sqlite3.Error)


# --- open_journal ------------------------------------------------------------------------

@pytest.mark.parametrize("as_path", [str, Path], ids=["str", "Path"])
async def test_open_journal_opens_a_path_for_the_block(
        tmp_path: Path, as_path: Callable[[str], str | os.PathLike[str]]) -> None:
    path = tmp_path / "run.journal"
    async with open_journal(as_path(str(path))) as j:
        assert isinstance(j, SQLiteJournal)
        await j.record_intent("k", kind="render", fingerprint=FP)
    # closed after the block: the lock is released and the entry is on disk
    async with await SQLiteJournal.open(path) as again:
        assert await again.get("k") is not None


async def test_awaiting_open_journal_gives_a_journal_its_caller_closes(tmp_path: Path) -> None:
    path = tmp_path / "run.journal"
    waits: list[float] = []
    j = await open_journal(path, busy_timeout=0.2, on_busy=waits.append)
    try:
        assert isinstance(j, SQLiteJournal)
        with pytest.raises(JournalInUseError):  # still open after the await
            await SQLiteJournal.open(path)
        # the busy options reach the store: a lock past 0.2 s fails, reporting its waits
        with write_locked(path), pytest.raises(JournalBusyError):
            await j.record_intent("k", kind="render", fingerprint=FP)
        assert waits
    finally:
        await j.close()
    mine = MemoryJournal()
    assert await open_journal(mine) is mine


async def test_open_journal_leaves_a_journal_to_its_owner() -> None:
    mine = MemoryJournal()
    async with open_journal(mine) as j:
        assert j is mine
    await mine.record_intent("k", kind="render", fingerprint=FP)  # still open
    await mine.close()


@pytest.mark.parametrize("bad", [42, None, b"run.journal", {"path": "x"}],
                         ids=["int", "None", "bytes", "dict"])
def test_open_journal_refuses_other_types_naming_the_argument(bad: object) -> None:
    with pytest.raises(TypeError, match="journal"):
        open_journal(bad)  # type: ignore[arg-type]


def test_open_journal_refuses_an_empty_path() -> None:
    with pytest.raises(ValueError, match="journal: the path is empty"):
        open_journal("")


def test_journal_errors_are_one_tree() -> None:
    assert issubclass(JournalBusyError, JournalWriteError)
    assert issubclass(JournalWriteError, JournalError)
    assert issubclass(SQLiteJournal, Journal)




LEAKY_CHILD = r"""
import sys, anyio
from viggle_async import SQLiteJournal
KEEP = []

async def main(path):
    KEEP.append(await SQLiteJournal.open(path))  # never closed: the program forgot
    await KEEP[0].record_intent("k", kind="render", fingerprint="fp")

anyio.run(main, sys.argv[1])
"""


async def test_a_journal_left_open_does_not_hang_exit(tmp_path: Path) -> None:
    path = tmp_path / "leak.journal"
    with anyio.fail_after(60):  # a guard, not a timing: a hang would never end
        proc = await anyio.run_process(
            [sys.executable, "-W", "ignore::ResourceWarning", "-c", LEAKY_CHILD, str(path)],
            check=False)
    assert proc.returncode == 0, proc.stderr
    async with await SQLiteJournal.open(path) as j:  # and the step is on disk
        assert (await j.get("k")) is not None


# --- the lock file -----------------------------------------------------------------------

async def test_closing_a_journal_removes_its_lock_file(tmp_path: Path) -> None:
    path = tmp_path / "run.journal"
    lock = tmp_path / "run.journal.lock"
    async with await SQLiteJournal.open(path) as j:
        assert lock.exists()  # held while open
        await j.record_intent("k", kind="render", fingerprint=FP)
    assert not lock.exists()
    async with open_journal(path) as j:
        assert await j.get("k") is not None
    assert not lock.exists()
    # An open that fails after taking the lock leaves nothing behind either.
    _make_text(tmp_path / "j.db")
    with pytest.raises(JournalFormatError):
        await SQLiteJournal.open(tmp_path / "j.db")
    assert sorted(os.listdir(tmp_path)) == ["j.db", "run.journal"]


CRASHING_CHILD = r"""
import os, sys, anyio
from viggle_async import SQLiteJournal

async def main(path):
    j = await SQLiteJournal.open(path)
    await j.record_intent("k", kind="render", fingerprint="fp")
    os.kill(os.getpid(), 9)  # no close, no cleanup: a crash

anyio.run(main, sys.argv[1])
"""


async def test_a_crashed_runs_lock_file_is_stale_and_does_not_block_the_next_run(
        tmp_path: Path) -> None:
    path = tmp_path / "run.journal"
    with anyio.fail_after(60):  # a guard, not a timing
        proc = await anyio.run_process([sys.executable, "-c", CRASHING_CHILD, str(path)],
                                       check=False)
    assert proc.returncode == -9, proc.stderr
    assert await anyio.Path(f"{path}.lock").exists()  # left behind by the crash
    async with await SQLiteJournal.open(path) as j:
        assert await j.get("k") is not None
        with pytest.raises(JournalInUseError):  # and it is a real lock again
            await SQLiteJournal.open(path)
    assert not await anyio.Path(f"{path}.lock").exists()


def test_removing_the_lock_file_on_close_never_lets_two_runs_hold_it(tmp_path: Path) -> None:
    """Runs opening and closing one journal at once: a run that opened the lock file just
    before its holder removed it must not count the orphaned file as locked while another
    run locks the new one. (Without the check in ``_lock`` this finds 2-4 holders.)"""
    path = str(tmp_path / "run.journal")
    holders, most, held = 0, 0, 0
    count = threading.Lock()

    def run() -> None:
        nonlocal holders, most, held
        for _ in range(800):
            try:
                f = _lock(path)
            except JournalInUseError:
                continue
            assert f is not None
            with count:
                holders += 1
                most, held = max(most, holders), held + 1
            os.sched_yield()  # let the others try while this one holds it
            with count:
                holders -= 1
            _unlock(path, f)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 1 and held > 0
    assert not Path(f"{path}.lock").exists()
