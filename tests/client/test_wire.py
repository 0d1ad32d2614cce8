"""Wire-exact requests and error answers through aioresponses (needs aiohttp < 3.14).

aioresponses never builds request bodies, so multipart contents are checked against the
recording server in ``test_requests.py`` and the fake server; here: methods, URLs, query,
JSON bodies, headers (the key only where it belongs, docs/api/conventions.md#authentication,
docs/api/client-rules.md#downloads) and error mapping.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

from viggle_async import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FastModeUnavailableError,
    InsufficientCreditsError,
    NotFoundError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    ViggleClient,
)
from viggle_async.testing import ManualClock, make_mp4, make_png

pytestmark = pytest.mark.aioresponses

# Loopback, so nothing could leave this machine even if the mock were not active.
BASE = "http://127.0.0.1:9"
KEY = "sk-wire-test-key"
STATUS = {"job_id": "job_1", "status": "queued"}
CHAR = {"id": "c1", "status": "pending"}
SCENE = {"id": "s1", "status": "pending"}


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with aioresponses() as m:
        yield m


def _calls(m: aioresponses, method: str, url: str) -> list[Any]:
    return list(m.requests.get((method, URL(url)), []))


Call = Callable[[ViggleClient], Awaitable[Any]]

ENDPOINTS: list[tuple[str, Call, str, str, dict[str, Any], bool]] = [
    ("render status", lambda c: c.renders.get("job_1"), "GET", "/api/render/job_1", STATUS,
     False),
    ("cancel", lambda c: c.renders.cancel("job_1"), "DELETE", "/api/render/job_1",
     {"job_id": "job_1", "status": "cancelled"}, True),
    ("get character", lambda c: c.characters.get("c1"), "GET", "/api/characters/c1", CHAR,
     True),
    ("delete character", lambda c: c.characters.delete("c1"), "DELETE", "/api/characters/c1",
     {"success": True}, True),
    ("list characters", lambda c: c.characters.list(limit=7, offset=14), "GET",
     "/api/characters?limit=7&offset=14", {"characters": [CHAR], "total": 15}, True),
    ("get scene", lambda c: c.scenes.get("s1"), "GET", "/api/scenes/s1", SCENE, True),
    ("delete scene", lambda c: c.scenes.delete("s1"), "DELETE", "/api/scenes/s1",
     {"success": True}, True),
    ("list scenes", lambda c: c.scenes.list(limit=3), "GET", "/api/scenes?limit=3&offset=0",
     {"scenes": [SCENE], "total": 1}, True),
    ("credits", lambda c: c.get_credits(), "GET", "/api/credits", {"balance": 5}, True),
    ("id with slash is escaped", lambda c: c.renders.get("a/b"), "GET", "/api/render/a%2Fb",
     STATUS, False),
]


@pytest.mark.parametrize(("call", "method", "path", "reply", "auth"),
                         [e[1:] for e in ENDPOINTS], ids=[e[0] for e in ENDPOINTS])
async def test_endpoint_request_on_the_wire(mocked: aioresponses, call: Call, method: str,
                                            path: str, reply: dict[str, Any],
                                            auth: bool) -> None:
    mocked.add(BASE + path, method, payload=reply)
    async with ViggleClient(KEY, base_url=BASE) as client:
        await call(client)
    (sent,) = _calls(mocked, method, BASE + path)
    headers = sent.kwargs["headers"]
    assert headers["Accept"] == "application/json"
    if auth:
        assert headers["Authorization"] == f"Bearer {KEY}"
    else:
        # docs/api/renders.md#render-status: the status endpoint needs no key; we do not send one.
        assert "Authorization" not in headers
    assert sent.kwargs["json"] is None and sent.kwargs["data"] is None


async def test_import_sends_documented_json(mocked: aioresponses) -> None:
    url = BASE + "/api/scenes/import"
    mocked.post(url, payload={"id": "s1", "status": "pending",
                              "segments": [{"uuid": "person_1", "type": "human"}]})
    async with ViggleClient(KEY, base_url=BASE) as client:
        scene = await client.scenes.import_template("tmpl-1", name="Group Dance")
    (sent,) = _calls(mocked, "POST", url)
    # docs/api/assets.md#import-template: JSON with template_id (not the third-party template_uuid).
    assert sent.kwargs["json"] == {"template_id": "tmpl-1", "name": "Group Dance"}
    assert sent.kwargs["headers"]["Authorization"] == f"Bearer {KEY}"
    assert scene.segments[0].uuid == "person_1" and scene.name == "Group Dance"


async def test_creates_are_multipart_with_the_key(mocked: aioresponses) -> None:
    url = BASE + "/api/render"
    mocked.post(url, payload={"job_id": "job_1", "status": "queued"})
    async with ViggleClient(KEY, base_url=BASE) as client:
        job = await client.renders.create(ref_image=make_png(), driving_video=make_mp4(2.0),
                                          fast=True)
    assert job.job_id == "job_1"
    (sent,) = _calls(mocked, "POST", url)
    assert sent.kwargs["headers"]["Authorization"] == f"Bearer {KEY}"
    assert sent.kwargs["data"].content_type.startswith("multipart/form-data; boundary=")
    assert sent.kwargs["json"] is None


async def test_download_never_sends_the_key(mocked: aioresponses, tmp_path: Path) -> None:
    cdn = "http://localhost:9/outputs/job_1/output.mp4?sig=abc"
    mocked.get(cdn, body=b"v" * 1000, headers={"Content-Length": "1000"})
    async with ViggleClient(KEY, base_url=BASE) as client:
        await client.download(cdn, tmp_path / "o.mp4")
    (sent,) = _calls(mocked, "GET", cdn)
    assert "Authorization" not in (sent.kwargs.get("headers") or {})
    assert (tmp_path / "o.mp4").read_bytes() == b"v" * 1000


ERRORS: list[tuple[int, dict[str, Any], type[APIError], str | None]] = [
    (400, {"detail": {"error_code": "CS-UORC01-001", "message": "Fast mode unavailable",
                      "action": "Retry with fast=false"}}, FastModeUnavailableError,
     "CS-UORC01-001"),
    (400, {"detail": {"error_code": "CS-ORIV-009", "message": "Scene not found"}},
     BadRequestError, "CS-ORIV-009"),
    (401, {"detail": "API key required. Use Authorization: Bearer sk-xxx"},
     AuthenticationError, None),
    (402, {"detail": {"error_code": "CS-UORC01-008", "message": "Insufficient credits"}},
     InsufficientCreditsError, "CS-UORC01-008"),
    (404, {"detail": "Job job_1 not found"}, NotFoundError, None),
    (409, {"detail": {"error_code": "CS-UORC01-002", "message": "already complete"}},
     ConflictError, "CS-UORC01-002"),
    (422, {"detail": [{"loc": ["body", "name"], "msg": "field required"}]}, BadRequestError,
     None),
    (429, {"detail": "Rate limit exceeded"}, RateLimitError, None),
    (503, {"error_code": "CS-X", "message": "down"}, ServerError, "CS-X"),
]


@pytest.mark.parametrize(("status", "body", "exc", "code"), ERRORS,
                         ids=[f"{e[0]}-{e[2].__name__}" for e in ERRORS])
async def test_error_answers_raise_their_exception(mocked: aioresponses, status: int,
                                                   body: dict[str, Any], exc: type[APIError],
                                                   code: str | None) -> None:
    url = BASE + "/api/render"
    mocked.post(url, status=status, payload=body, headers={"X-Request-Id": "req-9"})
    async with ViggleClient(KEY, base_url=BASE, retry=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(exc) as info:
            await client.renders.create(ref_image_url="https://e.com/a.png",
                                        driving_video_url="https://e.com/b.mp4")
    assert type(info.value) is exc
    assert info.value.status == status and info.value.error_code == code
    assert info.value.request_id == "req-9"
    assert KEY not in str(info.value) and KEY not in repr(info.value)


async def test_get_retried_through_503(mocked: aioresponses) -> None:
    url = BASE + "/api/render/job_1"
    mocked.get(url, status=503, payload={"detail": "busy"})
    mocked.get(url, status=503, payload={"detail": "busy"})
    mocked.get(url, payload={"job_id": "job_1", "status": "processing"})
    clock = ManualClock()
    async with ViggleClient(KEY, base_url=BASE, clock=clock) as client, clock.autojump():
        status = await client.renders.get("job_1")
    assert status.status == "processing"
    assert len(_calls(mocked, "GET", url)) == 3


async def test_post_not_retried_on_500(mocked: aioresponses) -> None:
    url = BASE + "/api/characters/preprocess"
    mocked.post(url, status=500, payload={"detail": "oops"})
    mocked.post(url, payload={"character_id": "c1", "status": "pending"})
    async with ViggleClient(KEY, base_url=BASE) as client:
        with pytest.raises(ServerError):
            await client.characters.create(name="A", image=make_png())
    assert len(_calls(mocked, "POST", url)) == 1
