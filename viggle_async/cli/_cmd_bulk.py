"""``viggle-async bulk MANIFEST``: validate every row, then run them all through one
Supervisor (or, with ``--dry-run``, price them and stop), and report one outcome per row.

Nothing is sent until every row has passed both the manifest checks (``_manifest``) and
the library's own local checks (the same preflight a real create runs), so a bad manifest
costs nothing and exits 2 with every problem listed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import re
import shlex
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import attrs

from .. import (
    CharacterHandle,
    Credits,
    InvalidInputError,
    Outcome,
    SceneHandle,
    SQLiteJournal,
    Supervisor,
    ViggleClient,
)
from .. import _endpoints as ep
from .._events import Handle
from .._journal import EntryState, JournalEntry, JournalError
from .._media import IMAGE_CONTENT_TYPES, VIDEO_CONTENT_TYPES
from .._resources import RENDER_IMAGE_TYPES
from .._reuse import ReusePlan, ReuseRule
from .._uploads import prepare_upload
from ._cmd_worker import add_bulk_options, bulk_distributed
from ._common import (
    DEFAULT_CAPACITY_BACKOFF,
    DEFAULT_POLL_RATE,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Command,
    Ctx,
    asset_credits,
    credits_text,
    is_interrupt,
    parse_backoff,
    parse_fast_fallback,
    plural,
    positive_float,
    positive_int,
)
from ._manifest import Manifest, Problem, Row, load_manifest
from ._options import BACKOFF_HELP, FAST_FALLBACK_HELP, add_poll_interval
from ._paths import option_path_problem, output_problem
from ._preflight import preflight
from ._progress import EventView, summary_text, to_json
from ._reuse_opts import add_reuse_options, plan_lines, reuse_rule

__all__ = ["COMMAND", "IN_PROGRESS", "Plan", "plan_entries", "report_row", "report_summary"]

DESCRIPTION = """\
Render a CSV or JSON-lines manifest: one row per render, character or scene.

columns: key (unique, required), kind (render | character | scene; default render),
  the API's field names (ref_image, ref_image_url, driving_video, driving_video_url,
  character_id, scene_id, character_mapping, model, background_mode, bg_color, fast;
  name, image, image_url for characters; name, video, video_url or template_id for
  scenes), output, mask_output and estimated_seconds (prices URL and scene renders).
A render's character_id / scene_id (or a character_mapping value) that is the key of a
character / scene row uses the asset that row creates; write @key to insist on a key.
Relative paths resolve against the manifest's folder. Every row is checked before
anything is sent; problems are listed as FILE:LINE: row N, FIELD: problem. Fix: ...
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", metavar="MANIFEST", help="a .csv or .jsonl file (see README)")
    p.add_argument("--dry-run", action="store_true",
                   help="check every row and total the estimated credits; send nothing")
    p.add_argument("--journal", metavar="PATH",
                   help="SQLite journal: a rerun skips finished rows and resumes jobs")
    p.add_argument("--report", metavar="PATH", help="write one outcome per row as JSON")
    p.add_argument("--budget", type=positive_float, metavar="CREDITS",
                   help="submit nothing past this many credits")
    p.add_argument("--fast-fallback", type=parse_fast_fallback, default="attempts:5,seconds:300",
                   metavar="SPEC", help=FAST_FALLBACK_HELP)
    p.add_argument("--capacity-backoff", type=parse_backoff, default=DEFAULT_CAPACITY_BACKOFF,
                   metavar="BASE:CAP", help=BACKOFF_HELP)
    p.add_argument("--resubmit-ambiguous", action="store_true",
                   help="resubmit creates an earlier run sent without an answer (may pay "
                        "twice)")
    p.add_argument("--resubmit-ended", type=parse_ended, metavar="STATES",
                   help="with --journal: submit again the rows that ended cancelled or failed "
                        "in an earlier run (cancelled, failed or cancelled,failed); they are "
                        "paid again, and the plan line says how much before anything is sent")
    p.add_argument("--cancel-remote", action="store_true",
                   help="on Ctrl-C, cancel running jobs on the server (refunded)")
    p.add_argument("--max-uploads", type=positive_int, default=4, metavar="N",
                   help="creates (uploads) in flight at once (default 4)")
    p.add_argument("--max-polls", type=positive_int, default=8, metavar="N",
                   help="status requests in flight at once (default 8)")
    p.add_argument("--max-active-jobs", type=positive_int, default=100, metavar="N",
                   help="rows being worked on at once, submitted or uploading (default 100)")
    p.add_argument("--poll-rate", type=positive_float, metavar="N",
                   help=f"at most N status polls started per second, for all jobs (default "
                        f"{DEFAULT_POLL_RATE:g}); with --enqueue, the cap every worker of the "
                        "ledger shares")
    add_poll_interval(p)
    add_reuse_options(p)
    add_bulk_options(p)  # --enqueue, --status, --run, --schema (a PostgreSQL --journal)

