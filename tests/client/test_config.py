"""Client configuration: the API key (where it goes and where it never shows), base URLs,
and a caller's own aiohttp session (docs/api/conventions.md#authentication,
docs/api/client-rules.md#downloads)."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest

from viggle_async import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    DownloadError,
    InvalidInputError,
    RateLimitError,
    RenderFailedError,
    RetryPolicy,
    ViggleClient,
    ViggleError,
    WaitTimeoutError,
)
from viggle_async.testing import FakeViggle, ManualClock, RateLimit, make_mp4, make_png

SECRET = "sk-very-secret-0123456789"


async def test_missing_key_fails_before_sending_but_status_works(
        fake: FakeViggle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIGGLE_API_KEY", raising=False)
    async with ViggleClient(base_url=fake.base_url) as client:
        assert not client.has_api_key
        for call in (client.get_credits(), client.characters.list(),
                     client.renders.create(ref_image_url="https://e.com/a.png",
                                           driving_video_url="https://e.com/b.mp4")):
            with pytest.raises(ConfigurationError, match="VIGGLE_API_KEY"):
                await call
        assert sum(fake.request_counts.values()) == 0
        # docs/api/renders.md#render-status: status needs no key; create a job with a keyed client,
        # poll it keyless.
        async with ViggleClient(fake.api_key, base_url=fake.base_url) as keyed:
            job = await keyed.renders.create(ref_image=make_png(), driving_video=make_mp4(2.0))
        status = await client.renders.get(job.job_id)
    assert status.job_id == job.job_id and status.status == "queued"


async def test_key_from_environment(fake: FakeViggle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGGLE_API_KEY", fake.api_key)
    monkeypatch.setenv("VIGGLE_BASE_URL", fake.base_url)
    async with ViggleClient() as client:
        assert client.base_url == fake.base_url
        assert (await client.get_credits()).balance == fake.balance()


async def test_callers_session_is_used_and_left_open(fake: FakeViggle) -> None:
    started: list[str] = []

    async def on_start(session: aiohttp.ClientSession, ctx: object,
                       params: aiohttp.TraceRequestStartParams) -> None:
        started.append(f"{params.method} {params.url.path}")

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        async with ViggleClient(fake.api_key, base_url=fake.base_url, session=session) as c:
            await c.get_credits()
        assert not session.closed
        assert started == ["GET /api/credits"]
        async with session.get(fake.base_url + "/api/credits",
                               headers={"Authorization": f"Bearer {fake.api_key}"}) as r:
            assert r.status == 200  # still usable after the client closed


@pytest.mark.parametrize("url", ["http://example.com", "http://10.0.0.5:8000",
                                 "http://apis.viggle.ai", "ftp://apis.viggle.ai", "apis.viggle.ai"])
def test_insecure_or_bad_base_url_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        ViggleClient(SECRET, base_url=url)


@pytest.mark.parametrize("url", ["https://apis.viggle.ai", "http://127.0.0.1:8000",
                                 "http://localhost:1", "http://[::1]:80/"])
def test_https_and_loopback_http_accepted(url: str) -> None:
    client = ViggleClient(SECRET, base_url=url)
    assert client.base_url == url.rstrip("/")


def test_insecure_http_needs_an_explicit_opt_in() -> None:
    client = ViggleClient(SECRET, base_url="http://example.com", allow_insecure_http=True)
    assert client.base_url == "http://example.com"


def _leaks(exc: BaseException) -> bool:
    texts = [str(exc), repr(exc), *map(repr, exc.args), repr(vars(exc))]
    return any(SECRET in t for t in texts)


async def test_the_key_never_shows(clock: ManualClock, tmp_path: Path,
                                   caplog: pytest.LogCaptureFixture, closed_port: int) -> None:
    caplog.set_level(logging.DEBUG, logger="viggle_async")
    raised: list[BaseException] = []
    async with FakeViggle(clock=clock.now, api_keys={SECRET: 3}) as fake:
        client = ViggleClient(SECRET, base_url=fake.base_url, clock=clock,
                              retry=RetryPolicy(max_attempts=2))
        assert SECRET not in repr(client) and SECRET not in str(client)
        async with client, clock.autojump():
            async with ViggleClient("sk-wrong", base_url=fake.base_url) as wrong:
                with pytest.raises(AuthenticationError) as auth:
                    await wrong.get_credits()
            raised.append(auth.value)
            with pytest.raises(InvalidInputError) as bad:
                await client.renders.create(ref_image=make_png())
            raised.append(bad.value)
            with pytest.raises(ViggleError) as poor:  # 3 credits for a 4 s video
                await client.renders.create(ref_image=make_png(), driving_video=make_mp4(4.0))
            raised.append(poor.value)
            fake.faults.render_failure_rate = 1.0
            job = await client.renders.create(ref_image=make_png(), driving_video=make_mp4(1.0))
            with pytest.raises(WaitTimeoutError) as timeout:
                await client.renders.wait(job.job_id, timeout=1)
            raised.append(timeout.value)
            with pytest.raises(RenderFailedError) as failed:
                await client.renders.wait(job.job_id)
            raised.append(failed.value)
            fake.faults.rate_limit = RateLimit(rate=0.001, burst=1)
            with pytest.raises(RateLimitError) as limited:
                await client.characters.list()
                await client.characters.list()
            raised.append(limited.value)
            with pytest.raises(DownloadError) as dl:
                await client.download(f"{fake.cdn_base_url}/outputs/nope/output.mp4",
                                      tmp_path / "o.mp4")
            raised.append(dl.value)
    async with ViggleClient(SECRET, base_url=f"http://127.0.0.1:{closed_port}", clock=clock,
                            retry=RetryPolicy(max_attempts=2)) as gone, clock.autojump():
        with pytest.raises(ConnectError) as refused:
            await gone.get_credits()
    raised.append(refused.value)
    assert [e for e in raised if _leaks(e)] == []
    assert caplog.records and SECRET not in caplog.text


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost", True), ("LOCALHOST", True), ("127.0.0.1", True), ("127.1.2.3", True),
    ("::1", True),
    # IPv4-mapped loopback: refused on every Python (3.13's ipaddress says loopback, 3.12's
    # does not; the rule must not depend on the interpreter, issue 11.13).
    ("::ffff:127.0.0.1", False), ("::ffff:7f00:1", False), ("::ffff:7f01:203", False),
    ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("localhost.example.com", False),
])
def test_loopback_rule_is_the_same_on_every_python(host: str, loopback: bool) -> None:
    from viggle_async._client import _is_loopback

    assert _is_loopback(host) is loopback
    url = f"http://[{host}]:8080" if ":" in host else f"http://{host}:8080"
    if loopback:
        assert ViggleClient("k", base_url=url).base_url == url
    else:
        with pytest.raises(ConfigurationError, match="allow_insecure_http"):
            ViggleClient("k", base_url=url)
