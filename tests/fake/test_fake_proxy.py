"""ProxyServer: absolute-form forwarding, CONNECT tunnels, 407, and what it records."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from fakeapi import Api, ManualClock
from yarl import URL

from viggle_async.testing import FakeViggle, ProxyServer

AUTH = "Basic dXNlcjpwYXNz"  # user:pass


def with_creds(proxy_url: str, creds: str = "user:pass") -> str:
    # Credentials in the proxy URL: aiohttp 3.14 deprecates BasicAuth objects.
    return proxy_url.replace("http://", f"http://{creds}@", 1)


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    """A loopback server that answers with what it received: method, raw path, headers."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({
            "method": request.method,
            "raw_path": request.raw_path,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body_len": len(body),
        })

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_forwards_absolute_form_untouched_and_strips_proxy_headers(echo: str) -> None:
    async with ProxyServer(proxy_authorization=AUTH) as proxy, aiohttp.ClientSession() as s:
        url = URL(f"{echo}/outputs/j/output.mp4?X-Amz-Credential=AKID%2F2026&t=a%2Bb%3D%3D",
                  encoded=True)
        async with s.get(url, proxy=with_creds(proxy.url), headers={"X-Test": "1"}) as resp:
            assert resp.status == 200 and resp.headers["Connection"] == "close"
            seen = await resp.json()
        async with s.post(f"{echo}/api/render", data=b"x" * 100_000,
                          proxy=with_creds(proxy.url)) as resp:
            posted = await resp.json()
    assert seen["raw_path"] == "/outputs/j/output.mp4?X-Amz-Credential=AKID%2F2026&t=a%2Bb%3D%3D"
    assert seen["headers"]["x-test"] == "1" and "proxy-authorization" not in seen["headers"]
    assert (posted["method"], posted["body_len"]) == ("POST", 100_000)
    first = proxy.requests[0]
    assert (first.method, first.status) == ("GET", 200)
    assert first.target == str(url)
    assert first.header("proxy-authorization") == AUTH


async def test_forwards_chunked_bodies(echo: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"y" * 10_000

    async with ProxyServer() as proxy, aiohttp.ClientSession() as s, s.post(
        f"{echo}/up", data=chunks(), proxy=proxy.url
    ) as resp:
        got = await resp.json()
    assert got["body_len"] == 50_000 and got["headers"]["transfer-encoding"] == "chunked"


async def test_missing_or_wrong_credentials_get_407(echo: str) -> None:
    async with ProxyServer(proxy_authorization=AUTH) as proxy, aiohttp.ClientSession() as s:
        for proxy_url in [proxy.url, with_creds(proxy.url, "user:nope")]:
            async with s.get(f"{echo}/x", proxy=proxy_url) as resp:
                assert resp.status == 407
                assert resp.headers["Proxy-Authenticate"].startswith("Basic")
    assert [r.status for r in proxy.requests] == [407, 407]


async def _raw(proxy: ProxyServer, data: bytes) -> tuple[asyncio.StreamReader,
                                                          asyncio.StreamWriter]:
    host, port = proxy.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    return reader, writer


async def test_connect_tunnels_any_traffic_to_the_fake(clock: ManualClock) -> None:
    async with FakeViggle(clock=clock) as fake, ProxyServer(proxy_authorization=AUTH) as proxy:
        authority = fake.base_url.removeprefix("http://")
        reader, writer = await _raw(
            proxy,
            f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
            f"Proxy-Authorization: {AUTH}\r\n\r\n".encode(),
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        # Inside the tunnel: plain HTTP to the fake, which never sees the proxy's headers.
        writer.write(
            f"GET /api/credits HTTP/1.1\r\nHost: {authority}\r\n"
            f"Authorization: Bearer {fake.api_key}\r\nConnection: close\r\n\r\n".encode()
        )
        answer = await reader.read()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200") and b'"balance": 10000' in answer
    assert [(r.method, r.target, r.status) for r in proxy.requests] == [
        ("CONNECT", authority, 200)
    ]
    # The API key went through the tunnel, never in a header the proxy could read.
    assert all("Bearer" not in v for r in proxy.requests for _, v in r.headers)


async def test_client_session_reaches_the_fake_through_the_proxy(
    api: Api, fake: FakeViggle
) -> None:
    async with ProxyServer() as proxy, aiohttp.ClientSession() as s, s.get(
        f"{fake.base_url}/api/credits", proxy=proxy.url, headers=api.headers(fake.api_key)
    ) as resp:
        assert resp.status == 200 and (await resp.json())["balance"] == 10_000
    assert proxy.requests[0].target == f"{fake.base_url}/api/credits"


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET https://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n\r\n", 502),
    ],
)
async def test_refusals(request_head: bytes, status: int, closed_port: int) -> None:
    async with ProxyServer() as proxy:
        head = request_head.replace(b":1 ", f":{closed_port} ".encode()).replace(
            b":1/", f":{closed_port}/".encode())
        reader, writer = await _raw(proxy, head)
        answer = await reader.read()
        writer.close()
    assert answer.startswith(f"HTTP/1.1 {status}".encode())
    assert proxy.requests[0].status == status
