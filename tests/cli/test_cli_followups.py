"""Follow-ups found while merging, through the real command in a subprocess: a journal
that cannot be written ends ``bulk`` with one line and exit 2, keeping every job id."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
from clihelp import BULK_FAST, SECRET

from viggle_async.testing import FakeViggle

# The real CLI in its own process, with one library-level fault: the SQLite journal's
# "record this job id" write fails as it does when another process holds the write lock
# past the busy limit (sqlite3.OperationalError: database is locked).
LOCKED_JOURNAL = """
import sqlite3, sys
from viggle_async import _journal_sqlite
from viggle_async.cli import main

async def locked(self, key, job_id):
    raise sqlite3.OperationalError("database is locked")

_journal_sqlite.SQLiteJournal.record_submitted = locked
sys.exit(main(sys.argv[1:]))
"""


async def _viggle(env: dict[str, str], *argv: str, script: str | None = None
                  ) -> tuple[int, str, str]:
    args = ([sys.executable, "-c", script] if script else
            [sys.executable, "-m", "viggle_async"])
    proc = await anyio.run_process([*args, *argv], env=env, check=False)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert SECRET not in out + err
    return proc.returncode, out, err


def _env(fake: FakeViggle, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "VIGGLE_API_KEY": SECRET, "VIGGLE_BASE_URL": fake.base_url,
            "XDG_CACHE_HOME": str(tmp_path / "cache")}


async def test_a_journal_that_cannot_be_written_ends_bulk_with_one_line_and_exit_2(
        fake: FakeViggle, media: Path) -> None:
    manifest = media / "m.csv"
    manifest.write_text("key,ref_image,driving_video,output\n"
                        + "".join(f"r{i},me.png,d{i + 1}.mp4,r{i}.mp4\n" for i in range(3)))
    journal, report = media / "j.db", media / "report.json"
    code, _, err = await _viggle(
        _env(fake, media), "bulk", str(manifest), *BULK_FAST, "--max-uploads", "1",
        "--journal", str(journal), "--report", str(report), script=LOCKED_JOURNAL)
    assert code == 2, err
    assert "Traceback" not in err and "ExceptionGroup" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert err.strip().splitlines()[-1] == line
    assert repr(str(journal)) in line and "database is locked" in line
    # The job that was created is named, with its id, and the report keeps it.
    data = json.loads(report.read_text())
    created = [r for r in data["outcomes"] if r["job_id"]]
    assert created and len(fake.creates) == len(created)  # new creates stopped
    for row in created:
        assert f"{row['key']}={row['job_id']}" in line
    assert f"their ids are in the report {str(report)!r}" in line
    assert data["summary"]["exit_code"] == 2
    assert {r["state"] for r in data["outcomes"]} <= {"complete", "not_submitted"}
