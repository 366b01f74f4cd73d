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
- The server going away (refused, restarting, a connection cut mid-statement) surfaces
  as `repositories.StoreUnavailable`, never as a driver error: the transaction it cut
  was rolled back by the server, so the caller may simply try again later. While an
  outage is known a call fails at once instead of waiting out the pool, so a page or a
  worker loop learns of it at once; `ping` (the health check, every 2 s, on a direct
  connection of its own) is what tries the server, and ends the outage once it answers.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..repositories import StoreUnavailable
from . import schema

#: Seconds a quick call (`ping`'s check of the pool) waits for a connection.
QUICK_S = 1.0
_AWAY = "the database server is not answering"
#: SQLSTATE classes and codes that mean the server is gone, not that the statement was wrong:
#: connection exceptions (08…), and the server shutting down or still starting (57P01-57P03).
_GONE = ("08", "57P01", "57P02", "57P03")


def is_outage(exc: BaseException) -> bool:
    """Does this driver error mean the server cannot be reached (rather than a bad statement)?"""
    import psycopg
    from psycopg_pool import PoolTimeout

    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, psycopg.InterfaceError):
        return "closed" in str(exc)  # the connection went away under us
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith(_GONE)  # None: the socket itself failed
    return False


class PgDatabase:
    """A migrated PostgreSQL database behind a psycopg_pool.ConnectionPool."""

    def __init__(
        self, pool: Any, *, reopen: Callable[[], Any] | None = None, connect: Callable[[], Any] | None = None
    ) -> None:
        from psycopg.rows import tuple_row

        self._pool = pool
        self._reopen = reopen  # a fresh pool on the same database (`ping` after an outage)
        self._connect = connect  # one direct connection, for `ping` (never the pool's: it may be busy)
        self._down = False  # an outage was seen and no call has got a connection since
        self._swap = threading.Lock()
        with pool.connection() as conn:
            conn.row_factory = tuple_row  # a pooled connection keeps the dict_row an earlier _tx set
            schema.migrate(conn)

    @property
    def unavailable(self) -> bool:
        """True from an outage seen until a call gets a connection again."""
        return self._down

    @contextmanager
    def _conn(self, *, quick: bool = False) -> Iterator[Any]:
        """A pooled connection; an outage (at checkout or during the block) is StoreUnavailable.

        While an outage is known only `quick` calls try the server: every other call fails at
        once, so a page drawn meanwhile is not slowed by one wait per query. Only a failure on
        the pool in use marks an outage (one on a pool `ping` has just replaced says nothing),
        and a pool merely busy (every connection lent, a `PoolTimeout` while the server still
        takes a direct connection) is not one."""
        from psycopg_pool import PoolClosed, PoolTimeout

        if self._down and not quick:
            raise StoreUnavailable(_AWAY)
        pool = self._pool
        timeout = QUICK_S if quick else None
        try:
            with contextlib.ExitStack() as stack:
                try:
                    conn = stack.enter_context(pool.connection(timeout=timeout))
                except PoolClosed:
                    if pool is self._pool:
                        raise
                    pool = self._pool  # replaced while this call waited: the fresh one
                    conn = stack.enter_context(pool.connection(timeout=timeout))
                if pool is self._pool:
                    self._down = False
                yield conn
        except Exception as exc:
            if not is_outage(exc):
                raise
            if pool is self._pool and not (isinstance(exc, PoolTimeout) and self._server_answers()):
                self._down = True
            raise StoreUnavailable(_AWAY) from None

    def _server_answers(self) -> bool:
        """Does the server take a connection of its own now (bounded by its connect timeout)?"""
        if self._connect is None:
            return False
        try:
            self._connect().close()
        except Exception:
            return False
        return True

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        from psycopg.rows import dict_row

        with self._conn() as conn:
            conn.row_factory = dict_row
            with conn.transaction():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Any]:
        from psycopg.rows import dict_row

        with self._conn() as conn:
            conn.row_factory = dict_row
            yield conn

    def ping(self) -> None:
        """`Repositories.ping`: does the server answer now (`StoreUnavailable` within seconds)?

        The server is asked on a direct connection of its own, so a busy pool is never taken
        for an outage. After an outage the pool's own reconnects back off (up to a minute
        apart), so when it still has no connection to lend once the server answers, a fresh
        pool takes its place: the first ping after the server is back ends the outage, and
        the old pool is closed behind it (a connection still lent is closed when returned)."""
        if self._connect is None:  # no direct way in: the pool itself is asked
            with self._conn(quick=True) as conn:
                conn.execute("SELECT 1")
            return
        if not self._server_answers():
            self._down = True
            raise StoreUnavailable(_AWAY)
        if not self._down:
            return
        try:
            with self._conn(quick=True) as conn:
                conn.execute("SELECT 1")
        except StoreUnavailable:
            self._revive()

    def _revive(self) -> None:
        with self._swap:
            try:
                fresh = self._reopen() if self._reopen is not None else None
            except Exception:  # DatabaseUnavailable: still away (its text is for the start, not here)
                raise StoreUnavailable(_AWAY) from None
            if fresh is None:
                raise StoreUnavailable(_AWAY)
            old, self._pool = self._pool, fresh
            self._down = False
        threading.Thread(target=old.close, name="pg-old-pool", daemon=True).start()

    def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in its own transaction; the number of rows it touched."""
        with self._tx() as conn:
            return int(conn.execute(sql, params).rowcount)

    def close(self) -> None:
        self._pool.close()

    def schema_version(self) -> int:
        from psycopg.rows import tuple_row

        with self._conn() as conn:
            conn.row_factory = tuple_row
            return schema.current_version(conn)
