"""The client's resources: ``client.renders``, ``client.characters``, ``client.scenes``.

Each method checks its inputs (``_endpoints``, ``_uploads``) before sending, then goes
through the one request path (``_http.RequestPath``, passed in: resources never see the
client). ``wait`` methods poll at the documented intervals (docs/api/lifecycles.md#polling: renders
every 3 s,
assets every 5 s).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Generic, TypedDict, TypeVar, Unpack

import attrs

from . import _endpoints as ep
from ._errors import AssetFailedError, RenderFailedError, WaitTimeoutError
from ._http import RequestPath
from ._media import IMAGE_CONTENT_TYPES, VIDEO_CONTENT_TYPES
from ._models import Character, Page, RenderJob, RenderStatus, Scene
from ._polling import PollModel, PollPolicy
from ._protocol import FilePart, Request, Response
from ._segments_cache import SegmentsCache
from ._uploads import Limits, Upload, UploadSource, prepare_upload

__all__ = ["Characters", "PreparedCreate", "RenderInputs", "Renders", "Scenes"]

T = TypeVar("T")
A = TypeVar("A", Character, Scene)
UploadProgress = Callable[[int, int | None], None]
# docs/api/renders.md#request-fields: render ref images are PNG/JPG; characters also take WebP
# (docs/api/assets.md#create-character).
RENDER_IMAGE_TYPES = frozenset({"image/png", "image/jpeg"})
logger = logging.getLogger("viggle_async")


class RenderInputs(TypedDict, total=False):
    """The inputs of a render (``renders.prepare``/``create``, ``Supervisor.render``).

    One of: ``ref_image``/``ref_image_url`` + ``driving_video``/``driving_video_url``
    (or ``scene_id``); ``character_id`` + ``scene_id``; ``scene_id`` +
    ``character_mapping`` (segment uuid -> character id). Files are paths, bytes, binary
    file objects or async byte iterators. ``model`` is a ``Model`` value,
    ``background_mode`` a ``BackgroundMode`` value, ``bg_color`` ``"R,G,B"`` or a 3-tuple
    (0–255, solid mode only), ``fast`` doubles speed and credits.
    """

    ref_image: UploadSource | None
    ref_image_url: str | None
    driving_video: UploadSource | None
    driving_video_url: str | None
    character_id: str | None
    scene_id: str | None
    character_mapping: Mapping[str, str] | str | None
    model: str | None
    background_mode: str | None
    bg_color: str | Sequence[int] | None
    fast: bool


@attrs.frozen
class PreparedCreate:
    """A create checked and ready to send: what it uploads and what it will cost.

    ``duration_s`` is the driving video's length in seconds when it could be read
    locally; ``estimated_credits`` is ceil(seconds) x 2 for fast, or None when unknown.
    """

    request: Request
    uploads: tuple[Upload, ...]
    duration_s: float | None = None
    fast: bool = False

    @property
    def upload_bytes(self) -> int | None:
        """Total file bytes to upload, or None when a source's size is unknown."""
        sizes = [u.size for u in self.uploads]
        return None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)

    @property
    def estimated_credits(self) -> int | None:
        """Credits the render will cost, or None when the duration is unknown."""
        if self.duration_s is None:
            return None
        return math.ceil(self.duration_s) * (2 if self.fast else 1)


def _part(upload: Upload) -> FilePart:
    return FilePart(upload.field, upload.filename, upload.content_type, upload.size, upload)


# docs/api/renders.md#render-status/docs/api/lifecycles.md#polling: renders are polled every 3 s,
# assets every 5 s (they report no progress).
_RENDER_POLICY = PollPolicy.fixed(3.0)
_ASSET_POLICY = PollPolicy.fixed(5.0)


def _policy(poll_interval: float | None, policy: PollPolicy | None,
            default: PollPolicy) -> PollPolicy:
    """The policy a ``wait`` uses: ``poll_interval`` as a fixed interval, else ``policy``,
    else ``default``. Raises ValueError (before any request) for both or a bad interval."""
    if poll_interval is not None:
        if policy is not None:
            raise ValueError("pass poll_interval (a fixed interval) or policy, not both")
        return PollPolicy.fixed(poll_interval)
    return default if policy is None else policy