# Stands in for ids of characters not created yet when pricing a mapping render.
_PENDING = "pending-dry-run"


@attrs.frozen
class Priced:
    row: Row
    credits: int | None  # None: cannot be read locally (URL or scene, no estimated_seconds)
    fast: bool = False
    duration_s: float | None = None
    upload_bytes: int | None = None


async def run(ctx: Ctx) -> int:
    args = ctx.args
    distributed = await bulk_distributed(ctx, functools.partial(_checked, ctx))
    if distributed is not None:
        return distributed
    problem = await anyio.to_thread.run_sync(_local_paths_problem, args)
    if problem is not None:
        raise CliError(problem)  # nothing sent yet, --dry-run included
    rule = reuse_rule(args)
    manifest = await anyio.to_thread.run_sync(load_manifest, Path(args.manifest))
    reuse: ReusePlan | None = None
    async with ctx.client() as client:
        priced, problems = await _validate(client, manifest)
        if rule is not None and not problems:
            reuse = await _reuse_plan(client, priced, rule)
    if problems:
        _report_problems(ctx, manifest, problems)
        return EXIT_USAGE
    if args.dry_run:
        return _dry_run(ctx, manifest, priced, reuse)
    ctx.require_key()
    return await _run(ctx, manifest, priced, reuse)


async def _reuse_plan(client: ViggleClient, priced: list[Priced],
                      rule: ReuseRule) -> ReusePlan:
    """Both plans for the render rows the supervisor will hold (local image and video, no
    character or scene row): ``--reuse-assets``."""
    renders = {p.row.key: {**p.row.inputs, "estimated_seconds": p.row.estimated_seconds}
               for p in priced if p.row.kind == "render" and p.row.character is None
               and p.row.scene is None and not p.row.mapping_refs}
    return await Supervisor(client, reuse_assets=rule).estimate_reuse(renders)


def _show_reuse(ctx: Ctx, reuse: ReusePlan | None) -> None:
    if reuse is not None:
        obj, lines = plan_lines(reuse)
        ctx.out.emit(obj, "\n".join(lines))


async def _checked(ctx: Ctx) -> tuple[Manifest, list[Priced]] | int:
    """The manifest and its priced rows, or EXIT_USAGE with every problem reported."""
    manifest = await anyio.to_thread.run_sync(load_manifest, Path(ctx.args.manifest))
    async with ctx.client() as client:
        priced, problems = await _validate(client, manifest)
    if problems:
        _report_problems(ctx, manifest, problems)
        return EXIT_USAGE
    return manifest, priced


# --- validation --------------------------------------------------------------------------

async def _validate(client: ViggleClient, manifest: Manifest
                    ) -> tuple[list[Priced], list[Problem]]:
    """Every check on every row, each check on its own, so one pass lists every problem
    (files are sniffed, nothing is sent). Rows the manifest held back for problems of their
    own are checked too, but never priced or run.

    Returns the rows priced, in manifest order; a render of an uploaded scene row without
    ``estimated_seconds`` takes that scene video's length, so budgets can price it.
    """
    problems = list(manifest.problems)
    seen = {(p.line, p.field) for p in problems}
    sup = Supervisor(client)  # estimate() works outside 'async with'
    priced: dict[str, Priced] = {}
    scene_seconds: dict[str, float] = {}
    held = {id(r) for r in manifest.held}
    # Assets first: their lengths price the renders that use them.
    for row in sorted((*manifest.rows, *manifest.held), key=lambda r: r.kind == "render"):
        found = await _row_problems(client, row)
        for exc in found:
            if (row.line, exc.field) in seen:
                continue  # the manifest already named this field (e.g. a value of bad type)
            seen.add((row.line, exc.field))
            code = f" [{exc.error_code}]" if exc.error_code else ""
            problems.append(Problem(row.line, row.row, exc.field,
                                    column_words(exc.problem) + code, column_words(exc.fix),
                                    key=row.key or None))
        if found or id(row) in held:
            continue
        if row.kind == "render" and row.estimated_seconds is None and (
                row.scene in scene_seconds):
            row = attrs.evolve(row, estimated_seconds=scene_seconds[row.scene or ""])
        priced[row.key] = price = await _price(client, sup, row)
        if row.kind == "scene" and price.duration_s is not None:
            scene_seconds[row.key] = price.duration_s
    problems.sort(key=lambda p: (p.line, p.field or ""))
    return [priced[r.key] for r in manifest.rows if r.key in priced], problems


_RENDER_FIELDS = ("ref_image_url", "driving_video_url", "character_id", "scene_id",
                  "character_mapping", "model", "background_mode", "bg_color")


_PY_ARG = re.compile(r"\b([a-z_]+)=(?:'([^']*)'|\"([^\"]*)\"|(True|False))")


