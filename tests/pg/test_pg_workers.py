"""``bulk --enqueue`` + ``viggle-async worker`` processes + ``bulk --status``, end to end:
real PostgreSQL, worker subprocesses, one fake server in its own process (its create log,
served at ``/__fake__/stats``, is the witness for duplicate creates).

The default suite runs a small manifest; the 200-row runs are marked ``stress``.
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

import pytest
from pghelp import OUTPUT_BYTES, Fake, renders_manifest, worker

from viggle_async.testing import make_png, write_mp4


@pytest.fixture
def fake() -> Iterator[Fake]:
    server = Fake(time_scale=200.0)
    yield server
    server.stop()


def manifest(folder: Path, characters: int, renders: int) -> Path:
    """``characters`` character rows (each its own image), one uploaded scene, and
    ``renders`` renders: on-demand ones and ones of a character row on the scene row."""
    lines = []
    for c in range(characters):
        (folder / f"c{c}.png").write_bytes(make_png(16 + c % 8, 16 + c // 8 % 8))
        lines.append({"key": f"char{c}", "kind": "character", "name": f"C{c}",
                      "image": f"c{c}.png"})
    write_mp4(folder / "d1.mp4", 1.0)
    lines.append({"key": "stage", "kind": "scene", "name": "Stage", "video": "d1.mp4"})
    (folder / "me.png").write_bytes(make_png())
    for r in range(renders):
        if r % 2 and characters:
            lines.append({"key": f"r{r}", "character_id": f"char{r % characters}",
                          "scene_id": "stage", "output": f"out/r{r}.mp4"})
        else:
            lines.append({"key": f"r{r}", "ref_image": "me.png", "driving_video": "d1.mp4",
                          "output": f"out/r{r}.mp4"})
    path = folder / "m.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def cli(fake: Fake, *args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VIGGLE_BASE_URL": fake.base_url, "VIGGLE_API_KEY": "sk-test-fake"}
    proc = subprocess.run([sys.executable, "-m", "viggle_async", *args], env=env,
                          capture_output=True, text=True, timeout=180, **kw)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def status(fake: Fake, dsn: str, schema: str, m: Path, tmp: Path) -> dict[str, Any]:
    report = tmp / "report.json"
    cli(fake, "--json", "bulk", str(m), "--journal", dsn, "--schema", schema, "--status",
        "--report", str(report), check=False)
    data: dict[str, Any] = json.loads(report.read_text())
    return data


def accepted_creates(fake: Fake) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in fake.stats()["creates"]:
        if c["status"] == 200:
            counts[c["kind"]] = counts.get(c["kind"], 0) + 1
    return counts


def run_workers(fake: Fake, pg_dsn: str, pg_schema: str, tmp: Path, *, workers: int,
                characters: int, renders: int) -> None:
    m = manifest(tmp, characters, renders)
    cli(fake, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema, "--enqueue")
    procs = [worker(fake, pg_dsn, pg_schema, "--exit-when-empty") for _ in range(workers)]
    for p in procs:
        try:
            out, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise AssertionError("worker hung:\n" + out + err[-6000:]) from None
        assert p.returncode == 0, out + err
    data = status(fake, pg_dsn, pg_schema, m, tmp)
    assert data["summary"]["rows"] == {"done": characters + 1 + renders}
    # Every row done exactly once: one accepted create per row, none twice.
    assert accepted_creates(fake) == {k: v for k, v in {
        "character": characters, "scene": 1, "render": renders}.items() if v}
    for r in range(renders):
        assert (tmp / "out" / f"r{r}.mp4").stat().st_size == OUTPUT_BYTES
    assert not list((tmp / "out").glob(".*part"))  # no temporary file left behind
    # The renders of a character used the id its row created (on whichever worker).
    by_key = {o["key"]: o for o in data["outcomes"]}
    assert all(by_key[f"char{c}"]["asset_id"] for c in range(characters))


def test_two_workers_do_every_row_once(fake: Fake, pg_dsn: str, pg_schema: str,
                                       tmp_path: Path) -> None:
    run_workers(fake, pg_dsn, pg_schema, tmp_path, workers=2, characters=3, renders=10)


def test_enqueue_sets_the_shared_poll_rate_and_status_shows_it(
        fake: Fake, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    m = manifest(tmp_path, 0, 1)
    cli(fake, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema, "--enqueue")
    assert status(fake, pg_dsn, pg_schema, m, tmp_path)["summary"]["poll_rate"] == 20.0
    # Enqueueing again with --poll-rate sets the cap every worker of the ledger shares.
    cli(fake, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema, "--enqueue",
        "--poll-rate", "7.5")
    assert status(fake, pg_dsn, pg_schema, m, tmp_path)["summary"]["poll_rate"] == 7.5
    shown = cli(fake, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema, "--status",
                check=False)
    assert "polls capped at 7.5/s across workers" in shown.stdout + shown.stderr


@pytest.fixture
def stress_selected(request: pytest.FixtureRequest) -> None:
    if "stress" not in str(request.config.option.markexpr or "").replace("not stress", ""):
        pytest.skip("a long stress run: select it with -m stress")


@pytest.mark.stress
@pytest.mark.parametrize("workers", [2, 4])
@pytest.mark.usefixtures("stress_selected")
def test_many_workers_on_200_rows(fake: Fake, pg_dsn: str, pg_schema: str, tmp_path: Path,
                                  workers: int) -> None:
    run_workers(fake, pg_dsn, pg_schema, tmp_path, workers=workers, characters=20,
                renders=179)


def test_an_input_edited_after_enqueue_is_refused_not_sent(
        fake: Fake, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    m = manifest(tmp_path, 1, 2)
    cli(fake, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema, "--enqueue")
    (tmp_path / "c0.png").write_bytes(make_png(40, 40))  # edited between enqueue and upload
    p = worker(fake, pg_dsn, pg_schema, "--exit-when-empty")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1, out + err  # a row this worker ran failed
    data = status(fake, pg_dsn, pg_schema, m, tmp_path)
    by_key = {o["key"]: o for o in data["outcomes"]}
    assert "edited after --enqueue" in by_key["char0"]["error"]
    assert by_key["r1"]["state"] == "failed" and "char0" in by_key["r1"]["error"]
    assert by_key["r0"]["state"] == "complete"
    assert "character" not in accepted_creates(fake)  # nothing was sent for it


def test_a_killed_workers_rows_are_finished_by_another_without_creating_twice(
        pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    slow = Fake(time_scale=5.0)  # renders take a few real seconds: the kill lands mid-run
    try:
        m = manifest(tmp_path, 0, 6)
        cli(slow, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema, "--enqueue")
        first = worker(slow, pg_dsn, pg_schema)
        deadline = time.monotonic() + 60
        while not accepted_creates(slow).get("render") and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        assert accepted_creates(slow).get("render", 0) > 0  # it died holding jobs
        midway = status(slow, pg_dsn, pg_schema, m, tmp_path)["summary"]["rows"]
        assert midway.get("done", 0) < 7  # ...and rows it had not finished (6 + the scene)
        time.sleep(2.5)  # past --stalled-after: its heartbeat is stale
        second = worker(slow, pg_dsn, pg_schema, "--exit-when-empty")
        out, err = second.communicate(timeout=180)
        assert second.returncode in (0, 1), out + err
        data = status(slow, pg_dsn, pg_schema, m, tmp_path)
        outcomes = data["outcomes"]
        # A create cut between send and answer stays ambiguous and is reported, never
        # re-sent; every other row completes, resumed from the journal's job id.
        ambiguous = [o["key"] for o in outcomes if o["state"] == "ambiguous"]
        assert sorted(data["summary"]["ambiguous"]) == sorted(ambiguous)
        assert second.returncode == (1 if ambiguous else 0)  # it ran them: exit 1
        assert all(o["state"] == "complete" for o in outcomes if o["key"] not in ambiguous)
        accepted = [c["result_id"] for c in slow.stats()["creates"]
                    if c["kind"] == "render" and c["status"] == 200]
        assert len(accepted) == len(set(accepted)) <= 6  # no row created twice
        done = [o["job_id"] for o in outcomes
                if o["state"] == "complete" and o["kind"] == "render"]
        assert len(done) == len(set(done)) and set(done) <= set(accepted)
        assert len(accepted) - len(done) <= len(ambiguous)
    finally:
        slow.stop()


def test_sigterm_hands_the_rows_back_and_another_worker_finishes_them(
        pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    slow = Fake(time_scale=5.0)
    try:
        m = manifest(tmp_path, 0, 4)
        cli(slow, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema, "--enqueue")
        first = worker(slow, pg_dsn, pg_schema, "--grace", "0.5")
        deadline = time.monotonic() + 60
        while not accepted_creates(slow).get("render") and time.monotonic() < deadline:
            time.sleep(0.1)
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=30)  # stops on its own, promptly
        assert first.returncode == 143 and "worker stopped" in out + err, out + err
        second = worker(slow, pg_dsn, pg_schema, "--exit-when-empty")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, out + err
        data = status(slow, pg_dsn, pg_schema, m, tmp_path)
        assert data["summary"]["rows"] == {"done": 5}
        accepted = [c["result_id"] for c in slow.stats()["creates"]
                    if c["kind"] == "render" and c["status"] == 200]
        assert len(accepted) == 4  # the handed-back rows resumed their jobs
    finally:
        slow.stop()


def exit_when_empty(fake: Fake, dsn: str, schema: str, code: int = 0) -> None:
    """One worker until the queue is empty; ``code`` 1 when a row it ran failed."""
    p = worker(fake, dsn, schema, "--exit-when-empty")
    out, err = p.communicate(timeout=120)
    assert p.returncode == code, out + err


def test_enqueue_again_requeues_what_a_rerun_would_run_and_resubmit_ended_the_rest(
        pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    (tmp_path / "c0.png").write_bytes(make_png(20, 20))
    (tmp_path / "me.png").write_bytes(make_png())
    write_mp4(tmp_path / "d1.mp4", 1.0)
    write_mp4(tmp_path / "s1.mp4", 1.0)
    lines = [{"key": "char0", "kind": "character", "name": "C0", "image": "c0.png"},
             {"key": "stage", "kind": "scene", "name": "Stage", "video": "s1.mp4"},
             {"key": "r0", "ref_image": "me.png", "driving_video": "d1.mp4",
              "output": "out/r0.mp4"},
             {"key": "r1", "character_id": "char0", "scene_id": "stage",
              "output": "out/r1.mp4"},
             {"key": "r2", "ref_image": "me.png", "driving_video": "d1.mp4",
              "output": "out/r2.mp4"}]
    m = tmp_path / "m.jsonl"
    m.write_text("".join(json.dumps(x) + "\n" for x in lines))
    failing = Fake(time_scale=200.0, faults=["render_failure_rate=1.0"])
    fine = Fake(time_scale=200.0)
    try:
        cli(failing, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema, "--enqueue")
        # Both assets edited after enqueue: refused, never sent (and r1 below them).
        original = (tmp_path / "c0.png").read_bytes(), (tmp_path / "s1.mp4").read_bytes()
        (tmp_path / "c0.png").write_bytes(make_png(40, 40))
        write_mp4(tmp_path / "s1.mp4", 2.0)
        exit_when_empty(failing, pg_dsn, pg_schema, code=1)
        data = status(failing, pg_dsn, pg_schema, m, tmp_path)
        assert data["summary"]["rows"] == {"failed": 5}  # r0, r2 ended failed on the API
        (tmp_path / "c0.png").write_bytes(original[0])
        (tmp_path / "s1.mp4").write_bytes(original[1])

        # Enqueued again: the rows nothing was sent for (the assets, r1 below them) go back;
        # the renders that ended failed stay failed and are named, with the flag to pass.
        again = cli(fine, "--json", "bulk", str(m), "--journal", pg_dsn, "--schema",
                    pg_schema, "--enqueue")
        event = next(json.loads(x) for x in again.stdout.splitlines()
                     if '"enqueued"' in x)
        assert event["requeued"] == ["char0", "stage", "r1"] and event["ended"] == ["r0", "r2"]
        text = cli(fine, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema,
                   "--enqueue")
        assert "--resubmit-ended" in text.stdout + text.stderr
        exit_when_empty(fine, pg_dsn, pg_schema)
        by_key = {o["key"]: o for o in status(fine, pg_dsn, pg_schema, m, tmp_path)["outcomes"]}
        assert {k: o["state"] for k, o in by_key.items()} == {
            "char0": "complete", "stage": "complete", "r1": "complete", "r0": "failed",
            "r2": "failed"}
        # Nothing else paid for.
        assert accepted_creates(fine) == {"character": 1, "scene": 1, "render": 1}

        # --resubmit-ended failed: the failed renders are submitted again, once each.
        shown = cli(fine, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema,
                    "--enqueue", "--resubmit-ended", "failed")
        assert "2 that had ended re-queued" in shown.stdout + shown.stderr
        exit_when_empty(fine, pg_dsn, pg_schema)
        data = status(fine, pg_dsn, pg_schema, m, tmp_path)
        assert data["summary"]["rows"] == {"done": 5}
        assert accepted_creates(fine) == {"character": 1, "scene": 1, "render": 3}
        assert all((tmp_path / "out" / f"r{r}.mp4").stat().st_size == OUTPUT_BYTES
                   for r in range(3))
        # As a local rerun reports it: the creates this submission sent.
        assert {o["key"]: o["attempts"] for o in data["outcomes"]}["r0"] == 1
    finally:
        failing.stop()
        fine.stop()


def test_an_ambiguous_row_is_requeued_only_with_resubmit_ambiguous(
        fake: Fake, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    import asyncio

    from viggle_async import Journal
    from viggle_async.pg import PostgresJournalStore, PostgresLedger, RowBook

    m = manifest(tmp_path, 0, 1)  # the scene "stage", and r0
    cli(fake, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema, "--enqueue")

    async def ledger_state(step: str) -> str | None:
        async with PostgresLedger(pg_dsn, api_key="sk-test-fake", schema=pg_schema) as ledger:
            journal = Journal(PostgresJournalStore.on_ledger(ledger, name="dist"))
            if step == "cut":  # a worker sent r0's create and died before the answer
                await journal.record_intent("m.jsonl/r0", "render", "fp")
                await journal.mark_sending("m.jsonl/r0")
                await RowBook(ledger, "m.jsonl").finish(
                    "r0", ok=False, outcome={"state": "ambiguous", "error": "cut"})
            entry = await journal.get("m.jsonl/r0")
            return None if entry is None else str(entry.state)

    assert asyncio.run(ledger_state("cut")) == "sending"
    kept = cli(fake, "--json", "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema,
               "--enqueue")
    event = next(json.loads(x) for x in kept.stdout.splitlines() if '"enqueued"' in x)
    assert event["requeued"] == [] and event["ambiguous"] == ["r0"]
    # --resubmit-ended does not cover it: only a documented refusal proves no job exists.
    kept = cli(fake, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema,
               "--enqueue", "--resubmit-ended", "cancelled,failed")
    assert "1 row may already exist" in kept.stderr and "--resubmit-ambiguous" in kept.stderr
    assert asyncio.run(ledger_state("read")) == "sending"
    sent = cli(fake, "--json", "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema,
               "--enqueue", "--resubmit-ambiguous")
    event = next(json.loads(x) for x in sent.stdout.splitlines() if '"enqueued"' in x)
    assert event["requeued"] == ["r0"] and event["ambiguous"] == []
    assert asyncio.run(ledger_state("read")) == "intent"  # the worker sends it again


def test_a_running_worker_runs_a_row_again_once_it_is_re_queued(
        fake: Fake, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    """A long-lived worker that already ended a row (refused by the run's budget) takes it
    again after ``bulk --enqueue`` re-queues it: no new worker needed, nothing paid twice."""
    m = renders_manifest(tmp_path, 2)
    cli(fake, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema, "--enqueue",
        "--budget", "1")  # 1 credit per render: one is sent, the other refused
    with (tmp_path / "worker.log").open("w") as log:
        proc = worker(fake, pg_dsn, pg_schema, "--concurrency", "1", log=log)
        try:
            def rows() -> dict[str, int]:
                return dict(status(fake, pg_dsn, pg_schema, m, tmp_path)["summary"]["rows"])

            deadline = time.monotonic() + 60
            while rows() != {"done": 1, "failed": 1} and time.monotonic() < deadline:
                time.sleep(0.3)
            assert rows() == {"done": 1, "failed": 1}, (tmp_path / "worker.log").read_text()
            cli(fake, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema,
                "--enqueue", "--budget", "2")
            deadline = time.monotonic() + 60
            while rows() != {"done": 2} and time.monotonic() < deadline:
                time.sleep(0.3)
            assert rows() == {"done": 2}, (tmp_path / "worker.log").read_text()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    assert accepted_creates(fake) == {"render": 2}
    assert all((tmp_path / "out" / f"r{r}.mp4").stat().st_size == OUTPUT_BYTES
               for r in range(2))
