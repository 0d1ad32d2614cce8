"""Pure media inspection: sniff image/video types, read MP4/MOV/AVI duration and size.

Shared by the client (local preflight before an upload) and the fake server (validating
uploads), so every function here must survive arbitrary bytes: the only exception that
escapes is :class:`MediaError`, every read is small and bounded, and every box walk
advances by at least one header per step so it always terminates.

File names are never trusted; only leading bytes decide the type (docs/api/limits.md#formats lists
the
formats: video MP4/MOV/WebM/AVI, images PNG/JPG/WebP; we accept the union).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

__all__ = [
    "IMAGE_CONTENT_TYPES",
    "SNIFF_BYTES",
    "VIDEO_CONTENT_TYPES",
    "MediaError",
    "VideoInfo",
    "probe_image",
    "probe_video",
    "sniff_image",
    "sniff_video",
]

IMAGE_CONTENT_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
VIDEO_CONTENT_TYPES = frozenset({"video/mp4", "video/quicktime", "video/webm", "video/x-msvideo"})

#: How many leading bytes :func:`sniff_image` and :func:`sniff_video` need.
SNIFF_BYTES = 32

# Upper bounds that keep a hostile file from costing time: boxes walked per level, and bytes
# read when looking for the AVI main header (it sits in the first ~100 bytes of real files).
_MAX_BOXES_PER_LEVEL = 100_000
_AVI_HEADER_WINDOW = 4096

# Top-level atoms a QuickTime file may start with when it has no `ftyp` (pre-2001 QuickTime).
_QT_LEADING_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})


class MediaError(ValueError):
    """A file is not media we can use.

    ``reason`` is ``"unsupported"`` (not a type we recognise) or ``"unreadable"`` (the type is
    recognised but its header is missing, truncated or malformed).
    """

    reason: Literal["unsupported", "unreadable"]

    def __init__(self, reason: Literal["unsupported", "unreadable"], message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What :func:`probe_video` learned; ``None`` means the header did not say."""

    content_type: str
    duration_s: float | None
    width: int | None
    height: int | None


def sniff_image(head: bytes) -> str | None:
    """Content type of an image from its first bytes (PNG, JPEG, WebP), or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def sniff_video(head: bytes) -> str | None:
    """Content type of a video from its first bytes (MP4, MOV, WebM/Matroska, AVI), or None."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        # The major brand decides: "qt  " is QuickTime, every other ISO-BMFF brand is MP4.
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    if len(head) >= 8 and head[4:8] in _QT_LEADING_ATOMS:
        return "video/quicktime"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        # Matroska and WebM share the EBML magic; both are sent as WebM.
        return "video/webm"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video/x-msvideo"
    return None


def probe_image(head: bytes) -> str:
    """Content type of an image from its first bytes; raises ``MediaError("unsupported")``."""
    content_type = sniff_image(head)
    if content_type is None:
        raise MediaError("unsupported", "not a PNG, JPEG or WebP image (checked the leading bytes)")
    return content_type


def probe_video(f: BinaryIO) -> VideoInfo:
    """Sniff and read the header of a seekable binary video file, from any position.

    MP4/MOV: duration from ``moov/mvhd``, size from the first ``trak/tkhd`` with one. AVI:
    from ``avih``. WebM: type only. Raises :class:`MediaError` for an unknown type or an
    unreadable header. The file position is left undefined.
    """
    try:
        end = f.seek(0, io.SEEK_END)
        f.seek(0)
        head = f.read(SNIFF_BYTES)
        content_type = sniff_video(head)
        if content_type is None:
            raise MediaError(
                "unsupported", "not an MP4, MOV, WebM or AVI video (checked the leading bytes)"
            )
        if content_type in ("video/mp4", "video/quicktime"):
            return _probe_isobmff(f, end, content_type)
        if content_type == "video/x-msvideo":
            return _probe_avi(f)
        return VideoInfo(content_type, None, None, None)
    except MediaError:
        raise
    except (OSError, ValueError, OverflowError, struct.error) as exc:
        # A closed or failing file object is reported like a broken file, so callers (and the
        # fake server) handle exactly one exception type.
        raise MediaError("unreadable", f"could not read the video: {exc}") from exc


# --- ISO base media (MP4) / QuickTime -------------------------------------------------------


def _unreadable(message: str) -> MediaError:
    return MediaError("unreadable", message)


