"""Characters, scenes, template import and credits on the fake server (docs/api/assets.md,
docs/api/credits.md)."""

from __future__ import annotations

import pytest
from fakeapi import Api, ManualClock

from viggle_async.testing import FakeViggle, make_mp4, make_png, make_webm, make_webp

PNG = ("me.png", make_png(), "image/png")


async def test_character_lifecycle_and_cost(api: Api, clock: ManualClock, fake: FakeViggle) -> None:
    code, body = await api.post(
        "/api/characters/preprocess", {"name": "My Character"}, {"image": PNG}
    )
    assert code == 200
    assert set(body) == {"character_id", "job_id", "status", "enqueued_at"}
    assert body["status"] == "pending"
    assert fake.balance() == 10_000 - 1  # docs/api/credits.md#costs: a character costs one credit
    ident = body["character_id"]
    seen = []
    for _ in range(8):
        code, got = await api.call("GET", f"/api/characters/{ident}")
        assert code == 200
        seen.append(got["status"])
        clock.advance(1.0)
    assert seen == ["pending"] + ["processing"] * 4 + ["ready"] * 3
    assert got["id"] == ident and got["name"] == "My Character"
    assert got["credits_used"] == 1 and got["completed_at"] is not None


async def test_character_by_url_and_webp(api: Api) -> None:
    code, _ = await api.post(
        "/api/characters/preprocess", {"name": "u", "image_url": "https://x.test/a.png"}
    )
    assert code == 200
    webp = ("a.webp", make_webp(), "image/webp")
    code, _ = await api.post("/api/characters/preprocess", {"name": "w"}, {"image": webp})
    assert code == 200


@pytest.mark.parametrize(
    ("fields", "with_image", "expected"),
    [
        ({}, True, "CS-UORC01-002"),  # name is required
        ({"name": "x"}, False, "CS-ORIV-001"),
        ({"name": "x", "image_url": "https://x.test/a.png"}, True, "CS-UORC01-002"),
        ({"name": "x", "image_url": "file:///etc/passwd"}, False, "CS-UORC01-002"),
        ({"name": "x", "model": "V2"}, True, "CS-UORC01-002"),
    ],
)
async def test_character_errors(
    api: Api, fake: FakeViggle, fields: dict[str, str], with_image: bool, expected: str
) -> None:
    code, body = await api.post(
        "/api/characters/preprocess", fields, {"image": PNG} if with_image else {}
    )
    assert (code, api.code(body)) == (400, expected)
    assert fake.balance() == 10_000


async def test_character_needs_a_credit(clock: ManualClock) -> None:
    async with FakeViggle(clock=clock, api_keys={"sk-poor": 0}) as fake:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            api = Api(fake, session)
            code, body = await api.post("/api/characters/preprocess", {"name": "x"}, {"image": PNG})
            assert (code, api.code(body)) == (402, "CS-UORC01-008")


