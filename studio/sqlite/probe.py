"""The start-up look at a database file: can it be opened, read, written, is it intact?

Answers in the adapter-neutral `DatabaseProblem` vocabulary, so the start-up
checks (`studio/startup.py`) word the refusal without knowing the driver.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..repositories import DatabaseProblem


def _is_locked(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def probe_database(path: Path, *, lock_wait_s: float) -> tuple[DatabaseProblem, str] | None:
    """(problem, detail) for the database file at `path`, or None when it is usable (or absent).

    Waits up to `lock_wait_s` for another writer before calling it locked.
    """
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(path, timeout=lock_wait_s, isolation_level=None)
    except sqlite3.Error as exc:
        return DatabaseProblem.UNOPENABLE, str(exc)
    try:
        try:
            result = conn.execute("PRAGMA quick_check(1)").fetchone()
        except sqlite3.OperationalError as exc:
            return (DatabaseProblem.LOCKED if _is_locked(exc) else DatabaseProblem.UNREADABLE), str(exc)
        except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
            return DatabaseProblem.DAMAGED, str(exc)
        if not result or result[0] != "ok":
            return DatabaseProblem.DAMAGED, result[0] if result else "no answer"
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            return (DatabaseProblem.LOCKED if _is_locked(exc) else DatabaseProblem.UNWRITABLE), str(exc)
    finally:
        conn.close()
    return None
