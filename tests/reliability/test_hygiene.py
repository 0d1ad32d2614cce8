"""Nothing is left behind when work is cancelled: no task, no open connection or session,
no open file, no partial output. (The suite runs with warnings as errors, and each test
collects garbage before it ends, so an unclosed session or file fails it.)"""

from __future__ import annotations

import asyncio
import builtins
import gc
import os
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import attrs
import psutil  # type: ignore[import-untyped]
import pytest
from aiohttp import web
from relhelp import serve

from viggle_async import (
    Event,
    PollPolicy,
    Progress,
    RateLimitError,
    RetryPolicy,
    SQLiteJournal,
    Supervisor,
    Uploading,
    ViggleClient,
    _uploads,
)
from viggle_async.testing import FakeViggle, make_png, write_mp4

FAST_POLLS = PollPolicy(first_delay=0.01, min_interval=0.01, max_interval=0.02, jitter=0.0)


def _our_tasks() -> set[asyncio.Task[Any]]:
    """Running tasks, except the fake server's connection handlers."""
    return {t for t in asyncio.all_tasks()
            if "RequestHandler" not in getattr(t.get_coro(), "__qualname__", "")}


def _client_connections(port: int) -> list[Any]:
    """This process's open TCP connections to ``port`` (the client side)."""
    return [c for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    png = tmp_path / "me.png"
    png.write_bytes(make_png())
    big = tmp_path / "big.mp4"
    write_mp4(big, 3.0, size=24 * 2**20, sparse=True)  # many chunks: cancellable mid-way
    small = tmp_path / "small.mp4"
    write_mp4(small, 1.0)
    return {"png": png, "big": big, "small": small}


@pytest.fixture
def slow_part_unlink(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleting a download's temporary file takes a moment (a slow disk): enough for a
    cleanup that runs on after the cancelled call returned to be seen still running."""
    unlink = os.unlink

    def slow(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path).endswith(".part") and os.path.exists(path):
            time.sleep(0.3)
        unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", slow)


@pytest.mark.parametrize("phase", ["mid-upload", "mid-poll", "mid-download"])
async def test_cancelling_a_supervisor_leaves_nothing_running(
        phase: str, tmp_path: Path, files: dict[str, Path],
        request: pytest.FixtureRequest) -> None:
    out = tmp_path / "out"
    out.mkdir()
    if phase == "mid-download":
        request.getfixturevalue("slow_part_unlink")
    video = files["big"] if phase == "mid-upload" else files["small"]
    async with FakeViggle(time_scale=1000.0, output_bytes=32 * 2**20) as fake:
        before = _our_tasks()
        async with (ViggleClient(fake.api_key, base_url=fake.base_url) as client,
                    await SQLiteJournal.open(tmp_path / "j.sqlite") as journal):
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg, Supervisor(
                        client, journal=journal, poll_policy=FAST_POLLS) as sup:

                    def at(event: Event) -> bool:
                        if phase == "mid-upload":
                            return isinstance(event, Uploading) and event.sent > 0
                        return phase == "mid-poll" and isinstance(event, Progress)

                    async def watch(events: Any) -> None:
                        async for event in events:
                            if at(event):
                                scope.cancel()

                    async def watch_download() -> None:
                        # Polls: nothing signals a download's first bytes on disk.
                        while not list(out.glob(".*.part")):  # noqa: ASYNC110
                            await anyio.sleep(0.001)
                        scope.cancel()

                    tg.start_soon(watch, sup.events())
                    if phase == "mid-download":
                        tg.start_soon(watch_download)
                    handles = [sup.render(key=f"r{i}", ref_image=files["png"],
                                          driving_video=video, output=out / f"r{i}.mp4")
                               for i in range(3)]
            assert scope.cancelled_caught
            # Each says the truth: no job yet (cancelled), a job rendering on (running, its
            # id), or a finished job not fetched (complete, not downloaded); none is ok.
            outcomes = [h.outcome for h in handles]
            assert {o.state for o in outcomes} <= {"cancelled", "running", "complete"}
            assert not any(o.ok for o in outcomes)
            assert all(o.job_id for o in outcomes if o.state != "cancelled")
            # The supervisor's block is over: nothing of it runs on, nothing is left
            # half-written; the client still works.
            assert _our_tasks() == before
            assert list(out.iterdir()) == []
            assert (await client.get_credits()).balance > 0
            entries = await journal.entries()
            assert {e.state for e in entries} <= {"intent", "sending", "submitted"}
        assert _our_tasks() == before
        assert _client_connections(int(fake.base_url.rsplit(":", 1)[1])) == []
    gc.collect()  # an unclosed session or file warns now, and fails the test


async def test_client_closed_by_a_cancel_mid_upload(files: dict[str, Path]) -> None:
    async with FakeViggle() as fake:
        port = int(fake.base_url.rsplit(":", 1)[1])
        sent: list[int] = []
        with anyio.CancelScope() as scope:
            async with ViggleClient(fake.api_key, base_url=fake.base_url) as client:

                def progress(done: int, total: int | None) -> None:
                    sent.append(done)
                    if len(sent) == 3:
                        scope.cancel()

                await client.renders.create(ref_image=files["png"], driving_video=files["big"],
                                            on_upload=progress)
        assert scope.cancelled_caught and len(sent) == 3
        assert _client_connections(port) == []
        assert fake.store.jobs == {}  # the cut upload made no job
        del client
    gc.collect()


@attrs.frozen
class Gate:
    opening: threading.Event  # an upload file began to open
    release: threading.Event  # let it finish
    done: threading.Event  # it finished


@pytest.fixture
def slow_thread_open(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    """Upload files opened in a worker thread are held open-in-progress until ``release``."""
    gate = Gate(threading.Event(), threading.Event(), threading.Event())

    def slow_open(*args: Any, **kwargs: Any) -> Any:
        gate.opening.set()
        if threading.current_thread() is not threading.main_thread():
            gate.release.wait(5)
        try:
            return builtins.open(*args, **kwargs)
        finally:
            gate.done.set()

    monkeypatch.setattr(_uploads, "open", slow_open, raising=False)
    yield gate
    gate.release.set()


@pytest.fixture
async def answers_429_early(slow_thread_open: Gate) -> AsyncIterator[str]:
    """An API that answers a create 429 without reading its body, once the client has begun
    opening the upload file: aiohttp then stops the body writer in the middle of the open
    (if the open runs in a worker thread)."""
    async def create(request: web.Request) -> web.Response:
        assert await anyio.to_thread.run_sync(slow_thread_open.opening.wait, 5)
        return web.json_response({"detail": "Rate limit exceeded"}, status=429,
                                 headers={"Retry-After": "1"})

    async with serve(create, "POST", shutdown_timeout=0.1) as url:
        yield url


async def test_upload_answered_before_its_body_leaks_no_file(
        files: dict[str, Path], slow_thread_open: Gate, answers_429_early: str) -> None:
    async with ViggleClient("sk-x", base_url=answers_429_early,
                            retry=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(RateLimitError):
            await client.renders.create(ref_image=files["png"], driving_video=files["small"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slow_thread_open.release.set()
        assert await anyio.to_thread.run_sync(slow_thread_open.done.wait, 5)
        for _ in range(10):  # let the worker thread's result reach the loop
            await asyncio.sleep(0)
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
