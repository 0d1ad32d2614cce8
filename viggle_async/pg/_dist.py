"""The rows of a distributed run, in the ledger: what ``bulk --enqueue`` recorded and what
each ``viggle-async worker`` finished.

A row is stored once per (run, key) with its spec (a JSON object the CLI writes and reads:
inputs, outputs, input hashes, price) and the keys it depends on. Its state moves
``waiting`` (a dependency is unfinished) → ``queued`` (deferred to the queue) → ``done`` or
``failed``. Finishing a row returns the rows that became ready (every dependency done), each
returned by exactly one ``finish`` call, so a dependency finished by two workers at once
still defers each dependent once. Per-request exactly-once lives in the journal, not here:
a row delivered twice resumes from the journal's job id.

Layering: a store on ``PostgresLedger``; no client, no supervisor, no queue.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from psycopg.types.json import Jsonb

from ._errors import LedgerError
from ._ledger import PostgresLedger

__all__ = ["DistRow", "RowBook", "RunCounts", "decode_spec_value", "hash_file", "orphaned_rows",
           "row_spec", "run_names",
           "unfinished_rows"]

_PATH_TAG = "$path"
_RUN_LOCK = 0x56526F77  # "VRow": the advisory lock class of a run's row changes


def _encode(value: Any) -> Any:
    if isinstance(value, Path):
        return {_PATH_TAG: str(value.absolute())}
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def decode_spec_value(value: Any) -> Any:
    """A value of a ``row_spec`` back in Python: tagged paths become ``Path`` again."""
    if isinstance(value, dict):
        if set(value) == {_PATH_TAG}:
            return Path(value[_PATH_TAG])
        return {k: decode_spec_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_spec_value(v) for v in value]
    return value


def hash_file(path: Path) -> str:
    """``"<size>:<sha256 hex>"`` of a file (blocking: run it in a thread)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return f"{path.stat().st_size}:{digest.hexdigest()}"


def row_spec(inputs: Mapping[str, Any], *, output: Path | None = None,
             mask_output: Path | None = None, estimated_seconds: float | None = None,
             character: str | None = None, scene: str | None = None,
             mapping_refs: Mapping[str, str] | None = None, credits: int | None = None,
             fast: bool = False, line: int | None = None,
             manifest: Path | None = None) -> dict[str, Any]:
    """The JSON spec of one row, as ``viggle-async worker`` reads it (blocking: it hashes
    every input file; run it in a thread).

    ``inputs``: the create's arguments (``Path`` values are files, made absolute: they must
    be on a filesystem every worker reaches). ``character``/``scene``: keys of character
    or scene rows of the same run whose ids the render uses; ``mapping_refs``: segment ->
    character row key. ``credits``: the estimate shown by ``--status``. ``manifest``: the
    file the row came from (resolved): a run name reused for another manifest is
    refused, not mixed.
    """
    files = [v for v in inputs.values() if isinstance(v, Path)]
    return {"line": line, "inputs": _encode(dict(inputs)), "output": _encode(output),
            "mask_output": _encode(mask_output), "estimated_seconds": estimated_seconds,
            "character": character, "scene": scene, "mapping_refs": dict(mapping_refs or {}),
            "credits": credits, "fast": fast,
            **({"manifest": str(manifest.resolve())} if manifest is not None else {}),
            "hashes": {str(f.absolute()): hash_file(f) for f in files}}


@attrs.frozen
class DistRow:
    """One row as stored: ``spec`` is the caller's JSON object, ``outcome`` the finished
    row's (None before), ``asset_id`` a finished character's or scene's id."""

    key: str
    seq: int
    kind: str
    spec: Mapping[str, Any]
    deps: tuple[str, ...]
    state: str
    asset_id: str | None
    outcome: Mapping[str, Any] | None


@attrs.frozen
class RunCounts:
    """A run's rows by state (``waiting``, ``queued``, ``done``, ``failed``)."""

    total: int
    by_state: Mapping[str, int]


