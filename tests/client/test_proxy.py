"""Proxies (issue 11.10): the standard variables are honoured by default, resolved once per
client, with ``NO_PROXY`` the only bypass (loopback is not exempt by itself); ``proxy=``
and ``trust_env=False`` override. Proxy credentials come only from the proxy URL: the API
key never goes in ``Proxy-Authorization``, and ``~/.netrc`` never adds anything. A tiny
loopback forward proxy records what it was asked (absolute-form requests and CONNECT)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import attrs
import loophelp
import pytest
import trustme
from aiohttp import web
from loophelp import Scripted

from viggle_async import ConfigurationError, ViggleClient

VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUEST_METHOD")
BODY = bytes(range(256)) * 300


@attrs.define
class Asked:
    method: str
    target: str  # exactly as requested: absolute form, or host:port for CONNECT
    proxy_authorization: str | None
    authorization: str | None


class ForwardProxy:
    def __init__(self) -> None:
        self.asked: list[Asked] = []
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        request_line, *lines = head.split("\r\n")
        method, target, version = request_line.split(" ")
        fields = {k.strip().lower(): v.strip() for k, _, v in
                  (line.partition(":") for line in lines if line)}
        self.asked.append(Asked(method, target, fields.get("proxy-authorization"),
                                fields.get("authorization")))
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            rest = target.partition("://")[2]
            netloc, slash, path = rest.partition("/")
            host, port = netloc.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            kept = [line for line in lines if line and not line.lower().startswith(
                ("proxy-", "connection:"))]
            up_writer.write(f"{method} {slash}{path} {version}\r\n".encode("latin-1")
                            + "".join(f"{line}\r\n" for line in kept).encode("latin-1")
                            + b"Connection: close\r\n\r\n")
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
async def proxy() -> AsyncIterator[ForwardProxy]:
    fwd = ForwardProxy()
    server = await asyncio.start_server(fwd.handle, "127.0.0.1", 0)
    fwd.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield fwd
    finally:
        server.close()


@pytest.fixture
async def cdn() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def serve(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(body=BODY, content_type="video/mp4")

    async with loophelp.serve(serve, "GET") as url:
        yield url, seen


CREDITS = (200, {"balance": 5})


@pytest.mark.parametrize("name", ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
async def test_the_proxy_variables_are_honoured_for_loopback_too(
        monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy, scripted: Scripted,
        name: str) -> None:
    monkeypatch.setenv(name, proxy.url)
    scripted.always(*CREDITS)
    async with ViggleClient("sk-secret", base_url=scripted.base_url) as client:
        await client.get_credits()
        await client.get_credits()
    # Plain http goes to the proxy in absolute form; the key goes to the API only.
    assert [(a.method, a.target) for a in proxy.asked] == [
        ("GET", f"{scripted.base_url}/api/credits")] * 2
    assert all(a.proxy_authorization is None for a in proxy.asked)
    assert [s.headers["Authorization"] for s in scripted.seen] == ["Bearer sk-secret"] * 2


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "*", ".0.0.1",
                                      "127.0.0.1:{port}"])
@pytest.mark.parametrize("name", ["NO_PROXY", "no_proxy"])
async def test_no_proxy_bypasses(monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy,
                                 scripted: Scripted, no_proxy: str, name: str) -> None:
    port = scripted.base_url.rsplit(":", 1)[1]
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv(name, no_proxy.format(port=port))
    scripted.always(*CREDITS)
    async with ViggleClient("k", base_url=scripted.base_url) as client:
        await client.get_credits()
    assert proxy.asked == [] and len(scripted.seen) == 1


async def test_no_proxy_for_another_host_does_not_bypass(
        monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy, scripted: Scripted) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "example.com,10.0.0.1")
    scripted.always(*CREDITS)
    async with ViggleClient("k", base_url=scripted.base_url) as client:
        await client.get_credits()
    assert len(proxy.asked) == 1


async def test_trust_env_false_ignores_the_variables(
        monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy, scripted: Scripted) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    scripted.always(*CREDITS)
    async with ViggleClient("k", base_url=scripted.base_url, trust_env=False) as client:
        await client.get_credits()
    assert proxy.asked == [] and len(scripted.seen) == 1


async def test_an_explicit_proxy_with_credentials_authenticates_only_to_the_proxy(
        proxy: ForwardProxy, scripted: Scripted,
        cdn: tuple[str, list[dict[str, str]]], tmp_path: Path) -> None:
    base, cdn_seen = cdn
    scripted.always(*CREDITS)
    with_user = proxy.url.replace("http://", "http://user:pa%40ss@")
    async with ViggleClient("sk-secret", base_url=scripted.base_url,
                            proxy=with_user) as client:
        await client.get_credits()
        signed = f"{base}/o/out.mp4?X-Amz-Credential=AKID%2F2026%2Fx&sig=a%3D%7E"
        await client.download(signed, tmp_path / "o.mp4")
    import base64

    basic = "Basic " + base64.b64encode(b"user:pa@ss").decode()
    assert [a.proxy_authorization for a in proxy.asked] == [basic, basic]
    assert proxy.asked[1].target == signed  # the signed URL, untouched, via the proxy too
    assert proxy.asked[1].authorization is None  # no API key towards the CDN
    assert "Authorization" not in cdn_seen[0]
    assert (tmp_path / "o.mp4").read_bytes() == BODY


async def test_netrc_never_adds_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                            cdn: tuple[str, list[dict[str, str]]]) -> None:
    base, seen = cdn
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    async with ViggleClient("k", base_url=base) as client:
        await client.download(f"{base}/o.mp4", tmp_path / "o.mp4")
    assert "Authorization" not in seen[0]


@pytest.mark.parametrize(("name", "value"), [("ALL_PROXY", "socks5://127.0.0.1:1080"),
                                             ("https_proxy", "ftp://proxy:21")])
def test_an_unusable_proxy_variable_is_a_configuration_error(
        monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match="trust_env=False"):
        ViggleClient("k")
    ViggleClient("k", trust_env=False)  # the way out the message names


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_cdn(ca: trustme.CA) -> AsyncIterator[str]:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="video/mp4")

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    async with loophelp.serve(serve, "GET", tls=server_ctx) as url:
        yield url


@pytest.fixture
def trusting(ca: trustme.CA) -> Iterator[ssl.SSLContext]:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    yield ctx


async def test_https_goes_through_connect(monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy,
                                          tls_cdn: str, trusting: ssl.SSLContext,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # not for https URLs
    connector = aiohttp.TCPConnector(ssl=trusting)
    async with (aiohttp.ClientSession(connector=connector) as session,
                ViggleClient("k", base_url=tls_cdn, session=session) as client):
        await client.download(f"{tls_cdn}/o.mp4?sig=x%2Fy", tmp_path / "o.mp4")
    host_port = tls_cdn.removeprefix("https://")
    assert [(a.method, a.target) for a in proxy.asked] == [("CONNECT", host_port)]
    assert proxy.asked[0].proxy_authorization is None
    assert (tmp_path / "o.mp4").read_bytes() == BODY
