"""Figures, the run context, and the two outputs: ``results.json`` and ``results.md``."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Context", "Figure", "Outcome", "write_outputs"]


@dataclass
class Context:
    """What every benchmark gets: the mode, how many runs, a scratch folder, profiling."""

    quick: bool
    runs: int
    tmpdir: Path
    profile_dir: Path | None = None
    #: FakeSettings or Faults fields from ``--fake KEY=JSON`` (B3's fake server).
    fake: dict[str, Any] = field(default_factory=dict)

    def profile_path(self, name: str) -> str | None:
        if self.profile_dir is None:
            return None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        return str(self.profile_dir / f"{name}.txt")


@dataclass
class Figure:
    """One reported number: the library's median, a baseline's median and their ratio."""

    bench: str
    name: str
    unit: str
    value: float
    baseline: str | None = None
    baseline_value: float | None = None
    target: str | None = None
    met: bool | None = None
    note: str = ""
    #: Shown instead of met/missed, e.g. "not available" when the library lacks a feature.
    status: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline_value is None or self.baseline_value == 0:
            return None
        return self.value / self.baseline_value

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["ratio"] = self.ratio
        return {k: _finite(v) for k, v in data.items()}


@dataclass
class Outcome:
    """A benchmark's figures plus everything measured (per run, per variant)."""

    title: str
    figures: list[Figure]
    details: dict[str, Any] = field(default_factory=dict)


def _finite(value: Any) -> Any:
    """``value`` with every NaN/inf replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _met(fig: Figure) -> str:
    if fig.status:
        return fig.status
    return {True: "met", False: "**MISSED**", None: ""}[fig.met]


def _saturated(load: float, meta: dict[str, Any]) -> str:
    cores = meta.get("cores") or 1
    return (f" (**machine saturated**: load above its {cores} cores; figures are noisy)"
            if load > cores else "")


def _load_line(meta: dict[str, Any]) -> str:
    start = meta.get("loadavg_at_start")
    if not start:
        return ""
    end = meta.get("loadavg_at_end") or start
    return (f"Load average (1/5/15 min) at the start: {'/'.join(f'{x:.2f}' for x in start)}, "
            f"at the end: {'/'.join(f'{x:.2f}' for x in end)}"
            f"{_saturated(max(start[0], end[0]), meta)}.")


def _measured_in_lines(meta: dict[str, Any]) -> list[str]:
    """For a merged file: which run measured which benchmarks, when several did."""
    runs: dict[tuple[str, str], list[str]] = {}
    for key, run in (meta.get("measured_in") or {}).items():
        load = run.get("loadavg_at_start") or [float("nan")]
        runs.setdefault((run.get("date") or "?", f"{load[0]:.2f}"), []).append(key)
    if len(runs) < 2:
        return []
    return ["Measured in separate runs (`--merge`): " + "; ".join(
        f"{', '.join(keys)} on {date} (load {load} at the start)"
        for (date, load), keys in sorted(runs.items())) + ".", ""]


def markdown(meta: dict[str, Any], outcomes: dict[str, Outcome]) -> str:
    lines = [
        f"# Benchmark results ({meta['mode']} mode)",
        "",
        f"Python {meta['python']}, aiohttp {meta['aiohttp']}, {meta['cores']} cores, "
        f"{meta['platform']}; {meta['date']}; each figure is the median of {meta['runs']} runs. "
        "Ratio = viggle-async / baseline. Produced by `python -m benchmarks"
        f"{' --quick' if meta['mode'] == 'quick' else ''}`; see benchmarks/README.md.",
        "",
        _load_line(meta),
        "",
        *_measured_in_lines(meta),
        "| | figure | viggle-async | baseline | baseline value | ratio | target | |",
        "|---|---|---:|---|---:|---:|---|---|",
    ]
    for outcome in outcomes.values():
        for fig in outcome.figures:
            lines.append(
                f"| {fig.bench} | {fig.name} ({fig.unit}) | {_num(fig.value)} | "
                f"{fig.baseline or ''} | {_num(fig.baseline_value)} | {_num(fig.ratio)} | "
                f"{fig.target or ''} | {_met(fig)} |")
    notes = [fig for o in outcomes.values() for fig in o.figures if fig.note]
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"- {fig.bench} {fig.name}"
                  f"{f' vs {fig.baseline}' if fig.baseline else ''}: {fig.note}"
                  for fig in notes]
    loads = {key: o.details["loadavg"] for key, o in outcomes.items() if "loadavg" in o.details}
    if loads:
        lines += ["", "Load average (1 min) at the start and end of each benchmark:", ""]
        lines += [f"- {key}: {load['start'][0]:.2f} -> {load['end'][0]:.2f}"
                  f"{_saturated(max(load['start'][0], load['end'][0]), meta)}"
                  for key, load in loads.items()]
    sizes = {key: o.details.get("config", {}) for key, o in outcomes.items()}
    lines += ["", "Sizes and settings:", ""]
    lines += [f"- {key} ({outcomes[key].title}): {json.dumps(cfg)}" for key, cfg in sizes.items()]
    return "\n".join(lines) + "\n"


def load_outputs(prefix: Path) -> tuple[dict[str, Any], dict[str, Outcome], dict[str, str]]:
    """Read back what ``write_outputs`` wrote to ``PREFIX.json``: meta, outcomes, errors."""
    data = json.loads(prefix.with_suffix(".json").read_text())
    names = {f.name for f in dataclasses.fields(Figure)}
    outcomes = {
        key: Outcome(o["title"], [Figure(**{k: v for k, v in f.items() if k in names})
                                  for f in o["figures"]], o.get("details", {}))
        for key, o in data.get("benchmarks", {}).items()}
    return data.get("meta", {}), outcomes, data.get("errors", {})


def write_outputs(prefix: Path, meta: dict[str, Any], outcomes: dict[str, Outcome],
                  errors: dict[str, str]) -> tuple[Path, Path]:
    """Write ``PREFIX.json`` and ``PREFIX.md``; returns both paths."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "meta": meta,
        "errors": errors,
        "benchmarks": {
            key: {"title": o.title, "figures": [f.as_json() for f in o.figures],
                  "details": o.details}
            for key, o in outcomes.items()
        },
    }
    json_path = prefix.with_suffix(".json")
    md_path = prefix.with_suffix(".md")
    json_path.write_text(json.dumps(_finite(data), indent=1) + "\n")
    text = markdown(meta, outcomes)
    if errors:
        text += "\nErrors:\n\n" + "".join(f"- {k}: {v.splitlines()[0]}\n" for k, v in
                                          errors.items())
    md_path.write_text(text)
    return json_path, md_path
