"""Submissions on PostgreSQL: requests recorded before they are sent, their task reports and
held callbacks, with the same methods, rows and meaning as `studio/sqlite/submissions.py`
(whose contract holds here unchanged: written before the POST, terminal states sticky,
every HiAPI string redacted on its way in, outputs recorded the moment a task succeeds).

The races SQLite avoided by its single writer are closed explicitly, on any number of replicas:
- A click recorded twice at once (a double click reaching two replicas): `add_click` takes
  `pg_advisory_xact_lock(CLICK_LOCK, hashtext(first key))` before it looks for the first
  key, so the second recording waits, then sees the first one's rows and writes nothing.
- A callback that outruns the create answer: `record_callback` (hold it) and `mark_created`
  (attach the task id, apply what is held) both take `pg_advisory_xact_lock(TASK_LOCK,
  hashtext(task id))` first, so one of them commits before the other looks: either the
  callback finds the task id, or the create answer finds the held callback. Never neither.
- Two deliveries of one report (two replicas receiving one callback, or a poll answer and a
  callback at once): applying a report locks the submission row (`SELECT … FOR UPDATE`),
  so the second reads the first's committed state and comes out a duplicate.
- Two replicas resuming one submission: the claims (`claims.py`, `FOR UPDATE SKIP LOCKED`)
  give it to one of them; `mark_created` attaches a task id only while none is attached.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..callbacks import CallbackOutcome
from ..models import MAX_OUTPUTS, Output, Task, TaskRequest, TaskStatus
from ..records import (
    LOCAL_AUTHOR,
    NO_OUTPUT,
    OUTPUTS_REFUSED,
    TERMINAL_STATES,
    SpendRate,
    Submission,
    TaskState,
)
from ..sqlite.submissions import clean, raw_json, scrubbed
from .db import PgDatabase

SUBMITTING = TaskState.SUBMITTING
REJECTED = TaskState.REJECTED
_RANK = {SUBMITTING: 0, TaskStatus.QUEUED: 1, TaskStatus.HANDLING: 2, TaskStatus.ARCHIVING: 3}
#: As on SQLite: a held callback is useless once a resend can no longer replay its task.
HELD_CALLBACK_TTL = 26 * 3600.0
SUB_COLS = ", ".join(Submission.__dataclass_fields__)
TERMINAL = [str(s) for s in TERMINAL_STATES]
#: First keys of pg_advisory_xact_lock(int, int): recording a click, and one task id's reports.
CLICK_LOCK = 0x636C6B  # "clk"
TASK_LOCK = 0x74736B  # "tsk"


def lock_click(c: Any, first_key: str) -> None:
    """Serialise recordings of one click (by its first idempotency key) until this transaction ends."""
    c.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (CLICK_LOCK, first_key))


def lock_task(c: Any, task_id: str) -> None:
    """Serialise attaching, holding and applying reports of one task id until this transaction ends."""
    c.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (TASK_LOCK, task_id))


class PgSubmissionRows(PgDatabase):
    """`SubmissionRepository` over PostgreSQL."""

    def add_submission(
        self,
        request: TaskRequest,
        *,
        idempotency_key: str,
        creative_id: str,
        now: float | None = None,
        author: str = LOCAL_AUTHOR,
    ) -> int:
        """Record a request (made by `author`) before it is sent. Returns the submission id."""
        now = time.time() if now is None else now
        with self._tx() as c:
            return insert_submission(
                c, request, idempotency_key=idempotency_key, creative_id=creative_id, now=now, author=author
            )

    def add_click(
        self,
        keyed: Sequence[tuple[TaskRequest, str]],
        *,
        creative_id: str,
        spend: SpendRate | None = None,
        now: float | None = None,
        author: str = LOCAL_AUTHOR,
    ) -> tuple[list[int], bool]:
        """Record one click's submissions (and their spend), made by `author`, in ONE transaction,
        at most once.

        When the click's first key is stored already, nothing is written and the submissions
        of that first recording are returned with False. Recordings of one click on any
        replica are serialised by the click lock, so racing ones make one creative.
        """
        now = time.time() if now is None else now
        if not keyed:
            return [], False
        with self._tx() as c:
            lock_click(c, keyed[0][1])
            seen = c.execute(
                "SELECT creative_id FROM submissions WHERE idempotency_key = %s", (keyed[0][1],)
            ).fetchone()
            if seen is not None:
                rows = c.execute(
                    "SELECT id FROM submissions WHERE creative_id = %s ORDER BY id", (seen["creative_id"],)
                ).fetchall()
                return [int(r["id"]) for r in rows], False
            ids = [
                insert_submission(c, r, idempotency_key=key, creative_id=creative_id, now=now, author=author)
                for r, key in keyed
            ]
            if spend is not None:
                with c.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO spend (submission_id, campaign_id, resolution, unit_micros, currency,"
                        " at, author) VALUES (%s, NULL, %s, %s, %s, %s, %s) ON CONFLICT (submission_id) DO NOTHING",
                        [
                            (sid, spend.resolution, int(spend.unit_micros), spend.currency, now, author)
                            for sid in ids
                        ],
                    )
            return ids, True

    def mark_created(self, submission_id: int, task_id: str, *, now: float | None = None) -> bool:
        """Attach HiAPI's task id. Returns False if one was already attached.

        A callback held for this task id is applied in the same transaction, under the task
        lock `record_callback` takes too, so a callback committing at the same moment is
        either seen here or sees this task id.
        """
        now = time.time() if now is None else now
        task_id = clean(task_id)  # reports are matched on the same redacted id
        with self._tx() as c:
            lock_task(c, task_id)
            cur = c.execute(
                "UPDATE submissions SET task_id = %s, submitted_at = %s, attempts = attempts + 1,"
                " state = CASE WHEN state = %s THEN %s ELSE state END"
                " WHERE id = %s AND task_id IS NULL",
                (task_id, now, SUBMITTING, TaskStatus.QUEUED, submission_id),
            )
            attached = cur.rowcount == 1
            if attached:
                _event(c, submission_id, TaskStatus.QUEUED, now, "create")
                held = c.execute(
                    "DELETE FROM pending_callbacks WHERE task_id = %s RETURNING body, received_at", (task_id,)
                ).fetchone()
                if held is not None:
                    task = Task.parse(json.loads(held["body"]))
                    if task is not None:  # it was finished when its callback came
                        self._apply_task(c, task, "callback", now, finish_estimate=held["received_at"])
            return attached

    def note_attempt(self, submission_id: int, code: str, message: str) -> None:
        """A create that may be retried (same key): keep it `submitting`, note why."""
        self._write(
            "UPDATE submissions SET attempts = attempts + 1, error_code = %s, error_message = %s"
            " WHERE id = %s AND state = %s",
            (clean(code), clean(message), submission_id, SUBMITTING),
        )

    def note_problem(self, submission_id: int, code: str | None, message: str | None) -> None:
        """Note (or clear, with None) why the last look at an unfinished task failed; terminal rows stay."""
        self._write(
            "UPDATE submissions SET error_code = %s, error_message = %s WHERE id = %s AND state <> ALL(%s)",
            (clean(code), clean(message), submission_id, TERMINAL),
        )

    def mark_rejected(self, submission_id: int, code: str, message: str, *, now: float | None = None) -> None:
        """HiAPI refused the create (400/401/402/422): final, never resent."""
        now = time.time() if now is None else now
        with self._tx() as c:
            c.execute(
                "UPDATE submissions SET state = %s, error_code = %s, error_message = %s, finished_at = %s"
                " WHERE id = %s",
                (REJECTED, clean(code), clean(message), now, submission_id),
            )
            _event(c, submission_id, REJECTED, now, "create")

    def record_task(
        self,
        task: Task,
        *,
        source: str = "poll",
        now: float | None = None,
        finish_estimate: float | None = None,
    ) -> bool:
        """Upsert a task report by task id. Terminal states are sticky.

        Returns True when the stored state changed; False for duplicates, stale reports and
        unknown task ids. On success the outputs are recorded in the same transaction.
        """
        now = time.time() if now is None else now
        task = scrubbed(task)
        with self._tx() as c:
            return self._apply_task(c, task, source, now, finish_estimate)

    def record_callback(self, task: Task, *, now: float | None = None) -> str:
        """Store a terminal task report that came by callback; a `CallbackOutcome`.

        Under the task lock: a known task is upserted like a poll answer (duplicates change
        nothing); an unknown id is held while any submission still waits for its create
        answer, else it is not ours. Deliveries of one callback on several replicas are
        serialised by that lock, so exactly one of them comes out STORED (or HELD).
        """
        now = time.time() if now is None else now
        task = scrubbed(task)
        with self._tx() as c:
            lock_task(c, task.task_id)
            row = c.execute("SELECT 1 FROM submissions WHERE task_id = %s", (task.task_id,)).fetchone()
            if row is not None:
                changed = self._apply_task(c, task, "callback", now)
                return CallbackOutcome.STORED if changed else CallbackOutcome.DUPLICATE
            waiting = c.execute(
                "SELECT 1 FROM submissions WHERE task_id IS NULL AND state = %s LIMIT 1", (SUBMITTING,)
            ).fetchone()
            if waiting is None:
                return CallbackOutcome.UNKNOWN
            c.execute("DELETE FROM pending_callbacks WHERE received_at < %s", (now - HELD_CALLBACK_TTL,))
            cur = c.execute(
                "INSERT INTO pending_callbacks (task_id, body, received_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (task_id) DO NOTHING",
                (task.task_id, json.dumps(task.raw or task.to_dict()), now),
            )
            return CallbackOutcome.HELD if cur.rowcount == 1 else CallbackOutcome.DUPLICATE

    def held_callbacks(self) -> int:
        """How many callbacks wait for their task id."""
        with self._read() as c:
            return int(c.execute("SELECT COUNT(*) AS n FROM pending_callbacks").fetchone()["n"])

    def _apply_task(
        self, c: Any, task: Task, source: str, now: float, finish_estimate: float | None = None
    ) -> bool:
        """`record_task` inside an open transaction; the submission row stays locked until it ends."""
        row = c.execute(
            "SELECT id, state FROM submissions WHERE task_id = %s FOR UPDATE", (task.task_id,)
        ).fetchone()
        if row is None:
            return False
        sid, state = row["id"], row["state"]
        if state in TERMINAL_STATES or state == task.status:
            return False
        if task.status in _RANK and _RANK[task.status] < _RANK.get(state, 0):
            return False  # a stale report (e.g. a slow poll answer) never moves a task back
        terminal = task.status in TaskStatus.TERMINAL
        err = task.error
        c.execute(
            "UPDATE submissions SET state = %s, remote_created = %s, remote_completed = %s, raw_task = %s,"
            " error_code = %s, error_message = %s, finished_at = %s, finish_estimate = %s WHERE id = %s",
            (
                task.status,
                task.created or None,
                task.completed or None,
                raw_json(task),
                err.code if (err and terminal) else None,
                err.message if (err and terminal) else None,
                now if terminal else None,
                (finish_estimate or now) if terminal else None,
                sid,
            ),
        )
        _event(c, sid, task.status, now, source)
        if task.refused_outputs:
            _event(c, sid, OUTPUTS_REFUSED, now, f"{task.refused_outputs} over the cap of {MAX_OUTPUTS}")
        if task.status == TaskStatus.SUCCESS and not _add_outputs(c, sid, task.outputs):
            c.execute(
                "UPDATE submissions SET error_code = %s, error_message = %s WHERE id = %s",
                (NO_OUTPUT, "HiAPI reported success but sent no image link; run the prompt again.", sid),
            )
        return True

    def submission(self, submission_id: int) -> Submission | None:
        with self._read() as c:
            r = c.execute(f"SELECT {SUB_COLS} FROM submissions WHERE id = %s", (submission_id,)).fetchone()
        return Submission(**r) if r else None

    def submission_by_task(self, task_id: str) -> Submission | None:
        with self._read() as c:
            r = c.execute(f"SELECT {SUB_COLS} FROM submissions WHERE task_id = %s", (task_id,)).fetchone()
        return Submission(**r) if r else None

    def unfinished(self) -> list[Submission]:
        """Every submission not yet in a terminal state, oldest first (for resuming)."""
        with self._read() as c:
            rows = c.execute(
                f"SELECT {SUB_COLS} FROM submissions WHERE state <> ALL(%s) ORDER BY id", (TERMINAL,)
            ).fetchall()
        return [Submission(**r) for r in rows]

    def recent(self, limit: int = 40, *, since: float | None = None) -> list[Submission]:
        """Newest submissions first, for the queue."""
        sql = f"SELECT {SUB_COLS} FROM submissions"
        params: list[Any] = []
        if since is not None:
            sql += " WHERE created_at >= %s"
            params.append(since)
        sql += " ORDER BY id DESC LIMIT %s"
        params.append(limit)
        with self._read() as c:
            rows = c.execute(sql, params).fetchall()
        return [Submission(**r) for r in rows]

    def events(self, submission_id: int) -> list[tuple[str, float, str]]:
        with self._read() as c:
            rows = c.execute(
                "SELECT status, at, source FROM task_events WHERE submission_id = %s ORDER BY id",
                (submission_id,),
            ).fetchall()
        return [(r["status"], r["at"], r["source"]) for r in rows]

    def durations(self, resolution: str, limit: int = 50) -> list[float]:
        """Seconds from create to completion of recent successes at a resolution (as on SQLite:
        HiAPI's whole seconds for long tasks, our estimate for short ones)."""
        with self._read() as c:
            rows = c.execute(
                "SELECT remote_completed - remote_created AS remote, finish_estimate - submitted_at AS estimate"
                " FROM submissions WHERE state = %s AND resolution = %s ORDER BY id DESC LIMIT %s",
                (TaskStatus.SUCCESS, resolution, limit),
            ).fetchall()
        out = []
        for r in rows:
            remote, estimate = r["remote"], r["estimate"]
            if remote is not None and remote >= 20:
                out.append(float(remote) + 0.5)
            elif estimate is not None and estimate >= 0:
                out.append(float(estimate))
            elif remote is not None and remote >= 0:
                out.append(float(remote) + 0.5)
        return out

    def counts(self) -> dict[str, int]:
        with self._read() as c:
            rows = c.execute("SELECT state, COUNT(*) AS n FROM submissions GROUP BY state").fetchall()
        return {r["state"]: int(r["n"]) for r in rows}


def insert_submission(
    c: Any,
    request: TaskRequest,
    *,
    idempotency_key: str,
    creative_id: str,
    now: float,
    author: str = LOCAL_AUTHOR,
) -> int:
    """Insert one `submitting` row (made by `author`) and its first event inside the caller's transaction."""
    row = c.execute(
        "INSERT INTO submissions (creative_id, prompt, aspect_ratio, resolution, model,"
        " idempotency_key, state, created_at, callback_url, input_urls, quality, background, storage,"
        " author) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            creative_id,
            request.prompt,
            request.aspect_ratio,
            request.resolution,
            request.model,
            idempotency_key,
            SUBMITTING,
            now,
            request.callback.url if request.callback else None,  # resends must carry the same body
            json.dumps(list(request.references)) if request.references else None,
            request.quality,
            request.background,
            request.storage,
            author,
        ),
    ).fetchone()
    sid = int(row["id"])
    _event(c, sid, SUBMITTING, now, "studio")
    return sid


def _event(c: Any, submission_id: int, status: str, at: float, source: str) -> None:
    c.execute(
        "INSERT INTO task_events (submission_id, status, at, source) VALUES (%s, %s, %s, %s)",
        (submission_id, status, at, source),
    )


def _add_outputs(c: Any, sid: int, outputs: Iterable[Output]) -> int:
    """Record the image outputs (a second report of them changes nothing); returns how many there were."""
    n = 0
    for i, o in enumerate(outputs):
        if o.type not in ("image", ""):
            continue
        c.execute(
            "INSERT INTO outputs (submission_id, idx, url, expire_at) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (submission_id, idx) DO NOTHING",
            (sid, i, o.url, o.expire_at),
        )
        n += 1
    return n
