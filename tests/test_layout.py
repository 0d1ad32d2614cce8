"""The test folders work together: any set of them collects in one pytest call (issue 12.12).

Folders used to import their own ``conftest`` module by name, so collecting two of them in
one run imported the wrong one; shared helpers now live in uniquely named modules
(``suphelp``, ``clihelp``, ``fakeapi``, ``pghelp``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_pair_of_test_folders_collects_in_one_call() -> None:
    folders = sorted(p.name for p in (ROOT / "tests").iterdir()
                     if p.is_dir() and any(p.glob("test_*.py")))
    assert {"cli", "supervisor", "client"} <= set(folders)
    # Every folder at once, in both orders: a name clash shows whichever way round.
    for order in (folders, folders[::-1]):
        run = subprocess.run(
            # -m: every module is still imported (a clash shows), and the newest aiohttp, which
            # refuses to collect the aioresponses tests, can run this test too.
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
             "-m", "not aioresponses", *(f"tests/{f}" for f in order)],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert " error" not in run.stdout.splitlines()[-1]