def _render_view(status: RenderStatus) -> tuple[float | None, Hashable]:
    return status.progress_pct, (status.status, status.checkpoint, status.progress_pct)


def _asset_view(asset: Character | Scene) -> tuple[float | None, Hashable]:
    return None, asset.status


class _Resource:
    def __init__(self, http: RequestPath, *, limits: Limits):
        self._http = http
        self._limits = limits

    async def _send(self, prepared: PreparedCreate, parse: Callable[[Response], T], *,
                    on_upload: UploadProgress | None,
                    before_last_bytes: Callable[[], Awaitable[None]] | None) -> T:
        total = prepared.upload_bytes
        # The transport reports the bytes sent so far in this attempt (a resend starts
        # again from zero); the caller gets (sent, total) in bytes.
        progress = None if on_upload is None else (lambda sent: on_upload(sent, total))
        return await self._http.call(prepared.request, parse, on_upload=progress,
                                     before_last_bytes=before_last_bytes)

    async def _wait(self, get: Callable[[], Awaitable[T]], *, terminal: Callable[[T], bool],
                    view: Callable[[T], tuple[float | None, Hashable]], policy: PollPolicy,
                    timeout: float | None, on_progress: Callable[[T], None] | None,
                    what: str) -> T:
        """Poll with ``get`` until ``terminal``; the intervals are ``policy``'s, the same
        pure function the Supervisor's scheduler uses (``view`` gives a result's progress in
        percent and a summary whose change counts as movement). The first poll is at once:
        the job may be done already. One job, so no jitter."""
        clock = self._http.clock
        now = clock.now()
        deadline = None if timeout is None else now + timeout
        state, model = policy.first_state(now), PollModel()
        mark: Hashable = None
        seen = False
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
            pct, new_mark = view(last)
            moved, seen, mark = seen and new_mark != mark, True, new_mark
            if policy.predict:
                model = policy.learn(model, state, progress_pct=pct, terminal=False, now=now)
            interval, state = policy.next_interval(state, progress_pct=pct, moved=moved,
                                                   now=now, model=model)
            wake = now + interval if deadline is None else min(now + interval, deadline)
            await clock.sleep_until(wake)

    @staticmethod
    async def _iterate(list_page: Callable[[int, int], Awaitable[Page[A]]],
                       page_size: int) -> AsyncIterator[A]:
        # A server may cap pages below the size asked for (20 of 45, issue 11.8): a short
        # page is not the end. The end is ``total`` reached or, without a total, an empty
        # page. A page adding no unseen id means the server ignores ``offset``: stop rather
        # than loop for ever (and never yield an item twice).
        ep.list_page("", page_size, 0)  # checks page_size before the first request
        offset = 0
        seen: set[str] = set()
        while True:
            page = await list_page(page_size, offset)
            fresh = [item for item in page.items if item.id not in seen]
            for item in fresh:
                seen.add(item.id)
                yield item
            offset += len(page.items)
            if page.total is not None and offset >= page.total:
                return
            if not fresh:
                if page.items or page.total is not None:
                    logger.warning("listing stopped at offset %d: the server returned no new "
                                   "items (total %s)", offset, page.total)
                return