def _read_exact(f: BinaryIO, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _unreadable(f"truncated file: {what} is cut short")
    return data


def _boxes(
    f: BinaryIO, start: int, stop: int, *, top_level: bool
) -> Iterator[tuple[bytes, int, int]]:
    """Yield ``(type, body_start, body_end)`` for each box in ``[start, stop)``, by seeking.

    Box bodies are never read here, so a huge ``mdat`` costs one seek.
    """
    pos = start
    for _ in range(_MAX_BOXES_PER_LEVEL):
        if stop - pos < 8:
            # Inside a container, QuickTime may end with a 4-byte zero terminator; tolerate it.
            # At top level, trailing junk just ends the walk (the caller reports the miss).
            return
        f.seek(pos)
        size, box_type = struct.unpack(">I4s", _read_exact(f, 8, "box header"))
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", _read_exact(f, 8, "64-bit box size"))
            header = 16
        elif size == 0:
            # Size 0 means "to the end of the enclosing space" (ISO/IEC 14496-12 §4.2).
            size = stop - pos
        if size < header:
            raise _unreadable(
                f"malformed box {box_type!r} at offset {pos}: size {size} < header {header}"
            )
        box_end = pos + size
        if box_end > stop:
            where = "file" if top_level else "its parent box"
            raise _unreadable(
                f"truncated file: box {box_type!r} at offset {pos} runs past the end of {where}"
            )
        yield box_type, pos + header, box_end
        pos = box_end
    raise _unreadable(f"more than {_MAX_BOXES_PER_LEVEL} boxes in one level")


def _probe_isobmff(f: BinaryIO, end: int, content_type: str) -> VideoInfo:
    for box_type, body, box_end in _boxes(f, 0, end, top_level=True):
        if box_type == b"moov":
            return _parse_moov(f, body, box_end, content_type)
    raise _unreadable("no movie header: the file has no 'moov' box (truncated upload?)")


def _parse_moov(f: BinaryIO, start: int, stop: int, content_type: str) -> VideoInfo:
    duration: float | None = None
    found_mvhd = False
    width: int | None = None
    height: int | None = None
    for box_type, body, box_end in _boxes(f, start, stop, top_level=False):
        if box_type == b"mvhd" and not found_mvhd:
            duration = _parse_mvhd(f, body, box_end)
            found_mvhd = True
        elif box_type == b"trak" and width is None:
            size = _trak_size(f, body, box_end)
            if size is not None:
                width, height = size
    if not found_mvhd:
        raise _unreadable("the 'moov' box has no 'mvhd' movie header")
    return VideoInfo(content_type, duration, width, height)


def _parse_mvhd(f: BinaryIO, start: int, stop: int) -> float | None:
    f.seek(start)
    version = _read_exact(f, 1, "mvhd")[0]
    if version == 0:
        layout, unknown = ">4x4xII", 0xFFFFFFFF
    elif version == 1:
        layout, unknown = ">8x8xIQ", 0xFFFFFFFFFFFFFFFF
    else:
        raise _unreadable(f"unknown mvhd version {version}")
    need = 3 + struct.calcsize(layout)
    if stop - start < 1 + need:
        raise _unreadable("the 'mvhd' box is too short")
    timescale, duration = struct.unpack(layout, _read_exact(f, need, "mvhd")[3:])
    if timescale == 0:
        raise _unreadable("the 'mvhd' timescale is 0")
    if duration == unknown:
        # All ones is the spec's "duration not known" (fragmented files).
        return None
    return float(duration / timescale)


def _trak_size(f: BinaryIO, start: int, stop: int) -> tuple[int, int] | None:
    for box_type, body, box_end in _boxes(f, start, stop, top_level=False):
        if box_type != b"tkhd":
            continue
        f.seek(body)
        version = _read_exact(f, 1, "tkhd")[0]
        # Width/height are the last 8 bytes of the box: offset 76 (v0) or 88 (v1) in the body.
        offset = {0: 76, 1: 88}.get(version)
        if offset is None or box_end - body < offset + 8:
            return None
        f.seek(body + offset)
        w, h = struct.unpack(">II", _read_exact(f, 8, "tkhd"))
        # 16.16 fixed point; audio tracks have 0x0 and are skipped by the caller.
        width, height = round(w / 65536), round(h / 65536)
        return (width, height) if width and height else None
    return None


# --- AVI ----------------------------------------------------------------------------------


def _probe_avi(f: BinaryIO) -> VideoInfo:
    f.seek(0)
    window = f.read(_AVI_HEADER_WINDOW)
    # The main AVI header ("avih", 56 bytes) is the first chunk of LIST hdrl in every writer we
    # know; searching a small window is simpler than walking RIFF lists and equally bounded.
    at = window.find(b"avih", 12)
    if at < 0 or len(window) < at + 8 + 40:
        return VideoInfo("video/x-msvideo", None, None, None)
    us_per_frame, total_frames = struct.unpack_from("<I12xI", window, at + 8)
    width, height = struct.unpack_from("<II", window, at + 8 + 32)
    duration = us_per_frame * total_frames / 1_000_000 if us_per_frame else None
    return VideoInfo("video/x-msvideo", duration, width or None, height or None)
