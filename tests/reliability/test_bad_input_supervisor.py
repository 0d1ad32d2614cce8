"""Bad input given to the supervisor never reaches the server: the outcome is
``not_submitted`` with an error naming the field and its fix, no request is sent and no credit
is spent (docs/api/renders.md#validation-rules "Validation rules",
docs/api/conventions.md#background-modes, docs/api/limits.md#limits).

tests/client/test_bad_inputs.py checks the same rules one level down (``InvalidInputError``
from the client); here the caller only sees the supervisor's ``Outcome``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from viggle_async import Supervisor, ViggleClient
from viggle_async._events import Handle
from viggle_async.testing import FakeViggle, ManualClock, make_mp4, make_png, make_webp, write_mp4


@attrs.frozen
class Files:
    png: Path
    mp4: Path
    tmp: Path

    def write(self, name: str, data: bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(data)
        return path


Case = Callable[[Supervisor, Files], Handle]


def _render(**kw: Any) -> Case:
    """A render whose inputs may name the sample files by the strings "PNG" and "MP4"."""
    def case(sup: Supervisor, f: Files) -> Handle:
        swap = {"PNG": f.png, "MP4": f.mp4}
        inputs: dict[str, Any] = {k: swap.get(v, v) if isinstance(v, str) else v
                                  for k, v in kw.items()}
        return sup.render(key="k", **inputs)
    return case


def _unreadable(field: str) -> Case:
    def case(sup: Supervisor, f: Files) -> Handle:
        path = f.write("locked.mp4" if field == "driving_video" else "locked.png",
                       f.mp4.read_bytes() if field == "driving_video" else f.png.read_bytes())
        path.chmod(0)
        other: dict[str, Any] = ({"driving_video": f.mp4} if field == "ref_image"
                                 else {"ref_image": f.png})
        return sup.render(key="k", **{field: path, **other})
    return case


def _file(field: str, name: str, data: Callable[[], bytes]) -> Case:
    def case(sup: Supervisor, f: Files) -> Handle:
        path = f.write(name, data())
        if field == "image":
            return sup.character(key="k", name="n", image=path)
        other: dict[str, Any] = ({"driving_video": f.mp4} if field == "ref_image"
                                 else {"ref_image": f.png})
        return sup.render(key="k", **{field: path, **other})
    return case


def _too_large(sup: Supervisor, f: Files) -> Handle:
    big = f.tmp / "big.mp4"
    write_mp4(big, 10.0, size=501 * 2**20)  # sparse: costs no disk
    return sup.render(key="k", ref_image=f.png, driving_video=big)


def _character(**kw: Any) -> Case:
    def case(sup: Supervisor, f: Files) -> Handle:
        swap = {"PNG": f.png, "MP4": f.mp4}
        inputs: dict[str, Any] = {k: swap.get(v, v) if isinstance(v, str) else v
                                  for k, v in kw.items()}
        return sup.character(key="k", **{"name": "n", **inputs})
    return case


def _scene(**kw: Any) -> Case:
    def case(sup: Supervisor, f: Files) -> Handle:
        inputs: dict[str, Any] = {k: f.mp4 if v == "MP4" else v for k, v in kw.items()}
        return sup.scene(key="k", **{"name": "s", **inputs})
    return case


URL = "https://example.com/d.mp4"
CASES: list[tuple[str, str, Case]] = [
    # files: missing, unreadable, wrong type, too long, too large, broken
    ("missing ref image", "ref_image", _render(ref_image=Path("/nonexistent/me.png"),
                                               driving_video="MP4")),
    ("missing driving video", "driving_video", _render(ref_image="PNG",
                                                       driving_video=Path("/nonexistent/d.mp4"))),
    ("missing character image", "image", _character(image=Path("/nonexistent/c.png"))),
    ("unreadable ref image", "ref_image", _unreadable("ref_image")),
    ("unreadable driving video", "driving_video", _unreadable("driving_video")),
    ("text file named .mp4", "driving_video", _file("driving_video", "notes.mp4",
                                                    lambda: b"just some text, not a video\n")),
    ("png named .mp4", "driving_video", _file("driving_video", "me.mp4", make_png)),
    ("mp4 as ref image", "ref_image", _file("ref_image", "clip.png", lambda: make_mp4(2.0))),
    ("webp ref image (renders take PNG/JPG)", "ref_image",
     _file("ref_image", "me.webp", make_webp)),
    ("video as character image", "image", _file("image", "c.png", lambda: make_mp4(1.0))),
    ("empty video file", "driving_video", _file("driving_video", "empty.mp4", lambda: b"")),
    ("truncated mp4", "driving_video",
     _file("driving_video", "cut.mp4", lambda: make_mp4(5.0)[:40])),
    ("number as a file", "driving_video", _render(ref_image="PNG", driving_video=12345)),
    ("video over 5 minutes", "driving_video",
     _file("driving_video", "long.mp4", lambda: make_mp4(300.5))),
    ("video over 500 MB", "driving_video", _too_large),
    ("video over 4096 px", "driving_video",
     _file("driving_video", "wide.mp4", lambda: make_mp4(2.0, width=4097, height=64))),
    # options
    ("bg_color as a name", "bg_color",
     _render(ref_image="PNG", driving_video="MP4", background_mode="solid", bg_color="green")),
    ("bg_color with 4 values", "bg_color",
     _render(ref_image="PNG", driving_video="MP4", background_mode="solid",
             bg_color=(0, 0, 0, 0))),
    ("bg_color negative", "bg_color",
     _render(ref_image="PNG", driving_video="MP4", background_mode="solid", bg_color="-1,0,0")),
    ("bg_color with transparent", "bg_color",
     _render(ref_image="PNG", driving_video="MP4", background_mode="transparent",
             bg_color="0,255,0")),
    ("unknown background_mode", "background_mode",
     _render(ref_image="PNG", driving_video="MP4", background_mode="greenscreen")),
    ("unknown model", "model", _render(ref_image="PNG", driving_video="MP4", model="V4")),
    ("model with a scene", "model",
     _render(character_id="char_1", scene_id="scene_1", model="V3_Preview")),
    # combinations
    ("ref image file and url", "ref_image",
     _render(ref_image="PNG", ref_image_url="https://example.com/a.png", driving_video="MP4")),
    ("video file and url", "driving_video",
     _render(ref_image="PNG", driving_video="MP4", driving_video_url=URL)),
    ("nothing to render", "ref_image", _render()),
    ("image but no video", "driving_video", _render(ref_image="PNG")),
    ("character without a scene", "scene_id", _render(character_id="char_1")),
    ("mapping without a scene", "character_mapping",
     _render(character_mapping={"person_a": "char_1"})),
    ("character image file and url", "image",
     _character(image="PNG", image_url="https://example.com/a.png")),
    ("character without an image", "image", _character()),
    ("character with a blank name", "name", _character(name=" ", image="PNG")),
    ("scene video under 0.5 s", "video", _scene(video=make_mp4(0.2))),
    ("scene without a video", "video", _scene()),
    ("scene background_mode unknown", "background_mode",
     _scene(video="MP4", background_mode="blur")),
    ("scene model unknown", "model", _scene(video="MP4", model="V9_Preview")),
    # fast needs an uploaded video or a scene (docs/api/conventions.md#background-modes)
    ("fast with two urls", "fast",
     _render(ref_image_url="https://example.com/a.png", driving_video_url=URL, fast=True)),
    ("fast as a string", "fast", _render(ref_image="PNG", driving_video="MP4", fast="yes")),
    # URLs
    ("ftp video url", "driving_video_url",
     _render(ref_image="PNG", driving_video_url="ftp://example.com/d.mp4")),
    ("url without a host", "ref_image_url",
     _render(ref_image_url="https:///a.png", driving_video="MP4")),
    ("javascript url", "image_url", _character(image_url="javascript:alert(1)")),
    ("relative url", "driving_video_url", _render(ref_image="PNG", driving_video_url="d.mp4")),
    ("scene url with a space in the host", "video_url",
     _scene(video_url="https://exa mple.com/v.mp4")),
    ("url with a port but no host", "image_url", _character(image_url="https://:443/a.png")),
]

@pytest.mark.parametrize(("name", "field", "case"), [pytest.param(*c, id=c[0]) for c in CASES])
async def test_bad_input_is_not_submitted(
        name: str, field: str, case: Case, fake: FakeViggle, client: ViggleClient,
        clock: ManualClock, tmp_path: Path) -> None:
    png, mp4 = tmp_path / "me.png", tmp_path / "dance.mp4"
    png.write_bytes(make_png())
    write_mp4(mp4, 2.0)
    if name.startswith("unreadable") and os.geteuid() == 0:
        pytest.skip("root can read a chmod 000 file")
    start = fake.balance()
    async with clock.autojump(), Supervisor(client) as sup:
        handle = case(sup, Files(png, mp4, tmp_path))
    outcome = handle.outcome
    assert outcome.state == "not_submitted", outcome
    assert outcome.error is not None and outcome.error.startswith(f"{field}: "), outcome.error
    assert "Fix: " in outcome.error  # every refusal says what to do
    assert outcome.job_id is None and outcome.attempts == 0 and not outcome.credits
    assert sum(fake.request_counts.values()) == 0
    assert fake.creates == []
    assert fake.balance() == start


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 30
