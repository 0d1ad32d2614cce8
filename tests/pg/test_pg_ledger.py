"""The ledger on a real PostgreSQL: connection, migrations, key binding, asset claims."""

from __future__ import annotations

import anyio
import psycopg
import pytest
from pghelp import API_KEY, LedgerFactory

from viggle_async.pg import (
    SCHEMA_VERSION,
    LedgerConnectionError,
    LedgerError,
    LedgerKeyMismatchError,
    LedgerSchemaTooNewError,
    PostgresLedger,
)


async def _exec(dsn: str, *statements: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            await conn.execute(statement)  # type: ignore[arg-type]


async def _rows(dsn: str, query: str) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query)  # type: ignore[arg-type]
        return list(await cur.fetchall())


async def test_open_creates_the_schema_and_the_pool_closes_with_the_owner(
        pg_dsn: str, schema: str) -> None:
    async with PostgresLedger(pg_dsn, api_key=API_KEY, schema=schema) as ledger:
        async with ledger.pool.connection() as conn:
            cur = await conn.execute(f'SELECT count(*) FROM "{schema}".account')
            assert await cur.fetchone() == (1,)
        pool = ledger.pool
    assert pool.closed
    with pytest.raises(LedgerError, match="not open"):
        _ = ledger.pool


async def test_concurrent_first_starts_migrate_exactly_once(
        pg_dsn: str, schema: str, open_ledger: LedgerFactory) -> None:
    # Six "processes" (separate pools) start together on an empty database.
    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(open_ledger)
    versions = await _rows(pg_dsn, f'SELECT version FROM "{schema}".schema_version')
    assert sorted(v for (v,) in versions) == list(range(1, SCHEMA_VERSION + 1))
    assert await _rows(pg_dsn, f'SELECT count(*) FROM "{schema}".ledger') == [(1,)]


async def test_a_newer_schema_is_refused_with_the_upgrade_fix(
        pg_dsn: str, schema: str, open_ledger: LedgerFactory) -> None:
    await open_ledger()
    await _rows(pg_dsn, f'INSERT INTO "{schema}".schema_version (version) '
                        f"VALUES ({SCHEMA_VERSION + 1}) RETURNING version")
    with pytest.raises(LedgerSchemaTooNewError, match="upgrade viggle-async") as info:
        await open_ledger()
    assert (info.value.found, info.value.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)


async def test_the_ledger_is_bound_to_the_key_that_created_it(
        pg_dsn: str, schema: str, open_ledger: LedgerFactory) -> None:
    await open_ledger(api_key="vgl_KEY_ONE_aaaaaaaa")
    await open_ledger(api_key="vgl_KEY_ONE_aaaaaaaa")  # same key: welcome
    with pytest.raises(LedgerKeyMismatchError, match="another API key") as info:
        await open_ledger(api_key="vgl_KEY_TWO_bbbbbbbb")
    assert "KEY_ONE" not in str(info.value) and "KEY_TWO" not in str(info.value)
    # Only a salted fingerprint is stored, never the key.
    ((salt, fp),) = await _rows(pg_dsn, f'SELECT salt, key_fingerprint FROM "{schema}".ledger')
    assert len(bytes(salt)) == 16 and len(bytes(fp)) == 32  # type: ignore[arg-type]
    assert b"KEY_ONE" not in bytes(fp)  # type: ignore[arg-type]


async def test_the_same_key_gives_different_fingerprints_in_different_ledgers(
        pg_dsn: str, open_ledger: LedgerFactory) -> None:
    other = PostgresLedger(pg_dsn, api_key=API_KEY, schema="t_fp_other_ledger")
    try:
        await open_ledger()
        await other.open()
        (a,), (b,) = [await _rows(pg_dsn, f'SELECT key_fingerprint FROM "{s}".ledger')
                      for s in (other.schema, (await open_ledger()).schema)]
        assert a != b  # a per-ledger salt: fingerprints cannot be matched across ledgers
    finally:
        await other.aclose()
        await _exec(pg_dsn, 'DROP SCHEMA IF EXISTS "t_fp_other_ledger" CASCADE')


