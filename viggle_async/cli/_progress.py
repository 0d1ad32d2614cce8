"""What the command line shows: a rich live display (human), JSON lines (``--json``) or
nothing but errors (``--quiet``).

Everything printed goes through ``Output``, which removes the API key from any text as a
last line of defence (the library never puts it in a message; see ``_errors``).
Results go to stdout; progress, notes and errors to stderr, so stdout stays parseable.
"""

from __future__ import annotations

import contextlib
import enum
import json
import shlex
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TextIO

import anyio
import attrs
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from .._client import RetryEvent
from .._events import (
    Backoff,
    Completed,
    Downloaded,
    Downloading,
    Event,
    Failed,
    FastFallback,
    Outcome,
    Queued,
    Submitted,
    Uploading,
)
from .._events import (
    Progress as ProgressEvent,
)
from .._models import RenderStatus
from .._supervisor import Supervisor

__all__ = ["EventView", "Mode", "Output", "RunStats", "credits_text", "number", "plural",
           "to_json"]

Mode = Literal["human", "json", "quiet"]
# More job lines than this would scroll the live display off a terminal.
MAX_JOB_LINES = 12
_CAUSES = {"capacity": "no fast capacity", "rate_limit": "rate limited (429)",
           "connect": "could not connect"}


def _default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if attrs.has(type(value)):
        return attrs.asdict(value, recurse=False)
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    return str(value)


def to_json(value: Any, *, indent: int | None = None) -> str:
    """JSON (one line unless ``indent``): attrs classes as objects, Paths as strings,
    datetimes ISO 8601."""
    return json.dumps(value, default=_default, ensure_ascii=False, indent=indent)


# One job's bar: upload, then the render on the server, then the download, each a span of
# the same 0-100 bar, so it only moves forward (a phase label says which).
_SPANS = {"upload": (0.0, 10.0), "render": (10.0, 95.0), "download": (95.0, 100.0)}
_STATUS = {"queued": "queued on the server", "processing": "rendering"}


def _span(phase: str, pct: float | None) -> float | None:
    if pct is None:
        return None
    low, high = _SPANS[phase]
    return low + (high - low) * min(max(pct, 0.0), 100.0) / 100.0


def _phase(label: str, pct: float | None) -> str:
    return label if pct is None or label.startswith("queued") else f"{label} {pct:.0f}%"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _secs(seconds: float) -> str:
    """``in 350 ms``, ``in 2.5 s``, ``now`` (never ``0.00 s``)."""
    if seconds < 0.0005:
        return "now"
    return f"in {seconds * 1000:.0f} ms" if seconds < 1 else f"in {seconds:.1f} s"


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower()
                   for i, c in enumerate(name))


def event_json(event: Event | RetryEvent) -> dict[str, Any]:
    """``{"event": "fast_fallback", "key": ..., ...}``; a client retry is ``"retry"``."""
    if isinstance(event, RetryEvent):
        return {"event": "retry", "method": event.method, "path": event.path,
                "attempt": event.attempt, "delay": round(event.delay, 3),
                "cause": f"{type(event.cause).__name__}: {event.cause}"}
    return {"event": _snake(type(event).__name__), **attrs.asdict(event, recurse=False)}


class Output:
    """The CLI's only way to print."""

    def __init__(self, mode: Mode, *, stdout: TextIO, stderr: TextIO,
                 secrets: Sequence[str | None] = ()):
        self.mode = mode
        self._stdout = stdout
        self._secrets = [s for s in secrets if s and len(s) >= 4]
        self.console = Console(file=stderr, highlight=False, soft_wrap=True, emoji=False)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _write(self, text: str) -> None:
        self._stdout.write(self.redact(text) + "\n")
        self._stdout.flush()

    def result(self, text: str) -> None:
        """A human result line on stdout (not with --json or --quiet)."""
        if self.mode == "human":
            self._write(text)

    def json(self, obj: Any) -> None:
        """One JSON line on stdout (only with --json)."""
        if self.mode == "json":
            self._write(to_json(obj))

    def emit(self, obj: Any, text: str) -> None:
        """A result: ``obj`` as JSON with --json, else ``text`` (nothing with --quiet)."""
        if self.mode == "json":
            self.json(obj)
        else:
            self.result(text)

    def note(self, text: str) -> None:
        """Progress information on stderr (human mode only)."""
        if self.mode == "human":
            self.console.print(self.redact(text), markup=False)

    def error(self, text: str) -> None:
        """An error line on stderr, in every mode."""
        self.console.print(self.redact(text), markup=False, style="red")


