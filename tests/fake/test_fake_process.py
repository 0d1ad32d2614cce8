"""The server as a separate process (``python -m viggle_async.testing``): big uploads stay
on disk, not in memory; plus the pytest plugin's fixture and chunked uploads."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from fakeapi import Api

from viggle_async.testing import FakeViggle, make_mp4, make_png, write_mp4
from viggle_async.testing.__main__ import faults_from

MiB = 1024 * 1024


def _peak_rss(pid: int) -> int:
    """Peak resident set size (VmHWM) of a process, in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def server() -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "viggle_async.testing", "--port", "0", "--time-scale", "1000"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(3))
        yield proc, info
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
async def test_200_mib_upload_does_not_grow_server_memory(
    server: tuple[subprocess.Popen[str], dict[str, str]], tmp_path: Path
) -> None:
    proc, info = server
    assert info["api_key"] == "sk-test-fake"
    assert info["cdn_base_url"].startswith("http://localhost:")
    big = tmp_path / "big.mp4"
    write_mp4(big, 12.0, size=200 * MiB, sparse=True)
    headers = {"Authorization": f"Bearer {info['api_key']}"}
    async with aiohttp.ClientSession() as session:
        # Warm up the request path so the measurement shows the upload, not first use.
        async with session.get(info["base_url"] + "/api/credits", headers=headers) as resp:
            assert resp.status == 200
        before = _peak_rss(proc.pid)
        with big.open("rb") as f:
            form = aiohttp.FormData()
            form.add_field("name", "big")
            form.add_field("video", f, filename="big.mp4", content_type="video/mp4")
            async with session.post(
                info["base_url"] + "/api/scenes/preprocess", data=form, headers=headers
            ) as resp:
                body = await resp.json()
                assert resp.status == 200, body
        async with session.get(
            info["base_url"] + f"/api/scenes/{body['scene_id']}", headers=headers
        ) as resp:
            scene = await resp.json()
    growth = _peak_rss(proc.pid) - before
    assert scene["duration_seconds"] == 12.0  # the header was probed from the temp file
    assert growth < 64 * MiB, f"server peak RSS grew by {growth / MiB:.1f} MiB"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


@pytest.fixture
async def fake_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_plugin_fixture_serves(
    fake_viggle: FakeViggle, fake_session: aiohttp.ClientSession
) -> None:
    api = Api(fake_viggle, fake_session)
    code, body = await api.call("GET", "/api/credits")
    assert code == 200 and body["balance"] == 10_000


async def test_chunked_upload_is_recorded_as_chunked(api: Api, fake: FakeViggle) -> None:
    video = make_mp4(3.0)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(video), 100):
            yield video[i : i + 100]

    form = aiohttp.FormData()
    form.add_field("ref_image", make_png(), filename="a.png", content_type="image/png")
    form.add_field("driving_video", chunks(), filename="d.mp4", content_type="video/mp4")
    code, body = await api.call("POST", "/api/render", data=form)
    assert code == 200, body
    record = fake.creates[-1]
    assert record.transfer == "chunked"
    assert [(p.name, p.size, p.transfer) for p in record.files] == [
        ("ref_image", len(make_png()), "chunked"),
        ("driving_video", len(video), "chunked"),
    ]


async def test_stats_route_reports_what_the_server_saw(
    api: Api, fake: FakeViggle, fake_session: aiohttp.ClientSession
) -> None:
    """A fake in another process is inspected over HTTP; the stats route is not API
    traffic, so reading it changes no counter."""
    form = aiohttp.FormData()
    form.add_field("ref_image", make_png(), filename="a.png", content_type="image/png")
    form.add_field("driving_video", make_mp4(3.0), filename="d.mp4", content_type="video/mp4")
    code, body = await api.call("POST", "/api/render", data=form)
    assert code == 200, body
    for _ in range(2):
        async with fake_session.get(fake.base_url + "/__fake__/stats") as resp:
            stats = await resp.json()
    assert stats["request_counts"] == {"POST /api/render": 1}
    assert stats["peak_concurrency"] == {"POST /api/render": 1}
    assert [(c["kind"], c["status"], c["result_id"]) for c in stats["creates"]] == [
        ("render", 200, body["job_id"])
    ]
    assert stats["balance"] == fake.balance() == 10_000 - 3
    assert fake.api_key not in str(stats)


def test_fault_knobs_from_the_command_line() -> None:
    faults = faults_from([
        "url_ttl_s=60", "create_fail_shape=html", "cdn_retry_after=Wed, 21 Oct 2026 07:28:00 GMT",
        'create_fail_routes=["POST /api/render"]', "cdn_range_support=true",
    ])
    assert faults.url_ttl_s == 60 and faults.create_fail_shape == "html"
    assert faults.cdn_retry_after == "Wed, 21 Oct 2026 07:28:00 GMT"
    assert faults.create_fail_routes == frozenset({"POST /api/render"})
    assert faults.cdn_range_support is True
    with pytest.raises(ValueError, match="no_such_knob"):
        faults_from(["no_such_knob=1"])
