"""The store contract against ``PostgresJournalStore``, plus what only it does: one key raced
from separate connections, the ledger bound to one API key, the password kept out of sight.

Needs a server: ``VIGGLE_TEST_POSTGRES_DSN`` (e.g. ``host=/var/run/postgresql
dbname=viggle_test``). Skipped without it, unless ``VIGGLE_REQUIRE_POSTGRES=1``. Each test
works in a schema of its own, dropped afterwards."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio
import pytest
from contract import (
    FP,
    AssetIndexContract,
    LeaseStoreContract,
    PersistentStoreContract,
)

from viggle_async import (
    EntryState,
    Journal,
    JournalAccountError,
    JournalError,
    JournalFormatError,
    JournalStore,
    JournalTransitionError,
    JournalWriteError,
    PostgresJournalStore,
    api_key_fingerprint,
)

DSN = os.environ.get("VIGGLE_TEST_POSTGRES_DSN", "")
ACCOUNT = api_key_fingerprint("sk-test-postgres")


@pytest.fixture(autouse=True)
def _need_server() -> None:
    if not DSN:
        # The same words as tests/pg/conftest.py: one skip line for every PostgreSQL test.
        reason = "VIGGLE_TEST_POSTGRES_DSN is not set (bash ci/start-postgres prints one)"
        if os.environ.get("VIGGLE_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " and VIGGLE_REQUIRE_POSTGRES=1", pytrace=False)
        pytest.skip(reason)


def schema_for(path: Path) -> str:
    return "vjt_" + hashlib.sha1(str(path).encode()).hexdigest()[:20]


@pytest.fixture(autouse=True)
def _drop_schemas(tmp_path: Path) -> Iterator[None]:
    yield
    if not DSN:
        return
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        for name in ("journal", "leases", "pg"):
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema_for(tmp_path / name)}" CASCADE')


async def open_pg(path: Path, *, clock: Callable[[], float] | None = None,
                  account: str = ACCOUNT, **kw: object) -> PostgresJournalStore:
    options: dict[str, object] = {"schema": schema_for(path), **kw}
    if clock is not None:
        options["clock"] = clock
    return await PostgresJournalStore.open(DSN, account=account, **options)  # type: ignore[arg-type]


class TestPostgresStore(PersistentStoreContract, AssetIndexContract, LeaseStoreContract):
    async def open_store(self, path: Path, *, clock: Callable[[], float]) -> JournalStore:
        return await open_pg(path, clock=clock)


@pytest.fixture
async def pg_path(tmp_path: Path) -> AsyncIterator[Path]:
    yield tmp_path / "pg"


async def test_one_key_raced_from_twenty_connections_has_one_winner(pg_path: Path) -> None:
    stores = [await open_pg(pg_path, max_connections=1) for _ in range(20)]
    try:
        journals = [Journal(s) for s in stores]
        await journals[0].record_intent("k", kind="render", fingerprint=FP)
        wins: list[int] = []

        async def race(i: int) -> None:
            try:
                await journals[i].mark_sending("k")
                wins.append(i)
            except JournalTransitionError:
                pass

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(race, i)
        assert len(wins) == 1
        # and a new key raced the same way: one intent, the rest see it
        firsts: list[int] = []

        async def first(i: int) -> None:
            e = await journals[i].record_intent("new", kind="render", fingerprint=FP)
            firsts.append(e.attempts)

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(first, i)
        assert sorted(firsts) == list(range(1, 21))  # serialised: each saw the one before
        assert (await journals[5].get("k")).state is EntryState.SENDING  # type: ignore[union-attr]
    finally:
        for s in stores:
            await s.close()


async def test_a_ledger_is_bound_to_one_api_key(pg_path: Path, tmp_path: Path) -> None:
    store = await open_pg(pg_path, ledger="shots")
    await store.close()
    # The schema is one account's (the PostgresLedger binding): another key is refused
    # whatever ledger name it asks for.
    for name in ("shots", "theirs"):
        with pytest.raises(JournalAccountError, match="another API key"):
            await open_pg(pg_path, ledger=name, account=api_key_fingerprint("sk-other"))
    # the other key has a schema of its own; the first key still opens its ledger
    other = await open_pg(tmp_path / "leases", account=api_key_fingerprint("sk-other"))
    await other.close()
    again = await open_pg(pg_path, ledger="shots")
    await again.close()


async def test_the_journal_and_the_ledger_share_one_binding(pg_path: Path) -> None:
    from viggle_async.pg import LedgerKeyMismatchError, PostgresLedger

    # A journal opened with the account's fingerprint binds the schema; a worker's
    # PostgresLedger with the raw key is the same account, another key is refused.
    await (await open_pg(pg_path)).close()
    async with PostgresLedger(DSN, api_key="sk-test-postgres",
                              schema=schema_for(pg_path)) as ledger:
        journal = Journal(PostgresJournalStore.on_ledger(ledger, name="run1"))
        await journal.record_intent("k", kind="render", fingerprint=FP)
        await journal.close()  # leaves the ledger's pool open
        assert await ledger.account_budget() is None
    again = Journal(await open_pg(pg_path, ledger="run1"))
    async with again:
        assert (await again.get("k")) is not None
    with pytest.raises(LedgerKeyMismatchError):
        async with PostgresLedger(DSN, api_key="sk-other", schema=schema_for(pg_path)):
            pass


async def test_the_dsn_comes_from_one_place(monkeypatch: pytest.MonkeyPatch,
                                            pg_path: Path) -> None:
    # VIGGLE_POSTGRES_DSN first, the older VIGGLE_JOURNAL_DSN as its alias.
    monkeypatch.delenv("VIGGLE_POSTGRES_DSN", raising=False)
    monkeypatch.setenv("VIGGLE_JOURNAL_DSN", DSN)
    store = await PostgresJournalStore.open(account=ACCOUNT, schema=schema_for(pg_path))
    await store.close()
    monkeypatch.setenv("VIGGLE_POSTGRES_DSN", "postgresql://u:pw-env-1@127.0.0.1:1/x")
    with pytest.raises(JournalWriteError) as info:
        await PostgresJournalStore.open(account=ACCOUNT, connect_timeout=1)
    assert "127.0.0.1" in str(info.value) and "pw-env-1" not in str(info.value)


async def test_ledgers_do_not_share_entries(pg_path: Path) -> None:
    a = Journal(await open_pg(pg_path, ledger="a"))
    b = Journal(await open_pg(pg_path, ledger="b"))
    async with a, b:
        await a.record_intent("k", kind="render", fingerprint=FP)
        assert await b.get("k") is None
        await b.record_intent("k", kind="scene", fingerprint="other")  # no mismatch: separate
        assert [e.kind for e in await a.entries()] == ["render"]


async def test_a_newer_schema_is_refused(pg_path: Path) -> None:
    await (await open_pg(pg_path)).close()
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'INSERT INTO "{schema_for(pg_path)}".schema_version VALUES (99)')
    with pytest.raises(JournalFormatError, match=r"schema version 99.*upgrade"):
        await open_pg(pg_path)


async def test_the_password_never_shows(pg_path: Path) -> None:
    secret = "sekrit-PASS-123"
    # An unreachable server: the error names the DSN without the password.
    with pytest.raises(JournalWriteError) as info:
        await PostgresJournalStore.open(
            f"postgresql://root:{secret}@127.0.0.1:1/viggle_test", account=ACCOUNT,
            connect_timeout=2)
    assert secret not in str(info.value) and secret not in repr(info.value)
    assert "127.0.0.1" in str(info.value) and info.value.__cause__ is None
    # A reachable one (the password unused by its auth): not in the repr either.
    import psycopg.conninfo

    store = await PostgresJournalStore.open(
        psycopg.conninfo.make_conninfo(DSN, password=secret), account=ACCOUNT,
        schema=schema_for(pg_path))
    try:
        assert secret not in repr(store) and secret not in store.dsn
        assert isinstance(store, JournalStore)
    finally:
        await store.close()


async def test_errors_are_journal_errors(pg_path: Path) -> None:
    store = await open_pg(pg_path)
    await store.close()
    with pytest.raises(JournalError):
        await store.get("k")
