"""The CDN's faults: signed expiring URLs, failure statuses, mid-body drops, Range, outputs."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging

import aiohttp
import pytest
from fakeapi import Api, ManualClock
from multidict import CIMultiDict
from yarl import URL

from viggle_async import _media
from viggle_async.testing import FakeViggle


async def _complete(api: Api, clock: ManualClock, seconds: float = 1.0, **fields: str) -> str:
    code, created = await api.on_demand(seconds, **fields)
    assert code == 200, created
    clock.advance(600)
    return str(created["job_id"])


async def _get(
    url: str, headers: dict[str, str] | None = None, *, raw: bool = True
) -> tuple[int, CIMultiDict[str], bytes]:
    """GET ``url``; ``raw=False`` lets yarl normalise it, as a careless client would."""
    target = URL(url, encoded=True) if raw else URL(url)
    async with aiohttp.ClientSession() as session, session.get(target, headers=headers) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


# -- signed URLs ---------------------------------------------------------------------------


async def test_signed_url_carries_escapes_and_works_untouched(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    fake.faults.url_ttl_s = 60
    job_id = await _complete(api, clock)
    url = (await api.status(job_id))["cdn_url"]
    assert url.startswith(f"{fake.cdn_base_url}/outputs/{job_id}/output.mp4?")
    assert "X-Amz-Credential=AKIA" in url and "%2F" in url and "%3D" in url and "%2B" in url
    status, _, body = await _get(url)
    assert status == 200 and len(body) == fake.settings.output_bytes
    # The test sees exactly what arrived on the request line.
    assert fake.observations.cdn_requests[-1].raw_path == url[len(fake.cdn_base_url) :]


async def test_reencoded_signed_url_is_refused(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    fake.faults.url_ttl_s = 60
    job_id = await _complete(api, clock)
    url = (await api.status(job_id))["cdn_url"]
    status, _, body = await _get(url, raw=False)
    assert status == 403 and b"SignatureDoesNotMatch" in body
    sent = fake.observations.cdn_requests[-1]
    assert sent.status == 403 and "%2F" not in sent.raw_path  # yarl decoded it


@pytest.mark.parametrize("tamper", ["X-Amz-Expires=60", "X-Amz-Signature=", "output.mp4"])
async def test_tampered_signed_url_is_refused(
    api: Api, clock: ManualClock, fake: FakeViggle, tamper: str
) -> None:
    fake.faults.url_ttl_s = 60
    job_id = await _complete(api, clock, background_mode="transparent")
    url = (await api.status(job_id))["cdn_url"]
    replacement = {"X-Amz-Expires=60": "X-Amz-Expires=9999",
                   "X-Amz-Signature=": "X-Amz-Signature=00",
                   "output.mp4": "mask.mp4"}[tamper]
    assert tamper in url
    assert (await _get(url.replace(tamper, replacement)))[0] == 403


async def test_signed_url_expires_and_each_poll_signs_afresh(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    fake.faults.url_ttl_s = 60
    job_id = await _complete(api, clock, background_mode="transparent")
    first = await api.status(job_id)
    clock.advance(30)
    assert (await _get(first["cdn_url"]))[0] == 200
    assert (await _get(first["mask_cdn_url"]))[0] == 200
    clock.advance(31)
    status, _, body = await _get(first["cdn_url"])
    assert status == 403 and b"Request has expired" in body
    assert (await _get(first["mask_cdn_url"]))[0] == 403
    fresh = await api.status(job_id)
    assert fresh["cdn_url"] != first["cdn_url"] and fresh["download_url"] == fresh["cdn_url"]
    assert (await _get(fresh["cdn_url"]))[0] == 200
    assert (await _get(fresh["mask_cdn_url"]))[0] == 200
    assert fake.render_status(job_id)["cdn_url"].startswith(fake.cdn_base_url)


async def test_unsigned_urls_by_default(api: Api, clock: ManualClock, fake: FakeViggle) -> None:
    job_id = await _complete(api, clock)
    url = (await api.status(job_id))["cdn_url"]
    assert url == f"{fake.cdn_base_url}/outputs/{job_id}/output.mp4"
    assert (await _get(url, raw=False))[0] == 200


# -- failure statuses ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 404, 410, 500, 502, 503])
async def test_cdn_fails_the_first_n_requests_of_each_object(
    api: Api, clock: ManualClock, fake: FakeViggle, status: int
) -> None:
    fake.faults.cdn_fail_first_n = 2
    fake.faults.cdn_fail_status = status
    fake.faults.cdn_retry_after = "3"
    a = (await api.status(await _complete(api, clock)))["cdn_url"]
    b = (await api.status(await _complete(api, clock)))["cdn_url"]
    seen = [(await _get(a))[:2] for _ in range(3)]
    assert [(s, h.get("Retry-After")) for s, h in seen] == [(status, "3")] * 2 + [(200, None)]
    assert (await _get(b))[0] == status  # counted per object
    assert fake.observations.cdn_failed == 3


async def test_cdn_fails_for_the_first_seconds_of_each_object(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    fake.faults.cdn_fail_for_s = 10
    fake.faults.cdn_fail_status = 404
    fake.faults.cdn_retry_after = "Wed, 21 Oct 2026 07:28:00 GMT"
    url = (await api.status(await _complete(api, clock)))["cdn_url"]
    status, headers, _ = await _get(url)
    assert (status, headers["Retry-After"]) == (404, "Wed, 21 Oct 2026 07:28:00 GMT")
    clock.advance(9.5)
    assert (await _get(url))[0] == 404
    clock.advance(0.5)
    assert (await _get(url))[0] == 200


# -- drops, Range, If-Range --------------------------------------------------------------------


async def test_cdn_drops_mid_body_for_the_first_n_tries(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    fake.settings.output_bytes = 512 * 1024
    fake.faults.cdn_drop_first_n = 2
    fake.faults.cdn_drop_after_bytes = 100_000
    url = (await api.status(await _complete(api, clock)))["cdn_url"]
    for _ in range(2):
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.content_length == 512 * 1024
            got = bytearray()
            with pytest.raises(aiohttp.ClientPayloadError):
                async for chunk in resp.content.iter_any():
                    got += chunk
            assert len(got) == 100_000
    status, _, body = await _get(url)
    assert status == 200 and len(body) == 512 * 1024
    assert fake.observations.cdn_dropped == 2


async def test_range_resume_after_a_drop(api: Api, clock: ManualClock, fake: FakeViggle) -> None:
    fake.settings.output_bytes = 300_000
    fake.faults.cdn_range_support = True
    fake.faults.cdn_drop_first_n = 1
    fake.faults.cdn_drop_after_bytes = 120_000
    url = (await api.status(await _complete(api, clock)))["cdn_url"]
    with pytest.raises(aiohttp.ClientPayloadError):  # the dropped try
        await _get(url)
    status, headers, whole = await _get(url)
    assert status == 200 and headers["Accept-Ranges"] == "bytes" and len(whole) == 300_000
    etag = headers["ETag"]
    for rng, start, end in [("bytes=120000-", 120_000, 300_000), ("bytes=10-19", 10, 20),
                            ("bytes=-100", 299_900, 300_000), ("bytes=299990-400000", 299_990,
                                                                300_000)]:
        status, headers, part = await _get(url, {"Range": rng, "If-Range": etag})
        assert status == 206, rng
        assert headers["Content-Range"] == f"bytes {start}-{end - 1}/300000"
        assert part == whole[start:end]
        assert headers["ETag"] == etag
    assert fake.observations.cdn_requests[-1].headers == {"Range": "bytes=299990-400000",
                                                           "If-Range": etag}


async def test_range_edge_cases(api: Api, clock: ManualClock, fake: FakeViggle) -> None:
    fake.settings.output_bytes = 1000
    fake.faults.cdn_range_support = True
    url = (await api.status(await _complete(api, clock)))["cdn_url"]
    status, headers, _ = await _get(url, {"Range": "bytes=1000-"})
    assert status == 416 and headers["Content-Range"] == "bytes */1000"
    # A mismatching If-Range (an old ETag or a date): the whole body, 200.
    for validator in ['"stale"', "Wed, 21 Oct 2026 07:28:00 GMT"]:
        status, headers, body = await _get(url, {"Range": "bytes=500-", "If-Range": validator})
        assert status == 200 and len(body) == 1000 and "Content-Range" not in headers
    # Multi-range and garbage are ignored: 200 in full is always allowed.
    for rng in ["bytes=0-1,5-6", "bytes=abc", "items=0-1"]:
        assert (await _get(url, {"Range": rng}))[0] == 200


async def test_range_ignored_without_range_support(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    fake.settings.output_bytes = 1000
    url = (await api.status(await _complete(api, clock)))["cdn_url"]
    status, headers, body = await _get(url, {"Range": "bytes=500-"})
    assert status == 200 and len(body) == 1000
    assert "Accept-Ranges" not in headers and headers["ETag"]


# -- outputs ----------------------------------------------------------------------------------


async def test_default_outputs_are_one_pattern(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    a = await _get((await api.status(await _complete(api, clock)))["cdn_url"])
    b = await _get((await api.status(await _complete(api, clock, 2.0)))["cdn_url"])
    assert a[2] == b[2] and a[2][4:8] == b"ftyp"
    assert a[2][1000] == 1000 % 256


async def test_mp4_outputs_differ_per_job_and_probe_to_the_job_duration(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    fake.settings.output_mp4 = True
    fake.settings.output_bytes = 100_000
    bodies = []
    for seconds in (1.5, 1.5, 4.0):
        job = await api.status(await _complete(api, clock, seconds, background_mode="transparent"))
        status, _, body = await _get(job["cdn_url"])
        assert status == 200 and len(body) == 100_000
        info = _media.probe_video(io.BytesIO(body))
        assert info.duration_s == pytest.approx(seconds)
        mask = (await _get(job["mask_cdn_url"]))[2]
        assert mask != body and len(mask) == 100_000
        bodies.append(body)
    assert len({hashlib.sha256(b).digest() for b in bodies}) == 3


async def test_mp4_outputs_are_never_smaller_than_their_headers(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    fake.settings.output_mp4 = True
    fake.settings.output_bytes = 16
    body = (await _get((await api.status(await _complete(api, clock, 2.0)))["cdn_url"]))[2]
    assert _media.probe_video(io.BytesIO(body)).duration_s == pytest.approx(2.0)


@pytest.mark.parametrize("paced", [False, True], ids=["full speed", "paced"])
async def test_a_client_that_stops_reading_early_is_counted_not_logged(
    api: Api, clock: ManualClock, fake: FakeViggle, paced: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A cancelled download or a segment that closes its answer early: a real CDN just sees
    # the connection go. The fake used to print aiohttp's "Error handling request"
    # traceback into the user's test output each time.
    fake.settings.output_bytes = 32 * 1024 * 1024
    fake.faults.cdn_bytes_per_s = 64 * 1024 * 1024 if paced else 0.0
    job_id = await _complete(api, clock)
    url = (await api.status(job_id))["cdn_url"]
    for _ in range(3):
        async with aiohttp.ClientSession() as session:
            resp = await session.get(URL(url, encoded=True))
            assert resp.status == 200
            await resp.content.readexactly(64 * 1024)
            resp.close()  # stop reading: the connection is closed under the server
        await asyncio.sleep(0.05)  # the server's writer notices
    assert fake.observations.cdn_client_closed >= 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # The CDN still serves the whole body to the next client.
    status, _, body = await _get(url)
    assert status == 200 and len(body) == 32 * 1024 * 1024
