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
import glob
import os
import shlex
import signal
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .. import Outcome, Supervisor, SystemClock, ViggleError
from .._events import Handle
from .._journal import EntryState, Journal, JournalEntry
from ._common import (
    DEFAULT_CAPACITY_BACKOFF,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    CliError,
    Command,
    Ctx,
    parse_backoff,
    parse_fast_fallback,
    plural,
    positive_float,
    positive_int,
)
from ._options import BACKOFF_HELP, FAST_FALLBACK_HELP, add_poll_interval
from ._progress import Output, outcome_text, to_json

if TYPE_CHECKING:
    from ..pg import PostgresLedger, RowBook, RowQueue
    from ._cmd_bulk import Plan, Priced
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
    p.add_argument("--stalled-after", type=positive_float, default=30.0, metavar="SECONDS",
                   help="with --status: a row whose worker has not heartbeated for this long "
                        "shows as stalled (default 30, as the workers')")


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


async def _spec(p: Priced, manifest: Path) -> dict[str, Any]:
    from ..pg import row_spec

    row = p.row
    return await anyio.to_thread.run_sync(functools.partial(
        row_spec, dict(row.inputs), output=row.output, mask_output=row.mask_output,
        estimated_seconds=row.estimated_seconds, character=row.character, scene=row.scene,
        mapping_refs=row.mapping_refs, credits=p.credits, fast=p.fast, line=row.line,
        manifest=manifest))


async def _enqueue(ctx: Ctx, manifest: Manifest, priced: list[Priced]) -> int:
    args = ctx.args
    run = _run_name(args)
    specs = [(p.row.key, p.row.kind, await _spec(p, manifest.path), p.row.depends_on)
             for p in priced]
    from ..pg import LedgerError, RowBook

    try:
        async with _ledger(args) as ledger:
            book = RowBook(ledger, run)
            # Recorded first: a manifest the ledger refuses (another run's name, changed
            # rows) leaves the run's budget and the poll rate as they were.
            ready = await book.add(specs)
            # --budget is this run's own; without it a run keeps the one it has (none).
            # Set before any row is deferred, so no worker can reserve past it.
            before = (await ledger.run_credits(run)).budget
            if args.budget is not None:
                await ledger.set_run_budget(run, args.budget)
            budget = args.budget if args.budget is not None else before
            if args.poll_rate is not None:
                await ledger.set_poll_rate(args.poll_rate)
            requeued, more, plan = await _requeue_ended(args, ledger, book)
            queue = _queue(args, ledger)
            async with queue.app.open_async():
                await _install(queue)
                deferred = await queue.defer_rows(run, list(dict.fromkeys([*ready, *more])))
    except LedgerError as exc:
        raise CliError(str(exc)) from None
    credits = sum(p.credits or 0 for p in priced)
    ctx.out.emit({"event": "enqueued", "run": run, "rows": len(specs), "deferred": deferred,
                  "credits": credits, "budget": budget, "budget_before": before,
                  "poll_rate": args.poll_rate, "requeued": requeued,
                  "ended": list(plan.ended), "ambiguous": list(plan.ambiguous)},
                 f"run {run!r}: {plural(len(specs), 'row')} recorded ({credits} credits "
                 f"estimated), {deferred} queued now"
                 + (", the rest when their characters/scenes are ready"
                    if any(deps for *_, deps in specs) else "")
                 + (f"; {len(requeued)} that had ended re-queued" if requeued else ""))
    _budget_notes(ctx, run, before, budget, priced)
    if plan.ended:
        ctx.out.note(f"{plural(len(plan.ended), 'row')} ended cancelled/failed and stay "
                     "so (pass --resubmit-ended cancelled,failed to submit them again, "
                     "paid again): "
                     + ", ".join(plan.ended))
    if plan.ambiguous:
        ctx.out.note(f"{plural(len(plan.ambiguous), 'row')} may already exist (sent, no "
                     "answer) and are not re-queued (check your Viggle account; "
                     "--resubmit-ambiguous sends them again): " + ", ".join(plan.ambiguous))
    ctx.out.note(worker_hint(args))
    return EXIT_OK


def _budget_notes(ctx: Ctx, run: str, before: float | None, budget: float | None,
                  priced: list[Priced]) -> None:
    """The run's budget as ``--enqueue`` left it: changed, or short of the estimate."""
    if before is not None and budget != before:
        ctx.out.result(f"run {run!r}: budget changed from {before:g} to {budget:g} credits")
    if budget is None:
        return
    credits = sum(p.credits or 0 for p in priced)
    unknown = sum(1 for p in priced if p.credits is None)
    problems = []
    if credits > budget:
        short = credits - budget
        problems.append(f"estimated at {credits} credits, its budget of {budget:g} is "
                        f"{short:g} credit{'' if short == 1 else 's'} short: rows past it "
                        "will not be sent "
                        f"(to send all: --enqueue --budget {credits})")
    if unknown:
        problems.append(f"{unknown} rows of unknown length will not be sent under a budget "
                        "(give them estimated_seconds)")
    if problems:
        ctx.out.error(f"warning: run {run!r}: " + "; ".join(problems))


