"""``python -m benchmarks [--quick] [--only B1,B3] [--merge] [--runs N] [--out PREFIX]
[--profile] [--fake KEY=JSON ...]``.

Runs the benchmarks (see benchmarks/README.md), prints the Markdown table and writes
``PREFIX.json`` and ``PREFIX.md`` (default: ``benchmarks/results`` for a full run, a
temporary folder for ``--quick``). Exits non-zero only when a benchmark could not run;
a missed target is reported, not fatal (``--strict`` makes it fatal). Without ``--merge``
the outputs hold only the benchmarks run; with it, those replace their own results in an
existing ``PREFIX.json`` and the others' are kept, each with the date and load of the run
that measured it (not with ``--quick``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._common import ROOT
from ._report import Context, Outcome, load_outputs, markdown, write_outputs

BENCHMARKS = {
    "B1": "b1_upload",
    "B2": "b2_download",
    "B3": "b3_scale",
    "B4": "b4_storm",
    "B5": "b5_core",
    "B6": "b6_reuse",
    "B7": "b7_workers",
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, under a minute: the CI smoke run")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help="comma-separated subset, e.g. B1,B3")
    parser.add_argument("--merge", action="store_true",
                        help="update PREFIX.json: replace the results of the benchmarks run "
                             "now, keep the others' (each with its own date and load); not "
                             "with --quick")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (>= 3)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output prefix (PREFIX.json, PREFIX.md)")
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile the first library run of each benchmark "
                             "(written next to the outputs, in profiles/)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a target is missed (never in --quick mode)")
    parser.add_argument("--fake", action="append", default=[], metavar="KEY=JSON",
                        help="a FakeSettings or Faults field for B3's fake server, e.g. a "
                             "realistic render-progress knob (repeatable; the value is JSON)")
    args = parser.parse_args(argv)
    args.fake = _fake_settings(parser, args.fake)
    args.only = [b.strip().upper() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(args.only) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}")
    if args.merge and args.quick:
        parser.error("--merge keeps full-run results: it cannot be used with --quick")
    if args.runs < 3:
        parser.error("--runs must be at least 3 (every figure is a median of >= 3 runs)")
    return args


def _fake_settings(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, Any]:
    """``KEY=JSON`` items as a dict, each key a ``FakeSettings`` or ``Faults`` field."""
    import json

    import attrs

    from viggle_async.testing import FakeSettings, Faults

    fields = {**attrs.fields_dict(FakeSettings), **attrs.fields_dict(Faults)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            parser.error(f"--fake {item!r}: expected KEY=JSON with KEY one of "
                         f"{sorted(k for k in fields if not k.startswith('_'))}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            parser.error(f"--fake {item!r}: the value must be JSON, e.g. {key}=0.3")
    return out


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    return {
        "mode": "quick" if args.quick else "full",
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "cores": os.cpu_count(),
        "platform": f"{platform.system()} {platform.machine()}",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "runs": args.runs,
        "benchmarks": args.only,
        # Other work on the machine skews timings: the load when the run started.
        "loadavg_at_start": list(os.getloadavg()),
        "fake_overrides": args.fake,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started = time.perf_counter()
    meta = _meta(args)
    if args.out is None:
        out_dir = (Path(tempfile.gettempdir()) / "viggle-benchmarks-quick" if args.quick
                   else ROOT / "benchmarks")
        args.out = out_dir / "results"
    outcomes: dict[str, Outcome] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="viggle-bench-") as tmp:
        ctx = Context(quick=args.quick, runs=args.runs, tmpdir=Path(tmp), fake=args.fake,
                      profile_dir=args.out.parent / "profiles" if args.profile else None)
        for key in args.only:
            module = importlib.import_module(f"benchmarks.{BENCHMARKS[key]}")
            run: Callable[[Context], Outcome] = module.run
            t0 = time.perf_counter()
            load0 = list(os.getloadavg())
            print(f"== {key} ({BENCHMARKS[key]}) ...", file=sys.stderr, flush=True)
            try:
                outcomes[key] = run(ctx)
            except Exception as exc:
                errors[key] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            else:
                outcomes[key].details["elapsed_s"] = round(time.perf_counter() - t0, 1)
                # Other work on the machine skews every figure: keep the load beside them.
                outcomes[key].details["loadavg"] = {"start": load0,
                                                    "end": list(os.getloadavg())}
            print(f"   {key} took {time.perf_counter() - t0:.1f} s", file=sys.stderr,
                  flush=True)
    meta["loadavg_at_end"] = list(os.getloadavg())
    meta["elapsed_s"] = round(time.perf_counter() - started, 1)
    if args.merge:
        meta, outcomes, errors = _merged(args.out, meta, outcomes, errors)
    json_path, md_path = write_outputs(args.out, meta, outcomes, errors)
    print(markdown(meta, outcomes))
    print(f"wrote {json_path} and {md_path} in {meta['elapsed_s']} s", file=sys.stderr)
    if errors:
        print(f"errors in {sorted(errors)}", file=sys.stderr)
        return 2
    missed = [f"{k} {f.name}" for k, o in outcomes.items() for f in o.figures if f.met is False]
    if missed and args.strict and not args.quick:
        print(f"missed targets: {missed}", file=sys.stderr)
        return 1
    return 0


def _merged(prefix: Path, meta: dict[str, Any], outcomes: dict[str, Outcome],
            errors: dict[str, str]) -> tuple[dict[str, Any], dict[str, Outcome], dict[str, str]]:
    """This run's outcomes laid over those in ``PREFIX.json`` (kept in benchmark order).

    A benchmark that failed now keeps its earlier figures and its error is reported. The
    meta records, per benchmark, the run that measured it (``measured_in``).
    """
    if not prefix.with_suffix(".json").exists():
        return meta, outcomes, errors
    old_meta, old_outcomes, old_errors = load_outputs(prefix)
    this_run = {k: meta[k] for k in ("date", "loadavg_at_start", "loadavg_at_end", "mode")}
    measured_in = dict(old_meta.get("measured_in") or {
        key: {k: old_meta.get(k) for k in this_run} for key in old_outcomes})
    kept = {key: o for key, o in old_outcomes.items() if key not in outcomes}
    for key in outcomes:
        measured_in[key] = this_run
    merged = {key: (outcomes.get(key) or kept[key]) for key in BENCHMARKS
              if key in outcomes or key in kept}
    new_errors = {k: v for k, v in old_errors.items() if k not in merged}
    new_errors.update(errors)
    meta = {**meta, "benchmarks": list(merged),
            "measured_in": {k: measured_in[k] for k in merged if k in measured_in}}
    return meta, merged, new_errors


if __name__ == "__main__":
    sys.exit(main())