def column_words(text: str) -> str:
    """A library message in manifest words: ``background_mode='solid'`` -> ``background_mode
    solid``, ``fast=True`` -> ``fast true``; "a 3-tuple of ints" dropped (a cell is text)."""
    def value(m: re.Match[str]) -> str:
        raw = next(g for g in m.groups()[1:] if g is not None)
        return f"{m.group(1)} {raw.lower() if raw in ('True', 'False') else raw}"

    return _PY_ARG.sub(value, text).replace(", or a 3-tuple of ints", "")


async def _row_problems(client: ViggleClient, row: Row) -> list[InvalidInputError]:
    """The library's local checks for one row, each run separately (its ``prepare`` stops
    at the first problem): the fields together, then every file, then the outputs."""
    inputs = _with_mapping(row, {k: _PENDING for k in row.mapping_refs.values()})
    if row.character is not None:
        inputs["character_id"] = _PENDING
    if row.scene is not None:
        inputs["scene_id"] = _PENDING
    limits = client.limits
    checks: list[Callable[[], Any]] = []
    files: list[tuple[str, Literal["image", "video"], frozenset[str], float]]
    if row.kind == "render":
        checks.append(lambda: ep.render_create_fields(
            has_ref_image="ref_image" in inputs, has_driving_video="driving_video" in inputs,
            fast=bool(inputs.get("fast", False)), **{k: inputs.get(k) for k in _RENDER_FIELDS}))
        files = [("ref_image", "image", RENDER_IMAGE_TYPES, 0.0),
                 ("driving_video", "video", VIDEO_CONTENT_TYPES, 0.0)]
    elif row.kind == "character":
        checks.append(lambda: ep.character_create_fields(
            name=inputs.get("name", ""), has_image="image" in inputs,
            image_url=inputs.get("image_url")))
        files = [("image", "image", IMAGE_CONTENT_TYPES, 0.0)]
    elif "template_id" in inputs:
        checks.append(lambda: ep.import_scene(inputs["template_id"], inputs.get("name")))
        files = []
    else:
        checks.append(lambda: ep.scene_create_fields(
            name=inputs.get("name", ""), has_video="video" in inputs,
            video_url=inputs.get("video_url"), background_mode=inputs.get("background_mode"),
            model=inputs.get("model")))
        # docs/api/limits.md#limits: scenes >= 0.5 s
        files = [("video", "video", VIDEO_CONTENT_TYPES, 0.5)]
    for field, media, allowed, min_s in files:
        if field in inputs:
            checks.append(functools.partial(
                prepare_upload, field, media, inputs[field], allowed=allowed, limits=limits,
                min_seconds=min_s))
    for column in ("output", "mask_output"):
        path = getattr(row, column)
        if path is not None:
            checks.append(functools.partial(_not_a_folder, column, path))
    found = []
    for check in checks:
        try:
            result = check()
            if inspect.isawaitable(result):
                await result
        except InvalidInputError as exc:
            found.append(exc)
    return found


async def _not_a_folder(column: str, path: Path) -> None:
    """The output can be saved (checked in --dry-run too): a paid render must not be lost."""
    problem = await anyio.to_thread.run_sync(output_problem, path)
    if problem is not None:
        raise InvalidInputError(column, *problem)


async def _price(client: ViggleClient, sup: Supervisor, row: Row) -> Priced:
    if row.kind == "character":
        await client.characters.prepare(**row.inputs)
        return Priced(row, asset_credits("character"))
    if row.kind == "scene":
        if "template_id" in row.inputs:
            ep.import_scene(row.inputs["template_id"], row.inputs.get("name"))
            return Priced(row, asset_credits("scene"))
        prepared = await client.scenes.prepare(**row.inputs)
        return Priced(row, asset_credits("scene"), duration_s=prepared.duration_s)
    inputs = _with_mapping(row, {k: _PENDING for k in row.mapping_refs.values()})
    est = await sup.estimate(character=row.character, scene=row.scene,
                             estimated_seconds=row.estimated_seconds, **inputs)
    return Priced(row, est.credits, est.fast, est.duration_s, est.upload_bytes)


def _with_mapping(row: Row, ids: dict[str, str]) -> dict[str, Any]:
    """The row's inputs with character keys in ``character_mapping`` replaced by ids."""
    if not row.mapping_refs:
        return dict(row.inputs)
    mapping = {seg: ids[row.mapping_refs[seg]] if seg in row.mapping_refs else value
               for seg, value in row.inputs["character_mapping"].items()}
    return {**row.inputs, "character_mapping": mapping}


def _report_problems(ctx: Ctx, manifest: Manifest, problems: list[Problem]) -> None:
    name = str(manifest.path)
    for p in problems:
        ctx.out.json({"event": "problem", **attrs.asdict(p)})
        ctx.out.error(p.describe(name))
    ctx.out.json({"event": "summary", "problems": len(problems), "exit_code": EXIT_USAGE})
    ctx.out.error(f"{plural(len(problems), 'problem')} in {name}; nothing was sent")


# --- dry run -------------------------------------------------------------------------------

