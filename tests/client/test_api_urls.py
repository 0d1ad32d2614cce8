"""Request targets exactly as they arrive at a loopback server (``raw_path``): the status
poll's fast URL path (an already-plain path set on the parsed origin) and the general one
(yarl's normalisation) must send the same bytes, for every kind of id
(docs/api/conventions.md#ids: ids are opaque, so each goes out percent-encoded as one
segment), with or without a path prefix in the base URL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

import pytest
from aiohttp import web
from loophelp import serve
from yarl import URL

from viggle_async import InvalidInputError, ViggleClient
from viggle_async._endpoints import get_render
from viggle_async._transport import AiohttpTransport

STATUS = {"job_id": "j", "status": "queued"}

# Plain ids (taken as they are) and ids that need quoting. (The ids "." and ".." are dot
# segments, refused before sending: see the test below.)
IDS = ["job_1", "a~b.c-d_e", "...", "0f8c1a2e-1234-4bcd-9def-0123456789ab",
       "a b", "a/b", "é", "x%y", "50%", "a?b", "a#b", "a+b=c", ".x", "x."]


@pytest.mark.parametrize("prefix", ["", "/v1"])
async def test_status_poll_targets_are_exact_for_every_kind_of_id(prefix: str) -> None:
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.json_response({**STATUS, "job_id": request.match_info["tail"]})

    async with (serve(handle, "GET") as base,
                ViggleClient("sk-urls", base_url=base + prefix) as client):
        for job_id in IDS:
            await client.renders.get(job_id)
        # After the odd ones, a plain id still takes the fast path correctly.
        await client.renders.get("job_2")
    # Exactly what yarl's normalisation of the whole URL sends (it writes "%3D" as "=").
    assert seen == [URL(f"{base}{prefix}/api/render/{quote(i, safe='')}").raw_path
                    for i in [*IDS, "job_2"]]
    assert seen[0] == f"{prefix}/api/render/job_1"
    assert seen[IDS.index("a/b")] == f"{prefix}/api/render/a%2Fb"
    assert seen[IDS.index("a+b=c")] == f"{prefix}/api/render/a%2Bb=c"


async def test_each_origin_gets_its_own_requests() -> None:
    # The origin parsed first is cached; a URL to another origin (here another port, whose
    # text may even start with the first one's) must not be joined onto it.
    hits: dict[str, list[str]] = {"a": [], "b": []}

    def recorder(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            hits[name].append(request.raw_path)
            return web.json_response(STATUS)
        return handle

    transport = AiohttpTransport(trust_env=False)
    try:
        async with serve(recorder("a"), "GET") as a, serve(recorder("b"), "GET") as b:
            for url in (f"{a}/api/render/j", f"{b}/api/render/k", f"{a}/api/render/l"):
                response = await transport.send(get_render(url[-1]), url=url, headers={})
                assert response.status == 200
    finally:
        await transport.aclose()
    assert hits == {"a": ["/api/render/j", "/api/render/l"], "b": ["/api/render/k"]}


@pytest.mark.parametrize("ident", [".", ".."])
async def test_dot_segment_ids_are_refused_before_anything_is_sent(ident: str) -> None:
    # URL normalisation would send /api/render/.. as /api/ (another resource; for a
    # DELETE, a request nobody meant): each call that puts an id in the path refuses it.
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.json_response(STATUS)

    async with (serve(handle, "GET") as base,
                ViggleClient("sk-urls", base_url=base) as client):
        calls = {"job_id": [client.renders.get, client.renders.cancel],
                 "character_id": [client.characters.get, client.characters.delete],
                 "scene_id": [client.scenes.get, client.scenes.delete]}
        for field, methods in calls.items():
            for method in methods:
                with pytest.raises(InvalidInputError) as info:
                    await method(ident)
                assert info.value.field == field
                assert "relative path segment" in str(info.value)
    assert seen == []
