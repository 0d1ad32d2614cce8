"""Crash and resume: ``viggle-async bulk`` in a subprocess is SIGKILLed at five points, then
run again with the same journal. No job is ever created twice (except where the user asks,
with ``--resubmit-ambiguous``), everything completes, outputs are intact.

The fake server runs in its own process (fake_proc.py) so it outlives the client. Each kill
point is held open by a server-side delay, and the kill is decided by watching only external
state: the journal's rows (``intent -> sending -> submitted -> final``), what the server saw,
and the temporary file a download writes beside its output.

| kill point                | held by                           | killed when                |
|---------------------------|-----------------------------------|----------------------------|
| before a create           | a character that stays processing | character submitted, render|
|                           |                                   | not yet in the journal     |
| between create and answer | holding the answer of the create  | row is ``sending`` and the |
|                           | after the job is made             | server has made the job    |
|                           | (``Faults.answer_delay_s``)       |                            |
| mid-upload                | ``Faults.latency_s`` + 32 MiB     | server has the request and |
|                           |                                   | row is still ``intent``    |
| mid-poll                  | a render that stays processing    | row ``submitted`` + polled |
| mid-download              | the CDN throttled to 6 MB/s       | a partial temp file exists |
|                           | (``Faults.cdn_bytes_per_s``)      |                            |
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from viggle_async.testing import make_png, write_mp4

HERE = Path(__file__).parent
TIME_SCALE = 1000.0  # simulated seconds per real second
FAST = 1e6  # a time scale at which anything still running ends at once
POLL = "0.05"  # real seconds between polls


class Server:
    """fake_proc.py in a subprocess: its URLs, control and records."""

    def __init__(self, log: Path) -> None:
        # stderr to a file: a killed client makes the server log aborted requests.
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "fake_proc.py"), "--time-scale", str(TIME_SCALE)],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.proc.stdout is not None
        info = {}
        for _ in range(4):
            name, _, value = self.proc.stdout.readline().strip().partition("=")
            info[name] = value
        self.base_url, self.api_key = info["base_url"], info["api_key"]
        self.control_url, self.cdn_url = info["control_url"], info["cdn_base_url"]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.log.close()

    def _get(self, url: str) -> Any:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.load(resp)

    def configure(self, **body: Any) -> None:
        req = urllib.request.Request(self.control_url + "/control", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200

    def reset(self) -> None:
        """Faults off, fast time, full-speed CDN."""
        self.configure(faults={"latency_s": 0.0, "latency_routes": None,
                               "answer_delay_s": 0.0, "answer_delay_routes": None,
                               "cdn_bytes_per_s": None},
                       settings={"time_scale": TIME_SCALE, "render_base_s": 5.0,
                                 "character_processing_s": 4.0, "output_bytes": 64 * 1024})

    def stats(self) -> Any:
        return self._get(self.base_url + "/__fake__/stats")

    def records(self) -> Any:
        return self._get(self.control_url + "/control/records")

    def fetch(self, url: str) -> bytes:
        with urllib.request.urlopen(url, timeout=10) as resp:
            data: bytes = resp.read()
        return data


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("fake") / "server.log")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def fresh(server: Server) -> Server:
    server.reset()
    return server


def journal_rows(path: Path) -> dict[str, dict[str, Any]]:
    """The journal as another process sees it now (read-only; {} before it exists)."""
    if not path.exists():
        return {}
    try:
        # closing(): sqlite3's own context manager only commits (an unclosed one warns on 3.13)
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                                timeout=1)) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT key, kind, state, job_id, final_status FROM entries")
            return {r["key"]: dict(r) for r in rows}
    except sqlite3.OperationalError:  # not created yet, or mid-creation
        return {}


class Bulk:
    """One manifest, journal, report and output folder; runs the CLI on them."""

    def __init__(self, tmp: Path, server: Server, rows: list[dict[str, str]]) -> None:
        self.tmp, self.server = tmp, server
        self.journal, self.report = tmp / "run.journal", tmp / "report.json"
        self.manifest = tmp / "manifest.csv"
        columns = sorted({c for r in rows for c in r})
        with self.manifest.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
        self.runs = 0
        # The server is shared by the module's tests: look only at what came after this.
        self.first_create = len(server.records()["creates"])
        self._counts = server.stats()["request_counts"]

    def creates(self, kind: str = "render", file: str | None = None) -> list[dict[str, Any]]:
        """This test's accepted creates (of ``kind``, uploading ``file``)."""
        return [c for c in self.server.records()["creates"][self.first_create:]
                if c["kind"] == kind and c["status"] == 200
                and (file is None or file in c["files"])]

    def job_ids(self, file: str | None = None) -> list[str]:
        return [c["result_id"] for c in self.creates(file=file)]

    def seen(self, route: str) -> int:
        """Requests to ``route`` since this test began."""
        now: int = self.server.stats()["request_counts"].get(route, 0)
        return now - int(self._counts.get(route, 0))

    def run(self, *extra: str, kill_when: Callable[[], bool] | None = None,
            timeout: float = 20.0) -> tuple[int, dict[str, Any]]:
        """Run the CLI; with ``kill_when``, SIGKILL it as soon as that holds. Returns the exit
        code and the report's outcomes by key ({} when killed)."""
        self.runs += 1
        env = {**os.environ, "VIGGLE_BASE_URL": self.server.base_url,
               "VIGGLE_API_KEY": self.server.api_key}
        log = self.tmp / f"run{self.runs}.log"
        self.report.unlink(missing_ok=True)
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "viggle_async", "bulk", str(self.manifest), "--journal",
                 str(self.journal), "--report", str(self.report), "--poll-interval", POLL,
                 "--max-uploads", "1", *extra],
                env=env, stdout=out, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + timeout
            try:
                while kill_when is not None and proc.poll() is None:
                    if kill_when():
                        proc.send_signal(signal.SIGKILL)
                        break
                    assert time.monotonic() < deadline, "the kill point was never reached"
                    time.sleep(0.005)
                code = proc.wait(max(0.1, deadline - time.monotonic()))
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if kill_when is not None:
            assert code == -signal.SIGKILL, f"exited {code} before the kill point:\n" + \
                log.read_text()
            return code, {}
        report = json.loads(self.report.read_text())
        return code, {o["key"]: o for o in report["outcomes"]}

    def parts(self) -> list[Path]:
        return sorted(self.tmp.glob("out/.*.part"))


