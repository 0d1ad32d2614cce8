"""Prototype: one procrastinate job per manifest row, with stalled-job recovery.

What ``bulk --enqueue`` and ``viggle-async worker`` will sit on (docs/scale-out.md). The
row's work is a ``handler(run, row)`` coroutine; this module only spreads rows over
workers and brings back the rows of workers that died. Exactly-once effects are the
journal's job: a row may be delivered again (after a crash, or a shutdown abort), and the
handler must resume from the journal rather than create again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import procrastinate
from procrastinate import exceptions as pexc
from procrastinate.app import WorkerOptions

from ._dsn import redact_dsn

__all__ = ["RowQueue"]

RowHandler = Callable[[str, str], Awaitable[None]]


class RowQueue:
    """A procrastinate app whose jobs are (run, row) pairs.

    ``dsn``: libpq connection string (its own pool; procrastinate's tables go to the
    first schema of ``search_path``, set to ``schema`` when given). ``handler``: awaited
    with ``(run, row)`` for each delivery. ``queue``: procrastinate queue name.
    ``stalled_after``: seconds without a worker heartbeat before its running rows are
    handed to others (keep it several ``heartbeat`` s). ``recover_cron``: how often every
    worker retries stalled jobs (6-field cron, seconds first-class; one defer per tick
    across all workers). ``max_attempts``: deliveries of one row before procrastinate
    gives up (a shutdown-aborted job is only retried with a retry strategy).
    """

    def __init__(self, dsn: str, handler: RowHandler, *, schema: str | None = None,
                 queue: str = "viggle", stalled_after: float = 30.0, heartbeat: float = 10.0,
                 recover_cron: str = "*/15 * * * * *", max_attempts: int = 10) -> None:
        kwargs: dict[str, Any] = {}
        if schema is not None:
            kwargs["options"] = f"-c search_path={schema}"
        self._dsn = dsn
        self._handler = handler
        self.queue = queue
        self._stalled_after = stalled_after
        self._heartbeat = heartbeat
        self.app = procrastinate.App(connector=procrastinate.PsycopgConnector(
            conninfo=dsn, kwargs=kwargs))
        self._row_task = self.app.task(
            name="viggle_row", queue=queue, pass_context=False,
            retry=procrastinate.RetryStrategy(max_attempts=max_attempts, wait=1),
        )(self._run_row)
        recover = self.app.task(name="viggle_recover_stalled", queue=queue)(self._recover)
        self.app.periodic(cron=recover_cron, periodic_id=f"recover-{queue}")(recover)

    def __repr__(self) -> str:
        return f"RowQueue(dsn={redact_dsn(self._dsn)!r}, queue={self.queue!r})"

    async def _run_row(self, run: str, row: str) -> None:
        await self._handler(run, row)

    async def _recover(self, timestamp: int) -> None:
        await self.retry_stalled()

    async def install(self) -> None:
        """Create procrastinate's tables unless they exist (idempotent)."""
        cur = await self.app.connector.execute_query_one_async(
            "SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS present")
        if not cur["present"]:
            await self.app.schema_manager.apply_schema_async()

    async def defer_rows(self, run: str, rows: Iterable[str]) -> int:
        """Defer one job per row; a row already waiting in the queue is skipped (its
        queueing lock). Returns how many jobs were deferred."""
        deferred = 0
        for row in rows:
            key = f"{run}:{row}"
            try:
                await self._row_task.configure(
                    queueing_lock=key, lock=key).defer_async(run=run, row=row)
            except pexc.AlreadyEnqueued:
                continue
            deferred += 1
        return deferred

    async def retry_stalled(self) -> int:
        """Put back every running job whose worker stopped heartbeating for
        ``stalled_after`` seconds; returns how many."""
        manager = self.app.job_manager
        stalled = await manager.get_stalled_jobs(seconds_since_heartbeat=self._stalled_after)
        count = 0
        for job in stalled:
            await manager.retry_job(job)
            count += 1
        return count

    async def run_worker(self, *, concurrency: int = 1, wait: bool = True,
                         install_signal_handlers: bool = True,
                         shutdown_graceful_timeout: float | None = None) -> None:
        """Run a worker until stopped (SIGTERM/SIGINT when ``install_signal_handlers``; it
        then waits ``shutdown_graceful_timeout`` seconds for running rows, and aborted rows
        come back through the retry strategy), or until the queue is empty with
        ``wait=False``. The app must be open (``async with queue.app.open_async():``)."""
        options: WorkerOptions = {
            "queues": [self.queue], "concurrency": concurrency, "wait": wait,
            "install_signal_handlers": install_signal_handlers,
            "update_heartbeat_interval": self._heartbeat,
            "stalled_worker_timeout": self._stalled_after,
            "fetch_job_polling_interval": min(1.0, self._heartbeat)}
        if shutdown_graceful_timeout is not None:  # procrastinate's default: wait forever
            options["shutdown_graceful_timeout"] = shutdown_graceful_timeout
        await self.app.run_worker_async(**options)
