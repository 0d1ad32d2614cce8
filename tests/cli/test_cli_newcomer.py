"""What a newcomer following the README hit, each run as the real ``viggle-async`` command
in its own process against ``viggle-async fake-server``."""

from __future__ import annotations

import contextlib
import json
import os
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


@pytest.fixture
def env(server: dict[str, str], tmp_path: Path) -> dict[str, str]:
    (tmp_path / "me.png").write_bytes(make_png())
    write_mp4(tmp_path / "d.mp4", 3.0)
    return {**os.environ, "VIGGLE_API_KEY": server["api_key"],
            "VIGGLE_BASE_URL": server["base_url"], "XDG_CACHE_HOME": str(tmp_path / "cache")}


def _run(env: dict[str, str], *argv: str, cwd: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(SCRIPT), *argv], env=env, capture_output=True, text=True,
                          timeout=60, check=False, cwd=cwd)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert env["VIGGLE_API_KEY"] not in proc.stdout + proc.stderr
    return proc


def _posts(base_url: str) -> int:
    stats = fake_stats(base_url)
    return sum(n for name, n in stats["request_counts"].items() if name.startswith("POST"))


# --- 1. outputs that cannot be saved: exit 2, nothing sent ---------------------------------

@pytest.mark.parametrize(("output", "words"), [
    ("/proc/nope/x.mp4", "cannot create the folder '/proc/nope'"),
    ("{tmp}", "is a folder"),
    ("{tmp}/me.png/x.mp4", "is a file"),
])
def test_render_refuses_an_output_it_cannot_save_before_sending(
        env: dict[str, str], tmp_path: Path, output: str, words: str) -> None:
    proc = _run(env, "render", "--ref-image", str(tmp_path / "me.png"), "--driving-video",
                str(tmp_path / "d.mp4"), "-o", output.format(tmp=tmp_path))
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: -o/--output: ") and words in line and "Fix: " in line
    assert "nothing was sent" in line
    assert _posts(env["VIGGLE_BASE_URL"]) == 0


def test_render_checks_the_mask_output_too(env: dict[str, str], tmp_path: Path) -> None:
    proc = _run(env, "render", "--ref-image", str(tmp_path / "me.png"), "--driving-video",
                str(tmp_path / "d.mp4"), "--background-mode", "transparent", "-o",
                str(tmp_path / "ok.mp4"), "--mask-output", "/proc/nope/m.mp4")
    assert proc.returncode == 2, proc.stderr
    assert "--mask-output: cannot create the folder '/proc/nope'" in proc.stderr


@pytest.mark.parametrize("dry_run", [True, False])
def test_bulk_names_the_output_columns_it_cannot_save_dry_run_or_not(
        env: dict[str, str], tmp_path: Path, dry_run: bool) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("key,ref_image,driving_video,output,mask_output,background_mode\n"
                        "a,me.png,d.mp4,/proc/nope/a.mp4,,\n"
                        "b,me.png,d.mp4,b.mp4,me.png/b-mask.mp4,transparent\n"
                        "c,me.png,d.mp4,.,,\n")
    proc = _run(env, "bulk", str(manifest), *(["--dry-run"] if dry_run else []))
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert "m.csv:2: row 1 (key 'a'), output: " in err and "'/proc/nope'" in err
    assert "mask_output" in err and "is a file" in err
    assert "(key 'c'), output: " in err and "is a folder" in err
    assert "3 problems" in err and "nothing was sent" in err
    assert _posts(env["VIGGLE_BASE_URL"]) == 0


# --- 2 and 3. a stop (Ctrl-C or SIGTERM) leaves a truthful report --------------------------

ASSETS = ("key,kind,image,name,video,ref_image,driving_video,output\n"
          "hero,character,me.png,Hero,,,,\n"
          "stage,scene,,Stage,d.mp4,,,\n"
          "done,render,,,,me.png,d.mp4,done.mp4\n")


