"""The command line's event loop (``VIGGLE_ASYNC_LOOP``): uvloop when installed, asyncio on
request; the bulk flow and its Ctrl-C / SIGTERM stops behave the same on both."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop
from clihelp import (
    BULK_FAST,
    Run,
    fake_server_process,
    fake_stats,
    process_env,
    stop_after_submits,
    viggle_process,
    write,
)

from viggle_async.cli._loop import LOOP_ENV, loop_factory
from viggle_async.testing import FakeViggle, make_png, write_mp4

LOOPS = ("asyncio", "uvloop")


def test_auto_picks_uvloop_when_installed_and_asyncio_on_request() -> None:
    assert loop_factory({}) is uvloop.new_event_loop
    assert loop_factory({LOOP_ENV: "auto"}) is uvloop.new_event_loop
    assert loop_factory({LOOP_ENV: " UVLOOP "}) is uvloop.new_event_loop
    assert loop_factory({LOOP_ENV: "asyncio"}) is None  # asyncio.Runner's own loop


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what `import uvloop` meets uninstalled
    assert loop_factory({}) is None


@pytest.mark.parametrize(("value", "message"), [
    ("tokio", f"error: {LOOP_ENV}='tokio' is not a known event loop; use auto, asyncio or "
              "uvloop"),
    ("uvloop", f"error: {LOOP_ENV}=uvloop but uvloop is not installed: pip install "
               "'viggle-async[uvloop]'"),
])
async def test_a_bad_loop_setting_is_one_line_before_any_request(
        cli: Run, env: FakeViggle, monkeypatch: pytest.MonkeyPatch, media: Path, value: str,
        message: str) -> None:
    monkeypatch.setenv(LOOP_ENV, value)
    if value == "uvloop":
        monkeypatch.setitem(sys.modules, "uvloop", None)
    manifest = write(media, "m.csv", "key,ref_image,driving_video,output\na,me.png,d1.mp4,a.mp4\n")
    for argv in (("credits",), ("bulk", str(manifest), *BULK_FAST)):
        result = await cli(*argv)
        assert (result.code, result.out, result.err) == (2, "", message + "\n")
    assert sum(env.request_counts.values()) == 0
    assert not (media / "a.mp4").exists()


@pytest.mark.parametrize("loop", LOOPS)
async def test_bulk_renders_and_downloads_on_each_loop(fake: FakeViggle, media: Path,
                                                       loop: str) -> None:
    manifest = write(media, "m.csv", "key,ref_image,driving_video,output\n"
                     + "".join(f"r{i},me.png,d{i}.mp4,r{i}.mp4\n" for i in (1, 2, 3)))
    env = {**process_env(fake, media), LOOP_ENV: loop}
    code, out, err = await viggle_process(env, "bulk", str(manifest), *BULK_FAST, "--json")
    assert code == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["states"] == {"complete": 3}
    for i in (1, 2, 3):
        assert (media / f"r{i}.mp4").stat().st_size == fake.settings.output_bytes
    assert fake.count("POST", "/api/render") == 3


@pytest.fixture
def server() -> Iterator[dict[str, str]]:
    with fake_server_process() as info:
        yield info


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(("sig", "code", "stop"), [
    (signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_bulk_stops_on_ctrl_c_and_sigterm_on_each_loop(
        server: dict[str, str], tmp_path: Path, loop: str, sig: signal.Signals, code: int,
        stop: str) -> None:
    env = {**os.environ, "VIGGLE_API_KEY": server["api_key"],
           "VIGGLE_BASE_URL": server["base_url"], LOOP_ENV: loop}
    (tmp_path / "me.png").write_bytes(make_png())
    write_mp4(tmp_path / "d.mp4", 3.0)
    manifest = write(tmp_path, "m.csv", "key,ref_image,driving_video,output\n"
                     + "".join(f"r{i},me.png,d.mp4,r{i}.mp4\n" for i in range(2)))
    report = tmp_path / "report.json"
    returned, out, err = stop_after_submits(
        ["bulk", str(manifest), "--json", "--report", str(report), "--poll-interval", "0.2"],
        env, submitted=2, sig=sig)
    assert returned == code, err
    assert "Traceback" not in err
    assert f"{stop}: 2 jobs still running on the server (about 6 credits committed)" in err
    assert json.loads(out.splitlines()[-1]) == {"event": "interrupted", "exit_code": code}
    data = json.loads(report.read_text())
    assert data["summary"]["exit_code"] == code
    assert {r["state"] for r in data["outcomes"]} == {"running"}
    assert fake_stats(server["base_url"])["request_counts"]["POST /api/render"] == 2

