"""A signed CDN URL reaches the CDN byte for byte (issue 11.5): re-encoding ``%2F`` as
``/`` (or ``%7E`` as ``~``...) changes what was signed and the CDN refuses it. The server
records the request target exactly as it arrived (``raw_path``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import loophelp
import pytest
from aiohttp import web

from viggle_async import ViggleClient

BODY = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64

# Reserved and unreserved characters, percent-encoded or not, that a normaliser would
# rewrite: %2F -> /, %3D -> =, %7E -> ~, %2B -> + (or + -> %2B / space), %20 -> +.
SIGNED = [
    "/o/out.mp4?X-Amz-Credential=AKID%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Signature=ab%3D%3D&X-Amz-Expires=3600",
    "/o/out.mp4?token=a%7Eb%2Bc%20d+e&sig=x%2F%3D%7E%2B%20+",
    "/bucket/a%2Fb%3Dc%7Ed%2Be%20f+g/out.mp4?Expires=1&Signature=%2B%2F%3D",
    "/o/~user/a+b/out.mp4?q=%25%26%3F&empty=&flag",
    "/o/%E2%9C%93/out.mp4?name=%C3%A9t%C3%A9",
]


@pytest.fixture
async def cdn() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def serve(request: web.Request) -> web.StreamResponse:
        seen.append(request.raw_path)
        if request.path.startswith("/redirect"):
            # A download endpoint that answers with the signed URL elsewhere (docs/api/v1.md: /v1).
            # (Set raw: web.HTTPFound would itself requote the Location.)
            return web.Response(status=302, headers={"Location": SIGNED[0]})
        return web.Response(body=BODY, content_type="video/mp4")

    async with loophelp.serve(serve, "GET") as url:
        yield url, seen


@pytest.mark.parametrize("target", SIGNED)
async def test_the_cdn_receives_the_url_exactly_as_given(
        cdn: tuple[str, list[str]], tmp_path: Path, target: str) -> None:
    base, seen = cdn
    async with ViggleClient("k", base_url=base, trust_env=False) as client:
        dest = await client.download(base + target, tmp_path / "o.mp4")
    assert seen == [target]
    assert dest.read_bytes() == BODY


async def test_a_redirect_to_a_signed_url_is_followed_untouched(
        cdn: tuple[str, list[str]], tmp_path: Path) -> None:
    base, seen = cdn
    async with ViggleClient("k", base_url=base, trust_env=False) as client:
        dest = await client.download(base + "/redirect/job_1", tmp_path / "o.mp4")
    assert seen == ["/redirect/job_1", SIGNED[0]]
    assert dest.read_bytes() == BODY


@pytest.mark.parametrize("answer", [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 10"
                                    b"\r\n\r\nshort", b""])
async def test_no_error_message_quotes_the_signature(tmp_path: Path, answer: bytes) -> None:
    """Whatever breaks (a malformed answer, a short body, a closed socket), the error names
    the URL without its query: a signed URL's query is a credential."""
    import asyncio

    from viggle_async import DownloadError, RetryPolicy

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with ViggleClient("k", base_url=base, trust_env=False) as client:
            with pytest.raises(DownloadError) as info:
                await client.download(f"{base}/o.mp4?X-Amz-Signature=SECRET%2Fsig",
                                      tmp_path / "o.mp4",
                                      retry=RetryPolicy(max_attempts=2, base=0.001, cap=0.001))
    finally:
        server.close()
    assert "SECRET" not in str(info.value) and "/o.mp4" in str(info.value)
