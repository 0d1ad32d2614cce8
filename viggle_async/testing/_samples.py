"""Synthetic media for tests, benchmarks and demos (stdlib only).

Every sample sniffs as its type with :mod:`viggle_async._media`; the MP4/MOV and AVI samples
also probe back to the duration and size asked for. None of them decodes to real frames: the
movie boxes carry headers only, which is all the client and the fake server read.
"""

from __future__ import annotations

import base64
import os
import struct
import zlib
from typing import Literal

__all__ = [
    "make_avi",
    "make_jpeg",
    "make_mp4",
    "make_png",
    "make_webm",
    "make_webp",
    "write_mp4",
]

# Movie timescale: 1000 units per second gives exact millisecond durations.
_TIMESCALE = 1000
_U32_MAX = 0xFFFFFFFF
_IDENTITY_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
# A real 1x1 lossless WebP (the widely used feature-detection sample).
_WEBP_1X1 = base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def make_png(width: int = 8, height: int = 8, rgb: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    """A valid, decodable PNG filled with one colour (8-bit RGB)."""
    if width < 1 or height < 1:
        raise ValueError(f"PNG size must be at least 1x1, got {width}x{height}")
    row = b"\x00" + bytes(rgb) * width  # filter byte 0 ("None") then the pixels
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(row * height))
        + _png_chunk(b"IEND", b"")
    )


def make_jpeg() -> bytes:
    """A small JPEG with plausible structure (SOI, APP0/JFIF, DQT, SOF0, EOI); sniffs as JPEG.

    It carries no scan data, so image decoders will reject it.
    """
    app0 = b"JFIF\x00" + struct.pack(">BBBHHBB", 1, 1, 0, 1, 1, 0, 0)
    dqt = b"\x00" + bytes([1] * 64)
    sof0 = struct.pack(">BHHB", 8, 8, 8, 1) + b"\x01\x11\x00"  # 8x8, one grey component

    def segment(marker: int, body: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body

    return (
        b"\xff\xd8" + segment(0xE0, app0) + segment(0xDB, dqt) + segment(0xC0, sof0) + b"\xff\xd9"
    )


def make_webp() -> bytes:
    """A real 1x1 lossless WebP (RIFF....WEBPVP8L)."""
    return _WEBP_1X1


# --- MP4 / MOV ------------------------------------------------------------------------------


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def _mvhd(duration: int, version: Literal[0, 1]) -> bytes:
    if version == 0:
        times = struct.pack(">IIII", 0, 0, _TIMESCALE, duration)
    else:
        times = struct.pack(">QQIQ", 0, 0, _TIMESCALE, duration)
    rest = (
        struct.pack(">IH10x", 0x10000, 0x100)  # rate 1.0, volume 1.0, reserved
        + _IDENTITY_MATRIX
        + bytes(24)  # pre_defined
        + struct.pack(">I", 2)  # next_track_ID
    )
    return _box(b"mvhd", struct.pack(">B3x", version) + times + rest)


def _tkhd(duration: int, width: int, height: int) -> bytes:
    body = (
        b"\x00\x00\x00\x03"  # version 0, flags: enabled | in movie
        + struct.pack(">IIIII", 0, 0, 1, 0, duration)  # times, track_ID 1, reserved, duration
        + struct.pack(">8xHHH2x", 0, 0, 0)  # reserved, layer, alternate group, volume
        + _IDENTITY_MATRIX
        + struct.pack(">II", width << 16, height << 16)  # 16.16 fixed point
    )
    return _box(b"tkhd", body)


def _movie_header(
    duration_s: float, width: int, height: int, brand: bytes, mvhd_version: Literal[0, 1]
) -> tuple[bytes, bytes]:
    """Return ``(ftyp, moov)`` boxes."""
    if len(brand) != 4:
        raise ValueError(f"brand must be 4 bytes, got {brand!r}")
    if not duration_s >= 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s}")
    if not (0 <= width <= 0xFFFF and 0 <= height <= 0xFFFF):
        raise ValueError(f"width and height must fit 16 bits, got {width}x{height}")
    duration = round(duration_s * _TIMESCALE)
    if mvhd_version == 0 and duration >= _U32_MAX:
        raise ValueError("duration too long for a version-0 mvhd; pass mvhd_version=1")
    compatible = [brand] if brand == b"qt  " else [brand, b"isom", b"mp41"]
    ftyp = _box(b"ftyp", brand + struct.pack(">I", 0x200) + b"".join(compatible))
    trak = _box(b"trak", _tkhd(min(duration, _U32_MAX - 1), width, height))
    moov = _box(b"moov", _mvhd(duration, mvhd_version) + trak)
    return ftyp, moov