def _dry_run(ctx: Ctx, manifest: Manifest, priced: list[Priced],
             reuse: ReusePlan | None = None) -> int:
    args, out = ctx.args, ctx.out
    known = sum(p.credits or 0 for p in priced)
    if reuse is not None:
        known += int(reuse.extra_credits)  # the characters reuse creates (1 credit each)
    unknown = [p.row.key for p in priced if p.credits is None]
    rows = []
    for p in priced:
        obj = {"event": "estimate", "key": p.row.key, "kind": p.row.kind, "line": p.row.line,
               "credits": p.credits, "fast": p.fast, "duration_s": p.duration_s,
               "upload_bytes": p.upload_bytes}
        rows.append(obj)
        note = "unknown: pass estimated_seconds" if p.credits is None else str(p.credits)
        fast = " fast" if p.fast else ""
        out.emit(obj, f"{p.row.line:>5}  {p.row.kind:<9}  {p.row.key}: {note}{fast}")
    verdict = EXIT_OK
    budget_note = ""
    if args.budget is not None:
        if known > args.budget or unknown:
            verdict = EXIT_FAILED  # a real run would leave some renders not_submitted
            budget_note = f"; over the budget of {args.budget:g}" if known > args.budget else (
                "; renders without a known cost would be refused under --budget")
        else:
            budget_note = f"; within the budget of {args.budget:g}"
    _show_reuse(ctx, reuse)
    summary = {"event": "summary", "dry_run": True, "total": len(priced), "credits": known,
               "unknown": unknown, "budget": args.budget, "exit_code": verdict}
    out.json(summary)
    at_least = "at least " if unknown else ""
    out.result(f"dry run: {plural(len(priced), 'row')} valid; estimated cost {at_least}"
               f"{known} credits{budget_note}; nothing was sent")
    if args.report:
        _write_json(Path(args.report), {**summary, "rows": rows})
    return verdict


# --- the run -------------------------------------------------------------------------------

_ENDED = ("cancelled", "failed")


@attrs.frozen
class Plan:
    """What the journal says this run will do with each row, before anything is sent."""

    new: tuple[str, ...] = ()         # keys to submit (they spend credits now)
    resumed: tuple[str, ...] = ()     # submitted by an earlier run: poll, download
    finished: tuple[str, ...] = ()    # finished earlier: skipped (or re-downloaded)
    ended: tuple[str, ...] = ()       # ended cancelled/failed earlier, not resubmitted
    resubmit: tuple[str, ...] = ()    # ended earlier and resubmitted (--resubmit-ended)
    ambiguous: tuple[str, ...] = ()   # sent without an answer earlier

    def spends(self, key: str) -> bool:
        return key in self.new or key in self.resubmit


async def _plan(journal: SQLiteJournal | None, rows: tuple[Row, ...],
                resubmit_ended: frozenset[str], resubmit_ambiguous: bool) -> Plan:
    entries = {e.key: e for e in await journal.entries()} if journal is not None else {}
    return plan_entries([r.key for r in rows], entries, resubmit_ended, resubmit_ambiguous)


def plan_entries(keys: Sequence[str], entries: Mapping[str, JournalEntry],
                 resubmit_ended: frozenset[str], resubmit_ambiguous: bool) -> Plan:
    """Sort ``keys`` by what their journal entry (``entries[key]``, absent: never sent)
    allows, as a rerun does: a create never sent is new; one sent without an answer is
    ambiguous unless ``resubmit_ambiguous``; a job is resumed; an ended one is submitted
    again only when its end (``"cancelled"`` or ``"failed"``) is in ``resubmit_ended``."""
    sort: dict[str, list[str]] = {name: [] for name in attrs.fields_dict(Plan)}
    for key in keys:
        entry = entries.get(key)
        if entry is None or entry.state is EntryState.INTENT:
            sort["new"].append(key)
        elif entry.state is EntryState.SENDING:
            sort["new" if resubmit_ambiguous else "ambiguous"].append(key)
        elif entry.state is EntryState.SUBMITTED:
            sort["resumed"].append(key)
        elif entry.final_status in ("complete", "ready"):
            sort["finished"].append(key)
        elif ("cancelled" if entry.final_status == "cancelled" else "failed") in resubmit_ended:
            sort["resubmit"].append(key)
        else:
            sort["ended"].append(key)
    return Plan(**{name: tuple(keys) for name, keys in sort.items()})


def parse_ended(text: str) -> frozenset[str]:
    """``cancelled``, ``failed`` or ``cancelled,failed``."""
    states = frozenset(part.strip() for part in text.split(",") if part.strip())
    wrong = sorted(states - set(_ENDED))
    if wrong or not states:
        raise argparse.ArgumentTypeError(
            f"{text!r}: name cancelled, failed or both (cancelled,failed)")
    return states


