"""Errors of the PostgreSQL ledger; all are ``ViggleError`` s::

    ViggleError
    └── LedgerError                 the shared ledger refused or could not be reached
        ├── LedgerConnectionError   bad DSN, server down, authentication failed
        ├── LedgerSchemaTooNewError the schema was migrated by a newer viggle-async
        └── LedgerKeyMismatchError  the ledger belongs to another API key

Messages carry the DSN only through ``redact_dsn``, never a password or the API key.
"""

from __future__ import annotations

from viggle_async._errors import ViggleError

__all__ = [
    "LedgerConnectionError",
    "LedgerError",
    "LedgerKeyMismatchError",
    "LedgerSchemaTooNewError",
]


class LedgerError(ViggleError):
    """Base of the PostgreSQL ledger's errors."""


class LedgerConnectionError(LedgerError):
    """The ledger's database could not be reached (``.dsn`` is redacted)."""

    def __init__(self, message: str, *, dsn: str) -> None:
        super().__init__(message)
        self.dsn = dsn


class LedgerSchemaTooNewError(LedgerError):
    """The schema's version is newer than this library knows: upgrade viggle-async."""

    def __init__(self, message: str, *, found: int, supported: int) -> None:
        super().__init__(message)
        self.found = found
        self.supported = supported


class LedgerKeyMismatchError(LedgerError):
    """The ledger was created with another API key; this worker must not spend from it."""