def _canonical(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


class RowBook:
    """The rows of run ``run`` in ``ledger``'s schema (the ledger must be open)."""

    def __init__(self, ledger: PostgresLedger, run: str) -> None:
        if not run:
            raise ValueError("run: empty. Fix: name the run (e.g. the manifest's file name)")
        self._ledger = ledger
        self.run = run

    async def add(self, rows: Sequence[tuple[str, str, Mapping[str, Any], Sequence[str]]]
                  ) -> list[str]:
        """Record ``(key, kind, spec, deps)`` rows in one transaction, in order, and mark
        the ones with no unfinished dependency ``queued``; returns those keys (to defer).

        Idempotent: a row already recorded keeps its state (a second ``--enqueue`` of the
        same manifest adds nothing; waiting or queued rows are returned again, and the
        queue's own lock drops the duplicates). Raises ``LedgerError`` naming the key if
        a recorded row's spec differs (the manifest changed: use another run name).
        """
        q = self._ledger.q
        async with self._ledger.pool.connection() as conn, conn.transaction():
            await self._lock_run(conn)
            await self._check_manifest(conn, rows)
            for seq, (key, kind, spec, deps) in enumerate(rows):
                cur = await conn.execute(
                    q("""INSERT INTO {s}.dist_rows (run, key, seq, kind, spec, deps)
                         VALUES (%s, %s, %s, %s, %s, %s)
                         ON CONFLICT (run, key) DO NOTHING RETURNING key"""),
                    (self.run, key, seq, kind, Jsonb(dict(spec)), list(deps)))
                if await cur.fetchone() is None:
                    cur = await conn.execute(
                        q("SELECT spec FROM {s}.dist_rows WHERE run = %s AND key = %s"),
                        (self.run, key))
                    old = await cur.fetchone()
                    if old is not None and _canonical(old[0]) != _canonical(spec):
                        raise LedgerError(
                            f"run {self.run!r}, row {key!r}: recorded with other inputs. Fix: "
                            "enqueue the changed manifest under another name: --run NAME")
            return await self._queue_ready(conn)

    async def _queue_ready(self, conn: Any) -> list[str]:
        # Every unfinished row whose dependencies are all done is queued (again): in
        # manifest order, the keys to defer.
        cur = await conn.execute(self._ledger.q(
            """UPDATE {s}.dist_rows AS r SET state = 'queued', updated_at = now()
               WHERE r.run = %(run)s AND r.state IN ('waiting', 'queued')
                 AND NOT EXISTS (SELECT 1 FROM {s}.dist_rows d
                                 WHERE d.run = r.run AND d.key = ANY(r.deps)
                                   AND d.state <> 'done')
               RETURNING r.key, r.seq"""), {"run": self.run})
        ready = sorted(await cur.fetchall(), key=lambda r: r[1])
        return [str(r[0]) for r in ready]

    async def retry(self, keys: Sequence[str]) -> tuple[list[str], list[str]]:
        """Put the failed rows ``keys`` back in the run, in one transaction: each goes back
        to ``waiting`` (its outcome cleared) unless a row it depends on stays failed.
        Returns ``(reopened, ready)``: the rows put back, in manifest order, and the rows
        now ``queued`` (to defer; as from ``add``, rows queued before come back too).
        Which rows may run again (nothing sent, a job to resume, an end the caller asked
        to resubmit) is the caller's call, from the journal: this only moves the rows.
        Keys not failed (or unknown) are left alone."""
        async with self._ledger.pool.connection() as conn, conn.transaction():
            await self._lock_run(conn)
            cur = await conn.execute(self._ledger.q(
                "SELECT key, seq, deps, state FROM {s}.dist_rows WHERE run = %s"), (self.run,))
            found = {str(k): (int(seq), tuple(d), str(st)) for k, seq, d, st
                     in await cur.fetchall()}
            reopen = {k for k in keys if k in found and found[k][2] == "failed"}
            # A row whose dependency stays failed could not run: it keeps its end, and so
            # do the rows below it (until nothing changes).
            while stuck := {k for k in reopen if any(
                    found[d][2] == "failed" and d not in reopen
                    for d in found[k][1] if d in found)}:
                reopen -= stuck
            await conn.execute(self._ledger.q(
                """UPDATE {s}.dist_rows SET state = 'waiting', outcome = NULL, asset_id = NULL,
                       updated_at = now()
                   WHERE run = %s AND key = ANY(%s) AND state = 'failed'"""),
                (self.run, sorted(reopen)))
            ready = await self._queue_ready(conn)
        return sorted(reopen, key=lambda k: found[k][0]), ready

    async def _check_manifest(self, conn: Any, rows: Sequence[tuple[str, str, Mapping[str, Any],
                                                                   Sequence[str]]]) -> None:
        # A run name is the manifest's file name by default: two projects' shots.jsonl
        # would otherwise mix their rows in one run without a word.
        ours = {str(spec["manifest"]) for _, _, spec, _ in rows if spec.get("manifest")}
        if not ours:
            return
        cur = await conn.execute(self._ledger.q(
            """SELECT DISTINCT spec->>'manifest' FROM {s}.dist_rows
               WHERE run = %s AND spec ? 'manifest'"""), (self.run,))
        other = sorted({str(r[0]) for r in await cur.fetchall()} - ours)
        if other:
            raise LedgerError(
                f"run {self.run!r} already holds the rows of another manifest ({other[0]}). "
                "Fix: give this one its own name: --run NAME")

    async def _lock_run(self, conn: Any) -> None:
        # One writer per run at a time (transaction-scoped): state changes that look at
        # other rows of the run see every earlier change committed.
        await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                           (_RUN_LOCK, f"{self._ledger.schema}/{self.run}"))

    async def get(self, key: str) -> DistRow | None:
        """The row, or None if this run has no such key."""
        rows = await self._select("AND key = %(key)s", key=key)
        return rows[0] if rows else None

    async def rows(self) -> list[DistRow]:
        """Every row of the run, in manifest order."""
        return await self._select("")

    async def _select(self, where: str, **params: Any) -> list[DistRow]:
        sql = ("SELECT key, seq, kind, spec, deps, state, asset_id, outcome "
               "FROM {s}.dist_rows WHERE run = %(run)s " + where + " ORDER BY seq")
        async with self._ledger.pool.connection() as conn:
            cur = await conn.execute(self._ledger.q(sql), {"run": self.run, **params})
            found = await cur.fetchall()
        return [DistRow(str(r[0]), int(r[1]), str(r[2]), r[3], tuple(r[4]), str(r[5]), r[6],
                        r[7]) for r in found]

    async def asset_ids(self, keys: Sequence[str]) -> dict[str, str]:
        """The asset ids of the finished character/scene rows among ``keys``."""
        async with self._ledger.pool.connection() as conn:
            cur = await conn.execute(self._ledger.q(
                """SELECT key, asset_id FROM {s}.dist_rows WHERE run = %s AND key = ANY(%s)
                   AND state = 'done' AND asset_id IS NOT NULL"""), (self.run, list(keys)))
            return {str(k): str(a) for k, a in await cur.fetchall()}

    async def finish(self, key: str, *, ok: bool, outcome: Mapping[str, Any],
                     asset_id: str | None = None) -> tuple[list[str], list[str]]:
        """Record the row's end. Returns ``(ready, blocked)``: dependents that became
        ready (now ``queued``: defer them), and, when the row failed, the rows that can no
        longer run because they depend on it, directly or not (now ``failed``, their
        outcome naming this row). A row already finished keeps its first end."""
        q = self._ledger.q
        state = "done" if ok else "failed"
        async with self._ledger.pool.connection() as conn, conn.transaction():
            # Without it, two dependencies finishing at once each miss the other's
            # uncommitted 'done' and neither queues the render that needs both.
            await self._lock_run(conn)
            cur = await conn.execute(
                q("""UPDATE {s}.dist_rows SET state = %s, outcome = %s, asset_id = %s,
                         updated_at = now()
                     WHERE run = %s AND key = %s AND state NOT IN ('done', 'failed')
                     RETURNING key"""),
                (state, Jsonb(dict(outcome)), asset_id, self.run, key))
            if await cur.fetchone() is None:
                return [], []
            if ok:
                cur = await conn.execute(q(
                    """UPDATE {s}.dist_rows AS r SET state = 'queued', updated_at = now()
                       WHERE r.run = %(run)s AND r.state = 'waiting'
                         AND %(key)s = ANY(r.deps)
                         AND NOT EXISTS (SELECT 1 FROM {s}.dist_rows d
                                         WHERE d.run = r.run AND d.key = ANY(r.deps)
                                           AND d.state <> 'done')
                       RETURNING r.key, r.seq"""), {"run": self.run, "key": key})
                ready = sorted(await cur.fetchall(), key=lambda r: r[1])
                return [str(r[0]) for r in ready], []
            cur = await conn.execute(q(
                """WITH RECURSIVE below(key) AS (
                       SELECT r.key FROM {s}.dist_rows r
                       WHERE r.run = %(run)s AND %(key)s = ANY(r.deps)
                       UNION
                       SELECT r.key FROM {s}.dist_rows r JOIN below b ON b.key = ANY(r.deps)
                       WHERE r.run = %(run)s)
                   UPDATE {s}.dist_rows AS r SET state = 'failed', updated_at = now(),
                       outcome = jsonb_build_object(
                           'key', r.key, 'kind', r.kind, 'state', 'failed',
                           'error', format('depends on %%s, which failed', %(key)s::text))
                   FROM below WHERE r.run = %(run)s AND r.key = below.key
                     AND r.state NOT IN ('done', 'failed')
                   RETURNING r.key"""), {"run": self.run, "key": key})
            return [], [str(r[0]) for r in await cur.fetchall()]

    async def counts(self) -> RunCounts:
        """Rows by state, in one statement."""
        async with self._ledger.pool.connection() as conn:
            cur = await conn.execute(self._ledger.q(
                "SELECT state, count(*) FROM {s}.dist_rows WHERE run = %s GROUP BY state"),
                (self.run,))
            by_state = {str(s): int(n) for s, n in await cur.fetchall()}
        return RunCounts(sum(by_state.values()), dict(sorted(by_state.items())))

    async def jobs(self, *, stalled_after: float) -> dict[str, str]:
        """Where each unfinished row's queue job is: ``"todo"`` (waiting for a worker),
        ``"doing"`` (a worker that heartbeats holds it) or ``"stalled"`` (held by a worker
        silent for more than ``stalled_after`` seconds, or one the others already pruned as
        dead). Rows without a live job are absent. Needs procrastinate's tables in the
        same schema; before they exist (nothing enqueued yet), returns ``{}``."""
        q = self._ledger.q
        async with self._ledger.pool.connection() as conn:
            cur = await conn.execute(q("SELECT to_regclass(%s) IS NOT NULL"),
                                     (f"{self._ledger.schema}.procrastinate_jobs",))
            present = await cur.fetchone()
            if not present or not present[0]:
                return {}
            # As procrastinate's own stalled-job query: a 'doing' job whose worker row is
            # gone (pruned by a live worker) or whose heartbeat is stale.
            cur = await conn.execute(q(
                """SELECT r.key, CASE WHEN j.status = 'todo' THEN 'todo'
                                      WHEN j.worker_id IS NULL OR w.last_heartbeat
                                           < now() - make_interval(secs => %(stale)s)
                                      THEN 'stalled' ELSE 'doing' END
                   FROM {s}.dist_rows r
                   JOIN {s}.procrastinate_jobs j ON j.lock = r.run || ':' || r.key
                   LEFT JOIN {s}.procrastinate_workers w ON w.id = j.worker_id
                   WHERE r.run = %(run)s AND r.state NOT IN ('done', 'failed')
                     AND j.status IN ('todo', 'doing')
                   ORDER BY j.id"""), {"run": self.run, "stale": stalled_after})
            return {str(k): str(s) for k, s in await cur.fetchall()}


