"""Claims with leases: which worker follows which submission and downloads which output.

Contract:
- Work is claimed, never assumed. A worker claims a row by writing its id and a
  lease (`claimed_by`, `lease_until`) in one statement; a row whose lease has
  expired (its worker died or stalled) is claimable by any worker, the dead
  one included. Renewing returns the rows still held, so a worker that lost a
  lease knows to let the row go.
- A create is sent only after `begin_create` marked it sent (`sent_at`) while it
  was still `submitting`: a campaign cancel in another process then either came
  first (nothing is sent) or leaves that row alone (it may exist at HiAPI).
- The create budget (429 hold, campaign pace, Settings limit) is one row per
  HiAPI key, named by a hash of the key, never the key.
- Named leases (`take_lease`) guard one-off jobs such as the text-check backfill.

SQLite serialises writers (BEGIN IMMEDIATE), which is what makes each claim
atomic here; PostgreSQL does the same with `FOR UPDATE SKIP LOCKED` on the
same columns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ..records import TERMINAL_STATES, CreateBudget, OutputRow, Submission, TaskState
from .db import Database

_SUB_COLS = ", ".join(Submission.__dataclass_fields__)
_OUT_COLS = ", ".join(OutputRow.__dataclass_fields__)
_UNFINISHED = "state NOT IN (?,?,?)"


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _chunks(ids: Sequence[int], size: int = 500) -> Iterator[list[int]]:
    ids = list(ids)
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


class WorkClaims(Database):
    """`WorkClaimRepository` over SQLite: claim, lease and shared-pacing methods (mixed into `Store`)."""

    # -- submissions (create and poll work) ------------------------------------
    def claim_due_submissions(
        self, worker_id: str, lease_s: float, now: float, limit: int
    ) -> list[Submission]:
        """Claim up to `limit` unfinished submissions nobody holds (or whose lease expired), oldest first."""
        if limit <= 0:
            return []
        with self._tx() as c:
            rows = c.execute(
                f"UPDATE submissions SET claimed_by=?, lease_until=? WHERE id IN ("
                f" SELECT id FROM submissions WHERE {_UNFINISHED}"
                " AND (claimed_by IS NULL OR lease_until <= ?) ORDER BY id LIMIT ?)"
                f" RETURNING {_SUB_COLS}",
                (worker_id, now + lease_s, *TERMINAL_STATES, now, int(limit)),
            ).fetchall()
        return sorted((Submission(**dict(r)) for r in rows), key=lambda s: s.id)

    def renew_submission_leases(
        self, worker_id: str, ids: Sequence[int], lease_s: float, now: float
    ) -> set[int]:
        """Extend this worker's leases on `ids`; returns those still its own and unfinished."""
        kept: set[int] = set()
        with self._tx() as c:
            for chunk in _chunks(ids):
                rows = c.execute(
                    f"UPDATE submissions SET lease_until=? WHERE claimed_by=? AND {_UNFINISHED}"
                    f" AND id IN ({_marks(len(chunk))}) RETURNING id",
                    (now + lease_s, worker_id, *TERMINAL_STATES, *chunk),
                ).fetchall()
                kept.update(r[0] for r in rows)
        return kept

    def release_submissions(self, worker_id: str, ids: Sequence[int] | None = None) -> None:
        """Give up this worker's claims on `ids` (all of them with None): another worker may take them at once."""
        with self._tx() as c:
            if ids is None:
                c.execute(
                    "UPDATE submissions SET claimed_by=NULL, lease_until=NULL WHERE claimed_by=?",
                    (worker_id,),
                )
                return
            for chunk in _chunks(ids):
                c.execute(
                    "UPDATE submissions SET claimed_by=NULL, lease_until=NULL"
                    f" WHERE claimed_by=? AND id IN ({_marks(len(chunk))})",
                    (worker_id, *chunk),
                )

    def begin_create(self, submission_id: int, now: float) -> bool:
        """Mark a create as sent, just before its POST; False when it is no longer `submitting` (cancelled)."""
        with self._tx() as c:
            cur = c.execute(
                "UPDATE submissions SET sent_at=COALESCE(sent_at, ?) WHERE id=? AND state=? AND task_id IS NULL",
                (now, submission_id, TaskState.SUBMITTING),
            )
            return cur.rowcount == 1

    def in_flight_count(self) -> int:
        """Tasks at HiAPI and not finished, whichever worker follows them (the shared campaign budget)."""
        r = (
            self._conn()
            .execute(
                f"SELECT COUNT(*) FROM submissions WHERE task_id IS NOT NULL AND {_UNFINISHED}",
                TERMINAL_STATES,
            )
            .fetchone()
        )
        return int(r[0])

    def claimed_by(self, submission_id: int) -> tuple[str | None, float | None]:
        """(worker id, lease end) of a submission's claim; (None, None) when nobody holds it."""
        r = (
            self._conn()
            .execute("SELECT claimed_by, lease_until FROM submissions WHERE id=?", (submission_id,))
            .fetchone()
        )
        return (r[0], r[1]) if r else (None, None)

    def forget_claims(self) -> None:
        """Clear every claim, whoever holds it: only for a process that knows no other worker is alive
        (the all-in-one studio holding the data folder's exclusive lock), so a restart resumes at once."""
        with self._tx() as c:
            c.execute("UPDATE submissions SET claimed_by=NULL, lease_until=NULL WHERE claimed_by IS NOT NULL")
            c.execute("UPDATE outputs SET claimed_by=NULL, lease_until=NULL WHERE claimed_by IS NOT NULL")

    # -- outputs (download work) --------------------------------------------------
    def claim_due_outputs(self, worker_id: str, lease_s: float, now: float, limit: int) -> list[OutputRow]:
        """Claim up to `limit` pending outputs whose next try is due and that nobody holds."""
        if limit <= 0:
            return []
        with self._tx() as c:
            rows = c.execute(
                "UPDATE outputs SET claimed_by=?, lease_until=? WHERE id IN ("
                " SELECT id FROM outputs WHERE state='pending' AND next_try_at<=?"
                " AND (claimed_by IS NULL OR lease_until <= ?) ORDER BY id LIMIT ?)"
                f" RETURNING {_OUT_COLS}",
                (worker_id, now + lease_s, now, now, int(limit)),
            ).fetchall()
        return sorted((OutputRow(**dict(r)) for r in rows), key=lambda o: o.id)

    def renew_output_leases(self, worker_id: str, ids: Sequence[int], lease_s: float, now: float) -> set[int]:
        """Extend this worker's leases on outputs being downloaded; returns those still its own."""
        kept: set[int] = set()
        with self._tx() as c:
            for chunk in _chunks(ids):
                rows = c.execute(
                    f"UPDATE outputs SET lease_until=? WHERE claimed_by=? AND id IN ({_marks(len(chunk))})"
                    " RETURNING id",
                    (now + lease_s, worker_id, *chunk),
                ).fetchall()
                kept.update(r[0] for r in rows)
        return kept

    def release_outputs(self, worker_id: str, ids: Sequence[int] | None = None) -> None:
        """Give up this worker's claims on outputs (all of them with None)."""
        with self._tx() as c:
            if ids is None:
                c.execute(
                    "UPDATE outputs SET claimed_by=NULL, lease_until=NULL WHERE claimed_by=?", (worker_id,)
                )
                return
            for chunk in _chunks(ids):
                c.execute(
                    "UPDATE outputs SET claimed_by=NULL, lease_until=NULL"
                    f" WHERE claimed_by=? AND id IN ({_marks(len(chunk))})",
                    (worker_id, *chunk),
                )

    # -- the create budget, one per HiAPI key ---------------------------------------
    def create_budget(self, key_hash: str, default_max_active: int) -> CreateBudget:
        """The shared budget of `key_hash`; an untouched key has no hold and its full pace."""
        r = (
            self._conn()
            .execute("SELECT hold_until, pace, max_active FROM create_budget WHERE key_hash=?", (key_hash,))
            .fetchone()
        )
        if r is None:
            return CreateBudget(0.0, float(default_max_active), int(default_max_active))
        return _budget(r)

    def set_create_limit(self, key_hash: str, max_active: int, now: float) -> CreateBudget:
        """Set the Settings limit (and the pace to it) for every worker on this key; a 429 hold stays."""
        n = max(1, int(max_active))
        with self._tx() as c:
            r = c.execute(
                "INSERT INTO create_budget (key_hash, hold_until, pace, max_active, updated_at)"
                " VALUES (?, 0, ?, ?, ?) ON CONFLICT(key_hash) DO UPDATE SET"
                " pace=excluded.pace, max_active=excluded.max_active, updated_at=excluded.updated_at"
                " RETURNING hold_until, pace, max_active",
                (key_hash, float(n), n, now),
            ).fetchone()
        return _budget(r)

    def hold_creates(self, key_hash: str, until: float, default_max_active: int, now: float) -> CreateBudget:
        """A 429: no create on this key before `until` (the later hold wins), and half the pace."""
        with self._tx() as c:
            r = c.execute(
                "INSERT INTO create_budget (key_hash, hold_until, pace, max_active, updated_at)"
                " VALUES (?, ?, MAX(1.0, ? / 2.0), ?, ?) ON CONFLICT(key_hash) DO UPDATE SET"
                " hold_until=MAX(hold_until, excluded.hold_until), pace=MAX(1.0, pace / 2.0),"
                " updated_at=excluded.updated_at RETURNING hold_until, pace, max_active",
                (key_hash, until, float(default_max_active), int(default_max_active), now),
            ).fetchone()
        return _budget(r)

    def note_create_accepted(self, key_hash: str, now: float) -> CreateBudget | None:
        """A create went through: the pace grows back by one slot per window of successes."""
        with self._tx() as c:
            r = c.execute(
                "UPDATE create_budget SET pace=MIN(CAST(max_active AS REAL), pace + 1.0 / MAX(1.0, pace)),"
                " updated_at=? WHERE key_hash=? AND pace < max_active RETURNING hold_until, pace, max_active",
                (now, key_hash),
            ).fetchone()
        return _budget(r) if r is not None else None

    def data_version(self) -> int:
        """A number that changes whenever another connection (another process) commits (`events.ChangeWatch`)."""
        return int(self._conn().execute("PRAGMA data_version").fetchone()[0])

    # -- named leases (one-off jobs) --------------------------------------------------
    def take_lease(self, name: str, holder: str, lease_s: float, now: float) -> bool:
        """Hold the lease `name` until now + lease_s, if nobody else holds it; True when it is ours."""
        with self._tx() as c:
            r = c.execute(
                "INSERT INTO leases (name, holder, lease_until) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET holder=excluded.holder, lease_until=excluded.lease_until"
                " WHERE leases.holder=excluded.holder OR leases.lease_until <= ? RETURNING holder",
                (name, holder, now + lease_s, now),
            ).fetchone()
        return r is not None

    def release_lease(self, name: str, holder: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM leases WHERE name=? AND holder=?", (name, holder))


def _budget(r: Any) -> CreateBudget:
    return CreateBudget(float(r[0]), float(r[1]), int(r[2]))
