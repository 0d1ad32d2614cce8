"""Create requests byte-exact on the wire, on a recording loopback server (any aiohttp):
multipart fields and files (docs/api/conventions.md#request-encodings,
docs/api/renders.md#create-render, docs/api/renders.md#multi-character,
docs/api/assets.md#create-character, docs/api/assets.md#create-scene), the JSON import,
and where the key is sent (docs/api/conventions.md#authentication)."""

from __future__ import annotations

import json
import os
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any

from viggle_async import ViggleClient
from viggle_async.testing import make_jpeg, make_mp4, make_png, make_webp

if TYPE_CHECKING:
    from loophelp import Scripted, Seen

KEY = "sk-requests"
JOB = {"job_id": "job_1", "status": "queued"}


def _parts(seen: Seen) -> list[tuple[str, str | None, str | None, bytes]]:
    """(name, filename, content type, payload) of each multipart part, in order."""
    head = f"Content-Type: {seen.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + seen.body)
    assert isinstance(message, EmailMessage) and message.is_multipart()
    out = []
    for part in message.iter_parts():
        assert isinstance(part, EmailMessage)
        name = part.get_param("name", header="content-disposition")
        filename = part.get_param("filename", header="content-disposition")
        ctype = part["Content-Type"]
        payload = part.get_payload(decode=True)
        assert isinstance(name, str) and isinstance(payload, bytes)
        out.append((name, filename if isinstance(filename, str) else None,
                    str(ctype) if ctype and filename else None, payload))
    return out


async def test_on_demand_render_multipart(scripted: Scripted) -> None:
    scripted.queue((200, JOB))
    png, mp4 = make_png(), make_mp4(3.0)
    async with ViggleClient(KEY, base_url=scripted.base_url) as client:
        job = await client.renders.create(ref_image=png, driving_video=mp4, model="V3_Preview",
                                          background_mode="solid", bg_color=[1, 2, 3],
                                          fast=True)
    assert job.job_id == "job_1"
    (seen,) = scripted.seen
    assert (seen.method, seen.path_qs) == ("POST", "/api/render")
    assert seen.content_type == "multipart/form-data"
    assert seen.headers["Authorization"] == f"Bearer {KEY}"
    assert int(seen.headers["Content-Length"]) == len(seen.body)
    assert "Transfer-Encoding" not in seen.headers
    assert _parts(seen) == [
        ("model", None, None, b"V3_Preview"),
        ("background_mode", None, None, b"solid"),
        ("bg_color", None, None, b"1,2,3"),
        # string booleans (docs/api/conventions.md#request-encodings)
        ("fast", None, None, b"true"),
        ("ref_image", "ref_image.png", "image/png", png),
        ("driving_video", "driving_video.mp4", "video/mp4", mp4),
    ]


async def test_defaults_are_not_sent(scripted: Scripted) -> None:
    scripted.queue((200, JOB))
    async with ViggleClient(KEY, base_url=scripted.base_url) as client:
        await client.renders.create(ref_image_url="https://e.com/a.png",
                                    driving_video_url="https://e.com/b.mp4")
    assert [(n, v) for n, _, _, v in _parts(scripted.seen[0])] == [
        ("ref_image_url", b"https://e.com/a.png"), ("driving_video_url", b"https://e.com/b.mp4")]


async def test_multi_character_mapping_is_a_json_string(scripted: Scripted) -> None:
    scripted.queue((200, JOB))
    mapping = {"person_a1b2c3d4": "char_alice", "person_e5f6g7h8": "char_bob"}
    async with ViggleClient(KEY, base_url=scripted.base_url) as client:
        await client.renders.create(scene_id="scene_1", character_mapping=mapping,
                                    background_mode="inpaint")
    parts = {n: v for n, _, _, v in _parts(scripted.seen[0])}
    assert set(parts) == {"scene_id", "character_mapping", "background_mode"}
    assert json.loads(parts["character_mapping"]) == mapping
    assert parts["scene_id"] == b"scene_1" and parts["background_mode"] == b"inpaint"