async def test_scene_from_upload_reports_the_probe(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    video = ("d.mp4", make_mp4(6.67, width=1920, height=1080), "video/mp4")
    code, body = await api.post(
        "/api/scenes/preprocess",
        {"name": "Dance Sequence", "model": "V3_Preview"},
        {"video": video},
    )
    assert code == 200
    assert set(body) == {"scene_id", "job_id", "status", "enqueued_at"}
    assert body["status"] == "pending"
    assert fake.balance() == 10_000  # scenes are free (docs/api/credits.md#costs)
    code, got = await api.call("GET", f"/api/scenes/{body['scene_id']}")
    assert got["status"] == "pending" and got["completed_at"] is None
    clock.advance(60)
    code, got = await api.call("GET", f"/api/scenes/{body['scene_id']}")
    assert got["status"] == "ready"
    assert (got["duration_seconds"], got["width"], got["height"]) == (6.67, 1920, 1080)
    assert got["fps"] == 30 and got["total_frames"] == 200


@pytest.mark.parametrize(
    ("fields", "video", "expected"),
    [
        ({}, make_mp4(3.0), "CS-UORC01-002"),  # no name
        ({"name": "x"}, None, "CS-ORIV-002"),
        ({"name": "x"}, make_png(), "CS-ORIV-003"),
        ({"name": "x"}, make_mp4(400.0), "CS-ORIV-004"),
        ({"name": "x"}, make_mp4(3.0, width=4097), "CS-ORIV-006"),
        ({"name": "x"}, make_mp4(3.0)[:30], "CS-ORIV-007"),
        ({"name": "x"}, make_mp4(0.4), "CS-UORC01-002"),  # under 0.5 s
        ({"name": "x"}, make_mp4(3.0, width=32), "CS-UORC01-002"),  # under 64 px
        ({"name": "x", "background_mode": "blur"}, make_mp4(3.0), "CS-ORIV-011"),
        ({"name": "x", "model": "V5"}, make_mp4(3.0), "CS-UORC01-002"),
        ({"name": "x", "video_url": "https://x.test/v.mp4"}, make_mp4(3.0), "CS-UORC01-002"),
    ],
)
async def test_scene_errors(
    api: Api, fields: dict[str, str], video: bytes | None, expected: str
) -> None:
    files = {"video": ("v.mp4", video, "video/mp4")} if video is not None else {}
    code, body = await api.post("/api/scenes/preprocess", fields, files)
    assert (code, api.code(body)) == (400, expected)


async def test_scene_from_url_and_webm_use_the_assumed_duration(api: Api, fake: FakeViggle) -> None:
    fake.settings.url_video_seconds = 4.0
    webm = ("v.webm", make_webm(), "video/webm")
    for fields, files in (({"video_url": "https://x.test/v.mp4"}, {}), ({}, {"video": webm})):
        code, body = await api.post("/api/scenes/preprocess", {"name": "u", **fields}, files)
        assert code == 200, body
        code, got = await api.call("GET", f"/api/scenes/{body['scene_id']}")
        assert got["duration_seconds"] == 4.0


@pytest.mark.parametrize("key", ["template_id", "template_uuid"])
async def test_import_docs_shape(api: Api, clock: ManualClock, key: str) -> None:
    code, body = await api.call("POST", "/api/scenes/import", json={key: "tmpl-duo-dance"})
    assert code == 200
    assert set(body) == {"id", "status", "credits_reserved", "segments"}
    assert body["segments"] == [
        {"uuid": "person_a1b2c3d4", "type": "human"},
        {"uuid": "person_e5f6g7h8", "type": "human"},
    ]
    clock.advance(60)
    code, got = await api.call("GET", f"/api/scenes/{body['id']}")
    assert got["status"] == "ready"


async def test_import_third_party_shape_and_video_template(api: Api, fake: FakeViggle) -> None:
    fake.settings.import_response_style = "third_party"
    code, body = await api.call(
        "POST", "/api/scenes/import", json={"template_id": "tmpl-duo-dance"}
    )
    assert code == 200
    assert set(body) == {"scene_id", "job_id", "status", "character_uuids"}
    assert body["character_uuids"] == ["person_a1b2c3d4", "person_e5f6g7h8"]
    _code, body = await api.call(
        "POST", "/api/scenes/import", json={"template_id": "tmpl-video-wave"}
    )
    assert body["character_uuids"] == []


@pytest.mark.parametrize(
    "payload",
    [{}, {"template_id": "nope"}, {"template_id": "tmpl-duo-dance", "template_uuid": "other"}],
)
async def test_import_errors(api: Api, payload: dict[str, str]) -> None:
    code, body = await api.call("POST", "/api/scenes/import", json=payload)
    assert (code, api.code(body)) == (400, "CS-UORC01-002")


async def test_import_needs_json(api: Api) -> None:
    code, body = await api.post("/api/scenes/import", {"template_id": "tmpl-duo-dance"})
    assert (code, api.code(body)) == (400, "CS-UORC01-002")


async def test_lists_page_with_full_total_and_deletes(api: Api, clock: ManualClock) -> None:
    ids = [await api.ready_character(clock) for _ in range(5)]
    code, body = await api.call("GET", "/api/characters?limit=2&offset=1")
    assert code == 200 and body["total"] == 5
    assert [c["id"] for c in body["characters"]] == [ids[3], ids[2]]  # newest first
    code, body = await api.call("DELETE", f"/api/characters/{ids[0]}")
    assert (code, body) == (200, {"success": True})
    code, _ = await api.call("DELETE", f"/api/characters/{ids[0]}")
    assert code == 404
    code, _ = await api.call("GET", f"/api/characters/{ids[0]}")
    assert code == 404
    code, body = await api.call("GET", "/api/characters")
    assert body["total"] == 4
    scene = await api.ready_scene(clock)
    code, body = await api.call("GET", "/api/scenes")
    assert body["total"] == 1 and body["scenes"][0]["id"] == scene
    code, body = await api.call("DELETE", f"/api/scenes/{scene}")
    assert body == {"success": True}
    code, body = await api.render({"character_id": ids[1], "scene_id": scene})
    assert (code, api.code(body)) == (400, "CS-ORIV-009")
    code, body = await api.render({"character_id": ids[0], "scene_id": "x"})
    assert (code, api.code(body)) == (400, "CS-ORIV-008")


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "offset=-1", "limit=ten"])
async def test_list_paging_errors(api: Api, query: str) -> None:
    code, body = await api.call("GET", f"/api/scenes?{query}")
    assert (code, api.code(body)) == (400, "CS-UORC01-002")


async def test_assets_are_private_to_their_key(clock: ManualClock) -> None:
    import aiohttp

    keys = {"sk-a": 100, "sk-b": 100}
    async with FakeViggle(clock=clock, api_keys=keys) as fake, aiohttp.ClientSession() as s:
        api = Api(fake, s)
        code, body = await api.post(
            "/api/characters/preprocess", {"name": "a"}, {"image": PNG}, key="sk-a"
        )
        code, _ = await api.call("GET", f"/api/characters/{body['character_id']}", key="sk-b")
        assert code == 404
        code, listing = await api.call("GET", "/api/characters", key="sk-b")
        assert listing == {"characters": [], "total": 0}


async def test_unknown_asset_ids_are_404_with_detail(api: Api) -> None:
    for path in ("/api/characters/nope", "/api/scenes/nope"):
        code, body = await api.call("GET", path)
        assert code == 404 and "not found" in body["detail"]


async def test_credits_endpoint(api: Api, fake: FakeViggle) -> None:
    await api.on_demand(10.0)
    code, body = await api.call("GET", "/api/credits")
    assert code == 200
    assert body["balance"] == body["credits"] == 9_990
    assert (body["total_purchased"], body["total_used"]) == (10_000, 10)
    assert body["updated_at"].endswith("Z")
    fake.top_up(5)
    code, body = await api.call("GET", "/api/credits")
    assert (body["balance"], body["total_purchased"]) == (9_995, 10_005)


async def test_wrap_data_variant(api: Api, fake: FakeViggle) -> None:
    fake.settings.wrap_data = True
    code, body = await api.call("GET", "/api/credits")
    assert set(body) == {"data"} and body["data"]["balance"] == 10_000
    code, body = await api.call("GET", "/api/characters/nope")
    assert code == 404 and "detail" in body  # errors are never wrapped
