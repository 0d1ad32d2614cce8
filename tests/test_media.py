from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from viggle_async._media import (
    IMAGE_CONTENT_TYPES,
    SNIFF_BYTES,
    VIDEO_CONTENT_TYPES,
    MediaError,
    VideoInfo,
    probe_image,
    probe_video,
    sniff_image,
    sniff_video,
)
from viggle_async.testing._samples import (
    make_avi,
    make_jpeg,
    make_mp4,
    make_png,
    make_webm,
    make_webp,
    write_mp4,
)


def box(kind: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


FTYP = box(b"ftyp", b"isom\x00\x00\x02\x00isom")


def split_header(data: bytes) -> tuple[bytes, bytes]:
    """Split a moov-first make_mp4() result into its ftyp and moov boxes."""
    ftyp_size = struct.unpack(">I", data[:4])[0]
    moov_size = struct.unpack(">I", data[ftyp_size : ftyp_size + 4])[0]
    return data[:ftyp_size], data[ftyp_size : ftyp_size + moov_size]


def probe_bytes(data: bytes) -> VideoInfo:
    return probe_video(io.BytesIO(data))


def expect_error(data: bytes, reason: Literal["unsupported", "unreadable"]) -> MediaError:
    with pytest.raises(MediaError) as info:
        probe_bytes(data)
    assert info.value.reason == reason
    return info.value


class CountingReader(io.BufferedReader):
    """A real file whose reads are counted, to prove the probe seeks past bodies."""

    bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


# --- sniffing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (make_png(), "image/png"),
        (make_jpeg(), "image/jpeg"),
        (make_webp(), "image/webp"),
        (b"\xff\xd8\xff\xe1", "image/jpeg"),  # EXIF JPEG
        (b"", None),
        (b"\x89PN", None),
        (b"RIFF\x00\x00\x00\x00WAVE", None),
        (b"RIFF\x00\x00", None),
        (make_mp4(1.0), None),
        (b"GIF89a" + bytes(20), None),
        (b"<html>" * 10, None),
    ],
)
def test_sniff_image(head: bytes, expected: str | None) -> None:
    assert sniff_image(head[:SNIFF_BYTES]) == expected


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (make_mp4(1.0), "video/mp4"),
        (make_mp4(1.0, brand=b"mp42"), "video/mp4"),
        (make_mp4(1.0, brand=b"M4V "), "video/mp4"),
        (make_mp4(1.0, brand=b"qt  "), "video/quicktime"),
        (box(b"moov") + FTYP, "video/quicktime"),
        (box(b"mdat", bytes(8)), "video/quicktime"),
        (box(b"wide") + box(b"mdat"), "video/quicktime"),
        (box(b"free"), "video/quicktime"),
        (make_webm(), "video/webm"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x82\x88matroska", "video/webm"),
        (make_avi(), "video/x-msvideo"),
        (b"", None),
        (b"\x00\x00\x00\x18ftyp", None),  # too short to hold a brand
        (b"\x1a\x45\xdf", None),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", None),
        (make_png(), None),
        (bytes(64), None),
        (b"ftypisom" * 4, None),  # "ftyp" at the wrong offset
    ],
)
def test_sniff_video(head: bytes, expected: str | None) -> None:
    assert sniff_video(head[:SNIFF_BYTES]) == expected


def test_sniffers_only_return_declared_content_types() -> None:
    assert {sniff_image(x) for x in (make_png(), make_jpeg(), make_webp())} == IMAGE_CONTENT_TYPES
    videos = (make_mp4(1), make_mp4(1, brand=b"qt  "), make_webm(), make_avi())
    assert {sniff_video(x) for x in videos} == VIDEO_CONTENT_TYPES


def test_probe_image() -> None:
    assert probe_image(make_png()[:SNIFF_BYTES]) == "image/png"
    with pytest.raises(MediaError) as info:
        probe_image(b"GIF89a")
    assert info.value.reason == "unsupported"
    assert isinstance(info.value, ValueError)
    assert "PNG, JPEG or WebP" in str(info.value)


# --- MP4 / MOV round trips -------------------------------------------------------------------


