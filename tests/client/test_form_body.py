"""A create with text fields only (ids, URLs, options) goes out as the documented
multipart/form-data body (docs/api/conventions.md#request-encodings), byte for byte what
aiohttp's multipart writer produces for the same fields and boundary, on a recording
loopback server: the cheaper one-piece body changes nothing on the wire."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from viggle_async import ViggleClient

if TYPE_CHECKING:
    from loophelp import Scripted

KEY = "sk-form"
JOB = {"job_id": "job_1", "status": "queued"}


class _Sink:
    def __init__(self) -> None:
        self.data = b""

    async def write(self, chunk: bytes) -> None:
        self.data += bytes(chunk)


async def _aiohttp_body(fields: list[tuple[str, str]], boundary: str) -> tuple[bytes, str]:
    writer = aiohttp.MultipartWriter("form-data", boundary=boundary)
    for name, value in fields:
        writer.append(value).set_content_disposition("form-data", name=name)
    sink = _Sink()
    await writer.write(sink)  # type: ignore[arg-type]
    return sink.data, writer.headers["Content-Type"]


@pytest.mark.parametrize("inputs", [
    {"character_id": "char_1", "scene_id": "scene_1"},
    # non-ASCII, quotes and CRLFs inside values; several options at once
    {"ref_image_url": "https://e.com/ä\"q\".png", "driving_video_url": "https://e.com/b.mp4",
     "model": "V3_Preview", "background_mode": "solid", "bg_color": [1, 2, 3]},
    {"character_id": "c\r\n--x", "scene_id": "s"},
])
async def test_text_only_create_body_is_aiohttps_multipart(scripted: Scripted,
                                                           inputs: dict[str, Any]) -> None:
    scripted.queue((200, JOB))
    async with ViggleClient(KEY, base_url=scripted.base_url) as client:
        prepared = await client.renders.prepare(**inputs)
        job = await client.renders.submit(prepared)
    assert job.job_id == "job_1"
    (seen,) = scripted.seen
    content_type = seen.headers["Content-Type"]
    boundary = content_type.partition("boundary=")[2]
    assert boundary
    expected, expected_type = await _aiohttp_body(list(prepared.request.fields or ()), boundary)
    assert (seen.body, content_type) == (expected, expected_type)
    assert int(seen.headers["Content-Length"]) == len(seen.body)
    assert "Transfer-Encoding" not in seen.headers
    assert seen.headers["Authorization"] == f"Bearer {KEY}"


async def test_each_attempt_gets_a_fresh_boundary(scripted: Scripted) -> None:
    # A create refused with 429 is resent (docs/api/client-rules.md#create-retries): a
    # new body, as aiohttp's writer would build it.
    scripted.queue((429, {"error": "rate"}, {"Retry-After": "0"}), (200, JOB))
    async with ViggleClient(KEY, base_url=scripted.base_url) as client:
        await client.renders.create(character_id="c", scene_id="s")
    first, second = scripted.seen
    assert first.headers["Content-Type"] != second.headers["Content-Type"]
    assert (first.body.replace(first.headers["Content-Type"][-32:].encode(), b"B")
            == second.body.replace(second.headers["Content-Type"][-32:].encode(), b"B"))
