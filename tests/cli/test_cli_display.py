"""The live display: one bar per job that only moves forward through its phases, phase
labels, and an overall bar with counts, elapsed time, ETA and credits."""

from __future__ import annotations

import io
from pathlib import Path

from viggle_async import (
    Completed,
    Downloaded,
    Downloading,
    Outcome,
    Progress,
    Queued,
    RetryEvent,
    Submitted,
    Uploading,
)
from viggle_async.cli._progress import EventView, Output, RunStats


def _view(**kw: object) -> tuple[EventView, io.StringIO]:
    err = io.StringIO()
    out = Output("human", stdout=io.StringIO(), stderr=err)
    return EventView(out, RunStats(), title="3 rows", **kw), err  # type: ignore[arg-type]


def _bar(view: EventView, key: str) -> tuple[float, str]:
    (row,) = [(pct, note) for label, pct, note in view.snapshot() if label == key]
    return row


def test_a_job_bar_moves_forward_through_upload_render_and_download() -> None:
    view, _ = _view()
    view.expect_costs({"a": 4, "b": 2, "c": None})
    for key in "abc":
        view.handle(Queued(key, "render"))
    seen = []
    for event in (Uploading("a", 500, 1000), Uploading("a", 1000, 1000),
                  Submitted("a", "job_a", 1, False),
                  Progress("a", "job_a", "queued", None),
                  Progress("a", "job_a", "processing", 0.0),
                  Progress("a", "job_a", "processing", 60.0),
                  Progress("a", "job_a", "complete", 100.0),
                  Downloading("a", Path("a.mp4"), 0, 2048),
                  Downloading("a", Path("a.mp4"), 1024, 2048),
                  Downloaded("a", Path("a.mp4"), 2048)):
        view.handle(event)
        seen.append(_bar(view, "a"))
    percents = [pct for pct, _ in seen]
    assert percents == sorted(percents) and percents[-1] == 100.0
    notes = [note for _, note in seen]
    assert notes[0] == "uploading 50%"
    assert notes[3] == "queued on the server"  # not "0% queued"
    assert notes[5] == "rendering 60%"
    assert notes[8] == "downloading 50%"


def test_the_overall_bar_counts_done_of_total_with_elapsed_eta_and_credits() -> None:
    view, _ = _view()
    view.expect_costs({"a": 4, "b": 2, "c": None})
    for key in "abc":
        view.handle(Queued(key, "render"))
    view.handle(Submitted("a", "job_a", 1, False))
    view.handle(Submitted("b", "job_b", 1, False))
    view.handle(Completed("a", Outcome("a", "render", "complete", job_id="job_a")))
    label, _, note = view.snapshot()[0]
    assert label == "3 rows"
    assert note.startswith("1/3 done; 0:0") and "elapsed; ETA 0:" in note
    assert note.endswith("; 6 credits committed")


def test_a_single_job_shows_one_bar() -> None:
    view, _ = _view(single=True)
    view.handle(Queued("clip", "render"))
    view.handle(Submitted("clip", "job_1", 1, False))
    assert [label for label, _, _ in view.snapshot()] == ["clip"]
    view.handle(Completed("clip", Outcome("clip", "render", "complete", job_id="job_1")))
    assert view.snapshot() == []  # the overall bar stays hidden to the end


def test_retry_delays_are_words_not_zeroes() -> None:
    view, err = _view()
    cause = ConnectionError("refused")
    view.on_retry(RetryEvent("GET", "/api/credits", 1, 0.0, cause))
    view.on_retry(RetryEvent("GET", "/api/credits", 2, 0.35, cause))
    text = err.getvalue()
    assert "retrying GET /api/credits now (retry 1" in text
    assert "retrying GET /api/credits in 350 ms (retry 2" in text
    assert "0.00 s" not in text
