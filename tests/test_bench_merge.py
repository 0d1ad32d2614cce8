"""``python -m benchmarks --only B5 --merge``: a re-run of some benchmarks replaces theirs in
the committed results and keeps the others, each with the date and load that measured it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.__main__ import _merged, _parse
from benchmarks._report import Figure, Outcome, load_outputs, markdown, write_outputs


def _meta(date: str, load: float, only: list[str]) -> dict[str, object]:
    return {"mode": "full", "python": "3.11", "aiohttp": "3.13", "cores": 2,
            "platform": "Linux", "date": date, "runs": 3, "benchmarks": only,
            "loadavg_at_start": [load, load, load], "loadavg_at_end": [load, load, load],
            "fake_overrides": {}}


def _outcome(bench: str, value: float) -> Outcome:
    fig = Figure(bench, "status round trip", "µs CPU", value, "raw aiohttp", 100.0,
                 "ratio <= 1.10", value <= 110.0, note="a note")
    return Outcome(f"{bench} title", [fig], {"config": {"runs": 3}})


def test_a_merged_rerun_replaces_only_the_benchmarks_it_ran(tmp_path: Path) -> None:
    prefix = tmp_path / "results"
    write_outputs(prefix, _meta("2026-11-30 10:26 UTC", 0.9, ["B1", "B2", "B5"]),
                  {"B1": _outcome("B1", 95.0), "B2": _outcome("B2", 120.0),
                   "B5": _outcome("B5", 138.0)}, {})
    meta, outcomes, errors = _merged(prefix, _meta("2026-11-30 14:00 UTC", 0.4, ["B5", "B2"]),
                                     {"B5": _outcome("B5", 105.0),
                                      "B2": _outcome("B2", 99.0)}, {})
    write_outputs(prefix, meta, outcomes, errors)

    meta, outcomes, errors = load_outputs(prefix)
    assert list(outcomes) == ["B1", "B2", "B5"]  # benchmark order, not the run's
    assert [o.figures[0].value for o in outcomes.values()] == [95.0, 99.0, 105.0]
    assert outcomes["B5"].figures[0].met is True and outcomes["B1"].figures[0].note == "a note"
    assert meta["measured_in"]["B1"]["date"] == "2026-11-30 10:26 UTC"
    assert meta["measured_in"]["B5"]["date"] == "2026-11-30 14:00 UTC"
    text = prefix.with_suffix(".md").read_text()
    assert ("B1 on 2026-11-30 10:26 UTC (load 0.90 at the start); B2, B5 on "
            "2026-11-30 14:00 UTC (load 0.40 at the start)") in text
    # The ratio is recomputed from the kept values, not read back stale.
    assert json.loads(prefix.with_suffix(".json").read_text())[
        "benchmarks"]["B5"]["figures"][0]["ratio"] == pytest.approx(1.05)


def test_a_second_merge_keeps_each_benchmarks_own_run(tmp_path: Path) -> None:
    prefix = tmp_path / "results"
    write_outputs(prefix, _meta("day 1", 1.0, ["B1", "B5"]),
                  {"B1": _outcome("B1", 95.0), "B5": _outcome("B5", 138.0)}, {})
    for day, bench in (("day 2", "B5"), ("day 3", "B1")):
        meta, outcomes, errors = _merged(prefix, _meta(day, 0.5, [bench]),
                                         {bench: _outcome(bench, 100.0)}, {})
        write_outputs(prefix, meta, outcomes, errors)
    meta, _, _ = load_outputs(prefix)
    assert {k: v["date"] for k, v in meta["measured_in"].items()} == {"B1": "day 3",
                                                                      "B5": "day 2"}


def test_a_benchmark_that_failed_now_keeps_its_earlier_figures_and_reports_the_error(
        tmp_path: Path) -> None:
    prefix = tmp_path / "results"
    write_outputs(prefix, _meta("day 1", 1.0, ["B2"]), {"B2": _outcome("B2", 120.0)}, {})
    meta, outcomes, errors = _merged(prefix, _meta("day 2", 0.5, ["B2"]), {},
                                     {"B2": "RuntimeError: the CDN server did not start"})
    assert outcomes["B2"].figures[0].value == 120.0
    assert errors == {"B2": "RuntimeError: the CDN server did not start"}
    assert meta["measured_in"]["B2"]["date"] == "day 1"
    assert "| B2 | status round trip (µs CPU) | 120 |" in markdown(meta, outcomes)


def test_merge_is_refused_with_quick() -> None:
    with pytest.raises(SystemExit):
        _parse(["--quick", "--merge"])
