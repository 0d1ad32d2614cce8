"""Answers that lie about what happened: committed creates answered like a failed gateway,
status polls refused with Retry-After, 429 and 402 on creates."""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp
import pytest
from fakeapi import Api, ManualClock

from viggle_async.testing import FakeViggle, Faults, RateLimit, make_mp4, make_png

GATEWAY_STATUSES = (500, 502, 503, 504)


def _render_form() -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("ref_image", make_png(), filename="me.png", content_type="image/png")
    form.add_field(
        "driving_video", io.BytesIO(make_mp4(3.0)), filename="d.mp4", content_type="video/mp4"
    )
    return form


async def _raw_post(
    fake: FakeViggle, path: str, data: Any = None, json_body: Any = None
) -> tuple[int, str, bytes]:
    """(status, content type, raw body): no JSON decoding, a gateway's page is not JSON."""
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(fake.base_url + path, data=data, json=json_body, headers=headers) as resp,
    ):
        return resp.status, resp.content_type, await resp.read()


@pytest.mark.parametrize("status", GATEWAY_STATUSES)
@pytest.mark.parametrize("shape", ["html", "empty", "unparsable"])
async def test_committed_render_answered_with_a_gateway_failure(
    api: Api, fake: FakeViggle, shape: Any, status: int
) -> None:
    fake.faults.create_fail_after_commit = 1
    fake.faults.create_fail_shape = shape
    fake.faults.create_fail_status = status
    code, ctype, body = await _raw_post(fake, "/api/render", _render_form())
    assert code == status
    if shape == "html":
        assert ctype == "text/html" and body.startswith(b"<html>") and str(status).encode() in body
    elif shape == "empty":
        assert body == b""
    else:
        assert ctype == "application/json"
        with pytest.raises(ValueError):
            json.loads(body)
    # The job really exists and was charged: a client that creates again pays twice.
    record = fake.creates[-1]
    assert (record.status, record.answered_status, record.answer_fault) == (200, status, shape)
    job_id = record.result_id
    assert job_id is not None
    assert (await api.status(job_id))["status"] == "queued"
    assert [(e.reason, e.ref, e.delta) for e in fake.balance_history()][-1] == (
        "render",
        job_id,
        -3,
    )
    assert fake.observations.failed_after_commit == 1
    # Counts down: the next create is answered normally.
    code, created = await api.on_demand(3.0)
    assert code == 200 and created["job_id"] != job_id


