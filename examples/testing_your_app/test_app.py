"""Test your app against the fake Viggle server: no API key, no credits, no network.

Installing viggle-async registers a pytest plugin with two fixtures: ``fake_viggle`` (a
running fake server) and ``viggle_client`` (a ViggleClient pointed at it). Run:

    python -m pytest        # with pytest.ini beside it: pytest-asyncio in auto mode
"""

from __future__ import annotations

from pathlib import Path

import pytest
from app import ClipFailed, make_avatar_clip

from viggle_async import ViggleClient
from viggle_async.testing import FakeViggle, Faults, make_png, write_mp4


@pytest.fixture(autouse=True)
def fast_time(fake_viggle: FakeViggle) -> None:
    # 1000 simulated seconds per real second: a render takes milliseconds.
    fake_viggle.settings.time_scale = 1000.0


@pytest.fixture
def dance(tmp_path: Path) -> Path:
    path = tmp_path / "dance.mp4"
    write_mp4(path, 4.0)  # a 4-second video: the fake reads its length from the header
    return path


async def test_the_clip_is_downloaded_and_costs_one_credit_a_second(
    fake_viggle: FakeViggle, viggle_client: ViggleClient, dance: Path, tmp_path: Path
) -> None:
    before = fake_viggle.balance()
    clip = await make_avatar_clip(viggle_client, make_png(), dance, tmp_path / "clip.mp4",
                                  poll_interval=0.01)
    assert clip.stat().st_size == fake_viggle.settings.output_bytes
    assert before - fake_viggle.balance() == 4
    assert fake_viggle.cdn_auth_headers == []  # the API key never went to the CDN


async def test_a_failed_render_is_explained_and_refunded(
    fake_viggle: FakeViggle, viggle_client: ViggleClient, dance: Path, tmp_path: Path
) -> None:
    fake_viggle.faults = Faults(render_failure_rate=1.0)
    before = fake_viggle.balance()
    with pytest.raises(ClipFailed, match="not charged"):
        await make_avatar_clip(viggle_client, make_png(), dance, tmp_path / "clip.mp4",
                               poll_interval=0.01)
    assert fake_viggle.balance() == before
    assert not (tmp_path / "clip.mp4").exists()