async def test_connection_errors_never_show_the_password(pg_dsn: str, schema: str) -> None:
    # TCP to loopback uses scram authentication here: a wrong user/password is refused.
    dsn = ("postgresql://no_such_role_x:Pa55-word-XYZ@127.0.0.1:"
           f"{psycopg.conninfo.conninfo_to_dict(pg_dsn).get('port', 5432)}/viggle_test")
    ledger = PostgresLedger(dsn, api_key=API_KEY, schema=schema, connect_timeout=5)
    with pytest.raises(LedgerConnectionError) as info:
        await ledger.open()
    err = info.value
    assert "Pa55-word-XYZ" not in str(err) and "Pa55-word-XYZ" not in repr(err)
    assert err.__cause__ is None and err.__suppress_context__
    assert "no_such_role_x:***@127.0.0.1" in str(err)


async def test_a_malformed_dsn_fails_naming_it_without_its_password(schema: str) -> None:
    ledger = PostgresLedger("host=x password=Hidden-Pw-123 bogus_option=1",
                            api_key=API_KEY, schema=schema)
    with pytest.raises(LedgerConnectionError, match="not a valid PostgreSQL DSN") as info:
        await ledger.open()
    assert "Hidden-Pw-123" not in str(info.value)


async def test_dsn_from_libpq_environment_and_pgpass(
        pg_dsn: str, schema: str, tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty DSN leaves host, port, user and password to PG* variables and .pgpass."""
    import pathlib
    port = str(psycopg.conninfo.conninfo_to_dict(pg_dsn).get("port", 5432))
    role, password = f"r_{schema}", "pgpass-Secret-77"
    await _exec(pg_dsn, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        await _exec(pg_dsn, f"GRANT CREATE ON DATABASE viggle_test TO {role}")
        pgpass = pathlib.Path(str(tmp_path)) / "pgpass"
        pgpass.write_text(f"127.0.0.1:{port}:viggle_test:{role}:{password}\n")
        pgpass.chmod(0o600)
        for name, value in {"PGHOST": "127.0.0.1", "PGPORT": port, "PGDATABASE": "viggle_test",
                            "PGUSER": role, "PGPASSFILE": str(pgpass)}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("VIGGLE_POSTGRES_DSN", raising=False)
        async with PostgresLedger(api_key=API_KEY, schema=schema) as ledger:
            async with ledger.pool.connection() as conn:
                cur = await conn.execute("SELECT current_user")
                assert await cur.fetchone() == (role,)
            assert password not in repr(ledger)
    finally:
        monkeypatch.undo()  # connect as the test's own user again to clean up
        await _exec(pg_dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE',
                    f"REVOKE ALL ON DATABASE viggle_test FROM {role}",
                    f"DROP ROLE IF EXISTS {role}")


async def test_asset_claims_one_owner_per_hash_across_processes(
        open_ledger: LedgerFactory) -> None:
    ledgers = [await open_ledger() for _ in range(4)]
    claims = []

    async def claim(i: int) -> None:
        claims.append(await ledgers[i % 4].claim_asset("sha256:abc", f"row-{i}"))

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(claim, i)
    winners = [c for c in claims if c.mine]
    assert len(winners) == 1
    owner = winners[0].owner
    assert all(c.owner == owner and c.asset_id is None for c in claims)
    # The owner's row, resumed by another worker, still holds it (no second payment).
    assert (await ledgers[3].claim_asset("sha256:abc", owner)).mine
    with pytest.raises(LedgerError, match="does not hold"):
        await ledgers[0].record_asset("sha256:abc", "row-not-owner", "char_x")
    await ledgers[1].record_asset("sha256:abc", owner, "char_123")
    later = await ledgers[2].claim_asset("sha256:abc", "row-99")
    assert (later.mine, later.asset_id) == (False, "char_123")


async def test_a_released_claim_can_be_won_by_another_row(open_ledger: LedgerFactory) -> None:
    a, b = await open_ledger(), await open_ledger()
    assert (await a.claim_asset("h1", "row-1")).mine
    assert not (await b.claim_asset("h1", "row-2")).mine
    await b.release_asset("h1", "row-2")  # not the holder: nothing happens
    assert not (await b.claim_asset("h1", "row-2")).mine
    await a.release_asset("h1", "row-1")  # a documented refusal: nothing was created
    assert (await b.claim_asset("h1", "row-2")).mine


async def test_run_budget_is_kept_in_the_ledger(open_ledger: LedgerFactory) -> None:
    a, b = await open_ledger(), await open_ledger()
    assert await b.account_budget() is None
    await a.set_account_budget(250)
    assert await b.account_budget() == 250
    with pytest.raises(ValueError, match="credit_budget"):
        await a.set_account_budget(-1)