@attrs.define
class RunStats:
    """What a run did, for the summary."""

    retries: int = 0  # client retries and supervisor backoffs
    started: float = attrs.field(factory=time.monotonic)

    def summary(self, outcomes: Iterable[Outcome], *, extra: dict[str, Any] | None = None
                ) -> dict[str, Any]:
        outcomes = list(outcomes)
        states = Counter(o.state for o in outcomes)
        failed = sum(1 for o in outcomes if not o.ok)
        return {
            "event": "summary",
            "total": len(outcomes),
            "done": len(outcomes) - failed,
            "failed": failed,
            "states": dict(sorted(states.items())),
            "credits": sum(o.credits or 0 for o in outcomes if o.state == "complete"),
            "retries": self.retries,
            "fallbacks": sum(1 for o in outcomes if o.fallback_used),
            "elapsed_s": round(time.monotonic() - self.started, 3),
            "exit_code": 0 if failed == 0 else 1,
            **(extra or {}),
        }


def summary_text(s: dict[str, Any]) -> str:
    states = ", ".join(f"{n} {state}" for state, n in s["states"].items()) or "nothing to do"
    if s.get("not_downloaded"):
        states += f" ({s['not_downloaded']} complete but NOT downloaded)"
    money = f"this run spent {credits_text(s['credits'])}"
    if s.get("credits_earlier_runs"):
        money += f" (earlier runs: {credits_text(s['credits_earlier_runs'])})"
    retries = s["retries"]
    return (f"{plural(s['total'], 'row')}: {states}; {money}; "
            f"{plural(retries, 'retry', 'retries')}; "
            f"{plural(s['fallbacks'], 'fast fallback')}; {s['elapsed_s']:.1f} s")


def number(n: float) -> str:
    """A count or a balance for people: ``99,995,200``, ``12.5``; never ``9.99e+07``."""
    if float(n).is_integer():
        return f"{int(n):,}"
    return f"{n:,.2f}".rstrip("0").rstrip(".")


def plural(n: float, word: str, many: str | None = None) -> str:
    """``1 credit``, ``2 credits``, ``12,000 credits``."""
    return f"{number(n)} {word if n == 1 else many or word + 's'}"


def credits_text(n: float) -> str:
    return plural(n, "credit")


def outcome_text(o: Outcome, dest: str | Path | None = None) -> str:
    """One line for an outcome; a complete render not downloaded says so, and how to fetch
    it (to ``dest``, its output path, when known)."""
    if o.download_error is not None and o.job_id:
        fetch = shlex.join(["viggle-async", "download", o.job_id, str(dest or "PATH")])
        return (f"{o.key}: complete but NOT downloaded (job {o.job_id}, paid for): "
                f"{o.download_error}; fetch it: {fetch}, or rerun "
                "with the same --journal")
    text = f"{o.key}: {o.state}"
    if o.job_id:
        text += f" (job {o.job_id})"
    elif o.asset_id:
        text += f" ({o.kind} {o.asset_id})"
    if o.outputs:
        text += " -> " + ", ".join(str(p) for p in o.outputs)
    if o.error:
        text += f": {o.error}"
    if o.error_code and o.error_code not in (o.error or ""):
        text += f" [{o.error_code}]"
    return text


