"""What a newcomer following the README hit, each run as the real ``viggle-async`` command
in its own process against ``viggle-async fake-server``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from viggle_async.testing import make_png, write_mp4

SCRIPT = Path(sys.executable).parent / "viggle-async"


def _read_until(stream: IO[str], done: Callable[[str], bool], timeout: float = 15.0
                ) -> list[str]:
    lines: list[str] = []

    def read() -> None:
        for line in stream:
            lines.append(line)
            if done(line):
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert lines and done(lines[-1]), f"timed out; read so far: {lines}"
    return lines


@pytest.fixture
def server() -> Iterator[dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "viggle_async", "fake-server", "--time-scale", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = _read_until(proc.stdout, lambda line: line.startswith("api_key="))
        yield dict(line.strip().partition("=")[::2] for line in lines)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)


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
    import urllib.request
    with urllib.request.urlopen(f"{base_url}/__fake__/stats", timeout=5) as response:
        stats: dict[str, Any] = json.load(response)
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
    proc = subprocess.Popen([str(SCRIPT), *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        seen: set[str] = set()

        def enough(line: str) -> bool:
            event = json.loads(line)
            if event["event"] == "submitted":
                seen.add(event["key"])
            return len(seen) == 3

        _read_until(proc.stdout, enough)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
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
    assert cancel.returncode == 0, cancel.stderr
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
