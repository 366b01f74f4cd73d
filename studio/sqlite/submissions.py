"""Submissions: requests recorded before they are sent, their task reports and callbacks.

Contract:
- A submission is written, with its idempotency key, *before* its POST, so a
  crash never loses one; a tracker claims every unfinished row nobody holds
  (claims and leases: `claims.py`).
- Task state is upserted by task id; terminal states are sticky, so a late,
  duplicate or out-of-order report (poll or callback) changes nothing. The
  report is kept as sent (`raw_task`), unknown statuses and fields included.
- Every string HiAPI sent passes `errors.redact` on its way in (`scrubbed` for
  task reports, poll or callback, held or not; `clean` for error codes and
  messages), so a server echoing the API key never gets it into the file.
- A report listing more than `models.MAX_OUTPUTS` outputs keeps only those;
  the rest are refused unread, noted as an `outputs_refused` task event.
- Every output is recorded with its temporary URL the moment the task
  succeeds (then `outputs.OutputRows` marks it kept or failed).
- A callback for a task id not stored yet (it outran the create answer) is
  held in `pending_callbacks` and applied when `mark_created` attaches the id.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, overload

from ..callbacks import CallbackOutcome
from ..errors import redact, redact_deep
from ..models import MAX_OUTPUTS, Output, Task, TaskRequest, TaskStatus, capped_output_items
from ..records import (  # click_keys re-exported
    LOCAL_AUTHOR,
    NO_OUTPUT,
    OUTPUTS_REFUSED,
    TERMINAL_STATES,
    SpendRate,
    Submission,
    TaskState,
)
from .db import Database

SUBMITTING = TaskState.SUBMITTING
REJECTED = TaskState.REJECTED
_RANK = {SUBMITTING: 0, TaskStatus.QUEUED: 1, TaskStatus.HANDLING: 2, TaskStatus.ARCHIVING: 3}
# A held callback is useless once a resend can no longer replay its task
# (HiAPI keeps idempotency keys about 24 h); older ones are pruned.
HELD_CALLBACK_TTL = 26 * 3600.0
SUB_COLS = ", ".join(Submission.__dataclass_fields__)


class SubmissionRows(Database):
    """`SubmissionRepository` over SQLite."""

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
        """Record one click's submissions (and their spend), made by `author`, in ONE transaction, at most once.

        `keyed` pairs each request with its idempotency key, derived from the
        click's token (`click_keys`). When the click's first key is stored
        already, the click was recorded before (a Streamlit rerun, a double
        click, a retried callback): nothing is written and the submissions of
        that first recording are returned with `False`. Writers are serialised
        (BEGIN IMMEDIATE), so two racing recordings of one click make one creative.
        """
        now = time.time() if now is None else now
        if not keyed:
            return [], False
        with self._tx() as c:
            seen = c.execute(
                "SELECT creative_id FROM submissions WHERE idempotency_key = ?", (keyed[0][1],)
            ).fetchone()
            if seen is not None:
                rows = c.execute("SELECT id FROM submissions WHERE creative_id = ? ORDER BY id", (seen[0],))
                return [int(r[0]) for r in rows], False
            ids = [
                insert_submission(c, r, idempotency_key=key, creative_id=creative_id, now=now, author=author)
                for r, key in keyed
            ]
            if spend is not None:
                c.executemany(
                    "INSERT OR IGNORE INTO spend (submission_id, campaign_id, resolution, unit_micros,"
                    " currency, at, author) VALUES (?, NULL, ?, ?, ?, ?, ?)",
                    [
                        (sid, spend.resolution, int(spend.unit_micros), spend.currency, now, author)
                        for sid in ids
                    ],
                )
            return ids, True

    def mark_created(self, submission_id: int, task_id: str, *, now: float | None = None) -> bool:
        """Attach HiAPI's task id. Returns False if it was already attached.

        A callback held for this task id (it outran the create answer) is
        applied in the same transaction, so the submission may come out terminal.
        """
        now = time.time() if now is None else now
        task_id = clean(task_id)  # reports are matched on the same redacted id
        with self._tx() as c:
            cur = c.execute(
                "UPDATE submissions SET task_id=?, submitted_at=?, attempts=attempts+1,"
                " state=CASE WHEN state=? THEN ? ELSE state END"
                " WHERE id=? AND task_id IS NULL",
                (task_id, now, SUBMITTING, TaskStatus.QUEUED, submission_id),
            )
            if cur.rowcount:
                c.execute(
                    "INSERT INTO task_events (submission_id, status, at, source) VALUES (?,?,?,?)",
                    (submission_id, TaskStatus.QUEUED, now, "create"),
                )
                held = c.execute(
                    "SELECT body, received_at FROM pending_callbacks WHERE task_id=?", (task_id,)
                ).fetchone()
                if held is not None:
                    task = Task.parse(json.loads(held[0]))
                    if task is not None:  # it was finished when its callback came
                        self._apply_task(c, task, "callback", now, finish_estimate=held[1])
                    c.execute("DELETE FROM pending_callbacks WHERE task_id=?", (task_id,))
            return bool(cur.rowcount)

    def note_attempt(self, submission_id: int, code: str, message: str) -> None:
        """A create that may be retried (same key): keep it `submitting`, note why."""
        self._write(
            "UPDATE submissions SET attempts=attempts+1, error_code=?, error_message=? WHERE id=? AND state=?",
            (clean(code), clean(message), submission_id, SUBMITTING),
        )

    def note_problem(self, submission_id: int, code: str | None, message: str | None) -> None:
        """Note (or clear, with None) why the last look at an unfinished task failed.

        Shown beside the task while it lasts; terminal rows are never touched.
        """
        self._write(
            "UPDATE submissions SET error_code=?, error_message=? WHERE id=? AND state NOT IN (?,?,?)",
            (clean(code), clean(message), submission_id, *TERMINAL_STATES),
        )

    def mark_rejected(self, submission_id: int, code: str, message: str, *, now: float | None = None) -> None:
        """HiAPI refused the create (400/401/402/422): final, never resent."""
        now = time.time() if now is None else now
        with self._tx() as c:
            c.execute(
                "UPDATE submissions SET state=?, error_code=?, error_message=?, finished_at=? WHERE id=?",
                (REJECTED, clean(code), clean(message), now, submission_id),
            )
            c.execute(
                "INSERT INTO task_events (submission_id, status, at, source) VALUES (?,?,?,?)",
                (submission_id, REJECTED, now, "create"),
            )

    def record_task(
        self,
        task: Task,
        *,
        source: str = "poll",
        now: float | None = None,
        finish_estimate: float | None = None,
    ) -> bool:
        """Upsert a task report by task id. Terminal states are sticky.

        Returns True when the stored state changed (the first report of a new
        status); False for duplicates, stale reports and unknown task ids.
        On success the outputs are recorded in the same transaction.
        """
        now = time.time() if now is None else now
        task = scrubbed(task)
        with self._tx() as c:
            return self._apply_task(c, task, source, now, finish_estimate)

    def record_callback(self, task: Task, *, now: float | None = None) -> str:
        """Store a terminal task report that came by callback; a `CallbackOutcome`.

        One transaction decides: a known task is upserted like a poll answer
        (duplicates change nothing); an unknown id is held while any submission
        still waits for its create answer (the callback may have outrun it),
        else it is not ours. Concurrent deliveries are serialised here, so
        exactly one of them can come out STORED.
        """
        now = time.time() if now is None else now
        task = scrubbed(task)
        with self._tx() as c:
            row = c.execute("SELECT 1 FROM submissions WHERE task_id=?", (task.task_id,)).fetchone()
            if row is not None:
                changed = self._apply_task(c, task, "callback", now)
                return CallbackOutcome.STORED if changed else CallbackOutcome.DUPLICATE
            waiting = c.execute(
                "SELECT 1 FROM submissions WHERE task_id IS NULL AND state=? LIMIT 1", (SUBMITTING,)
            ).fetchone()
            if waiting is None:
                return CallbackOutcome.UNKNOWN
            c.execute("DELETE FROM pending_callbacks WHERE received_at < ?", (now - HELD_CALLBACK_TTL,))
            cur = c.execute(
                "INSERT OR IGNORE INTO pending_callbacks (task_id, body, received_at) VALUES (?,?,?)",
                (task.task_id, json.dumps(task.raw or task.to_dict()), now),
            )
            return CallbackOutcome.HELD if cur.rowcount else CallbackOutcome.DUPLICATE

    def held_callbacks(self) -> int:
        """How many callbacks wait for their task id."""
        return int(self._conn().execute("SELECT COUNT(*) FROM pending_callbacks").fetchone()[0])

    def _apply_task(
        self, c: sqlite3.Connection, task: Task, source: str, now: float, finish_estimate: float | None = None
    ) -> bool:
        """`record_task` inside an open transaction."""
        row = c.execute("SELECT id, state FROM submissions WHERE task_id=?", (task.task_id,)).fetchone()
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
            "UPDATE submissions SET state=?, remote_created=?, remote_completed=?, raw_task=?,"
            " error_code=?, error_message=?, finished_at=?, finish_estimate=? WHERE id=?",
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
        c.execute(
            "INSERT INTO task_events (submission_id, status, at, source) VALUES (?,?,?,?)",
            (sid, task.status, now, source),
        )
        if task.refused_outputs:
            c.execute(
                "INSERT INTO task_events (submission_id, status, at, source) VALUES (?,?,?,?)",
                (sid, OUTPUTS_REFUSED, now, f"{task.refused_outputs} over the cap of {MAX_OUTPUTS}"),
            )
        if task.status == TaskStatus.SUCCESS and not self._add_outputs(c, sid, task.outputs):
            c.execute(
                "UPDATE submissions SET error_code=?, error_message=? WHERE id=?",
                (NO_OUTPUT, "HiAPI reported success but sent no image link; run the prompt again.", sid),
            )
        return True

    @staticmethod
    def _add_outputs(c: sqlite3.Connection, sid: int, outputs: Iterable[Output]) -> int:
        """Record the image outputs; returns how many there were."""
        n = 0
        for i, o in enumerate(outputs):
            if o.type not in ("image", ""):
                continue
            c.execute(
                "INSERT OR IGNORE INTO outputs (submission_id, idx, url, expire_at) VALUES (?,?,?,?)",
                (sid, i, o.url, o.expire_at),
            )
            n += 1
        return n

    def submission(self, submission_id: int) -> Submission | None:
        r = (
            self._conn()
            .execute(f"SELECT {SUB_COLS} FROM submissions WHERE id=?", (submission_id,))
            .fetchone()
        )
        return Submission(**dict(r)) if r else None

    def submission_by_task(self, task_id: str) -> Submission | None:
        r = self._conn().execute(f"SELECT {SUB_COLS} FROM submissions WHERE task_id=?", (task_id,)).fetchone()
        return Submission(**dict(r)) if r else None

    def unfinished(self) -> list[Submission]:
        """Every submission not yet in a terminal state, oldest first (for resuming)."""
        rows = self._conn().execute(
            f"SELECT {SUB_COLS} FROM submissions WHERE state NOT IN (?,?,?) ORDER BY id",
            TERMINAL_STATES,
        )
        return [Submission(**dict(r)) for r in rows]

    def recent(self, limit: int = 40, *, since: float | None = None) -> list[Submission]:
        """Newest submissions first, for the queue."""
        sql = f"SELECT {SUB_COLS} FROM submissions"
        params: list[Any] = []
        if since is not None:
            sql += " WHERE created_at >= ?"
            params.append(since)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [Submission(**dict(r)) for r in self._conn().execute(sql, params)]

    def events(self, submission_id: int) -> list[tuple[str, float, str]]:
        rows = self._conn().execute(
            "SELECT status, at, source FROM task_events WHERE submission_id=? ORDER BY id", (submission_id,)
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def durations(self, resolution: str, limit: int = 50) -> list[float]:
        """Seconds from create to completion of recent successes at a resolution.

        HiAPI's own `completed - created` is whole seconds: good for tasks of a
        minute, too coarse for short ones, where our estimate (midway between
        the last poll that saw the task running and the one that saw it done)
        is used. Plain detection times are never used: they are quantised by
        our own polls, and learning from them would feed the schedule its echo.
        """
        rows = self._conn().execute(
            "SELECT remote_completed - remote_created, finish_estimate - submitted_at FROM submissions"
            " WHERE state=? AND resolution=? ORDER BY id DESC LIMIT ?",
            (TaskStatus.SUCCESS, resolution, limit),
        )
        out = []
        for remote, estimate in rows:
            if remote is not None and remote >= 20:
                out.append(float(remote) + 0.5)
            elif estimate is not None and estimate >= 0:
                out.append(float(estimate))
            elif remote is not None and remote >= 0:
                out.append(float(remote) + 0.5)
        return out

    def counts(self) -> dict[str, int]:
        rows = self._conn().execute("SELECT state, COUNT(*) FROM submissions GROUP BY state")
        return {r[0]: r[1] for r in rows}


def insert_submission(
    c: sqlite3.Connection,
    request: TaskRequest,
    *,
    idempotency_key: str,
    creative_id: str,
    now: float,
    author: str = LOCAL_AUTHOR,
) -> int:
    """Insert one `submitting` row (made by `author`) and its first event inside the caller's transaction."""
    cur = c.execute(
        "INSERT INTO submissions (creative_id, prompt, aspect_ratio, resolution, model,"
        " idempotency_key, state, created_at, callback_url, input_urls, quality, background, storage,"
        " author) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
    )
    sid = cur.lastrowid
    assert sid is not None  # sqlite3 sets it after every INSERT
    c.execute(
        "INSERT INTO task_events (submission_id, status, at, source) VALUES (?,?,?,?)",
        (sid, SUBMITTING, now, "studio"),
    )
    return sid


