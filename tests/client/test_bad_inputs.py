"""Bad inputs are refused locally: InvalidInputError naming the field, nothing sent, no
credit spent (docs/api/renders.md#validation-rules "Validation rules",
docs/api/conventions.md#background-modes, docs/api/limits.md#limits)."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from viggle_async import InvalidInputError, Limits, ViggleClient
from viggle_async.testing import FakeViggle, make_mp4, make_png, write_mp4


@attrs.frozen
class Files:
    png: Path
    mp4: Path
    tmp: Path


Case = Callable[[ViggleClient, Files], Awaitable[Any]]


async def _text_mode_file(c: ViggleClient, f: Files) -> Any:
    with open(f.png) as text:  # noqa: ASYNC230 - the point is a text-mode file object
        return await c.renders.create(ref_image=text, driving_video=f.mp4)


def _too_large(c: ViggleClient, f: Files) -> Awaitable[Any]:
    big = f.tmp / "big.mp4"
    write_mp4(big, 10.0, size=501 * 2**20)  # sparse: costs no disk
    return c.renders.create(ref_image=f.png, driving_video=big)


def _truncated(c: ViggleClient, f: Files) -> Awaitable[Any]:
    broken = f.tmp / "broken.mp4"
    broken.write_bytes(make_mp4(5.0)[:40])  # ftyp and a cut-off moov
    return c.renders.create(ref_image=f.png, driving_video=broken)


CASES: list[tuple[str, str, Case]] = [
    ("missing file", "ref_image",
     lambda c, f: c.renders.create(ref_image=f.tmp / "nope.png", driving_video=f.mp4)),
    ("directory, not a file", "driving_video",
     lambda c, f: c.renders.create(ref_image=f.png, driving_video=f.tmp)),
    ("unreadable video", "driving_video", _truncated),
    ("image as driving video", "driving_video",
     lambda c, f: c.renders.create(ref_image=f.png, driving_video=f.png)),
    ("video as ref image", "ref_image",
     lambda c, f: c.renders.create(ref_image=f.mp4, driving_video=f.mp4)),
    ("video over 5 minutes", "driving_video",
     lambda c, f: c.renders.create(ref_image=f.png, driving_video=make_mp4(301.0))),
    ("video over 500 MB", "driving_video", _too_large),
    ("resolution over 4096", "driving_video",
     lambda c, f: c.renders.create(ref_image=f.png,
                                   driving_video=make_mp4(3.0, width=5000, height=64))),
    ("scene video under 0.5 s", "video",
     lambda c, f: c.scenes.create(name="s", video=make_mp4(0.2))),
    ("empty image", "image", lambda c, f: c.characters.create(name="x", image=b"")),
    ("bg_color as hex", "bg_color",
     lambda c, f: c.renders.create(ref_image=f.png, driving_video=f.mp4,
                                   background_mode="solid", bg_color="#00ff00")),
    ("bg_color out of range", "bg_color",
     lambda c, f: c.renders.create(ref_image=f.png, driving_video=f.mp4,
                                   background_mode="solid", bg_color=(0, 256, 0))),
    ("bg_color without solid", "bg_color",
     lambda c, f: c.renders.create(ref_image=f.png, driving_video=f.mp4, bg_color="0,0,0")),
    ("unknown background_mode", "background_mode",
     lambda c, f: c.renders.create(ref_image=f.png, driving_video=f.mp4,
                                   background_mode="blur")),
    ("unknown scene background_mode", "background_mode",
     lambda c, f: c.scenes.create(name="s", video=f.mp4, background_mode="green")),
    ("unknown model", "model",
     lambda c, f: c.renders.create(ref_image=f.png, driving_video=f.mp4, model="V5")),
    ("model with a scene", "model",
     lambda c, f: c.renders.create(character_id="char_1", scene_id="scene_1",
                                   model="V4_Preview")),
    ("file and url together", "ref_image",
     lambda c, f: c.renders.create(ref_image=f.png, ref_image_url="https://e.com/a.png",
                                   driving_video=f.mp4)),
    ("no inputs at all", "ref_image", lambda c, f: c.renders.create()),
    ("no driving video", "driving_video", lambda c, f: c.renders.create(ref_image=f.png)),
    ("character_id without scene", "scene_id",
     lambda c, f: c.renders.create(character_id="char_1")),
    ("fast with a video url", "fast",
     lambda c, f: c.renders.create(ref_image=f.png, driving_video_url="https://e.com/d.mp4",
                                   fast=True)),
    ("non-http url", "driving_video_url",
     lambda c, f: c.renders.create(ref_image=f.png, driving_video_url="ftp://e.com/d.mp4")),
    ("relative url", "image_url",
     lambda c, f: c.characters.create(name="x", image_url="/img.png")),
    ("mapping that is not JSON", "character_mapping",
     lambda c, f: c.renders.create(scene_id="scene_1", character_mapping="{nope")),
    ("empty character name", "name",
     lambda c, f: c.characters.create(name="  ", image=make_png())),
    ("empty scene name", "name", lambda c, f: c.scenes.create(name="", video=f.mp4)),
    ("limit 0", "limit", lambda c, f: c.characters.list(limit=0)),
    ("limit over 100", "limit", lambda c, f: c.scenes.list(limit=101)),
    ("negative offset", "offset", lambda c, f: c.characters.list(offset=-1)),
    ("empty job id", "job_id", lambda c, f: c.renders.get("")),
    ("text-mode file", "ref_image", _text_mode_file),
    ("text stream", "driving_video",
     lambda c, f: c.renders.create(ref_image=f.png, driving_video=io.StringIO("x" * 64))),
    ("download of a file: url", "url",
     lambda c, f: c.download("file:///etc/passwd", f.tmp / "o.mp4")),
    ("download into a directory", "dest",
     lambda c, f: c.download("https://cdn.example.com/o.mp4", f.tmp)),
]


@pytest.mark.parametrize(("field", "case"), [(f, c) for _, f, c in CASES],
                         ids=[name for name, _, _ in CASES])
async def test_bad_input_is_refused_before_sending(
        field: str, case: Case, client: ViggleClient, fake: FakeViggle, tmp_path: Path) -> None:
    png, mp4 = tmp_path / "me.png", tmp_path / "dance.mp4"
    png.write_bytes(make_png())
    write_mp4(mp4, 4.0)
    start = fake.balance()
    with pytest.raises(InvalidInputError) as info:
        await case(client, Files(png, mp4, tmp_path))
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert info.value.fix  # every refusal says what to do
    assert sum(fake.request_counts.values()) == 0
    assert fake.creates == []
    assert fake.balance() == start


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 15


async def test_raised_limit_lets_a_big_video_through_preflight(
        fake: FakeViggle, tmp_path: Path) -> None:
    big = tmp_path / "big.mp4"
    write_mp4(big, 10.0, size=2 * 2**20)
    async with ViggleClient(fake.api_key, base_url=fake.base_url,
                            limits=Limits(max_upload_bytes=2**20)) as c:
        with pytest.raises(InvalidInputError, match="CS-ORIV-005"):
            await c.renders.prepare(ref_image=make_png(), driving_video=big)
    async with ViggleClient(fake.api_key, base_url=fake.base_url,
                            limits=Limits(max_upload_bytes=4 * 2**20)) as c:
        prepared = await c.renders.prepare(ref_image=make_png(), driving_video=big)
    assert prepared.upload_bytes == 2 * 2**20 + len(make_png())
    assert prepared.estimated_credits == 10
    assert sum(fake.request_counts.values()) == 0