async def _run(ctx: Ctx, manifest: Manifest, priced: list[Priced],
               reuse: ReusePlan | None = None) -> int:
    args = ctx.args
    rows = tuple(p.row for p in priced)  # with any estimated_seconds filled in
    cost = {p.row.key: p for p in priced}
    for row in rows:
        for path in (row.output, row.mask_output):
            if path is not None:
                await anyio.Path(path.parent).mkdir(parents=True, exist_ok=True)
    view = EventView(ctx.out, ctx.stats, title=plural(len(rows), "row"))
    handles: dict[str, Handle] = {}
    settled: dict[str, Outcome] = {}  # outcomes decided here, not by the supervisor
    interrupted = False
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(ctx.client(view))
        # The key and the API first: a run that cannot start leaves no journal behind,
        # and its --report says that nothing was sent.
        try:
            balance = await preflight(ctx, client, view)
        except CliError as exc:
            if args.report:
                _write_unsent_report(ctx, manifest, rows, cost, str(exc))
            raise
        journal = None
        plan = Plan(new=tuple(r.key for r in rows))
        if args.journal:
            journal = await stack.enter_async_context(await _open_journal(Path(args.journal)))
            plan = await _plan(journal, rows, args.resubmit_ended or frozenset(),
                               args.resubmit_ambiguous)
        _announce(ctx, balance, plan, cost)
        _show_reuse(ctx, reuse)
        view.expect_costs({k: cost[k].credits for k in (*plan.new, *plan.resubmit)})
        view.outputs.update({r.key: r.output for r in rows if r.output is not None})
        sup = Supervisor(
            client, max_uploads=args.max_uploads, max_polls=args.max_polls,
            max_active_jobs=args.max_active_jobs,
            poll_rate=args.poll_rate or DEFAULT_POLL_RATE, journal=journal,
            credit_budget=args.budget, fast_fallback=args.fast_fallback,
            resubmit_ambiguous=args.resubmit_ambiguous, cancel_remote=args.cancel_remote,
            resubmit_ended=args.resubmit_ended or frozenset(),
            poll_policy=ctx.poll_policy(), capacity_backoff=args.capacity_backoff,
            asset_poll_interval=ctx.asset_poll_interval,
            reuse_assets=reuse_rule(args) or False, reuse_fallback=args.reuse_fallback)
        journal_failure: JournalError | None = None
        try:
            with view:
                async with view.supervising(sup):
                    await _schedule(sup, rows, handles, settled)
        except BaseException as exc:
            # Ctrl-C reaches here as the cancellation of the run (asyncio.run turns it
            # into KeyboardInterrupt afterwards): report what is true, then go on.
            interrupted = is_interrupt(exc)
            # The supervisor raises one JournalError when the journal could not be
            # written; our task group wraps it. Every row has its outcome by then.
            journal_failure = None if interrupted else _journal_error(exc)
            if journal_failure is None:
                raise
        finally:
            outcomes = [_outcome_of(row, handles, settled) for row in rows]
            report = [_row_report(r, o, view, cost, plan, interrupted)
                      for r, o in zip(rows, outcomes, strict=True)]
            summary = report_summary(ctx, outcomes, report, interrupted)
            _add_reuse_assets(summary, sup.reuse_asset_outcomes)
            if journal_failure is not None:
                summary["exit_code"] = EXIT_USAGE
            if args.report:
                try:
                    _write_json(Path(args.report), {
                        "manifest": str(manifest.path), "summary": summary,
                        "outcomes": report})
                except CliError as exc:  # said now: the outcomes were shown as they came
                    ctx.out.error(f"error: {exc}")
                    summary["exit_code"] = max(int(summary["exit_code"]), EXIT_USAGE)
            if interrupted:
                ctx.out.json(summary)
                _explain_interrupt(ctx, report)
    if journal_failure is not None:
        raise CliError(_journal_failure_text(ctx, journal_failure, sup.unjournaled),
                       EXIT_USAGE) from None
    _hint_lost_jobs(ctx, report, plan)
    _hint_not_downloaded(ctx, report)
    ctx.out.json(summary)
    ctx.out.result(summary_text(summary))
    return int(summary["exit_code"])


def _write_unsent_report(ctx: Ctx, manifest: Manifest, rows: tuple[Row, ...],
                         cost: dict[str, Priced], error: str) -> None:
    """--report for a run stopped before any create (key rejected, API unreachable): every
    row not_submitted, with the reason."""
    outcomes = [Outcome(r.key, r.kind, "not_submitted", error=error) for r in rows]
    plan = Plan(new=tuple(r.key for r in rows))
    view = EventView(ctx.out, ctx.stats, title="")
    report = [_row_report(r, o, view, cost, plan, False)
              for r, o in zip(rows, outcomes, strict=True)]
    summary = report_summary(ctx, outcomes, report, False)
    summary.update(exit_code=EXIT_USAGE, error=error)
    _write_json(Path(ctx.args.report), {"manifest": str(manifest.path), "summary": summary,
                                        "outcomes": report})