@pytest.mark.parametrize("duration", [0.0, 0.5, 1.0, 6.667, 299.999, 3600.25])
@pytest.mark.parametrize("brand", [b"isom", b"mp42", b"qt  "])
@pytest.mark.parametrize("moov_first", [True, False])
@pytest.mark.parametrize("mvhd_version", [0, 1])
def test_probe_round_trip(
    duration: float, brand: bytes, moov_first: bool, mvhd_version: Literal[0, 1]
) -> None:
    data = make_mp4(
        duration,
        brand=brand,
        moov_first=moov_first,
        mvhd_version=mvhd_version,
        width=1920,
        height=1080,
    )
    info = probe_bytes(data)
    assert info.content_type == ("video/quicktime" if brand == b"qt  " else "video/mp4")
    assert info.duration_s == pytest.approx(duration, abs=1e-3)
    assert (info.width, info.height) == (1920, 1080)


def test_probe_ignores_current_position() -> None:
    f = io.BytesIO(make_mp4(2.5))
    f.seek(17)
    assert probe_video(f).duration_s == 2.5


def test_probe_hand_written_version1_mvhd_with_odd_timescale() -> None:
    # 64-bit fields: creation, modification (8 each), timescale (4), duration (8).
    mvhd = box(b"mvhd", b"\x01\x00\x00\x00" + struct.pack(">QQIQ", 1, 2, 90_000, 5 * 2**32))
    info = probe_bytes(FTYP + box(b"moov", mvhd) + box(b"mdat", b"x"))
    assert info.duration_s == pytest.approx(5 * 2**32 / 90_000)
    assert (info.width, info.height) == (None, None)


def test_probe_skips_audio_track_for_size() -> None:
    ftyp, moov = split_header(make_mp4(1.0, width=0, height=0))
    # moov body = mvhd (a 108-byte box) + one trak; graft a video trak after the 0x0 one.
    mvhd, audio_trak = moov[8:116], moov[116:]
    video_trak = split_header(make_mp4(1.0, width=640, height=360))[1][116:]
    info = probe_bytes(ftyp + box(b"moov", mvhd + audio_trak + video_trak))
    assert (info.width, info.height) == (640, 360)


def test_probe_unknown_duration_is_none() -> None:
    mvhd = box(b"mvhd", b"\x00" * 4 + struct.pack(">IIII", 0, 0, 1000, 0xFFFFFFFF))
    assert probe_bytes(FTYP + box(b"moov", mvhd)).duration_s is None


def test_probe_moov_with_size_zero_extends_to_end_of_file() -> None:
    ftyp, moov = split_header(make_mp4(4.0))
    data = ftyp + b"\x00\x00\x00\x00" + moov[4:]
    assert probe_bytes(data).duration_s == 4.0


def test_probe_tolerates_quicktime_zero_terminator_in_moov() -> None:
    ftyp, moov = split_header(make_mp4(4.0, brand=b"qt  "))
    assert probe_bytes(ftyp + box(b"moov", moov[8:] + b"\x00" * 4)).duration_s == 4.0


# --- MP4 / MOV failures ----------------------------------------------------------------------


def test_probe_unsupported() -> None:
    err = expect_error(make_png(), "unsupported")
    assert "MP4, MOV, WebM or AVI" in str(err)
    expect_error(b"", "unsupported")


@pytest.mark.parametrize("cut", [12, 24, 40, 100, 150])
def test_probe_truncated_header_is_unreadable(cut: int) -> None:
    expect_error(make_mp4(3.0)[:cut], "unreadable")


def test_probe_moov_after_truncated_mdat_is_unreadable() -> None:
    data = make_mp4(3.0, moov_first=False, payload=5000)
    err = expect_error(data[:3000], "unreadable")
    assert "truncated" in str(err)


def test_probe_missing_moov() -> None:
    err = expect_error(FTYP + box(b"mdat", bytes(100)), "unreadable")
    assert "moov" in str(err)


def test_probe_moov_without_mvhd() -> None:
    expect_error(FTYP + box(b"moov", box(b"trak")), "unreadable")


def test_probe_top_level_box_size_zero_without_moov_terminates() -> None:
    expect_error(FTYP + b"\x00\x00\x00\x00mdat" + bytes(64), "unreadable")


def test_probe_child_box_size_zero_swallows_the_rest_of_moov() -> None:
    ftyp, moov = split_header(make_mp4(1.0))
    expect_error(ftyp + box(b"moov", b"\x00\x00\x00\x00free" + moov[8:]), "unreadable")


@pytest.mark.parametrize(
    "bad",
    [
        struct.pack(">I4s", 4, b"free"),
        struct.pack(">I4s", 7, b"free"),
        struct.pack(">I4sQ", 1, b"free", 12),  # 64-bit size smaller than its 16-byte header
    ],
)
def test_probe_box_smaller_than_header(bad: bytes) -> None:
    err = expect_error(FTYP + bad + bytes(32), "unreadable")
    assert "malformed" in str(err)


