"""Fixtures for the CLI tests: a fast fake server in the test's loop, and ``cli(...)``,
which runs ``main()`` in a worker thread (it starts its own event loop) and captures its
output. Every run also checks that the API key never appears in what the CLI printed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from clihelp import SECRET, Result, Run

from viggle_async.cli._app import main
from viggle_async.testing import FakeViggle, make_png, write_mp4


@pytest.fixture
async def fake() -> AsyncIterator[FakeViggle]:
    async with FakeViggle(api_keys={SECRET: 10_000}, time_scale=1000.0,
                          output_bytes=2048) as server:
        yield server


@pytest.fixture
def env(fake: FakeViggle, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeViggle:
    monkeypatch.setenv("VIGGLE_API_KEY", SECRET)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # never the user's own
    monkeypatch.setenv("VIGGLE_BASE_URL", fake.base_url)
    return fake


@pytest.fixture
def cli(env: FakeViggle, capsys: pytest.CaptureFixture[str]) -> Run:
    async def run(*argv: str) -> Result:
        capsys.readouterr()
        code = await anyio.to_thread.run_sync(main, list(argv))
        out, err = capsys.readouterr()
        assert SECRET not in out and SECRET not in err
        assert "Traceback" not in err
        return Result(code, out, err)

    return run


@pytest.fixture
def media(tmp_path: Path) -> Path:
    """me.png, and d1/d2/d3.mp4 of 1, 2 and 3 s, in tmp_path."""
    (tmp_path / "me.png").write_bytes(make_png(16, 16))
    for seconds in (1, 2, 3):
        write_mp4(tmp_path / f"d{seconds}.mp4", float(seconds))
    return tmp_path
