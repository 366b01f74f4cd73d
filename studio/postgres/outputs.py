"""Outputs on PostgreSQL: each image of a successful task, from its temporary URL to kept or
failed, and its way out (trash, restore, delete for good), with the methods, rows and meaning
of `studio/sqlite/outputs.py`.

Beyond the SQLite contract, for several replicas at once:
- A deletion's row in `deletions` is what Undo and the purge contend for: Undo deletes it
  (only while `purge_after > now`) before restoring, the purge takes due rows
  `FOR UPDATE SKIP LOCKED` and deletes them with their outputs, each in one transaction.
  So an Undo on one replica and a sweep on another restore or purge one deletion whole,
  never half, and two sweeps purge it once.
- Deleting decides what was the last use of a file or a submission under locks held to
  the end of the transaction (the submissions' rows `FOR UPDATE`, each content hash by
  `pg_advisory_xact_lock(BLOB_LOCK, hashtext(sha256))`), so when two replicas delete the
  last two outputs of one file (or of one submission) at once, exactly one of them sees
  it unused: the file's hash is returned once and the submission goes once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..records import Deletion, OutputRow, OutputState
from ..sqlite.submissions import clean
from .db import PgDatabase

TRASHED = OutputState.TRASHED
OUT_COLS = ", ".join(OutputRow.__dataclass_fields__)
#: First key of pg_advisory_xact_lock(int, int) on one content hash.
BLOB_LOCK = 0x626C62  # "blb"


class PgOutputRows(PgDatabase):
    """`OutputRepository` and `TrashRepository` over PostgreSQL."""

    def outputs_for(self, submission_ids: Sequence[int]) -> dict[int, list[OutputRow]]:
        if not submission_ids:
            return {}
        with self._read() as c:
            rows = c.execute(
                f"SELECT {OUT_COLS} FROM outputs WHERE submission_id = ANY(%s) ORDER BY submission_id, idx",
                (list(submission_ids),),
            ).fetchall()
        out: dict[int, list[OutputRow]] = {}
        for r in rows:
            o = OutputRow(**r)
            out.setdefault(o.submission_id, []).append(o)
        return out

    def output(self, output_id: int) -> OutputRow | None:
        with self._read() as c:
            r = c.execute(f"SELECT {OUT_COLS} FROM outputs WHERE id = %s", (output_id,)).fetchone()
        return OutputRow(**r) if r else None

    def pending_outputs(self, now: float | None = None) -> list[OutputRow]:
        """Outputs waiting for download whose next try is due."""
        now = time.time() if now is None else now
        with self._read() as c:
            rows = c.execute(
                f"SELECT {OUT_COLS} FROM outputs WHERE state = 'pending' AND next_try_at <= %s ORDER BY id",
                (now,),
            ).fetchall()
        return [OutputRow(**r) for r in rows]

    def next_output_due(self) -> float | None:
        with self._read() as c:
            r = c.execute("SELECT MIN(next_try_at) AS due FROM outputs WHERE state = 'pending'").fetchone()
        return None if r["due"] is None else float(r["due"])

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
            "UPDATE outputs SET state = 'kept', sha256 = %s, width = %s, height = %s, bytes = %s,"
            " kept_at = %s, error = NULL, attempts = attempts + 1 WHERE id = %s",
            (sha256, width, height, nbytes, time.time() if now is None else now, output_id),
        )

    def output_failed(self, output_id: int, message: str, *, retry_at: float | None) -> None:
        """Record a failed download; `retry_at=None` makes the failure final."""
        message = clean(message)
        if retry_at is None:
            self._write(
                "UPDATE outputs SET state = 'failed', error = %s, attempts = attempts + 1 WHERE id = %s",
                (message, output_id),
            )
        else:
            self._write(
                "UPDATE outputs SET error = %s, attempts = attempts + 1, next_try_at = %s WHERE id = %s",
                (message, retry_at, output_id),
            )

    def trash_outputs(
        self, output_ids: Sequence[int], *, token: str, purge_after: float, now: float | None = None
    ) -> list[int]:
        """Hide kept outputs from every view (state `trashed`) under the deletion `token`,
        undoable until `purge_after`; the ids hidden (no deletion recorded when none was kept)."""
        if not output_ids:
            return []
        with self._tx() as c:
            rows = c.execute(
                "UPDATE outputs SET state = %s, deletion = %s WHERE state = 'kept' AND id = ANY(%s) RETURNING id",
                (TRASHED, token, list(output_ids)),
            ).fetchall()
            if rows:
                c.execute(
                    "INSERT INTO deletions (token, purge_after, deleted_at) VALUES (%s, %s, %s)",
                    (token, purge_after, time.time() if now is None else now),
                )
        return sorted(int(r["id"]) for r in rows)

    def deletion(self, token: str) -> Deletion | None:
        """The deletion `token` while it is not purged (nor undone): its outputs and window."""
        with self._read() as c:
            row = c.execute("SELECT purge_after FROM deletions WHERE token = %s", (token,)).fetchone()
            if row is None:
                return None
            ids = c.execute(
                "SELECT id FROM outputs WHERE deletion = %s AND state = %s ORDER BY id", (token, TRASHED)
            ).fetchall()
        return Deletion(token, tuple(int(r["id"]) for r in ids), float(row["purge_after"]))

    def restore_deletion(self, token: str, now: float) -> int:
        """Put a deletion's outputs back as kept if its window is open at `now`; how many came
        back (0: too late). Taking the deletion's row first (a purge holding it makes this wait,
        then find it gone) is what makes Undo and purge exclude each other."""
        with self._tx() as c:
            won = c.execute(
                "DELETE FROM deletions WHERE token = %s AND purge_after > %s RETURNING token", (token, now)
            ).fetchone()
            if won is None:
                return 0
            return int(
                c.execute(
                    "UPDATE outputs SET state = 'kept', deletion = NULL WHERE deletion = %s AND state = %s",
                    (token, TRASHED),
                ).rowcount
            )

    def purge_due(self, now: float) -> list[str]:
        """Delete for good the outputs of every deletion due at `now`; the sha256 of files no
        longer used. Each due deletion's row is taken `FOR UPDATE SKIP LOCKED`: one an Undo
        holds is left to it, and two replicas sweeping at once purge each deletion once."""
        with self._tx() as c:
            tokens = [
                r["token"]
                for r in c.execute(
                    "DELETE FROM deletions WHERE token IN (SELECT token FROM deletions WHERE purge_after <= %s"
                    " ORDER BY token FOR UPDATE SKIP LOCKED) RETURNING token",
                    (now,),
                ).fetchall()
            ]
            if not tokens:
                return []
            gone = c.execute(
                "DELETE FROM outputs WHERE deletion = ANY(%s) AND state = %s RETURNING sha256, submission_id",
                (tokens, TRASHED),
            ).fetchall()
            return _forget(c, gone)

    def trashed_outputs(self) -> list[int]:
        with self._read() as c:
            rows = c.execute("SELECT id FROM outputs WHERE state = %s ORDER BY id", (TRASHED,)).fetchall()
        return [int(r["id"]) for r in rows]

    def delete_outputs(self, output_ids: Sequence[int]) -> list[str]:
        """Delete outputs (and submissions left without any). Returns the sha256 of files no
        other output still uses, for the caller to remove from the blob store."""
        if not output_ids:
            return []
        with self._tx() as c:
            gone = c.execute(
                "DELETE FROM outputs WHERE id = ANY(%s) RETURNING sha256, submission_id", (list(output_ids),)
            ).fetchall()
            return _forget(c, gone)


def _forget(c: Any, gone: list[Any]) -> list[str]:
    """Inside the transaction that deleted the output rows `gone` (sha256, submission_id):
    delete the submissions left without outputs; the hashes no remaining output uses."""
    # Locks in one order (submissions by id, then hashes sorted), held to the commit:
    # the last of two concurrent deleters checks after the first committed.
    subs = sorted({int(r["submission_id"]) for r in gone})
    locked = c.execute(
        "SELECT id FROM submissions WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (subs,)
    ).fetchall()
    for r in locked:
        left = c.execute("SELECT 1 FROM outputs WHERE submission_id = %s LIMIT 1", (r["id"],)).fetchone()
        if left is None:
            c.execute("DELETE FROM submissions WHERE id = %s", (r["id"],))
    orphans = []
    for sha in sorted({r["sha256"] for r in gone if r["sha256"]}):
        c.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (BLOB_LOCK, sha))
        if c.execute("SELECT 1 FROM outputs WHERE sha256 = %s LIMIT 1", (sha,)).fetchone() is None:
            orphans.append(sha)
    return orphans
