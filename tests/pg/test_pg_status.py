"""``bulk --status`` / ``--report`` of a distributed run: the same report as a local run,
rows in progress and stalled, and runs the ledger does not have (real PostgreSQL, worker
subprocesses, the fake server in its own process)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pghelp import Fake, worker
from test_pg_workers import accepted_creates, cli, manifest

from viggle_async.testing import make_png


@pytest.fixture
def fake() -> Iterator[Fake]:
    server = Fake(time_scale=200.0)
    yield server
    server.stop()


def status(fake: Fake, dsn: str, schema: str, m: Path, report: Path, *extra: str
           ) -> tuple[dict[str, Any], Any]:
    done = cli(fake, "--json", "bulk", str(m), "--journal", dsn, "--schema", schema,
               "--status", "--report", str(report), *extra, check=False)
    return json.loads(report.read_text()), done


def row_keys(report: dict[str, Any]) -> set[str]:
    return {k for row in report["outcomes"] for k in row if k != "fetch"}


def test_the_distributed_report_has_the_local_reports_shape(
        fake: Fake, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    local_dir, dist_dir = tmp_path / "local", tmp_path / "dist"
    local_dir.mkdir()
    dist_dir.mkdir()
    local_m, dist_m = manifest(local_dir, 2, 4), manifest(dist_dir, 2, 4)
    cli(fake, "bulk", str(local_m), "--report", str(tmp_path / "local.json"))
    local = json.loads((tmp_path / "local.json").read_text())
    cli(fake, "bulk", str(dist_m), "--journal", pg_dsn, "--schema", pg_schema, "--enqueue")
    # A character edited after enqueue fails, and so does the render that needs it.
    (dist_dir / "c1.png").write_bytes(make_png(40, 40))
    p = worker(fake, pg_dsn, pg_schema, "--exit-when-empty")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1, out + err  # a row this worker ran failed
    dist, done = status(fake, pg_dsn, pg_schema, dist_m, tmp_path / "dist.json")
    assert done.returncode == 1, done.stdout + done.stderr  # every row ended, three failed

    # Every row has the local report's fields, no more, no fewer; the summary has all of
    # the local summary's, plus the ledger's.
    assert row_keys(dist) == row_keys(local)
    assert all(set(o) - {"fetch"} == row_keys(local) for o in dist["outcomes"])
    assert set(local["summary"]) <= set(dist["summary"])
    by_key = {o["key"]: o for o in dist["outcomes"]}
    blocked = by_key["r1"]  # r1 and r3 render char1: failed because their dependency did
    assert blocked["state"] == "failed" and "char1" in blocked["error"]
    assert by_key["char1"]["state"] == "failed"
    assert by_key["char0"]["downloaded"] is None and by_key["stage"]["downloaded"] is None
    assert by_key["r0"]["downloaded"] is True and by_key["r0"]["spent_this_run"] is True
    assert by_key["r0"]["output"] == str(dist_dir / "out" / "r0.mp4")
    assert by_key["r0"]["attempts"] == 1
    summary = dist["summary"]
    assert summary["exit_code"] == 1 and summary["failed"] == 3 and summary["running"] == 0
    assert summary["credits_this_run"] == summary["credits_spent"] == sum(
        o["credits"] for o in dist["outcomes"] if o["state"] == "complete")
    assert summary["credits_earlier_runs"] == 0 and summary["not_downloaded"] == 0
    # The same rows cost the same, locally and distributed (but the three that failed).
    local_credits = {o["key"]: o["credits"] for o in local["outcomes"]}
    assert all(o["credits"] == local_credits[o["key"]] for o in dist["outcomes"]
               if o["state"] == "complete")


def test_a_run_the_ledger_does_not_have_is_named_with_the_runs_it_has(
        fake: Fake, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    m = manifest(tmp_path, 0, 1)
    cli(fake, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema, "--enqueue")
    report = tmp_path / "r.json"
    for extra in (["--run", "nope"], ["--run", "nope", "--report", str(report)]):
        done = cli(fake, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema,
                   "--status", *extra, check=False)
        assert done.returncode == 2, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "'nope'" in lines[0] and "--run" in lines[0], lines
        assert "'m.jsonl'" in lines[0]  # the run it has
        assert "; ;" not in done.stdout + done.stderr
    assert not report.exists()


def test_another_manifest_with_the_same_file_name_is_not_taken_for_the_run(
        fake: Fake, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    first, second = tmp_path / "proj1", tmp_path / "proj2"
    first.mkdir()
    second.mkdir()
    m1, m2 = manifest(first, 0, 1), manifest(second, 0, 2)  # both named m.jsonl
    cli(fake, "bulk", str(m1), "--journal", pg_dsn, "--schema", pg_schema, "--enqueue")
    shown = cli(fake, "bulk", str(m2), "--journal", pg_dsn, "--schema", pg_schema, "--status",
                check=False)
    assert shown.returncode == 2 and "--run" in shown.stderr and str(m1) in shown.stderr, (
        shown.stdout + shown.stderr)
    # Enqueueing it under the same name is refused (even with rows of other keys)...
    refused = cli(fake, "bulk", str(m2), "--journal", pg_dsn, "--schema", pg_schema,
                  "--enqueue", check=False)
    assert refused.returncode == 2 and "--run" in refused.stderr, refused.stderr
    # ...and under its own name it is a run of its own.
    cli(fake, "bulk", str(m2), "--journal", pg_dsn, "--schema", pg_schema, "--enqueue",
        "--run", "proj2")
    data, _ = status(fake, pg_dsn, pg_schema, m2, tmp_path / "r.json", "--run", "proj2")
    assert data["summary"]["total"] == 3 and data["summary"]["run"] == "proj2"  # + the scene


def test_status_shows_rows_in_progress_and_the_rows_of_a_dead_worker_as_stalled(
        pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    slow = Fake(time_scale=2.0)  # renders take seconds: the status lands mid-run
    try:
        m = manifest(tmp_path, 0, 4)
        cli(slow, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema, "--enqueue")
        first = worker(slow, pg_dsn, pg_schema, "--concurrency", "2")
        deadline = time.monotonic() + 60
        while accepted_creates(slow).get("render", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        data, done = status(slow, pg_dsn, pg_schema, m, tmp_path / "a.json")
        states = data["summary"]["states"]
        assert states.get("rendering", 0) >= 1, data["summary"]  # not all "queued"
        assert data["summary"]["running"] >= 1 and data["summary"]["credits_running"] > 0
        assert done.returncode == 0  # in progress is not failed
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        time.sleep(1.5)  # its heartbeat (0.5 s) goes stale
        data, done = status(slow, pg_dsn, pg_schema, m, tmp_path / "b.json",
                            "--stalled-after", "1")
        held = [o["key"] for o in data["outcomes"] if o["state"] == "stalled"]
        assert held and data["summary"]["stalled"] == held, data["summary"]
        text = cli(slow, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema,
                   "--status", "--stalled-after", "1", check=False)
        assert f"{len(held)} stalled" in text.stdout + text.stderr
        second = worker(slow, pg_dsn, pg_schema, "--exit-when-empty")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, out + err
        data, done = status(slow, pg_dsn, pg_schema, m, tmp_path / "c.json")
        assert data["summary"]["stalled"] == [] and data["summary"]["rows"] == {"done": 5}
        # A row the second worker resumed from the journal still shows its create.
        assert all(data_row["attempts"] >= 1 for data_row in data["outcomes"]
                   if data_row["kind"] == "render")
    finally:
        slow.stop()


def test_status_shows_a_row_being_downloaded(pg_dsn: str, pg_schema: str,
                                             tmp_path: Path) -> None:
    slow_cdn = Fake(time_scale=200.0, faults=["cdn_bytes_per_s=500"])  # 8 s per output
    try:
        m = manifest(tmp_path, 0, 1)
        cli(slow_cdn, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema, "--enqueue")
        p = worker(slow_cdn, pg_dsn, pg_schema, "--exit-when-empty")
        deadline = time.monotonic() + 60
        while not list((tmp_path / "out").glob(".r0.mp4.*.part")):
            assert time.monotonic() < deadline and p.poll() is None, "no download seen"
            time.sleep(0.05)
        data, done = status(slow_cdn, pg_dsn, pg_schema, m, tmp_path / "r.json")
        by_key = {o["key"]: o for o in data["outcomes"]}
        assert by_key["r0"]["state"] == "downloading" and by_key["r0"]["job_id"]
        assert data["summary"]["running"] == 1 and done.returncode == 0
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, out + err
    finally:
        slow_cdn.stop()
