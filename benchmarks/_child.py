"""``python -m benchmarks._child MODULE VARIANT < PARAMS.json``: one measured client run.

Runs ``benchmarks.MODULE.VARIANTS[VARIANT](params)`` in this fresh process and writes its
result dict as JSON to the file ``run_child`` names in ``VIGGLE_BENCH_RESULT_FILE`` (run by
hand without it, prints it on one line; see ``_common.emit``). With ``params["profile"]``
set to a path, the run is also profiled with cProfile and the top functions by cumulative
time are written there.
"""

from __future__ import annotations

import cProfile
import importlib
import io
import json
import pstats
import sys
import time
from collections.abc import Callable
from typing import Any

from ._common import emit

Variant = Callable[[dict[str, Any]], dict[str, Any]]


def main(argv: list[str]) -> int:
    module_name, variant = argv
    params: dict[str, Any] = json.loads(sys.stdin.read() or "{}")
    module = importlib.import_module(f"benchmarks.{module_name}")
    variants: dict[str, Variant] = module.VARIANTS
    run = variants[variant]
    profile_path = params.pop("profile", None)
    if profile_path is None:
        emit(run(params))
        return 0
    # CPU time, not wall time: idle waits in epoll must not look like cost.
    profiler = cProfile.Profile(time.process_time)
    result = profiler.runcall(run, params)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(25)
    with open(profile_path, "w") as f:
        f.write(out.getvalue())
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