@pytest.mark.parametrize(("sig", "code", "word"), [
    (signal.SIGTERM, 143, "terminated (SIGTERM)"),
    (signal.SIGINT, 130, "interrupted"),
])
def test_a_stop_reports_running_rows_as_running_and_only_saved_renders_as_downloaded(
        env: dict[str, str], tmp_path: Path, sig: signal.Signals, code: int, word: str) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("key,ref_image,driving_video,output\n"
                        + "".join(f"r{i},me.png,d.mp4,out/r{i}.mp4\n" for i in range(3)))
    journal, report = tmp_path / "j.db", tmp_path / "r.json"
    argv = ["bulk", str(manifest), "--json", "--journal", str(journal), "--report", str(report),
            "--poll-interval", "0.2"]
    returned, out, err = stop_after_submits(argv, env, submitted=3, sig=sig)
    assert returned == code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"{word}: 3 jobs still running on the server")
    assert not any(line == word for line in lines)  # no stray bare closing line
    assert "resume (waits for them, downloads, runs the rest): viggle-async" in err
    assert json.loads(out.splitlines()[-1]) == {"event": "interrupted", "exit_code": code}
    data = json.loads(report.read_text())
    summary = data["summary"]
    assert summary["exit_code"] == code
    assert (summary["running"], summary["failed"], summary["done"]) == (3, 0, 0)
    assert all(r["state"] == "running" and r["downloaded"] is False for r in data["outcomes"])
    assert not (tmp_path / "out" / "r0.mp4").exists()
    # The cancel hint runs as pasted: one shell loop over the job ids.
    loop = next(line for line in lines if "cancel them (refunded): " in line)
    path = {**env, "PATH": f"{SCRIPT.parent}{os.pathsep}{env['PATH']}"}
    cancel = subprocess.run(["sh", "-c", loop.split("(refunded): ", 1)[1]], env=path,
                            capture_output=True, text=True, timeout=60, check=False)
    # Each job is cancelled, or it ended meanwhile (a loaded machine, a fast fake): the
    # loop went over every id either way.
    ended = [x for x in cancel.stderr.splitlines() if "cannot be cancelled" in x]
    assert cancel.returncode == 0 or (ended and len(ended) == len(
        [x for x in cancel.stderr.splitlines() if x.startswith("error:")])), cancel.stderr
    assert _posts(env["VIGGLE_BASE_URL"]) == 3  # the three creates; cancel is a DELETE


