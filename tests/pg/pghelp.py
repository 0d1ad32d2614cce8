"""Names the PostgreSQL tests share (a module of its own: `conftest` is ambiguous when
several test folders have one)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import anyio

from viggle_async.pg import PostgresLedger
from viggle_async.testing import FakeViggle, make_png, write_mp4
from viggle_async.testing._observe import Observations

API_KEY = "vgl_test_key_0123456789abcdef"

#: ``await open_ledger(**kwargs)``: a ledger on the test's schema, with its own pool.
LedgerFactory = Callable[..., Awaitable[PostgresLedger]]

#: Size of every output the out-of-process fake serves.
OUTPUT_BYTES = 4096


class Fake:
    """``viggle-async fake-server`` in a subprocess."""

    def __init__(self, time_scale: float, faults: Sequence[str] = (),
                 api_key: str = "sk-test-fake") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "viggle_async", "fake-server", "--time-scale",
             str(time_scale), "--output-bytes", str(OUTPUT_BYTES), "--api-key", api_key,
             *(f"--fault={f}" for f in faults)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("base_url="), line
        self.base_url = line.strip().split("=", 1)[1]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base_url + "/__fake__/stats") as r:
            data: dict[str, Any] = json.load(r)
        return data

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=10)  # closes the pipe too


class HasBaseUrl(Protocol):
    base_url: str


def worker(fake: HasBaseUrl, dsn: str, schema: str, *extra: str,
           log: IO[str] | None = None) -> subprocess.Popen[str]:
    """``viggle-async worker`` on ``fake`` (a ``Fake`` or an in-process ``FakeViggle``);
    its output goes to pipes, or to ``log`` (an open file: a long-running worker must not
    block on a full pipe that nobody reads)."""
    env = {**os.environ, "VIGGLE_BASE_URL": fake.base_url, "VIGGLE_API_KEY": "sk-test-fake"}
    out: Any = subprocess.PIPE if log is None else log
    return subprocess.Popen(
        [sys.executable, "-m", "viggle_async", "worker", "--journal", dsn, "--schema", schema,
         "--poll-interval", "0.05", "--stalled-after", "2", "--heartbeat", "0.5",
         "--recover-every", "1", *extra],
        env=env, stdout=out, stderr=subprocess.STDOUT if log is not None else subprocess.PIPE,
        text=True)


# -- an in-process fake for tests that change its faults while worker processes run -------

class TimedList(list[Any]):
    """A list that notes ``time.monotonic()`` of each ``append`` in ``times``."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, item: Any) -> None:
        self.times.append(time.monotonic())
        super().append(item)


class TimedObservations:
    """A running fake's observations, plus when things arrived (``time.monotonic()``):
    ``log`` has ``(time, "METHOD /route")`` of every API request as it arrives, before any
    fault; ``rate_limited_at`` the time of each 429; ``creates.times`` each create
    record's. Everything else reads and writes through to the fake's ``Observations``."""

    def __init__(self, inner: Observations) -> None:
        inner.creates = TimedList()
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "log", [])
        object.__setattr__(self, "rate_limited_at", [])
        self.log: list[tuple[float, str]]
        self.rate_limited_at: list[float]
        self.creates: TimedList

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "rate_limited":
            self.rate_limited_at.append(time.monotonic())
        setattr(self._inner, name, value)

    def enter(self, route: tuple[str, str]) -> None:
        self.log.append((time.monotonic(), f"{route[0]} {route[1]}"))
        self._inner.enter(route)


def timed(fake: FakeViggle) -> TimedObservations:
    """Time what a running fake observes from now on (what it saw so far is dropped)."""
    obs = TimedObservations(Observations())
    fake.store.obs = obs  # type: ignore[assignment]
    return obs


async def wait_until(what: str, predicate: Callable[[], bool], *, timeout: float = 60.0,
                     procs: Sequence[subprocess.Popen[str]] = (), logs: Path | None = None
                     ) -> None:
    """Poll ``predicate`` every 10 ms; fail after ``timeout`` seconds, or at once when one
    of ``procs`` exited (with the logs under ``logs``)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise AssertionError(f"waiting for {what}: "
                                 + ("a worker exited" if dead else "timed out")
                                 + read_logs(logs))
        await anyio.sleep(0.01)


def read_logs(folder: Path | None) -> str:
    if folder is None:
        return ""
    return "".join(f"\n--- {p.name}\n{p.read_text()[-4000:]}"
                   for p in sorted(folder.glob("worker*.log")))


async def finish(procs: list[subprocess.Popen[str]], logs: Path, timeout: float = 120.0,
                 *, code: int | tuple[int, ...] = 0) -> None:
    """Wait for every worker to exit ``code`` (or one of them; 1: a row it ran failed or
    is ambiguous); kill the rest and fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            await anyio.to_thread.run_sync(
                functools.partial(p.wait, timeout=max(0.0, deadline - time.monotonic())))
    hung = [p for p in procs if p.poll() is None]
    for p in hung:
        p.kill()
        p.wait()
    assert not hung, "worker hung" + read_logs(logs)
    codes = code if isinstance(code, tuple) else (code,)
    assert all(p.returncode in codes for p in procs), (
        f"exit codes {[p.returncode for p in procs]}" + read_logs(logs))


async def cli_async(fake: HasBaseUrl, *args: str, check: bool = True
                    ) -> subprocess.CompletedProcess[bytes]:
    """``viggle-async ARGS`` against ``fake``, without blocking the event loop (an
    in-process fake must keep answering)."""
    env = {**os.environ, "VIGGLE_BASE_URL": fake.base_url, "VIGGLE_API_KEY": "sk-test-fake"}
    done = await anyio.run_process([sys.executable, "-m", "viggle_async", *args], env=env,
                                   check=False)
    if check:
        assert done.returncode == 0, (done.stdout + done.stderr).decode()
    return done


async def status_async(fake: HasBaseUrl, dsn: str, schema: str, manifest: Path,
                       report: Path) -> tuple[dict[str, Any], subprocess.CompletedProcess[bytes]]:
    """``bulk --status --report``: the report's JSON and the finished process."""
    done = await cli_async(fake, "--json", "bulk", str(manifest), "--journal", dsn,
                           "--schema", schema, "--status", "--report", str(report),
                           check=False)
    assert await anyio.Path(report).exists(), (done.stdout + done.stderr).decode()
    data: dict[str, Any] = json.loads(await anyio.Path(report).read_text())
    return data, done


def renders_manifest(folder: Path, renders: int, *, video_bytes: int | None = None,
                     **columns: object) -> Path:
    """``renders`` on-demand renders of one image and one driving video (``video_bytes``
    long, for a slow upload); ``columns`` are added to every row (e.g. ``fast=True``)."""
    (folder / "me.png").write_bytes(make_png())
    write_mp4(folder / "d1.mp4", 1.0, size=video_bytes)
    lines = [{"key": f"r{r}", "ref_image": "me.png", "driving_video": "d1.mp4",
              "output": f"out/r{r}.mp4", **columns} for r in range(renders)]
    path = folder / "m.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path
