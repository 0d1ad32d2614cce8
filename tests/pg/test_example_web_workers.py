"""Smoke test of examples/web_backend_workers.py: the app (in this process) records and
defers two renders, a ``viggle-async worker`` process runs them against an out-of-process
fake, and the app reports them done with their outputs on disk; bad requests are refused
at once with the library's own rules; the example runs on the fake with no key."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pghelp import OUTPUT_BYTES, Fake, worker

from viggle_async.testing import make_png, write_mp4

EXAMPLE = Path(__file__).parents[2] / "examples" / "web_backend_workers.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("web_backend_workers", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_app_defers_and_a_worker_renders(pg_dsn: str, pg_schema: str,
                                                   tmp_path: Path) -> None:
    example = load_example()
    (tmp_path / "me.png").write_bytes(make_png())
    write_mp4(tmp_path / "d1.mp4", 1.0)
    fake = Fake(time_scale=200.0)
    try:
        app = example.make_app(pg_dsn, api_key="sk-test-fake", schema=pg_schema)
        async with TestClient(TestServer(app)) as http:
            for key in ("a", "b"):
                r = await http.post("/renders", json={
                    "key": key, "ref_image": str(tmp_path / "me.png"),
                    "driving_video": str(tmp_path / "d1.mp4"),
                    "output": str(tmp_path / "out" / f"{key}.mp4")})
                assert r.status == 202 and (await r.json())["queued"] is True
            bad = await http.post("/renders", json={"key": "c", "ref_image": "/nope.png",
                                                    "driving_video": "/nope.mp4"})
            assert bad.status == 400 and "/nope.png" in await bad.text()
            proc = worker(fake, pg_dsn, pg_schema, "--exit-when-empty")
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, out + err
            for key in ("a", "b"):
                state = await (await http.get(f"/renders/{key}")).json()
                assert state["state"] == "done" and state["outcome"]["state"] == "complete"
                assert (tmp_path / "out" / f"{key}.mp4").stat().st_size == OUTPUT_BYTES
            assert (await http.get("/renders/zzz")).status == 404
        renders = [c for c in fake.stats()["creates"] if c["kind"] == "render"]
        assert [c["status"] for c in renders] == [200, 200]
    finally:
        fake.stop()


@pytest.mark.parametrize(("body", "field", "words"), [
    (b"key=clip1&ref_image=x", "body", "is not JSON"),
    (b'["clip1"]', "body", "is not a JSON object"),
    ({"ref_image": "/x.png"}, "key", "missing"),
    ({"key": "c", "ref_image": "IMG", "driving_video": "VID", "bg_color": "#ffffff"},
     "bg_color", "background_mode='solid'"),
    ({"key": "c", "ref_image": "IMG", "driving_video": "VID", "model": "nope"},
     "model", "nope"),
    ({"key": "c", "ref_image": "IMG", "driving_video": "VID", "fast": "yes"}, "fast", "yes"),
    ({"key": "c", "ref_image": "IMG"}, "driving_video", "required"),
    ({"key": "c", "ref_image": "me.png", "driving_video": "VID"}, "ref_image", "absolute"),
    ({"key": "c", "ref_image": "IMG", "driving_video": "VID", "output": "out/c.mp4"},
     "output", "absolute"),
    ({"key": "c", "ref_image": "IMG", "driving_video": "VID", "colour": "red"},
     "colour", "not a render field"),
    ({"key": "c", "ref_image": "VID", "driving_video": "VID"}, "ref_image", ""),
])
async def test_the_app_refuses_bad_requests_with_json_naming_the_field(
        body: Any, field: str, words: str, pg_dsn: str, pg_schema: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_example()
    (tmp_path / "me.png").write_bytes(make_png())
    write_mp4(tmp_path / "d1.mp4", 1.0)
    monkeypatch.chdir(tmp_path)  # a relative path would resolve here: still refused
    if isinstance(body, dict):
        body = {k: {"IMG": str(tmp_path / "me.png"), "VID": str(tmp_path / "d1.mp4")}.get(v, v)
                if isinstance(v, str) else v for k, v in body.items()}
    app = example.make_app(pg_dsn, api_key="sk-test-fake", schema=pg_schema)
    async with TestClient(TestServer(app)) as http:
        if isinstance(body, dict):
            r = await http.post("/renders", json=body)
        else:
            r = await http.post("/renders", data=body)
        assert r.status == 400, await r.text()
        answer = await r.json()
        assert answer["field"] == field and words in answer["error"], answer
        assert answer["fix"]
        # Nothing was recorded for the workers.
        assert (await http.get("/renders/c")).status == 404


def test_the_self_test_runs_on_the_fake_with_no_api_key(pg_dsn: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "VIGGLE_API_KEY"}
    env["VIGGLE_POSTGRES_DSN"] = pg_dsn
    done = subprocess.run([sys.executable, str(EXAMPLE), "--self-test"], env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "POST /renders clip1 -> 202" in done.stdout
    assert 'POST /renders bad -> 400 {"error": "bg_color:' in done.stdout
    assert "GET /renders/clip1 -> done (complete)" in done.stdout


@pytest.mark.parametrize(("args", "unset", "names"), [
    ([], ("VIGGLE_POSTGRES_DSN", "VIGGLE_JOURNAL_DSN"), "VIGGLE_POSTGRES_DSN"),
    (["--self-test"], ("VIGGLE_POSTGRES_DSN", "VIGGLE_JOURNAL_DSN"), "VIGGLE_POSTGRES_DSN"),
    ([], ("VIGGLE_API_KEY",), "VIGGLE_API_KEY"),
])
def test_a_missing_setting_is_one_line_naming_it(args: list[str], unset: tuple[str, ...],
                                                 names: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in unset}
    if "VIGGLE_POSTGRES_DSN" not in unset:
        env["VIGGLE_POSTGRES_DSN"] = "postgresql:///unused"
    done = subprocess.run([sys.executable, str(EXAMPLE), *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and names in done.stderr, done.stderr


def test_an_unreachable_ledger_is_one_line() -> None:
    env = {**os.environ, "VIGGLE_POSTGRES_DSN": "postgresql://nobody:pw@127.0.0.1:9/none"}
    done = subprocess.run([sys.executable, str(EXAMPLE), "--self-test"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "cannot connect" in done.stderr
    assert ":pw@" not in done.stderr


def test_help_says_how_to_run_it() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE), "--help"], capture_output=True,
                          text=True, timeout=60, check=True)
    for text in ("VIGGLE_POSTGRES_DSN", "VIGGLE_API_KEY", "--self-test", "viggle-async worker",
                 "absolute", "pip install -e '.[postgres]'", "--schema"):
        assert text in done.stdout