def test_probe_largesize_past_end_of_file() -> None:
    bad = struct.pack(">I4sQ", 1, b"mdat", 2**63)
    expect_error(FTYP + bad + bytes(32), "unreadable")


def test_probe_zero_timescale() -> None:
    mvhd = box(b"mvhd", bytes(4) + struct.pack(">IIII", 0, 0, 0, 1000))
    assert "timescale" in str(expect_error(FTYP + box(b"moov", mvhd), "unreadable"))


@pytest.mark.parametrize("body", [b"\x02" + bytes(40), b"\x00" + bytes(10), b""])
def test_probe_bad_mvhd(body: bytes) -> None:
    expect_error(FTYP + box(b"moov", box(b"mvhd", body)), "unreadable")


def test_probe_many_tiny_boxes_is_bounded() -> None:
    # 200k empty "free" boxes: the walk gives up instead of spending unbounded time.
    expect_error(FTYP + box(b"free") * 200_000, "unreadable")


def test_probe_closed_file() -> None:
    f = io.BytesIO(make_mp4(1.0))
    f.close()
    with pytest.raises(MediaError) as info:
        probe_video(f)
    assert info.value.reason == "unreadable"


# --- large sparse files ----------------------------------------------------------------------


def test_probe_2gib_sparse_file_reads_only_headers(tmp_path: Path) -> None:
    path = tmp_path / "big.mp4"
    size = write_mp4(path, 12.5, size=2 * 2**30, width=720, height=1280)
    assert path.stat().st_size == size == 2 * 2**30
    with CountingReader(io.FileIO(path, "rb")) as f:
        info = probe_video(f)
        assert f.bytes_read < 64 * 1024
    assert info == VideoInfo("video/mp4", 12.5, 720, 1280)


def test_probe_moov_after_5gib_mdat_seeks_past_it(tmp_path: Path) -> None:
    ftyp, moov = split_header(make_mp4(42.0, brand=b"qt  "))
    mdat_size = 5 * 2**30
    path = tmp_path / "tail.mov"
    with open(path, "wb") as f:
        f.write(ftyp + struct.pack(">I4sQ", 1, b"mdat", mdat_size))
        f.seek(len(ftyp) + mdat_size)
        f.write(moov)
    assert os.path.getsize(path) == len(ftyp) + mdat_size + len(moov)
    with CountingReader(io.FileIO(path, "rb")) as f:
        info = probe_video(f)
        assert f.bytes_read < 64 * 1024
    assert info == VideoInfo("video/quicktime", 42.0, 64, 64)


# --- AVI / WebM ------------------------------------------------------------------------------


@pytest.mark.parametrize("duration", [0.04, 1.0, 7.2, 300.0])
def test_probe_avi(duration: float) -> None:
    info = probe_bytes(make_avi(duration, width=320, height=240))
    assert info.content_type == "video/x-msvideo"
    assert info.duration_s == pytest.approx(duration)
    assert (info.width, info.height) == (320, 240)


def test_probe_avi_without_main_header_has_unknown_fields() -> None:
    data = b"RIFF\x04\x00\x00\x00AVI "
    assert probe_bytes(data) == VideoInfo("video/x-msvideo", None, None, None)


def test_probe_webm_gives_type_only() -> None:
    assert probe_bytes(make_webm()) == VideoInfo("video/webm", None, None, None)


# --- fuzz ------------------------------------------------------------------------------------

_VALID = make_mp4(3.0, moov_first=False, payload=16)


@st.composite
def mutated_mp4(draw: st.DrawFn) -> bytes:
    data = bytearray(_VALID[: draw(st.integers(0, len(_VALID)))])
    for _ in range(draw(st.integers(0, 6))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=256),
        st.binary(max_size=256).map(lambda b: FTYP + b),
        st.binary(max_size=256).map(lambda b: b"RIFF\x00\x00\x00\x00AVI " + b),
        mutated_mp4(),
    )
)
def test_probe_fuzz_only_raises_media_error(data: bytes) -> None:
    try:
        info = probe_bytes(data)
    except MediaError as exc:
        assert exc.reason in ("unsupported", "unreadable")
    else:
        assert info.content_type in VIDEO_CONTENT_TYPES
        assert info.duration_s is None or info.duration_s >= 0
