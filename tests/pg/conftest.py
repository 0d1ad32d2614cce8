"""A real PostgreSQL for the ledger tests, one fresh schema per test.

The server comes from ``$VIGGLE_TEST_POSTGRES_DSN`` (``bash ci/start-postgres`` prints
one). Unset: the tests skip, unless ``VIGGLE_REQUIRE_POSTGRES=1`` (CI) makes that a
failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

psycopg = pytest.importorskip("psycopg", reason="the postgres extra is not installed")

from pghelp import API_KEY, LedgerFactory  # noqa: E402

from viggle_async.pg import PostgresLedger  # noqa: E402


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The test server's DSN; skips (or fails under ``VIGGLE_REQUIRE_POSTGRES=1``)."""
    dsn = os.environ.get("VIGGLE_TEST_POSTGRES_DSN")
    if not dsn:
        reason = ("VIGGLE_TEST_POSTGRES_DSN is not set (bash ci/start-postgres prints one)")
        if os.environ.get("VIGGLE_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " and VIGGLE_REQUIRE_POSTGRES=1", pytrace=False)
        pytest.skip(reason)
    return dsn


@pytest.fixture
async def schema(pg_dsn: str) -> AsyncIterator[str]:
    """A schema name no other test uses; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A schema name for worker subprocesses (sync: no event loop needed); dropped after."""
    name = f"p_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
async def open_ledger(pg_dsn: str, schema: str) -> AsyncIterator[LedgerFactory]:
    """Opens ledgers on the test's schema, each with its own pool (one per "process");
    all closed afterwards."""
    opened: list[PostgresLedger] = []

    async def factory(**kwargs: object) -> PostgresLedger:
        kwargs.setdefault("api_key", API_KEY)
        kwargs.setdefault("max_size", 4)
        ledger = PostgresLedger(pg_dsn, schema=schema, **kwargs)  # type: ignore[arg-type]
        opened.append(ledger)
        await ledger.open()
        return ledger

    yield factory
    for ledger in opened:
        await ledger.aclose()
