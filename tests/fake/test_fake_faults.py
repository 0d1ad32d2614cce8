"""Each fault knob of the fake server, and what it records."""

from __future__ import annotations

import asyncio
import io
import time

import aiohttp
import pytest
from fakeapi import Api, ManualClock

from viggle_async.testing import FakeViggle, Faults, RateLimit, make_mp4, make_png


async def _fast(api: Api) -> tuple[int, str | None]:
    code, body = await api.on_demand(3.0, fast="true")
    return code, (body["detail"]["error_code"] if code != 200 else None)


async def test_fast_unavailable_always(api: Api, fake: FakeViggle) -> None:
    fake.faults.fast_unavailable = True
    assert await _fast(api) == (400, "CS-UORC01-001")
    code, _ = await api.on_demand(3.0)
    assert code == 200  # only fast is affected
    assert fake.capacity_rejections == 1
    assert fake.balance() == 10_000 - 3


async def test_fast_unavailable_for_next_n(api: Api, fake: FakeViggle) -> None:
    fake.faults.fast_unavailable_next = 2
    results = [await _fast(api) for _ in range(3)]
    assert results == [(400, "CS-UORC01-001")] * 2 + [(200, None)]
    assert fake.capacity_rejections == 2


async def test_fast_unavailable_until_clock_time(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    fake.faults.fast_unavailable_until = clock.t + 10
    assert await _fast(api) == (400, "CS-UORC01-001")
    clock.advance(9.9)
    assert await _fast(api) == (400, "CS-UORC01-001")
    clock.advance(0.1)
    assert await _fast(api) == (200, None)


async def test_rate_limit_per_key_and_route(clock: ManualClock) -> None:
    limit = RateLimit(rate=0.5, burst=2, routes=frozenset({"GET /api/credits"}))
    keys = {"sk-a": 10, "sk-b": 10}
    async with (
        FakeViggle(clock=clock, api_keys=keys, faults=Faults(rate_limit=limit)) as fake,
        aiohttp.ClientSession() as session,
    ):
        api = Api(fake, session)
        assert [(await api.call("GET", "/api/credits", key="sk-a"))[0] for _ in range(3)] == [
            200,
            200,
            429,
        ]
        async with session.get(
            fake.base_url + "/api/credits", headers={"Authorization": "Bearer sk-a"}
        ) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "2"  # one token at 0.5/s
        code, _ = await api.call("GET", "/api/credits", key="sk-b")  # its own bucket
        assert code == 200
        code, _ = await api.call("GET", "/api/characters", key="sk-a")  # route not limited
        assert code == 200
        clock.advance(2.0)
        code, _ = await api.call("GET", "/api/credits", key="sk-a")
        assert code == 200
        assert fake.observations.rate_limited == 2


async def test_rate_limit_on_every_route(api: Api, fake: FakeViggle) -> None:
    fake.faults.rate_limit = RateLimit(rate=1.0, burst=1)
    code, _created = await api.on_demand(1.0)
    assert code == 200
    code, body = await api.on_demand(1.0)
    assert code == 429 and isinstance(body["detail"], str)
    assert fake.balance() == 10_000 - 1


async def _error_pattern(clock: ManualClock, seed: int) -> list[int]:
    faults = Faults(get_error_rate=0.5, seed=seed)
    async with FakeViggle(clock=clock, faults=faults) as fake, aiohttp.ClientSession() as s:
        api = Api(fake, s)
        codes = [(await api.call("GET", "/api/credits"))[0] for _ in range(40)]
        assert fake.observations.injected_errors == codes.count(503)
        return codes


async def test_get_errors_are_seeded_and_reproducible(clock: ManualClock) -> None:
    first = await _error_pattern(clock, seed=7)
    assert first == await _error_pattern(clock, seed=7)
    assert first != await _error_pattern(clock, seed=8)
    assert set(first) == {200, 503}
    assert 8 < first.count(503) < 32


async def test_get_errors_spare_posts(api: Api, fake: FakeViggle) -> None:
    fake.faults.get_error_rate = 1.0
    fake.faults.get_error_status = 500
    code, created = await api.on_demand(1.0)
    assert code == 200
    code, body = await api.call("GET", f"/api/render/{created['job_id']}", key=None)
    assert code == 500 and isinstance(body["detail"], str)


async def test_render_failure_fraction_is_seeded(clock: ManualClock) -> None:
    async def failures(seed: int) -> list[bool]:
        faults = Faults(render_failure_rate=0.3, seed=seed)
        urls = {"ref_image_url": "https://a.test/i", "driving_video_url": "https://a.test/v"}
        async with FakeViggle(clock=clock, faults=faults) as fake, aiohttp.ClientSession() as s:
            api = Api(fake, s)
            ids = [(await api.render(urls))[1]["job_id"] for _ in range(30)]
            return [fake.job(i).fails for i in ids]

    first = await failures(1)
    assert first == await failures(1)
    assert 0 < sum(first) < 30


async def test_latency_and_peak_concurrency(api: Api, fake: FakeViggle) -> None:
    fake.faults.latency_s = 0.05
    fake.faults.latency_routes = frozenset({"GET /api/credits"})
    start = time.perf_counter()
    codes = await asyncio.gather(*(api.call("GET", "/api/credits") for _ in range(5)))
    assert time.perf_counter() - start >= 0.05
    assert [c for c, _ in codes] == [200] * 5
    assert fake.peak_concurrency[("GET", "/api/credits")] == 5
    assert fake.count("GET", "/api/credits") == 5


async def test_dropped_upload_gets_no_answer(api: Api, fake: FakeViggle) -> None:
    fake.faults.drop_uploads = 1
    fake.faults.drop_after_bytes = 1024
    video = make_mp4(5.0, payload=4 * 1024 * 1024)
    form = aiohttp.FormData()
    form.add_field("ref_image", make_png(), filename="a.png", content_type="image/png")
    form.add_field("driving_video", io.BytesIO(video), filename="d.mp4", content_type="video/mp4")
    with pytest.raises(aiohttp.ClientError):
        await api.call("POST", "/api/render", data=form)
    assert fake.dropped_uploads == 1
    assert fake.creates[-1].status == 0 and fake.creates[-1].result_id is None
    assert fake.balance() == 10_000
    code, _ = await api.on_demand(5.0)  # only the next N are dropped
    assert code == 200


async def test_truncated_download(api: Api, clock: ManualClock, fake: FakeViggle) -> None:
    fake.settings.output_bytes = 1024 * 1024
    fake.faults.truncate_downloads = 1
    _, created = await api.on_demand(1.0)
    clock.advance(600)
    url = (await api.status(created["job_id"]))["cdn_url"]
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with session.get(url) as resp:
                assert resp.content_length == 1024 * 1024
                await resp.read()
        async with session.get(url) as resp:
            assert len(await resp.read()) == 1024 * 1024
    assert fake.observations.truncated_downloads == 1
    assert fake.observations.cdn_downloads == 2
    assert fake.cdn_auth_headers == []


async def test_answer_delay_holds_a_create_answer_after_the_job_exists(
    api: Api, fake: FakeViggle
) -> None:
    """The ambiguous window: the job is made (and paid for) but its answer is still held."""
    fake.faults.answer_delay_s = 0.3
    fake.faults.answer_delay_routes = frozenset({"POST /api/render"})
    create = asyncio.create_task(api.on_demand(2.0))
    # The fake has no "job created" event to wait on; watch what it observed.
    while not (fake.creates and fake.creates[-1].result_id):  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    assert not create.done()
    assert fake.balance() == 10_000 - 2  # already charged
    code, body = await create
    assert code == 200 and body["job_id"] == fake.creates[-1].result_id
    status = await api.status(body["job_id"])  # another route: not held
    assert status["job_id"] == body["job_id"]


async def test_cdn_throttle_streams_the_body_in_paced_chunks(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    """A slow CDN, to catch a client mid-download; the body is whole in the end. A lower
    bound only: each 1 MiB block is followed by a 1/8 s pause, so 3 MiB cannot come sooner
    than 3/8 s."""
    fake.settings.output_bytes = 3 * 1024 * 1024
    fake.faults.cdn_bytes_per_s = 8 * 1024 * 1024
    _, created = await api.on_demand(1.0)
    clock.advance(600)
    url = (await api.status(created["job_id"]))["cdn_url"]
    started = time.monotonic()
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        body = await resp.read()
    assert time.monotonic() - started >= 0.25
    assert len(body) == 3 * 1024 * 1024


async def test_replacing_faults_while_running(api: Api, fake: FakeViggle) -> None:
    fake.faults = Faults(fast_unavailable=True)
    assert await _fast(api) == (400, "CS-UORC01-001")
    fake.faults = Faults()
    assert await _fast(api) == (200, None)
