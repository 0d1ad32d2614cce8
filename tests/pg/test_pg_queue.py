"""The procrastinate prototype on a real PostgreSQL: rows spread over workers, and the row
of a worker that died comes back to a live one."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable

import anyio
import psycopg
import pytest

pytest.importorskip("procrastinate", reason="the postgres extra is not installed")

import anyio.lowlevel

from viggle_async.pg._queue import RowHandler, RowQueue

QueueFactory = Callable[..., RowQueue]


@pytest.fixture
async def make_queue(pg_dsn: str, schema: str) -> AsyncIterator[QueueFactory]:
    """Queues on the test's schema (procrastinate's tables installed there), each with its
    own pool, like separate worker processes."""
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')  # type: ignore[arg-type]

    def factory(handler: RowHandler, **kwargs: object) -> RowQueue:
        return RowQueue(pg_dsn, handler, schema=schema, **kwargs)  # type: ignore[arg-type]

    yield factory


async def test_two_workers_on_one_queue_run_each_row_exactly_once(
        make_queue: QueueFactory) -> None:
    done: Counter[str] = Counter()

    async def handler(run: str, row: str) -> None:
        done[f"{run}:{row}"] += 1
        await anyio.lowlevel.checkpoint()

    a, b = make_queue(handler), make_queue(handler)
    async with a.app.open_async(), b.app.open_async():
        await a.install()
        await b.install()  # idempotent: a second worker starting finds the tables
        rows = [f"r{i:02d}" for i in range(30)]
        assert await a.defer_rows("run1", rows) == 30
        assert await b.defer_rows("run1", rows[:5]) == 0  # still waiting: not deferred twice
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for q in (a, b):
                    tg.start_soon(lambda q=q: q.run_worker(
                        concurrency=4, wait=False, install_signal_handlers=False))
    assert done == Counter({f"run1:{r}": 1 for r in rows})


async def _kill_a_worker_holding_one_row(queue: RowQueue) -> int:
    """A worker registers, takes one row, and dies: no heartbeat since an hour ago."""
    manager = queue.app.job_manager
    worker_id = await manager.register_worker()
    job = await manager.fetch_job([queue.queue], worker_id)
    assert job is not None and job.status == "doing"
    await queue.app.connector.execute_query_async(
        "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour' "
        "WHERE id = %(id)s", id=worker_id)
    return worker_id


async def test_retry_stalled_puts_back_only_a_dead_workers_row(
        make_queue: QueueFactory) -> None:
    done: list[str] = []

    async def handler(run: str, row: str) -> None:
        done.append(row)

    queue = make_queue(handler, stalled_after=30.0)
    async with queue.app.open_async():
        await queue.install()
        await queue.defer_rows("run1", ["r1", "r2"])
        live = await queue.app.job_manager.register_worker()
        assert await queue.app.job_manager.fetch_job([queue.queue], live) is not None
        assert await queue.retry_stalled() == 0  # its worker heartbeats: not stalled
        await queue.app.job_manager.unregister_worker(live)  # ...now gone (worker_id NULL)
        assert await queue.retry_stalled() == 1
        await queue.run_worker(wait=False, install_signal_handlers=False)
    assert sorted(done) == ["r1", "r2"]


async def _job_status(queue: RowQueue, row: str) -> str:
    found = await queue.app.connector.execute_query_one_async(
        "SELECT status::text AS status FROM procrastinate_jobs WHERE lock = %(lock)s",
        lock=f"run1:{row}")
    return str(found["status"])


async def test_a_live_worker_recovers_a_dead_workers_row_while_its_slots_are_busy(
        make_queue: QueueFactory) -> None:
    """No one calls retry_stalled, and the worker's one slot is held by a row that waits
    for the recovery: the recovery is the worker's own loop, not a job queued behind rows
    (which would wait for a free slot for good)."""
    release, all_done = anyio.Event(), anyio.Event()
    done: list[str] = []

    async def handler(run: str, row: str) -> None:
        if row == "blocker":
            await release.wait()
        done.append(row)
        if len(done) == 3:
            all_done.set()

    queue = make_queue(handler, stalled_after=2.0, heartbeat=0.5, recover_every=0.5)
    async with queue.app.open_async():
        await queue.install()
        await queue.defer_rows("run1", ["orphan"])
        await _kill_a_worker_holding_one_row(queue)
        await queue.defer_rows("run1", ["blocker", "later"])
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: queue.run_worker(concurrency=1,
                                                       install_signal_handlers=False))
                # put back... (a database row: no local event to wait on)
                while await _job_status(queue, "orphan") != "todo":  # noqa: ASYNC110
                    await anyio.sleep(0.05)
                assert done == [] and await _job_status(queue, "blocker") == "doing"
                release.set()  # ...while the only slot was busy
                await all_done.wait()
                queue.stop()
    # The put-back row keeps its place: before the rows queued after it.
    assert done == ["blocker", "orphan", "later"]


def test_recover_cron_is_deprecated_and_read_as_seconds(make_queue: QueueFactory) -> None:
    async def handler(run: str, row: str) -> None:
        raise AssertionError("never run")

    with pytest.warns(DeprecationWarning, match="recover_every"):
        assert make_queue(handler, recover_cron="*/15 * * * * *").recover_every == 15.0
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="recover_every"):
        make_queue(handler, recover_cron="0 * * * *")
    with pytest.raises(ValueError, match="recover_every"):
        make_queue(handler, recover_every=0)
