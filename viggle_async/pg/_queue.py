"""One procrastinate job per manifest row, with stalled-job recovery.

What ``bulk --enqueue`` and ``viggle-async worker`` sit on (docs/scale-out.md). The row's
work is a ``handler(run, row)`` coroutine; this module only spreads rows over workers and
brings back the rows of workers that died. Exactly-once effects are the journal's job: a
row may be delivered again (after a crash, or a shutdown abort), and the handler must
resume from the journal rather than create again.

Recovery is a plain loop beside each worker's job loop, not a procrastinate periodic task:
a periodic task is a job on the rows' queue, so it waited behind the queued rows whenever
every live worker's slots were busy, and a dead worker's rows stayed ``doing`` for good.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import procrastinate
from procrastinate import exceptions as pexc
from procrastinate.app import WorkerOptions

from ._dsn import redact_dsn

__all__ = ["RowQueue"]

RowHandler = Callable[[str, str], Awaitable[None]]

_log = logging.getLogger("viggle_async.pg")


class RowQueue:
    """A procrastinate app whose jobs are (run, row) pairs.

    ``dsn``: libpq connection string (its own pool; procrastinate's tables go to the
    first schema of ``search_path``, set to ``schema`` when given). ``handler``: awaited
    with ``(run, row)`` for each delivery. ``queue``: procrastinate queue name.
    ``stalled_after``: seconds without a worker heartbeat before its running rows are
    handed to others (keep it several ``heartbeat`` s). ``recover_every``: seconds between
    two stalled-job recoveries in each running worker, whatever its slots are doing.
    ``recover_cron`` (deprecated: use ``recover_every``) is read as ``*/N`` seconds.
    ``max_attempts``: deliveries of one row before procrastinate gives up (a
    shutdown-aborted job is only retried with a retry strategy).
    """

    def __init__(self, dsn: str, handler: RowHandler, *, schema: str | None = None,
                 queue: str = "viggle", stalled_after: float = 30.0, heartbeat: float = 10.0,
                 recover_every: float = 15.0, recover_cron: str | None = None,
                 max_attempts: int = 10) -> None:
        kwargs: dict[str, Any] = {}
        if schema is not None:
            kwargs["options"] = f"-c search_path={schema}"
        self._dsn = dsn
        self._handler = handler
        self.queue = queue
        self._stalled_after = stalled_after
        self._heartbeat = heartbeat
        if recover_cron is not None:
            warnings.warn("RowQueue(recover_cron=...) is deprecated: pass recover_every "
                          "(seconds)", DeprecationWarning, stacklevel=2)
            recover_every = _cron_seconds(recover_cron)
        if not recover_every > 0:
            raise ValueError(f"recover_every: {recover_every!r} is not a positive number of "
                             "seconds. Fix: pass e.g. recover_every=15")
        self.recover_every = recover_every
        self._worker: Any = None
        self._stop_early = False  # stop() came before run_worker() made its worker
        self.app = procrastinate.App(connector=procrastinate.PsycopgConnector(
            conninfo=dsn, kwargs=kwargs))
        self._row_task = self.app.task(
            name="viggle_row", queue=queue, pass_context=False,
            retry=procrastinate.RetryStrategy(max_attempts=max_attempts, wait=1),
        )(self._run_row)

    def __repr__(self) -> str:
        return f"RowQueue(dsn={redact_dsn(self._dsn)!r}, queue={self.queue!r})"

    async def _run_row(self, run: str, row: str) -> None:
        await self._handler(run, row)

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

    async def recover_forever(self) -> None:
        """Every ``recover_every`` seconds, ``retry_stalled()``; runs until cancelled. A
        failed recovery (the database briefly unreachable) is logged and tried again at
        the next period: the worker's own job loop meets the same error and decides."""
        while True:
            await anyio.sleep(self.recover_every)
            try:
                back = await self.retry_stalled()
            except Exception as exc:  # logged; tried again at the next period
                _log.warning("stalled-row recovery failed (retried in %g s): %s",
                             self.recover_every, exc)
                continue
            if back:
                _log.info("%d stalled row(s) put back in queue %r", back, self.queue)

    def stop(self) -> None:
        """Ask the running worker to stop taking rows: it waits up to its
        ``shutdown_graceful_timeout`` for the rows it holds, hands back the rest (their
        jobs come back through the retry strategy) and ``run_worker`` returns. Called
        before ``run_worker``, that call returns at once (once)."""
        if self._worker is not None:
            self._worker.stop()
        else:
            self._stop_early = True

    async def run_worker(self, *, concurrency: int = 1, wait: bool = True,
                         install_signal_handlers: bool = True,
                         shutdown_graceful_timeout: float | None = None) -> None:
        """Run a worker until stopped (``stop()``; SIGTERM/SIGINT when
        ``install_signal_handlers``; it then waits ``shutdown_graceful_timeout`` seconds for
        running rows, and aborted rows come back through the retry strategy), or until the
        queue is empty with ``wait=False``. Beside it, ``recover_forever()`` puts back the
        rows of dead workers every ``recover_every`` seconds. The app must be open
        (``async with queue.app.open_async():``)."""
        options: WorkerOptions = {
            "queues": [self.queue], "concurrency": concurrency, "wait": wait,
            "install_signal_handlers": install_signal_handlers,
            "update_heartbeat_interval": self._heartbeat,
            "stalled_worker_timeout": self._stalled_after,
            "fetch_job_polling_interval": min(1.0, self._heartbeat)}
        if shutdown_graceful_timeout is not None:  # procrastinate's default: wait forever
            options["shutdown_graceful_timeout"] = shutdown_graceful_timeout
        if self._stop_early:
            self._stop_early = False
            return
        self.app.perform_import_paths()  # type: ignore[no-untyped-call]
        # App.run_worker_async, with the Worker kept so stop() can reach it.
        self._worker = self.app._worker(**options)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.recover_forever)
                await self._worker.run()
                tg.cancel_scope.cancel()
        finally:
            self._worker = None


def _cron_seconds(cron: str) -> float:
    """``*/N * * * * *`` -> N, ``* * * * * *`` -> 1 (the forms this class documented)."""
    first = cron.split()[0] if cron.split() else ""
    if first == "*":
        return 1.0
    match = re.fullmatch(r"\*/(\d+)", first)
    if match is None:
        raise ValueError(f"recover_cron: {cron!r} is not '*/N * * * * *'. Fix: pass "
                         "recover_every=N (seconds) instead")
    return float(match.group(1))
