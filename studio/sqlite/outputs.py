"""Outputs: each image of a successful task, from its temporary URL to kept or failed,
and its way out (trash, restore, delete for good).

Contract:
- An output is `pending` until downloaded; a failed try sets `next_try_at`
  (or makes the failure final); a kept one carries its hash, size and dimensions.
- Trash hides kept outputs from every view under one deletion (token, `purge_after`);
  restoring the deletion inside its window puts them back untouched; the purge of
  due deletions and delete remove rows for good (and submissions left without any)
  and return the hashes no other output uses, for the caller to remove the files.
  Undo and purge are each one write transaction (SQLite's one writer orders them).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from ..records import Deletion, OutputRow, OutputState
from .db import Database
from .submissions import clean

TRASHED = OutputState.TRASHED
OUT_COLS = ", ".join(OutputRow.__dataclass_fields__)


class OutputRows(Database):
    """`OutputRepository` and `TrashRepository` over SQLite."""

    def outputs_for(self, submission_ids: Sequence[int]) -> dict[int, list[OutputRow]]:
        if not submission_ids:
            return {}
        marks = ",".join("?" * len(submission_ids))
        rows = self._conn().execute(
            f"SELECT {OUT_COLS} FROM outputs WHERE submission_id IN ({marks}) ORDER BY submission_id, idx",
            list(submission_ids),
        )
        out: dict[int, list[OutputRow]] = {}
        for r in rows:
            o = OutputRow(**dict(r))
            out.setdefault(o.submission_id, []).append(o)
        return out

    def output(self, output_id: int) -> OutputRow | None:
        r = self._conn().execute(f"SELECT {OUT_COLS} FROM outputs WHERE id=?", (output_id,)).fetchone()
        return OutputRow(**dict(r)) if r else None

    def pending_outputs(self, now: float | None = None) -> list[OutputRow]:
        """Outputs waiting for download whose next try is due."""
        now = time.time() if now is None else now
        rows = self._conn().execute(
            f"SELECT {OUT_COLS} FROM outputs WHERE state='pending' AND next_try_at<=? ORDER BY id", (now,)
        )
        return [OutputRow(**dict(r)) for r in rows]

    def next_output_due(self) -> float | None:
        r = self._conn().execute("SELECT MIN(next_try_at) FROM outputs WHERE state='pending'").fetchone()
        return r[0]

    def output_kept(
        self,
        output_id: int,
        *,
        sha256: str,
        width: int,
        height: int,
        nbytes: int,
        now: float | None = None,
    ) -> None:
        self._write(
            "UPDATE outputs SET state='kept', sha256=?, width=?, height=?, bytes=?,"
            " kept_at=?, error=NULL, attempts=attempts+1 WHERE id=?",
            (sha256, width, height, nbytes, time.time() if now is None else now, output_id),
        )

    def output_failed(self, output_id: int, message: str, *, retry_at: float | None) -> None:
        """Record a failed download; `retry_at=None` makes the failure final."""
        message = clean(message)
        if retry_at is None:
            self._write(
                "UPDATE outputs SET state='failed', error=?, attempts=attempts+1 WHERE id=?",
                (message, output_id),
            )
        else:
            self._write(
                "UPDATE outputs SET error=?, attempts=attempts+1, next_try_at=? WHERE id=?",
                (message, retry_at, output_id),
            )

    def trash_outputs(
        self, output_ids: Sequence[int], *, token: str, purge_after: float, now: float | None = None
    ) -> list[int]:
        """Hide kept outputs from every view (state `trashed`) under the deletion `token`,
        undoable until `purge_after`; rows and files stay until `purge_due`. Returns the ids
        hidden (no deletion is recorded when none was kept)."""
        if not output_ids:
            return []
        marks = ",".join("?" * len(output_ids))
        with self._tx() as c:
            ids = [
                r[0]
                for r in c.execute(
                    f"SELECT id FROM outputs WHERE state = 'kept' AND id IN ({marks}) ORDER BY id",
                    list(output_ids),
                )
            ]
            if ids:
                c.execute(
                    "INSERT INTO deletions (token, purge_after, deleted_at) VALUES (?, ?, ?)",
                    (token, purge_after, time.time() if now is None else now),
                )
                c.executemany(
                    f"UPDATE outputs SET state = '{TRASHED}', deletion = ? WHERE id = ?",
                    [(token, i) for i in ids],
                )
            return ids

    def deletion(self, token: str) -> Deletion | None:
        """The deletion `token` while it is not purged (nor undone): its outputs and window."""
        c = self._conn()
        row = c.execute("SELECT purge_after FROM deletions WHERE token = ?", (token,)).fetchone()
        if row is None:
            return None
        ids = c.execute(
            f"SELECT id FROM outputs WHERE deletion = ? AND state = '{TRASHED}' ORDER BY id", (token,)
        ).fetchall()
        return Deletion(token, tuple(r[0] for r in ids), float(row[0]))

    def restore_deletion(self, token: str, now: float) -> int:
        """Put a deletion's outputs back as kept (favourites, collections, text checks
        untouched) if its window is still open at `now`; how many came back (0: too late)."""
        with self._tx() as c:
            if not c.execute(
                "DELETE FROM deletions WHERE token = ? AND purge_after > ?", (token, now)
            ).rowcount:
                return 0
            return c.execute(
                f"UPDATE outputs SET state = 'kept', deletion = NULL WHERE deletion = ? AND state = '{TRASHED}'",
                (token,),
            ).rowcount

    def purge_due(self, now: float) -> list[str]:
        """Delete for good the outputs of every deletion whose window ended by `now` (one
        transaction, so an Undo lands before or after it, whole); the sha256 of files no
        longer used, as `delete_outputs` returns them."""
        with self._tx() as c:
            tokens = [r[0] for r in c.execute("SELECT token FROM deletions WHERE purge_after <= ?", (now,))]
            if not tokens:
                return []
            marks = ",".join("?" * len(tokens))
            ids = [
                r[0]
                for r in c.execute(
                    f"SELECT id FROM outputs WHERE state = '{TRASHED}' AND deletion IN ({marks})", tokens
                )
            ]
            c.execute(f"DELETE FROM deletions WHERE token IN ({marks})", tokens)
            return _delete(c, ids)

    def trashed_outputs(self) -> list[int]:
        return [
            r[0]
            for r in self._conn().execute(f"SELECT id FROM outputs WHERE state = '{TRASHED}' ORDER BY id")
        ]

    def delete_outputs(self, output_ids: Sequence[int]) -> list[str]:
        """Delete outputs (and submissions left without any). Returns the sha256
        of files no other output still uses, for the caller to remove from disk."""
        if not output_ids:
            return []
        with self._tx() as c:
            return _delete(c, output_ids)


def _delete(c: sqlite3.Connection, output_ids: Sequence[int]) -> list[str]:
    """Inside a write transaction: delete outputs and the submissions left without any;
    the sha256 no remaining output uses."""
    if not output_ids:
        return []
    marks = ",".join("?" * len(output_ids))
    rows = c.execute(
        f"SELECT DISTINCT sha256, submission_id FROM outputs WHERE id IN ({marks})", list(output_ids)
    ).fetchall()
    c.execute(f"DELETE FROM outputs WHERE id IN ({marks})", list(output_ids))
    for sub_id in {r[1] for r in rows}:
        left = c.execute("SELECT COUNT(*) FROM outputs WHERE submission_id = ?", (sub_id,)).fetchone()[0]
        if not left:
            c.execute("DELETE FROM submissions WHERE id = ?", (sub_id,))
    orphans = []
    for sha in {r[0] for r in rows if r[0]}:
        if not c.execute("SELECT 1 FROM outputs WHERE sha256 = ? LIMIT 1", (sha,)).fetchone():
            orphans.append(sha)
    return orphans
