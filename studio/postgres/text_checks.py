"""Text-fidelity results on PostgreSQL: one row per checked image (see `studio/fidelity.py`),
with the methods, rows and meaning of `studio/sqlite/text_checks.py`.

Contract (as on SQLite):
- A check replaces the image's previous one; a check for an image deleted meanwhile is
  dropped (`record_text_check` returns False), never an error.
- Images needing a check are kept ones whose prompt quotes text (`quotes.wanted_strings`,
  the one rule) and that have none yet.

The newer check wins, on any number of replicas: the write is one upsert on the image that
replaces the stored check only when it is not newer (`checked_at`) than this one, so two
replicas checking one image at once keep the later result whichever commits last, and an
older check arriving late changes nothing (it still returns True: the image has a check).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from ..quotes import wanted_strings
from ..records import FidelityReport, StringCheck, TextCheck
from .db import PgDatabase


class PgTextCheckRows(PgDatabase):
    """`TextCheckRepository` over PostgreSQL (its lease methods are in `claims.py`)."""

    def record_text_check(self, output_id: int, report: FidelityReport, *, now: float | None = None) -> bool:
        """Store (or replace, newer wins) an image's check. False when the image was deleted meanwhile."""
        with self._tx() as c:
            # Lock the image (KEY SHARE: a delete waits, other checks do not), so "gone" is
            # decided once and the insert below never fails on the foreign key.
            if (
                c.execute("SELECT 1 FROM outputs WHERE id = %s FOR KEY SHARE", (output_id,)).fetchone()
                is None
            ):
                return False
            c.execute(
                "INSERT INTO text_checks (output_id, state, wanted, matched, checks, read_text,"
                " engine, seconds, passes, message, checked_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (output_id) DO UPDATE SET state = EXCLUDED.state, wanted = EXCLUDED.wanted,"
                " matched = EXCLUDED.matched, checks = EXCLUDED.checks, read_text = EXCLUDED.read_text,"
                " engine = EXCLUDED.engine, seconds = EXCLUDED.seconds, passes = EXCLUDED.passes,"
                " message = EXCLUDED.message, checked_at = EXCLUDED.checked_at"
                " WHERE text_checks.checked_at <= EXCLUDED.checked_at",
                (
                    output_id,
                    report.state,
                    len(report.checks),
                    report.matched,
                    json.dumps([ch.to_dict() for ch in report.checks], ensure_ascii=False),
                    report.read_text,
                    report.engine,
                    report.seconds,
                    report.passes,
                    report.message or None,
                    time.time() if now is None else now,
                ),
            )
        return True

    def text_checks_for(self, output_ids: Sequence[int]) -> dict[int, TextCheck]:
        ids = [i for i in output_ids if i is not None]
        if not ids:
            return {}
        with self._read() as c:
            rows = c.execute(
                "SELECT output_id, state, checks, read_text, engine, seconds, passes, message, checked_at"
                " FROM text_checks WHERE output_id = ANY(%s)",
                (ids,),
            ).fetchall()
        out = {}
        for r in rows:
            checks = tuple(StringCheck.from_dict(d) for d in json.loads(r["checks"]))
            out[int(r["output_id"])] = TextCheck(
                int(r["output_id"]), r["state"], checks, r["read_text"], r["engine"], r["seconds"],
                r["passes"], r["message"], r["checked_at"],
            )  # fmt: skip
        return out

    def text_check(self, output_id: int) -> TextCheck | None:
        return self.text_checks_for([output_id]).get(output_id)

    def text_check_candidate(self, output_id: int) -> tuple[str, str] | None:
        """(prompt, sha256) of a kept image, for the checker; None if not kept (or gone)."""
        with self._read() as c:
            r = c.execute(
                "SELECT s.prompt, o.sha256 FROM outputs o JOIN submissions s ON s.id = o.submission_id"
                " WHERE o.id = %s AND o.state = 'kept' AND o.sha256 IS NOT NULL",
                (output_id,),
            ).fetchone()
        return (str(r["prompt"]), str(r["sha256"])) if r else None

    def outputs_needing_text_check(self, *, redo_unavailable: bool = False, limit: int = 500) -> list[int]:
        """Kept images whose prompt quotes text and that have no check yet, oldest first.

        With `redo_unavailable`, images checked while OCR was missing come back too.
        """
        redo = " OR t.state = 'unavailable'" if redo_unavailable else ""
        out: list[int] = []
        with self._read() as c:
            # A server-side cursor: rows stream in until `limit` quoting prompts are found.
            with c.transaction(), c.cursor(name="text_check_backlog") as cur:
                cur.execute(
                    "SELECT o.id, s.prompt FROM outputs o JOIN submissions s ON s.id = o.submission_id"
                    " LEFT JOIN text_checks t ON t.output_id = o.id"
                    f" WHERE o.state = 'kept' AND (t.output_id IS NULL{redo}) ORDER BY o.id"
                )
                for r in cur:
                    if wanted_strings(r["prompt"]):  # quoting is decided in Python, by the one quote rule
                        out.append(int(r["id"]))
                        if len(out) >= limit:
                            break
        return out
