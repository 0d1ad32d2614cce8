"""``viggle-async worker``, and the distributed parts of ``bulk``: ``--enqueue`` and
``--status`` on a PostgreSQL ledger (docs/scale-out.md).

``bulk MANIFEST --journal postgresql://... --enqueue`` validates the manifest as a local
run does, records every row (its inputs' hashes included) in the ledger and defers one
procrastinate job per row whose dependencies are finished; the others are deferred by the
worker that finishes their last dependency. ``worker`` runs one client, one supervisor
(PostgreSQL journal, ``PostgresAccountState``) and one procrastinate worker per process.
``bulk ... --status`` reads the run back from the ledger.

Inputs and outputs must be on a path every worker reaches (a shared filesystem).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shlex
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .. import Outcome, Supervisor, SystemClock
from .._events import Handle
from .._journal import EntryState, Journal
from ._common import (
    DEFAULT_CAPACITY_BACKOFF,
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    Command,
    Ctx,
    parse_backoff,
    parse_fast_fallback,
    positive_float,
    positive_int,
)
from ._options import BACKOFF_HELP, FAST_FALLBACK_HELP, add_poll_interval
from ._progress import plural, to_json

if TYPE_CHECKING:
    from ..pg import PostgresLedger, RowBook, RowQueue
    from ._cmd_bulk import Priced
    from ._manifest import Manifest

__all__ = ["COMMAND", "add_bulk_options", "bulk_distributed", "is_postgres_dsn", "journal_dsn",
           "worker_hint"]

#: The journal namespace of every distributed run; keys are ``run/row``.
JOURNAL_NAME = "dist"


def is_postgres_dsn(text: str | None) -> bool:
    """``--journal`` names a PostgreSQL ledger (a ``postgres[ql]://`` URL, or libpq
    keywords such as ``host=... dbname=...``), not a SQLite file."""
    if not text:
        return False
    lower = text.lower()
    return lower.startswith(("postgresql://", "postgres://")) or (
        "=" in text and " " in text.strip()) or lower.startswith(("host=", "dbname="))


def add_bulk_options(p: argparse.ArgumentParser) -> None:
    """``bulk``'s distributed options (with ``--journal postgresql://...``)."""
    p.add_argument("--enqueue", action="store_true",
                   help="with --journal postgresql://...: record every row in the ledger and "
                        "queue them for `viggle-async worker` processes; render nothing here")
    p.add_argument("--status", action="store_true",
                   help="with --journal postgresql://...: show the run from the ledger (rows "
                        "by state, credits, ambiguous rows); with --report, write the report")
    p.add_argument("--run", dest="run_name", metavar="NAME",
                   help="the run's name in the ledger (default: the manifest's file name)")
    p.add_argument("--schema", default="viggle", metavar="NAME",
                   help="the ledger's PostgreSQL schema: one account (default viggle)")


def _run_name(args: argparse.Namespace) -> str:
    return str(args.run_name or Path(args.manifest).name)


def _api_key() -> str:
    key = os.environ.get("VIGGLE_API_KEY", "")
    if not key:
        raise CliError("VIGGLE_API_KEY is not set: export your API key and try again")
    return key


_DSN_FIX = ("pass --journal postgresql://user@host/db, or export VIGGLE_POSTGRES_DSN, or pass "
            "--journal postgresql:// to take everything from libpq's PG* variables and "
            "~/.pgpass")


def _what(args: argparse.Namespace) -> str:
    """The command as the user typed it, for messages."""
    if getattr(args, "command", None) == "worker":
        return "a worker"
    return "bulk --status" if getattr(args, "status", False) else "bulk --enqueue"


