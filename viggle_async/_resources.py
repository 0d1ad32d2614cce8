"""The client's resources: ``client.renders``, ``client.characters``, ``client.scenes``.

Each method checks its inputs (``_endpoints``, ``_uploads``) before sending, then
goes through the client's single request path. ``wait`` methods poll at the
documented intervals (§4: renders every 3 s, assets every 5 s).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from . import _endpoints as ep
from ._errors import AssetFailedError, RenderFailedError, WaitTimeoutError
from ._media import IMAGE_CONTENT_TYPES, VIDEO_CONTENT_TYPES
from ._models import Character, Page, RenderJob, RenderStatus, Scene
from ._protocol import FilePart, Request, Response, check_ok, parse_page
from ._uploads import Upload, UploadSource, prepare_upload

if TYPE_CHECKING:
    from ._client import ViggleClient

__all__ = ["Characters", "PreparedCreate", "Renders", "Scenes"]

T = TypeVar("T")
UploadProgress = Callable[[int, int | None], None]
# §2.1: render ref images are PNG/JPG; characters also take WebP (§2.5).
RENDER_IMAGE_TYPES = frozenset({"image/png", "image/jpeg"})


@attrs.frozen
class PreparedCreate:
    """A create checked and ready to send: what it uploads and what it will cost.

    ``duration_s`` is the driving video's length when it could be read locally;
    ``estimated_credits`` is ceil(seconds) x 2 for fast (§7), or None when unknown.
    """

    request: Request
    uploads: tuple[Upload, ...]
    duration_s: float | None = None
    fast: bool = False

    @property
    def upload_bytes(self) -> int | None:
        sizes = [u.size for u in self.uploads]
        return None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)

    @property
    def estimated_credits(self) -> int | None:
        if self.duration_s is None:
            return None
        return math.ceil(self.duration_s) * (2 if self.fast else 1)


def _part(upload: Upload) -> FilePart:
    return FilePart(upload.field, upload.filename, upload.content_type, upload.size, upload)


class _Resource:
    def __init__(self, client: ViggleClient):
        self._client = client

    async def _send(self, prepared: PreparedCreate, parse: Callable[[Response], T], *,
                    on_upload: UploadProgress | None,
                    before_last_bytes: Callable[[], Awaitable[None]] | None) -> T:
        total = prepared.upload_bytes
        sent = 0

        def progress(n: int) -> None:
            nonlocal sent
            sent += n
            if on_upload is not None:
                on_upload(sent, total)

        def reset() -> None:  # a resend starts counting again
            nonlocal sent
            sent = 0

        async def hook() -> None:
            if before_last_bytes is not None:
                await before_last_bytes()

        return await self._client._call(prepared.request, parse, on_upload=progress,
                                        before_last_bytes=hook, on_attempt=reset)

    async def _wait(self, get: Callable[[], Awaitable[T]], *, terminal: Callable[[T], bool],
                    interval: float, timeout: float | None,
                    on_progress: Callable[[T], None] | None, what: str) -> T:
        clock = self._client.clock
        if interval <= 0:
            raise ValueError(f"poll_interval must be > 0, got {interval}")
        deadline = None if timeout is None else clock.now() + timeout
        while True:
            last = await get()
            if on_progress is not None:
                on_progress(last)
            if terminal(last):
                return last
            now = clock.now()
            if deadline is not None and now >= deadline:
                raise WaitTimeoutError(f"{what} not finished after {timeout:g} s "
                                       f"(last status {getattr(last, 'status', '?')!r})",
                                       last=last)
            wake = now + interval if deadline is None else min(now + interval, deadline)
            await clock.sleep_until(wake)

    async def _iterate(self, list_page: Callable[[int, int], Awaitable[Page[T]]],
                       page_size: int) -> AsyncIterator[T]:
        offset = 0
        while True:
            page = await list_page(page_size, offset)
            for item in page.items:
                yield item
            offset += len(page.items)
            if len(page.items) < page_size or (page.total is not None and offset >= page.total):
                return


class Renders(_Resource):
    """Render jobs (§2.1–§2.4)."""

    async def prepare(
        self, *,
        ref_image: UploadSource | None = None,
        ref_image_url: str | None = None,
        driving_video: UploadSource | None = None,
        driving_video_url: str | None = None,
        character_id: str | None = None,
        scene_id: str | None = None,
        character_mapping: Mapping[str, str] | str | None = None,
        model: str | None = None,
        background_mode: str | None = None,
        bg_color: str | Sequence[int] | None = None,
        fast: bool = False,
    ) -> PreparedCreate:
        """Check every input (reading only file headers) without sending anything."""
        fields = ep.render_create_fields(
            has_ref_image=ref_image is not None, ref_image_url=ref_image_url,
            has_driving_video=driving_video is not None, driving_video_url=driving_video_url,
            character_id=character_id, scene_id=scene_id, character_mapping=character_mapping,
            model=model, background_mode=background_mode, bg_color=bg_color, fast=fast)
        limits = self._client.limits
        uploads = []
        if ref_image is not None:
            uploads.append(await prepare_upload("ref_image", "image", ref_image,
                                                allowed=RENDER_IMAGE_TYPES, limits=limits))
        duration = None
        if driving_video is not None:
            video = await prepare_upload("driving_video", "video", driving_video,
                                         allowed=VIDEO_CONTENT_TYPES, limits=limits)
            uploads.append(video)
            duration = video.video.duration_s if video.video else None
        request = ep.multipart_create("/api/render", fields, [_part(u) for u in uploads])
        return PreparedCreate(request, tuple(uploads), duration, fast)

    async def create(self, *, on_upload: UploadProgress | None = None,
                     before_last_bytes: Callable[[], Awaitable[None]] | None = None,
                     **inputs: Any) -> RenderJob:
        """Start a render (``POST /api/render``). Inputs as for ``prepare``.

        ``on_upload(sent, total)`` reports upload bytes; ``before_last_bytes`` is awaited
        just before the request could be complete at the server (a journal's cue).
        """
        prepared = await self.prepare(**inputs)
        return await self.submit(prepared, on_upload=on_upload,
                                 before_last_bytes=before_last_bytes)

    async def submit(self, prepared: PreparedCreate, *, on_upload: UploadProgress | None = None,
                     before_last_bytes: Callable[[], Awaitable[None]] | None = None
                     ) -> RenderJob:
        """Send a prepared render."""
        return await self._send(prepared, self._client.parse_as(RenderJob), on_upload=on_upload,
                                before_last_bytes=before_last_bytes)

    async def get(self, job_id: str) -> RenderStatus:
        """The job's status (``GET /api/render/{job_id}``; needs no API key)."""
        return await self._client._call(ep.get_render(job_id),
                                        self._client.parse_as(RenderStatus, job_id=job_id))

    async def cancel(self, job_id: str) -> RenderStatus:
        """Cancel a running job; the API refunds its credits (§2.4)."""
        return await self._client._call(ep.cancel_render(job_id), self._client.parse_as(
            RenderStatus, job_id=job_id, status="cancelled"))

    async def wait(self, job_id: str, *, poll_interval: float = 3.0,
                   timeout: float | None = None,
                   on_progress: Callable[[RenderStatus], None] | None = None) -> RenderStatus:
        """Poll until the job ends; return the complete status.

        Raises RenderFailedError on failed/cancelled and WaitTimeoutError (with the last
        status) when ``timeout`` seconds pass; the job itself goes on.
        """
        final = await self._wait(lambda: self.get(job_id), terminal=lambda s: s.is_terminal,
                                 interval=poll_interval, timeout=timeout,
                                 on_progress=on_progress, what=f"render {job_id}")
        if not final.is_complete:
            raise RenderFailedError(final)
        return final


class _Assets(_Resource):
    _path: str
    _key: str
    _cls: type[Any]

    async def _list(self, limit: int, offset: int) -> Page[Any]:
        request = ep.list_page(self._path, limit, offset)
        client = self._client
        return await client._call(request, lambda r: parse_page(
            r, self._key, self._cls, client._converter, limit=limit, offset=offset,
            now=client.now()))

    async def _wait_asset(self, get: Callable[[], Awaitable[Any]], ident: str, *,
                          poll_interval: float, timeout: float | None,
                          on_progress: Callable[[Any], None] | None) -> Any:
        final = await self._wait(get, terminal=lambda a: a.is_terminal, interval=poll_interval,
                                 timeout=timeout, on_progress=on_progress,
                                 what=f"{self._cls.__name__.lower()} {ident}")
        if not final.is_ready:
            raise AssetFailedError(final)
        return final


class Characters(_Assets):
    """Reusable characters (§2.5–§2.8). A character costs 1 credit."""

    _path, _key, _cls = "/api/characters", "characters", Character

    async def prepare(self, *, name: str, image: UploadSource | None = None,
                      image_url: str | None = None) -> PreparedCreate:
        fields = ep.character_create_fields(name=name, has_image=image is not None,
                                            image_url=image_url)
        uploads = []
        if image is not None:
            uploads.append(await prepare_upload("image", "image", image,
                                                allowed=IMAGE_CONTENT_TYPES,
                                                limits=self._client.limits))
        request = ep.multipart_create("/api/characters/preprocess", fields,
                                      [_part(u) for u in uploads])
        return PreparedCreate(request, tuple(uploads))

    async def create(self, *, name: str, image: UploadSource | None = None,
                     image_url: str | None = None, on_upload: UploadProgress | None = None,
                     before_last_bytes: Callable[[], Awaitable[None]] | None = None
                     ) -> Character:
        """Create a character from ``image`` (PNG/JPG/WebP) or ``image_url``."""
        prepared = await self.prepare(name=name, image=image, image_url=image_url)
        return await self._send(prepared, self._client.parse_as(Character, name=name),
                                on_upload=on_upload, before_last_bytes=before_last_bytes)

    async def get(self, character_id: str) -> Character:
        return await self._client._call(ep.get_character(character_id),
                                        self._client.parse_as(Character, id=character_id))

    async def list(self, *, limit: int = 100, offset: int = 0) -> Page[Character]:
        """One page (``limit`` 1–100)."""
        return await self._list(limit, offset)

    def iterate(self, *, page_size: int = 100) -> AsyncIterator[Character]:
        """Every character, page by page: ``async for c in client.characters.iterate()``."""
        return self._iterate(self._list, page_size)

    async def delete(self, character_id: str) -> None:
        client = self._client
        await client._call(ep.delete_character(character_id),
                           lambda r: check_ok(r, now=client.now()))

    async def wait(self, character_id: str, *, poll_interval: float = 5.0,
                   timeout: float | None = None,
                   on_progress: Callable[[Character], None] | None = None) -> Character:
        """Poll until ``ready``; AssetFailedError on ``failed``."""
        result: Character = await self._wait_asset(
            lambda: self.get(character_id), character_id, poll_interval=poll_interval,
            timeout=timeout, on_progress=on_progress)
        return result


class Scenes(_Assets):
    """Scenes from a driving video or a template (§2.9–§2.13). Uploading is free."""

    _path, _key, _cls = "/api/scenes", "scenes", Scene

    async def prepare(self, *, name: str, video: UploadSource | None = None,
                      video_url: str | None = None, background_mode: str | None = None,
                      model: str | None = None) -> PreparedCreate:
        fields = ep.scene_create_fields(name=name, has_video=video is not None,
                                        video_url=video_url, background_mode=background_mode,
                                        model=model)
        uploads = []
        if video is not None:
            # §6: a scene video must be at least 0.5 s long.
            uploads.append(await prepare_upload("video", "video", video,
                                                allowed=VIDEO_CONTENT_TYPES,
                                                limits=self._client.limits, min_seconds=0.5))
        request = ep.multipart_create("/api/scenes/preprocess", fields,
                                      [_part(u) for u in uploads])
        duration = uploads[0].video.duration_s if uploads and uploads[0].video else None
        return PreparedCreate(request, tuple(uploads), duration)

    async def create(self, *, name: str, video: UploadSource | None = None,
                     video_url: str | None = None, background_mode: str | None = None,
                     model: str | None = None, on_upload: UploadProgress | None = None,
                     before_last_bytes: Callable[[], Awaitable[None]] | None = None) -> Scene:
        """Preprocess a driving video into a reusable scene (the model binds for good)."""
        prepared = await self.prepare(name=name, video=video, video_url=video_url,
                                      background_mode=background_mode, model=model)
        return await self._send(prepared, self._client.parse_as(Scene, name=name),
                                on_upload=on_upload, before_last_bytes=before_last_bytes)

    async def import_template(self, template_id: str, name: str | None = None, *,
                              before_last_bytes: Callable[[], Awaitable[None]] | None = None
                              ) -> Scene:
        """Import a viggle.ai template; multi-person templates carry ``segments``.

        ``before_last_bytes`` is awaited just before the request is sent (a journal's cue).
        """
        request = ep.import_scene(template_id, name)
        defaults = {"name": name} if name is not None else {}
        return await self._client._call(request, self._client.parse_as(Scene, **defaults),
                                        before_last_bytes=before_last_bytes)

    async def get(self, scene_id: str) -> Scene:
        return await self._client._call(ep.get_scene(scene_id),
                                        self._client.parse_as(Scene, id=scene_id))

    async def list(self, *, limit: int = 100, offset: int = 0) -> Page[Scene]:
        """One page (``limit`` 1–100)."""
        return await self._list(limit, offset)

    def iterate(self, *, page_size: int = 100) -> AsyncIterator[Scene]:
        """Every scene, page by page."""
        return self._iterate(self._list, page_size)

    async def delete(self, scene_id: str) -> None:
        client = self._client
        await client._call(ep.delete_scene(scene_id), lambda r: check_ok(r, now=client.now()))

    async def wait(self, scene_id: str, *, poll_interval: float = 5.0,
                   timeout: float | None = None,
                   on_progress: Callable[[Scene], None] | None = None) -> Scene:
        """Poll until ``ready``; AssetFailedError on ``failed``."""
        result: Scene = await self._wait_asset(
            lambda: self.get(scene_id), scene_id, poll_interval=poll_interval,
            timeout=timeout, on_progress=on_progress)
        return result
