"""B7 many workers (issue 16, called B6 there): 1, 2 and 4 ``viggle-async worker``
processes on one enqueued manifest, each behind its own upload-capping proxy (one
machine's uplink per process), against one fake server and one PostgreSQL ledger.

Figures: throughput scaling at 2 and 4 workers against linear (target >= 0.8x at 4), and
the ledger's overhead per row: a single worker's time against a local ``bulk`` run (SQLite
journal) behind the same cap. The workers are started and registered with the queue
before the manifest is enqueued; times are the window between the first create's journal
intent and the last row's end, read from the journal, so process start-up is not counted.

Where the time goes, per worker count: the ledger's round trips per row (PostgreSQL
transactions committed in the database during the run, from ``pg_stat_database``: every
autocommit statement is one, a transaction block one; procrastinate's queue polling
included), the CPU the run's own processes used (workers, proxies, the fake, the ledger's
PostgreSQL backends) as a share of the machine, and the machine's CPU busy fraction and
load average over the run (other programs included). A run whose machine CPU is >= 90 %
busy is CPU-bound (the upload cap is then not what limits it) and its figure says
"saturated".

The cap stands for one machine's uplink: 4 MB/s (32 Mbit/s) per worker process, with
1 MiB driving videos, so 4 workers move 16 MB/s through the proxies and the fake and the
run's own processes stay well under the 2 cores (at 16 MB/s per worker, 64 MB/s at 4
workers, the proxies and the fake's multipart parsing alone saturated them).

Needs PostgreSQL: ``$VIGGLE_TEST_POSTGRES_DSN`` (``bash ci/start-postgres`` prints one);
without it the figures say "not available".
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from ._common import MIB, loopback_env, median
from ._harness import BenchError, Server
from ._report import Context, Figure, Outcome

ROWS = 96
QUICK_ROWS = 24
SCALE = 50.0
# Status polls per second: the fake runs 50x faster than the API, so the default 20/s
# (per process, and shared by every worker of a ledger) would make polling, not uploads,
# the bottleneck; as in the demo, every run here gets 200/s, the workers between them.
POLL_RATE = 200.0
WORKERS = (1, 2, 4)


def _cli(args: list[str], env: dict[str, str], timeout: float) -> None:
    proc = subprocess.run([sys.executable, "-m", "viggle_async", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BenchError(f"viggle-async {args[0]} failed: {proc.stderr[-2000:]}")


def _window(dsn: str, schema: str, run: str) -> float:
    """Seconds from the first journal intent of ``run`` to its last journal change."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            f'SELECT min(created_at), max(updated_at) FROM "{schema}".journal_entries '
            "WHERE key LIKE %s", (f"{run}/%",)).fetchone()
    assert row is not None and row[0] is not None
    return float(row[1]) - float(row[0])


def _sqlite_window(path: Any) -> float:
    """The same window as ``_window``, from a local run's SQLite journal."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        first, last = conn.execute(
            "SELECT min(created_at), max(updated_at) FROM entries").fetchone()
    return float(last) - float(first)


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _set_poll_rate(dsn: str, schema: str, rate: float) -> None:
    """The ledger's shared poll rate cap (what ``PostgresLedger.set_poll_rate`` does)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'UPDATE "{schema}".poll_cap SET rate = %s, burst = %s',
                     (rate, 1 + 0.1 * rate))


def _proc_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by ``pids`` (those still alive)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (float(fields[11]) + float(fields[12])) / tick  # utime, stime
    return total


def _backend_pids(dsn: str) -> list[int]:
    """The PostgreSQL backends serving the ledger's database now."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = "
                            "current_database() AND pid <> pg_backend_pid()").fetchall()
    return [int(r[0]) for r in rows]


def _xacts(dsn: str) -> float:
    """Transactions committed so far in the ledger's database (all clients)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        # Statistics are sent by each backend at most every PGSTAT_MIN_INTERVAL (1 s) and
        # cached per transaction: clear the snapshot so this read is fresh.
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT xact_commit FROM pg_stat_database "
                           "WHERE datname = current_database()").fetchone()
    assert row is not None
    return float(row[0])