def make_mp4(
    duration_s: float,
    *,
    width: int = 64,
    height: int = 64,
    brand: bytes = b"isom",
    payload: int = 1024,
    moov_first: bool = True,
    mvhd_version: Literal[0, 1] = 0,
) -> bytes:
    """A structurally valid MP4 (``brand=b"qt  "``: MOV) that probes back to these values.

    Layout: ftyp, moov (mvhd + one trak with tkhd), mdat of ``payload`` zero bytes; with
    ``moov_first=False`` the moov comes after the mdat, as many cameras write it.
    """
    ftyp, moov = _movie_header(duration_s, width, height, brand, mvhd_version)
    mdat = _box(b"mdat", bytes(payload))
    return ftyp + (moov + mdat if moov_first else mdat + moov)


def write_mp4(
    path: str | os.PathLike[str],
    duration_s: float,
    *,
    size: int | None = None,
    width: int = 64,
    height: int = 64,
    brand: bytes = b"isom",
    sparse: bool = True,
    mvhd_version: Literal[0, 1] = 0,
) -> int:
    """Write an MP4 of exactly ``size`` bytes (default: a 1 KiB mdat); return its size.

    The moov comes before the mdat, so probing never reads the tail. With ``sparse=True`` the
    mdat body is a hole made with truncate: a multi-GiB file costs no disk and no time (on
    file systems with sparse files). Sizes over 4 GiB use a 64-bit mdat size.
    """
    ftyp, moov = _movie_header(duration_s, width, height, brand, mvhd_version)
    head = ftyp + moov
    if size is None:
        size = len(head) + 8 + 1024
    mdat_size = size - len(head)
    if mdat_size < 8:
        raise ValueError(f"size {size} is too small; the headers alone take {len(head) + 8}")
    if mdat_size > _U32_MAX:
        mdat_header = struct.pack(">I4sQ", 1, b"mdat", mdat_size)
    else:
        mdat_header = struct.pack(">I4s", mdat_size, b"mdat")
    with open(path, "wb") as f:
        f.write(head + mdat_header)
        if sparse:
            f.truncate(size)
        else:
            remaining = size - f.tell()
            chunk = bytes(1 << 20)
            while remaining > 0:
                remaining -= f.write(chunk[: min(remaining, len(chunk))])
    return size


def make_webm() -> bytes:
    """A minimal WebM: an EBML header with DocType "webm" and an empty Segment."""
    fields = (
        b"\x42\x86\x81\x01"  # EBMLVersion 1
        b"\x42\xf7\x81\x01"  # EBMLReadVersion 1
        b"\x42\xf2\x81\x04"  # EBMLMaxIDLength 4
        b"\x42\xf3\x81\x08"  # EBMLMaxSizeLength 8
        b"\x42\x82\x84webm"  # DocType "webm"
        b"\x42\x87\x81\x04"  # DocTypeVersion 4
        b"\x42\x85\x81\x02"  # DocTypeReadVersion 2
    )
    header = b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(fields)]) + fields
    return header + b"\x18\x53\x80\x67\x80"  # Segment, size 0


def make_avi(duration_s: float = 1.0, *, width: int = 64, height: int = 64, fps: int = 25) -> bytes:
    """A minimal AVI (RIFF, LIST hdrl with avih, empty LIST movi) that probes to these values.

    The duration is rounded to whole frames at ``fps``.
    """
    if fps < 1 or not duration_s >= 0:
        raise ValueError(f"need fps >= 1 and duration_s >= 0, got {fps}, {duration_s}")
    us_per_frame = round(1_000_000 / fps)
    frames = round(duration_s * fps)
    avih = struct.pack("<14I", us_per_frame, 0, 0, 0x10, frames, 0, 1, 0, width, height, 0, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")

    hdrl = chunk(b"LIST", b"hdrl" + chunk(b"avih", avih))
    movi = chunk(b"LIST", b"movi")
    return chunk(b"RIFF", b"AVI " + hdrl + movi)
