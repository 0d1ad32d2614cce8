"""Every example runs to completion against the embedded fake server."""

from __future__ import annotations

import ast
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from viggle_async.testing import FakeViggle, Faults, make_png, write_mp4

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
    done = [line for line in first.stdout.splitlines() if line.startswith("done:")]
    assert done[0].startswith("done: {'complete': 12}; creates sent: 12; credits: ")
    # The second pass on the same server and journal: the deleted output is fetched again
    # from its known job, the rest skipped, nothing submitted or paid for twice.
    assert done[1] == "done: {'complete': 1, 'skipped': 11}; creates sent: 0; credits: 0"
    assert first.stdout.count("Submitted(") == 12
    assert len(list(out.glob("*-render.mp4"))) == 12
    # The journal lived with the embedded fake: a rerun after losing an output works.
    (out / "sample-05-render.mp4").unlink()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert second.returncode == 0, second.stderr
    assert "done: {'complete': 12}" in second.stdout
    assert not (out / "run.journal").exists()


def test_bulk_folder_keeps_no_journal_beyond_the_embedded_fake(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "bulk_folder.py"), "--journal", str(tmp_path / "j")],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "--journal needs --real" in proc.stderr


async def _run_async(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    # The fake server runs in the test's event loop, so the child must not block it.
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _real_mode_inputs(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(3):
        write_mp4(folder / f"clip-{i}.mp4", 1.0 + i)
    image = tmp_path / "me.png"
    image.write_bytes(make_png(64, 64))
    return image, folder


async def test_bulk_folder_real_mode_resumes_and_fails_loudly(tmp_path: Path) -> None:
    # --real against a fake API: the journal outlives the process, as with the real API.
    image, folder = _real_mode_inputs(tmp_path)
    out, journal = tmp_path / "out", tmp_path / "run.journal"
    cmd = [sys.executable, str(EXAMPLES / "bulk_folder.py"), "--real", str(image),
           str(folder), "--out", str(out), "--journal", str(journal)]
    async with FakeViggle(time_scale=500.0) as fake:
        env = {**os.environ, "VIGGLE_API_KEY": fake.api_key, "VIGGLE_BASE_URL": fake.base_url}
        code, stdout, stderr = await _run_async(cmd, env)
        assert code == 0, stderr
        assert "done: {'complete': 3}; creates sent: 3" in stdout
        (out / "clip-1-render.mp4").unlink()
        code, stdout, stderr = await _run_async(cmd, env)
        assert code == 0, stderr
        assert "done: {'complete': 1, 'skipped': 2}; creates sent: 0; credits: 0" in stdout
        assert len(fake.creates) == 3  # the lost output came from its known job
    # A different server does not know the journal's jobs: the run fails, and says so.
    (out / "clip-2-render.mp4").unlink()
    async with FakeViggle(time_scale=500.0) as other:
        env = {**os.environ, "VIGGLE_API_KEY": other.api_key, "VIGGLE_BASE_URL": other.base_url}
        code, stdout, stderr = await _run_async(cmd, env)
    assert code == 1, stdout + stderr
    assert "clip-2: failed" in stderr


async def test_bulk_folder_exits_1_when_renders_fail(tmp_path: Path) -> None:
    image, folder = _real_mode_inputs(tmp_path)
    cmd = [sys.executable, str(EXAMPLES / "bulk_folder.py"), "--real", str(image),
           str(folder), "--out", str(tmp_path / "out"), "--journal", str(tmp_path / "j")]
    async with FakeViggle(time_scale=500.0, faults=Faults(render_failure_rate=1.0)) as fake:
        env = {**os.environ, "VIGGLE_API_KEY": fake.api_key, "VIGGLE_BASE_URL": fake.base_url}
        code, stdout, stderr = await _run_async(cmd, env)
    assert code == 1, stdout + stderr
    assert "done: {'failed': 3}" in stdout


def test_multi_character_template_maps_each_person_to_a_character(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "multi_character_template.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # The fake's duo template tracks two people; each gets one of the two new characters.
    mapping_line = next(line for line in proc.stdout.splitlines()
                        if line.startswith("character_mapping"))
    mapping = ast.literal_eval(mapping_line.removeprefix("character_mapping "))
    assert set(mapping) == {"person_a1b2c3d4", "person_e5f6g7h8"}
    assert len(set(mapping.values())) == 2
    assert "complete: saved" in proc.stdout
    assert [p.stat().st_size > 0 for p in tmp_path.glob("job_*.mp4")] == [True]


# Runs an example with an audit hook that lists every file the process opens for writing,
# except the fake server's own upload folder (FakeViggle stores what it receives there).
_NO_FILE_WRITES = """
import os, runpy, sys, tempfile
tempfile.gettempdir()  # its first call probes the folder with a scratch file
written = []
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and args[2] & WRITE:
        path = os.fsdecode(args[0])
        if "viggle-fake-" not in path:
            written.append(path)
sys.addaudithook(hook)
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    print("files written:", written)
"""


def test_aiohttp_backend_streams_the_upload_on_without_a_temporary_copy() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _NO_FILE_WRITES, str(EXAMPLES / "aiohttp_backend.py"),
         "--self-test"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"POST /jobs -> 202 job_\w+", out)
    assert re.search(r"GET /jobs/job_\w+ -> complete http://localhost:\d+/outputs/", out)
    sent = re.search(r"sent: image (\d+) bytes, video (\d+) bytes", out)
    assert sent is not None and int(sent[2]) > 4 * 2**20
    # Every byte arrived, streamed (an async iterator goes out chunked; a buffered file or
    # bytes would have a Content-Length), and nothing was written to disk on the way.
    assert f"fake received: ref_image {sent[1]} bytes (chunked)" in out
    assert f"fake received: driving_video {sent[2]} bytes (chunked)" in out
    assert "files written: []" in out


def test_fastapi_backend_serves_renders_under_uvicorn() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "fastapi_backend.py"), "--self-test"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"POST /renders -> 202 job_\w+", proc.stdout)
    assert re.search(r"GET /renders/job_\w+ -> complete http://localhost:\d+/outputs/",
                     proc.stdout)
    assert "GET /renders/job_nope -> 404" in proc.stdout


def test_testing_your_app_example_passes_with_the_pytest_plugin() -> None:
    # Its own pytest.ini makes it the rootdir, as in a user's project; the main suite's
    # testpaths never collect it.
    folder = EXAMPLES / "testing_your_app"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(folder), "-q", "-p", "no:cacheprovider"],
        capture_output=True, text=True, timeout=60, check=False, cwd=folder,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout
