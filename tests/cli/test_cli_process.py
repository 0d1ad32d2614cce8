"""The real entry points, as separate processes: the installed ``viggle-async`` script,
``python -m viggle_async``, the ``fake-server`` command, and Ctrl-C (exit 130)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from clihelp import SCRIPT, fake_server_process, fake_stats, stop_after_submits

from viggle_async.testing import make_png, write_mp4


@pytest.fixture
def server() -> Iterator[dict[str, str]]:
    with fake_server_process() as info:
        yield info


def test_installed_script_help() -> None:
    proc = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: viggle-async")
    assert "exit codes:" in proc.stdout and "130  interrupted" in proc.stdout


def test_module_entry_point_and_ctrl_c(server: dict[str, str], tmp_path: Path) -> None:
    env = {**os.environ, "VIGGLE_API_KEY": server["api_key"],
           "VIGGLE_BASE_URL": server["base_url"]}
    credits = subprocess.run([sys.executable, "-m", "viggle_async", "credits"], env=env,
                             capture_output=True, text=True, timeout=30, check=False)
    assert (credits.returncode, credits.stdout) == (0, "balance: 10,000 credits\n"), credits.stderr

    (tmp_path / "me.png").write_bytes(make_png())
    write_mp4(tmp_path / "d.mp4", 3.0)
    manifest = tmp_path / "m.csv"
    manifest.write_text("key,ref_image,driving_video,output\na,me.png,d.mp4,a.mp4\n")
    report = tmp_path / "report.json"
    code, out, err = stop_after_submits(
        ["bulk", str(manifest), "--json", "--cancel-remote", "--report", str(report)], env,
        submitted=1)
    assert code == 130, err
    # One closing line that says what the stop left behind (no stray bare "interrupted").
    assert err.strip().splitlines()[-1] == (
        "interrupted: 1 job cancelled on the server (refunded); no job is left running on "
        "the server")
    assert json.loads(out.splitlines()[-1]) == {"event": "interrupted", "exit_code": 130}
    (outcome,) = json.loads(report.read_text())["outcomes"]
    assert outcome["state"] == "cancelled"
    # --cancel-remote cancelled the running job on the server, which refunded it.
    stats = fake_stats(server["base_url"])
    assert stats["request_counts"]["DELETE /api/render/{job_id}"] == 1
    assert stats["balance"] == 10_000


def test_ctrl_c_reports_the_running_jobs_and_how_to_resume_and_cancel(
        server: dict[str, str], tmp_path: Path) -> None:
    env = {**os.environ, "VIGGLE_API_KEY": server["api_key"],
           "VIGGLE_BASE_URL": server["base_url"]}
    (tmp_path / "me.png").write_bytes(make_png())
    write_mp4(tmp_path / "d.mp4", 3.0)
    manifest = tmp_path / "m.csv"
    manifest.write_text("key,ref_image,driving_video,output\n"
                        + "".join(f"r{i},me.png,d.mp4,r{i}.mp4\n" for i in range(3)))
    journal, report = tmp_path / "j.db", tmp_path / "report.json"
    argv = ["bulk", str(manifest), "--json", "--journal", str(journal), "--report", str(report),
            "--poll-interval", "0.2"]
    code, _, err = stop_after_submits(argv, env, submitted=3)
    assert code == 130, err
    # The report tells the truth: every job is still running, with its id and its cost,
    # and the exit code is the one the process returned.
    data = json.loads(report.read_text())
    assert data["summary"]["exit_code"] == 130
    assert data["summary"]["running"] == 3 and data["summary"]["credits_running"] == 9
    rows = data["outcomes"]
    assert {r["state"] for r in rows} == {"running"}
    assert all(r["job_id"] and r["credits"] == 3 for r in rows)
    assert "3 jobs still running on the server (about 9 credits committed)" in err
    assert "resume (waits for them, downloads, runs the rest): viggle-async " + " ".join(
        argv) in err
    ids = " ".join(r["job_id"] for r in rows)
    assert f'  cancel them (refunded): for job in {ids}; do viggle-async cancel "$job"; done' in err
    assert all(r["job_id"] in err for r in rows)
    # The resume command does what it says: no new job, nothing spent this run.
    again = subprocess.run([str(SCRIPT), *argv], env=env, capture_output=True, text=True,
                           timeout=60, check=False)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.splitlines()[-1])
    assert summary["states"] == {"complete": 3}
    assert (summary["credits_this_run"], summary["credits_earlier_runs"]) == (0, 9)
    assert fake_stats(server["base_url"])["request_counts"]["POST /api/render"] == 3


@pytest.mark.parametrize(("sig", "code", "stop"), [
    (signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_ctrl_c_on_render_says_how_to_wait_for_the_job(
        server: dict[str, str], tmp_path: Path, sig: signal.Signals, code: int,
        stop: str) -> None:
    env = {**os.environ, "VIGGLE_API_KEY": server["api_key"],
           "VIGGLE_BASE_URL": server["base_url"]}
    (tmp_path / "me.png").write_bytes(make_png())
    write_mp4(tmp_path / "d.mp4", 3.0)
    out_path = tmp_path / "clip.mp4"
    returned, out, err = stop_after_submits(
        ["render", "--ref-image", str(tmp_path / "me.png"), "--driving-video",
         str(tmp_path / "d.mp4"), "-o", str(out_path), "--json"], env, submitted=1, sig=sig)
    assert returned == code, err
    running = [json.loads(line) for line in out.splitlines()
               if json.loads(line)["event"] == "running"]
    (job,) = [r["job_id"] for r in running]
    assert running[0]["credits"] == 3
    # Said once: what stopped the run and what it left behind, in one closing message
    # (before the fix a bare "interrupted" line followed it).
    lines = err.strip().splitlines()
    assert lines[0] == (f"{stop}: job {job} is still running on the server (about 3 "
                        "credits) and is charged unless cancelled."), err
    assert lines[1:] == [f"  get it when done: viggle-async wait {job} -o {out_path}",
                         f"  cancel it (refunded): viggle-async cancel {job}"], err
    assert json.loads(out.splitlines()[-1]) == {"event": "interrupted", "exit_code": code}


def test_ctrl_c_on_render_with_cancel_remote_says_it_once(server: dict[str, str],
                                                         tmp_path: Path) -> None:
    env = {**os.environ, "VIGGLE_API_KEY": server["api_key"],
           "VIGGLE_BASE_URL": server["base_url"]}
    (tmp_path / "me.png").write_bytes(make_png())
    write_mp4(tmp_path / "d.mp4", 3.0)
    code, out, err = stop_after_submits(
        ["render", "--ref-image", str(tmp_path / "me.png"), "--driving-video",
         str(tmp_path / "d.mp4"), "-o", str(tmp_path / "c.mp4"), "--json", "--cancel-remote"],
        env, submitted=1)
    assert code == 130, err
    (line,) = err.strip().splitlines()  # one closing line, no bare "interrupted" after it
    assert re.fullmatch(r"interrupted: job job_\w+ cancelled \(cancelled on the server\)",
                        line), err
    assert json.loads(out.splitlines()[-1]) == {"event": "interrupted", "exit_code": 130}
