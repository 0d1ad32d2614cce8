"""The store contract against ``MemoryJournalStore`` (the reference store)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from contract import AssetIndexContract, LeaseStoreContract, StoreContract

from viggle_async import JournalStore, MemoryJournal, MemoryJournalStore


class TestMemoryStore(StoreContract, AssetIndexContract, LeaseStoreContract):
    async def open_store(self, path: Path, *, clock: Callable[[], float]) -> JournalStore:
        return MemoryJournalStore(clock=clock)


async def test_memory_journal_is_a_journal_over_the_memory_store() -> None:
    j = MemoryJournal()
    assert isinstance(j.store, MemoryJournalStore)
    await j.record_intent("k", kind="render", fingerprint="fp")
    assert (await j.store.get("k")) == (await j.get("k"))
    await j.close()
