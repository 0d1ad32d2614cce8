"""Upload sources: what a caller may pass as a file, checked before anything is sent.

A source is a path, bytes, a binary file object or an async byte iterator. Preflight
reads only the header (content type by magic bytes, MP4/MOV duration and size from
``_media``) and applies the API's limits (docs/api/limits.md#limits,
docs/api/errors.md#error-codes), so a too-long,
too-large, unsupported or unreadable video fails locally with the documented code.
Every send attempt gets a fresh chunk stream (files are reopened or re-seeked); a
one-shot source (async iterator, unseekable file) refuses a second attempt.
"""

from __future__ import annotations

import io
import os
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

import anyio
import attrs

from ._errors import InvalidInputError
from ._media import SNIFF_BYTES, MediaError, VideoInfo, probe_video, sniff_image, sniff_video

__all__ = ["Limits", "Upload", "UploadSource", "prepare_upload"]

UploadSource = (
    str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO | AsyncIterable[bytes]
)
MediaKind = Literal["image", "video"]

CHUNK_SIZE = 256 * 1024

_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "video/mp4": "mp4",
        "video/quicktime": "mov", "video/webm": "webm", "video/x-msvideo": "avi"}
_LABEL = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WebP", "video/mp4": "MP4",
          "video/quicktime": "MOV", "video/webm": "WebM", "video/x-msvideo": "AVI"}


@attrs.frozen
class Limits:
    """The API's documented limits; a client setting so big benchmarks can raise them."""

    max_video_seconds: float = 300.0
    max_upload_bytes: int = 500 * 1024 * 1024
    max_resolution: int = 4096


@attrs.define
class Upload:
    """A checked upload: sniffed type, size when known, video facts when readable."""

    field: str
    filename: str
    content_type: str
    size: int | None
    video: VideoInfo | None
    _kind: str = attrs.field(alias="kind")  # "path" | "bytes" | "file" | "aiter"
    _value: Any = attrs.field(alias="value", repr=False)
    _start: int = attrs.field(default=0, alias="start")
    _head: bytes = attrs.field(default=b"", alias="head", repr=False)
    _used: bool = attrs.field(default=False, init=False)

    @property
    def one_shot(self) -> bool:
        """True when the bytes can be sent only once (an async iterator, unseekable file)."""
        return self._kind == "aiter" or (self._kind == "file" and self._start < 0)

    @property
    def consumed_once(self) -> bool:
        """True when a one-shot source has been read and cannot be sent again."""
        return self.one_shot and self._used

    async def chunks(self, chunk_size: int = CHUNK_SIZE) -> AsyncGenerator[bytes, None]:
        """A fresh stream of the bytes for one send attempt."""
        if self.one_shot and self._used:
            raise InvalidInputError(self.field, "a one-shot stream cannot be sent twice",
                                    "pass a path, bytes or a seekable file to allow resends")
        self._used = True
        if self._kind == "bytes":
            view = memoryview(self._value)
            for pos in range(0, len(view), chunk_size):
                yield bytes(view[pos:pos + chunk_size])
        elif self._kind == "path":
            # Opened on the loop, not in a worker thread: aiohttp cancels the body writer
            # with a plain task.cancel() when the answer comes first (a 429 before the body
            # is read), which no anyio shield stops, and a file opened by a thread whose
            # result was abandoned would leak. Opening is quick; reading stays threaded.
            f = open(self._value, "rb")  # noqa: ASYNC230, SIM115
            try:
                while chunk := await anyio.to_thread.run_sync(f.read, chunk_size):
                    yield chunk
            finally:
                f.close()
        elif self._kind == "file":
            f = self._value
            if self._start >= 0:
                await anyio.to_thread.run_sync(f.seek, self._start)
            else:
                if self._head:
                    yield self._head
            while chunk := await anyio.to_thread.run_sync(f.read, chunk_size):
                yield chunk
        else:
            if self._head:
                yield self._head
            async for chunk in self._value:
                if chunk:
                    yield bytes(chunk)


def _fail(field: str, problem: str, fix: str, code: str | None = None) -> InvalidInputError:
    return InvalidInputError(field, problem, fix, error_code=code)


def _check_type(field: str, kind: MediaKind, head: bytes, allowed: frozenset[str]) -> str:
    sniffed = sniff_image(head) if kind == "image" else sniff_video(head)
    names = ", ".join(sorted(_LABEL[t] for t in allowed))
    if sniffed is None or sniffed not in allowed:
        what = _LABEL.get(sniffed or "", "an unrecognised format")
        if sniffed is None:
            # The usual mix-up is the other field's file (a video as ref_image): say so.
            other = sniff_video(head) if kind == "image" else sniff_image(head)
            if other is not None:
                what = (f"{_LABEL[other]} {'video' if kind == 'image' else 'image'} data, "
                        f"not {'an image' if kind == 'image' else 'a video'}")
        code = "CS-ORIV-003" if kind == "video" else "CS-UORC01-002"
        raise _fail(field, f"is {what} (content sniffed from its first bytes)",
                    f"send {'an image' if kind == 'image' else 'a video'} file: {names}",
                    code)
    return sniffed


def _check_video(field: str, info: VideoInfo, limits: Limits, min_seconds: float) -> None:
    if info.duration_s is not None and info.duration_s > limits.max_video_seconds:
        raise _fail(field, f"is {info.duration_s:.1f} s long, over the "
                    f"{limits.max_video_seconds:g} s limit",
                    "trim it under the limit (the API allows 5 minutes)", "CS-ORIV-004")
    if info.duration_s is not None and info.duration_s < min_seconds:
        raise _fail(field, f"is {info.duration_s:.2f} s long, under {min_seconds:g} s",
                    f"send a video at least {min_seconds:g} s long", "CS-UORC01-002")
    side = max(info.width or 0, info.height or 0)
    if side > limits.max_resolution:
        raise _fail(field, f"is {info.width}x{info.height}, over "
                    f"{limits.max_resolution}x{limits.max_resolution}",
                    "downscale the video", "CS-ORIV-006")


