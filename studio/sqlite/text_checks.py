"""Text-fidelity results: one row per checked image (see `studio/fidelity.py`).

Contract:
- A check replaces the image's previous one; a check for an image deleted
  meanwhile is dropped (`record_text_check` returns False), never an error.
- Images needing a check are kept ones whose prompt quotes text
  (`quotes.wanted_strings`, the one rule) and that have none yet.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence

from ..quotes import wanted_strings
from ..records import FidelityReport, StringCheck, TextCheck
from .db import Database


class TextCheckRows(Database):
    """`TextCheckRepository` over SQLite."""

    def record_text_check(self, output_id: int, report: FidelityReport, *, now: float | None = None) -> bool:
        """Store (or replace) an image's check. False when the image was deleted meanwhile."""
        try:
            self._write(
                "INSERT OR REPLACE INTO text_checks (output_id, state, wanted, matched, checks, read_text,"
                " engine, seconds, passes, message, checked_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    output_id,
                    report.state,
                    len(report.checks),
                    report.matched,
                    json.dumps([c.to_dict() for c in report.checks], ensure_ascii=False),
                    report.read_text,
                    report.engine,
                    report.seconds,
                    report.passes,
                    report.message or None,
                    time.time() if now is None else now,
                ),
            )
        except sqlite3.IntegrityError:  # the output row is gone (deleted while being read)
            return False
        return True

    def text_checks_for(self, output_ids: Sequence[int]) -> dict[int, TextCheck]:
        ids = [i for i in output_ids if i is not None]
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._conn().execute(
            "SELECT output_id, state, checks, read_text, engine, seconds, passes, message, checked_at"
            f" FROM text_checks WHERE output_id IN ({marks})",
            ids,
        )
        out = {}
        for r in rows:
            checks = tuple(StringCheck.from_dict(d) for d in json.loads(r["checks"]))
            out[r["output_id"]] = TextCheck(
                r["output_id"], r["state"], checks, r["read_text"], r["engine"], r["seconds"],
                r["passes"], r["message"], r["checked_at"],
            )  # fmt: skip
        return out

    def text_check(self, output_id: int) -> TextCheck | None:
        return self.text_checks_for([output_id]).get(output_id)

    def text_check_candidate(self, output_id: int) -> tuple[str, str] | None:
        """(prompt, sha256) of a kept image, for the checker; None if not kept (or gone)."""
        r = (
            self._conn()
            .execute(
                "SELECT s.prompt, o.sha256 FROM outputs o JOIN submissions s ON s.id = o.submission_id"
                " WHERE o.id = ? AND o.state = 'kept' AND o.sha256 IS NOT NULL",
                (output_id,),
            )
            .fetchone()
        )
        return (r[0], r[1]) if r else None

    def outputs_needing_text_check(self, *, redo_unavailable: bool = False, limit: int = 500) -> list[int]:
        """Kept images whose prompt quotes text and that have no check yet, oldest first.

        With `redo_unavailable`, images checked while OCR was missing come back too.
        """
        redo = " OR t.state = 'unavailable'" if redo_unavailable else ""
        rows = self._conn().execute(
            "SELECT o.id, s.prompt FROM outputs o JOIN submissions s ON s.id = o.submission_id"
            " LEFT JOIN text_checks t ON t.output_id = o.id"
            f" WHERE o.state = 'kept' AND (t.output_id IS NULL{redo}) ORDER BY o.id"
        )
        out: list[int] = []
        for output_id, prompt in rows:
            if wanted_strings(prompt):  # quoting is decided in Python, by the one quote rule
                out.append(output_id)
                if len(out) >= limit:
                    break
        return out
