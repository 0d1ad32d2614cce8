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
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from pghelp import Fake, cli_async, read_logs, renders_manifest, status_async, worker

from viggle_async.testing import FakeViggle, make_png

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


STALLED_AFTER = 2.0  # seconds: --stalled-after of pghelp.worker and _worker_argv
RECOVER_EVERY = 1.0  # seconds: their --recover-every


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
        killed_at = time.time()  # epoch seconds, as PostgreSQL's now() in the events
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
    # ...within --stalled-after plus a few recovery periods (the old code: never, or once
    # the queue drained). Loose: 10 s of slack for a loaded machine.
    assert back[0] - killed_at < STALLED_AFTER + 5 * RECOVER_EVERY + 10.0, back[0] - killed_at


def test_a_worker_with_a_rejected_key_or_no_api_exits_2_before_taking_a_row(
        slow_fake: Fake, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    m = renders_manifest(tmp_path, 2)
    _enqueue(slow_fake, pg_dsn, pg_schema, m)
    wrong_key = subprocess.Popen(
        _worker_argv(pg_dsn, pg_schema, "--exit-when-empty"),
        env=_env(slow_fake.base_url, "sk-wrong-key"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    out, err = wrong_key.communicate(timeout=60)
    assert wrong_key.returncode == 2, out + err
    assert "the API rejected VIGGLE_API_KEY" in err and "sk-wrong-key" not in out + err
    assert len(err.strip().splitlines()) <= 2, err  # the start line and the error

    unreachable = subprocess.Popen(
        _worker_argv(pg_dsn, pg_schema, "--exit-when-empty"),
        env=_env("http://127.0.0.1:1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    out, err = unreachable.communicate(timeout=60)
    assert unreachable.returncode == 2, out + err
    assert "cannot reach the API at http://127.0.0.1:1" in err
    # Neither took a row: both still queued, nothing failed, nothing sent.
    data = _status(slow_fake, pg_dsn, pg_schema, m, tmp_path)
    assert data["summary"]["rows"] == {"queued": 2}
    assert slow_fake.stats()["creates"] == []


class _RevokeOnFirstCreate:
    """The fake's observations, revoking ``key`` as the first create arrives (before the
    fake reads its Authorization header): the create is answered 401."""

    def __init__(self, fake: FakeViggle, key: str) -> None:
        self._inner = fake.store.obs
        self._keys = fake.store.settings.api_keys
        self._key = key
        self.revoked = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def enter(self, route: tuple[str, str]) -> None:
        if route[0] == "POST" and not self.revoked:
            self._keys.pop(self._key, None)
            self.revoked = True
        self._inner.enter(route)


async def test_a_key_revoked_mid_run_hands_the_rows_back_and_exits_2(
        pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    """The worker starts with a good key; the fake revokes it as the first create arrives
    (401): the worker stops taking rows, hands back what it holds (not failed), exits 2;
    once the key works again, a worker finishes every row, each created once."""
    async with FakeViggle(time_scale=200.0, output_bytes=4096) as fake:
        m = renders_manifest(tmp_path, 3)
        await cli_async(fake, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema,
                        "--enqueue")
        balance = fake.store.settings.api_keys[API_KEY_OF_WORKERS]
        spy = _RevokeOnFirstCreate(fake, API_KEY_OF_WORKERS)
        fake.store.obs = spy  # type: ignore[assignment]
        done = await anyio.run_process(
            _worker_argv(pg_dsn, pg_schema, "--exit-when-empty"),
            env=_env(fake.base_url), check=False)
        out, err = done.stdout.decode(), done.stderr.decode()
        assert spy.revoked and done.returncode == 2, out + err
        assert "the API rejected VIGGLE_API_KEY" in err, err
        data, _ = await status_async(fake, pg_dsn, pg_schema, m, tmp_path / "r1.json")
        assert data["summary"]["rows"] == {"queued": 3}, data["summary"]  # handed back
        fake.store.settings.api_keys[API_KEY_OF_WORKERS] = balance  # the key works again
        again = await anyio.run_process(
            _worker_argv(pg_dsn, pg_schema, "--exit-when-empty"),
            env=_env(fake.base_url), check=False)
        assert again.returncode == 0, (again.stdout + again.stderr).decode()
        data, _ = await status_async(fake, pg_dsn, pg_schema, m, tmp_path / "r2.json")
        assert data["summary"]["rows"] == {"done": 3}
        accepted = [c.result_id for c in fake.creates if c.kind == "render" and c.status == 200]
        assert len(accepted) == len(set(accepted)) == 3


@pytest.fixture
def fake() -> Iterator[Fake]:
    server = Fake(time_scale=200.0)
    yield server
    server.stop()


def test_workers_show_each_row_and_a_summary_and_exit_quietly(
        pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    """Per-row lines and the summary on stdout; on a normal exit nothing else. Two workers
    on renders that take a while: the old cancel-on-empty cut their pool connections
    mid-query and psycopg.pool logged it ("query cancellation interrupted", "discarding
    closed connection", "error connecting in 'pool-1'")."""
    server = Fake(time_scale=20.0)
    try:
        m = renders_manifest(tmp_path, 6)
        _enqueue(server, pg_dsn, pg_schema, m)
        procs = [subprocess.Popen(_worker_argv(pg_dsn, pg_schema, "--exit-when-empty"),
                                  env=_env(server.base_url), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        try:
            outputs = [p.communicate(timeout=120) for p in procs]
        finally:
            _kill_left(procs)
    finally:
        server.stop()
    assert [p.returncode for p in procs] == [0, 0], outputs
    rows: list[str] = []
    for out, err in outputs:
        lines = out.splitlines()
        rows += [x for x in lines if x.startswith("row ")]
        assert re.fullmatch(r"worker stopped: \d rows done, 0 failed by this worker",
                            lines[-1]), out
        # stderr: the start line only (no pool noise, no traceback).
        assert [x for x in err.splitlines() if x.strip()] == [
            x for x in err.splitlines() if x.startswith("worker vm:")], err
        assert len(err.strip().splitlines()) == 1, err
    assert len(rows) == 6, rows
    for key in (f"r{i}" for i in range(6)):
        [row] = [x for x in rows if x.startswith(f"row {key}: complete (job ")]
        assert row.endswith(f"-> {tmp_path / 'out' / key}.mp4 [run m.jsonl]"), row


def test_json_events_and_exit_1_when_a_row_this_worker_ran_failed(
        fake: Fake, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    m = renders_manifest(tmp_path, 2)
    (tmp_path / "other.png").write_bytes(make_png(20, 20))
    with m.open("a") as f:
        f.write(json.dumps({"key": "bad", "ref_image": "other.png",
                            "driving_video": "d1.mp4", "output": "out/bad.mp4"}) + "\n")
    _enqueue(fake, pg_dsn, pg_schema, m)
    (tmp_path / "other.png").write_bytes(make_png(30, 30))  # edited: this row fails
    done = subprocess.run(_worker_argv(pg_dsn, pg_schema, "--exit-when-empty",
                                       json_lines=True),
                          env=_env(fake.base_url), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    events = [json.loads(x) for x in done.stdout.splitlines()]  # every line is JSON
    assert events[0]["event"] == "worker_started"
    rows = {e["key"]: e for e in events if e["event"] == "row"}
    assert {k: e["state"] for k, e in rows.items()} == {
        "r0": "complete", "r1": "complete", "bad": "failed"}
    assert "edited after --enqueue" in rows["bad"]["outcome"]["error"]
    assert rows["r0"]["run"] == "m.jsonl" and rows["r0"]["outcome"]["job_id"]
    summary = events[-1]
    assert summary["event"] == "summary" and summary["exit_code"] == 1
    assert (summary["rows_done"], summary["rows_failed"]) == (2, 1)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_hands_the_rows_back_and_exits_with_the_readme_code(
        slow_fake: Fake, pg_dsn: str, pg_schema: str, tmp_path: Path, signum: int,
        code: int) -> None:
    m = renders_manifest(tmp_path, 2)
    _enqueue(slow_fake, pg_dsn, pg_schema, m)
    p = subprocess.Popen(_worker_argv(pg_dsn, pg_schema, "--grace", "0.5"),
                         env=_env(slow_fake.base_url), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _accepted_renders(slow_fake) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _accepted_renders(slow_fake), "no render created"
        p.send_signal(signum)
        out, err = p.communicate(timeout=60)
    finally:
        _kill_left([p])
    assert p.returncode == code, out + err
    assert re.search(r"^worker stopped: \d rows done, 0 failed by this worker$", out, re.M), (
        out + err)
    assert "Traceback" not in err, err
    # Handed back, not failed: the rows not done are still queued for another worker.
    rows = _status(slow_fake, pg_dsn, pg_schema, m, tmp_path)["summary"]["rows"]
    assert set(rows) <= {"queued", "done"} and rows.get("queued"), rows
