"""Orchestrator side: the server processes and the client processes, bounded in time.

Every benchmark run is a fresh client process (``python -m benchmarks._child``) so its
peak RSS (VmHWM) and CPU time are its own; the fake server is another process, reset
between runs. All traffic is to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

from ._common import RESULT_FILE_VAR, ROOT, loopback_env

__all__ = ["BenchError", "ChildServer", "Server", "run_child"]

# No proxy, whatever the environment says: benchmark traffic stays on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BenchError(Exception):
    """A benchmark could not run (a process failed, timed out or answered nonsense)."""


class ChildServer:
    """A helper server in its own process, ``python -m MODULE``; ``with Sub(...) as s``.

    ``__enter__`` starts it (``_config()`` as JSON on stdin; ``None``: no stdin), reads the
    first ``LINES`` ``key=value`` lines it prints and hands them to ``_started``. ``close``
    (also on leaving the block, or when starting fails) terminates it, killing it if it
    lingers.
    """

    MODULE: ClassVar[str]
    LINES: ClassVar[int]
    _proc: subprocess.Popen[str] | None = None

    def _config(self) -> dict[str, Any] | None:
        return None

    def _started(self, info: dict[str, str]) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        config = self._config()
        proc = subprocess.Popen(
            [sys.executable, "-m", self.MODULE],
            stdin=subprocess.DEVNULL if config is None else subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, cwd=ROOT, env=loopback_env())
        self._proc = proc
        try:
            if config is not None:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(config))
                proc.stdin.close()
            self._started(_read_lines(proc, self.LINES, timeout=30.0, name=self.MODULE))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        if proc.stdout is not None:
            proc.stdout.close()


class Server(ChildServer):
    """The fake server in its own process (``benchmarks._server``); ``with Server(...) as s``.

    Keyword arguments are ``FakeSettings`` fields (plus ``balance``).
    """

    MODULE, LINES = "benchmarks._server", 4

    def __init__(self, **settings: Any) -> None:
        self._settings = settings
        self.base_url = self.cdn_base_url = self.api_key = self.control_url = ""

    def _config(self) -> dict[str, Any]:
        return self._settings

    def _started(self, info: dict[str, str]) -> None:
        self.base_url, self.cdn_base_url = info["base_url"], info["cdn_base_url"]
        self.api_key, self.control_url = info["api_key"], info["control_url"]

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = _http("GET", self.base_url + "/__fake__/stats")
        return stats

    def control(self, method: str, path: str) -> Any:
        return _http(method, self.control_url + path)

    def reset(self) -> None:
        self.control("POST", "/reset")

    def sim_offset(self) -> tuple[float, float]:
        """(scale, offset) with fake simulated time = client monotonic * scale + offset."""
        clock = self.control("GET", "/clock")
        return clock["scale"], clock["sim"] - clock["mono"] * clock["scale"]

    def draws(self) -> list[tuple[float, float, float, float]]:
        """``(created, started, finished, video_seconds)`` per render, in arrival order."""
        return [(row[0], row[1], row[2], row[3]) for row in self.control("GET", "/draws")]

    def jobs(self) -> list[tuple[str, float, float, bool]]:
        return [(row[0], row[1], row[2], row[3]) for row in self.control("GET", "/jobs")]


def _http(method: str, url: str) -> Any:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with _OPENER.open(request, timeout=60) as resp:
        return json.loads(resp.read())


def _read_lines(proc: subprocess.Popen[str], count: int, timeout: float,
                name: str) -> dict[str, str]:
    """The first ``count`` ``key=value`` lines of server ``name``. A thread reads, so a server
    that never prints cannot hang us (select() on a buffered text pipe would miss lines)."""
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[str] = queue.Queue()

    def reader() -> None:
        for _ in range(count):
            line = stdout.readline()
            lines.put(line)
            if not line:
                return

    threading.Thread(target=reader, daemon=True).start()
    info: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while len(info) < count:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise BenchError(f"{name} did not start in time") from None
        if not line:
            raise BenchError(f"{name} exited early (code {proc.poll()})")
        key, _, value = line.strip().partition("=")
        info[key] = value
    return info


def run_child(module: str, variant: str, params: dict[str, Any], *,
              timeout: float) -> dict[str, Any]:
    """Run one variant in a fresh client process; its result dict, or BenchError."""
    with tempfile.TemporaryDirectory(prefix="viggle-bench-child-") as tmp:
        result_file = Path(tmp) / "result.json"
        env = {**loopback_env(), RESULT_FILE_VAR: str(result_file)}
        try:
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks._child", module, variant],
                input=json.dumps(params), capture_output=True, text=True, timeout=timeout,
                cwd=ROOT, env=env, check=False)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{module}/{variant} took more than {timeout:g} s") from None
        if done.returncode == 0 and result_file.exists():
            result: dict[str, Any] = json.loads(result_file.read_text())
            return result
    tail = "\n".join(done.stderr.strip().splitlines()[-15:])
    raise BenchError(f"{module}/{variant} failed (exit {done.returncode}):\n{tail}")
