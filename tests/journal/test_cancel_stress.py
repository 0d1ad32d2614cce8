"""Cancelling journal writes, over and over (issue 11.12): no "cannot start a transaction
within a transaction", no crash, no half-written step, no connection left open.

Each test runs a few rounds in the default suite; ``-m stress`` runs hundreds (a few
minutes). The suite treats warnings as errors and collects garbage after each round, so a
connection left unclosed fails it (Python 3.13 warns about those)."""

from __future__ import annotations

import gc
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from viggle_async import (
    EntryState,
    JournalClosedError,
    PollPolicy,
    Progress,
    SQLiteJournal,
    Supervisor,
    ViggleClient,
)
from viggle_async.testing import FakeViggle, make_png, write_mp4

FAST_POLLS = PollPolicy(first_delay=0.01, min_interval=0.01, max_interval=0.02, jitter=0.0)
LEGAL = {EntryState.INTENT, EntryState.SENDING, EntryState.SUBMITTED, EntryState.FINAL}


def rounds(request: pytest.FixtureRequest, default: int, stress: int) -> int:
    return stress if request.node.get_closest_marker("stress") else default


@pytest.fixture
def stress_selected(request: pytest.FixtureRequest) -> None:
    expr = str(request.config.option.markexpr or "")
    if "stress" not in expr.replace("not stress", ""):
        pytest.skip("a long stress run: select it with -m stress")


def check_file(path: Path) -> list[Any]:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute("SELECT key, state, job_id FROM entries").fetchall()
    finally:
        conn.close()


async def _walk(j: SQLiteJournal, key: str, i: int) -> None:
    await j.record_intent(key, kind="render", fingerprint="fp")
    await j.mark_sending(key)
    await j.record_submitted(key, f"job_{i}")
    await j.record_final(key, status="complete", outputs=[f"/o/{key}.mp4"])


async def _cancel_writers(tmp_path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    for r in range(n):
        path = tmp_path / f"r{r}.journal"
        j = await SQLiteJournal.open(path)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                for i in range(8):
                    tg.start_soon(_walk, j, f"k{i}", i)
                for _ in range(rng.randrange(60)):
                    await anyio.lowlevel.checkpoint()
                if rng.random() < 0.3:
                    await anyio.sleep(rng.random() / 500)
                scope.cancel()
                if rng.random() < 0.5:
                    # close while the cancelled writes unwind: they finish or roll back first
                    with anyio.CancelScope(shield=True):
                        await j.close()
        await j.close()
        with pytest.raises(JournalClosedError):
            await j.get("k0")
        rows = check_file(path)
        assert {EntryState(s) for _, s, _ in rows} <= LEGAL
        async with await SQLiteJournal.open(path) as again:  # every row is a legal entry
            assert len(await again.entries()) == len(rows)
        gc.collect()


async def test_cancelled_writes_leave_whole_steps(tmp_path: Path,
                                                  request: pytest.FixtureRequest) -> None:
    await _cancel_writers(tmp_path, rounds(request, 15, 500), seed=1112)


@pytest.mark.stress
@pytest.mark.timeout(1800)
async def test_cancelled_writes_leave_whole_steps_stress(
        tmp_path: Path, request: pytest.FixtureRequest, stress_selected: None) -> None:
    await _cancel_writers(tmp_path, rounds(request, 15, 500), seed=2024)


# --- the reproduction: a supervisor cancelled mid-poll ----------------------------

async def _cancel_supervisor_mid_poll(tmp_path: Path, n: int) -> None:
    png = tmp_path / "me.png"
    png.write_bytes(make_png())
    video = tmp_path / "small.mp4"
    write_mp4(video, 1.0)
    async with (FakeViggle(time_scale=1000.0, output_bytes=4096) as fake,
                ViggleClient(fake.api_key, base_url=fake.base_url) as client):
        for r in range(n):
            path = tmp_path / f"sup{r}.journal"
            async with await SQLiteJournal.open(path) as journal:
                with anyio.CancelScope() as scope:
                    async with anyio.create_task_group() as tg, Supervisor(
                            client, journal=journal, poll_policy=FAST_POLLS) as sup:

                        async def watch(events: Any) -> None:
                            async for event in events:
                                if isinstance(event, Progress):
                                    scope.cancel()

                        tg.start_soon(watch, sup.events())
                        for i in range(3):
                            sup.render(key=f"r{i}", ref_image=png, driving_video=video,
                                       output=tmp_path / f"o{r}-{i}.mp4")
                assert scope.cancelled_caught
                states = {e.state for e in await journal.entries()}
                assert states <= {"intent", "sending", "submitted"}
            check_file(path)
            gc.collect()


async def test_cancelling_a_supervisor_mid_poll_repeatedly(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    await _cancel_supervisor_mid_poll(tmp_path, rounds(request, 3, 300))


@pytest.mark.stress
@pytest.mark.timeout(1800)
async def test_cancelling_a_supervisor_mid_poll_repeatedly_stress(
        tmp_path: Path, request: pytest.FixtureRequest, stress_selected: None) -> None:
    await _cancel_supervisor_mid_poll(tmp_path, rounds(request, 3, 300))


# --- Ctrl-C of a process writing its journal ------------------------------------------------

CHILD = r"""
import sys, anyio
from viggle_async import SQLiteJournal

async def main(path):
    async with await SQLiteJournal.open(path) as j:
        print("ready", flush=True)
        for i in range(100000):
            key = f"k{i}"
            await j.record_intent(key, kind="render", fingerprint="fp")
            await j.mark_sending(key)
            await j.record_submitted(key, f"job_{i}")
            await j.record_final(key, status="complete")

anyio.run(main, sys.argv[1])
"""


def _interrupt_children(tmp_path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    for r in range(n):
        path = tmp_path / f"c{r}.journal"
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        try:
            proc.wait(timeout=rng.random() / 5)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        # KeyboardInterrupt ends it (-SIGINT); a crash would be SIGSEGV/SIGABRT or an error
        assert proc.returncode == -signal.SIGINT, (proc.returncode, err[-2000:])
        assert b"OperationalError" not in err and b"Fatal Python error" not in err
        assert b"ResourceWarning" not in err
        check_file(path)


def test_ctrl_c_while_writing_the_journal(tmp_path: Path,
                                          request: pytest.FixtureRequest) -> None:
    _interrupt_children(tmp_path, rounds(request, 3, 150), seed=11)


@pytest.mark.stress
@pytest.mark.timeout(1800)
def test_ctrl_c_while_writing_the_journal_stress(
        tmp_path: Path, request: pytest.FixtureRequest, stress_selected: None) -> None:
    _interrupt_children(tmp_path, rounds(request, 3, 150), seed=12)