async def _requeue_ended(args: argparse.Namespace, ledger: PostgresLedger, book: RowBook
                         ) -> tuple[list[str], list[str], Plan]:
    """Put the run's failed rows back in the queue where a local rerun would run them
    again: nothing was sent, a job to resume, or an end named by ``--resubmit-ended`` (an
    ambiguous create only with ``--resubmit-ambiguous``). Returns ``(requeued, ready,
    plan)``: the rows put back, those to defer now, and how each failed row was sorted."""
    from ..pg import PostgresJournalStore
    from ._cmd_bulk import Plan, plan_entries

    failed = [r.key for r in await book.rows() if r.state == "failed"]
    if not failed:
        return [], [], Plan()
    journal = Journal(PostgresJournalStore.on_ledger(ledger, name=JOURNAL_NAME))
    entries = {k: e for k in failed if (e := await journal.get(f"{book.run}/{k}")) is not None}
    plan = plan_entries(failed, entries, args.resubmit_ended or frozenset(),
                        args.resubmit_ambiguous)
    # A worker's supervisor sends again only a create its journal entry allows (intent):
    # what the user asked to resubmit goes back to intent here, as a local supervisor
    # does when it resubmits; every other entry is left as it is (a job is resumed).
    for key in plan.new + plan.resubmit:
        entry = entries.get(key)
        if entry is not None and entry.state in (EntryState.SENDING, EntryState.FINAL):
            await journal.record_intent(f"{book.run}/{key}", entry.kind, entry.fingerprint,
                                        replace=True)
    requeued, ready = await book.retry([*plan.new, *plan.resumed, *plan.finished,
                                        *plan.resubmit])
    return requeued, ready, plan


async def _status(ctx: Ctx) -> int:
    args = ctx.args
    run = _run_name(args)
    from ..pg import LedgerError, PostgresJournalStore, RowBook
    from ..pg._dist import run_names

    try:
        async with _ledger(args) as ledger:
            book = RowBook(ledger, run)
            rows = await book.rows()
            if not rows:
                raise CliError(_unknown_run(args, run, await run_names(ledger)))
            counts = await book.counts()
            jobs = await book.jobs(stalled_after=args.stalled_after)
            account = await ledger.summary()
            mine = await ledger.run_credits(run)
            store = PostgresJournalStore.on_ledger(ledger, name=JOURNAL_NAME)
            entries = {e.key: e for e in await Journal(store).entries()
                       if e.key.startswith(f"{run}/")}
    except LedgerError as exc:
        raise CliError(str(exc)) from None
    _check_same_manifest(args, run, rows)
    from ._cmd_bulk import report_row, report_summary

    outcomes: list[Outcome] = []
    report: list[dict[str, Any]] = []
    for r in rows:
        entry = entries.get(f"{run}/{r.key}")
        outcome, progress = _row_outcome(r, entry, jobs.get(r.key))
        output = _spec_path(r.spec, "output")
        if progress == "rendering" and output is not None and await anyio.to_thread.run_sync(
                _downloading, output):
            progress = "downloading"
        obj = report_row(outcome, line=r.spec.get("line"), output=output,
                         credits=r.spec.get("credits"), fast=bool(r.spec.get("fast")),
                         spends=True)  # every row of a distributed run is this run's
        if progress is not None:
            obj["state"] = progress
        outcomes.append(outcome)
        report.append(obj)
    summary = report_summary(ctx, outcomes, report, False)
    ambiguous = [o["key"] for o in report if o["state"] == "ambiguous"]
    stalled = [o["key"] for o in report if o["state"] == "stalled"]
    # Refused before sending: nothing was created or charged, and the run goes on.
    over_budget = [o["key"] for o in report if o["state"] == "not_submitted"
                   and "budget" in str(o.get("error"))]
    spent = sum(o["credits"] or 0 for o in report if o["state"] in ("complete", "skipped"))
    unfinished = counts.by_state.get("waiting", 0) + counts.by_state.get("queued", 0)
    summary.update({
        "event": "status", "run": run, "rows": counts.by_state, "retries": None,
        "credits_committed": mine.committed, "credits_spent": spent, "budget": mine.budget,
        "account_credits_committed": account.committed, "account_budget": account.budget,
        "not_sent_for_budget": over_budget, "stopped": account.stopped,
        "ambiguous": ambiguous, "stalled": stalled,
        "capacity_rejections": account.capacity_rejections, "poll_rate": account.poll_rate,
        # In progress, the run has not failed yet; once every row ended, as a local run.
        "exit_code": EXIT_FAILED if (counts.by_state.get("failed") or ambiguous)
        and not unfinished else EXIT_OK})
    ctx.out.emit(summary, f"run {run!r}: {plural(counts.total, 'row')}: "
                 + ", ".join(f"{n} {s}" for s, n in summary["states"].items())
                 + f"; credits committed {mine.committed}, spent {spent}"
                 + (f" of a {mine.budget:g} budget" if mine.budget is not None else
                    " (no budget)")
                 + f"; account-wide, all runs: committed {account.committed}"
                 + (f" of a {account.budget:g} cap" if account.budget is not None else "")
                 + (f"; polls capped at {account.poll_rate:g}/s across workers"
                    if account.poll_rate is not None else "; polls not capped across workers"))
    if account.stopped:
        ctx.out.error(f"new creates are stopped: {account.stopped}")
    if over_budget:
        first = next(o for o in report if o["key"] == over_budget[0])
        ctx.out.error(f"{plural(len(over_budget), 'row')} not sent, over a budget (nothing created "
                      f"or charged): {', '.join(over_budget)}; {first.get('error')}")
    if stalled:
        ctx.out.error(f"{len(stalled)} stalled (their worker stopped heartbeating over "
                      f"{args.stalled_after:g} s ago; a running worker retries them, their "
                      "jobs resumed from the journal): " + ", ".join(stalled))
    if ambiguous:
        ctx.out.error(f"{len(ambiguous)} ambiguous (sent, no answer; not resent): "
                      + ", ".join(ambiguous))
    if args.report:
        from ._cmd_bulk import _write_json

        await anyio.to_thread.run_sync(_write_json, Path(args.report), {
            "manifest": str(args.manifest), "summary": summary, "outcomes": report})
    return int(summary["exit_code"])


