"""Helpers for the fake-server tests: a manual clock and raw HTTP calls (no client code)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import aiohttp

from viggle_async.testing import FakeViggle, make_mp4, make_png


class ManualClock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


FileSpec = tuple[str, bytes, str]


class Api:
    """Raw HTTP against the fake: no client code involved."""

    def __init__(self, fake: FakeViggle, session: aiohttp.ClientSession) -> None:
        self.fake = fake
        self.session = session

    def headers(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def call(
        self,
        method: str,
        path: str,
        *,
        data: Any = None,
        json: Any = None,
        key: str | None = "default",
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        hdrs = self.headers(self.fake.api_key if key == "default" else key)
        hdrs.update(headers or {})
        async with self.session.request(
            method, self.fake.base_url + path, data=data, json=json, headers=hdrs
        ) as resp:
            body = await resp.json(content_type=None)
            return resp.status, body

    async def render(
        self,
        fields: Mapping[str, str] | None = None,
        files: Mapping[str, FileSpec] | None = None,
        *,
        key: str | None = "default",
        urlencoded: bool = False,
    ) -> tuple[int, Any]:
        return await self.post("/api/render", fields, files, key=key, urlencoded=urlencoded)

    async def post(
        self,
        path: str,
        fields: Mapping[str, str] | None = None,
        files: Mapping[str, FileSpec] | None = None,
        *,
        key: str | None = "default",
        urlencoded: bool = False,
    ) -> tuple[int, Any]:
        if urlencoded:
            assert not files
            return await self.call("POST", path, data=dict(fields or {}), key=key)
        form = aiohttp.FormData()
        for name, value in (fields or {}).items():
            form.add_field(name, value)
        for name, (filename, content, ctype) in (files or {}).items():
            form.add_field(name, io.BytesIO(content), filename=filename, content_type=ctype)
        return await self.call("POST", path, data=form, key=key)

    async def on_demand(self, seconds: float = 10.0, **fields: str) -> tuple[int, Any]:
        return await self.render(
            fields,
            {
                "ref_image": ("me.png", make_png(), "image/png"),
                "driving_video": ("dance.mp4", make_mp4(seconds), "video/mp4"),
            },
        )

    @staticmethod
    def code(body: Any) -> str:
        """The documented ``detail.error_code`` (docs/api/conventions.md#error-envelope), checking
        the envelope's shape."""
        assert set(body) == {"detail"}, body
        assert set(body["detail"]) == {"error_code", "message", "action"}, body
        return str(body["detail"]["error_code"])

    async def status(self, job_id: str) -> dict[str, Any]:
        code, body = await self.call("GET", f"/api/render/{job_id}", key=None)
        assert code == 200, body
        return dict(body)

    async def ready_character(self, clock: ManualClock) -> str:
        code, body = await self.post(
            "/api/characters/preprocess",
            {"name": "Alice"},
            {"image": ("alice.png", make_png(), "image/png")},
        )
        assert code == 200, body
        clock.advance(60)
        return str(body["character_id"])

    async def ready_scene(self, clock: ManualClock, seconds: float = 6.0, **fields: str) -> str:
        code, body = await self.post(
            "/api/scenes/preprocess",
            {"name": "Dance", **fields},
            {"video": ("dance.mp4", make_mp4(seconds, width=640, height=360), "video/mp4")},
        )
        assert code == 200, body
        clock.advance(60)
        return str(body["scene_id"])
