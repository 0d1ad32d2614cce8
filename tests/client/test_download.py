"""Downloads of outputs: complete or nothing, never with the API key
(docs/api/client-rules.md#downloads)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import loophelp
import pytest
from loophelp import names

from viggle_async import DownloadError, InvalidInputError, RetryPolicy, ViggleClient
from viggle_async.testing import FakeViggle, ManualClock, make_mp4, make_png


async def _finished(client: ViggleClient, fake: FakeViggle, clock: ManualClock) -> str:
    job = await client.renders.create(ref_image=make_png(), driving_video=make_mp4(2.0))
    await clock.advance(3600)
    status = await client.renders.get(job.job_id)
    assert status.cdn_url is not None
    return status.cdn_url


async def test_complete_download_matches_served_bytes(client: ViggleClient, fake: FakeViggle,
                                                      clock: ManualClock,
                                                      tmp_path: Path) -> None:
    fake.settings.output_bytes = 3 * 2**20 + 123  # several chunks, odd tail
    url = await _finished(client, fake, clock)
    progress: list[tuple[int, int | None]] = []
    dest = await client.download(url, tmp_path / "out.mp4",
                                 on_progress=lambda n, t: progress.append((n, t)))
    async with aiohttp.ClientSession() as raw, raw.get(url) as resp:
        served = await resp.read()
    assert dest.read_bytes() == served and len(served) == fake.settings.output_bytes
    assert progress[-1] == (len(served), len(served))
    assert fake.cdn_auth_headers == []
    assert names(tmp_path) == ["out.mp4"]


async def test_a_truncated_body_is_fetched_again_whole(client: ViggleClient, fake: FakeViggle,
                                                      clock: ManualClock,
                                                      tmp_path: Path) -> None:
    url = await _finished(client, fake, clock)
    fake.faults.truncate_downloads = 2
    async with clock.autojump():  # the backoff sleeps run on the manual clock
        dest = await client.download(url, tmp_path / "out.mp4")
    assert dest.stat().st_size == fake.settings.output_bytes
    assert fake.observations.cdn_downloads == 3  # two cut short, then one whole
    assert names(tmp_path) == ["out.mp4"]
    assert fake.cdn_auth_headers == []


async def test_every_attempt_truncated_leaves_no_file(client: ViggleClient, fake: FakeViggle,
                                                     clock: ManualClock,
                                                     tmp_path: Path) -> None:
    url = await _finished(client, fake, clock)
    fake.faults.truncate_downloads = 3
    async with clock.autojump():
        with pytest.raises(DownloadError, match="after 3 attempts") as info:
            await client.download(url, tmp_path / "out.mp4",
                                  retry=RetryPolicy(max_attempts=3))
    assert "still on the server" in str(info.value)
    assert names(tmp_path) == []  # neither the file nor a temp file beside it
    # The next download is whole.
    dest = await client.download(url, tmp_path / "out.mp4")
    assert dest.stat().st_size == fake.settings.output_bytes
    assert fake.cdn_auth_headers == []


async def test_failed_download_keeps_an_existing_file(client: ViggleClient, fake: FakeViggle,
                                                      clock: ManualClock,
                                                      tmp_path: Path) -> None:
    url = await _finished(client, fake, clock)
    dest = tmp_path / "out.mp4"
    dest.write_bytes(b"previous")
    fake.faults.truncate_downloads = 2
    async with clock.autojump():
        with pytest.raises(DownloadError):
            await client.download(url, dest, retry=RetryPolicy(max_attempts=2))
    assert dest.read_bytes() == b"previous"
    assert names(tmp_path) == ["out.mp4"]


async def test_error_status_raises_and_leaves_no_file(client: ViggleClient, fake: FakeViggle,
                                                      clock: ManualClock,
                                                      tmp_path: Path) -> None:
    async with clock.autojump():
        with pytest.raises(DownloadError, match="404") as info:
            await client.download(f"{fake.cdn_base_url}/outputs/job_x/output.mp4?sig=SECRET",
                                  tmp_path / "o.mp4", retry=RetryPolicy(max_attempts=2))
    assert "SECRET" not in str(info.value)  # signed URLs carry credentials in the query
    assert names(tmp_path) == []


@pytest.mark.parametrize("url", ["ftp://cdn.example.com/o.mp4", "file:///etc/passwd",
                                 "javascript:alert(1)", "//cdn.example.com/o.mp4", ""])
async def test_non_http_urls_are_refused(client: ViggleClient, fake: FakeViggle,
                                         tmp_path: Path, url: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        await client.download(url, tmp_path / "o.mp4")
    assert info.value.field == "url"
    assert names(tmp_path) == []


async def test_a_cdn_that_compresses_anyway_still_gives_the_whole_file(
        client: ViggleClient, tmp_path: Path) -> None:
    """The client asks for identity; a CDN that gzips regardless is decoded, not flagged as
    truncated (its Content-Length counts the compressed bytes)."""
    import gzip

    from aiohttp import web

    body = bytes(range(256)) * 4096  # compresses well: encoded length << decoded length
    seen: list[str | None] = []

    async def serve(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Accept-Encoding"))
        return web.Response(body=gzip.compress(body), content_type="video/mp4",
                            headers={"Content-Encoding": "gzip"})

    async with loophelp.serve(serve, "GET") as url:
        dest = await client.download(f"{url}/out.mp4", tmp_path / "o.mp4")
    assert seen == ["identity"]
    assert dest.read_bytes() == body
    assert names(tmp_path) == ["o.mp4"]