async def test_no_id_answers_2xx_without_the_id_on_every_create_kind(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    scene_id = await api.ready_scene(clock)
    fake.faults.create_fail_after_commit = 4
    fake.faults.create_fail_shape = "no_id"
    fake.faults.create_fail_status = 502  # not a 2xx: "no_id" answers 200
    code, render = await api.on_demand(3.0)
    assert code == 200 and "job_id" not in render and render["status"] == "queued"
    code, char = await api.post(
        "/api/characters/preprocess", {"name": "A"}, {"image": ("a.png", make_png(), "image/png")}
    )
    assert code == 200 and "character_id" not in char and char["status"] == "pending"
    code, scene = await api.post(
        "/api/scenes/preprocess",
        {"name": "S"},
        {"video": ("s.mp4", make_mp4(2.0), "video/mp4")},
    )
    assert code == 200 and "scene_id" not in scene
    code, imported = await api.call(
        "POST", "/api/scenes/import", json={"template_id": "tmpl-duo-dance"}
    )
    assert code == 200 and "id" not in imported and imported["segments"]
    records = fake.creates[-4:]
    assert [(r.kind, r.answered_status, r.answer_fault) for r in records] == [
        ("render", 200, "no_id"),
        ("character", 200, "no_id"),
        ("scene", 200, "no_id"),
        ("import", 200, "no_id"),
    ]
    assert all(r.result_id for r in records)
    assert scene_id not in {r.result_id for r in records}
    # All four exist; the render and the character were charged.
    charged = {e.ref for e in fake.balance_history() if e.reason in ("render", "character")}
    assert {records[0].result_id, records[1].result_id} <= charged


async def test_no_id_keeps_a_2xx_status_and_the_data_wrapper(api: Api, fake: FakeViggle) -> None:
    fake.settings.wrap_data = True
    fake.faults.create_fail_after_commit = 1
    fake.faults.create_fail_shape = "no_id"
    fake.faults.create_fail_status = 202
    code, body = await api.on_demand(3.0)
    assert code == 202 and "job_id" not in body["data"] and body["data"]["status"] == "queued"


async def test_fail_after_commit_only_on_selected_routes_and_not_on_refusals(
    api: Api, fake: FakeViggle
) -> None:
    fake.faults.create_fail_after_commit = 1
    fake.faults.create_fail_routes = frozenset({"POST /api/render"})
    code, _ = await api.post(
        "/api/characters/preprocess", {"name": "A"}, {"image": ("a.png", make_png(), "image/png")}
    )
    assert code == 200  # not a selected route
    code, body = await api.render({"ref_image_url": "https://x.test/a.png"})
    assert code == 400 and api.code(body) == "CS-ORIV-002"  # a documented refusal stays one
    assert fake.faults.create_fail_after_commit == 1
    code, _, _ = await _raw_post(fake, "/api/render", _render_form())
    assert code == 502 and fake.faults.create_fail_after_commit == 0


async def _commit_failures(clock: ManualClock, seed: int) -> list[bool]:
    faults = Faults(create_fail_after_commit_rate=0.5, create_fail_shape="empty", seed=seed)
    async with FakeViggle(clock=clock, faults=faults) as fake:
        for _ in range(20):
            await _raw_post(fake, "/api/render", _render_form())
        assert len(fake.store.jobs) == 20  # every one exists, whatever was answered
        return [c.answer_fault is not None for c in fake.creates]


async def test_fail_after_commit_rate_is_seeded(clock: ManualClock) -> None:
    first = await _commit_failures(clock, 7)
    assert first == await _commit_failures(clock, 7)
    assert 0 < sum(first) < 20


@pytest.mark.parametrize("retry_after", ["2", "Wed, 21 Oct 2026 07:28:00 GMT", None])
@pytest.mark.parametrize("status", [503, 502, 429])
async def test_status_errors_with_retry_after(
    api: Api, fake: FakeViggle, status: int, retry_after: str | None
) -> None:
    _, created = await api.on_demand(3.0)
    fake.faults.status_error_next = 2
    fake.faults.status_error_status = status
    fake.faults.status_retry_after = retry_after
    url = f"{fake.base_url}/api/render/{created['job_id']}"
    seen = []
    for _ in range(3):
        async with api.session.get(url) as resp:
            seen.append((resp.status, resp.headers.get("Retry-After")))
            body = await resp.json()
    assert seen == [(status, retry_after)] * 2 + [(200, None)]
    assert body["job_id"] == created["job_id"]
    assert fake.observations.status_errors == 2
    # Only the status route: credits are unaffected.
    fake.faults.status_error_next = 1
    assert (await api.call("GET", "/api/credits"))[0] == 200


async def test_429_on_creates_has_retry_after_and_makes_no_job(api: Api, fake: FakeViggle) -> None:
    fake.faults.rate_limit = RateLimit(rate=0.01, burst=1, routes=frozenset({"POST /api/render"}))
    assert (await api.on_demand(3.0))[0] == 200
    form = _render_form()
    async with api.session.post(
        fake.base_url + "/api/render", data=form, headers=api.headers(fake.api_key)
    ) as resp:
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
    assert len(fake.store.jobs) == 1
    assert fake.balance() == 10_000 - 3


async def test_402_on_creates_is_documented_and_makes_no_job(clock: ManualClock) -> None:
    async with FakeViggle(clock=clock, api_keys={"sk-poor": 2}) as fake, aiohttp.ClientSession(
    ) as session:
        api = Api(fake, session)
        code, body = await api.on_demand(3.0)
        assert code == 402 and api.code(body) == "CS-UORC01-008"
        assert fake.store.jobs == {} and fake.balance() == 2