def _media(tmp: Path) -> tuple[Path, Path]:
    png = tmp / "me.png"
    png.write_bytes(make_png())
    mp4 = tmp / "dance.mp4"
    write_mp4(mp4, 2.0)
    return png, mp4


def _check_output(server: Server, path: Path, job_id: str) -> None:
    """The output is whole and is exactly what the CDN serves for that job."""
    served = server.fetch(f"{server.cdn_url}/outputs/{job_id}/output.mp4")
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(served).digest()


def test_kill_before_a_create(tmp_path: Path, fresh: Server) -> None:
    """Killed while the render waits for its character: the character (1 credit) is
    journaled and not created again; the render is created once."""
    png, _ = _media(tmp_path)
    bulk = Bulk(tmp_path, fresh, [
        {"key": "hero", "kind": "character", "name": "Hero", "image": str(png)},
        {"key": "stage", "kind": "scene", "template_id": "tmpl-video-wave"},
        {"key": "shot", "character_id": "hero", "scene_id": "stage", "output": "out/shot.mp4"},
    ])
    fresh.configure(settings={"character_processing_s": 3000.0})  # ~3 s real

    def waiting() -> bool:
        # The scene's import must be answered too: killed while it is on the wire, it is
        # (rightly) ambiguous on rerun, which is the next test's case, not this one.
        rows = journal_rows(bulk.journal)
        return (rows.get("hero", {}).get("state") == "submitted"
                and rows.get("stage", {}).get("state") in ("submitted", "final")
                and "shot" not in rows)

    bulk.run(kill_when=waiting)
    assert len(bulk.creates("character")) == 1 and bulk.creates() == []
    fresh.configure(settings={"time_scale": FAST})
    code, outcomes = bulk.run()
    assert code == 0, outcomes
    assert outcomes["shot"]["state"] == "complete"
    assert len(bulk.creates("character")) == 1  # resumed, not bought twice
    assert len(bulk.creates("import")) == 1
    assert bulk.job_ids() == [outcomes["shot"]["job_id"]]
    _check_output(fresh, tmp_path / "out/shot.mp4", outcomes["shot"]["job_id"])


def test_kill_between_create_and_answer(tmp_path: Path, fresh: Server) -> None:
    """The create's body went out and the server made the job, but the answer never came
    back: the rerun reports it ambiguous and sends nothing; only --resubmit-ambiguous (the
    user's explicit choice, which may pay twice) creates it again. Row ``b`` (a character,
    whose creates are not held) shows the rest of the run is not affected."""
    png, mp4 = _media(tmp_path)
    bulk = Bulk(tmp_path, fresh, [
        {"key": "a", "ref_image": str(png), "driving_video": str(mp4), "output": "out/a.mp4"},
        {"key": "b", "kind": "character", "name": "Bea", "image": str(png)},
    ])
    fresh.configure(faults={"answer_delay_s": 5.0, "answer_delay_routes": ["POST /api/render"]})

    def created_unanswered() -> bool:
        rows = journal_rows(bulk.journal)
        return rows.get("a", {}).get("state") == "sending" and bool(bulk.job_ids("dance.mp4"))

    bulk.run(kill_when=created_unanswered)
    fresh.configure(faults={"answer_delay_s": 0.0, "answer_delay_routes": None})

    code, outcomes = bulk.run()
    assert code == 1  # documented: some work is ambiguous
    assert outcomes["a"]["state"] == "ambiguous"
    assert "resubmit" in outcomes["a"]["error"]
    # b was never held: the killed run may have finished it already (a loaded machine is
    # slower to notice a's hold), so the rerun completes or skips it, never recreates it.
    assert outcomes["b"]["state"] in ("complete", "skipped")
    assert len(bulk.job_ids("dance.mp4")) == 1  # not resent
    assert len(bulk.creates("character")) == 1

    code, outcomes = bulk.run("--resubmit-ambiguous")
    assert code == 0, outcomes
    assert (outcomes["a"]["state"], outcomes["b"]["state"]) == ("complete", "skipped")
    a_jobs = bulk.job_ids("dance.mp4")
    assert len(a_jobs) == 2 and outcomes["a"]["job_id"] == a_jobs[1]  # exactly one more
    assert len(bulk.creates("character")) == 1
    _check_output(fresh, tmp_path / "out/a.mp4", a_jobs[1])


