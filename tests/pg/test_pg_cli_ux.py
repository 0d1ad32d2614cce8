"""The scale-out commands as a first-time user meets them: one DSN rule for ``bulk
--enqueue``/``--status`` and ``worker`` (every source, each in a subprocess), messages a user
can act on (and paste), and ``bulk --dry-run`` on a PostgreSQL journal touching nothing."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pghelp import Fake, renders_manifest
from psycopg.conninfo import conninfo_to_dict

from viggle_async.cli._cmd_worker import journal_dsn, worker_hint
from viggle_async.cli._common import CliError
from viggle_async.testing import make_png

_DSN_VARS = ("VIGGLE_POSTGRES_DSN", "VIGGLE_JOURNAL_DSN")
_LIBPQ = {"host": "PGHOST", "port": "PGPORT", "dbname": "PGDATABASE", "user": "PGUSER",
          "password": "PGPASSWORD"}


@pytest.fixture(scope="module")
def fake() -> Iterator[Fake]:
    server = Fake(time_scale=200.0)
    yield server
    server.stop()


def clean_env(fake: Fake, key: str = "sk-test-fake", **extra: str) -> dict[str, str]:
    """The parent's environment without any DSN source, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in _DSN_VARS and not k.startswith("PG")}
    env.update(VIGGLE_BASE_URL=fake.base_url, VIGGLE_API_KEY=key, **extra)
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "viggle_async", *args], env=env,
                          capture_output=True, text=True, timeout=180, check=False)


def libpq_env(dsn: str) -> dict[str, str]:
    """The test server's DSN as libpq's own PG* variables."""
    return {_LIBPQ[k]: str(v) for k, v in conninfo_to_dict(dsn).items() if k in _LIBPQ}


def schema_exists(dsn: str, schema: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM information_schema.schemata "
                           "WHERE schema_name = %s", (schema,)).fetchone()
    return bool(row and row[0])


def renders_created(fake: Fake) -> int:
    return sum(1 for c in fake.stats()["creates"] if c["kind"] == "render")


# --- one DSN rule -----------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["argument", "VIGGLE_POSTGRES_DSN", "VIGGLE_JOURNAL_DSN",
                                    "postgresql:// and PG*", "'' and PG*"])
