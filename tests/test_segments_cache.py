"""The template-segments cache: per account (a key fingerprint, never the key), atomic,
private to the user, turned off by an environment variable, and never an error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from viggle_async import ViggleClient
from viggle_async._models import Segment
from viggle_async._segments_cache import NO_CACHE_ENV, SegmentsCache, key_fingerprint
from viggle_async.testing import FakeViggle

KEY = "sk-live-segments-3c9e1f"


def _tree(root: Path, pattern: str) -> list[Path]:
    return sorted(root.rglob(pattern))
PEOPLE = (Segment("person_a1", "person"), Segment("person_b2", None))

async def test_segments_saved_by_one_cache_are_read_by_another(tmp_path: Path) -> None:
    assert await SegmentsCache(tmp_path, KEY).save("scene_1", PEOPLE)
    # A later process: a new object on the same folder and key.
    assert await SegmentsCache(tmp_path, KEY).load("scene_1") == PEOPLE
    assert await SegmentsCache(tmp_path, KEY).load("scene_2") is None


async def test_another_account_never_sees_them_and_the_key_is_not_on_disk(
        tmp_path: Path) -> None:
    cache = SegmentsCache(tmp_path, KEY)
    await cache.save("scene_1", PEOPLE)
    assert await SegmentsCache(tmp_path, "sk-other-account").load("scene_1") is None
    files = _tree(tmp_path, "*")
    assert files and all(KEY not in str(p) for p in files)
    assert all(KEY not in p.read_text() for p in files if p.is_file())
    assert KEY not in repr(cache)
    (path,) = [p for p in files if p.is_file()]
    assert path.parent.name == key_fingerprint(KEY)
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert oct(path.parent.stat().st_mode & 0o777) == oct(0o700)


async def test_bad_files_and_ids_are_ignored_not_raised(tmp_path: Path) -> None:
    cache = SegmentsCache(tmp_path, KEY)
    await cache.save("scene_1", PEOPLE)
    (path,) = _tree(tmp_path, "*.json")
    for text in ("not json", "[]", '{"format": 99}', '{"format": 1, "scene_id": "scene_1"}'):
        path.write_text(text)
        assert await cache.load("scene_1") is None
    # A scene id that would walk out of the folder is neither written nor read.
    assert not await cache.save("../../escape", PEOPLE)
    assert await cache.load("../../escape") is None
    await cache.forget("scene_1")
    assert await cache.load("scene_1") is None
    await cache.forget("never-saved")


def test_default_location_and_opt_out(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    cache = SegmentsCache.from_env(KEY, env)
    assert cache is not None
    assert str(tmp_path / "viggle-async" / "segments") in repr(cache)
    assert SegmentsCache.from_env(KEY, {**env, NO_CACHE_ENV: "1"}) is None
    assert SegmentsCache.from_env(KEY, {**env, NO_CACHE_ENV: "0"}) is not None
    assert SegmentsCache.from_env(None, env) is None
    home = SegmentsCache.from_env(KEY, {})
    assert home is not None and os.path.expanduser("~/.cache") in repr(home)


async def test_scenes_keep_template_segments_across_client_instances(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``client.scenes`` uses the cache by default: a template imported by one client (one
    process) shows its segments to a later one through ``get`` and ``wait``; ``delete``
    forgets them; the opt-outs (env, ``segments_cache=False``) keep nothing."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(NO_CACHE_ENV, raising=False)
    async with FakeViggle(time_scale=1000.0) as fake:
        def client(**kw: object) -> ViggleClient:
            return ViggleClient(fake.api_key, base_url=fake.base_url, **kw)  # type: ignore[arg-type]

        async with client() as first:
            duo = await first.scenes.import_template("tmpl-duo-dance")
            trio = await first.scenes.import_template("tmpl-trio-walk")
        assert len(duo.segments) == 2 and len(trio.segments) == 3
        async with client() as later:
            got = await later.scenes.get(duo.id)
            assert [s.uuid for s in got.segments] == [s.uuid for s in duo.segments]
            ready = await later.scenes.wait(trio.id, poll_interval=0.01)
            assert ready.segments == trio.segments
            await later.scenes.delete(duo.id)
        async with client() as third:
            assert (await third.scenes.get(trio.id)).segments == trio.segments
            assert list((tmp_path / "cache").rglob(f"{duo.id}.json")) == []
        async with client(segments_cache=False) as off:
            assert (await off.scenes.get(trio.id)).segments == ()
        monkeypatch.setenv(NO_CACHE_ENV, "1")
        async with client() as opted_out:
            assert (await opted_out.scenes.get(trio.id)).segments == ()
            again = await opted_out.scenes.import_template("tmpl-duo-dance")
        assert list((tmp_path / "cache").rglob(f"{again.id}.json")) == []