async def test_character_and_scene_creates(scripted: Scripted, tmp_path: Any) -> None:
    scripted.queue((200, {"character_id": "c1", "status": "pending"}),
                   (200, {"character_id": "c2", "status": "pending"}),
                   (200, {"scene_id": "s1", "status": "pending"}))
    video = tmp_path / "moves.mov"
    video.write_bytes(make_mp4(2.0, brand=b"qt  "))
    async with ViggleClient(KEY, base_url=scripted.base_url) as client:
        char = await client.characters.create(name="Alice", image=make_webp())
        await client.characters.create(name="Bob", image_url="https://e.com/bob.jpg")
        scene = await client.scenes.create(name="Moves", video=video, model="V4_Preview")
    assert (char.id, char.name, scene.id, scene.name) == ("c1", "Alice", "s1", "Moves")
    first, second, third = scripted.seen
    assert first.path_qs == "/api/characters/preprocess"
    assert _parts(first) == [("name", None, None, b"Alice"),
                             ("image", "image.webp", "image/webp", make_webp())]
    assert [(n, v) for n, _, _, v in _parts(second)] == [
        ("name", b"Bob"), ("image_url", b"https://e.com/bob.jpg")]
    assert third.path_qs == "/api/scenes/preprocess"
    assert _parts(third) == [("name", None, None, b"Moves"), ("model", None, None, b"V4_Preview"),
                             ("video", "moves.mov", "video/quicktime", video.read_bytes())]
    assert all(s.headers["Authorization"] == f"Bearer {KEY}" for s in scripted.seen)


async def test_jpeg_ref_image_from_a_file_object(scripted: Scripted, tmp_path: Any) -> None:
    scripted.queue((200, JOB))
    path = tmp_path / "face.jpg"
    path.write_bytes(b"\x00" * 5 + make_jpeg())  # the caller already read 5 bytes
    mp4 = make_mp4(2.0)
    async with ViggleClient(KEY, base_url=scripted.base_url) as client:
        with path.open("rb") as f:  # a caller's open file object
            f.read(5)
            await client.renders.create(ref_image=f, driving_video=mp4)
            assert f.closed is False  # never closed by the client
    parts = _parts(scripted.seen[0])
    assert parts[0] == ("ref_image", "face.jpg", "image/jpeg", make_jpeg())


async def test_a_descriptor_named_file_gets_a_typed_filename(scripted: Scripted,
                                                            tmp_path: Any) -> None:
    """A file object whose ``name`` is a descriptor number (os.fdopen, a spooled upload on
    disk) must not send the filename "3"."""
    scripted.queue((200, JOB))
    path = tmp_path / "face.jpg"
    path.write_bytes(make_jpeg())
    fd = os.open(path, os.O_RDONLY)
    async with ViggleClient(KEY, base_url=scripted.base_url) as client:
        with os.fdopen(fd, "rb") as f:
            assert isinstance(f.name, int)
            await client.renders.create(ref_image=f, driving_video=make_mp4(2.0))
    assert _parts(scripted.seen[0])[0] == ("ref_image", "ref_image.jpg", "image/jpeg",
                                           make_jpeg())


async def test_import_is_json_and_status_is_keyless(scripted: Scripted) -> None:
    scripted.queue((200, {"id": "s1", "status": "pending"}),
                   (200, {"job_id": "job_1", "status": "processing"}))
    async with ViggleClient(KEY, base_url=scripted.base_url) as client:
        await client.scenes.import_template("tmpl-1")
        await client.renders.get("job_1")
    imp, status = scripted.seen
    assert imp.content_type == "application/json"
    assert json.loads(imp.body) == {"template_id": "tmpl-1"}
    assert imp.headers["Authorization"] == f"Bearer {KEY}"
    assert (status.method, status.path_qs) == ("GET", "/api/render/job_1")
    assert "Authorization" not in status.headers


async def test_before_last_bytes_runs_once_before_the_body_ends(scripted: Scripted) -> None:
    scripted.queue((200, JOB))
    calls: list[int] = []
    async with ViggleClient(KEY, base_url=scripted.base_url) as client:

        async def hook() -> None:
            calls.append(len(scripted.seen))  # the server has not got the request yet

        await client.renders.create(ref_image=make_png(), driving_video=make_mp4(2.0),
                                    before_last_bytes=hook)
    assert calls == [0]
