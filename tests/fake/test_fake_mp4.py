"""The fake CDN's playable outputs: lossless I_PCM H.264 MP4s, decoded back with PyAV (FFmpeg).

I_PCM is lossless, so a decoder must return exactly the samples written: every test compares
pixels, frame count, size and timestamps, not just headers.
"""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path

import av
import pytest
from fakeapi import Api, ManualClock

import viggle_async
import viggle_async.testing
from viggle_async import _media
from viggle_async.testing import FakeViggle, make_mp4, make_png
from viggle_async.testing._mp4 import YuvFrame, job_video, pattern_frames, write_h264_mp4


def _decode(data: bytes | Path) -> tuple[list[YuvFrame], int, int, float, list[float]]:
    """(frames as tight planes, width, height, movie seconds, frame start times in seconds)."""
    source = str(data) if isinstance(data, Path) else io.BytesIO(data)
    with av.open(source) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames, starts = [], []
        for frame in container.decode(stream):
            assert frame.format.name == "yuv420p"
            planes = []
            for plane, (w, h) in zip(
                frame.planes,
                ((frame.width, frame.height), (frame.width // 2, frame.height // 2),
                 (frame.width // 2, frame.height // 2)),
                strict=True,
            ):
                raw = bytes(plane)
                planes.append(b"".join(raw[r * plane.line_size : r * plane.line_size + w]
                                       for r in range(h)))
            frames.append(YuvFrame(*planes))
            assert frame.pts is not None and frame.time_base is not None
            starts.append(float(frame.pts * frame.time_base))
        assert container.duration is not None
        return frames, stream.width, stream.height, container.duration / 1e6, starts


def _random_frames(rng: random.Random, n: int, width: int, height: int) -> list[YuvFrame]:
    chroma = (width // 2) * (height // 2)
    return [YuvFrame(rng.randbytes(width * height), rng.randbytes(chroma), rng.randbytes(chroma))
            for _ in range(n)]


# -- the writer ------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height", "durations"), [
    (16, 16, [1000]),  # one macroblock, one frame
    (64, 64, [125] * 8),  # 8 fps, one second
    (48, 32, [40, 60, 100, 100, 33]),  # not square, uneven frame times
    (128, 16, [1, 2, 3]),  # one row of macroblocks, 1 ms frames
])
def test_every_frame_decodes_to_exactly_the_samples_written(
    width: int, height: int, durations: list[int]
) -> None:
    frames = _random_frames(random.Random(f"{width}x{height}"), len(durations), width, height)
    data = write_h264_mp4(frames, width, height, durations)
    decoded, w, h, seconds, starts = _decode(data)
    assert (w, h) == (width, height)
    assert decoded == frames
    assert seconds == pytest.approx(sum(durations) / 1000)
    assert starts == pytest.approx([sum(durations[:i]) / 1000 for i in range(len(durations))])
    info = _media.probe_video(io.BytesIO(data))
    assert (info.content_type, info.width, info.height) == ("video/mp4", width, height)
    assert info.duration_s == pytest.approx(sum(durations) / 1000)


@pytest.mark.parametrize("fill", [0x00, 0x01, 0x03, 0xFF])
def test_samples_that_look_like_start_codes_survive(fill: int) -> None:
    # Runs of 00 00 0x inside a NAL unit must be escaped (H.264 7.4.1) or a decoder splits
    # the slice there; samples of 0..3 and all-ones are the edge cases.
    plane = bytes([fill]) * 256
    frames = [YuvFrame(plane, plane[:64], bytes([fill ^ 1]) * 64),
              YuvFrame(b"\x00\x00\x01\x00" * 64, b"\x00\x00\x03" * 21 + b"\x00", plane[:64])]
    decoded, *_ = _decode(write_h264_mp4(frames, 16, 16, [500, 500]))
    assert decoded == frames


def test_the_boxes_a_player_needs_are_there() -> None:
    data = write_h264_mp4(_random_frames(random.Random(1), 3, 32, 32), 32, 32, [100, 100, 50])
    assert data[4:8] == b"ftyp" and data[8:12] == b"isom" and b"avc1" in data[16:32]
    moov = data.index(b"moov")
    for box in (b"mvhd", b"tkhd", b"mdhd", b"hdlr", b"avc1", b"avcC", b"stts", b"stss", b"stsc",
                b"stsz", b"stco"):
        assert data.find(box, moov) > 0, box
    # Constrained Baseline, level 3.0 in the avcC; all three frames are sync samples.
    avcc = data.index(b"avcC") + 4
    assert data[avcc : avcc + 4] == bytes([1, 66, 0xC0, 30])
    stss = data.index(b"stss") + 8
    assert struct.unpack_from(">4I", data, stss) == (3, 1, 2, 3)
    assert data.index(b"moov") < data.index(b"mdat")  # a player never seeks to the end


@pytest.mark.parametrize("size", [10_000, 100_000, 5 * 2**30 + 3])
def test_a_bigger_file_is_padded_after_the_frames_and_still_plays(
    size: int, tmp_path: Path
) -> None:
    frames = _random_frames(random.Random(size), 4, 32, 32)
    head = write_h264_mp4(frames, 32, 32, [250] * 4, size=size)
    assert len(head) < size
    path = tmp_path / "padded.mp4"
    with path.open("wb") as f:
        f.write(head)
        f.truncate(size)  # sparse: the 5 GiB case costs no disk
    decoded, _, _, seconds, _ = _decode(path)
    assert decoded == frames and seconds == pytest.approx(1.0)
    assert path.stat().st_size == size
    with path.open("rb") as f:
        assert _media.probe_video(f).duration_s == pytest.approx(1.0)


def test_a_size_below_the_natural_size_returns_the_whole_file() -> None:
    frames = _random_frames(random.Random(2), 2, 16, 16)
    whole = write_h264_mp4(frames, 16, 16, [500, 500])
    assert write_h264_mp4(frames, 16, 16, [500, 500], size=100) == whole


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"width": 20}, "width"),
    ({"height": 0}, "height"),
    ({"width": 8192}, "width"),
    ({"frames": []}, "frames is empty"),
    ({"durations": [100]}, "durations has 1 entries for 2 frames"),
    ({"durations": [100, 0]}, "every duration"),
    ({"timescale": 0}, "timescale"),
    ({"frames": [YuvFrame(bytes(256), bytes(64), bytes(64)),
                 YuvFrame(bytes(256), bytes(63), bytes(64))]}, "frames[1].cb has 63 bytes"),
    ({"frames": [YuvFrame(bytes(255), bytes(64), bytes(64))] * 2}, "frames[0].y has 255"),
])
def test_bad_arguments_name_the_argument(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {
        "frames": [YuvFrame(bytes(256), bytes(64), bytes(64))] * 2,
        "width": 16, "height": 16, "durations": [100, 100],
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        write_h264_mp4(**args)  # type: ignore[arg-type]


# -- per-job videos --------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "frames"), [(0.3, 3), (1.0, 8), (3.0, 24), (300.0, 24)])
def test_job_videos_last_the_job_at_8_fps_up_to_24_frames(seconds: float, frames: int) -> None:
    head = job_video("job-a/output", seconds, 1_000_000)
    decoded, w, h, duration, _ = _decode(head)
    assert (w, h) == (64, 64) and len(decoded) == frames
    assert duration == pytest.approx(seconds)
    assert decoded == pattern_frames(b"job-a/output", frames, 64, 64)
    assert len(head) < 200 * 1024


def test_job_videos_differ_per_job_and_per_output() -> None:
    tags = ["job-a/output", "job-a/mask", "job-b/output", "job-c/output"]
    first_frames = {_decode(job_video(t, 2.0, 200_000))[0][0].y for t in tags}
    assert len(first_frames) == len(tags)
    frames = _decode(job_video("job-a/output", 2.0, 200_000))[0]
    assert len({f.y for f in frames}) == len(frames)  # it moves


@pytest.mark.parametrize("side", [16, 32, 64])
def test_job_pictures_stay_in_video_range(side: int) -> None:
    # Players map 16..235 (luma) and 16..240 (chroma) to full black..white; outside it clips.
    for tag in (b"job-a/output", b"job-b/mask", b"x" * 40):
        for frame in pattern_frames(tag, 24, side, side):
            assert min(frame.y) >= 16 and max(frame.y) <= 235
            assert min(frame.cb + frame.cr) >= 16 and max(frame.cb + frame.cr) <= 240


@pytest.mark.parametrize(("budget", "side"), [(64 * 1024, 64), (16 * 1024, 32), (4096, 16),
                                              (2048, 16), (16, 16)])
def test_job_videos_fit_the_output_size_when_they_can(budget: int, side: int) -> None:
    head = job_video("job-a/output", 3.0, budget)
    decoded, w, _, duration, _ = _decode(head)
    assert w == side and duration == pytest.approx(3.0) and decoded
    if budget >= 2048:
        assert len(head) <= budget  # the rest is padding: the file is exactly the budget
    else:
        assert len(decoded) == 1 and len(head) < 1200  # the smallest playable file


# -- through the fake CDN --------------------------------------------------------------------


async def test_the_cdn_serves_playable_outputs_and_masks(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    fake.settings.output_mp4 = True
    seen = set()
    for seconds in (1.5, 4.0):
        code, created = await api.on_demand(seconds, background_mode="transparent")
        assert code == 200, created
        clock.advance(600)
        job = await api.status(created["job_id"])
        for url in (job["cdn_url"], job["mask_cdn_url"]):
            async with api.session.get(url) as resp:
                assert resp.status == 200 and resp.content_type == "video/mp4"
                body = await resp.read()
            assert len(body) == fake.settings.output_bytes
            frames, w, h, duration, _ = _decode(body)
            assert (w, h) == (64, 64) and duration == pytest.approx(seconds)
            seen.add(frames[0].y)
    assert len(seen) == 4


async def test_a_resumed_download_is_the_same_playable_file(tmp_path: Path) -> None:
    clock = viggle_async.testing.ManualClock()
    async with FakeViggle(clock=clock.now, output_mp4=True, output_bytes=200_000) as fake:
        fake.faults.cdn_range_support = True
        fake.faults.cdn_drop_first_n = 1
        fake.faults.cdn_drop_after_bytes = 3000  # mid-moov: the client must resume with Range
        async with viggle_async.ViggleClient(fake.api_key, base_url=fake.base_url,
                                             clock=clock) as client:
            job = await client.renders.create(ref_image=make_png(),
                                              driving_video=make_mp4(2.5))
            await clock.advance(3600)
            status = await client.renders.get(job.job_id)
            assert status.cdn_url is not None
            async with clock.autojump():
                dest = await client.download(status.cdn_url, tmp_path / "out.mp4")
        assert fake.observations.cdn_dropped == 1
    frames, w, _, duration, _ = _decode(dest)
    assert w == 64 and duration == pytest.approx(2.5)
    assert frames == pattern_frames(f"{job.job_id}/output".encode(), 20, 64, 64)
    assert dest.stat().st_size == 200_000
