"""Issue 11.8: ``iterate()`` walks every page until ``total`` (or an empty page when there is
no total), whatever page size the server caps at, and never loops on a server that
ignores ``offset``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from viggle_async import InvalidInputError, ViggleClient
from viggle_async._protocol import Request, Response
from viggle_async.testing import MockTransport


def _server(count: int, *, cap: int, key: str, with_total: bool = True,
            ignore_offset: bool = False, claimed_total: int | None = None) -> MockTransport:
    items = [{"id": f"{key[:1]}{i}", "status": "ready"} for i in range(count)]

    def handler(request: Request) -> Response:
        params = dict(request.params)
        limit, offset = int(params["limit"]), int(params["offset"])
        start = 0 if ignore_offset else offset
        page = items[start:start + min(limit, cap)]
        body: dict[str, Any] = {key: page}
        if with_total:
            body["total"] = count if claimed_total is None else claimed_total
        return Response(200, {}, json.dumps(body).encode())

    return MockTransport(handler)


def _client(transport: MockTransport) -> ViggleClient:
    return ViggleClient("sk", base_url="https://api.test", transport=transport)


@pytest.mark.parametrize(("count", "cap", "page_size"), [
    (45, 20, 100), (45, 20, 20), (100, 7, 50), (3, 100, 1), (0, 20, 100), (41, 20, 20)])
@pytest.mark.parametrize("kind", ["characters", "scenes"])
async def test_capped_pages_do_not_stop_the_listing(count: int, cap: int, page_size: int,
                                                    kind: str) -> None:
    transport = _server(count, cap=cap, key=kind)
    async with _client(transport) as client:
        resource = client.characters if kind == "characters" else client.scenes
        ids = [item.id async for item in resource.iterate(page_size=page_size)]
    assert len(ids) == count == len(set(ids))
    offsets = [dict(r.params)["offset"] for r in transport.requests]
    assert offsets == sorted(set(offsets), key=int)  # always moving forward


@pytest.mark.parametrize("count", [0, 1, 45])
async def test_without_total_an_empty_page_ends_it(count: int) -> None:
    transport = _server(count, cap=20, key="characters", with_total=False)
    async with _client(transport) as client:
        ids = [c.id async for c in client.characters.iterate()]
    assert len(ids) == count
    assert dict(transport.requests[-1].params)["offset"] == str(count)  # the empty page


@pytest.mark.parametrize("with_total", [True, False])
async def test_a_server_ignoring_offset_does_not_loop_for_ever(with_total: bool) -> None:
    transport = _server(45, cap=20, key="scenes", with_total=with_total, ignore_offset=True)
    async with _client(transport) as client:
        ids = [s.id async for s in client.scenes.iterate()]
    assert ids == [f"s{i}" for i in range(20)]  # each once
    assert len(transport.requests) == 2


async def test_a_total_larger_than_what_exists_ends_at_the_empty_page() -> None:
    transport = _server(30, cap=20, key="characters", claimed_total=500)
    async with _client(transport) as client:
        ids = [c.id async for c in client.characters.iterate()]
    assert len(ids) == 30 and len(transport.requests) == 3


@pytest.mark.parametrize("page_size", [0, 101, -1])
async def test_bad_page_size_fails_before_sending(page_size: int) -> None:
    transport = _server(5, cap=20, key="characters")
    async with _client(transport) as client:
        with pytest.raises(InvalidInputError, match="limit"):
            [c async for c in client.characters.iterate(page_size=page_size)]
    assert transport.requests == []