def test_report_downloaded_is_true_only_for_saved_renders(env: dict[str, str],
                                                          tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(ASSETS)
    report = tmp_path / "r.json"
    proc = _run(env, "bulk", str(manifest), "--poll-interval", "0.05", "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    rows = {r["key"]: r for r in json.loads(report.read_text())["outcomes"]}
    assert rows["done"]["downloaded"] is True and (tmp_path / "done.mp4").is_file()
    # A character or a scene has nothing to download: not "downloaded: true".
    assert rows["hero"]["downloaded"] is None and rows["stage"]["downloaded"] is None


# --- 4 and 7. an unreachable API, a wrong key, an unknown job: one wording everywhere ------

def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("argv", [["credits"], ["status", "job_x"], ["wait", "job_x"],
                                  ["download", "job_x", "x.mp4"]])
def test_every_command_says_how_to_fix_an_unreachable_api(
        env: dict[str, str], tmp_path: Path, argv: list[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    proc = _run({**env, "VIGGLE_BASE_URL": url}, *argv, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]  # after any "retrying ..." lines
    assert line.startswith(f"error: cannot reach the API at {url}")
    assert "check --base-url / VIGGLE_BASE_URL" in line and "nothing was sent" in line


def test_bulk_writes_its_report_when_the_api_is_unreachable(env: dict[str, str],
                                                            tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(ASSETS)
    report, journal = tmp_path / "r.json", tmp_path / "j.db"
    url = f"http://127.0.0.1:{_free_port()}"
    proc = _run({**env, "VIGGLE_BASE_URL": url}, "bulk", str(manifest), "--report", str(report),
                "--journal", str(journal))
    assert proc.returncode == 2, proc.stderr
    assert "check --base-url / VIGGLE_BASE_URL" in proc.stderr
    data = json.loads(report.read_text())
    assert data["summary"]["exit_code"] == 2 and data["summary"]["failed"] == 3
    assert {r["state"] for r in data["outcomes"]} == {"not_submitted"}
    assert all("cannot reach the API" in r["error"] for r in data["outcomes"])
    assert not journal.exists()  # nothing ran: no journal left behind


def test_connect_timeout_waits_for_an_api_that_comes_up(env: dict[str, str]) -> None:
    """--connect-timeout is how long an unreachable API is retried: a server that starts
    listening a few seconds later is reached (the library alone gives up after its few
    quick attempts)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    client = subprocess.Popen([str(SCRIPT), "credits", "--base-url", url, "--connect-timeout",
                               "60"], env={**env, "VIGGLE_API_KEY": "fake-key-late"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Let the first attempts fail (the command must still be waiting), then serve.
        with contextlib.suppress(subprocess.TimeoutExpired):
            client.wait(timeout=4)
        assert client.poll() is None, client.communicate()
        server = subprocess.Popen(
            [sys.executable, "-m", "viggle_async", "fake-server", "--port", str(port),
             "--api-key", "fake-key-late"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        try:
            out, err = client.communicate(timeout=60)
        finally:
            server.send_signal(signal.SIGINT)
            server.communicate(timeout=10)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    assert client.returncode == 0, err
    assert out == "balance: 10,000 credits\n"


def test_a_wrong_key_reads_the_same_in_every_command(env: dict[str, str],
                                                     tmp_path: Path) -> None:
    bad = {**env, "VIGGLE_API_KEY": "sk-wrong-000"}
    manifest = tmp_path / "m.csv"
    manifest.write_text(ASSETS)
    journal = tmp_path / "j.db"
    runs = [_run(bad, "credits"),
            _run(bad, "render", "--ref-image", str(tmp_path / "me.png"), "--driving-video",
                 str(tmp_path / "d.mp4"), "-o", str(tmp_path / "x.mp4")),
            _run(bad, "bulk", str(manifest), "--journal", str(journal))]
    for proc in runs:
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()[-1:]
        assert line.startswith("error: the API rejected VIGGLE_API_KEY ("), line
        assert "sk-wrong-000" not in proc.stdout + proc.stderr
    assert not journal.exists()
    assert not list(tmp_path.glob("*.lock"))


@pytest.mark.parametrize("argv", [["status", "job_nope"], ["wait", "job_nope"],
                                  ["download", "job_nope", "x.mp4"]])
def test_an_unknown_job_hints_at_another_base_url_or_key(
        env: dict[str, str], tmp_path: Path, argv: list[str]) -> None:
    proc = _run(env, *argv, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "no job job_nope at " in proc.stderr
    assert "another --base-url / VIGGLE_BASE_URL or another API key?" in proc.stderr


# --- 5. the fake server serves playable clips; both entry points take the same options ----

def test_fake_server_outputs_are_playable_mp4s_one_per_job(env: dict[str, str],
                                                           tmp_path: Path) -> None:
    clips = []
    for name in ("a.mp4", "b.mp4"):
        proc = _run(env, "render", "--ref-image", str(tmp_path / "me.png"), "--driving-video",
                    str(tmp_path / "d.mp4"), "-o", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
        clips.append((tmp_path / name).read_bytes())
    for data in clips:
        assert data[4:8] == b"ftyp" and b"moov" in data and b"avc1" in data  # H.264 in MP4
    assert clips[0] != clips[1]  # a clip per job, not one placeholder


@pytest.mark.parametrize("entry", [["-m", "viggle_async", "fake-server"],
                                   ["-m", "viggle_async.testing"]])
def test_both_fake_server_entry_points_take_the_same_options(entry: list[str]) -> None:
    proc = subprocess.run([sys.executable, *entry, "--help"], capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    for option in ("--port", "--cdn-port", "--time-scale", "--balance", "--api-key",
                   "--output-bytes", "--placeholder-outputs", "--fault"):
        assert option in proc.stdout, option
    assert "130" not in proc.stdout and "bulk" not in proc.stdout  # not bulk's exit codes
    bad = subprocess.run([sys.executable, *entry, "--fault", "nope=1"], capture_output=True,
                         text=True, timeout=30, check=False)
    assert bad.returncode == 2 and "--fault 'nope=1'" in bad.stderr
    assert "Traceback" not in bad.stderr


# --- 7. words for people -------------------------------------------------------------------

def test_a_one_row_dry_run_says_row_not_rows(env: dict[str, str], tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("key,ref_image,driving_video,output\na,me.png,d.mp4,a.mp4\n")
    proc = _run(env, "bulk", str(manifest), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("dry run: 1 row valid; estimated cost ")


def test_manifest_problems_name_columns_not_python_arguments(env: dict[str, str],
                                                             tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("key,ref_image,driving_video,output,bg_color,background_mode\n"
                        "a,me.png,d.mp4,a.mp4,1;2,solid\n"
                        'b,me.png,d.mp4,b.mp4,"1,2,3",\n')
    proc = _run(env, "bulk", str(manifest), "--dry-run")
    assert proc.returncode == 2, proc.stderr
    assert "background_mode solid" in proc.stderr
    assert "='" not in proc.stderr and "3-tuple" not in proc.stderr