async def run_names(ledger: PostgresLedger) -> list[str]:
    """The names of the runs recorded in ``ledger``'s schema, sorted."""
    async with ledger.pool.connection() as conn:
        cur = await conn.execute(ledger.q(
            "SELECT DISTINCT run FROM {s}.dist_rows ORDER BY run"))
        return [str(r[0]) for r in await cur.fetchall()]


async def unfinished_rows(ledger: PostgresLedger) -> int:
    """Rows of every run in ``ledger``'s schema not yet done or failed (waiting or queued):
    0 means no worker has anything left to take."""
    async with ledger.pool.connection() as conn:
        cur = await conn.execute(ledger.q(
            "SELECT count(*) FROM {s}.dist_rows WHERE state IN ('waiting', 'queued')"))
        row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def orphaned_rows(ledger: PostgresLedger, *, older_than: float = 10.0
                        ) -> list[tuple[str, str]]:
    """``(run, key)`` of rows marked ``queued`` more than ``older_than`` seconds ago that
    have no procrastinate job waiting or running (their defer was lost: the process that
    marked them died before deferring). Needs procrastinate's tables in the same schema
    (``RowQueue(schema=ledger.schema)``). Deferring them again is safe: the journal
    resumes a row that was already sent."""
    async with ledger.pool.connection() as conn:
        cur = await conn.execute(ledger.q(
            """SELECT r.run, r.key FROM {s}.dist_rows r
               WHERE r.state = 'queued'
                 AND r.updated_at < now() - make_interval(secs => %s)
                 AND NOT EXISTS (
                     SELECT 1 FROM {s}.procrastinate_jobs j
                     WHERE j.lock = r.run || ':' || r.key
                       AND j.status IN ('todo', 'doing'))
               ORDER BY r.run, r.seq"""), (older_than,))
        return [(str(a), str(b)) for a, b in await cur.fetchall()]
