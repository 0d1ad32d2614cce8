"""Where the PostgreSQL DSN comes from, and how it is shown without its password.

Pure: no I/O (libpq's own parser reads the DSN, nothing connects). The DSN is a libpq
connection string in either form (a ``postgresql://user:pw@host/db?opt=v`` URL or
``host=h password=pw`` keywords). An empty
DSN is valid: libpq then takes everything from ``PGHOST``/``PGPORT``/``PGUSER``/
``PGDATABASE``/``PGPASSWORD`` and the password from ``~/.pgpass`` (or ``$PGPASSFILE``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict

__all__ = ["DSN_ENV", "JOURNAL_DSN_ENV", "dsn_env_name", "redact_dsn", "resolve_dsn", "scrub",
           "without_password"]

#: The environment variable read when no DSN is passed.
DSN_ENV = "VIGGLE_POSTGRES_DSN"
#: Its older alias (documented for the journal store first); read when ``DSN_ENV`` is unset.
JOURNAL_DSN_ENV = "VIGGLE_JOURNAL_DSN"

_MASK = "***"
_URL = re.compile(r"^postgres(?:ql)?://", re.IGNORECASE)
# libpq keyword form: a value is 'single-quoted with \' escapes' or runs to whitespace.
_KW_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*")
_URL_USERINFO = re.compile(r"^(postgres(?:ql)?://[^:@/?]*:).*@(?=[^@]*$)", re.IGNORECASE)


def resolve_dsn(dsn: str | None = None, *, environ: Mapping[str, str] | None = None) -> str:
    """The DSN to connect with: ``dsn`` if given, else ``$VIGGLE_POSTGRES_DSN``, else its
    alias ``$VIGGLE_JOURNAL_DSN``, else ``""``.

    ``""`` lets libpq use its own environment variables and ``.pgpass``, so a password
    need never appear on a command line. ``environ`` defaults to ``os.environ``.
    """
    if dsn is not None:
        return dsn
    env = os.environ if environ is None else environ
    return env.get(DSN_ENV) or env.get(JOURNAL_DSN_ENV, "")


def dsn_env_name(environ: Mapping[str, str] | None = None) -> str | None:
    """The environment variable ``resolve_dsn(None)`` reads its DSN from: ``DSN_ENV``,
    else ``JOURNAL_DSN_ENV``, else None (neither is set, or both are empty)."""
    env = os.environ if environ is None else environ
    return next((name for name in (DSN_ENV, JOURNAL_DSN_ENV) if env.get(name)), None)


def without_password(dsn: str) -> str:
    """``dsn`` with its password removed, not masked: a string a user can paste, which
    then takes the password from ``~/.pgpass`` or ``$PGPASSWORD`` (libpq's own sources).

    >>> without_password("postgresql://app:s3cret@db.example/viggle?password=x&sslmode=require")
    'postgresql://app@db.example/viggle?sslmode=require'
    >>> without_password("host=db password='a b' dbname=viggle")
    'host=db dbname=viggle'
    """
    if _URL.match(dsn):
        out = _URL_USERINFO.sub(lambda m: m.group(1)[:-1] + "@", dsn)
        out = re.sub(r"([?&])password=[^&]*&?", r"\1", out)
        return re.sub(r"[?&]$", "", out)
    return re.sub(r"\s+", " ", _KW_PASSWORD.sub("", dsn)).strip()


def redact_dsn(dsn: str) -> str:
    """``dsn`` with every password replaced by ``***`` (URL userinfo, URL ``?password=``,
    keyword ``password=``); everything else is kept so the target stays recognisable.

    >>> redact_dsn("postgresql://app:s3cret@db.example/viggle")
    'postgresql://app:***@db.example/viggle'
    """
    out = dsn
    if _URL.match(dsn):
        # Not urlsplit: a raw '#', '?' or '@' in a password would split the URL there.
        # Up to the last '@' is userinfo; an '@' later in the query over-redacts, which
        # hides more than needed but never leaks.
        out = _URL_USERINFO.sub(lambda m: m.group(1) + _MASK + "@", out)
        out = _QUERY_PASSWORD.sub(lambda m: m.group(1) + _MASK, out)
    else:
        out = _KW_PASSWORD.sub(lambda m: m.group(1) + _MASK, out)
    if out != dsn:
        return out
    # Nothing matched: still hide whatever libpq itself would read as the password.
    try:
        password = conninfo_to_dict(dsn).get("password")
    except Exception:  # unparseable: the patterns above did what can be done
        password = None
    if password:
        text = str(password)
        out = scrub(out, [text, quote(text, safe=""), quote(text)])
    return out


def scrub(text: str, secrets: Mapping[str, str | None] | list[str | None]) -> str:
    """``text`` with each non-empty secret replaced by ``***``: for messages built by
    libpq, which may quote parts of the connection string back."""
    values = secrets.values() if isinstance(secrets, Mapping) else secrets
    for secret in sorted((s for s in values if s), key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return text