def _unknown_run(args: argparse.Namespace, run: str, names: list[str]) -> str:
    """One line: the run is not in the ledger, which runs are, and how to name one."""
    shown = ", ".join(repr(n) for n in names[:10]) + (" ..." if len(names) > 10 else "")
    default = "" if args.run_name else " (the default is the manifest's file name)"
    return (f"run {run!r} is not in the ledger (schema {args.schema}); "
            + (f"its runs: {shown}" if names else "it has no runs yet")
            + f". Fix: name the run with --run NAME{default}")


def _check_same_manifest(args: argparse.Namespace, run: str, rows: list[Any]) -> None:
    """A run named after the manifest's file name must be this manifest's: another
    project's ``shots.jsonl`` is another run."""
    recorded = sorted({str(r.spec["manifest"]) for r in rows if r.spec.get("manifest")})
    if args.run_name or not recorded or str(Path(args.manifest).resolve()) in recorded:
        return
    raise CliError(f"run {run!r} in the ledger was enqueued from {recorded[0]}, not from "
                   f"{args.manifest}. Fix: pass that run's name with --run NAME")


def _spec_path(spec: Mapping[str, Any], field: str) -> Path | None:
    from ..pg import decode_spec_value

    value = decode_spec_value(spec.get(field))
    return value if isinstance(value, Path) else None


def _row_outcome(row: Any, entry: JournalEntry | None, job: str | None
                 ) -> tuple[Outcome, str | None]:
    """A ledger row as an ``Outcome`` (the report's fields), and, for a row not ended, its
    progress (one of ``IN_PROGRESS``) to show instead of the outcome's state.

    Ended rows keep what their worker recorded; the journal, shared by every worker, adds
    the create attempts of a row another worker resumed. Unended rows are read from the
    journal entry (intent/sending: creating; submitted: the job exists) and the row's
    queue job (held by a live worker, by a dead one, or waiting)."""
    # A create was sent for this entry (in this or a killed worker): at least its
    # attempts, which a worker that only resumed the job does not know.
    sent = entry.attempts if entry is not None and (
        entry.job_id or entry.state is EntryState.SENDING) else 0
    if row.outcome is not None:
        return _stored_outcome(row, sent), None
    if entry is not None and entry.state is EntryState.SUBMITTED:
        outcome = Outcome(row.key, row.kind, "running", job_id=entry.job_id, attempts=sent,
                          fast=bool(row.spec.get("fast")))
        return outcome, {"doing": "rendering", "stalled": "stalled"}.get(job or "", "queued")
    if entry is not None and entry.state is EntryState.SENDING and job != "doing":
        return Outcome(row.key, row.kind, "ambiguous", attempts=sent, error=(
            "a worker sent the create and stopped before its answer; not resent (check "
            "your Viggle account; --resubmit-ambiguous sends it again)")), None
    progress = {"doing": "uploading", "stalled": "stalled"}.get(job or "", row.state)
    return Outcome(row.key, row.kind, "not_submitted", attempts=sent), progress