@overload
def clean(text: str) -> str: ...
@overload
def clean(text: None) -> None: ...
def clean(text: str | None) -> str | None:
    """A HiAPI-provided code or message, redacted (None stays None)."""
    return None if text is None else redact(text)


def scrubbed(task: Task) -> Task:
    """The report as it may be stored: every string redacted, the output list cut at the cap.

    Rebuilt from the redacted raw report, so the parsed fields (error, status,
    task id, output URLs) and `raw_task` agree; what was refused stays counted.
    """
    raw = dict(task.raw) if task.raw else task.to_dict()
    if task.refused_outputs and isinstance(raw.get("output"), list):
        raw["output"] = capped_output_items(raw["output"])[0]  # the rest is never stored
    try:
        clean = redact_deep(raw)
    except RecursionError:
        clean = redact_deep(task.to_dict())
    parsed = Task.parse(clean) or Task.parse(redact_deep(task.to_dict()))  # raw without a taskId
    return replace(parsed, refused_outputs=task.refused_outputs) if parsed else task


def raw_json(task: Task) -> str:
    """The report as HiAPI sent it, unknown fields included (what we parsed, if that fails)."""
    try:
        return json.dumps(task.raw or task.to_dict(), ensure_ascii=True, default=str)
    except (TypeError, ValueError, RecursionError):
        return json.dumps(task.to_dict(), ensure_ascii=True)
