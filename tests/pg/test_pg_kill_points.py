"""A ``viggle-async worker`` process SIGKILLed at each point of a row's life: mid-upload,
between a create's last bytes and its answer, mid-poll, mid-download. Another worker
process finishes the run from the ledger: no row is created twice (the fake's own create
log), every output is whole, and a create that may exist (killed while the answer was on
its way) is reported ambiguous, never resent.

The fake runs in this process, so each case slows exactly the step it kills in (an upload
throttle, a held answer, a slow render, a slow CDN) and lifts it once the worker is dead.
"""

from __future__ import annotations

import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from pghelp import cli_async, finish, read_logs, renders_manifest, status_async, wait_until, worker

from viggle_async.testing import FakeViggle

OUTPUT_BYTES = 64 * 1024
RENDERS = 3
BIG_VIDEO = 16 * 1024 * 1024  # bytes: several times the loopback socket buffers
POLL_ROUTE = ("GET", "/api/render/{job_id}")


def _render_creates(fake: FakeViggle, status: int | None = None) -> list[str | None]:
    return [c.result_id for c in fake.creates
            if c.kind == "render" and (status is None or c.status == status)]


def _all_created(fake: FakeViggle) -> bool:
    return len(_render_creates(fake, 200)) == RENDERS


def _polled_and_running(fake: FakeViggle) -> bool:
    if not fake.count(*POLL_ROUTE):
        return False
    ids = [i for i in _render_creates(fake, 200) if i]
    return any(fake.render_status(i)["status"] in ("queued", "processing") for i in ids)


# point -> (fake settings, faults to set before the first worker, when to kill it, faults
# to lift once it is dead)
_Case = tuple[dict[str, object], dict[str, object], Callable[[FakeViggle], bool],
              dict[str, object]]

CASES: dict[str, _Case] = {
    # The body started arriving (the fake recorded the create, status still 0) and is
    # throttled to take seconds: the kill cuts it. Nothing was created: resent once. The
    # video is bigger than the loopback socket buffers: a smaller body is all handed to
    # the kernel at once, so the client has sent its last bytes (journal "sending") and
    # the row is rightly ambiguous, however slowly the server reads it.
    "mid-upload": (
        {"time_scale": 200.0},
        {"upload_bytes_per_s": 4e6},
        lambda f: any(c.kind == "render" and c.status == 0 for c in f.creates),
        {"upload_bytes_per_s": None}),
    # The fake committed (and billed) the job but holds its answer: the worker dies with
    # the journal at "sending". Ambiguous: reported, never resent.
    "between-create-and-answer": (
        {"time_scale": 200.0},
        {"answer_delay_s": 60.0, "answer_delay_routes": frozenset({"POST /api/render"})},
        lambda f: bool(_render_creates(f, 200)),
        {"answer_delay_s": 0.0}),
    # Jobs known (journaled) and being polled, still running: resumed by id. (Every
    # create answered first: one still on the wire would rightly be ambiguous.)
    "mid-poll": (
        {"time_scale": 3.0}, {},
        lambda f: _all_created(f) and _polled_and_running(f), {}),
    # The output's CDN body started and is paced to take seconds: the next worker
    # downloads it again from the journaled job, into a whole file.
    "mid-download": (
        {"time_scale": 200.0},
        {"cdn_bytes_per_s": 16 * 1024.0},
        lambda f: _all_created(f) and f.observations.cdn_downloads > 0,
        {"cdn_bytes_per_s": None}),
}


def _outputs(folder: Path) -> list[Path]:
    out = folder / "out"
    return list(out.glob("r*.mp4")) if out.exists() else []


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url) as r:
        data: bytes = r.read()
    return data


@pytest.mark.parametrize("point", list(CASES))
async def test_a_worker_killed_at_any_point_is_finished_by_another_without_a_second_create(
        pg_dsn: str, pg_schema: str, tmp_path: Path, point: str) -> None:
    settings, faults, ready, lift = CASES[point]
    logs = tmp_path / "logs"
    logs.mkdir()
    async with FakeViggle(output_bytes=OUTPUT_BYTES, **settings) as fake:  # type: ignore[arg-type]
        for name, value in faults.items():
            setattr(fake.faults, name, value)
        m = renders_manifest(tmp_path, RENDERS,
                             video_bytes=BIG_VIDEO if point == "mid-upload" else None)
        await cli_async(fake, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema,
                        "--enqueue")
        # One upload at a time: the kill finds exactly one create in the step it cuts.
        with (logs / "worker1.log").open("w") as log1:
            first = worker(fake, pg_dsn, pg_schema, "--max-uploads", "1", log=log1)
            try:
                await wait_until(point, lambda: ready(fake), procs=[first], logs=logs)
                if point == "mid-upload":
                    await anyio.sleep(0.5)  # still reading the body: cut mid-way
                    assert any(c.kind == "render" and c.status == 0 for c in fake.creates)
                elif point in ("mid-poll", "mid-download"):
                    # The last create's answer reaches the worker's journal; the renders
                    # (3 s) and the paced downloads (4 s) are still under way.
                    await anyio.sleep(0.3)
                    assert ready(fake) and not _outputs(tmp_path)
            finally:
                first.send_signal(signal.SIGKILL)
                first.wait()
        for name, value in lift.items():
            setattr(fake.faults, name, value)
        killed_with = _render_creates(fake, 200)
        assert len(_outputs(tmp_path)) < RENDERS  # the kill left work behind

        with (logs / "worker2.log").open("w") as log2:
            second = worker(fake, pg_dsn, pg_schema, "--exit-when-empty", log=log2)
            # Exit 1 when the row it resumed is ambiguous (the README's exit codes).
            await finish([second], logs,
                         code=1 if point == "between-create-and-answer" else 0)
        data, done = await status_async(fake, pg_dsn, pg_schema, m, tmp_path / "report.json")
        by_key = {o["key"]: o for o in data["outcomes"]}

        accepted = _render_creates(fake, 200)
        # The fake's create log: no row created twice (each accepted create a new job,
        # one per row at most), and each job the killed worker had made was resumed.
        assert len(accepted) == len(set(accepted)) == RENDERS, read_logs(logs)
        assert set(killed_with) <= set(accepted)
        if point == "between-create-and-answer":
            # Killed waiting for the answer of a committed create: the ledger cannot know
            # the job exists, so the row stays ambiguous and is reported, never resent.
            assert len(killed_with) == 1
            assert data["summary"]["ambiguous"] == [k for k, o in by_key.items()
                                                    if o["state"] == "ambiguous"]
            assert len(data["summary"]["ambiguous"]) == 1
            assert done.returncode != 0  # --status says the run needs a look
        else:
            assert data["summary"]["ambiguous"] == []
            assert data["summary"]["rows"] == {"done": RENDERS}
        complete = [o for o in by_key.values() if o["state"] == "complete"]
        assert len(complete) == RENDERS - len(data["summary"]["ambiguous"])
        assert {o["job_id"] for o in complete} <= set(accepted)
        # Outputs whole: the exact bytes the CDN serves for the job, no temp file left.
        for o in complete:
            expected = await anyio.to_thread.run_sync(
                _fetch, fake.render_status(o["job_id"])["cdn_url"])
            assert (tmp_path / "out" / f"{o['key']}.mp4").read_bytes() == expected
        assert not list((tmp_path / "out").glob(".*part"))