def _stored_outcome(row: Any, sent: int) -> Outcome:
    """The outcome a worker stored (or the ledger wrote for a row whose dependency
    failed), with every ``Outcome`` field."""
    fields = attrs.fields_dict(Outcome)
    data = {k: v for k, v in dict(row.outcome).items() if k in fields}
    data.update(key=row.key, kind=row.kind, state=data.get("state") or row.state,
                outputs=tuple(Path(p) for p in data.get("outputs") or ()),
                # A worker that only resumed the job sent no create: the journal knows
                # the ones a killed worker sent.
                attempts=int(data.get("attempts") or 0) or sent)
    try:
        return Outcome(**data)
    except (TypeError, ValueError) as exc:  # written by another version: still shown
        return Outcome(row.key, row.kind, "failed", error=f"unreadable outcome ({exc})")


def _downloading(output: Path) -> bool:
    """A worker is writing the render's output: its temporary file sits beside it (the
    download's ``.NAME.<hex>.part``, on the shared filesystem)."""
    return any(output.parent.glob(f".{glob.escape(output.name)}.*.part"))


# --- the worker ------------------------------------------------------------------------------

class _KeyRejected(Exception):
    """A create was refused 401/403 mid-run (the key was revoked): the row goes back to
    the queue (procrastinate's retry), for a worker whose key works."""


#: The error classes of a rejected key (docs/api/errors.md: 401 / 403).
_KEY_ERRORS = frozenset({"AuthenticationError"})


class _RowWorker:
    """Runs delivered rows on this process's one supervisor and says what it did: one
    line (or ``--json`` event) per finished row, counts for the summary."""

    def __init__(self, ledger: PostgresLedger, out: Output | None = None) -> None:
        self.ledger = ledger
        self.out = out
        self.sup: Supervisor | None = None
        self.queue: RowQueue | None = None
        # A row delivered again to this process (its job was retried) awaits the same
        # handle: the supervisor takes each key once.
        self._handles: dict[str, Handle] = {}
        self.done = 0  # rows this worker finished ok
        self.failed = 0  # rows this worker ran that failed (not their cascaded dependents)
        self.handed_back = 0  # rows given back to the queue after the key was refused
        #: Why the API refused the key mid-run (then no row is taken any more).
        self.key_rejected: str | None = None

    async def handle(self, run: str, key: str) -> None:
        from ..pg import RowBook

        if self.key_rejected is not None:  # stopping: a row fetched meanwhile goes back
            self.handed_back += 1
            raise _KeyRejected(self.key_rejected)
        book = RowBook(self.ledger, run)
        row = await book.get(key)
        if row is None or row.state in ("done", "failed"):
            return
        spec = row.spec
        skey = f"{run}/{key}"
        handle = self._handles.get(skey)
        if handle is not None and handle.done:
            # Ended here before, yet delivered again and not done/failed in the ledger:
            # re-queued (bulk --enqueue again, --resubmit-ended). Run it anew; the
            # journal keeps a known job from being created twice.
            assert self.sup is not None
            self.sup.release(handle)
            del self._handles[skey]
            handle = None
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
        if outcome.error_type in _KEY_ERRORS and outcome.state in ("failed", "not_submitted"):
            # Refused before any job was made (a documented refusal: the journal is back
            # at "intent"): not this row's failure. Stop taking rows; hand this one back.
            self._handles.pop(skey, None)
            self.handed_back += 1
            if self.key_rejected is None:
                self.key_rejected = f"{outcome.error_code or 'HTTP 401/403'}: {outcome.error}"
                if self.queue is not None:
                    self.queue.stop()
            raise _KeyRejected(self.key_rejected)
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
        if outcome.ok:
            self.done += 1
        else:
            self.failed += 1
        if self.out is not None:
            self.out.emit({"event": "row", "run": book.run, "key": key, "state": outcome.state,
                           "outcome": data},
                          f"row {outcome_text(outcome)} [run {book.run}]")


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


