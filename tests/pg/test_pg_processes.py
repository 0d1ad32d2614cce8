"""Real processes, not pools: workers started together on an empty database migrate once
and never overrun one budget between them."""

from __future__ import annotations

import sys

import anyio
import psycopg
from pghelp import API_KEY

from viggle_async.pg import SCHEMA_VERSION, PostgresAccountState, PostgresLedger

_WORKER = """
import anyio, sys
from viggle_async.pg import PostgresAccountState, PostgresLedger

async def main(dsn, schema, key):
    async with PostgresLedger(dsn, api_key=key, schema=schema, max_size=2) as ledger:
        await ledger.set_run_budget("shared", 100)  # one run's budget, all processes
        state = PostgresAccountState(ledger, run="shared")
        answers = [await state.reserve(10) for _ in range(5)]
    print(sum(a is None for a in answers))

anyio.run(main, *sys.argv[1:])
"""


async def test_four_processes_started_together_migrate_once_and_share_one_budget(
        pg_dsn: str, schema: str) -> None:
    granted: list[int] = []

    async def worker() -> None:
        done = await anyio.run_process(
            [sys.executable, "-c", _WORKER, pg_dsn, schema, API_KEY], check=False)
        assert done.returncode == 0, done.stderr.decode()
        granted.append(int(done.stdout))

    with anyio.fail_after(90):
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(worker)
    assert sum(granted) == 10  # 20 asks of 10 credits, 100 allowed: never more
    async with PostgresLedger(pg_dsn, api_key=API_KEY, schema=schema) as ledger:
        assert await PostgresAccountState(ledger).committed() == 100
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute(f'SELECT version FROM "{schema}".schema_version')  # type: ignore[arg-type]
        assert [v for (v,) in await cur.fetchall()] == list(range(1, SCHEMA_VERSION + 1))
