"""Helpers shared by the CLI tests (a module of its own, so its name cannot clash with
other folders' conftest modules)."""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import attrs

from viggle_async.testing import FakeViggle

# A distinctive key, so a leak anywhere in the output is found.
SECRET = "sk-live-cli-test-7f3a9c51d2"
# Real time runs 1000x on the fake: a 2 s clip renders in ~11 ms; poll to match.
FAST = ("--poll-interval", "0.02")
BULK_FAST = (*FAST, "--poll-rate", "1000")

Run = Callable[..., Awaitable["Result"]]


@attrs.frozen
class Result:
    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, Any]]:
        """stdout parsed line by line; fails on any line that is not a JSON object."""
        objs = [json.loads(line) for line in self.out.splitlines()]
        assert all(isinstance(o, dict) for o in objs), objs
        return objs


def api_requests(fake: FakeViggle) -> int:
    """Every API request the fake has seen (creates, reads, deletes)."""
    return sum(fake.request_counts.values())


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def size(path: str | Path) -> int:
    return Path(path).stat().st_size


def read_until(stream: IO[str], done: Callable[[str], bool], timeout: float = 15.0
                ) -> list[str]:
    """Lines from ``stream`` up to the first one ``done`` accepts. A reader thread, because
    a buffered text stream defeats select(); it stops at that line, so ``communicate()``
    can read the rest."""
    lines: list[str] = []

    def read() -> None:
        for line in stream:
            lines.append(line)
            if done(line):
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert lines and done(lines[-1]), f"timed out; read so far: {lines}"
    return lines
