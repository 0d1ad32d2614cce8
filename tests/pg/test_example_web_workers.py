"""Smoke test of examples/web_backend_workers.py: the app (in this process) records and
defers two renders, a ``viggle-async worker`` process runs them against an out-of-process
fake, and the app reports them done with their outputs on disk."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

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