def test_every_dsn_source_works_for_enqueue_worker_and_status(
        source: str, fake: Fake, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    journal: list[str]
    if source == "argument":
        env, journal = clean_env(fake), ["--journal", pg_dsn]
    elif source.startswith("VIGGLE"):
        env, journal = clean_env(fake, **{source: pg_dsn}), []  # no --journal at all
    else:
        env = clean_env(fake, **libpq_env(pg_dsn))
        journal = ["--journal", "postgresql://" if source.startswith("postgresql") else ""]
    m = renders_manifest(tmp_path, 1)
    common = ["--schema", pg_schema, *journal]
    enq = cli(env, "bulk", str(m), "--enqueue", *common)
    assert enq.returncode == 0, enq.stdout + enq.stderr
    work = cli(env, "worker", *common, "--exit-when-empty", "--poll-interval", "0.05")
    assert work.returncode == 0, work.stdout + work.stderr
    st = cli(env, "--json", "bulk", str(m), "--status", *common)
    assert st.returncode == 0, st.stdout + st.stderr
    summary = [json.loads(x) for x in st.stdout.splitlines() if '"status"' in x][-1]
    assert summary["rows"] == {"done": 1}
    assert (tmp_path / "out" / "r0.mp4").is_file()


@pytest.mark.parametrize("command", [["worker"], ["bulk", "M", "--enqueue"],
                                     ["bulk", "M", "--status"]])
def test_no_dsn_source_is_one_line_naming_every_fix(command: list[str], fake: Fake,
                                                    tmp_path: Path) -> None:
    m = renders_manifest(tmp_path, 1)
    done = cli(clean_env(fake), *[str(m) if a == "M" else a for a in command])
    assert done.returncode == 2, done.stdout + done.stderr
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for fix in ("--journal postgresql://user@host/db", "VIGGLE_POSTGRES_DSN",
                "--journal postgresql:// ", "~/.pgpass"):
        assert fix in err, err
    assert "usage:" not in err  # not an argparse error: worker --journal is optional


@pytest.mark.parametrize("command", [["worker"], ["bulk", "M", "--enqueue"],
                                     ["bulk", "M", "--status"]])
@pytest.mark.parametrize("journal", ["run.journal", "runs/shots.db"])
def test_a_file_journal_on_a_distributed_command_says_what_it_needs(
        command: list[str], journal: str, fake: Fake, tmp_path: Path) -> None:
    m = renders_manifest(tmp_path, 1)
    done = cli(clean_env(fake), *[str(m) if a == "M" else a for a in command],
               "--journal", journal)
    assert done.returncode == 2
    who = "a worker" if command == ["worker"] else f"bulk {command[-1]}"
    assert f"{who} needs --journal postgresql://..." in done.stderr, done.stderr
    assert journal in done.stderr
    assert "connection info string" not in done.stderr  # no libpq jargon


def test_journal_dsn_order_argument_then_env_then_alias_then_libpq() -> None:
    def args(journal: str | None, command: str = "worker") -> argparse.Namespace:
        return argparse.Namespace(journal=journal, command=command, status=False)

    both = {"VIGGLE_POSTGRES_DSN": "postgresql:///a", "VIGGLE_JOURNAL_DSN": "postgresql:///b"}
    assert journal_dsn(args("host=x dbname=y"), both) == "host=x dbname=y"
    assert journal_dsn(args(None), both) == "postgresql:///a"
    assert journal_dsn(args(""), both) == "postgresql:///a"
    assert journal_dsn(args(None), {"VIGGLE_JOURNAL_DSN": "postgresql:///b"}) \
        == "postgresql:///b"
    # Empty variables are unset ones.
    assert journal_dsn(args(None), {"VIGGLE_POSTGRES_DSN": "",
                                    "VIGGLE_JOURNAL_DSN": "postgresql:///b"}) == "postgresql:///b"
    assert journal_dsn(args(""), {}) == ""  # libpq's PG* and ~/.pgpass
    assert journal_dsn(args("postgresql://"), {}) == "postgresql://"
    with pytest.raises(CliError, match="a worker needs a PostgreSQL ledger"):
        journal_dsn(args(None), {})


# --- messages ---------------------------------------------------------------------------------

def hint_args(journal: str | None, schema: str = "viggle") -> argparse.Namespace:
    return argparse.Namespace(journal=journal, schema=schema, command="bulk", status=False)


@pytest.mark.parametrize(("dsn", "pasted"), [
    ("postgresql://newbie:pa55@db.example/viggle", "postgresql://newbie@db.example/viggle"),
    ("postgresql://newbie@db/v?sslmode=require&password=pa55",
     "'postgresql://newbie@db/v?sslmode=require'"),  # quoted: '?' is a shell glob
    ("host=db user=newbie password=pa55 dbname=viggle", "'host=db user=newbie dbname=viggle'"),
])
def test_the_start_workers_hint_never_prints_a_masked_or_real_password(
        dsn: str, pasted: str) -> None:
    hint = worker_hint(hint_args(dsn, "shots"), {})
    assert hint.endswith(f": viggle-async worker --journal {pasted} --schema shots"), hint
    assert "pa55" not in hint and "***" not in hint
    assert "~/.pgpass or $PGPASSWORD" in hint and "--schema shots" in hint


@pytest.mark.parametrize("name", ["VIGGLE_POSTGRES_DSN", "VIGGLE_JOURNAL_DSN"])
def test_the_hint_names_the_variable_the_dsn_came_from(name: str) -> None:
    hint = worker_hint(hint_args(None), {name: "postgresql://u:pa55@db/v"})
    assert hint.endswith(f'viggle-async worker --journal "${name}"'), hint
    assert "pa55" not in hint


def test_enqueue_messages_count_rows_and_the_hint_pastes(
        fake: Fake, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    env = clean_env(fake)
    m = renders_manifest(tmp_path, 1)
    enq = cli(env, "bulk", str(m), "--enqueue", "--journal", pg_dsn, "--schema", pg_schema)
    assert enq.returncode == 0, enq.stderr
    assert "1 row recorded" in enq.stdout + enq.stderr
    assert "1 rows" not in enq.stdout + enq.stderr
    assert "characters/scenes" not in enq.stdout + enq.stderr  # the manifest has none
    hint = next(x for x in enq.stderr.splitlines() if "viggle-async worker" in x)
    command = shlex.split(hint.split(": ", 1)[1])
    assert command[:2] == ["viggle-async", "worker"]
    work = cli(env, *command[1:], "--exit-when-empty", "--poll-interval", "0.05")
    assert work.returncode == 0, work.stdout + work.stderr
    assert (tmp_path / "out" / "r0.mp4").is_file()
    st = cli(env, "bulk", str(m), "--status", "--journal", pg_dsn, "--schema", pg_schema)
    assert "run 'm.jsonl': 1 row: 1 complete;" in st.stdout, st.stdout


def test_enqueue_mentions_waiting_rows_only_when_there_are_some(
        fake: Fake, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    (tmp_path / "c.png").write_bytes(make_png())
    m = renders_manifest(tmp_path, 2)
    with m.open("a") as f:
        f.write(json.dumps({"key": "char", "kind": "character", "name": "C",
                            "image": "c.png"}) + "\n")
        f.write(json.dumps({"key": "stage", "kind": "scene", "name": "S",
                            "video": "d1.mp4"}) + "\n")
        f.write(json.dumps({"key": "r9", "character_id": "char", "scene_id": "stage",
                            "output": "out/r9.mp4"}) + "\n")
    enq = cli(clean_env(fake), "bulk", str(m), "--enqueue", "--journal", pg_dsn,
              "--schema", pg_schema)
    assert enq.returncode == 0, enq.stderr
    assert "5 rows recorded" in enq.stdout + enq.stderr
    assert "4 queued now, the rest when their characters/scenes are ready" \
        in enq.stdout + enq.stderr


@pytest.mark.parametrize(("command", "fix"), [
    (["bulk", "M", "--status"], "Fix: read the status with VIGGLE_API_KEY"),
    (["bulk", "M", "--enqueue"], "Fix: enqueue with VIGGLE_API_KEY"),
    (["worker", "--exit-when-empty"], "Fix: start the worker with VIGGLE_API_KEY"),
])
def test_the_other_key_refusal_is_worded_for_the_command(
        command: list[str], fix: str, fake: Fake, pg_dsn: str, pg_schema: str,
        tmp_path: Path) -> None:
    m = renders_manifest(tmp_path, 1)
    first = cli(clean_env(fake), "bulk", str(m), "--enqueue", "--journal", pg_dsn,
                "--schema", pg_schema)
    assert first.returncode == 0, first.stderr
    # A key the API takes (a worker checks it there first), of another account than the
    # ledger's.
    api = Fake(time_scale=200.0, api_key="sk-another-account")
    try:
        other = clean_env(api, key="sk-another-account")
        done = cli(other, *[str(m) if a == "M" else a for a in command], "--journal", pg_dsn,
                   "--schema", pg_schema)
    finally:
        api.stop()
    assert done.returncode == 2, done.stdout + done.stderr
    assert "belongs to another API key" in done.stderr and fix in done.stderr, done.stderr
    assert "sk-another-account" not in done.stderr and "sk-test-fake" not in done.stderr
    if command[0] == "bulk":
        assert "worker" not in done.stderr


# --- dry run on a PostgreSQL journal ----------------------------------------------------------

@pytest.mark.parametrize("extra", [[], ["--enqueue"]])
def test_dry_run_with_a_postgres_journal_prices_and_touches_nothing(
        extra: list[str], fake: Fake, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    m = renders_manifest(tmp_path, 3)
    before = renders_created(fake)
    env = clean_env(fake)
    del env["VIGGLE_API_KEY"]  # as a local dry run: no key needed
    done = cli(env, "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema,
               "--dry-run", *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dry run: 3 rows valid; estimated cost" in done.stdout
    assert renders_created(fake) == before
    assert not schema_exists(pg_dsn, pg_schema)  # nothing written to the ledger


def test_dry_run_with_a_postgres_journal_reports_bad_rows(
        fake: Fake, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    m = renders_manifest(tmp_path, 1, bg_color="#ffffff")  # bg_color needs solid
    done = cli(clean_env(fake), "bulk", str(m), "--journal", pg_dsn, "--schema", pg_schema,
               "--dry-run")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "bg_color" in done.stderr
    assert not schema_exists(pg_dsn, pg_schema)


# --- worker --help ----------------------------------------------------------------------------

def test_worker_help_describes_every_option_and_shows_every_default() -> None:
    from viggle_async.cli._app import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    worker = sub.choices["worker"]
    undescribed, no_default = [], []
    for action in worker._actions:
        if action.help == argparse.SUPPRESS or not action.option_strings:
            continue
        if not action.help:
            undescribed.append(action.option_strings[-1])
        elif action.default not in (None, False, argparse.SUPPRESS) \
                and "default" not in action.help:
            no_default.append(action.option_strings[-1])
    assert (undescribed, no_default) == ([], [])
    text = worker.format_help()
    for needed in ("VIGGLE_POSTGRES_DSN", "VIGGLE_JOURNAL_DSN", "--journal postgresql://",
                   "~/.pgpass", "(default 30)", "(default 5;"):
        assert needed in text
