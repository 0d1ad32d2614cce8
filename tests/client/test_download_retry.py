"""A paid output survives CDN hiccups: retries with backoff, fresh signed URLs, resumed
bodies, always verified and written atomically (issue 11.4). Each case runs against a tiny
loopback CDN (aiohttp.web on 127.0.0.1) that scripts its answers and records what arrived."""

from __future__ import annotations

import hashlib
import random
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
from aiohttp import web
from loophelp import names, serve

from viggle_async import DownloadError, RetryPolicy, ViggleClient

BODY = random.Random(7).randbytes(3 * 2**20 + 4321)  # several batches, odd tail
ETAG = '"v1"'
FAST = RetryPolicy(max_attempts=6, base=0.001, cap=0.005)  # real sleeps, but tiny


@attrs.define
class Hit:
    raw_path: str  # path and query exactly as they arrived
    headers: dict[str, str]
    status: int = 0


class CDN:
    """Answers from ``plan`` (one step per request, then "ok"):
    "ok"; an int status; "drop" (send half, then cut the connection)."""

    def __init__(self, body: bytes = BODY) -> None:
        self.body = body
        self.etag: str | None = ETAG
        self.ranges = True  # honour Range (with a matching If-Range)
        self.plan: deque[str | int] = deque()
        self.hits: list[Hit] = []
        self.sent = 0  # body bytes written, over every request
        self.valid_sig: str | None = None  # when set, another ?sig= answers 403
        self.retry_after: str | None = None
        self.base_url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        hit = Hit(request.raw_path, dict(request.headers))
        self.hits.append(hit)
        step = self.plan.popleft() if self.plan else "ok"
        if self.valid_sig is not None and request.query.get("sig") != self.valid_sig:
            step = 403
        if isinstance(step, int):
            hit.status = step
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return web.Response(status=step, text="no", headers=headers)
        start, status = 0, 200
        headers = {"Content-Type": "video/mp4"}
        if self.etag:
            headers["ETag"] = self.etag
        wanted = request.headers.get("Range")
        if (wanted and self.ranges and self.etag
                and request.headers.get("If-Range") == self.etag):
            start, status = int(wanted.removeprefix("bytes=").rstrip("-")), 206
            headers["Content-Range"] = f"bytes {start}-{len(self.body) - 1}/{len(self.body)}"
        data = self.body[start:]
        hit.status = status
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(data)
        await resp.prepare(request)
        cut = len(data) // 2 if step == "drop" else len(data)
        for pos in range(0, cut, 256 * 1024):
            piece = data[pos:min(cut, pos + 256 * 1024)]
            await resp.write(piece)
            self.sent += len(piece)
        if step == "drop":
            assert request.transport is not None
            request.transport.close()  # the full length announced, half sent
            return resp
        await resp.write_eof()
        return resp

    def url(self, path: str = "/o/output.mp4", query: str = "") -> str:
        return f"{self.base_url}{path}{'?' + query if query else ''}"


@pytest.fixture
async def cdn() -> AsyncIterator[CDN]:
    server = CDN()
    async with serve(server.handle, "GET") as server.base_url:
        yield server


@pytest.fixture
async def client(cdn: CDN) -> AsyncIterator[ViggleClient]:
    async with ViggleClient("sk-secret-key", base_url=cdn.base_url, trust_env=False,
                            rand=random.Random(1).random) as c:
        yield c


def _same(path: Path, body: bytes = BODY) -> bool:
    return hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(body).digest()


def _no_auth(cdn: CDN) -> bool:
    return all(k.lower() not in ("authorization", "proxy-authorization") and
               "sk-secret-key" not in v for h in cdn.hits for k, v in h.headers.items())


@pytest.mark.parametrize("burst", [[503], [503, 503, 503], [502, 504], [429], [500, 408]])
async def test_a_burst_of_server_errors_then_the_file(client: ViggleClient, cdn: CDN,
                                                      tmp_path: Path, burst: list[int]) -> None:
    cdn.plan.extend(burst)
    dest = await client.download(cdn.url(), tmp_path / "out.mp4", retry=FAST)
    assert _same(dest)
    assert [h.status for h in cdn.hits] == [*burst, 200]
    assert names(tmp_path) == ["out.mp4"] and _no_auth(cdn)


async def test_retry_after_is_honoured(cdn: CDN, tmp_path: Path) -> None:
    from viggle_async.testing import ManualClock

    clock = ManualClock()
    cdn.plan.extend([503, 429])
    cdn.retry_after = "7"
    slept: list[float] = []
    async with (ViggleClient("k", base_url=cdn.base_url, trust_env=False, clock=clock,
                             on_retry=lambda e: slept.append(e.delay)) as client,
                clock.autojump()):
        await client.download(cdn.url(), tmp_path / "out.mp4", retry=FAST)
    assert slept == [7.0, 7.0]  # the server's word, not the tiny jittered backoff
    assert clock.now() >= 14.0


