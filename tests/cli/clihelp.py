"""Helpers shared by the CLI tests (a module of its own, so its name cannot clash with
other folders' conftest modules)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import anyio
import attrs

from viggle_async.testing import FakeViggle

# The installed console script, beside this interpreter.
SCRIPT = Path(sys.executable).parent / "viggle-async"
# A distinctive key, so a leak anywhere in the output is found.
SECRET = "sk-live-cli-test-7f3a9c51d2"
# Real time runs 1000x on the fake: a 2 s clip renders in ~11 ms; poll to match.
FAST = ("--poll-interval", "0.02")
BULK_FAST = (*FAST, "--poll-rate", "1000")

Run = Callable[..., Awaitable["Result"]]


@attrs.frozen
class Result:
    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, Any]]:
        """stdout parsed line by line; fails on any line that is not a JSON object."""
        objs = [json.loads(line) for line in self.out.splitlines()]
        assert all(isinstance(o, dict) for o in objs), objs
        return objs


def api_requests(fake: FakeViggle) -> int:
    """Every API request the fake has seen (creates, reads, deletes)."""
    return sum(fake.request_counts.values())


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def size(path: str | Path) -> int:
    return Path(path).stat().st_size


def read_until(stream: IO[str], done: Callable[[str], bool], timeout: float = 15.0
                ) -> list[str]:
    """Lines from ``stream`` up to the first one ``done`` accepts. A reader thread, because
    a buffered text stream defeats select(); it stops at that line, so ``communicate()``
    can read the rest."""
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


async def viggle_process(env: dict[str, str], *argv: str, script: str | None = None
                         ) -> tuple[int, str, str]:
    """The real CLI in its own process (``python -m viggle_async``, or ``script`` run with
    ``-c``): exit code, stdout, stderr. Never a traceback, never the key."""
    args = ([sys.executable, "-c", script] if script else
            [sys.executable, "-m", "viggle_async"])
    proc = await anyio.run_process([*args, *argv], env=env, check=False)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert SECRET not in out + err
    assert "Traceback" not in err, err
    return proc.returncode, out, err


def process_env(fake: FakeViggle, tmp_path: Path) -> dict[str, str]:
    """The environment of a CLI process on ``fake`` (its cache in ``tmp_path``)."""
    return {**os.environ, "VIGGLE_API_KEY": SECRET, "VIGGLE_BASE_URL": fake.base_url,
            "XDG_CACHE_HOME": str(tmp_path / "cache")}


@contextlib.contextmanager
def fake_server_process() -> Iterator[dict[str, str]]:
    """``python -m viggle_async fake-server`` in its own process, slow enough (2x) that
    renders stay running: its printed ``base_url``, ``cdn_base_url`` and ``api_key``. Stopped
    with Ctrl-C, which must end it cleanly (exit 0)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "viggle_async", "fake-server", "--time-scale", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = read_until(proc.stdout, lambda line: line.startswith("api_key="))
        yield dict(line.strip().partition("=")[::2] for line in lines)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "in another shell run:" in err


def fake_stats(base_url: str) -> dict[str, Any]:
    """The fake server's ``/__fake__/stats`` (request counts, balance)."""
    with urllib.request.urlopen(f"{base_url}/__fake__/stats", timeout=5) as response:
        stats: dict[str, Any] = json.load(response)
    return stats


def stop_after_submits(argv: list[str], env: dict[str, str], submitted: int,
                       sig: signal.Signals = signal.SIGINT) -> tuple[int, str, str]:
    """Run ``viggle-async ARGV --json``-style (JSON lines on stdout) in its own process, send
    ``sig`` (Ctrl-C by default) once ``submitted`` jobs are created: exit code, the rest of
    stdout, stderr."""
    proc = subprocess.Popen([str(SCRIPT), *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        seen: set[str] = set()

        def enough(line: str) -> bool:
            event = json.loads(line)
            if event["event"] == "submitted":
                seen.add(event["key"])
            return len(seen) == submitted

        read_until(proc.stdout, enough)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err
