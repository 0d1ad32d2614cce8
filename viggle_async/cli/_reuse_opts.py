"""``bulk --reuse-assets``: the options, the rule they make, and the two plans side by side
(issue 15). The planning itself is the library's (``Supervisor.estimate_reuse``)."""

from __future__ import annotations

import argparse
from typing import Any

from .._reuse import PlanTotals, ReusePlan, ReuseRule
from ._common import CliError, plural, positive_int

__all__ = ["add_reuse_options", "plan_lines", "reuse_rule"]


def add_reuse_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reuse-assets", action="store_true",
                   help="upload each distinct file once: a driving video shared by "
                        "--reuse-min-renders rows (same model) becomes one scene, its "
                        "images characters (1 credit each), and those rows are sent as "
                        "character_id + scene_id; files are matched by content, never by "
                        "name; --dry-run shows both plans")
    p.add_argument("--reuse-min-renders", type=positive_int, default=2, metavar="N",
                   help="with --reuse-assets: rows that must share a video (default 2)")
    p.add_argument("--reuse-max-extra-credits", type=_credits_cap, metavar="N",
                   help="with --reuse-assets: add at most N credits (characters) over "
                        "rendering on demand")
    p.add_argument("--reuse-max-extra-percent", type=_credits_cap, metavar="P",
                   help="with --reuse-assets: add at most P percent credits over rendering "
                        "on demand")
    p.add_argument("--reuse-fallback", action="store_true",
                   help="with --reuse-assets: if a scene cannot be made, send its rows on "
                        "demand instead of failing them")


def _credits_cap(text: str) -> float:
    """A number >= 0: 0 allows only reuse that adds no credit."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number >= 0")
    return value


def reuse_rule(args: argparse.Namespace) -> ReuseRule | None:
    """The rule the options ask for, or None without ``--reuse-assets``; CliError when a
    ``--reuse-*`` option comes without it or breaks the rule."""
    extras = {"--reuse-max-extra-credits": args.reuse_max_extra_credits,
              "--reuse-max-extra-percent": args.reuse_max_extra_percent,
              "--reuse-fallback": args.reuse_fallback or None,
              "--reuse-min-renders": None if args.reuse_min_renders == 2
              else args.reuse_min_renders}
    if not args.reuse_assets:
        given = [name for name, value in extras.items() if value is not None]
        if given:
            raise CliError(f"{given[0]} works with --reuse-assets. Fix: add --reuse-assets "
                           f"or drop {given[0]}")
        return None
    try:
        return ReuseRule(min_renders=args.reuse_min_renders,
                         max_extra_credits=args.reuse_max_extra_credits,
                         max_extra_percent=args.reuse_max_extra_percent)
    except ValueError as exc:
        raise CliError(f"--reuse-min-renders: {exc}. Fix: pass 2 or more") from None


def _totals(t: PlanTotals) -> dict[str, Any]:
    return {"credits": t.credits, "upload_bytes": t.upload_bytes, "creates": t.creates,
            "renders": t.renders, "scenes": t.scenes, "characters": t.characters}


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _credits(c: float) -> str:
    return f"{c:g}"


def plan_lines(plan: ReusePlan) -> tuple[dict[str, Any], list[str]]:
    """The plan as one JSON event and a few human lines: both plans side by side."""
    obj = {"event": "reuse_plan", "on_demand": _totals(plan.on_demand),
           "reuse": _totals(plan.reuse), "extra_credits": plan.extra_credits,
           "saved_upload_bytes": plan.saved_upload_bytes, "reused_rows": len(plan.reused),
           "skipped_groups": len(plan.skipped)}
    od, ru = plan.on_demand, plan.reuse
    width = max(len(_mb(od.upload_bytes)), len(_mb(ru.upload_bytes)))
    lines = [
        f"asset reuse: {plural_rows(len(plan.reused))} of {od.renders} sent as character_id "
        f"+ scene_id; both plans:",
        f"  {'':<10} {'credits':>9}  {'upload':>{width}}  creates",
        f"  {'on demand':<10} {_credits(od.credits):>9}  {_mb(od.upload_bytes):>{width}}  "
        f"{od.creates} ({plural(od.renders, 'render')})",
        f"  {'reuse':<10} {_credits(ru.credits):>9}  {_mb(ru.upload_bytes):>{width}}  "
        f"{ru.creates} ({plural(ru.renders, 'render')}, {plural(ru.scenes, 'scene')}, "
        f"{plural(ru.characters, 'character')})",
        f"  reuse adds {_credits(plan.extra_credits)} credits (characters) and saves "
        f"{_mb(plan.saved_upload_bytes)} of uploads",
    ]
    if plan.skipped:
        lines.append(f"  {len(plan.skipped)} shared video(s) stay on demand: the credit cap "
                     f"would be exceeded")
    return obj, lines


def plural_rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"
