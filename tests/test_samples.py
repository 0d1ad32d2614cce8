from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest

from viggle_async._media import VideoInfo, probe_video, sniff_image, sniff_video
from viggle_async.testing._samples import (
    make_avi,
    make_jpeg,
    make_mp4,
    make_png,
    make_webm,
    make_webp,
    write_mp4,
)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Parse a PNG, checking every CRC; return (type, data) pairs."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        pos += 12 + length
    return chunks


@pytest.mark.parametrize(("width", "height"), [(1, 1), (8, 8), (33, 5)])
def test_make_png_is_a_valid_png(width: int, height: int) -> None:
    chunks = png_chunks(make_png(width, height, rgb=(1, 2, 3)))
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBB", chunks[0][1][:10]) == (width, height, 8, 2)
    pixels = zlib.decompress(chunks[1][1])
    assert pixels == (b"\x00" + b"\x01\x02\x03" * width) * height


def test_make_png_rejects_empty_size() -> None:
    with pytest.raises(ValueError, match="at least 1x1"):
        make_png(0, 4)


def test_make_jpeg_structure() -> None:
    data = make_jpeg()
    assert data[:4] == b"\xff\xd8\xff\xe0" and data[6:11] == b"JFIF\x00"
    assert data.endswith(b"\xff\xd9")
    # Walk the marker segments: each length must land exactly on the next marker.
    pos = 2
    while data[pos : pos + 2] != b"\xff\xd9":
        assert data[pos] == 0xFF
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    assert pos == len(data) - 2


def test_make_webp_riff_size_matches() -> None:
    data = make_webp()
    assert data[8:15] == b"WEBPVP8"
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8


@pytest.mark.parametrize(
    ("data", "expected"),
    [(make_png(), "image/png"), (make_jpeg(), "image/jpeg"), (make_webp(), "image/webp")],
)
def test_images_sniff(data: bytes, expected: str) -> None:
    assert sniff_image(data) == expected
    assert sniff_video(data) is None


def test_make_mp4_layout_and_payload() -> None:
    data = make_mp4(2.0, payload=5000)
    kinds, pos = [], 0
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        kinds.append((kind, size))
        pos += size
    assert pos == len(data)
    assert [k for k, _ in kinds] == [b"ftyp", b"moov", b"mdat"]
    assert kinds[2][1] == 8 + 5000
    late = make_mp4(2.0, payload=5000, moov_first=False)
    assert late[kinds[0][1] + 4 : kinds[0][1] + 8] == b"mdat"


@pytest.mark.parametrize("bad", [{"brand": b"mp4"}, {"duration_s": -1.0}, {"width": 70_000}])
def test_make_mp4_rejects_bad_arguments(bad: dict[str, object]) -> None:
    kwargs: dict[str, object] = {"duration_s": 1.0, **bad}
    with pytest.raises(ValueError):
        make_mp4(**kwargs)  # type: ignore[arg-type]


def test_make_mp4_long_duration_needs_version_1() -> None:
    with pytest.raises(ValueError, match="mvhd_version=1"):
        make_mp4(5_000_000.0)
    info = probe_video(io.BytesIO(make_mp4(5_000_000.0, mvhd_version=1)))
    assert info.duration_s == 5_000_000.0


def test_write_mp4_default_size(tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    size = write_mp4(path, 1.5)
    assert path.stat().st_size == size
    assert path.read_bytes() == make_mp4(1.5)  # same layout, 1 KiB zero payload


@pytest.mark.parametrize("sparse", [True, False])
def test_write_mp4_exact_size(tmp_path: Path, sparse: bool) -> None:
    path = tmp_path / "b.mov"
    assert write_mp4(path, 9.0, size=300_000, brand=b"qt  ", sparse=sparse) == 300_000
    data = path.read_bytes()
    assert len(data) == 300_000
    with open(path, "rb") as f:
        assert probe_video(f) == VideoInfo("video/quicktime", 9.0, 64, 64)


def test_write_mp4_sparse_and_dense_are_identical(tmp_path: Path) -> None:
    write_mp4(tmp_path / "s.mp4", 3.0, size=2_500_001, sparse=True)
    write_mp4(tmp_path / "d.mp4", 3.0, size=2_500_001, sparse=False)
    assert (tmp_path / "s.mp4").read_bytes() == (tmp_path / "d.mp4").read_bytes()


def test_write_mp4_over_4gib_uses_largesize(tmp_path: Path) -> None:
    path = tmp_path / "huge.mp4"
    size = 4 * 2**30 + 12345
    assert write_mp4(path, 60.0, size=size, width=3840, height=2160) == size
    assert path.stat().st_size == size
    # Sparse: the holes cost (next to) no disk.
    assert path.stat().st_blocks * 512 < 1 << 20
    with open(path, "rb") as f:
        assert probe_video(f) == VideoInfo("video/mp4", 60.0, 3840, 2160)
        f.seek(0)
        head = f.read(4096)
    mdat_at = head.index(b"mdat") - 4
    assert struct.unpack(">I4sQ", head[mdat_at : mdat_at + 16]) == (1, b"mdat", size - mdat_at)


def test_write_mp4_too_small(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too small"):
        write_mp4(tmp_path / "c.mp4", 1.0, size=50)


def test_make_webm_sniffs_and_has_doctype() -> None:
    data = make_webm()
    assert sniff_video(data) == "video/webm"
    assert b"\x42\x82\x84webm" in data
    assert data[4] == 0x80 | (len(data) - 5 - 5)  # EBML header size covers its fields


@pytest.mark.parametrize(("duration", "fps", "expected"), [(1.0, 25, 1.0), (2.01, 10, 2.0)])
def test_make_avi_rounds_to_whole_frames(duration: float, fps: int, expected: float) -> None:
    data = make_avi(duration, fps=fps)
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
    info = probe_video(io.BytesIO(data))
    assert info.duration_s == pytest.approx(expected)
    assert (info.content_type, info.width, info.height) == ("video/x-msvideo", 64, 64)
