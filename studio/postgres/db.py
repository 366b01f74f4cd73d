"""The PostgreSQL plumbing every adapter module shares, the twin of `studio/sqlite/db.py`.

Nothing outside `studio/postgres/` sees a connection: the adapter modules are
mixins of `PgStore` (`studio/postgres/store.py`) and reach the database only
through `PgDatabase`'s private methods.

Contract:
- `_tx()` is one transaction on one pooled connection (commit on a clean exit,
  rollback on an error); rows come back as dicts (`psycopg.rows.dict_row`).
- `_read()` is a connection for reads (its own short transaction).
- Placeholders are psycopg's `%s` / `%(name)s`; races the SQLite adapter avoided by
  its single writer are closed here by row locks (`SELECT … FOR UPDATE`,
  `FOR UPDATE SKIP LOCKED`) or `pg_advisory_xact_lock`, each stated where it is used.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from . import schema


class PgDatabase:
    """A migrated PostgreSQL database behind a psycopg_pool.ConnectionPool."""

    def __init__(self, pool: Any) -> None:
        from psycopg.rows import tuple_row

        self._pool = pool
        with pool.connection() as conn:
            conn.row_factory = tuple_row  # a pooled connection keeps the dict_row an earlier _tx set
            schema.migrate(conn)

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        from psycopg.rows import dict_row

        with self._pool.connection() as conn:
            conn.row_factory = dict_row
            with conn.transaction():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Any]:
        from psycopg.rows import dict_row

        with self._pool.connection() as conn:
            conn.row_factory = dict_row
            yield conn

    def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in its own transaction; the number of rows it touched."""
        with self._tx() as conn:
            return int(conn.execute(sql, params).rowcount)

    def close(self) -> None:
        self._pool.close()

    def schema_version(self) -> int:
        from psycopg.rows import tuple_row

        with self._pool.connection() as conn:
            conn.row_factory = tuple_row
            return schema.current_version(conn)
