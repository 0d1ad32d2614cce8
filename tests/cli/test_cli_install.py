"""The command as installed: without the ``[cli]`` extra it says which extra to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from clihelp import SCRIPT


@pytest.fixture
def no_rich(tmp_path: Path) -> dict[str, str]:
    """An environment where ``import rich`` fails as it does when rich is not installed
    (a stub earlier on the path raises the same ModuleNotFoundError)."""
    (tmp_path / "rich").mkdir()
    (tmp_path / "rich" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'rich'\", name='rich')\n")
    return {**os.environ, "PYTHONPATH": str(tmp_path)}


@pytest.mark.parametrize("argv", [
    [str(SCRIPT), "credits"],
    [str(SCRIPT), "--help"],
    [sys.executable, "-m", "viggle_async", "demo"],
])
def test_without_the_cli_extra_one_line_names_it_and_exits_2(
        no_rich: dict[str, str], argv: list[str]) -> None:
    proc = subprocess.run(argv, env=no_rich, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert "pip install 'viggle-async[cli]'" in line and "rich" in line


def test_the_library_imports_without_rich(no_rich: dict[str, str]) -> None:
    code = "import viggle_async, viggle_async.cli; print(viggle_async.ViggleClient.__name__)"
    proc = subprocess.run([sys.executable, "-c", code], env=no_rich, capture_output=True,
                          text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout) == (0, "ViggleClient\n"), proc.stderr
