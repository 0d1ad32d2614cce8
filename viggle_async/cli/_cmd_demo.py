"""``viggle-async demo``: the demo (``_demo``) on its own embedded fake server; no key."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import anyio

from ._common import EXIT_FAILED, EXIT_OK, CliError, Command, Ctx, credits_text, plural
from ._paths import option_path_problem
from ._progress import EventView

__all__ = ["COMMAND"]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="viggle-demo", metavar="DIR", help="default ./viggle-demo")


async def run(ctx: Ctx) -> int:
    from ._demo import run_demo  # imports the fake server: only when the demo runs

    out = Path(ctx.args.out)
    problem = await anyio.to_thread.run_sync(
        option_path_problem, "--out", out / "inputs" / "person-0.png",
        "pass --out a folder you can write to, e.g. --out ./viggle-demo")
    if problem is not None:
        raise CliError(problem)
    view = EventView(ctx.out, ctx.stats, title="demo")
    with view:
        summary = await run_demo(out, on_events=view.consume)
    code = EXIT_OK if summary.failed == 0 else EXIT_FAILED
    kinds = Counter(o.kind for o in summary.outcomes if o.ok)
    data = {"event": "summary", "total": len(summary.outcomes), "done": summary.done,
            "clips": summary.clips, "assets": summary.assets, "failed": summary.failed,
            "credits": summary.credits_spent,
            "retries": summary.retries, "fallbacks": summary.fallbacks,
            "elapsed_s": round(summary.elapsed_s, 3), "out_dir": summary.out_dir,
            "exit_code": code}
    assets = ", ".join(plural(kinds[k], k) for k in ("character", "scene") if kinds[k])
    ctx.out.emit(data, f"demo: {plural(summary.clips, 'clip')} rendered"
                       + (f" with {assets}" if assets else "")
                       + f", {summary.failed} failed; "
                       f"{credits_text(summary.credits_spent)}; "
                       f"{plural(summary.retries, 'retry', 'retries')}; "
                       f"{plural(summary.fallbacks, 'fast fallback')}; "
                       f"{summary.elapsed_s:.1f} s; outputs in {summary.out_dir}")
    return code


COMMAND = Command("demo", "bulk-render ~20 sample clips on an embedded fake server (no key)",
                  configure, run, uses_api=False)