class EventView:
    """Shows supervisor events: an overall bar plus one line per active job (human), one
    JSON object per event (--json), or nothing (--quiet). Use ``with view:``."""

    def __init__(self, out: Output, stats: RunStats, *, title: str = "work",
                 log_outcomes: bool = True, single: bool = False):
        self.out = out
        self._log_outcomes = log_outcomes
        #: False while a command checks the API before it starts: a failure there is one
        #: line (the error), not a retry log first.
        self.show_retries = True
        self.stats = stats
        human = out.mode == "human"
        self._progress = Progress(
            # The notes carry the numbers (a job's phase and its percent; the run's
            # done/total, elapsed, ETA and credits): the bar's own percent would mix phases.
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[note]}"),
            console=out.console, transient=True,
            # Not a terminal (CI, a pipe): the event log lines below say everything.
            disable=not (human and out.console.is_terminal))
        # One job (render, wait, download): its own bar says it all, no overall bar.
        self._overall = self._progress.add_task(title, total=0, note="", visible=not single)
        self._jobs: dict[str, TaskID] = {}
        self._costs: dict[str, int | None] = {}
        #: key -> the path its output goes to, for the command that fetches it later.
        self.outputs: dict[str, Path] = {}
        self._credits = 0  # committed by jobs submitted in this run (estimated)
        self._done = 0
        self._queued = 0
        #: What the events showed, by key: the submission, and the final outcome.
        self.submitted: dict[str, Submitted] = {}
        self.finished: dict[str, Outcome] = {}
        self._last_status: dict[str, str] = {}

    def __enter__(self) -> EventView:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()

    async def consume(self, events: AsyncIterator[Event]) -> None:
        """Show every event of a supervisor's ``events()`` stream until it closes."""
        async for event in events:
            self.handle(event)

    @contextlib.asynccontextmanager
    async def supervising(self, sup: Supervisor) -> AsyncIterator[Supervisor]:
        """``async with view.supervising(sup):`` runs ``sup`` and shows its events, including
        those it sends while stopping on Ctrl-C (remote cancels), which the report needs.
        The supervisor closes its event stream however its block ends, so the consumer
        ends after the last event."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._consume_shielded, sup.events())
            async with sup:
                yield sup

    async def _consume_shielded(self, events: AsyncIterator[Event]) -> None:
        # Shielded, so a cancelled run still shows what the supervisor does while it stops.
        with anyio.CancelScope(shield=True):
            async for event in events:
                self.handle(event)

    def on_retry(self, event: RetryEvent) -> None:
        """For ``ViggleClient(on_retry=...)``: client retries are shown as they happen."""
        self.stats.retries += 1
        if not self.show_retries:
            return
        self.out.json(event_json(event))
        self._log(f"retrying {event.method} {event.path} {_secs(event.delay)} "
                  f"(retry {event.attempt}, {type(event.cause).__name__}: {event.cause})")

    def handle(self, event: Event) -> None:
        self.out.json(event_json(event))
        if isinstance(event, Queued):
            self._queued += 1
            self._progress.update(self._overall, total=self._queued)
            self._overall_note()
        elif isinstance(event, Uploading):
            pct = 100 * event.sent / event.total if event.total else None
            self._job(event.key, _phase("uploading", pct), _span("upload", pct))
        elif isinstance(event, Submitted):
            self.submitted[event.key] = event
            cost = self._costs.get(event.key)
            if cost is not None:
                self._credits += cost
            self._overall_note()
            self._job(event.key, "submitted", _span("render", 0))
            fast = " (fast)" if event.fast else ""
            tries = f" after {event.attempts} attempts" if event.attempts > 1 else ""
            self._log(f"{event.key}: submitted as job {event.job_id}{fast}{tries}")
        elif isinstance(event, ProgressEvent):
            status = _STATUS.get(event.status, event.status)
            self._job(event.key, _phase(status, event.progress_pct),
                      _span("render", event.progress_pct))
        elif isinstance(event, Backoff):
            self.stats.retries += 1
            cause = _CAUSES.get(event.cause, event.cause)
            self._job(event.key, f"waiting ({cause}), retrying {_secs(event.delay)}", None)
            self._log(f"{event.key}: {cause}; retrying {_secs(event.delay)}")
        elif isinstance(event, FastFallback):
            self._log(f"{event.key}: fast mode unavailable after {event.attempts} tries; "
                      "submitting in standard mode")
        elif isinstance(event, Downloading):
            self.download_progress(event.key, event.received, event.total)
        elif isinstance(event, Downloaded):
            self._job(event.key, f"downloaded {event.bytes:,} bytes", _span("download", 100))
        elif isinstance(event, (Completed, Failed)):
            self.finished[event.key] = event.outcome
            if event.outcome.kind != "render" and event.outcome.state == "complete":
                # A character (1 credit) or scene has no Submitted event: it is committed
                # once made, so the bar's total matches the plan's.
                self._credits += self._costs.get(event.key) or 0
                self._overall_note()
            self._finish(event.key)
            line = outcome_text(event.outcome, self.outputs.get(event.key))
            if not self._log_outcomes:
                pass
            elif isinstance(event, Failed):
                if self.out.mode == "quiet":
                    self.out.error(line)
                else:
                    self._log(line, error=True)
            else:
                self._log(line)

    def handle_status(self, status: RenderStatus) -> None:
        """For ``renders.wait(on_progress=...)``: one job's statuses, shown like events."""
        key = status.job_id
        if self._last_status.get(key) != status.status:
            self._last_status[key] = status.status
            self._log(f"{key}: {status.status}")
        self.handle(ProgressEvent(key, status.job_id, status.status, status.progress_pct,
                                  status.checkpoint))

    def download_progress(self, key: str, done: int, total: int | None) -> None:
        """For ``client.download(on_progress=...)``."""
        pct = 100 * done / total if total else None
        self._job(key, _phase("downloading", pct), _span("download", pct))

    def snapshot(self) -> list[tuple[str, float, str]]:
        """What the live display shows now, one ``(label, percent, note)`` per visible
        bar (the overall bar first); the same whether or not a terminal shows it."""
        return [(t.description.strip(), t.percentage, str(t.fields.get("note", "")))
                for t in self._progress.tasks if t.visible]

    def expect_costs(self, costs: dict[str, int | None]) -> None:
        """Credits each key commits when it is submitted in this run (None: unknown), for
        the overall bar's running total."""
        self._costs = dict(costs)

    def _overall_note(self) -> None:
        total = self._queued
        elapsed = time.monotonic() - self.stats.started
        note = f"{self._done}/{total} done; {_clock(elapsed)} elapsed"
        if 0 < self._done < total:
            note += f"; ETA {_clock(elapsed * (total - self._done) / self._done)}"
        if self._costs:
            note += f"; {credits_text(self._credits)} committed"
        self._progress.update(self._overall, note=note)

    def _log(self, text: str, *, error: bool = False) -> None:
        if self.out.mode != "human":
            return
        self._progress.console.print(self.out.redact(text), markup=False,
                                     style="red" if error else None)

    def _job(self, key: str, note: str, pct: float | None) -> None:
        """One bar per job across its phases (``_span``): it never goes back."""
        task = self._jobs.get(key)
        if task is None:
            visible = sum(1 for t in self._progress.tasks if t.visible) <= MAX_JOB_LINES
            task = self._progress.add_task(f"  {key}", total=100, note="", visible=visible)
            self._jobs[key] = task
        if pct is None:
            self._progress.update(task, note=note)
        else:
            now = self._progress.tasks[self._progress.task_ids.index(task)].completed
            self._progress.update(task, note=note, completed=max(now, pct))

    def _finish(self, key: str) -> None:
        self._done += 1
        self._progress.advance(self._overall)
        self._overall_note()
        task = self._jobs.pop(key, None)
        if task is not None:
            self._progress.remove_task(task)
            hidden = [t for t in self._progress.tasks
                      if not t.visible and t.id != self._overall]
            if hidden:
                self._progress.update(hidden[0].id, visible=True)
