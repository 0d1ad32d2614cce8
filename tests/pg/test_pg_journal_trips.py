"""The PostgreSQL journal store's cost per row, counted on the wire, and what the one-statement
transitions must keep: a refusal names the state found, a stale store never overwrites a
newer entry, racing stores have one winner, and a writer of an earlier release (read, then
upsert, under the key's advisory lock) is never overwritten either.

The store talks to the server through ``WireCount``, a loopback proxy that reads the
frontend/backend protocol: a round trip is a Sync or simple Query message (each answered by
one ReadyForQuery), a statement an Execute or simple Query, and a ReadyForQuery with status
``T`` means a transaction block (BEGIN ... COMMIT) was open. psycopg prepares a statement on
a connection the 5th time it runs it, which costs one extra round trip once: tests that
count round trips exactly warm the connection first, the others allow one per statement text.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from typing import Any

import anyio
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from viggle_async import (
    EntryState,
    Journal,
    JournalTransitionError,
    PostgresJournalStore,
    api_key_fingerprint,
)

ACCOUNT = api_key_fingerprint("sk-test-trips")
FP = "f" * 64


class WireCount:
    """A TCP proxy on 127.0.0.1 in front of the test server that counts protocol messages."""

    def __init__(self, dsn: str) -> None:
        params = conninfo_to_dict(dsn)
        self._host = str(params.get("host") or "/var/run/postgresql")
        self._port = int(params.get("port") or 5432)
        self._dsn = dsn
        self.round_trips = 0
        self.statements = 0
        self.blocks = 0  # ReadyForQuery seen inside a transaction block
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def reset(self) -> tuple[int, int, int]:
        seen = (self.round_trips, self.statements, self.blocks)
        self.round_trips = self.statements = self.blocks = 0
        return seen

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        # No SSL/GSS negotiation: the first frontend message is then the startup packet.
        return make_conninfo(self._dsn, host="127.0.0.1", port=port, sslmode="disable",
                             gssencmode="disable")

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._host.startswith("/"):
            up_r, up_w = await asyncio.open_unix_connection(
                f"{self._host}/.s.PGSQL.{self._port}")
        else:
            up_r, up_w = await asyncio.open_connection(self._host, self._port)
        for coro in (self._pipe(reader, up_w, frontend=True),
                     self._pipe(up_r, writer, frontend=False)):
            task = asyncio.ensure_future(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *,
                    frontend: bool) -> None:
        try:
            if frontend:  # the startup packet: a length, no type byte
                head = await src.readexactly(4)
                dst.write(head + await src.readexactly(struct.unpack("!I", head)[0] - 4))
            while True:
                kind = await src.readexactly(1)
                head = await src.readexactly(4)
                body = await src.readexactly(struct.unpack("!I", head)[0] - 4)
                self._count(kind, body, frontend)
                dst.write(kind + head + body)
                await dst.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            dst.close()

    def _count(self, kind: bytes, body: bytes, frontend: bool) -> None:
        if frontend:
            if kind in (b"S", b"Q"):
                self.round_trips += 1
            if kind in (b"E", b"Q"):
                self.statements += 1
        elif kind == b"Z" and body[:1] != b"I":
            self.blocks += 1


@pytest.fixture
async def wire(pg_dsn: str) -> AsyncIterator[tuple[WireCount, str]]:
    counter = WireCount(pg_dsn)
    async with counter as dsn:
        yield counter, dsn


async def _open(dsn: str, schema: str, **kw: Any) -> PostgresJournalStore:
    return await PostgresJournalStore.open(dsn, account=ACCOUNT, schema=schema, ledger="run",
                                           **kw)


async def _one_row(journal: Journal, key: str) -> None:
    await journal.get(key)
    await journal.record_intent(key, "render", FP)
    await journal.mark_sending(key)
    await journal.record_submitted(key, "job")
    await journal.record_final(key, "complete")


async def test_a_row_costs_one_statement_per_step_and_no_transaction_block(
        wire: tuple[WireCount, str], schema: str) -> None:
    counter, dsn = wire
    journal = Journal(await _open(dsn, schema, max_connections=1))
    async with journal:
        for row in range(6):  # warm: every statement prepared on the one connection
            await _one_row(journal, f"warm{row}")
        for row in range(3):
            key = f"row{row}"
            counter.reset()
            # The supervisor's path for one render: read, intent, sending, job id, outcome.
            assert await journal.get(key) is None
            assert counter.reset() == (1, 1, 0)
            await journal.record_intent(key, "render", FP)
            assert counter.reset() == (1, 1, 0)
            await journal.mark_sending(key)
            assert counter.reset() == (1, 1, 0)
            await journal.record_submitted(key, f"job-{row}")
            assert counter.reset() == (1, 1, 0)
            await journal.record_final(key, "complete", [f"/out/{row}.mp4"])
            assert counter.reset() == (1, 1, 0)
        # A refused create goes back to intent (a retry), then on: still one each.
        await journal.record_intent("again", "render", FP)
        await journal.mark_sending("again")
        counter.reset()
        await journal.record_intent("again", "render", FP, replace=True)
        await journal.mark_sending("again")
        assert counter.reset() == (2, 2, 0)
        entry = await journal.get("row2")
        assert entry is not None and entry.state is EntryState.FINAL
        assert (entry.job_id, entry.outputs) == ("job-2", ("/out/2.mp4",))


async def test_rows_enqueued_elsewhere_cost_the_same(
        wire: tuple[WireCount, str], schema: str, pg_dsn: str) -> None:
    # bulk --enqueue records every intent in another process; a worker then reads the row
    # before it acts, and that read is what its next transition builds on.
    counter, dsn = wire
    async with Journal(await _open(pg_dsn, schema)) as enqueue:
        for row in range(3):
            await enqueue.record_intent(f"row{row}", "render", FP)
    async with Journal(await _open(dsn, schema)) as worker:
        counter.reset()
        for row in range(3):
            key = f"row{row}"
            assert (await worker.get(key)) is not None
            await worker.record_intent(key, "render", FP)
            await worker.mark_sending(key)
            await worker.record_submitted(key, f"job-{row}")
            await worker.record_final(key, "complete")
        rt, stmts, blocks = counter.reset()
        assert (stmts, blocks) == (15, 0) and rt <= stmts + 3  # 3 statement texts prepared
        # Without the read first (a key this store never saw): the guess "no entry" costs
        # one statement that changes nothing, then a read, then the step.
        async with Journal(await _open(pg_dsn, schema)) as enqueue:
            await enqueue.record_intent("cold", "render", FP)
        counter.reset()
        entry = await worker.record_intent("cold", "render", FP)
        rt, stmts, blocks = counter.reset()
        assert entry.attempts == 2 and (stmts, blocks) == (3, 0) and rt <= stmts + 1


async def test_a_stale_store_never_overwrites_and_names_the_state_found(
        wire: tuple[WireCount, str], schema: str, pg_dsn: str) -> None:
    # Store A remembers an entry; store B (another worker) moves it on. Every kind of step A
    # then takes is decided on what B stored, at the cost of one read, and changes nothing.
    counter, dsn = wire
    a = Journal(await _open(dsn, schema))
    b = Journal(await _open(pg_dsn, schema))
    async with a, b:
        cases = [
            # (what A last saw, what B did next, A's step, the error naming B's state)
            ("intent", "sending", "mark_sending", r"is sending, expected intent"),
            ("intent", "sending", "record_intent", r"may have reached the server"),
            ("sending", "submitted", "mark_sending", r"is submitted, expected intent"),
            ("sending", "final", "record_submitted", r"is final, expected sending"),
            # a repeat A would make no change to is checked against what is stored
            ("submitted", "final", "record_submitted", r"is final, expected sending"),
            ("intent", "submitted", "record_intent", r"already submitted as job-b"),
        ]
        for n, (seen, then, step, error) in enumerate(cases):
            key = f"k{n}"
            await a.record_intent(key, "render", FP)
            if seen in ("sending", "submitted"):
                await a.mark_sending(key)
            if seen == "submitted":
                await a.record_submitted(key, "job-a")
            if then in ("sending", "submitted") and seen == "intent":
                await b.mark_sending(key)
            if then == "submitted":
                await b.record_submitted(key, "job-b")
            if then == "final":
                await b.record_final(key, "failed", error="by b")
            before = await b.get(key)
            counter.reset()
            with pytest.raises(JournalTransitionError, match=error):
                if step == "mark_sending":
                    await a.mark_sending(key)
                elif step == "record_intent":
                    await a.record_intent(key, "render", FP)
                else:
                    await a.record_submitted(key, "job-a")
            _rt, stmts, blocks = counter.reset()
            assert stmts <= 2 and blocks == 0, (key, stmts)
            assert await b.get(key) == before, key  # nothing written over B's entry
        # and a step that is allowed from B's newer state is applied to it
        await a.record_final("k3", "complete", ["/out/k3.mp4"])
        entry = await b.get("k3")
        assert entry is not None and entry.final_status == "complete"


async def test_racing_stores_have_one_winner_for_each_kind_of_step(
        pg_dsn: str, schema: str) -> None:
    # 12 stores, each with its own connection and a warm memory of the entry.
    stores = [await _open(pg_dsn, schema, max_connections=1) for _ in range(12)]
    try:
        journals = [Journal(s) for s in stores]
        await journals[0].record_intent("k", "render", FP)
        for j in journals:
            await j.get("k")

        async def race(step: str) -> list[int]:
            wins: list[int] = []

            async def one(i: int) -> None:
                with contextlib.suppress(JournalTransitionError):
                    if step == "sending":
                        await journals[i].mark_sending("k")
                    else:
                        await journals[i].record_submitted("k", f"job-{i}")
                    wins.append(i)

            async with anyio.create_task_group() as tg:
                for i in range(len(journals)):
                    tg.start_soon(one, i)
            return wins

        assert len(await race("sending")) == 1
        winners = await race("submitted")
        assert len(winners) == 1
        entry = await journals[-1].get("k")
        assert entry is not None and entry.job_id == f"job-{winners[0]}"
        # Every store, however stale, now sees the winner's job id and refuses another.
        for j in journals:
            with pytest.raises(JournalTransitionError, match="is submitted"):
                await j.mark_sending("k")
    finally:
        for s in stores:
            await s.close()


async def test_a_writer_of_the_earlier_release_is_never_overwritten(
        pg_dsn: str, schema: str) -> None:
    # Earlier releases read and then upsert inside a transaction holding the key's advisory
    # lock. A one-statement step that lands between that read and that upsert would be
    # overwritten (both "win"): each statement takes the same lock, so it waits, then finds
    # the entry changed.
    from viggle_async.pg._journal import _lock_id

    store = await _open(pg_dsn, schema)
    journal = Journal(store)
    async with journal:
        await journal.record_intent("k", "render", FP)
        async with await psycopg.AsyncConnection.connect(pg_dsn) as old, \
                await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as watch:
            lock = _lock_id("run", "k")
            await old.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
            await old.execute(f'SELECT state FROM "{schema}".journal_entries WHERE key = %s',
                              ("k",))
            outcome: list[object] = []

            async def ours() -> None:
                try:
                    outcome.append(await journal.mark_sending("k"))
                except JournalTransitionError as exc:
                    outcome.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(ours)
                # wait (a condition, not a time) until our statement queues on the lock
                with anyio.fail_after(30):
                    while True:
                        cur = await watch.execute(
                            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                            "AND NOT granted AND classid::bigint = %s AND objid::bigint = %s",
                            ((lock >> 32) & 0xFFFFFFFF, lock & 0xFFFFFFFF))
                        row = await cur.fetchone()
                        if outcome or (row is not None and row[0] >= 1):
                            break  # queued on the lock (or, wrongly, done without it)
                        await anyio.sleep(0.01)
                await old.execute(
                    f'UPDATE "{schema}".journal_entries SET state = %s WHERE key = %s',
                    ("sending", "k"))
                await old.commit()
        assert len(outcome) == 1 and isinstance(outcome[0], JournalTransitionError)
        assert "is sending" in str(outcome[0])



async def test_a_server_that_rounds_floats_still_costs_one_statement_per_step(
        wire: tuple[WireCount, str], schema: str, pg_dsn: str) -> None:
    # Timestamps are float8 with 17 significant digits; a session with extra_float_digits=0
    # prints 15. A swap built on a rounded read would never match what is stored (each
    # step would fall back to the locked transaction): reads must be exact.
    counter, dsn = wire
    stamp = 1764488000.1234567

    async with Journal(await _open(pg_dsn, schema), clock=lambda: stamp) as enqueue:
        await enqueue.record_intent("k", "render", FP)
    rounding = make_conninfo(dsn, options="-c extra_float_digits=0")
    async with Journal(await _open(rounding, schema), clock=lambda: stamp + 1) as worker:
        counter.reset()
        entry = await worker.get("k")
        assert entry is not None and entry.created_at == stamp
        await worker.record_intent("k", "render", FP)
        await worker.mark_sending("k")
        await worker.record_submitted("k", "job")
        rt, stmts, blocks = counter.reset()
        assert (stmts, blocks) == (4, 0) and rt <= stmts + 1