def _wait_for(dsn: str, query: str, done: Any, procs: list[subprocess.Popen[str]],
              timeout: float = 600.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            for proc in procs:
                if proc.poll() is not None:
                    raise BenchError(f"B7 worker exited: {proc.communicate()[1][-2000:]}")
            try:
                row = conn.execute(query).fetchone()
            except psycopg.errors.UndefinedTable:
                row = None
            if row is not None and done(int(row[0])):
                return
            time.sleep(0.05)
    raise BenchError(f"B7: timed out waiting for {query!r}")


def run(ctx: Context) -> Outcome:
    from viggle_async.testing import make_png, write_mp4

    from ._proxy import UploadCapProxy

    dsn = os.environ.get("VIGGLE_TEST_POSTGRES_DSN", "")
    if not dsn:
        figures = [Figure("B7", f"throughput at {n} workers vs linear", "x", float("nan"),
                          status="not available: set VIGGLE_TEST_POSTGRES_DSN")
                   for n in WORKERS[1:]]
        return Outcome("many workers", figures)
    rows = QUICK_ROWS if ctx.quick else ROWS
    video_bytes = 256 * 1024 if ctx.quick else MIB
    rate = 4e6  # bytes per second per worker process: one machine's uplink
    folder = ctx.tmpdir / "b7"
    (folder / "out").mkdir(parents=True, exist_ok=True)
    (folder / "me.png").write_bytes(make_png())
    write_mp4(folder / "d.mp4", 3.0, size=video_bytes, sparse=False)
    manifest = folder / "m.jsonl"
    manifest.write_text("".join(json.dumps(
        {"key": f"r{i}", "ref_image": "me.png", "driving_video": "d.mp4",
         "output": f"out/r{i}.mp4"}) + "\n" for i in range(rows)))
    per_run: dict[str, list[float]] = {str(n): [] for n in WORKERS}
    per_run["local"] = []
    # Per worker count: ledger transactions per row, CPU busy fraction, 1-min load.
    xacts: dict[str, list[float]] = {str(n): [] for n in WORKERS}
    busy: dict[str, list[float]] = {str(n): [] for n in WORKERS}
    loads: dict[str, list[float]] = {str(n): [] for n in WORKERS}
    own: dict[str, list[float]] = {str(n): [] for n in WORKERS}
    pg_cpu: dict[str, list[float]] = {str(n): [] for n in WORKERS}  # ms per row
    # The busiest worker's upload bytes over the mean: rows are not split evenly (each
    # worker takes rows as its slots free), and the run lasts as long as the busiest.
    skew: dict[str, list[float]] = {str(n): [] for n in WORKERS}
    with Server(time_scale=SCALE, max_upload_bytes=video_bytes + MIB) as server:
        port = urlsplit(server.base_url).port
        assert port is not None
        proxies = [UploadCapProxy(port, rate) for _ in range(max(WORKERS))]
        for p in proxies:
            p.__enter__()
        try:
            base = {**loopback_env(), "VIGGLE_API_KEY": server.api_key}
            for i in range(ctx.runs):
                for n in WORKERS:
                    server.reset()
                    schema = f"b7_{uuid.uuid4().hex[:10]}"
                    # Workers first, all registered with the queue before the rows come:
                    # the figure is the queue draining, not n Python start-ups.
                    procs = [subprocess.Popen(
                        [sys.executable, "-m", "viggle_async", "worker", "--journal", dsn,
                         "--schema", schema, "--poll-interval", "0.05", "--grace", "1",
                         "--concurrency", "16", "--max-uploads", "4",
                         "--poll-rate", str(POLL_RATE)],
                        env={**base, "VIGGLE_BASE_URL": proxies[w].base_url},
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                        for w in range(n)]
                    try:
                        _wait_for(dsn, f'SELECT count(*) FROM "{schema}".procrastinate_workers',
                                  lambda c, n=n: c >= n, procs)
                        _set_poll_rate(dsn, schema, POLL_RATE)
                        for p in proxies:
                            p.stats(reset=True)
                        env = {**base, "VIGGLE_BASE_URL": proxies[0].base_url}
                        time.sleep(1.1)  # idle workers' statistics reach the counters
                        x0, cpu0 = _xacts(dsn), _cpu_times()
                        backends = _backend_pids(dsn)
                        pids = ([p.pid for p in procs] + backends
                                + [c._proc.pid for c in (server, *proxies) if c._proc])
                        own0, t0 = _proc_cpu(pids), time.monotonic()
                        pg0 = _proc_cpu(backends)
                        _cli(["bulk", str(manifest), "--journal", dsn, "--schema", schema,
                              "--run", "b7", "--enqueue"], env, 120)
                        _wait_for(dsn, f"SELECT count(*) FROM \"{schema}\".dist_rows "
                                  "WHERE state NOT IN ('done', 'failed')", lambda c: c == 0,
                                  procs)
                        cpu1 = _cpu_times()
                        up = [proxies[w].stats()["up_bytes"] for w in range(n)]
                        skew[str(n)].append(max(up) / (sum(up) / n))
                        pg_cpu[str(n)].append((_proc_cpu(backends) - pg0) / rows * 1000)
                        own[str(n)].append((_proc_cpu(pids) - own0)
                                           / ((time.monotonic() - t0) * (os.cpu_count() or 1)))
                        loads[str(n)].append(os.getloadavg()[0])
                        busy[str(n)].append((cpu1[0] - cpu0[0]) / max(1.0, cpu1[1] - cpu0[1]))
                        time.sleep(1.1)
                        xacts[str(n)].append((_xacts(dsn) - x0) / rows)
                    finally:
                        for proc in procs:
                            proc.send_signal(signal.SIGTERM)
                        for proc in procs:
                            proc.communicate(timeout=60)
                    per_run[str(n)].append(_window(dsn, schema, "b7"))
                    import psycopg

                    with psycopg.connect(dsn, autocommit=True) as conn:
                        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
                # The same rows, one local process, SQLite journal, same cap.
                server.reset()
                env = {**base, "VIGGLE_BASE_URL": proxies[0].base_url}
                journal = folder / f"local-{i}.sqlite"
                _cli(["bulk", str(manifest), "--journal", str(journal), "--poll-interval",
                      "0.05", "--max-active-jobs", "16", "--max-uploads", "4",
                      "--poll-rate", str(POLL_RATE)], env, 600)
                per_run["local"].append(_sqlite_window(journal))
        finally:
            for p in proxies:
                p.__exit__(None, None, None)
    t = {k: median(v) for k, v in per_run.items()}
    cpu = {k: median(v) for k, v in busy.items()}

    def where(n: int) -> str:
        k = str(n)
        return (f"busiest worker uploaded {median(skew[k]):.2f}x the mean; "
                f"own processes {median(own[k]):.0%} of the CPU, machine {cpu[k]:.0%} "
                f"busy, load {median(loads[k]):.1f}"
                + (" (saturated: CPU-bound, not upload-bound)" if cpu[k] >= 0.9 else ""))

    figures = [
        Figure("B7", f"throughput, {n} workers, vs {n}x one worker", "x", t["1"] / t[str(n)],
               "linear", float(n), target=">= 0.8x linear" if n == 4 else None,
               met=(t["1"] / t[str(n)] >= 0.8 * n) if n == 4 else None,
               note=f"{rows} rows; each worker's uploads capped at {rate / 1e6:g} MB/s; "
                    f"{where(n)}; 1 worker: {where(1)}")
        for n in WORKERS[1:]]
    figures += [Figure("B7", f"ledger transactions per row, {n} worker(s)", "tx",
                       median(xacts[str(n)]),
                       note="pg_stat_database xact_commit during the run / rows "
                            "(queue polling and heartbeats included)")
                for n in WORKERS]
    figures += [Figure("B7", f"ledger CPU per row (PostgreSQL backends), {n} worker(s)", "ms",
                       median(pg_cpu[str(n)]),
                       note="CPU of the backends open when the run started, / rows")
                for n in WORKERS]
    figures.append(Figure(
        "B7", "ledger overhead per row (1 worker vs local bulk)", "ms",
        (t["1"] - t["local"]) / rows * 1000, "local bulk, SQLite journal",
        t["local"] / rows * 1000,
        note="both from their journals: first intent to last change"))
    config = {"rows": rows, "poll_rate": POLL_RATE, "video_bytes": video_bytes,
              "upload_cap_mb_s_per_worker": rate / 1e6, "time_scale": SCALE,
              "runs": ctx.runs}
    return Outcome("many workers", figures, {
        "config": config, "runs": per_run, "medians_s": t, "ledger_xacts_per_row": xacts,
        "cpu_busy": busy, "own_cpu_share": own, "pg_cpu_ms_per_row": pg_cpu,
        "upload_skew": skew, "load_1min": loads})
