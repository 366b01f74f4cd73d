"""Claims with leases on PostgreSQL: the same methods, columns and meaning as
`studio/sqlite/claims.py`, made safe for many writers at once.

Contract (beyond the SQLite one):
- A claim is one statement: `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n)
  RETURNING …`. Rows another claimer is claiming right now are skipped, not waited for, and
  a row it has just claimed no longer matches (READ COMMITTED re-checks the condition on
  the row as committed), so two replicas claiming at once never get the same row.
- Renewing and releasing touch only rows the caller still holds; `take_lease` is one
  upsert that succeeds for the holder or when the lease has run out.
- The create budget is one row per HiAPI key hash, changed by single statements (the
  later 429 hold wins, the pace halves and regrows) so concurrent replicas never lose
  one another's update.
- `now` is passed in (the tracker's clock), never read from the server: leases compare
  with the same clock on every replica's side, and tests move it by hand.
- `data_version` is the server's current snapshot (`pg_current_snapshot()`, as a number):
  it changes whenever any write transaction of any replica ends, and not on reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from ..records import TERMINAL_STATES, CreateBudget, OutputRow, Submission, TaskState
from .db import PgDatabase

_SUB_COLS = ", ".join(Submission.__dataclass_fields__)
_OUT_COLS = ", ".join(OutputRow.__dataclass_fields__)
_UNFINISHED = "state <> ALL(%(terminal)s)"
_TERMINAL = [str(s) for s in TERMINAL_STATES]


class PgWorkClaims(PgDatabase):
    """`WorkClaimRepository` over PostgreSQL (mixed into `PgStore`; each method is one short transaction)."""

    def _claim_rows(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self._tx() as conn:
            cur = conn.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []

    # -- submissions (create and poll work) ---------------------------------------
    def claim_due_submissions(
        self, worker_id: str, lease_s: float, now: float, limit: int
    ) -> list[Submission]:
        """Claim up to `limit` unfinished submissions nobody holds (or whose lease expired), oldest first."""
        if limit <= 0:
            return []
        rows = self._claim_rows(
            "UPDATE submissions SET claimed_by = %(worker)s, lease_until = %(until)s WHERE id IN ("
            f" SELECT id FROM submissions WHERE {_UNFINISHED}"
            " AND (claimed_by IS NULL OR lease_until <= %(now)s)"
            " ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            f" RETURNING {_SUB_COLS}",
            {
                "worker": worker_id,
                "until": now + lease_s,
                "now": now,
                "limit": int(limit),
                "terminal": _TERMINAL,
            },
        )
        return sorted((Submission(**r) for r in rows), key=lambda s: s.id)

    def renew_submission_leases(
        self, worker_id: str, ids: Sequence[int], lease_s: float, now: float
    ) -> set[int]:
        """Extend this worker's leases on `ids`; returns those still its own and unfinished."""
        if not ids:
            return set()
        rows = self._claim_rows(
            "UPDATE submissions SET lease_until = %(until)s"
            f" WHERE claimed_by = %(worker)s AND {_UNFINISHED} AND id = ANY(%(ids)s) RETURNING id",
            {"until": now + lease_s, "worker": worker_id, "ids": list(ids), "terminal": _TERMINAL},
        )
        return {int(r["id"]) for r in rows}

    def release_submissions(self, worker_id: str, ids: Sequence[int] | None = None) -> None:
        """Give up this worker's claims on `ids` (all of them with None)."""
        self._claim_rows(
            "UPDATE submissions SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = %(worker)s"
            + ("" if ids is None else " AND id = ANY(%(ids)s)"),
            {"worker": worker_id, "ids": list(ids or ())},
        )

    def begin_create(self, submission_id: int, now: float) -> bool:
        """Mark a create as sent, just before its POST; False when it is no longer `submitting`."""
        rows = self._claim_rows(
            "UPDATE submissions SET sent_at = COALESCE(sent_at, %(now)s)"
            " WHERE id = %(id)s AND state = %(state)s AND task_id IS NULL RETURNING id",
            {"now": now, "id": submission_id, "state": str(TaskState.SUBMITTING)},
        )
        return len(rows) == 1

    def in_flight_count(self) -> int:
        """Tasks at HiAPI and not finished, whichever replica follows them (the shared campaign budget)."""
        rows = self._claim_rows(
            f"SELECT COUNT(*) AS n FROM submissions WHERE task_id IS NOT NULL AND {_UNFINISHED}",
            {"terminal": _TERMINAL},
        )
        return int(rows[0]["n"])

    def forget_claims(self) -> None:
        """Clear every claim, whoever holds it: only for a process that knows no other worker is
        alive (a single all-in-one studio), so a restart resumes at once."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE submissions SET claimed_by = NULL, lease_until = NULL WHERE claimed_by IS NOT NULL"
            )
            conn.execute(
                "UPDATE outputs SET claimed_by = NULL, lease_until = NULL WHERE claimed_by IS NOT NULL"
            )

    def data_version(self) -> int:
        """A number that changes whenever a write transaction ends anywhere (`events.ChangeWatch`).

        The snapshot's xmax moves when the newest write ends and its list of running writes
        shrinks when an older one ends, so the snapshot as a whole changes on every commit."""
        rows = self._claim_rows("SELECT pg_current_snapshot()::text AS snap", {})
        digest = hashlib.blake2b(str(rows[0]["snap"]).encode(), digest_size=7).digest()
        return int.from_bytes(digest, "big")

    def claimed_by(self, submission_id: int) -> tuple[str | None, float | None]:
        rows = self._claim_rows(
            "SELECT claimed_by, lease_until FROM submissions WHERE id = %(id)s", {"id": submission_id}
        )
        return (rows[0]["claimed_by"], rows[0]["lease_until"]) if rows else (None, None)

    # -- outputs (download work) -----------------------------------------------------
    def claim_due_outputs(self, worker_id: str, lease_s: float, now: float, limit: int) -> list[OutputRow]:
        """Claim up to `limit` pending outputs whose next try is due and that nobody holds."""
        if limit <= 0:
            return []
        rows = self._claim_rows(
            "UPDATE outputs SET claimed_by = %(worker)s, lease_until = %(until)s WHERE id IN ("
            " SELECT id FROM outputs WHERE state = 'pending' AND next_try_at <= %(now)s"
            " AND (claimed_by IS NULL OR lease_until <= %(now)s)"
            " ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            f" RETURNING {_OUT_COLS}",
            {"worker": worker_id, "until": now + lease_s, "now": now, "limit": int(limit)},
        )
        return sorted((OutputRow(**r) for r in rows), key=lambda o: o.id)

    def renew_output_leases(self, worker_id: str, ids: Sequence[int], lease_s: float, now: float) -> set[int]:
        if not ids:
            return set()
        rows = self._claim_rows(
            "UPDATE outputs SET lease_until = %(until)s WHERE claimed_by = %(worker)s AND id = ANY(%(ids)s)"
            " RETURNING id",
            {"until": now + lease_s, "worker": worker_id, "ids": list(ids)},
        )
        return {int(r["id"]) for r in rows}

    def release_outputs(self, worker_id: str, ids: Sequence[int] | None = None) -> None:
        self._claim_rows(
            "UPDATE outputs SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = %(worker)s"
            + ("" if ids is None else " AND id = ANY(%(ids)s)"),
            {"worker": worker_id, "ids": list(ids or ())},
        )

    # -- the create budget, one per HiAPI key --------------------------------------------
    def create_budget(self, key_hash: str, default_max_active: int) -> CreateBudget:
        rows = self._claim_rows(
            "SELECT hold_until, pace, max_active FROM create_budget WHERE key_hash = %(k)s", {"k": key_hash}
        )
        if not rows:
            return CreateBudget(0.0, float(default_max_active), int(default_max_active))
        return _budget(rows[0])

    def set_create_limit(self, key_hash: str, max_active: int, now: float) -> CreateBudget:
        n = max(1, int(max_active))
        rows = self._claim_rows(
            "INSERT INTO create_budget (key_hash, hold_until, pace, max_active, updated_at)"
            " VALUES (%(k)s, 0, %(pace)s, %(n)s, %(now)s) ON CONFLICT (key_hash) DO UPDATE SET"
            " pace = EXCLUDED.pace, max_active = EXCLUDED.max_active, updated_at = EXCLUDED.updated_at"
            " RETURNING hold_until, pace, max_active",
            {"k": key_hash, "pace": float(n), "n": n, "now": now},
        )
        return _budget(rows[0])

    def hold_creates(self, key_hash: str, until: float, default_max_active: int, now: float) -> CreateBudget:
        """A 429: no create on this key before `until` (the later hold wins), and half the pace."""
        rows = self._claim_rows(
            "INSERT INTO create_budget (key_hash, hold_until, pace, max_active, updated_at)"
            " VALUES (%(k)s, %(until)s, GREATEST(1.0, %(pace)s / 2.0), %(n)s, %(now)s)"
            " ON CONFLICT (key_hash) DO UPDATE SET"
            " hold_until = GREATEST(create_budget.hold_until, EXCLUDED.hold_until),"
            " pace = GREATEST(1.0, create_budget.pace / 2.0), updated_at = EXCLUDED.updated_at"
            " RETURNING hold_until, pace, max_active",
            {
                "k": key_hash,
                "until": until,
                "pace": float(default_max_active),
                "n": int(default_max_active),
                "now": now,
            },
        )
        return _budget(rows[0])

    def note_create_accepted(self, key_hash: str, now: float) -> CreateBudget | None:
        rows = self._claim_rows(
            "UPDATE create_budget SET pace = LEAST(max_active::double precision, pace + 1.0 / GREATEST(1.0, pace)),"
            " updated_at = %(now)s WHERE key_hash = %(k)s AND pace < max_active"
            " RETURNING hold_until, pace, max_active",
            {"now": now, "k": key_hash},
        )
        return _budget(rows[0]) if rows else None

    # -- named leases (one-off jobs) -------------------------------------------------------
    def take_lease(self, name: str, holder: str, lease_s: float, now: float) -> bool:
        """Hold the lease `name` until now + lease_s, if nobody else holds it; True when it is ours."""
        rows = self._claim_rows(
            "INSERT INTO leases (name, holder, lease_until) VALUES (%(name)s, %(holder)s, %(until)s)"
            " ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until"
            " WHERE leases.holder = EXCLUDED.holder OR leases.lease_until <= %(now)s RETURNING holder",
            {"name": name, "holder": holder, "until": now + lease_s, "now": now},
        )
        return bool(rows)

    def release_lease(self, name: str, holder: str) -> None:
        self._claim_rows(
            "DELETE FROM leases WHERE name = %(name)s AND holder = %(holder)s",
            {"name": name, "holder": holder},
        )


def _budget(r: dict[str, Any]) -> CreateBudget:
    return CreateBudget(float(r["hold_until"]), float(r["pace"]), int(r["max_active"]))
