"""The store contract against ``SQLiteJournalStore``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from contract import AssetIndexContract, PersistentStoreContract

from viggle_async import JournalStore, SQLiteJournalStore


class TestSQLiteStore(PersistentStoreContract, AssetIndexContract):
    async def open_store(self, path: Path, *, clock: Callable[[], float]) -> JournalStore:
        return await SQLiteJournalStore.open(path)

    async def test_assets_survive_reopening(self, tmp_path: Path) -> None:
        path = tmp_path / "j"
        store = await SQLiteJournalStore.open(path)
        await store.remember_asset("acct", "h", "scene_1")
        await store.close()
        store = await SQLiteJournalStore.open(path)
        assert await store.find_asset("acct", "h") == "scene_1"
        await store.close()