def journal_dsn(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> str:
    """The ledger's DSN, by one rule for ``bulk --enqueue``/``--status`` and ``worker``:
    ``--journal`` when it names PostgreSQL; else (no ``--journal``, or ``--journal ''``)
    ``$VIGGLE_POSTGRES_DSN``, else its alias ``$VIGGLE_JOURNAL_DSN``. ``--journal ''``
    with neither set is libpq's own ``PG*`` variables and ``~/.pgpass``, as is
    ``--journal postgresql://``. ``environ`` defaults to ``os.environ``.

    Raises ``CliError`` (nothing sent, nothing connected) for a file ``--journal`` or no
    source at all, naming the fix."""
    from ..pg._dsn import dsn_env_name, resolve_dsn

    given: str | None = args.journal
    if given:
        if not is_postgres_dsn(given):
            raise CliError(f"{_what(args)} needs --journal postgresql://... (a PostgreSQL "
                           f"ledger), not a file ({given!r}; a file journal is for a local "
                           f"`bulk` run). Fix: {_DSN_FIX}")
        return given
    if dsn_env_name(environ) is None and given is None:
        raise CliError(f"{_what(args)} needs a PostgreSQL ledger. Fix: {_DSN_FIX}")
    return resolve_dsn(None, environ=environ)


def _key_fix(args: argparse.Namespace) -> str:
    what = {"a worker": "start the worker", "bulk --status": "read the status",
            "bulk --enqueue": "enqueue"}[_what(args)]
    return (f"Fix: {what} with VIGGLE_API_KEY set to the key that created the ledger, or "
            f"give this account a ledger of its own with --schema NAME")


@contextlib.asynccontextmanager
async def _ledger(args: argparse.Namespace) -> AsyncIterator[PostgresLedger]:
    """The open ledger named by ``journal_dsn``; ``CliError`` for a bad source, and the
    other-key refusal worded for this command."""
    try:
        from ..pg import LedgerKeyMismatchError, PostgresLedger
    except ImportError:
        raise CliError("a PostgreSQL --journal needs the postgres extra: pip install "
                       "'viggle-async[postgres]' (from a checkout: pip install "
                       "-e '.[postgres]')") from None
    try:
        ledger = PostgresLedger(journal_dsn(args), api_key=_api_key(), schema=args.schema)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        await ledger.open()
    except LedgerKeyMismatchError as exc:
        raise LedgerKeyMismatchError(str(exc).split(" Fix:")[0] + " " + _key_fix(args)) \
            from None
    try:
        yield ledger
    finally:
        await ledger.aclose()


def worker_hint(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> str:
    """How to start workers on this ledger, in a form the user can paste: the variable the
    DSN came from, or the DSN without its password (never a masked one: a pasted ``***``
    would be sent as the password)."""
    from ..pg._dsn import dsn_env_name, without_password

    schema = "" if args.schema == "viggle" else f" --schema {args.schema}"
    name = None if args.journal else dsn_env_name(environ)
    password = ""
    if name is not None:
        journal = f'"${name}"'
    else:
        dsn = journal_dsn(args, environ)
        bare = without_password(dsn)
        journal = shlex.quote(bare or "postgresql://")
        if bare != dsn:
            password = "; each takes the password from ~/.pgpass or $PGPASSWORD"
    # The command last, alone, so the whole line after ": " can be pasted.
    return (f"start workers (inputs and outputs must be on a shared path{password}): "
            f"viggle-async worker --journal {journal}{schema}")


def _queue(args: argparse.Namespace, ledger: PostgresLedger, handler: Any = None,
           **options: Any) -> RowQueue:
    from ..pg import RowQueue

    async def nothing(run: str, row: str) -> None:  # the enqueue side only defers
        raise RuntimeError("this process only defers rows")

    return RowQueue(journal_dsn(args), handler or nothing, schema=ledger.schema, **options)


async def _install(queue: RowQueue) -> None:
    # Workers started together may race to create procrastinate's tables: the loser
    # finds them made.
    try:
        await queue.install()
    except Exception:
        await anyio.sleep(0.5)
        await queue.install()


# --- bulk --enqueue / --status -------------------------------------------------------------

async def bulk_distributed(ctx: Ctx, validate: Any) -> int | None:
    """``bulk``'s entry for a PostgreSQL ``--journal``: None when this is a local run.
    ``validate()`` returns ``(manifest, priced)`` or an exit code (problems reported)."""
    args = ctx.args
    if args.dry_run and not args.status:
        if args.enqueue or is_postgres_dsn(args.journal):
            journal_dsn(args)  # the source is checked; the ledger is not touched
            # Priced and validated as a local dry run: nothing sent, nothing written, and
            # the DSN is no file path for the local run's checks.
            args.journal = None
        return None
    if not (args.enqueue or args.status):
        if is_postgres_dsn(args.journal):
            raise CliError("--journal postgresql://...: add --enqueue (then run "
                           "`viggle-async worker`), --status or --dry-run; a local run "
                           "journals to a file")
        return None
    journal_dsn(args)  # a wrong or missing source fails here, before the manifest is read
    if args.status:
        return await _status(ctx)
    checked = await validate()
    if isinstance(checked, int):
        return checked
    manifest, priced = checked
    return await _enqueue(ctx, manifest, priced)


async def _spec(p: Priced) -> dict[str, Any]:
    from ..pg import row_spec

    row = p.row
    return await anyio.to_thread.run_sync(functools.partial(
        row_spec, dict(row.inputs), output=row.output, mask_output=row.mask_output,
        estimated_seconds=row.estimated_seconds, character=row.character, scene=row.scene,
        mapping_refs=row.mapping_refs, credits=p.credits, fast=p.fast, line=row.line))


async def _enqueue(ctx: Ctx, manifest: Manifest, priced: list[Priced]) -> int:
    args = ctx.args
    run = _run_name(args)
    specs = [(p.row.key, p.row.kind, await _spec(p), p.row.depends_on) for p in priced]
    from ..pg import LedgerError, RowBook

    try:
        async with _ledger(args) as ledger:
            if args.budget is not None:
                await ledger.set_budget(args.budget)
            if args.poll_rate is not None:
                await ledger.set_poll_rate(args.poll_rate)
            ready = await RowBook(ledger, run).add(specs)
            queue = _queue(args, ledger)
            async with queue.app.open_async():
                await _install(queue)
                deferred = await queue.defer_rows(run, ready)
    except LedgerError as exc:
        raise CliError(str(exc)) from None
    credits = sum(p.credits or 0 for p in priced)
    ctx.out.emit({"event": "enqueued", "run": run, "rows": len(specs), "deferred": deferred,
                  "credits": credits, "budget": args.budget, "poll_rate": args.poll_rate},
                 f"run {run!r}: {plural(len(specs), 'row')} recorded ({credits} credits "
                 f"estimated), {deferred} queued now"
                 + (", the rest when their characters/scenes are ready"
                    if any(deps for *_, deps in specs) else ""))
    ctx.out.note(worker_hint(args))
    return EXIT_OK


async def _status(ctx: Ctx) -> int:
    args = ctx.args
    run = _run_name(args)
    from ..pg import LedgerError, PostgresJournalStore, RowBook

    try:
        async with _ledger(args) as ledger:
            book = RowBook(ledger, run)
            rows = await book.rows()
            counts = await book.counts()
            account = await ledger.summary()
            store = PostgresJournalStore.on_ledger(ledger, name=JOURNAL_NAME)
            entries = {e.key: e for e in await Journal(store).entries()}
    except LedgerError as exc:
        raise CliError(str(exc)) from None
    outcomes = []
    for r in rows:
        entry = entries.get(f"{run}/{r.key}")
        out = dict(r.outcome or {"key": r.key, "kind": r.kind, "state": r.state})
        out.update(key=r.key, line=r.spec.get("line"), row_state=r.state)
        if r.outcome is None and entry is not None:
            out.update(job_id=entry.job_id, state={
                EntryState.SENDING: "ambiguous", EntryState.SUBMITTED: "running"}.get(
                    entry.state, r.state))
        outcomes.append(out)
    ambiguous = [o["key"] for o in outcomes if o.get("state") == "ambiguous"]
    spent = sum(o.get("credits") or 0 for o in outcomes
                if o.get("state") in ("complete", "skipped"))
    states: dict[str, int] = {}
    for o in outcomes:
        states[str(o.get("state"))] = states.get(str(o.get("state")), 0) + 1
    summary = {"event": "status", "run": run, "total": counts.total, "rows": counts.by_state,
               "states": dict(sorted(states.items())), "credits_committed": account.committed,
               "credits_spent": spent, "budget": account.budget, "stopped": account.stopped,
               "ambiguous": ambiguous, "capacity_rejections": account.capacity_rejections,
               "poll_rate": account.poll_rate}
    ctx.out.emit(summary, f"run {run!r}: {plural(counts.total, 'row')}; "
                 + ", ".join(f"{n} {s}" for s, n in counts.by_state.items())
                 + f"; credits committed {account.committed}, spent {spent}"
                 + (f" of a {account.budget:g} budget" if account.budget is not None else "")
                 + (f"; polls capped at {account.poll_rate:g}/s across workers"
                    if account.poll_rate is not None else "; polls not capped across workers"))
    if account.stopped:
        ctx.out.error(f"new creates are stopped: {account.stopped}")
    if ambiguous:
        ctx.out.error(f"{len(ambiguous)} ambiguous (sent, no answer; not resent): "
                      + ", ".join(ambiguous))
    if args.report:
        from ._cmd_bulk import _write_json

        await anyio.to_thread.run_sync(_write_json, Path(args.report), {
            "manifest": str(args.manifest), "summary": summary, "outcomes": outcomes})
    unfinished = counts.by_state.get("waiting", 0) + counts.by_state.get("queued", 0)
    return EXIT_FAILED if (counts.by_state.get("failed") or ambiguous) and not unfinished \
        else EXIT_OK


# --- the worker ------------------------------------------------------------------------------

class _RowWorker:
    """Runs delivered rows on this process's one supervisor."""

    def __init__(self, ledger: PostgresLedger) -> None:
        self.ledger = ledger
        self.sup: Supervisor | None = None
        self.queue: RowQueue | None = None
        # A row delivered again to this process (its job was retried) awaits the same
        # handle: the supervisor takes each key once.
        self._handles: dict[str, Handle] = {}

    async def handle(self, run: str, key: str) -> None:
        from ..pg import RowBook

        book = RowBook(self.ledger, run)
        row = await book.get(key)
        if row is None or row.state in ("done", "failed"):
            return
        spec = row.spec
        skey = f"{run}/{key}"
        handle = self._handles.get(skey)
        if handle is None:
            edited = await anyio.to_thread.run_sync(_edited_inputs, spec)
            if edited:
                await self._finish(book, key, Outcome(key, row.kind, "failed",  # type: ignore[arg-type]
                                                      error=edited))
                return
            scheduled = await self._schedule(book, row.kind, skey, spec, row.deps)
            if isinstance(scheduled, Outcome):
                await self._finish(book, key, scheduled)
                return
            handle = self._handles[skey] = scheduled
        outcome = await handle
        await self._finish(book, key, attrs.evolve(outcome, key=key))

    async def _schedule(self, book: RowBook, kind: str, skey: str, spec: Mapping[str, Any],
                        deps: tuple[str, ...]) -> Handle | Outcome:
        assert self.sup is not None
        from ..pg import decode_spec_value as _decode

        inputs: dict[str, Any] = _decode(dict(spec["inputs"]))
        if kind == "character":
            return self.sup.character(key=skey, **inputs)
        if kind == "scene":
            return self.sup.scene(key=skey, **inputs)
        ids = await book.asset_ids(deps)
        missing = [d for d in deps if d not in ids]
        if missing:
            return Outcome(skey, "render", "failed",
                           error=f"{', '.join(missing)} not ready (no asset id in the ledger)")
        if spec.get("character"):
            inputs["character_id"] = ids[spec["character"]]
        if spec.get("scene"):
            inputs["scene_id"] = ids[spec["scene"]]
        for segment, ref in (spec.get("mapping_refs") or {}).items():
            inputs["character_mapping"] = {**inputs["character_mapping"], segment: ids[ref]}
        from ..pg import decode_spec_value as _decode

        return self.sup.render(key=skey, output=_decode(spec.get("output")),
                               mask_output=_decode(spec.get("mask_output")),
                               estimated_seconds=spec.get("estimated_seconds"), **inputs)

    async def _finish(self, book: RowBook, key: str, outcome: Outcome) -> None:
        import json

        data = json.loads(to_json(attrs.asdict(outcome)))
        ready, _blocked = await book.finish(key, ok=outcome.ok, outcome=data,
                                            asset_id=outcome.asset_id)
        if ready and self.queue is not None:
            await self.queue.defer_rows(book.run, ready)


def _edited_inputs(spec: Mapping[str, Any]) -> str | None:
    """Why the row must not be sent: an input file changed (or vanished) since enqueue."""
    from ..pg import hash_file

    for name, recorded in (spec.get("hashes") or {}).items():
        path = Path(name)
        try:
            now = hash_file(path)
        except OSError as exc:
            return f"input {name!r} cannot be read on this worker ({exc}); not sent"
        if now != recorded:
            return (f"input {name!r} was edited after --enqueue; not sent. Fix: enqueue the "
                    "manifest again under another --run name")
    return None


async def _sweep_orphans(ledger: PostgresLedger, queue: RowQueue) -> None:
    # A row marked queued whose defer was lost (its finisher died between the two) would
    # wait forever: defer it again. Safe to repeat: the journal resumes a sent row.
    from ..pg import orphaned_rows

    while True:
        await anyio.sleep(5.0)
        for run, key in await orphaned_rows(ledger, older_than=10.0):
            await queue.defer_rows(run, [key])


async def _stop_when_no_rows(ledger: PostgresLedger, scope: anyio.CancelScope) -> None:
    # Not procrastinate's wait=False: that stops at the first empty fetch, before the
    # renders a finishing character row defers. The ledger knows what is left.
    from ..pg import unfinished_rows

    while await unfinished_rows(ledger):  # noqa: ASYNC110 (a database, no local event)
        await anyio.sleep(0.5)
    scope.cancel()


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--journal", metavar="DSN",
                   help="the PostgreSQL ledger, as given to bulk --enqueue: "
                        "postgresql://user@host/db (keep the password in ~/.pgpass or "
                        "$PGPASSWORD). Default: $VIGGLE_POSTGRES_DSN, else "
                        "$VIGGLE_JOURNAL_DSN; postgresql:// (or '' with neither set) takes "
                        "everything from libpq's PG* variables and ~/.pgpass")
    p.add_argument("--schema", default="viggle", metavar="NAME",
                   help="the ledger's schema, as given to bulk --enqueue (default viggle)")
    p.add_argument("--concurrency", type=positive_int, default=8, metavar="N",
                   help="rows worked on at once by this process (default 8)")
    p.add_argument("--max-uploads", type=positive_int, default=4, metavar="N",
                   help="creates (uploads) in flight at once in this process (default 4)")
    p.add_argument("--max-polls", type=positive_int, default=8, metavar="N",
                   help="status requests in flight at once in this process (default 8)")
    p.add_argument("--poll-rate", type=positive_float, default=20.0, metavar="N",
                   help="at most N status polls started per second by this process "
                        "(default 20); the ledger's cap across all workers (bulk --enqueue "
                        "--poll-rate) still holds: this can only lower its share")
    p.add_argument("--budget", type=positive_float, metavar="CREDITS",
                   help="this worker's own credit budget; it can only lower the run's "
                        "(default: the run's, set by bulk --enqueue --budget)")
    # As bulk's: the fast-capacity probe is one across all workers; its pace is each one's.
    p.add_argument("--fast-fallback", type=parse_fast_fallback, default="attempts:5,seconds:300",
                   metavar="SPEC", help=FAST_FALLBACK_HELP)
    p.add_argument("--capacity-backoff", type=parse_backoff, default=DEFAULT_CAPACITY_BACKOFF,
                   metavar="BASE:CAP", help=BACKOFF_HELP)
    p.add_argument("--exit-when-empty", action="store_true",
                   help="stop once no run in the ledger has a row left to take (default: "
                        "wait for work)")
    p.add_argument("--grace", type=positive_float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM, wait this long for running rows, then hand them back "
                        "(default 30)")
    p.add_argument("--stalled-after", type=positive_float, default=30.0, metavar="SECONDS",
                   help="a worker silent this long is dead: its rows go to others "
                        "(default 30)")
    p.add_argument("--heartbeat", type=positive_float, default=5.0, metavar="SECONDS",
                   help="how often this worker tells the ledger it is alive (default 5; "
                        "at most a third of --stalled-after)")
    p.add_argument("--recover-every", type=positive_int, default=15, metavar="SECONDS",
                   help="how often the workers retry stalled rows (default 15)")
    add_poll_interval(p)


async def run(ctx: Ctx) -> int:
    args = ctx.args
    ctx.require_key()
    from ..pg import LedgerError, PostgresAccountState, PostgresJournalStore

    try:
        async with _ledger(args) as ledger:
            clock = SystemClock()
            account = PostgresAccountState(ledger, budget=args.budget, clock=clock)
            journal = Journal(PostgresJournalStore.on_ledger(ledger, name=JOURNAL_NAME))
            worker = _RowWorker(ledger)
            queue = worker.queue = _queue(
                args, ledger, worker.handle, stalled_after=args.stalled_after,
                heartbeat=min(args.heartbeat, args.stalled_after / 3),
                recover_cron=f"*/{args.recover_every} * * * * *")
            ctx.out.note(f"worker {account.worker_id} on {ledger.dsn} schema {ledger.schema}")
            # A create's 429 pauses every worker from its first retry on: the supervisor
            # observes the client's retries and writes the pause to the shared account.
            async with ctx.client() as client:
                sup = Supervisor(client, journal=journal, account=account,
                                 max_uploads=args.max_uploads, max_polls=args.max_polls,
                                 max_active_jobs=max(100, args.concurrency),
                                 poll_rate=args.poll_rate, poll_policy=ctx.poll_policy(),
                                 asset_poll_interval=ctx.asset_poll_interval,
                                 fast_fallback=args.fast_fallback,
                                 capacity_backoff=args.capacity_backoff)
                with anyio.CancelScope() as scope:
                    async with sup, queue.app.open_async():
                        await _install(queue)
                        # Rows of workers that died while none was running come back
                        # now; the periodic recovery covers the ones dying later.
                        await queue.retry_stalled()
                        worker.sup = sup
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(_sweep_orphans, ledger, queue)
                            if args.exit_when_empty:
                                tg.start_soon(_stop_when_no_rows, ledger, tg.cancel_scope)
                            await queue.run_worker(concurrency=args.concurrency,
                                                   shutdown_graceful_timeout=args.grace)
                            tg.cancel_scope.cancel()
                        # Stopped (SIGTERM or empty): rows still held are handed back;
                        # their jobs are journaled, so the next delivery resumes them.
                        scope.cancel()
    except LedgerError as exc:
        raise CliError(str(exc)) from None
    ctx.out.result("worker stopped")
    return EXIT_OK


WORKER_HELP = """\
Take rows queued by `viggle-async bulk MANIFEST --enqueue` from a PostgreSQL ledger and
render them: one client and one supervisor per process, sharing the account's 402 stop,
429 pause, fast-capacity probe, credit budget and poll rate cap with every other worker.
Start as many as you like, on any machine that reaches the inputs and outputs at the
same paths (a shared filesystem). SIGTERM stops one gracefully (--grace).

  export VIGGLE_API_KEY=... VIGGLE_POSTGRES_DSN=postgresql://app@db/viggle
  viggle-async worker --concurrency 8

The ledger (--journal), by the same rule as bulk --enqueue/--status: --journal, else
$VIGGLE_POSTGRES_DSN, else $VIGGLE_JOURNAL_DSN; --journal postgresql:// takes everything
from libpq's PG* variables and ~/.pgpass. Needs the postgres extra.
"""

COMMAND = Command("worker", "take rows queued by `bulk --enqueue` from a PostgreSQL ledger",
                  configure, run, description=WORKER_HELP)
