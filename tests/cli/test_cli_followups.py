"""Follow-ups found while merging, through the CLI: a journal that cannot be written ends
``bulk`` with one line and exit 2 (a real subprocess), renders not downloaded are shown,
counted and fetched later."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import anyio
import attrs
import pytest
from aiohttp import web
from clihelp import BULK_FAST, Run, process_env, viggle_process

from viggle_async import PollPolicy, Supervisor
from viggle_async._scheduler import DEFAULT_POLICY
from viggle_async.cli._app import build_parser
from viggle_async.cli._common import Ctx
from viggle_async.cli._progress import Output
from viggle_async.testing import FakeViggle, Faults

# The real CLI in its own process, with one library-level fault: the SQLite journal's
# "record this job id" write fails as it does when another process holds the write lock
# past the busy limit (sqlite3.OperationalError: database is locked).
LOCKED_JOURNAL = """
import sqlite3, sys
from viggle_async import _journal_sqlite
from viggle_async.cli import main

async def locked(self, key, job_id):
    raise sqlite3.OperationalError("database is locked")

_journal_sqlite.SQLiteJournal.record_submitted = locked
sys.exit(main(sys.argv[1:]))
"""


async def test_a_journal_that_cannot_be_written_ends_bulk_with_one_line_and_exit_2(
        fake: FakeViggle, media: Path) -> None:
    manifest = media / "m.csv"
    manifest.write_text("key,ref_image,driving_video,output\n"
                        + "".join(f"r{i},me.png,d{i + 1}.mp4,r{i}.mp4\n" for i in range(3)))
    journal, report = media / "j.db", media / "report.json"
    code, _, err = await viggle_process(
        process_env(fake, media), "bulk", str(manifest), *BULK_FAST, "--max-uploads", "1",
        "--journal", str(journal), "--report", str(report), script=LOCKED_JOURNAL)
    assert code == 2, err
    assert "Traceback" not in err and "ExceptionGroup" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert err.strip().splitlines()[-1] == line
    assert repr(str(journal)) in line and "database is locked" in line
    # The job that was created is named, with its id, and the report keeps it.
    data = json.loads(report.read_text())
    created = [r for r in data["outcomes"] if r["job_id"]]
    assert created and len(fake.creates) == len(created)  # new creates stopped
    for row in created:
        assert f"{row['key']}={row['job_id']}" in line
    assert f"their ids are in the report {str(report)!r}" in line
    assert data["summary"]["exit_code"] == 2
    assert {r["state"] for r in data["outcomes"]} <= {"complete", "not_submitted"}


async def test_a_render_not_downloaded_is_shown_counted_and_fetched_by_a_rerun(
        cli: Run, fake: FakeViggle, media: Path) -> None:
    """Paid and finished, but the CDN never gave the file: not "done", exit 1, the report
    row says downloaded: false with the reason, the command that fetches it is printed, and
    a rerun on the journal downloads it (no second create)."""
    manifest = media / "m.csv"
    manifest.write_text("key,ref_image,driving_video,output\na,me.png,d1.mp4,out/a.mp4\n"
                        "b,me.png,d2.mp4,out/b.mp4\n")
    # Retry-After: 0 keeps the test fast: every try is answered at once.
    fake.faults = Faults(cdn_fail_first_n=1_000, cdn_fail_status=503, cdn_retry_after="0")
    journal, report = media / "j.db", media / "r.json"
    argv = ("bulk", str(manifest), *BULK_FAST, "--journal", str(journal))
    first = await cli(*argv, "--report", str(report))
    assert first.code == 1, first.err
    rows = json.loads(report.read_text())["outcomes"]
    assert [(r["state"], r["downloaded"]) for r in rows] == [("complete", False)] * 2
    assert all("503" in r["download_error"] for r in rows)
    for r in rows:
        fetch = f"viggle-async download {r['job_id']} {media / 'out' / (r['key'] + '.mp4')}"
        assert r["fetch"] == fetch
        assert f"{r['key']}: complete but NOT downloaded (job {r['job_id']}" in first.err
        assert fetch in first.err
    assert "2 complete but NOT downloaded" in first.out
    assert f"or rerun with --journal {journal}" in first.err
    assert not (media / "out" / "a.mp4").exists()

    fake.faults = Faults()
    again = await cli(*argv, "--json")
    assert again.code == 0, again.err
    assert again.json_lines()[-1]["states"] == {"complete": 2}
    assert (media / "out" / "a.mp4").stat().st_size == 2048
    assert len(fake.creates) == 2


async def test_render_not_downloaded_says_so_and_how_to_fetch_it(
        cli: Run, fake: FakeViggle, media: Path) -> None:
    fake.faults = Faults(cdn_fail_first_n=1_000, cdn_fail_status=503, cdn_retry_after="0")
    out = media / "clip.mp4"
    result = await cli("render", "--ref-image", str(media / "me.png"), "--driving-video",
                       str(media / "d1.mp4"), "-o", str(out), "--poll-interval", "0.02")
    assert result.code == 1, result.err
    (job,) = fake.creates
    assert f"complete but NOT downloaded (job {job.result_id}, paid for)" in result.err
    assert f"fetch it: viggle-async download {job.result_id} {out}" in result.err
    fake.faults = Faults()
    fetched = await cli("download", str(job.result_id), str(out))
    assert fetched.code == 0, fetched.err
    assert out.stat().st_size == 2048


async def test_render_whose_create_cannot_connect_fails_in_one_line_with_exit_2(
        cli: Run, media: Path) -> None:
    """The API answers the first request (the balance check), then stops listening: the
    create cannot connect. It is retried up to --connect-timeout (RetryPolicy's
    connect_deadline), then the command fails like every other one: one line, exit 2."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        await site.stop()  # from now on, connecting is refused
        return web.json_response({"detail": "Not Found"}, status=404,
                                 headers={"Connection": "close"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with anyio.fail_after(60):
            result = await cli("render", "--ref-image", str(media / "me.png"),
                               "--driving-video", str(media / "d1.mp4"), "-o",
                               str(media / "clip.mp4"), "--base-url",
                               f"http://127.0.0.1:{port}", "--connect-timeout", "1")
    finally:
        await runner.cleanup()
    assert len(seen) == 1 and seen[0].startswith("GET "), seen  # no create reached it
    assert result.code == 2, result.err
    (line,) = [x for x in result.err.splitlines() if x.startswith("error:")]
    assert "cannot reach the API for 1 s (--connect-timeout)" in line
    assert f"http://127.0.0.1:{port}" in line and "nothing was sent" in line
    assert not (media / "clip.mp4").exists()


@pytest.mark.parametrize("command", [
    ["bulk", "m.csv"],
    ["render", "--ref-image", "a.png", "--driving-video", "b.mp4", "-o", "c.mp4"],
])
def test_the_cli_polls_and_backs_off_with_the_librarys_defaults(command: list[str]) -> None:
    """Issue 12.6: the command line's defaults are the library's benchmarked ones (the
    policy a plain Supervisor(client) polls with, the predictive one since issue 13, and its
    other defaults), and --poll-interval scales that same shape."""
    library = inspect.signature(Supervisor.__init__).parameters
    default = DEFAULT_POLICY  # what a scheduler given no policy polls with
    assert library["poll_policy"].default is None and default == PollPolicy.predictive()
    args = build_parser().parse_args(command)
    quiet = Output("quiet", stdout=sys.stdout, stderr=sys.stderr)
    ctx = Ctx(args, quiet)
    assert ctx.poll_policy() == default
    assert args.capacity_backoff == library["capacity_backoff"].default
    assert ctx.asset_poll_interval == library["asset_poll_interval"].default
    assert ctx.poll_interval == default.first_delay

    doubled = Ctx(build_parser().parse_args(
        [*command, "--poll-interval", str(2 * default.first_delay)]), quiet)
    policy = doubled.poll_policy()
    assert policy == attrs.evolve(default, first_delay=2 * default.first_delay,
                                  min_interval=2 * default.min_interval,
                                  max_interval=2 * default.max_interval)
    assert doubled.asset_poll_interval == 2 * library["asset_poll_interval"].default