class Renders(_Resource):
    """Render jobs."""

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
        """Check every input (reading only file headers) without sending anything.

        Returns a ``PreparedCreate`` (upload bytes, duration in seconds, estimated
        credits). Raises InvalidInputError naming the field and the fix.
        """
        fields = ep.render_create_fields(
            has_ref_image=ref_image is not None, ref_image_url=ref_image_url,
            has_driving_video=driving_video is not None, driving_video_url=driving_video_url,
            character_id=character_id, scene_id=scene_id, character_mapping=character_mapping,
            model=model, background_mode=background_mode, bg_color=bg_color, fast=fast)
        limits = self._limits
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
        request = ep.create_render(fields, [_part(u) for u in uploads])
        return PreparedCreate(request, tuple(uploads), duration, fast)

    async def create(self, *, on_upload: UploadProgress | None = None,
                     before_last_bytes: Callable[[], Awaitable[None]] | None = None,
                     **inputs: Unpack[RenderInputs]) -> RenderJob:
        """Start a render (``POST /api/render``). Inputs as for ``prepare`` (``RenderInputs``).

        ``on_upload(sent, total)`` reports upload bytes; ``before_last_bytes`` is awaited
        just before the request could be complete at the server (a journal's cue).
        Raises InvalidInputError before sending; InsufficientCreditsError (402),
        FastModeUnavailableError, RateLimitError after retries; and, when the job may
        exist anyway, an error with ``may_have_reached_server=True`` (a 5xx ServerError,
        a ResponseFormatError, a TransportError): never resend those blindly.
        """
        prepared = await self.prepare(**inputs)
        return await self.submit(prepared, on_upload=on_upload,
                                 before_last_bytes=before_last_bytes)

    async def submit(self, prepared: PreparedCreate, *, on_upload: UploadProgress | None = None,
                     before_last_bytes: Callable[[], Awaitable[None]] | None = None
                     ) -> RenderJob:
        """Send a prepared render; returns the new job. Errors as for ``create``."""
        return await self._send(prepared, self._http.parser(RenderJob), on_upload=on_upload,
                                before_last_bytes=before_last_bytes)

    async def get(self, job_id: str) -> RenderStatus:
        """The job's status (``GET /api/render/{job_id}``; needs no API key).

        A ``complete`` status without its ``cdn_url`` is not final yet (``is_terminal`` is
        False): poll again. Raises NotFoundError, ResponseFormatError, TransportError.
        """
        return await self._http.call(ep.get_render(job_id),
                                     self._http.parser(RenderStatus, job_id=job_id))

    async def cancel(self, job_id: str) -> RenderStatus:
        """Cancel a running job; the API refunds its credits. Returns the status.

        Raises ConflictError (or BadRequestError) when the job already ended.
        """
        return await self._http.call(ep.cancel_render(job_id), self._http.parser(
            RenderStatus, job_id=job_id, status="cancelled"))

    async def wait(self, job_id: str, *, poll_interval: float | None = None,
                   policy: PollPolicy | None = None, timeout: float | None = None,
                   on_progress: Callable[[RenderStatus], None] | None = None) -> RenderStatus:
        """Poll until the job ends; return the complete status (with its ``cdn_url``).

        The first poll is at once, then every 3 s, or every ``poll_interval``
        seconds, or as ``policy`` says (a ``PollPolicy``, the pure function the
        Supervisor's scheduler uses: e.g. ``PollPolicy`` backs off while nothing changes
        and aims at the end once ``progress_pct`` moves). Raises ValueError for a
        ``poll_interval`` <= 0 or both given (before any request), RenderFailedError on
        failed/cancelled and WaitTimeoutError (with the last status) when ``timeout``
        seconds pass; the job itself goes on.
        """
        final = await self._wait(lambda: self.get(job_id), terminal=lambda s: s.is_terminal,
                                 view=_render_view,
                                 policy=_policy(poll_interval, policy, _RENDER_POLICY),
                                 timeout=timeout, on_progress=on_progress,
                                 what=f"render {job_id}")
        if not final.is_complete:
            raise RenderFailedError(final)
        return final