def _hint_lost_jobs(ctx: Ctx, report: list[dict[str, Any]], plan: Plan) -> None:
    """Jobs an earlier run recorded that this server does not know (404): the journal
    belongs to another server or account. Say so once; the rows already failed."""
    earlier = set(plan.resumed) | set(plan.finished)
    lost = [o["key"] for o in report if o["key"] in earlier and o["state"] == "failed"
            and "not found" in (o["error"] or "")]
    if not lost:
        return
    ctx.out.json({"event": "hint", "keys": lost, "hint": "journal_jobs_unknown"})
    verb = "is" if len(lost) == 1 else "are"
    ctx.out.error(f"{plural(len(lost), 'job')} from the journal {verb} unknown to "
                  f"{ctx.args.base_url or 'this API'}: was the journal written against "
                  "another --base-url or API key? To render them again, use a new --journal")


def _hint_not_downloaded(ctx: Ctx, report: list[dict[str, Any]]) -> None:
    """Paid, finished renders whose output is not on disk: say how to fetch each."""
    rows = [o for o in report if "fetch" in o]
    if not rows:
        return
    ctx.out.json({"event": "hint", "hint": "not_downloaded",
                  "fetch": {o["key"]: o["fetch"] for o in rows}})
    again = (f"; or rerun with --journal {shlex.quote(ctx.args.journal)}"
             if ctx.args.journal else "")
    ctx.out.error(f"{plural(len(rows), 'render')} finished and paid for but NOT downloaded; "
                  f"fetch {'it' if len(rows) == 1 else 'them'}: "
                  + "; ".join(o["fetch"] for o in rows[:3])
                  + (" ..." if len(rows) > 3 else "") + again)


