"""A ``viggle-async worker``'s life as its user sees it: the survivors recover a killed
worker's rows on their own, a bad key or an unreachable API stops a worker before it takes
a row, a key revoked mid-run hands the rows back, and the worker says what it did (per-row
lines, ``--json`` events, a summary, the README's exit codes).

Real PostgreSQL, worker subprocesses, the fake server in its own process (its create log
is the witness for duplicate creates).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pghelp import Fake, read_logs, renders_manifest, worker

API_KEY_OF_WORKERS = "sk-test-fake"  # pghelp's


def _env(base_url: str, key: str = API_KEY_OF_WORKERS) -> dict[str, str]:
    return {**os.environ, "VIGGLE_BASE_URL": base_url, "VIGGLE_API_KEY": key}


def _worker_argv(dsn: str, schema: str, *extra: str, json_lines: bool = False) -> list[str]:
    return [sys.executable, "-m", "viggle_async", *(["--json"] if json_lines else []),
            "worker", "--journal", dsn, "--schema", schema, "--poll-interval", "0.05",
            "--stalled-after", "2", "--heartbeat", "0.5", "--recover-every", "1", *extra]


def _cli(fake: Fake, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "viggle_async", *args], env=_env(fake.base_url),
                          capture_output=True, text=True, timeout=120, check=False)


def _enqueue(fake: Fake, dsn: str, schema: str, manifest: Path) -> None:
    done = _cli(fake, "bulk", str(manifest), "--journal", dsn, "--schema", schema, "--enqueue")
    assert done.returncode == 0, done.stdout + done.stderr


def _status(fake: Fake, dsn: str, schema: str, manifest: Path, tmp: Path) -> dict[str, Any]:
    report = tmp / "report.json"
    _cli(fake, "--json", "bulk", str(manifest), "--journal", dsn, "--schema", schema,
         "--status", "--report", str(report))
    data: dict[str, Any] = json.loads(report.read_text())
    return data


def _accepted_renders(fake: Fake) -> list[str]:
    return [c["result_id"] for c in fake.stats()["creates"]
            if c["kind"] == "render" and c["status"] == 200]


def _wait(what: str, predicate: Any, timeout: float, procs: list[subprocess.Popen[str]],
          logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            _kill_left(procs)
            raise AssertionError(f"waiting for {what}" + read_logs(logs))
        time.sleep(0.05)


def _kill_left(procs: list[subprocess.Popen[str]]) -> None:
    """SIGKILL (and reap) the workers still running: a failed test leaves none behind."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.fixture
def slow_fake() -> Iterator[Fake]:
    server = Fake(time_scale=5.0)  # a render takes a few real seconds: rows are held
    yield server
    server.stop()


def _row_job_events(dsn: str, schema: str) -> list[tuple[int, str, float]]:
    """``(job id, event type, epoch seconds)`` of every row job, in order."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f"""SELECT e.job_id, e.type::text, extract(epoch FROM e.at)::float8
                FROM "{schema}".procrastinate_events e
                JOIN "{schema}".procrastinate_jobs j ON j.id = e.job_id
                WHERE j.task_name = 'viggle_row' ORDER BY e.at, e.id""").fetchall()  # type: ignore[call-overload]
    return [(int(a), str(b), float(c)) for a, b, c in rows]


def test_survivors_with_busy_slots_recover_a_killed_workers_rows_without_a_new_worker(
        slow_fake: Fake, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    """3 workers of 1 slot each, 10 rows: every slot is busy and rows wait in the queue when
    one worker is SIGKILLed holding its row. The 2 survivors (no new worker) put its row
    back on their own schedule, while rows still wait, and finish every row, none created
    twice. Before the fix the recovery was a job queued behind the rows (and its cron,
    read minutes-first, ran only in some minutes): the dead worker's row waited for the
    queue to drain, or for good."""
    renders = 10
    m = renders_manifest(tmp_path, renders)
    _enqueue(slow_fake, pg_dsn, pg_schema, m)
    logs = tmp_path / "logs"
    logs.mkdir()
    files = [(logs / f"worker{i}.log").open("w") for i in range(3)]
    procs = [worker(slow_fake, pg_dsn, pg_schema, "--concurrency", "1", "--exit-when-empty",
                    log=f) for f in files]
    try:
        # Each worker holds one created render: the queue still has rows waiting.
        _wait("3 renders created", lambda: len(_accepted_renders(slow_fake)) >= 3, 60,
              procs, logs)
        victim, survivors = procs[0], procs[1:]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        for p in survivors:
            p.wait(timeout=120)
    finally:
        _kill_left(procs)
        for f in files:
            f.close()
    assert [p.returncode for p in survivors] == [0, 0], read_logs(logs)
    data = _status(slow_fake, pg_dsn, pg_schema, m, tmp_path)
    outcomes = data["outcomes"]
    # Every row finished. A create the kill cut between its last bytes and its answer is
    # reported ambiguous, never resent; every other row completes, resumed or made once.
    ambiguous = [o["key"] for o in outcomes if o["state"] == "ambiguous"]
    assert len(ambiguous) <= 1 and sorted(data["summary"]["ambiguous"]) == ambiguous
    assert all(o["state"] == "complete" for o in outcomes if o["key"] not in ambiguous), (
        [(o["key"], o["state"], o.get("row_state"), o.get("error")) for o in outcomes])
    accepted = _accepted_renders(slow_fake)
    assert len(accepted) == len(set(accepted)) <= renders  # no row created twice
    done = [o["job_id"] for o in outcomes if o["state"] == "complete"]
    assert len(done) == len(set(done)) == renders - len(ambiguous)
    assert set(done) <= set(accepted)
    # Put back while the survivors' slots were busy and rows still waited: some row job
    # was first started after the dead worker's job went back to the queue.
    events = _row_job_events(pg_dsn, pg_schema)
    back = [at for _, kind, at in events if kind == "deferred_for_retry"]
    assert back, events
    first_start: dict[int, float] = {}
    for job, kind, at in events:
        if kind == "started":
            first_start.setdefault(job, at)
    assert any(at > back[0] for at in first_start.values()), read_logs(logs)
