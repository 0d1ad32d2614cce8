"""What a command binds or writes is checked before it sends anything, and a problem is one
line naming the option and the fix, exit 2, never a traceback (real processes):
``fake-server`` on a port already taken, ``demo --out``, ``bulk --report``/``--journal``
(``--dry-run`` too), ``wait -o``/``--mask-output``, ``download DEST``, ``render -o``."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from clihelp import api_requests, process_env, viggle_process

from viggle_async.testing import FakeViggle


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another program is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


# Both entry points take the same options and say the same.
TESTING_MAIN = "import sys\nfrom viggle_async.testing.__main__ import main\nsys.exit(main())"


@pytest.mark.parametrize("flag", ["--port", "--cdn-port"])
@pytest.mark.parametrize("entry", ["viggle-async fake-server", "python -m viggle_async.testing"])
async def test_fake_server_on_a_taken_port_names_the_option_and_the_fix(
        flag: str, entry: str, taken_port: int, tmp_path: Path) -> None:
    env = {"PATH": "", "XDG_CACHE_HOME": str(tmp_path)}
    if entry.endswith("fake-server"):
        code, out, err = await viggle_process(env, "fake-server", flag, str(taken_port))
    else:
        code, out, err = await viggle_process(env, flag, str(taken_port), script=TESTING_MAIN)
    assert code == 2, err
    assert out == ""
    assert err == (f"error: {flag} {taken_port}: 127.0.0.1:{taken_port} is already in use "
                   f"(another fake-server or program listens there). Fix: pass another "
                   f"{flag}, or {flag} 0 for any free port\n")


# {file}: a path under a plain file; {dir}: an existing folder where a file is expected.
CASES = [
    (["bulk", "m.csv", "--report", "{file}/r.json"], "--report"),
    (["bulk", "m.csv", "--report", "{dir}"], "--report"),
    (["bulk", "m.csv", "--dry-run", "--report", "{file}/r.json"], "--report"),
    (["bulk", "m.csv", "--journal", "{file}/j.db"], "--journal"),
    (["bulk", "m.csv", "--journal", "{dir}"], "--journal"),
    (["demo", "--out", "{file}"], "--out"),
    (["demo", "--out", "{file}/demo"], "--out"),
    (["wait", "job_1", "-o", "{file}/x.mp4"], "-o/--output"),
    (["wait", "job_1", "--mask-output", "{dir}"], "--mask-output"),
    (["download", "job_1", "{file}/x.mp4"], "DEST"),
    (["download", "job_1", "{dir}"], "DEST"),
    (["render", "--ref-image", "me.png", "--driving-video", "d1.mp4", "-o", "{file}/x.mp4"],
     "-o/--output"),
]


@pytest.mark.parametrize(("argv", "flag"), CASES, ids=[" ".join(a) for a, _ in CASES])
async def test_a_path_that_cannot_be_written_is_refused_before_anything_is_sent(
        argv: list[str], flag: str, fake: FakeViggle, media: Path) -> None:
    (media / "m.csv").write_text("key,ref_image,driving_video,output\na,me.png,d1.mp4,a.mp4\n")
    (media / "plain").write_text("not a folder")
    (media / "folder").mkdir()
    words = [a.format(file=media / "plain", dir=media / "folder") for a in argv]
    code, out, err = await viggle_process(process_env(fake, media), "--quiet", *words)
    assert out == ""
    assert code == 2, err
    (line,) = err.splitlines()
    assert line.startswith(f"error: {flag}: ") and ". Fix: " in line, line
    assert str(media / "plain") in line or str(media / "folder") in line, line
    assert api_requests(fake) == 0  # nothing sent, nothing paid
    # No report, journal, lock file or demo folder was left behind.
    made = set(os.listdir(media)) - {"me.png", "d1.mp4", "d2.mp4", "d3.mp4", "cache"}
    assert made == {"folder", "m.csv", "plain"} and os.listdir(media / "folder") == []