def _probe_sync(field: str, kind: MediaKind, source: Any, allowed: frozenset[str],
                limits: Limits, min_seconds: float) -> Upload:
    """Blocking part of preflight (stat + header reads); run in a worker thread."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise _fail(field, f"{str(path)!r} is not a regular file", "pass a file path")
            with path.open("rb") as f:
                head = f.read(SNIFF_BYTES)
                info = _inspect(field, kind, f, head, allowed, size, limits, min_seconds)
        except FileNotFoundError:
            raise _fail(field, f"file not found: {str(path)!r}", "check the path") from None
        except PermissionError:
            raise _fail(field, f"cannot read {str(path)!r} (permission denied)",
                        "make the file readable") from None
        ctype = info[0]
        return Upload(field, path.name or f"{field}.{_EXT[ctype]}", ctype, size, info[1],
                      kind="path", value=path)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        ctype, video = _inspect(field, kind, io.BytesIO(data), data[:SNIFF_BYTES], allowed,
                                len(data), limits, min_seconds)
        return Upload(field, f"{field}.{_EXT[ctype]}", ctype, len(data), video, kind="bytes",
                      value=data)
    # A binary file object the caller opened; we never close it.
    if isinstance(source, io.TextIOBase) or "b" not in getattr(source, "mode", "b"):
        raise _fail(field, "is a text-mode file", "open the file with open(path, 'rb')")
    # A file's ``name`` is its path, or an int (a descriptor: os.fdopen, tempfile's spooled
    # files on disk) or missing; only a path names the upload.
    raw_name = getattr(source, "name", None)
    name = Path(os.fsdecode(raw_name)).name if isinstance(raw_name, (str, bytes)) else ""
    seekable = bool(getattr(source, "seekable", lambda: False)())
    if not seekable:
        head = source.read(SNIFF_BYTES)
        ctype = _check_type(field, kind, head, allowed)
        return Upload(field, name or f"{field}.{_EXT[ctype]}", ctype, None, None, kind="file",
                      value=source, start=-1, head=head)
    start = source.tell()
    end = source.seek(0, os.SEEK_END)
    source.seek(start)
    head = source.read(SNIFF_BYTES)
    source.seek(start)
    window = cast(BinaryIO, _Window(source, start))
    ctype, video = _inspect(field, kind, window, head, allowed, end - start, limits, min_seconds)
    source.seek(start)
    return Upload(field, name or f"{field}.{_EXT[ctype]}", ctype, end - start, video,
                  kind="file", value=source, start=start)


def _inspect(field: str, kind: MediaKind, f: BinaryIO, head: bytes, allowed: frozenset[str],
             size: int, limits: Limits, min_seconds: float) -> tuple[str, VideoInfo | None]:
    if size == 0:
        raise _fail(field, "is empty", "send a non-empty file",
                    "CS-ORIV-007" if kind == "video" else "CS-UORC01-002")
    ctype = _check_type(field, kind, head, allowed)
    if kind == "image":
        return ctype, None
    if size > limits.max_upload_bytes:
        raise _fail(field, f"is {size / 2**20:.1f} MiB, over the "
                    f"{limits.max_upload_bytes / 2**20:g} MiB limit",
                    "compress or trim the video (the API allows 500 MB)", "CS-ORIV-005")
    try:
        f.seek(0)
        info = probe_video(f)
    except MediaError as exc:
        raise _fail(field, f"cannot be read as {_LABEL[ctype]}: {exc}",
                    "send a valid, complete video file", "CS-ORIV-007") from None
    _check_video(field, info, limits, min_seconds)
    return ctype, info


class _Window(io.RawIOBase):
    """A caller's file seen from its current position, so probing is position-relative."""

    def __init__(self, f: BinaryIO, start: int):
        self._f, self._start = f, start

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            offset += self._start
        return self._f.seek(offset, whence) - self._start

    def tell(self) -> int:
        return self._f.tell() - self._start

    def read(self, size: int = -1) -> bytes:
        return self._f.read(size)

    def readinto(self, buffer: Any) -> int:
        data = self._f.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


async def prepare_upload(field: str, kind: MediaKind, source: UploadSource, *,
                         allowed: frozenset[str], limits: Limits,
                         min_seconds: float = 0.0) -> Upload:
    """Check a source against the API's rules; raises InvalidInputError naming ``field``."""
    if isinstance(source, AsyncIterable):
        iterator = aiter(source)
        head = b""
        # Peek enough bytes to sniff, then hand them back first when sending.
        async for chunk in iterator:
            head += bytes(chunk)
            if len(head) >= SNIFF_BYTES:
                break
        ctype = _check_type(field, kind, head, allowed)
        return Upload(field, f"{field}.{_EXT[ctype]}", ctype, None, None, kind="aiter",
                      value=_rest(iterator), head=head)
    if isinstance(source, str) and not source:
        raise _fail(field, "is an empty path", "pass a file path, bytes or a binary file")
    if not isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)) and not hasattr(
            source, "read"):
        raise _fail(field, f"unsupported type {type(source).__name__}",
                    "pass a path, bytes, a binary file object or an async byte iterator")
    return await anyio.to_thread.run_sync(_probe_sync, field, kind, source, allowed, limits,
                                          min_seconds)


async def _rest(iterator: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in iterator:
        yield chunk
