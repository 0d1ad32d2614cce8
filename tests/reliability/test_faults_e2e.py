"""Each fault kind of issue 11, end to end through the public surface, on the fake server
with the knob that produces it (``Faults``): what the user sees, and that nothing is paid
twice or lost.

Kinds an existing test already proves end to end on the fake are left to it:
``Supervisor(journal="run.journal")`` (tests/supervisor/test_sup_journal_path.py). The
tests in tests/client and tests/supervisor that script tiny loopback servers prove the
client's rules; these prove the same rules hold against the fake's fault knobs (which the
chaos suite and the benchmarks rely on) and through the CLI as a user runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from relhelp import Media

from viggle_async import (
    APIError,
    JournalBusy,
    PollPolicy,
    ResponseFormatError,
    SQLiteJournal,
    Supervisor,
    Uploading,
    ViggleClient,
)
from viggle_async.testing import FakeViggle, ManualClock, ProxyServer, make_png, write_mp4
from viggle_async.testing._cdn import _content

SCRIPT = Path(sys.executable).parent / "viggle-async"
POLICY = PollPolicy(first_delay=2.0, min_interval=2.0, max_interval=2.0, jitter=0.0)
SUP_KW: dict[str, Any] = {"poll_policy": POLICY, "capacity_backoff": (0.5, 2.0)}


async def _complete_job(client: ViggleClient, clock: ManualClock, media: Media) -> str:
    job = await client.renders.create(ref_image=media.png, driving_video=media.mp4)
    async with clock.autojump():
        await client.renders.wait(job.job_id, poll_interval=2.0)
    return job.job_id


def _served(fake: FakeViggle, job_id: str) -> bytes:
    """The output's bytes as the CDN serves them (the fake's own content, not a download)."""
    content = _content(fake.store, fake.job(job_id), "output")
    return b"".join(content.chunks(0, content.size, 64 * 1024))


# --- 1. A create answered 5xx after the job exists -------------------------------------

AFTER_COMMIT = [(502, "html"), (504, "html"), (500, "empty"), (503, "unparsable"),
                (200, "no_id")]


@pytest.mark.parametrize(("status", "shape"), AFTER_COMMIT, ids=lambda v: str(v))
async def test_a_create_failing_after_commit_may_have_reached_the_server(
    fake: FakeViggle, client: ViggleClient, media: Media, status: int, shape: str,
) -> None:
    fake.faults.create_fail_after_commit = 1
    fake.faults.create_fail_status, fake.faults.create_fail_shape = status, shape  # type: ignore[assignment]
    with pytest.raises((APIError, ResponseFormatError)) as info:
        await client.renders.create(ref_image=media.png, driving_video=media.mp4)
    error = info.value
    assert isinstance(error, APIError | ResponseFormatError)
    assert error.may_have_reached_server is True
    assert "sk-test" not in str(info.value)
    (record,) = fake.creates
    assert record.result_id in fake.store.jobs  # the job exists and was charged
    assert fake.count("POST", "/api/render") == 1  # a create is never retried by itself


@pytest.mark.parametrize("kind", ["character", "scene", "import"])
async def test_every_create_route_failing_after_commit_may_have_reached_the_server(
    fake: FakeViggle, client: ViggleClient, media: Media, kind: str,
) -> None:
    fake.faults.create_fail_after_commit = 1
    fake.faults.create_fail_status, fake.faults.create_fail_shape = 504, "html"
    with pytest.raises((APIError, ResponseFormatError)) as info:
        if kind == "character":
            await client.characters.create(name="Alice", image=media.png)
        elif kind == "scene":
            await client.scenes.create(name="Stage", video=media.mp4)
        else:
            await client.scenes.import_template("tmpl-video-wave")
    error = info.value
    assert isinstance(error, APIError | ResponseFormatError)
    assert error.may_have_reached_server is True
    (record,) = fake.creates
    assert (record.kind, record.status, record.answered_status) == (kind, 200, 504)
    assert record.result_id is not None  # made (and charged) behind the gateway's page


async def test_an_ambiguous_create_is_never_resent_unless_asked(
    fake: FakeViggle, client: ViggleClient, clock: ManualClock, media: Media,
) -> None:
    fake.faults.create_fail_after_commit = 1
    fake.faults.create_fail_status = 504
    path = media.tmp / "run.journal"
    kw = dict(key="r", ref_image=media.png, driving_video=media.mp4,
              output=media.tmp / "r.mp4")
    for _ in range(2):  # the run, then a rerun on the same journal
        async with (await SQLiteJournal.open(path) as journal, clock.autojump(),
                    Supervisor(client, journal=journal, **SUP_KW) as sup):
            handle = sup.render(**kw)  # type: ignore[arg-type]
        assert handle.outcome.state == "ambiguous" and handle.outcome.job_id is None
        assert "--resubmit-ambiguous" in (handle.outcome.error or "")
        assert fake.count("POST", "/api/render") == 1
    async with (await SQLiteJournal.open(path) as journal, clock.autojump(),
                Supervisor(client, journal=journal, resubmit_ambiguous=True, **SUP_KW) as sup):
        handle = sup.render(**kw)  # type: ignore[arg-type]
    assert handle.outcome.state == "complete" and handle.outcome.downloaded
    assert fake.count("POST", "/api/render") == 2  # asked for: sent (and paid) again
    assert len(fake.store.jobs) == 2


# --- 2. CDN faults ----------------------------------------------------------------------

@pytest.mark.parametrize("status", [503, 502, 404, 403])
async def test_a_cdn_burst_after_completion_still_downloads(
    fake: FakeViggle, client: ViggleClient, clock: ManualClock, media: Media, status: int,
) -> None:
    job_id = await _complete_job(client, clock, media)
    fake.faults.cdn_fail_first_n, fake.faults.cdn_fail_status = 3, status
    fake.faults.cdn_retry_after = "4" if status == 503 else None
    dest = media.tmp / "out.mp4"
    start = clock.now()
    async with clock.autojump():
        await client.download_render(job_id, dest)
    assert dest.read_bytes() == _served(fake, job_id)
    assert [r.status for r in fake.observations.cdn_requests] == [status] * 3 + [200]
    if status == 503:  # Retry-After honoured: three waits of 4 s at least
        assert clock.now() - start >= 12.0


async def test_an_expired_signed_url_is_refreshed(
    fake: FakeViggle, client: ViggleClient, clock: ManualClock, media: Media,
) -> None:
    """A 503 asks for 40 s; by then the 30 s signature has expired: the CDN answers 403,
    the client reads the job again for a freshly signed URL and goes on."""
    fake.faults.url_ttl_s = 30.0
    job_id = await _complete_job(client, clock, media)
    fake.faults.cdn_fail_first_n, fake.faults.cdn_retry_after = 1, "40"
    dest = media.tmp / "out.mp4"
    async with clock.autojump():
        await client.download_render(job_id, dest)
    assert dest.read_bytes() == _served(fake, job_id)
    hits = fake.observations.cdn_requests
    assert [r.status for r in hits] == [503, 403, 200]
    assert hits[0].raw_path == hits[1].raw_path != hits[2].raw_path  # a fresh signature
    assert "X-Amz-Signature=" in hits[2].raw_path


@pytest.mark.parametrize("ranges", [True, False], ids=["range", "no-range"])
async def test_a_body_dropped_mid_way_resumes_or_restarts(
    fake: FakeViggle, client: ViggleClient, clock: ManualClock, media: Media, ranges: bool,
) -> None:
    job_id = await _complete_job(client, clock, media)
    fake.faults.cdn_drop_first_n, fake.faults.cdn_drop_after_bytes = 2, 1000
    fake.faults.cdn_range_support = ranges
    dest = media.tmp / "out.mp4"
    async with clock.autojump():
        await client.download_render(job_id, dest)
    assert dest.read_bytes() == _served(fake, job_id)
    hits = fake.observations.cdn_requests
    assert fake.observations.cdn_dropped == 2 and len(hits) == 3
    if ranges:  # each try goes on where the last one stopped, guarded by If-Range
        assert [r.status for r in hits] == [200, 206, 206]
        assert [r.headers.get("Range") for r in hits] == [None, "bytes=1000-",
                                                            "bytes=2000-"]
        assert all(r.headers.get("If-Range") for r in hits[1:])
    else:  # no Range support: every try starts again from byte 0
        assert [r.status for r in hits] == [200, 200, 200]
    assert not list(media.tmp.glob("*.part")) and not list(media.tmp.glob(".*.part"))


# --- 3. Listing, parsing, polling -----------------------------------------------------

async def test_capped_pages_list_every_item(
    fake: FakeViggle, client: ViggleClient, media: Media,
) -> None:
    made = {(await client.characters.create(name=f"c{i}", image=media.png)).id
            for i in range(7)}
    fake.faults.list_page_cap = 3  # whatever limit is asked for; total still says 7
    listed = [c.id async for c in client.characters.iterate(page_size=5)]
    assert sorted(listed) == sorted(made)
    assert fake.count("GET", "/api/characters") >= 3


@pytest.mark.parametrize("how", ["empty", "null", "wrong_type", "garbage"])
async def test_malformed_informational_fields_do_not_fail_a_paid_render(
    fake: FakeViggle, client: ViggleClient, clock: ManualClock, media: Media, how: str,
) -> None:
    fake.faults.malformed_fields = how  # type: ignore[assignment]
    async with clock.autojump(), Supervisor(client, **SUP_KW) as sup:
        handle = sup.render(key="r", ref_image=media.png, driving_video=media.mp4,
                            output=media.tmp / "r.mp4")
    assert handle.outcome.state == "complete" and handle.outcome.downloaded, handle.outcome
    assert handle.outcome.job_id is not None
    assert (media.tmp / "r.mp4").read_bytes() == _served(fake, handle.outcome.job_id)


async def test_complete_without_cdn_url_is_polled_until_it_has_one(
    fake: FakeViggle, client: ViggleClient, clock: ManualClock, media: Media,
) -> None:
    fake.faults.complete_without_cdn_url_n = 3  # absent, null, "" in turn
    async with clock.autojump(), Supervisor(client, **SUP_KW) as sup:
        handle = sup.render(key="r", ref_image=media.png, driving_video=media.mp4,
                            output=media.tmp / "r.mp4")
    assert handle.outcome.state == "complete" and handle.outcome.downloaded, handle.outcome
    # Queued 2 s + processing 9 s at 2 s polls, then three complete polls without a URL.
    assert fake.count("GET", "/api/render/{job_id}") >= 6 + 3


@pytest.mark.parametrize("form", ["delta", "http-date"])
async def test_a_503_with_retry_after_on_status_is_waited_out(
    fake: FakeViggle, clock: ManualClock, media: Media, form: str,
) -> None:
    epoch = datetime(2026, 11, 30, tzinfo=UTC)  # the wall clock follows the manual clock

    def wall() -> datetime:
        return epoch + timedelta(seconds=clock.now())

    async with ViggleClient(fake.api_key, base_url=fake.base_url, clock=clock,
                            wall_clock=wall) as client:
        job = await client.renders.create(ref_image=media.png, driving_video=media.mp4)
        fake.faults.status_error_next = 2
        fake.faults.status_retry_after = (
            "7" if form == "delta" else format_datetime(wall() + timedelta(seconds=7),
                                                        usegmt=True))
        start = clock.now()
        async with clock.autojump():
            status = await client.renders.get(job.job_id)
    assert status.job_id == job.job_id
    assert fake.observations.status_errors == 2
    # Delta: 7 s, twice, not the 0.25 s and 0.5 s backoff. Date: until then (the second
    # answer names a date already reached); HTTP-dates have whole seconds.
    assert clock.now() - start >= (14.0 if form == "delta" else 6.0)


# --- 4. A proxy-only network --------------------------------------------------------------

async def test_every_request_goes_through_the_proxy_and_the_key_stays_out_of_it(
    fake: FakeViggle, clock: ManualClock, media: Media, monkeypatch: pytest.MonkeyPatch,
) -> None:
    auth = "Basic dXNlcjpwYXNz"  # user:pass
    async with ProxyServer(proxy_authorization=auth) as proxy:
        host_port = proxy.url.split("://", 1)[1]
        monkeypatch.setenv("HTTP_PROXY", f"http://user:pass@{host_port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with (ViggleClient(fake.api_key, base_url=fake.base_url, clock=clock) as client,
                    clock.autojump(), Supervisor(client, **SUP_KW) as sup):
            handle = sup.render(key="r", ref_image=media.png, driving_video=media.mp4,
                                output=media.tmp / "r.mp4")
    assert handle.outcome.state == "complete" and handle.outcome.downloaded
    api = sum(fake.observations.request_counts.values())
    cdn = len(fake.observations.cdn_requests)
    forwarded = [r for r in proxy.requests if r.status == 200]
    assert len(forwarded) == len(proxy.requests) == api + cdn  # nothing went around it
    assert {r.header("Proxy-Authorization") for r in proxy.requests} == {auth}
    for r in proxy.requests:
        assert all(fake.api_key not in v for k, v in r.headers
                   if k.lower() != "authorization"), r
        if "/outputs/" in r.target:  # the API key goes to the API only, never to the CDN
            assert r.header("Authorization") is None, r
    creates = [r for r in proxy.requests if r.method == "POST"]
    assert [r.header("Authorization") for r in creates] == [f"Bearer {fake.api_key}"]


# --- 5. A file truncated during its upload --------------------------------------------------

async def test_a_file_truncated_during_upload_never_reaches_the_server(
    fake: FakeViggle, client: ViggleClient, clock: ManualClock, media: Media,
) -> None:
    video = media.tmp / "big.mp4"
    write_mp4(video, 2.0, size=3 * 2**20)
    fake.faults.upload_bytes_per_s = 4 * 2**20  # the server reads slowly: sends take a while
    path = media.tmp / "run.journal"
    truncated = False
    async with await SQLiteJournal.open(path) as journal:
        sup = Supervisor(client, journal=journal, **SUP_KW)
        async with clock.autojump(), anyio.create_task_group() as tg, sup:
            events = sup.events()

            async def watch() -> None:
                nonlocal truncated
                async for event in events:
                    if isinstance(event, Uploading) and event.sent > 2**20 and not truncated:
                        truncated = True  # an editor re-saves the file mid-upload
                        os.truncate(video, 2**20 // 2)

            tg.start_soon(watch)
            handle = sup.render(key="r", ref_image=media.png, driving_video=video,
                                output=media.tmp / "r.mp4")
        entry = await journal.get("r")
    assert truncated
    outcome = handle.outcome
    assert outcome.state in ("failed", "not_submitted"), outcome
    assert outcome.job_id is None and "driving_video" in (outcome.error or ""), outcome
    assert "shrank" in (outcome.error or ""), outcome
    assert entry is not None and entry.state == "intent", entry  # never sent whole
    assert fake.store.jobs == {}  # no job, nothing paid
    assert fake.balance() == 10_000


# --- 6. A journal locked by another process ----------------------------------------------

# Past SQLite's usual few seconds of busy timeout, inside the journal's busy retry (60 s by
# default); the chaos suite holds the lock for 10 s in the middle of a larger run.
LONG_LOCK_S = 6.0


async def test_a_journal_locked_past_the_busy_timeout_does_not_end_the_run(
    fake: FakeViggle, client: ViggleClient, clock: ManualClock, media: Media,
) -> None:
    path = media.tmp / "run.journal"
    async with await SQLiteJournal.open(path):
        pass  # created, so the other process can lock it
    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # a database browser left open: its own connection, its own thread
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            held.set()
            release.wait(LONG_LOCK_S)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    locker = threading.Thread(target=hold)
    busy: list[JournalBusy] = []
    try:
        # A path, so the supervisor opens the store itself and hands it on_journal_busy.
        sup = Supervisor(client, journal=path, **SUP_KW)
        try:
            async with clock.autojump(), anyio.create_task_group() as tg, sup:
                events = sup.events()

                async def watch() -> None:
                    async for event in events:
                        if isinstance(event, JournalBusy):
                            busy.append(event)

                tg.start_soon(watch)
                # Locked once the run is open and watched: the first intent must wait.
                locker.start()
                assert await anyio.to_thread.run_sync(held.wait, 5.0)
                handles = [sup.render(key=f"r{i}", ref_image=media.png,
                                      driving_video=media.mp4,
                                      output=media.tmp / f"r{i}.mp4") for i in range(3)]
        except BaseExceptionGroup as group:  # our task groups wrap what the run raised
            inner: BaseException = group
            while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
                inner = inner.exceptions[0]
            raise inner from None
    finally:
        release.set()
        if locker.ident is not None:
            await anyio.to_thread.run_sync(locker.join)
    assert [h.outcome.state for h in handles] == ["complete"] * 3
    assert all(h.outcome.downloaded for h in handles)
    assert busy and busy[0].waited_s > 0  # the wait was visible
    async with await SQLiteJournal.open(path) as journal:
        entries = {e.key: e for e in await journal.entries()}
    assert {e.state for e in entries.values()} == {"final"}
    assert len(fake.store.jobs) == 3


# --- 7. The CLI on a create answered 504 after commit -----------------------------------

class FakeProcess:
    def __init__(self, *faults: str) -> None:
        argv = [sys.executable, "-m", "viggle_async.testing", "--time-scale", "200"]
        for fault in faults:
            argv += ["--fault", fault]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.info: dict[str, str] = {}
        reader = threading.Thread(target=self._read, daemon=True)
        reader.start()
        reader.join(20)
        assert "api_key" in self.info, self.info

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            name, _, value = line.strip().partition("=")
            self.info[name] = value
            if name == "api_key":
                return

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.info['base_url']}/__fake__/stats",
                                    timeout=5) as resp:
            stats: dict[str, Any] = json.load(resp)
        return stats

    def close(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=10)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two ``viggle-async bulk`` runs on one journal; row ``a``'s create is committed and
    answered with a gateway's 504 page, row ``b``'s goes through."""
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "me.png").write_bytes(make_png())
    videos = {}  # sha256 -> row key, to tell which row's create the 504 answered
    for key, seconds in (("a", 1.0), ("b", 2.0)):
        write_mp4(tmp / f"d{key}.mp4", seconds)
        videos[hashlib.sha256((tmp / f"d{key}.mp4").read_bytes()).hexdigest()] = key
    manifest = tmp / "m.csv"
    manifest.write_text("key,ref_image,driving_video,output\n"
                        "a,me.png,da.mp4,a.mp4\nb,me.png,db.mp4,b.mp4\n")
    server = FakeProcess("create_fail_after_commit=1", "create_fail_status=504")
    try:
        env = {**os.environ, "VIGGLE_API_KEY": server.info["api_key"],
               "VIGGLE_BASE_URL": server.info["base_url"]}
        runs = []
        for report in ("first.json", "second.json"):
            proc = subprocess.run(
                [str(SCRIPT), "bulk", str(manifest), "--journal", str(tmp / "run.journal"),
                 "--report", str(tmp / report), "--poll-interval", "0.2",
                 "--max-uploads", "1"],
                env=env, capture_output=True, text=True, timeout=60, check=False)
            runs.append({"proc": proc, "report": json.loads((tmp / report).read_text()),
                         "stats": server.stats()})
        yield {"runs": runs, "tmp": tmp, "key": server.info["api_key"], "videos": videos}
    finally:
        server.close()