def _journal_error(exc: BaseException) -> JournalError | None:
    """The supervisor's JournalError inside ``exc`` (task groups wrap it), or None."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _journal_error(inner)
            if found is not None:
                return found
        return None
    return exc if isinstance(exc, JournalError) else None


def _journal_failure_text(ctx: Ctx, error: JournalError, unrecorded: dict[str, str]) -> str:
    """One line: which journal, why, and the job ids it lacks (and where they are kept)."""
    cause = error.__cause__ or error
    text = (f"the journal {ctx.args.journal!r} could not be written ({cause}), so new work "
            "was stopped")
    if unrecorded:
        ids = ", ".join(f"{k}={v}" for k, v in sorted(unrecorded.items()))
        where = (f"their ids are in the report {ctx.args.report!r}" if ctx.args.report
                 else "keep these ids")
        text += (f"; {plural(len(unrecorded), 'created job')} not recorded in it, which a "
                 f"rerun cannot resume ({where}): {ids}")
    return text + ". Fix: close whatever holds the journal (or free disk space) and rerun"


def _row_report(row: Row, outcome: Outcome, view: EventView, cost: dict[str, Priced],
                plan: Plan, interrupted: bool) -> dict[str, Any]:
    """One row of ``--report``: the outcome as the supervisor decided it (a job it was
    stopped on is ``running``, with its id and credits), priced where it could not be."""
    return report_row(outcome, line=row.line, output=row.output, credits=cost[row.key].credits,
                      fast=cost[row.key].fast, spends=plan.spends(row.key))


def report_row(outcome: Outcome, *, line: int | None, output: Path | None,
               credits: int | None, fast: bool, spends: bool) -> dict[str, Any]:
    """One row of ``--report``, local or distributed (one shape for both): the outcome's
    fields plus ``line``, ``output``, ``downloaded`` (None for characters and scenes),
    ``spent_this_run`` and, for a paid render not on disk, ``fetch``. ``credits``: the
    row's estimate (whole credits; None when unknown), used where the outcome has none;
    ``spends``: this run submits the row (an earlier run's work costs it nothing)."""
    obj: dict[str, Any] = {"line": line, **attrs.asdict(outcome),
                           "output": str(output) if output else None}
    # True only for a render whose outputs are on disk (the library says so); None for
    # characters and scenes, which have nothing to download.
    obj["downloaded"] = outcome.downloaded if outcome.kind == "render" else None
    priced = credits
    if priced is not None and fast and not outcome.fast and outcome.job_id:
        priced //= 2  # fell back to standard: half the fast price
    if obj["state"] in ("complete", "skipped", "running", "timed_out") and (
            obj["credits"] is None):
        obj["credits"] = priced
    if outcome.download_error is not None and outcome.job_id:
        obj["fetch"] = _fetch_command(outcome.job_id, output)
    obj["spent_this_run"] = spends and obj["state"] in ("complete", "running", "timed_out")
    return obj


def _fetch_command(job_id: str, output: Path | None) -> str:
    return shlex.join(["viggle-async", "download", job_id, str(output or "PATH")])


#: A distributed row's states before it ends (``--status``; a local run has none): its
#: job, if it has one, is counted under ``running``.
IN_PROGRESS = ("waiting", "queued", "uploading", "rendering", "downloading", "stalled")


def report_summary(ctx: Ctx, outcomes: list[Outcome], report: list[dict[str, Any]],
                   interrupted: bool) -> dict[str, Any]:
    """The summary of ``--report`` (local or distributed): counts by state, ``done``,
    ``failed``, ``exit_code``, ``not_downloaded``, ``credits_this_run``,
    ``credits_earlier_runs``, ``running`` and ``credits_running`` (credits: whole
    credits). A row in one of ``IN_PROGRESS`` is neither done nor failed."""
    summary = ctx.stats.summary(outcomes)
    states: dict[str, int] = {}
    for obj in report:
        states[obj["state"]] = states.get(obj["state"], 0) + 1
    # A job on the server, not finished: a local run's ``running``, or a distributed
    # row being rendered or downloaded (or held by a dead worker) with its job id.
    running = [o for o in report if o["state"] == "running" or (
        o["state"] in IN_PROGRESS and o["job_id"])]
    paid = [o for o in report if o["state"] in ("complete", "timed_out", "skipped")]
    paid += running
    this_run = sum(o["credits"] or 0 for o in paid if o["spent_this_run"])
    earlier = sum(o["credits"] or 0 for o in paid if not o["spent_this_run"])
    not_fetched = [o for o in report if "fetch" in o]
    pending = sum(1 for o in report if o["state"] in IN_PROGRESS and not o["job_id"])
    # A job still running is neither done nor failed: it is counted under ``running``.
    done = sum(1 for o in outcomes if o.ok)
    failed = len(outcomes) - done - len(running) - pending
    summary.update(
        done=done, failed=failed,
        exit_code=0 if failed == 0 and not running else summary["exit_code"],
        not_downloaded=len(not_fetched),
        states=dict(sorted(states.items())),
        credits=this_run, credits_this_run=this_run, credits_earlier_runs=earlier,
        running=len(running), credits_running=sum(o["credits"] or 0 for o in running))
    if interrupted:
        summary["exit_code"] = ctx.interrupt_code
    return summary


def _add_reuse_assets(summary: dict[str, Any], assets: tuple[Outcome, ...]) -> None:
    """--reuse-assets: the characters (1 credit each) and scenes it made are paid too."""
    if assets:
        made = [o for o in assets if o.state == "complete"]
        spent = sum(o.credits or 0 for o in made)
        summary.update(credits=summary["credits"] + spent,
                       credits_this_run=summary["credits_this_run"] + spent,
                       reuse_assets={"created": len(made), "credits": spent,
                                     "reused": sum(o.state == "skipped" for o in assets),
                                     "failed": sum(not o.ok for o in assets)})


def _explain_interrupt(ctx: Ctx, report: list[dict[str, Any]]) -> None:
    """After Ctrl-C: what still runs (and costs), how to resume, how to cancel."""
    args = ctx.args
    ctx.explained_stop = True
    stop = ctx.stop_word
    running = [o for o in report if o["state"] == "running"]
    if not running:
        cancelled = sum(1 for o in report if o["state"] == "cancelled" and o["job_id"])
        note = (f"{plural(cancelled, 'job')} cancelled on the server (refunded); "
                if cancelled else "")
        ctx.out.error(f"{stop}: {note}no job is left running on the server")
        return
    credits = sum(o["credits"] or 0 for o in running)
    ids = " ".join(o["job_id"] for o in running)
    ctx.out.error(f"{stop}: {plural(len(running), 'job')} still running on the server "
                  f"(about {credits_text(credits)} committed); they finish and are charged "
                  "unless cancelled")
    if args.journal:
        ctx.out.error("  resume (waits for them, downloads, runs the rest): "
                      + shlex.join(["viggle-async", *ctx.argv]))
    else:
        ctx.out.error("  without --journal a rerun would submit them again; wait for each: "
                      + "; ".join(f"viggle-async wait {o['job_id']}"
                                  + (f" -o {shlex.quote(o['output'])}" if o["output"] else "")
                                  for o in running[:3])
                      + (" ..." if len(running) > 3 else ""))
    # One line a shell runs as pasted (``cancel`` takes one job id).
    cancel = (f"viggle-async cancel {ids}" if len(running) == 1 else
              f"for job in {ids}; do viggle-async cancel \"$job\"; done")
    ctx.out.error(f"  cancel {'it' if len(running) == 1 else 'them'} (refunded): {cancel}")


async def _open_journal(path: Path) -> SQLiteJournal:
    try:
        await anyio.Path(path.parent).mkdir(parents=True, exist_ok=True)
        return await SQLiteJournal.open(path)
    except (OSError, sqlite3.Error, JournalError) as exc:
        # Before any request: a journal that cannot be used means nothing ran.
        raise CliError(f"cannot use the journal {str(path)!r}: {exc}") from None


def _announce(ctx: Ctx, credits: Credits | None, plan: Plan, cost: dict[str, Priced]) -> None:
    """Say what this run will spend (only rows it submits), apart from earlier runs' work;
    ``credits``: the balance the preflight read (None when unavailable)."""
    submit = [*plan.new, *plan.resubmit]
    spend = sum(cost[k].credits or 0 for k in submit)
    unknown = sum(1 for k in submit if cost[k].credits is None)
    parts = [f"this run submits {plural(len(submit), 'row')}, about "
             f"{credits_text(spend)}" + (f" plus {plural(unknown, 'row')} of unknown cost"
                                         if unknown else "")]
    if plan.resubmit:
        parts.append(f"{len(plan.resubmit)} of them ended cancelled/failed earlier and are "
                     "submitted again (--resubmit-ended)")
    if plan.finished or plan.resumed:
        parts.append(f"{len(plan.finished)} finished and {len(plan.resumed)} running from "
                     "earlier runs cost nothing more")
    if plan.ended:
        parts.append(f"{plural(len(plan.ended), 'row')} ended cancelled/failed earlier and "
                     "will not run (pass --resubmit-ended cancelled,failed to submit again)")
    if plan.ambiguous:
        parts.append(f"{plural(len(plan.ambiguous), 'row')} may already exist from an earlier "
                     "run and will not be resent (see --resubmit-ambiguous)")
    if credits is not None:
        parts.insert(0, f"balance {credits_text(credits.balance)}")
        if spend > credits.balance:
            parts.append("that is more than the balance: later renders will be refused "
                         "(402)")
    ctx.out.note("; ".join(parts))
    ctx.out.json({"event": "plan", "submit": len(submit), "credits": spend,
                  "unknown_cost": unknown, "resubmit": list(plan.resubmit),
                  "finished_earlier": len(plan.finished), "running_earlier": len(plan.resumed),
                  "ended_earlier": list(plan.ended), "ambiguous": list(plan.ambiguous),
                  "balance": credits.balance if credits is not None else None})


async def _schedule(sup: Supervisor, rows: tuple[Row, ...], handles: dict[str, Handle],
                    settled: dict[str, Outcome]) -> None:
    """Assets first, so renders can name their handles; renders whose character_mapping
    names character rows wait for those ids before they are scheduled."""
    for row in rows:
        if row.kind == "character":
            handles[row.key] = sup.character(key=row.key, **row.inputs)
        elif row.kind == "scene":
            handles[row.key] = sup.scene(key=row.key, **row.inputs)
    later = []
    for row in rows:
        if row.kind != "render":
            continue
        if row.mapping_refs:
            later.append(row)
        else:
            handles[row.key] = _render(sup, row, handles, row.inputs)
    for row in later:
        ids: dict[str, str] = {}
        for key in row.mapping_refs.values():
            dep = await handles[key]
            if not dep.ok or dep.asset_id is None:
                settled[row.key] = Outcome(row.key, "render", "failed",
                                           error=f"character {key!r} failed: {dep.error}")
                break
            ids[key] = dep.asset_id
        else:
            handles[row.key] = _render(sup, row, handles, _with_mapping(row, ids))


def _render(sup: Supervisor, row: Row, handles: dict[str, Handle],
            inputs: Any) -> Handle:
    character = handles.get(row.character or "")
    scene = handles.get(row.scene or "")
    # The manifest checked the kinds; these asserts only narrow the types.
    assert character is None or isinstance(character, CharacterHandle)
    assert scene is None or isinstance(scene, SceneHandle)
    return sup.render(key=row.key, character=character, scene=scene, output=row.output,
                      mask_output=row.mask_output, estimated_seconds=row.estimated_seconds,
                      **inputs)


def _outcome_of(row: Row, handles: dict[str, Handle], settled: dict[str, Outcome]) -> Outcome:
    if row.key in settled:
        return settled[row.key]
    handle = handles.get(row.key)
    if handle is not None and handle.done:
        return handle.outcome
    return Outcome(row.key, row.kind, "not_submitted" if handle is None else "cancelled",
                   error="the run stopped before this row finished")


def _write_json(path: Path, data: Any) -> None:
    """Write ``--report``; a ``CliError`` naming the option if it cannot be (checked before
    the run too, but a folder can vanish while it runs)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_json(data, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise CliError(f"--report: cannot write {str(path)!r} "
                       f"({exc.strerror or type(exc).__name__}). Fix: {_REPORT_FIX}") from None


_REPORT_FIX = "pass --report a file in a folder you can write to, e.g. report.json"
_JOURNAL_FIX = ("pass --journal a file in a folder you can write to, e.g. "
                "runs/shots.journal")


def _local_paths_problem(args: argparse.Namespace) -> str | None:
    """Why ``--report`` or a local ``--journal`` cannot be written, before anything is sent:
    found after the run, a paid run would end in an error and lose its report."""
    for flag, value, fix in (("--report", args.report, _REPORT_FIX),
                             ("--journal", args.journal, _JOURNAL_FIX)):
        problem = option_path_problem(flag, Path(value), fix) if value else None
        if problem is not None:
            return problem
    return None


COMMAND = Command("bulk", "render a CSV/JSONL manifest of renders, characters and scenes",
                  configure, run, description=DESCRIPTION)
