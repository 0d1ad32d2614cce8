"""Uploads as they arrive: broken framing answered 400 (never 500), the upload log with each
file's sha256, and the upload throttle."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging

import aiohttp
import pytest
from fakeapi import Api

from viggle_async.testing import FakeViggle, make_mp4, make_png

BOUNDARY = "fakeboundary"


def _multipart(*, close: bool = True) -> bytes:
    out = b""
    for name, filename, ctype, data in [
        ("ref_image", "a.png", "image/png", make_png()),
        ("driving_video", "d.mp4", "video/mp4", make_mp4(2.0)),
    ]:
        out += (
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\";"
            f" filename=\"{filename}\"\r\nContent-Type: {ctype}\r\n\r\n"
        ).encode() + data + b"\r\n"
    return out + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


async def _exchange(
    fake: FakeViggle, body: bytes, framing: str, *, then_close: bool = False
) -> bytes:
    """Send a create with a hand-made body and framing header; return the raw answer."""
    port = int(fake.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /api/render HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {fake.api_key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{framing}\r\n\r\n"
    ).encode()
    writer.write(head + body)
    await writer.drain()
    try:
        if then_close:
            writer.close()
            return b""
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.fixture
def server_errors(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.ERROR, logger="aiohttp.server")
    return caplog


async def test_well_framed_body_is_accepted_even_with_an_epilogue(
    api: Api, fake: FakeViggle
) -> None:
    body = _multipart()
    assert _status(await _exchange(fake, body, f"Content-Length: {len(body)}")) == 200
    junk = body + b"an epilogue after the close delimiter is allowed (RFC 2046)"
    assert _status(await _exchange(fake, junk, f"Content-Length: {len(junk)}")) == 200


async def test_body_without_its_closing_boundary_is_400(
    api: Api, fake: FakeViggle, server_errors: pytest.LogCaptureFixture
) -> None:
    body = _multipart(close=False)
    assert _status(await _exchange(fake, body, f"Content-Length: {len(body)}")) == 400
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    assert _status(await _exchange(fake, chunked, "Transfer-Encoding: chunked")) == 400
    assert [(c.status, c.error_code) for c in fake.creates] == [(400, "CS-UORC01-002")] * 2
    assert fake.store.jobs == {} and fake.balance() == 10_000
    assert server_errors.records == []


async def test_body_longer_than_its_content_length_is_400(
    api: Api, fake: FakeViggle, server_errors: pytest.LogCaptureFixture
) -> None:
    body = _multipart()
    # The declared length ends inside the last part: its boundary is never seen, and the
    # rest arrives as garbage where the next request should start.
    assert _status(await _exchange(fake, body, f"Content-Length: {len(body) - 40}")) == 400
    assert fake.store.jobs == {}
    assert server_errors.records == []


async def test_body_shorter_than_its_content_length_is_400_after_a_stall(
    api: Api, fake: FakeViggle, server_errors: pytest.LogCaptureFixture
) -> None:
    fake.settings.body_stall_s = 0.2
    body = _multipart()
    assert _status(await _exchange(fake, body[:-200], f"Content-Length: {len(body)}")) == 400
    assert [(c.status, c.error_code) for c in fake.creates] == [(400, "CS-UORC01-002")]
    assert fake.store.jobs == {}
    assert server_errors.records == []


async def test_broken_chunked_framing_is_400(api: Api, fake: FakeViggle) -> None:
    """aiohttp's own parser answers this one (and logs it); the point is: 400, no job."""
    body = _multipart()
    bad = b"zz\r\n" + body + b"\r\n0\r\n\r\n"  # not a hex chunk size
    assert _status(await _exchange(fake, bad, "Transfer-Encoding: chunked")) == 400
    assert fake.store.jobs == {}


async def test_client_leaving_mid_body_is_recorded_without_a_server_error(
    api: Api, fake: FakeViggle, server_errors: pytest.LogCaptureFixture
) -> None:
    body = _multipart()
    await _exchange(fake, body[:-200], f"Content-Length: {len(body)}", then_close=True)
    for _ in range(200):  # the fake sees the close a moment later
        if fake.creates and fake.creates[-1].status == 0 and fake.creates[-1].files:
            break
        await asyncio.sleep(0.01)
    assert fake.store.jobs == {}
    assert not [r for r in server_errors.records if "Error handling request" in r.getMessage()]


async def test_upload_log_has_size_and_sha256_of_each_file(api: Api, fake: FakeViggle) -> None:
    png, video = make_png(), make_mp4(3.0, payload=300_000)
    code, created = await api.render(
        None,
        {"ref_image": ("a.png", png, "image/png"), "driving_video": ("d.mp4", video, "video/mp4")},
    )
    assert code == 200
    record = fake.creates[-1]
    assert record.result_id == created["job_id"]
    assert [(f.name, f.size, f.sha256) for f in record.files] == [
        ("ref_image", len(png), hashlib.sha256(png).hexdigest()),
        ("driving_video", len(video), hashlib.sha256(video).hexdigest()),
    ]
    stats = fake.observations.snapshot()["creates"][-1]["files"]
    assert stats[1] == {"name": "driving_video", "size": len(video),
                        "sha256": hashlib.sha256(video).hexdigest()}
    # A video sent twice shows up twice with the same digest: countable.
    await api.on_demand(3.0)
    await api.on_demand(3.0)
    digests = [f.sha256 for c in fake.creates for f in c.files if f.name == "driving_video"]
    assert digests.count(hashlib.sha256(make_mp4(3.0)).hexdigest()) == 2


async def test_cut_upload_logs_what_arrived(api: Api, fake: FakeViggle) -> None:
    fake.settings.max_upload_bytes = 100_000
    video = make_mp4(3.0, payload=400_000)
    code, _ = await api.render(
        None,
        {"ref_image": ("a.png", make_png(), "image/png"),
         "driving_video": ("d.mp4", video, "video/mp4")},
    )
    assert code == 400
    part = fake.creates[-1].files[-1]
    assert part.size > 100_000 and part.size < len(video)
    assert part.sha256 != hashlib.sha256(video).hexdigest()


async def test_upload_throttle_paces_the_read(api: Api, fake: FakeViggle) -> None:
    """A lower bound only: 400 kB at 2 MB/s cannot be read in under 0.2 s."""
    fake.faults.upload_bytes_per_s = 2_000_000
    video = make_mp4(3.0, payload=400_000)
    form = aiohttp.FormData()
    form.add_field("ref_image", make_png(), filename="a.png", content_type="image/png")
    form.add_field("driving_video", io.BytesIO(video), filename="d.mp4", content_type="video/mp4")
    loop = asyncio.get_running_loop()
    started = loop.time()
    code, _ = await api.call("POST", "/api/render", data=form)
    assert code == 200 and loop.time() - started >= 0.2
    assert fake.creates[-1].files[-1].sha256 == hashlib.sha256(video).hexdigest()