def test_cli_reports_a_504_after_commit_as_ambiguous_and_never_resends(
    cli_runs: dict[str, Any],
) -> None:
    hidden = _hidden_row(cli_runs)
    other = "b" if hidden == "a" else "a"
    for n, run in enumerate(cli_runs["runs"]):
        proc = run["proc"]
        assert proc.returncode == 1, (proc.stdout, proc.stderr)
        outcomes = {o["key"]: o for o in run["report"]["outcomes"]}
        assert outcomes[hidden]["state"] == "ambiguous", outcomes
        assert outcomes[hidden]["job_id"] is None
        assert "--resubmit-ambiguous" in outcomes[hidden]["error"]
        assert outcomes[other]["state"] == ("complete" if n == 0 else "skipped")
        assert f"{hidden}: ambiguous" in proc.stderr + proc.stdout
        assert cli_runs["key"] not in proc.stdout + proc.stderr
        # Two creates in the first run (one committed behind the 504), none in the rerun.
        stats = run["stats"]
        assert stats["request_counts"]["POST /api/render"] == 2
        assert sorted(c["answered_status"] or 0 for c in stats["creates"]) == [0, 504]
    assert (cli_runs["tmp"] / f"{other}.mp4").exists()
    assert not (cli_runs["tmp"] / f"{hidden}.mp4").exists()


def _hidden_row(cli_runs: dict[str, Any]) -> str:
    """The row whose create the 504 answered (the rows go out in either order)."""
    (create,) = [c for c in cli_runs["runs"][0]["stats"]["creates"]
                 if c["answered_status"] == 504]
    (digest,) = [f["sha256"] for f in create["files"] if f["name"] == "driving_video"]
    key: str = cli_runs["videos"][digest]
    return key


def test_cli_says_ambiguous_in_one_clear_line(cli_runs: dict[str, Any]) -> None:
    proc = cli_runs["runs"][0]["proc"]
    lines = (proc.stdout + proc.stderr).splitlines()
    (line,) = [ln for ln in lines if ln.startswith(f"{_hidden_row(cli_runs)}: ambiguous")]
    assert "--resubmit-ambiguous" in line and "504" in line
    assert "<" not in line  # no markup
    assert not any(ln.lstrip().startswith("<") for ln in lines)