class _Assets(_Resource, Generic[A]):
    _cls: type[A]
    _key: str
    _list_request: Callable[[int, int], Request]

    async def _list(self, limit: int, offset: int) -> Page[A]:
        request = type(self)._list_request(limit, offset)
        return await self._http.call(request, self._http.page_parser(
            self._key, self._cls, limit=limit, offset=offset))

    async def _get(self, request: Request, ident: str) -> A:
        return await self._http.call(request, self._http.parser(self._cls, id=ident))

    async def _create(self, prepared: PreparedCreate, name: str | None, *,
                      on_upload: UploadProgress | None,
                      before_last_bytes: Callable[[], Awaitable[None]] | None) -> A:
        defaults = {} if name is None else {"name": name}
        return await self._send(prepared, self._http.parser(self._cls, **defaults),
                                on_upload=on_upload, before_last_bytes=before_last_bytes)

    async def list(self, *, limit: int = 100, offset: int = 0) -> Page[A]:
        """One page: ``limit`` 1–100 items from ``offset`` (0-based), with the API's
        ``total`` when it reports one. Raises InvalidInputError for a bad limit/offset."""
        return await self._list(limit, offset)

    def iterate(self, *, page_size: int = 100) -> AsyncIterator[A]:
        """Every item, page by page (``async for item in ...iterate()``), until the API's
        ``total`` is reached (or an empty page when it reports none). ``page_size`` 1–100."""
        return self._iterate(self._list, page_size)

    async def _delete(self, request: Request) -> None:
        await self._http.call(request, self._http.ok_parser())

    async def _wait_for(self, get: Callable[[], Awaitable[A]], ident: str, *,
                        poll_interval: float | None, policy: PollPolicy | None,
                        timeout: float | None, on_progress: Callable[[A], None] | None) -> A:
        final = await self._wait(get, terminal=lambda a: a.is_terminal,
                                 view=_asset_view,
                                 policy=_policy(poll_interval, policy, _ASSET_POLICY),
                                 timeout=timeout, on_progress=on_progress,
                                 what=f"{self._cls.__name__.lower()} {ident}")
        if not final.is_ready:
            raise AssetFailedError(final)
        return final


class Characters(_Assets[Character]):
    """Reusable characters. A character costs 1 credit."""

    _cls, _key = Character, "characters"
    _list_request = staticmethod(ep.list_characters)

    async def prepare(self, *, name: str, image: UploadSource | None = None,
                      image_url: str | None = None) -> PreparedCreate:
        """Check a character's inputs without sending; InvalidInputError names the field."""
        fields = ep.character_create_fields(name=name, has_image=image is not None,
                                            image_url=image_url)
        uploads = []
        if image is not None:
            uploads.append(await prepare_upload("image", "image", image,
                                                allowed=IMAGE_CONTENT_TYPES,
                                                limits=self._limits))
        request = ep.create_character(fields, [_part(u) for u in uploads])
        return PreparedCreate(request, tuple(uploads))

    async def create(self, *, name: str, image: UploadSource | None = None,
                     image_url: str | None = None, on_upload: UploadProgress | None = None,
                     before_last_bytes: Callable[[], Awaitable[None]] | None = None
                     ) -> Character:
        """Create a character from ``image`` (PNG/JPG/WebP) or ``image_url`` (1 credit).

        Errors as for ``renders.create``; poll with ``wait(character.id)``.
        """
        prepared = await self.prepare(name=name, image=image, image_url=image_url)
        return await self._create(prepared, name, on_upload=on_upload,
                                  before_last_bytes=before_last_bytes)

    async def get(self, character_id: str) -> Character:
        """The character (``GET /api/characters/{id}``); NotFoundError when unknown."""
        return await self._get(ep.get_character(character_id), character_id)

    async def delete(self, character_id: str) -> None:
        """Delete the character (``DELETE /api/characters/{id}``); NotFoundError when unknown."""
        await self._delete(ep.delete_character(character_id))

    async def wait(self, character_id: str, *, poll_interval: float | None = None,
                   policy: PollPolicy | None = None, timeout: float | None = None,
                   on_progress: Callable[[Character], None] | None = None) -> Character:
        """Poll until ``ready``; returns it. The first poll is at once, then every 5 s,
        or every ``poll_interval`` seconds, or as ``policy`` says (ValueError for a
        ``poll_interval`` <= 0 or both given).

        Raises AssetFailedError on ``failed`` and WaitTimeoutError (``.last``) after
        ``timeout`` seconds; the job itself goes on.
        """
        return await self._wait_for(lambda: self.get(character_id), character_id,
                                    poll_interval=poll_interval, policy=policy,
                                    timeout=timeout, on_progress=on_progress)


