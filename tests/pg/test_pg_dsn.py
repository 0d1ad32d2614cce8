"""Where the DSN comes from, and that its password is never shown (no server needed)."""

from __future__ import annotations

import pytest

pytest.importorskip("psycopg", reason="the postgres extra is not installed")

from viggle_async.pg import DSN_ENV, PostgresLedger, redact_dsn, resolve_dsn

PW = "s3cr#t-pw"


@pytest.mark.parametrize(("dsn", "shown"), [
    ("postgresql://app:s3cr#t-pw@db.example:5432/viggle",
     "postgresql://app:***@db.example:5432/viggle"),
    ("postgres://app:s3cr#t-pw@h1:5432,h2:5433/viggle?sslmode=require",
     "postgres://app:***@h1:5432,h2:5433/viggle?sslmode=require"),
    ("postgresql://app@db/viggle?sslmode=require&password=s3cr#t-pw",
     "postgresql://app@db/viggle?sslmode=require&password=***"),
    ("postgresql://app:p@ss:w@rd@db/viggle", "postgresql://app:***@db/viggle"),
    ("host=db user=app password=s3cr#t-pw dbname=viggle",
     "host=db user=app password=*** dbname=viggle"),
    ("host=db password = 'with \\' quote and s3cr#t-pw' dbname=viggle",
     "host=db password = *** dbname=viggle"),
])
def test_redact_dsn_hides_the_password_in_every_form(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown
    assert PW not in redact_dsn(dsn) and "p@ss" not in redact_dsn(dsn)


@pytest.mark.parametrize("dsn", [
    "postgresql:///viggle_test?port=5432", "host=/var/run/postgresql dbname=x", ""])
def test_redact_dsn_keeps_a_dsn_without_password(dsn: str) -> None:
    assert redact_dsn(dsn) == dsn


def test_resolve_dsn_prefers_the_argument_then_the_environment() -> None:
    env = {DSN_ENV: "postgresql:///from_env"}
    assert resolve_dsn("postgresql:///arg", environ=env) == "postgresql:///arg"
    assert resolve_dsn(None, environ=env) == "postgresql:///from_env"
    # Empty: libpq's own PG* variables and .pgpass decide.
    assert resolve_dsn(None, environ={}) == ""


def test_ledger_repr_and_str_never_show_password_or_key() -> None:
    ledger = PostgresLedger(f"postgresql://app:{PW}@db/viggle", api_key="vgl_SECRETKEY",
                            schema="run1")
    for text in (repr(ledger), str(ledger), ledger.dsn):
        assert PW not in text and "SECRETKEY" not in text
    assert "postgresql://app:***@db/viggle" in repr(ledger)
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(ledger)


@pytest.mark.parametrize("schema", ["Run1", "1run", "a-b", "x; DROP TABLE y", ""])
def test_bad_schema_name_fails_before_connecting(schema: str) -> None:
    with pytest.raises(ValueError, match="schema"):
        PostgresLedger("postgresql:///x", api_key="k", schema=schema)


def test_the_pg_public_api_is_declared_once_and_errors_are_viggle_errors() -> None:
    import viggle_async.pg as pg
    from viggle_async import ViggleError
    assert pg.__all__ == sorted(pg.__all__)
    for name in pg.__all__:
        obj = getattr(pg, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, ViggleError), name


@pytest.mark.parametrize(("dsn", "pasted"), [
    ("postgresql://app:s3cr#t-pw@db.example:5432/viggle", "postgresql://app@db.example:5432/viggle"),
    ("postgresql://app:p@ss:w@rd@db/viggle", "postgresql://app@db/viggle"),
    ("postgres://app@db/v?password=s3cr#t-pw&sslmode=require", "postgres://app@db/v?sslmode=require"),
    ("postgresql://app@db/v?sslmode=require&password=s3cr#t-pw", "postgresql://app@db/v?sslmode=require"),
    ("host=db user=app password=s3cr#t-pw dbname=viggle", "host=db user=app dbname=viggle"),
    ("host=db password = 'with \\' quote and s3cr#t-pw' dbname=viggle", "host=db dbname=viggle"),
    ("postgresql://app@db/viggle", "postgresql://app@db/viggle"),
    ("", ""),
])
def test_without_password_leaves_a_dsn_libpq_completes_from_pgpass(dsn: str,
                                                                    pasted: str) -> None:
    from psycopg.conninfo import conninfo_to_dict

    from viggle_async.pg._dsn import without_password

    assert without_password(dsn) == pasted
    if "p@ss" in dsn:
        return  # libpq itself splits a raw '@' password at its first '@'
    # Still a valid DSN, the same target, and no password left for libpq to read.
    before, after = conninfo_to_dict(dsn), conninfo_to_dict(pasted)
    before.pop("password", None)
    assert after == before


def test_dsn_env_name_says_which_variable_resolve_dsn_reads() -> None:
    from viggle_async.pg._dsn import JOURNAL_DSN_ENV, dsn_env_name

    assert dsn_env_name({DSN_ENV: "a", JOURNAL_DSN_ENV: "b"}) == DSN_ENV
    assert dsn_env_name({DSN_ENV: "", JOURNAL_DSN_ENV: "b"}) == JOURNAL_DSN_ENV
    assert resolve_dsn(None, environ={DSN_ENV: "", JOURNAL_DSN_ENV: "b"}) == "b"
    assert dsn_env_name({}) is None
