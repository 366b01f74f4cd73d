"""Outputs on PostgreSQL: each image of a successful task, from its temporary URL to kept or
failed, and its way out (trash, restore, delete for good), with the methods, rows and meaning
of `studio/sqlite/outputs.py`.

Beyond the SQLite contract, for several replicas at once:
- Trash and restore are one statement each, so two people trashing and restoring one image
  at once leave it in one of the two states, never half of each.
- `purge_trashed` deletes only rows still trashed when it deletes them: an image restored
  on another replica meanwhile stays.
- Deleting decides what was the last use of a file or a submission under locks held to
  the end of the transaction (the submissions' rows `FOR UPDATE`, each content hash by
  `pg_advisory_xact_lock(BLOB_LOCK, hashtext(sha256))`), so when two replicas delete the
  last two outputs of one file (or of one submission) at once, exactly one of them sees
  it unused: the file's hash is returned once and the submission goes once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..records import OutputRow, OutputState
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

    def trash_outputs(self, output_ids: Sequence[int]) -> list[int]:
        """Hide kept outputs from every view (state `trashed`) until `purge_trashed`; the ids hidden."""
        if not output_ids:
            return []
        with self._tx() as c:
            rows = c.execute(
                "UPDATE outputs SET state = %s WHERE state = 'kept' AND id = ANY(%s) RETURNING id",
                (TRASHED, list(output_ids)),
            ).fetchall()
        return sorted(int(r["id"]) for r in rows)

    def restore_outputs(self, output_ids: Sequence[int]) -> int:
        """Put trashed outputs back as kept (favourites, collections, text checks untouched)."""
        if not output_ids:
            return 0
        return self._write(
            "UPDATE outputs SET state = 'kept' WHERE state = %s AND id = ANY(%s)", (TRASHED, list(output_ids))
        )

    def trashed_outputs(self) -> list[int]:
        with self._read() as c:
            rows = c.execute("SELECT id FROM outputs WHERE state = %s ORDER BY id", (TRASHED,)).fetchall()
        return [int(r["id"]) for r in rows]

    def purge_trashed(self, output_ids: Sequence[int] | None = None) -> list[str]:
        """Delete for good those of `output_ids` (default: all) still trashed; returns the sha256
        of files no longer used, as `delete_outputs` does."""
        ids = self.trashed_outputs() if output_ids is None else list(output_ids)
        return self._delete(ids, only_trashed=True)

    def delete_outputs(self, output_ids: Sequence[int]) -> list[str]:
        """Delete outputs (and submissions left without any). Returns the sha256 of files no
        other output still uses, for the caller to remove from the blob store."""
        return self._delete(list(output_ids), only_trashed=False)

    def _delete(self, output_ids: list[int], *, only_trashed: bool) -> list[str]:
        if not output_ids:
            return []
        with self._tx() as c:
            gone = c.execute(
                "DELETE FROM outputs WHERE id = ANY(%s)"
                + (" AND state = %s" if only_trashed else "")
                + " RETURNING sha256, submission_id",
                (output_ids, TRASHED) if only_trashed else (output_ids,),
            ).fetchall()
            # Locks in one order (submissions by id, then hashes sorted), held to the commit:
            # the last of two concurrent deleters checks after the first committed.
            subs = sorted({int(r["submission_id"]) for r in gone})
            locked = c.execute(
                "SELECT id FROM submissions WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (subs,)
            ).fetchall()
            for r in locked:
                left = c.execute(
                    "SELECT 1 FROM outputs WHERE submission_id = %s LIMIT 1", (r["id"],)
                ).fetchone()
                if left is None:
                    c.execute("DELETE FROM submissions WHERE id = %s", (r["id"],))
            orphans = []
            for sha in sorted({r["sha256"] for r in gone if r["sha256"]}):
                c.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (BLOB_LOCK, sha))
                if c.execute("SELECT 1 FROM outputs WHERE sha256 = %s LIMIT 1", (sha,)).fetchone() is None:
                    orphans.append(sha)
            return orphans
