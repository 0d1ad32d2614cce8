"""Every example runs to completion against the embedded fake server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_render_one_downloads_a_clip(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "render_one.py"), "--out", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "complete" in proc.stdout
    outputs = [p for p in out.glob("job_*.mp4")]
    assert len(outputs) == 1 and outputs[0].stat().st_size > 0
    # Nothing half-written is left behind.
    assert list(out.glob(".*.part")) == []


def test_bulk_folder_renders_all_and_resumes_from_its_journal(tmp_path: Path) -> None:
    out = tmp_path / "bulk"
    cmd = [sys.executable, str(EXAMPLES / "bulk_folder.py"), "--out", str(out)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert first.returncode == 0, first.stderr
    assert "done: {'complete': 12}" in first.stdout
    assert len(list(out.glob("*-render.mp4"))) == 12
    # Same journal, same keys: nothing is submitted again.
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert second.returncode == 0, second.stderr
    assert "done: {'skipped': 12}; credits: 0" in second.stdout
    assert "Submitted(" not in second.stdout