async def _stop_when_no_rows(ledger: PostgresLedger, queue: RowQueue) -> None:
    # Not procrastinate's wait=False: that stops at the first empty fetch, before the
    # renders a finishing character row defers. The ledger knows what is left. A stop,
    # not a cancel: the worker unregisters and its connections close in order.
    from ..pg import unfinished_rows

    while await unfinished_rows(ledger):  # noqa: ASYNC110 (a database, no local event)
        await anyio.sleep(0.5)
    queue.stop()


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
                   help="credits this worker process may commit (reserved, not refunded), "
                        "on top of each run's own budget (bulk --enqueue --budget): it can "
                        "only lower what goes out")
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


async def _stop_on_signals(queue: RowQueue, stopped: list[int],
                           scope: anyio.CancelScope) -> None:
    # Ours, not procrastinate's handlers: the exit code must tell SIGTERM (143) from
    # Ctrl-C (130). The first signal stops taking rows and waits --grace seconds for the
    # held ones (the rest are handed back); a second one stops at once.
    try:
        receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
    except NotImplementedError:  # Windows: no loop signal handlers; Ctrl-C still stops
        await anyio.sleep_forever()
    with receiver as signals:
        async for signum in signals:
            if stopped:
                scope.cancel()
                return
            stopped.append(EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED)
            queue.stop()


async def run(ctx: Ctx) -> int:
    """Take rows until stopped. Exit 0: every row this worker ran is done; 1: one failed;
    2 (``CliError``): the key is rejected or the API unreachable at start (no row taken),
    or the key was refused mid-run (held rows handed back); 130/143: Ctrl-C/SIGTERM."""
    args = ctx.args
    ctx.require_key()
    from ..pg import LedgerError, PostgresAccountState, PostgresJournalStore
    from ._preflight import reach

    stopped: list[int] = []
    try:
        # The key and the API first, with bulk's words: a worker that cannot create must
        # not take (and fail) rows.
        async with ctx.client() as client:
            try:
                await reach(ctx, client, client.get_credits)
            except CliError:
                raise
            except ViggleError:
                pass  # docs/api/credits.md: the endpoint may be missing; creates will tell
            async with _ledger(args) as ledger:
                clock = SystemClock()
                account = PostgresAccountState(ledger, budget=args.budget, clock=clock)
                journal = Journal(PostgresJournalStore.on_ledger(ledger, name=JOURNAL_NAME))
                worker = _RowWorker(ledger, ctx.out)
                queue = worker.queue = _queue(
                    args, ledger, worker.handle, stalled_after=args.stalled_after,
                    heartbeat=min(args.heartbeat, args.stalled_after / 3),
                    recover_every=args.recover_every)
                ctx.out.note(f"worker {account.worker_id} on {ledger.dsn} schema "
                             f"{ledger.schema}")
                ctx.out.json({"event": "worker_started", "worker": account.worker_id,
                              "schema": ledger.schema})
                # A create's 429 pauses every worker from its first retry on: the
                # supervisor observes the client's retries and writes the pause to the
                # shared account.
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
                        # now; each worker's recovery loop covers the ones dying later.
                        await queue.retry_stalled()
                        worker.sup = sup
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(_sweep_orphans, ledger, queue)
                            tg.start_soon(_stop_on_signals, queue, stopped, tg.cancel_scope)
                            if args.exit_when_empty:
                                tg.start_soon(_stop_when_no_rows, ledger, queue)
                            await queue.run_worker(concurrency=args.concurrency,
                                                   install_signal_handlers=False,
                                                   shutdown_graceful_timeout=args.grace)
                            tg.cancel_scope.cancel()
                        # Stopped (a signal, empty, or a refused key): rows still held
                        # are handed back; their jobs are journaled, so the next delivery
                        # resumes them.
                        scope.cancel()
    except LedgerError as exc:
        raise CliError(str(exc)) from None
    code = (stopped[0] if stopped else EXIT_FAILED if worker.failed else EXIT_OK)
    summary = {"event": "summary", "worker": account.worker_id, "rows_done": worker.done,
               "rows_failed": worker.failed, "rows_handed_back": worker.handed_back,
               "exit_code": code}
    text = (f"worker stopped: {worker.done} rows done, {worker.failed} failed by this worker"
            + (f", {worker.handed_back} handed back" if worker.handed_back else ""))
    if worker.key_rejected is not None:
        ctx.out.emit(summary | {"exit_code": EXIT_USAGE}, text)
        raise CliError(f"the API rejected VIGGLE_API_KEY ({worker.key_rejected}); this "
                       f"worker stopped taking rows and handed back the ones it held")
    ctx.out.emit(summary, text)
    if stopped:
        ctx.interrupt_code = stopped[0]
        ctx.explained_stop = True
    return code


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
