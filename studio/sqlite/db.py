"""The SQLite plumbing every adapter module shares: one file (WAL), a connection per
thread, short write transactions serialised in-process, the schema migrated on open.

Nothing outside `studio/sqlite/` sees a connection: the adapter modules are
mixins of `Store` and reach the database only through `Database`'s private
methods.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..repositories import DatabaseUnusable
from . import schema


class Database:
    """Thread-safe access to one SQLite file (one connection per thread)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Owner-only from the first byte; SQLite gives the WAL and SHM files the same mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self._local = threading.local()
        self._write_lock = threading.Lock()
        try:
            with self._write_lock:
                schema.migrate(self._conn(), self.path)
        except sqlite3.Error as exc:
            self.close()
            raise DatabaseUnusable(str(exc)) from exc

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=10000")
            self._local.conn = conn
        return conn

    def _write(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self._write_lock:
            return self._conn().execute(sql, params)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; writers are serialised in-process, readers never wait."""
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def schema_version(self) -> int:
        return schema.version_of(self._conn())

    def ping(self) -> None:
        """`Repositories.ping`: a file on this machine answers while the studio runs."""
        self._conn().execute("SELECT 1")
