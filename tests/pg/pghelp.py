"""Names the PostgreSQL tests share (a module of its own: `conftest` is ambiguous when
several test folders have one)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from viggle_async.pg import PostgresLedger

API_KEY = "vgl_test_key_0123456789abcdef"

#: ``await open_ledger(**kwargs)``: a ledger on the test's schema, with its own pool.
LedgerFactory = Callable[..., Awaitable[PostgresLedger]]
