"""The API key stays secret and goes only to the API host (docs/api/conventions.md#authentication,
docs/api/client-rules.md#downloads).

It never shows in a repr, a str, a log line (viggle_async's and aiohttp's loggers at DEBUG),
an exception, an outcome or event, the journal file or the CLI's report and output, across a
whole bulk run with retries, rejected creates, a failed auth and failed requests. It is never
sent to the CDN, nor to wherever an API redirect points. (tests/client/test_config.py covers
the client alone: repr, its exceptions, https/loopback/opt-in base URLs.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import anyio
import attrs
import pytest
from aiohttp import web
from relhelp import serve

from viggle_async import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    Event,
    PollPolicy,
    RetryPolicy,
    SQLiteJournal,
    Supervisor,
    ViggleClient,
    ViggleError,
)
from viggle_async.testing import FakeViggle, Faults, ManualClock, make_png, write_mp4

SECRET = "sk-live-RELIABILITY-5f3a9c0d7e1b2468"
FRAGMENTS = (SECRET, SECRET[3:], SECRET[8:24])  # also no partial or prefix-stripped copy
LOGGERS = ("viggle_async", "aiohttp", "aiohttp.client", "aiohttp.internal", "aiohttp.server",
           "aiohttp.access", "aiohttp.web", "asyncio")


def _leaks(texts: Iterable[str | bytes]) -> list[str]:
    found = []
    for text in texts:
        raw = text if isinstance(text, bytes) else text.encode()
        found += [repr(raw[:120]) for f in FRAGMENTS if f.encode() in raw]
    return found


def _exception_texts(exc: BaseException) -> list[str]:
    """Everything a program might print of an exception, its causes included."""
    return ["".join(traceback.format_exception(exc)), str(exc), repr(exc),
            *map(repr, exc.args), repr(vars(exc))]


def _files(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in folder.rglob("*") if p.is_file()]


async def test_key_never_shows_in_a_bulk_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, clock: ManualClock,
        closed_port: int) -> None:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    png = tmp_path / "me.png"
    png.write_bytes(make_png())
    clip, long_clip = tmp_path / "clip.mp4", tmp_path / "long.mp4"
    write_mp4(clip, 2.0)
    write_mp4(long_clip, 60.0)
    texts: list[str | bytes] = []
    events: list[Event] = []
    faults = Faults(seed=3, get_error_rate=0.3, fast_unavailable_next=1)
    async with FakeViggle(clock=clock.now, api_keys={SECRET: 12}, output_bytes=2048,
                          faults=faults) as fake:
        client = ViggleClient(SECRET, base_url=fake.base_url, clock=clock)
        journal = await SQLiteJournal.open(tmp_path / "run.journal")
        sup = Supervisor(client, journal=journal,
                         poll_policy=PollPolicy(first_delay=2.0, min_interval=2.0,
                                                max_interval=2.0, jitter=0.0))
        texts += [repr(client), str(client), repr(sup), repr(journal)]
        async with client, journal, clock.autojump(), anyio.create_task_group() as tg:
            async with sup:
                stream = sup.events()

                async def collect() -> None:
                    events.extend([e async for e in stream])

                tg.start_soon(collect)
                hero = sup.character(key="hero", name="Hero", image=png)
                handles = [
                    hero,
                    sup.render(key="ok", ref_image=png, driving_video=clip,
                               output=tmp_path / "ok.mp4"),
                    sup.render(key="fast", ref_image=png, driving_video=clip, fast=True,
                               output=tmp_path / "fast.mp4"),
                    sup.render(key="no-scene", character=hero, scene_id="scene-missing"),
                ]
            # Dropped after its whole body arrived: ambiguous.
            fake.faults.drop_uploads, fake.faults.drop_after_bytes = 1, 10**9
            async with Supervisor(client, journal=journal) as sup2:
                handles.append(sup2.render(key="dropped", ref_image=png, driving_video=clip))
            async with Supervisor(client, journal=journal) as sup3:  # 402
                handles.append(sup3.render(key="too-dear", ref_image=png, driving_video=long_clip))
        outcomes = [h.outcome for h in handles]
        assert fake.cdn_auth_headers == []
        # The run went through every path it is meant to: retries, a refused create, a
        # 402, an ambiguous create, a download.
        states = {o.key: o.state for o in outcomes}
        assert states["ok"] == "complete" and states["dropped"] == "ambiguous", outcomes
        assert states["no-scene"] == "failed" and states["too-dear"] == "not_submitted"
        assert fake.observations.injected_errors > 0 and fake.capacity_rejections == 1

        # A rejected key, and a request that cannot connect.
        async with (FakeViggle(clock=clock.now, api_keys={"sk-someone-else": 5}) as other,
                    ViggleClient(SECRET, base_url=other.base_url, clock=clock) as rejected):
            with pytest.raises(AuthenticationError) as auth:
                await rejected.get_credits()
            texts += _exception_texts(auth.value)
            async with Supervisor(rejected) as sup4:
                refused = sup4.render(key="refused", ref_image=png, driving_video=clip)
            outcomes.append(refused.outcome)
            assert refused.outcome.state == "failed"
        async with ViggleClient(SECRET, base_url=f"http://127.0.0.1:{closed_port}", clock=clock,
                                retry=RetryPolicy(max_attempts=2)) as gone, clock.autojump():
            with pytest.raises(ConnectError) as refused_conn:
                await gone.get_credits()
        texts += _exception_texts(refused_conn.value)

    texts += [repr(o) for o in outcomes] + [repr(e) for e in events]
    journal_bytes = (tmp_path / "run.journal").read_bytes()
    assert b"no-scene" in journal_bytes  # the scan below reads the real rows
    texts += _files(tmp_path)  # the journal (and any WAL) and outputs, byte for byte
    records = caplog.records
    assert any(r.name == "viggle_async" for r in records)  # the retries were logged
    texts += [caplog.text] + [repr(r.args) for r in records] + [r.exc_text or "" for r in records]
    assert _leaks(texts) == []


async def test_key_never_in_the_cli_report_or_output(tmp_path: Path) -> None:
    png = tmp_path / "me.png"
    png.write_bytes(make_png())
    write_mp4(tmp_path / "clip.mp4", 2.0)
    (tmp_path / "m.csv").write_text(
        "key,ref_image,driving_video,character_id,scene_id,output\n"
        "good,me.png,clip.mp4,,,out/good.mp4\n"
        "bad,,,char-missing,scene-missing,out/bad.mp4\n")
    async with FakeViggle(api_keys={SECRET: 50}, time_scale=1000.0) as fake:
        env = {**os.environ, "VIGGLE_API_KEY": SECRET, "VIGGLE_BASE_URL": fake.base_url}
        result = await anyio.run_process(
            [sys.executable, "-m", "viggle_async", "bulk", str(tmp_path / "m.csv"),
             "--journal", str(tmp_path / "j.sqlite"), "--report", str(tmp_path / "r.json"),
             "--poll-interval", "0.05", "--json"], env=env, check=False)
        assert fake.cdn_auth_headers == []
    assert result.returncode == 1, result.stderr  # one row failed
    report = json.loads((tmp_path / "r.json").read_text())
    states = {o["key"]: o["state"] for o in report["outcomes"]}
    assert states == {"good": "complete", "bad": "failed"}
    assert _leaks([result.stdout, result.stderr, *_files(tmp_path)]) == []


# --- where the Authorization header goes ------------------------------------------------


@attrs.define
class Recorder:
    """Two loopback servers: ``origin`` redirects everything to ``elsewhere`` (another
    port), and both record the headers they receive."""

    origin: str = ""
    elsewhere: str = ""
    seen: list[tuple[str, str, str | None]] = attrs.field(factory=list)  # (server, path, auth)


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()

    async def redirect(request: web.Request) -> web.StreamResponse:
        rec.seen.append(("origin", request.path, request.headers.get("Authorization")))
        status = 307 if request.method == "POST" else 302
        await request.read()
        return web.Response(status=status, headers={"Location": rec.elsewhere + request.path})

    async def land(request: web.Request) -> web.StreamResponse:
        rec.seen.append(("elsewhere", request.path, request.headers.get("Authorization")))
        await request.read()
        if request.path.startswith("/outputs/"):
            return web.Response(body=b"video bytes", content_type="video/mp4")
        return web.json_response({"balance": 1, "job_id": "j", "status": "queued"})

    async with serve(redirect) as rec.origin, serve(land) as rec.elsewhere:
        yield rec


Call = Callable[[ViggleClient], Awaitable[object]]
API_CALLS: list[tuple[str, Call]] = [
    ("credits", lambda c: c.get_credits()),
    ("render status", lambda c: c.renders.get("job-1")),
    ("list characters", lambda c: c.characters.list()),
    ("render create", lambda c: c.renders.create(ref_image=make_png(),
                                                 driving_video_url="https://e.com/d.mp4")),
    ("render cancel", lambda c: c.renders.cancel("job-1")),
    ("character delete", lambda c: c.characters.delete("char-1")),
    ("scene delete", lambda c: c.scenes.delete("scene-1")),
]
# A 3xx is taken as success when the parser has defaults for an empty body.


async def test_api_redirects_are_not_followed_with_the_key(recorder: Recorder) -> None:
    async with ViggleClient(SECRET, base_url=recorder.origin,
                            retry=RetryPolicy(max_attempts=1)) as client:
        for _, call in API_CALLS:
            with contextlib.suppress(ViggleError):
                await call(client)
    assert [s for s in recorder.seen if s[0] == "elsewhere"] == []
    # Each call reached the API host once; the status route needs no key
    # (docs/api/renders.md#render-status).
    assert [auth for _, _, auth in recorder.seen] == [
        None if name == "render status" else f"Bearer {SECRET}" for name, _ in API_CALLS]


@pytest.mark.parametrize("call", [pytest.param(call, id=name) for name, call in API_CALLS])
async def test_an_api_redirect_is_an_error_not_a_success(recorder: Recorder, call: Call) -> None:
    # E.g. a base URL that answers 301 to https: a cancel that reported success would leave
    # the job running, and charged.
    async with ViggleClient(SECRET, base_url=recorder.origin,
                            retry=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(ViggleError):
            await call(client)


async def test_download_redirect_carries_no_key(recorder: Recorder, tmp_path: Path) -> None:
    async with ViggleClient(SECRET, base_url=recorder.origin) as client:
        path = await client.download(recorder.origin + "/outputs/job-1/output.mp4",
                                     tmp_path / "o.mp4")
    assert path.read_bytes() == b"video bytes"
    assert [(where, auth) for where, _, auth in recorder.seen] == [("origin", None),
                                                                   ("elsewhere", None)]


# --- plain http ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://127.0.0.1.nip.io", "http://localhost.example.com", "http://localhost@example.com",
    "http://example.com#@127.0.0.1", "http://[::ffff:7f00:1]:80", "http://0.0.0.0:8000",
])
def test_http_to_loopback_lookalikes_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="allow_insecure_http"):
        ViggleClient(SECRET, base_url=url)


def test_http_base_url_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGGLE_BASE_URL", "http://apis.viggle.ai")
    with pytest.raises(ConfigurationError) as info:
        ViggleClient(SECRET)
    assert _leaks(_exception_texts(info.value)) == []