class Scenes(_Assets[Scene]):
    """Scenes from a driving video or a template. Uploading is free.

    With a ``segments_cache``, a template's segments (which only the import answer lists)
    are kept on disk at import, added back by ``get``/``wait``, and dropped by ``delete``.
    """

    _cls, _key = Scene, "scenes"
    _list_request = staticmethod(ep.list_scenes)

    def __init__(self, http: RequestPath, *, limits: Limits,
                 segments_cache: SegmentsCache | None = None):
        super().__init__(http, limits=limits)
        self._segments = segments_cache

    async def prepare(self, *, name: str, video: UploadSource | None = None,
                      video_url: str | None = None, background_mode: str | None = None,
                      model: str | None = None) -> PreparedCreate:
        """Check a scene's inputs without sending; InvalidInputError names the field."""
        fields = ep.scene_create_fields(name=name, has_video=video is not None,
                                        video_url=video_url, background_mode=background_mode,
                                        model=model)
        uploads = []
        if video is not None:
            # docs/api/limits.md#limits: a scene video must be at least 0.5 s long.
            uploads.append(await prepare_upload("video", "video", video,
                                                allowed=VIDEO_CONTENT_TYPES,
                                                limits=self._limits, min_seconds=0.5))
        request = ep.create_scene(fields, [_part(u) for u in uploads])
        duration = uploads[0].video.duration_s if uploads and uploads[0].video else None
        return PreparedCreate(request, tuple(uploads), duration)

    async def create(self, *, name: str, video: UploadSource | None = None,
                     video_url: str | None = None, background_mode: str | None = None,
                     model: str | None = None, on_upload: UploadProgress | None = None,
                     before_last_bytes: Callable[[], Awaitable[None]] | None = None) -> Scene:
        """Preprocess a driving video into a reusable scene (the model binds for good).

        Errors as for ``renders.create``; poll with ``wait(scene.id)``.
        """
        prepared = await self.prepare(name=name, video=video, video_url=video_url,
                                      background_mode=background_mode, model=model)
        return await self._create(prepared, name, on_upload=on_upload,
                                  before_last_bytes=before_last_bytes)

    async def import_template(self, template_id: str, name: str | None = None, *,
                              before_last_bytes: Callable[[], Awaitable[None]] | None = None
                              ) -> Scene:
        """Import a viggle.ai template; multi-person templates carry ``segments``.

        ``before_last_bytes`` is awaited just before the request is sent (a journal's cue).
        Errors as for ``renders.create``.
        """
        request = ep.import_scene(template_id, name)
        defaults = {"name": name} if name is not None else {}
        scene = await self._http.call(request, self._http.parser(Scene, **defaults),
                                      before_last_bytes=before_last_bytes)
        if self._segments is not None and scene.segments:
            await self._segments.save(scene.id, scene.segments)  # never raises
        return scene

    async def get(self, scene_id: str) -> Scene:
        """The scene (``GET /api/scenes/{id}``); NotFoundError when unknown. A template's
        ``segments``, which Get Scene does not return, come from the segments cache."""
        scene = await self._get(ep.get_scene(scene_id), scene_id)
        if self._segments is not None and not scene.segments:
            cached = await self._segments.load(scene.id)
            if cached:
                scene = scene.with_segments(cached)
        return scene

    async def delete(self, scene_id: str) -> None:
        """Delete the scene (``DELETE /api/scenes/{id}``); NotFoundError when unknown."""
        await self._delete(ep.delete_scene(scene_id))
        if self._segments is not None:
            await self._segments.forget(scene_id)

    async def wait(self, scene_id: str, *, poll_interval: float | None = None,
                   policy: PollPolicy | None = None, timeout: float | None = None,
                   on_progress: Callable[[Scene], None] | None = None) -> Scene:
        """Poll until ``ready``; returns it. The first poll is at once, then every 5 s,
        or every ``poll_interval`` seconds, or as ``policy`` says (ValueError for a
        ``poll_interval`` <= 0 or both given).

        Raises AssetFailedError on ``failed`` and WaitTimeoutError (``.last``) after
        ``timeout`` seconds; the job itself goes on.
        """
        return await self._wait_for(lambda: self.get(scene_id), scene_id,
                                    poll_interval=poll_interval, policy=policy,
                                    timeout=timeout, on_progress=on_progress)