async def test_not_found_for_a_moment_after_completion_then_ok(
        client: ViggleClient, cdn: CDN, tmp_path: Path) -> None:
    cdn.plan.extend([404, 404])
    dest = await client.download(cdn.url(), tmp_path / "out.mp4", retry=FAST)
    assert _same(dest) and [h.status for h in cdn.hits] == [404, 404, 200]


async def test_an_expired_signature_is_refreshed_and_the_download_goes_on(
        client: ViggleClient, cdn: CDN, tmp_path: Path) -> None:
    cdn.valid_sig = "new"
    calls = 0

    async def refresh() -> str:
        nonlocal calls
        calls += 1
        return cdn.url(query="sig=new")

    dest = await client.download(cdn.url(query="sig=old"), tmp_path / "out.mp4",
                                 retry=FAST, refresh=refresh)
    assert _same(dest) and calls == 1
    assert [(h.raw_path, h.status) for h in cdn.hits] == [
        ("/o/output.mp4?sig=old", 403), ("/o/output.mp4?sig=new", 200)]


@pytest.mark.parametrize("status", [403, 410])
async def test_an_expired_url_without_refresh_fails_at_once_with_a_hint(
        client: ViggleClient, cdn: CDN, tmp_path: Path, status: int) -> None:
    cdn.plan.append(status)
    with pytest.raises(DownloadError, match=f"HTTP {status}") as info:
        await client.download(cdn.url(query="sig=SECRET"), tmp_path / "out.mp4",
                              retry=FAST, job_id="job_42")
    text = str(info.value)
    assert "still on the server" in text and "viggle-async download job_42" in text
    assert "SECRET" not in text and len(cdn.hits) == 1
    assert names(tmp_path) == []


async def test_giving_up_leaves_no_file_and_says_how_to_fetch_it_again(
        client: ViggleClient, cdn: CDN, tmp_path: Path) -> None:
    cdn.plan.extend([503] * 10)
    with pytest.raises(DownloadError, match="after 3 attempts") as info:
        await client.download(cdn.url(), tmp_path / "out.mp4",
                              retry=RetryPolicy(max_attempts=3, base=0.001, cap=0.001))
    assert "still on the server" in str(info.value)
    assert names(tmp_path) == [] and len(cdn.hits) == 3


