"""Names the PostgreSQL tests share (a module of its own: `conftest` is ambiguous when
several test folders have one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

from viggle_async.pg import PostgresLedger

API_KEY = "vgl_test_key_0123456789abcdef"

#: ``await open_ledger(**kwargs)``: a ledger on the test's schema, with its own pool.
LedgerFactory = Callable[..., Awaitable[PostgresLedger]]

#: Size of every output the out-of-process fake serves.
OUTPUT_BYTES = 4096


class Fake:
    """``viggle-async fake-server`` in a subprocess."""

    def __init__(self, time_scale: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "viggle_async", "fake-server", "--time-scale",
             str(time_scale), "--output-bytes", str(OUTPUT_BYTES)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("base_url="), line
        self.base_url = line.strip().split("=", 1)[1]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base_url + "/__fake__/stats") as r:
            data: dict[str, Any] = json.load(r)
        return data

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=10)  # closes the pipe too


def worker(fake: Fake, dsn: str, schema: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "VIGGLE_BASE_URL": fake.base_url, "VIGGLE_API_KEY": "sk-test-fake"}
    return subprocess.Popen(
        [sys.executable, "-m", "viggle_async", "worker", "--journal", dsn, "--schema", schema,
         "--poll-interval", "0.05", "--stalled-after", "2", "--heartbeat", "0.5",
         "--recover-every", "1", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
