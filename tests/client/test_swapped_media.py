"""The usual upload mix-up, a video where an image belongs or the other way round, is named
as such before anything is sent (docs/api/limits.md: formats), for every media field."""

from __future__ import annotations

import pytest
from aiohttp import web
from loophelp import serve

from viggle_async import InvalidInputError, ViggleClient
from viggle_async.testing import make_mp4, make_png


async def test_a_video_as_an_image_and_an_image_as_a_video_are_named() -> None:
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({})

    video, image = make_mp4(3.0), make_png()
    async with (serve(handle, "POST") as base,
                ViggleClient("sk-media", base_url=base) as client):
        cases = [
            ("ref_image", "MP4 video data, not an image", "send an image file: ",
             client.renders.create(ref_image=video, driving_video=video)),
            ("driving_video", "PNG image data, not a video", "send a video file: ",
             client.renders.create(ref_image=image, driving_video=image)),
            ("image", "MP4 video data, not an image", "send an image file: ",
             client.characters.create(name="c", image=video)),
            ("video", "PNG image data, not a video", "send a video file: ",
             client.scenes.create(name="s", video=image)),
        ]
        for field, problem, fix, call in cases:
            with pytest.raises(InvalidInputError) as info:
                await call
            assert info.value.field == field
            assert problem in str(info.value) and fix in str(info.value)
        # Bytes that are neither still say so.
        with pytest.raises(InvalidInputError, match="an unrecognised format"):
            await client.characters.create(name="c", image=b"hello, not a picture" * 10)
    assert seen == []