async def test_a_dropped_body_resumes_with_range_and_if_range(client: ViggleClient, cdn: CDN,
                                                               tmp_path: Path) -> None:
    cdn.plan.append("drop")
    dest = await client.download(cdn.url(), tmp_path / "out.mp4", retry=FAST)
    assert _same(dest)
    first, second = cdn.hits
    assert "Range" not in first.headers and first.status == 200
    offset = int(second.headers["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < offset <= len(BODY) // 2 and second.headers["If-Range"] == ETAG
    assert second.status == 206
    assert cdn.sent < 2 * len(BODY)  # the first half was not fetched twice
    assert names(tmp_path) == ["out.mp4"] and _no_auth(cdn)


async def test_resumes_several_times_in_a_row(client: ViggleClient, cdn: CDN,
                                              tmp_path: Path) -> None:
    cdn.plan.extend(["drop"] * 7)  # more drops than attempts: each one moved forward
    dest = await client.download(cdn.url(), tmp_path / "out.mp4",
                                 retry=RetryPolicy(max_attempts=3, base=0.001, cap=0.001))
    assert _same(dest) and [h.status for h in cdn.hits] == [200] + [206] * 7
    assert cdn.sent < 2 * len(BODY)


async def test_a_cdn_without_range_support_restarts_from_zero(client: ViggleClient, cdn: CDN,
                                                              tmp_path: Path) -> None:
    cdn.ranges = False
    cdn.plan.append("drop")
    dest = await client.download(cdn.url(), tmp_path / "out.mp4", retry=FAST)
    assert _same(dest) and [h.status for h in cdn.hits] == [200, 200]


async def test_no_validator_means_no_range_request(client: ViggleClient, cdn: CDN,
                                                   tmp_path: Path) -> None:
    # Without an ETag or Last-Modified nothing proves the second answer is the same file.
    cdn.etag = None
    cdn.plan.append("drop")
    dest = await client.download(cdn.url(), tmp_path / "out.mp4", retry=FAST)
    assert _same(dest) and "Range" not in cdn.hits[1].headers


async def test_a_refreshed_url_naming_another_object_restarts_instead_of_splicing(
        client: ViggleClient, cdn: CDN, tmp_path: Path) -> None:
    other = random.Random(8).randbytes(len(BODY))

    async def refresh() -> str:
        cdn.body, cdn.etag = other, '"v2"'  # the re-signed URL names a new object
        return cdn.url(query="sig=2")

    cdn.plan.extend(["drop", 404])
    dest = await client.download(cdn.url(query="sig=1"), tmp_path / "out.mp4", retry=FAST,
                                 refresh=refresh)
    last = cdn.hits[-1]
    assert last.headers["If-Range"] == ETAG and last.status == 200  # mismatch: whole file
    assert _same(dest, other)


async def test_a_range_answer_that_does_not_continue_the_file_is_not_spliced(
        client: ViggleClient, tmp_path: Path) -> None:
    """A CDN that answers 206 from the wrong offset: the download restarts from zero."""
    hits: list[dict[str, str]] = []

    async def serve(request: web.Request) -> web.StreamResponse:
        hits.append(dict(request.headers))
        headers = {"ETag": ETAG}
        if len(hits) == 2:  # the resume: a range starting at 0, whatever was asked
            headers["Content-Range"] = f"bytes 0-{len(BODY) - 1}/{len(BODY)}"
            return web.Response(status=206, body=BODY, headers=headers)
        resp = web.StreamResponse(headers=headers)
        resp.content_length = len(BODY)
        await resp.prepare(request)
        await resp.write(BODY if len(hits) > 2 else BODY[:1000])
        if len(hits) <= 2:
            assert request.transport is not None
            request.transport.close()
        return resp

    async with _app(serve) as base:
        dest = await client.download(f"{base}/o.mp4", tmp_path / "o.mp4", retry=FAST)
    assert _same(dest) and "Range" in hits[1] and "Range" not in hits[2]


async def test_download_render_refreshes_its_url_from_the_status(tmp_path: Path) -> None:
    """The job's status is read for the URL, and again for a fresh one after a 403."""
    signature = {"n": 1}
    status_reads = 0

    async def status(request: web.Request) -> web.Response:
        nonlocal status_reads
        status_reads += 1
        signature["n"] += 1  # every status read signs a new URL, the old one expires
        base = f"http://{request.host}"
        return web.json_response({
            "job_id": request.match_info["job_id"], "status": "complete",
            "cdn_url": f"{base}/cdn/out.mp4?sig={signature['n']}",
            "mask_cdn_url": f"{base}/cdn/mask.mp4?sig={signature['n']}"})

    served: list[str] = []

    async def cdn_file(request: web.Request) -> web.Response:
        served.append(request.raw_path)
        if len(served) == 1 or request.query["sig"] != str(signature["n"]):
            return web.Response(status=403)  # expired by the time it is fetched
        return web.Response(body=BODY if "out" in request.path else BODY[:999])

    app = web.Application()
    app.router.add_get("/api/render/{job_id}", status)
    app.router.add_get("/cdn/{name}", cdn_file)
    async with _app(None, app) as base, ViggleClient(
            "k", base_url=base, trust_env=False, rand=random.Random(3).random) as client:
        dest = await client.download_render("job_7", tmp_path / "r.mp4", retry=FAST)
        mask = await client.download_render("job_7", tmp_path / "m.mp4", mask=True,
                                            retry=FAST)
    assert _same(dest) and _same(mask, BODY[:999])
    assert status_reads == 3  # URL, refresh after the 403, then the mask's URL
    assert served[:2] == ["/cdn/out.mp4?sig=2", "/cdn/out.mp4?sig=3"]


@pytest.mark.parametrize(("body", "field"), [
    ({"job_id": "j", "status": "processing"}, "job_id"),
    ({"job_id": "j", "status": "complete", "cdn_url": "http://127.0.0.1:9/o.mp4"}, "mask"),
])
async def test_download_render_without_that_output_is_a_local_error(
        tmp_path: Path, body: dict[str, str], field: str) -> None:
    from viggle_async import InvalidInputError

    async def status(request: web.Request) -> web.Response:
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/api/render/{job_id}", status)
    async with _app(None, app) as base, ViggleClient("k", base_url=base,
                                                     trust_env=False) as client:
        with pytest.raises(InvalidInputError) as info:
            await client.download_render("j", tmp_path / "r.mp4", mask=True)
    assert info.value.field == field and names(tmp_path) == []


class _app:  # used like a function: ``async with _app(handler) as base_url``
    def __init__(self, handler: object, app: web.Application | None = None) -> None:
        if app is None:
            app = web.Application()
            app.router.add_route("GET", "/{tail:.*}", handler)  # type: ignore[arg-type]
        self._runner = web.AppRunner(app, access_log=None)

    async def __aenter__(self) -> str:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()


async def test_download_render_checks_dest_before_reading_the_status(tmp_path: Path) -> None:
    from viggle_async import InvalidInputError

    reads = 0

    async def status(request: web.Request) -> web.Response:
        nonlocal reads
        reads += 1
        return web.json_response({"job_id": "j", "status": "processing"})

    app = web.Application()
    app.router.add_get("/api/render/{job_id}", status)
    async with _app(None, app) as base, ViggleClient("k", base_url=base,
                                                     trust_env=False) as client:
        with pytest.raises(InvalidInputError) as info:
            await client.download_render("j", tmp_path / "missing" / "r.mp4")
    assert info.value.field == "dest" and reads == 0