def test_kill_mid_upload(tmp_path: Path, fresh: Server) -> None:
    """Killed with the body half sent (the journal still says ``intent``): the server made
    no job, so the rerun submits it, once."""
    png, _ = _media(tmp_path)
    write_mp4(tmp_path / "big.mp4", 3.0, size=32 * 2**20)  # sparse on disk
    bulk = Bulk(tmp_path, fresh, [
        {"key": "big", "ref_image": str(png), "driving_video": "big.mp4",
         "output": "out/big.mp4"},
    ])
    fresh.configure(faults={"latency_s": 1.0, "latency_routes": ["POST /api/render"]})

    def uploading() -> bool:
        return (bulk.seen("POST /api/render") > 0
                and journal_rows(bulk.journal).get("big", {}).get("state") == "intent")

    bulk.run(kill_when=uploading)
    deadline = time.monotonic() + 10
    cut: list[dict[str, Any]] = []
    while not cut:  # the handler runs after the latency and finds the body cut short
        assert time.monotonic() < deadline, "the server never saw the request end"
        time.sleep(0.02)
        cut = [c for c in fresh.records()["creates"][bulk.first_create:] if c["status"] == 0]
    assert bulk.creates() == []
    fresh.configure(faults={"latency_s": 0.0})
    code, outcomes = bulk.run()
    assert code == 0, outcomes
    assert outcomes["big"]["state"] == "complete"
    assert bulk.job_ids() == [outcomes["big"]["job_id"]]
    _check_output(fresh, tmp_path / "out/big.mp4", outcomes["big"]["job_id"])


def test_kill_mid_poll(tmp_path: Path, fresh: Server) -> None:
    """Killed while polling: the rerun polls the journaled job; nothing is created."""
    png, mp4 = _media(tmp_path)
    bulk = Bulk(tmp_path, fresh, [
        {"key": "p", "ref_image": str(png), "driving_video": str(mp4), "output": "out/p.mp4"},
    ])
    fresh.configure(settings={"render_base_s": 5000.0})  # ~5 s real

    def polled() -> bool:
        row = journal_rows(bulk.journal).get("p", {})
        return (row.get("state") == "submitted"
                and bulk.seen("GET /api/render/{job_id}") > 0)

    bulk.run(kill_when=polled)
    job_id = journal_rows(bulk.journal)["p"]["job_id"]
    assert fresh.records()["jobs"][job_id] in ("queued", "processing")
    fresh.configure(settings={"time_scale": FAST})
    code, outcomes = bulk.run()
    assert code == 0, outcomes
    assert (outcomes["p"]["state"], outcomes["p"]["job_id"]) == ("complete", job_id)
    assert bulk.job_ids() == [job_id]
    _check_output(fresh, tmp_path / "out/p.mp4", job_id)


def test_kill_mid_download(tmp_path: Path, fresh: Server) -> None:
    """Killed half-way through a download: nothing partial at the output path; the rerun
    downloads it again from the same job, the file is whole, and no temporary file is left."""
    png, mp4 = _media(tmp_path)
    bulk = Bulk(tmp_path, fresh, [
        {"key": "d", "ref_image": str(png), "driving_video": str(mp4), "output": "out/d.mp4"},
    ])
    # Several of the client's 4 MiB write batches, so the kill lands with a part written.
    size = 12 * 2**20
    fresh.configure(settings={"output_bytes": size},
                    faults={"cdn_bytes_per_s": 6e6})  # ~2 s per output
    bulk.run(kill_when=lambda: any(p.stat().st_size > 0 for p in bulk.parts()))
    assert not (tmp_path / "out/d.mp4").exists()
    partial = bulk.parts()
    assert partial and all(p.stat().st_size < size for p in partial)
    job_id = journal_rows(bulk.journal)["d"]["job_id"]
    fresh.configure(faults={"cdn_bytes_per_s": None})
    code, outcomes = bulk.run()
    assert code == 0, outcomes
    assert (outcomes["d"]["state"], outcomes["d"]["job_id"]) == ("complete", job_id)
    assert bulk.job_ids() == [job_id]
    assert (tmp_path / "out/d.mp4").stat().st_size == size
    _check_output(fresh, tmp_path / "out/d.mp4", job_id)
    assert fresh.records()["cdn_auth"] == 0
    assert bulk.parts() == []  # the killed run's temporary file was cleared by the rerun
