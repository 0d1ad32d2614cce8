"""Where ``PostgresJournalStore`` was first published; it now lives in ``viggle_async.pg``
(on the shared ledger's pool, DSN resolution, redaction and key binding). Kept so that
``from viggle_async import PostgresJournalStore`` keeps its lazy import of this module."""

from .pg._journal import POSTGRES_SCHEMA_VERSION, PostgresJournalStore, open_postgres_journal

__all__ = ["POSTGRES_SCHEMA_VERSION", "PostgresJournalStore", "open_postgres_journal"]
