"""Many workers, one account: the shared ledger on PostgreSQL (``pip install
'viggle-async[postgres]'``).

``PostgresLedger`` (the pool, the migrated schema, the API-key binding, each run's budget
and the asset-reuse index) and ``PostgresAccountState`` (``AccountState`` across
processes). See docs/scale-out.md for the design of the distributed bulk run.
"""

from ._account import PostgresAccountState
from ._dist import (
    DistRow,
    RowBook,
    RunCounts,
    decode_spec_value,
    hash_file,
    orphaned_rows,
    row_spec,
    unfinished_rows,
)
from ._dsn import DSN_ENV, JOURNAL_DSN_ENV, redact_dsn, resolve_dsn
from ._errors import (
    LedgerConnectionError,
    LedgerError,
    LedgerKeyMismatchError,
    LedgerSchemaTooNewError,
)
from ._journal import PostgresJournalStore, open_postgres_journal
from ._ledger import SCHEMA_VERSION, AccountSummary, AssetClaim, PostgresLedger, RunCredits
from ._queue import RowQueue

__all__ = [
    "AccountSummary",
    "AssetClaim",
    "DSN_ENV",
    "DistRow",
    "JOURNAL_DSN_ENV",
    "LedgerConnectionError",
    "LedgerError",
    "LedgerKeyMismatchError",
    "LedgerSchemaTooNewError",
    "PostgresAccountState",
    "PostgresJournalStore",
    "PostgresLedger",
    "RowBook",
    "RowQueue",
    "RunCounts",
    "RunCredits",
    "SCHEMA_VERSION",
    "decode_spec_value",
    "hash_file",
    "open_postgres_journal",
    "orphaned_rows",
    "redact_dsn",
    "resolve_dsn",
    "row_spec",
    "unfinished_rows",
]
