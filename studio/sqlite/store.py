"""The studio's memory: one SQLite file (WAL) in the data folder.

Contract:
- A submission is written, with its idempotency key, *before* its POST, so a
  crash never loses one; a tracker claims every unfinished row nobody holds
  (claims and leases: `claims.py`).
- Task state is upserted by task id; terminal states are sticky, so a late,
  duplicate or out-of-order report (poll or callback) changes nothing. The
  report is kept as sent (`raw_task`), unknown statuses and fields included.
- Every string HiAPI sent passes `errors.redact` on its way in (`_scrubbed` for
  task reports, poll or callback, held or not; `_clean` for error codes and
  messages), so a server echoing the API key never gets it into the file.
- A report listing more than `models.MAX_OUTPUTS` outputs keeps only those;
  the rest are refused unread, noted as an `outputs_refused` task event.
- Every output is recorded with its temporary URL the moment the task
  succeeds, then marked kept (with file, size and hash) or failed.
- A callback for a task id not stored yet (it outran the create answer) is
  held in `pending_callbacks` and applied when `mark_created` attaches the id.
Connections are per thread; writes are short transactions.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, overload

from ..callbacks import CallbackOutcome  # the receiver's vocabulary; re-exported for the tracker
from ..errors import redact, redact_deep
from ..fidelity import wanted_strings
from ..models import MAX_OUTPUTS, Output, Task, TaskRequest, TaskStatus, capped_output_items
from ..records import (  # the records and states live there; re-exported so `from .store import …` keeps working
    TERMINAL_STATES,
    FidelityReport,
    GalleryItem,
    GalleryQuery,
    OutputRow,
    OutputState,
    SpendRate,
    StringCheck,
    Submission,
    TaskState,
    TextCheck,
)
from .claims import WorkClaims

SUBMITTING = TaskState.SUBMITTING
REJECTED = TaskState.REJECTED
TRASHED = OutputState.TRASHED
NO_OUTPUT = "NO_OUTPUT"  # error_code of a success that carried no usable image link
OUTPUTS_REFUSED = "outputs_refused"  # task event: a report listed more outputs than MAX_OUTPUTS

_MIGRATIONS: tuple[str, ...] = (
    # 1: submissions, their task history and outputs
    """
    CREATE TABLE submissions (
        id INTEGER PRIMARY KEY,
        creative_id TEXT NOT NULL,
        prompt TEXT NOT NULL,
        aspect_ratio TEXT NOT NULL,
        resolution TEXT NOT NULL,
        model TEXT NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        task_id TEXT UNIQUE,
        error_code TEXT,
        error_message TEXT,
        created_at REAL NOT NULL,
        submitted_at REAL,
        finished_at REAL,
        remote_created INTEGER,
        remote_completed INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        raw_task TEXT
    );
    CREATE INDEX submissions_state ON submissions(state);
    CREATE INDEX submissions_creative ON submissions(creative_id);
    CREATE INDEX submissions_created ON submissions(created_at);
    CREATE TABLE task_events (
        id INTEGER PRIMARY KEY,
        submission_id INTEGER NOT NULL REFERENCES submissions(id) ON DELETE CASCADE,
        status TEXT NOT NULL,
        at REAL NOT NULL,
        source TEXT NOT NULL
    );
    CREATE INDEX task_events_submission ON task_events(submission_id);
    CREATE TABLE outputs (
        id INTEGER PRIMARY KEY,
        submission_id INTEGER NOT NULL REFERENCES submissions(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        url TEXT NOT NULL,
        expire_at INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_try_at REAL NOT NULL DEFAULT 0,
        error TEXT,
        sha256 TEXT,
        path TEXT,
        thumb_path TEXT,
        width INTEGER,
        height INTEGER,
        bytes INTEGER,
        kept_at REAL,
        UNIQUE(submission_id, idx)
    );
    CREATE INDEX outputs_state ON outputs(state);
    CREATE INDEX outputs_sha ON outputs(sha256);
    """,
    # 2: favourites, collections and prompt search
    """
    CREATE TABLE favourites (
        output_id INTEGER PRIMARY KEY REFERENCES outputs(id) ON DELETE CASCADE,
        at REAL NOT NULL
    );
    CREATE TABLE collections (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE collection_items (
        collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        output_id INTEGER NOT NULL REFERENCES outputs(id) ON DELETE CASCADE,
        PRIMARY KEY (collection_id, output_id)
    );
    CREATE VIRTUAL TABLE prompt_search USING fts5(
        prompt, content='submissions', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER submissions_ai AFTER INSERT ON submissions BEGIN
        INSERT INTO prompt_search(rowid, prompt) VALUES (new.id, new.prompt);
    END;
    CREATE TRIGGER submissions_ad AFTER DELETE ON submissions BEGIN
        INSERT INTO prompt_search(prompt_search, rowid, prompt) VALUES ('delete', old.id, old.prompt);
    END;
    INSERT INTO prompt_search(rowid, prompt) SELECT id, prompt FROM submissions;
    """,
    # 3: text-fidelity results, one row per checked image (see studio/fidelity.py).
    #    Idempotent: a database written while this slot was a placeholder runs it
    #    again at start-up (fidelity.ensure_schema).
    """
    CREATE TABLE IF NOT EXISTS text_checks (
        output_id INTEGER PRIMARY KEY REFERENCES outputs(id) ON DELETE CASCADE,
        state TEXT NOT NULL,
        wanted INTEGER NOT NULL,
        matched INTEGER NOT NULL,
        checks TEXT NOT NULL,
        read_text TEXT NOT NULL DEFAULT '',
        engine TEXT NOT NULL DEFAULT '',
        seconds REAL NOT NULL DEFAULT 0,
        passes INTEGER NOT NULL DEFAULT 0,
        message TEXT,
        checked_at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS text_checks_state ON text_checks(state);
    """,
    # 4: campaigns (rows × ratios of one prompt with variables), the spend ledger,
    #    the prompt library and app settings edited in the Settings page
    """
    CREATE TABLE IF NOT EXISTS campaigns (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        template TEXT NOT NULL,
        variables TEXT NOT NULL,
        ratios TEXT NOT NULL,
        resolution TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'running',
        unit_micros INTEGER NOT NULL DEFAULT 0,
        currency TEXT NOT NULL DEFAULT 'USD',
        created_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS campaign_rows (
        campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        vals TEXT NOT NULL,
        prompt TEXT NOT NULL,
        PRIMARY KEY (campaign_id, idx)
    );
    CREATE TABLE IF NOT EXISTS campaign_tasks (
        submission_id INTEGER PRIMARY KEY REFERENCES submissions(id) ON DELETE CASCADE,
        campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
        row_idx INTEGER NOT NULL,
        aspect_ratio TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS campaign_tasks_cell ON campaign_tasks(campaign_id, row_idx, aspect_ratio);
    CREATE TABLE IF NOT EXISTS spend (
        id INTEGER PRIMARY KEY,
        submission_id INTEGER UNIQUE,
        campaign_id INTEGER,
        resolution TEXT NOT NULL,
        unit_micros INTEGER NOT NULL,
        currency TEXT NOT NULL,
        at REAL NOT NULL,
        final_state TEXT
    );
    CREATE INDEX IF NOT EXISTS spend_at ON spend(at);
    CREATE TRIGGER IF NOT EXISTS spend_outlives_submission AFTER DELETE ON submissions BEGIN
        UPDATE spend SET submission_id = NULL, final_state = old.state WHERE submission_id = old.id;
    END;
    CREATE TABLE IF NOT EXISTS prompt_library (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        prompt TEXT NOT NULL,
        ratios TEXT NOT NULL,
        resolution TEXT NOT NULL,
        rows TEXT NOT NULL DEFAULT '[]',
        note TEXT NOT NULL DEFAULT '',
        starter TEXT UNIQUE,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS app_settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 5: our best estimate of when a task finished (midway between the last
    # poll that saw it running and the one that saw it done)
    "ALTER TABLE submissions ADD COLUMN finish_estimate REAL;",
    # 6: callbacks. The callback URL a submission was first sent with (a resend
    # under the same idempotency key must carry the same body), and callbacks
    # held until their task id is known.
    """
    ALTER TABLE submissions ADD COLUMN callback_url TEXT;
    CREATE TABLE pending_callbacks (
        task_id TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        received_at REAL NOT NULL
    );
    """,
    # 7: the Studio's unsent draft per browser (studio/drafts.py), so a reload
    # or a reopened tab finds the prompt, ratios, resolution and rows again.
    """
    CREATE TABLE drafts (
        id TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # 8: reference images (image-to-image). The signed URLs a submission was
    # first sent with (JSON list; a resend must carry the same body); the kept
    # references they name live in the references folder (studio/references.py).
    """
    ALTER TABLE submissions ADD COLUMN input_urls TEXT;
    """,
    # 9: the options a submission was sent with: its `ext` quality (NULL = the
    # default route), background and storage, so Reuse, resends and "Make
    # final" carry them (a resend under the same key must send the same body).
    """
    ALTER TABLE submissions ADD COLUMN quality TEXT;
    ALTER TABLE submissions ADD COLUMN background TEXT;
    ALTER TABLE submissions ADD COLUMN storage TEXT;
    """,
    # 10: the database keeps content hashes, never file paths. A kept image is
    # the blob named by its sha256 (`blob_keys.original_key` / `thumb_key`), so
    # the absolute paths of schema 1 go; the files stay where they are.
    """
    ALTER TABLE outputs DROP COLUMN path;
    ALTER TABLE outputs DROP COLUMN thumb_path;
    """,
    # 11: work is claimed, not assumed (studio/sqlite/claims.py). A claim and its
    # lease on each submission (create and poll work) and output (download
    # work); when a create was first sent (a cancel leaves such a row alone);
    # the create budget every worker on one HiAPI key shares (by key hash); named
    # leases for one-off jobs such as the text-check backfill.
    """
    ALTER TABLE submissions ADD COLUMN claimed_by TEXT;
    ALTER TABLE submissions ADD COLUMN lease_until REAL;
    ALTER TABLE submissions ADD COLUMN sent_at REAL;
    ALTER TABLE outputs ADD COLUMN claimed_by TEXT;
    ALTER TABLE outputs ADD COLUMN lease_until REAL;
    CREATE INDEX submissions_claim ON submissions(claimed_by);
    CREATE INDEX outputs_claim ON outputs(claimed_by);
    CREATE TABLE create_budget (
        key_hash TEXT PRIMARY KEY,
        hold_until REAL NOT NULL DEFAULT 0,
        pace REAL NOT NULL,
        max_active INTEGER NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        lease_until REAL NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)
_RANK = {SUBMITTING: 0, TaskStatus.QUEUED: 1, TaskStatus.HANDLING: 2, TaskStatus.ARCHIVING: 3}
# A held callback is useless once a resend can no longer replay its task
# (HiAPI keeps idempotency keys about 24 h); older ones are pruned.
HELD_CALLBACK_TTL = 26 * 3600.0


_SUB_COLS = ", ".join(Submission.__dataclass_fields__)
_OUT_COLS = ", ".join(OutputRow.__dataclass_fields__)


def fts_query(text: str) -> str | None:
    """Turn what a user typed into a safe FTS5 query: every word, as a prefix."""
    words = re.findall(r"\w+", text, flags=re.UNICODE)
    return " ".join(f'"{w}"*' for w in words) or None


_GALLERY_FROM = (
    " FROM submissions s LEFT JOIN outputs o ON o.submission_id = s.id"
    " LEFT JOIN favourites f ON f.output_id = o.id"
)
# Kept images only: submissions drive the loop (newest first by index) and the
# unary + stops SQLite from looking outputs up by state, which turns the page
# query quadratic at 10,000 images.
_KEPT_FROM = (
    " FROM submissions s CROSS JOIN outputs o ON o.submission_id = s.id"
    " LEFT JOIN favourites f ON f.output_id = o.id"
)
_KEPT = "+o.state = 'kept'"
_FAILED = "(s.state IN ('fail', 'rejected') OR o.state = 'failed')"
_GALLERY_SELECT = (
    "SELECT o.id AS output_id, s.id AS submission_id, s.creative_id, s.prompt, s.aspect_ratio, s.resolution,"
    " s.model, s.task_id, s.created_at, s.quality, s.background, o.sha256, o.width, o.height, o.bytes, o.url, o.expire_at,"
    " (f.output_id IS NOT NULL) AS favourite,"
    " CASE WHEN o.state IN ('kept', 'trashed') THEN o.state WHEN o.state = 'failed' THEN 'download_failed'"
    " ELSE s.state END"
    " AS state,"
    " CASE WHEN o.state = 'failed' THEN o.error"
    " WHEN s.error_code IS NOT NULL THEN s.error_code || ': ' || COALESCE(s.error_message, '') END AS error,"
    " s.input_urls"
)


def _gallery_where(q: GalleryQuery) -> tuple[str, list[Any]]:
    status = {"kept": _KEPT, "failed": _FAILED}.get(q.status, f"({_KEPT} OR {_FAILED})")
    where: list[str] = [status]
    params: list[Any] = []
    match = fts_query(q.text)
    if match:
        where.append("s.id IN (SELECT rowid FROM prompt_search WHERE prompt_search MATCH ?)")
        params.append(match)
    if q.ratios:
        where.append(f"s.aspect_ratio IN ({','.join('?' * len(q.ratios))})")
        params.extend(q.ratios)
    if q.resolutions:
        where.append(f"s.resolution IN ({','.join('?' * len(q.resolutions))})")
        params.extend(q.resolutions)
    if q.favourites_only:
        where.append("f.output_id IS NOT NULL")
    if q.collection_id is not None:
        where.append("o.id IN (SELECT output_id FROM collection_items WHERE collection_id = ?)")
        params.append(q.collection_id)
    if q.text_mismatch:
        where.append("o.id IN (SELECT output_id FROM text_checks WHERE state = 'mismatch')")
    if q.since is not None:
        where.append("s.created_at >= ?")
        params.append(q.since)
    if q.until is not None:
        where.append("s.created_at < ?")
        params.append(q.until)
    return " WHERE " + " AND ".join(where), params


class Store(WorkClaims):
    """Thread-safe access to the studio database (one connection per thread)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Owner-only from the first byte; SQLite gives the WAL and SHM files the same mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._migrate()

    # -- plumbing -------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=10000")
            self._local.conn = conn
        return conn

    def _write(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self._write_lock:
            return self._conn().execute(sql, params)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; writers are serialised in-process, readers never wait."""
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _migrate(self) -> None:
        conn = self._conn()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"The database {self.path} was written by a newer studio (schema {version}); upgrade the studio."
            )
        for i in range(version, SCHEMA_VERSION):
            with self._tx() as c:
                for stmt in _split_sql(_MIGRATIONS[i]):
                    c.execute(stmt)
                c.execute(f"PRAGMA user_version={i + 1}")

    def reader(self) -> sqlite3.Connection:
        """This thread's connection, for reads by sibling modules (campaigns, library)."""
        return self._conn()

    def transaction(self) -> Any:
        """A write transaction, for sibling modules that keep their SQL next to their logic."""
        return self._tx()

    def get_setting(self, key: str) -> str | None:
        r = self._conn().execute("SELECT value FROM app_settings WHERE key = ?", (key,)).fetchone()
        return r[0] if r else None

    def set_setting(self, key: str, value: str) -> None:
        self._write(
            "INSERT INTO app_settings (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def delete_setting(self, key: str) -> None:
        self._write("DELETE FROM app_settings WHERE key = ?", (key,))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def schema_version(self) -> int:
        return self._conn().execute("PRAGMA user_version").fetchone()[0]

    # -- submissions ----------------------------------------------------------
    def add_submission(
        self, request: TaskRequest, *, idempotency_key: str, creative_id: str, now: float | None = None
    ) -> int:
        """Record a request before it is sent. Returns the submission id."""
        now = time.time() if now is None else now
        with self._tx() as c:
            return insert_submission(
                c, request, idempotency_key=idempotency_key, creative_id=creative_id, now=now
            )

    def add_click(
        self,
        keyed: Sequence[tuple[TaskRequest, str]],
        *,
        creative_id: str,
        spend: SpendRate | None = None,
        now: float | None = None,
    ) -> tuple[list[int], bool]:
        """Record one click's submissions (and their spend) in ONE transaction, at most once.

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
                insert_submission(c, r, idempotency_key=key, creative_id=creative_id, now=now)
                for r, key in keyed
            ]
            if spend is not None:
                c.executemany(
                    "INSERT OR IGNORE INTO spend (submission_id, campaign_id, resolution, unit_micros,"
                    " currency, at) VALUES (?, NULL, ?, ?, ?, ?)",
                    [(sid, spend.resolution, int(spend.unit_micros), spend.currency, now) for sid in ids],
                )
            return ids, True

    def mark_created(self, submission_id: int, task_id: str, *, now: float | None = None) -> bool:
        """Attach HiAPI's task id. Returns False if it was already attached.

        A callback held for this task id (it outran the create answer) is
        applied in the same transaction, so the submission may come out terminal.
        """
        now = time.time() if now is None else now
        task_id = _clean(task_id)  # reports are matched on the same redacted id
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
            (_clean(code), _clean(message), submission_id, SUBMITTING),
        )

    def note_problem(self, submission_id: int, code: str | None, message: str | None) -> None:
        """Note (or clear, with None) why the last look at an unfinished task failed.

        Shown beside the task while it lasts; terminal rows are never touched.
        """
        self._write(
            "UPDATE submissions SET error_code=?, error_message=? WHERE id=? AND state NOT IN (?,?,?)",
            (_clean(code), _clean(message), submission_id, *TERMINAL_STATES),
        )

    def mark_rejected(self, submission_id: int, code: str, message: str, *, now: float | None = None) -> None:
        """HiAPI refused the create (400/401/402/422): final, never resent."""
        now = time.time() if now is None else now
        with self._tx() as c:
            c.execute(
                "UPDATE submissions SET state=?, error_code=?, error_message=?, finished_at=? WHERE id=?",
                (REJECTED, _clean(code), _clean(message), now, submission_id),
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
        task = _scrubbed(task)
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
        task = _scrubbed(task)
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
                _raw_json(task),
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
            .execute(f"SELECT {_SUB_COLS} FROM submissions WHERE id=?", (submission_id,))
            .fetchone()
        )
        return Submission(**dict(r)) if r else None

    def submission_by_task(self, task_id: str) -> Submission | None:
        r = (
            self._conn()
            .execute(f"SELECT {_SUB_COLS} FROM submissions WHERE task_id=?", (task_id,))
            .fetchone()
        )
        return Submission(**dict(r)) if r else None

    def unfinished(self) -> list[Submission]:
        """Every submission not yet in a terminal state, oldest first (for resuming)."""
        rows = self._conn().execute(
            f"SELECT {_SUB_COLS} FROM submissions WHERE state NOT IN (?,?,?) ORDER BY id",
            TERMINAL_STATES,
        )
        return [Submission(**dict(r)) for r in rows]

    def recent(self, limit: int = 40, *, since: float | None = None) -> list[Submission]:
        """Newest submissions first, for the queue."""
        sql = f"SELECT {_SUB_COLS} FROM submissions"
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

    # -- outputs --------------------------------------------------------------
    def outputs_for(self, submission_ids: Sequence[int]) -> dict[int, list[OutputRow]]:
        if not submission_ids:
            return {}
        marks = ",".join("?" * len(submission_ids))
        rows = self._conn().execute(
            f"SELECT {_OUT_COLS} FROM outputs WHERE submission_id IN ({marks}) ORDER BY submission_id, idx",
            list(submission_ids),
        )
        out: dict[int, list[OutputRow]] = {}
        for r in rows:
            o = OutputRow(**dict(r))
            out.setdefault(o.submission_id, []).append(o)
        return out

    def output(self, output_id: int) -> OutputRow | None:
        r = self._conn().execute(f"SELECT {_OUT_COLS} FROM outputs WHERE id=?", (output_id,)).fetchone()
        return OutputRow(**dict(r)) if r else None

    def pending_outputs(self, now: float | None = None) -> list[OutputRow]:
        """Outputs waiting for download whose next try is due."""
        now = time.time() if now is None else now
        rows = self._conn().execute(
            f"SELECT {_OUT_COLS} FROM outputs WHERE state='pending' AND next_try_at<=? ORDER BY id", (now,)
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
        message = _clean(message)
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

    # -- gallery --------------------------------------------------------------

    def gallery_count(self, q: GalleryQuery) -> int:
        where, params = _gallery_where(q)
        source = _KEPT_FROM if q.status == "kept" else _GALLERY_FROM
        return self._conn().execute("SELECT COUNT(*)" + source + where, params).fetchone()[0]

    def gallery(
        self, q: GalleryQuery, *, limit: int = 24, offset: int = 0, count: bool = True
    ) -> tuple[list[GalleryItem], int]:
        """One page of the gallery and the number of matches (-1 with `count=False`)."""
        where, params = _gallery_where(q)
        order = "DESC" if q.newest_first else "ASC"
        source = _KEPT_FROM if q.status == "kept" else _GALLERY_FROM
        total = self.gallery_count(q) if count else -1
        rows = self._conn().execute(
            _GALLERY_SELECT
            + source
            + where
            + f" ORDER BY s.created_at {order}, s.id {order}, o.id {order} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        items = [GalleryItem(**(dict(r) | {"favourite": bool(r["favourite"])})) for r in rows]
        return items, total

    def gallery_items(self, output_ids: Sequence[int]) -> list[GalleryItem]:
        if not output_ids:
            return []
        marks = ",".join("?" * len(output_ids))
        rows = self._conn().execute(
            _GALLERY_SELECT + _GALLERY_FROM + f" WHERE o.id IN ({marks}) ORDER BY o.id", list(output_ids)
        )
        return [GalleryItem(**(dict(r) | {"favourite": bool(r["favourite"])})) for r in rows]

    def creative_items(self, creative_id: str) -> list[GalleryItem]:
        """Every kept image of one creative (all its ratios), oldest first."""
        rows = self._conn().execute(
            _GALLERY_SELECT + _GALLERY_FROM + f" WHERE s.creative_id = ? AND {_KEPT} ORDER BY o.id",
            (creative_id,),
        )
        return [GalleryItem(**(dict(r) | {"favourite": bool(r["favourite"])})) for r in rows]

    # -- text fidelity --------------------------------------------------------
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

    def set_favourite(self, output_id: int, on: bool) -> None:
        if on:
            self._write(
                "INSERT OR IGNORE INTO favourites (output_id, at) VALUES (?, ?)", (output_id, time.time())
            )
        else:
            self._write("DELETE FROM favourites WHERE output_id = ?", (output_id,))

    def collections(self) -> list[tuple[int, str, int]]:
        rows = self._conn().execute(
            "SELECT c.id, c.name, COUNT(i.output_id) FROM collections c"
            " LEFT JOIN collection_items i ON i.collection_id = c.id GROUP BY c.id ORDER BY c.name"
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def add_collection(self, name: str) -> int:
        name = name.strip()
        if not name:
            raise ValueError("Collection name is required.")
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO collections (name, created_at) VALUES (?, ?)", (name, time.time())
            )
            return int(c.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()[0])

    def add_to_collection(self, collection_id: int, output_ids: Sequence[int]) -> None:
        with self._tx() as c:
            c.executemany(
                "INSERT OR IGNORE INTO collection_items (collection_id, output_id) VALUES (?, ?)",
                [(collection_id, o) for o in output_ids],
            )

    def output_collections(self, output_id: int) -> list[str]:
        rows = self._conn().execute(
            "SELECT c.name FROM collections c JOIN collection_items i ON i.collection_id = c.id"
            " WHERE i.output_id = ? ORDER BY c.name",
            (output_id,),
        )
        return [r[0] for r in rows]

    def trash_outputs(self, output_ids: Sequence[int]) -> list[int]:
        """Hide kept outputs from every view (state `trashed`); rows and files stay
        until `purge_trashed`, so `restore_outputs` can undo. Returns the ids hidden."""
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
            c.executemany(f"UPDATE outputs SET state = '{TRASHED}' WHERE id = ?", [(i,) for i in ids])
            return ids

    def restore_outputs(self, output_ids: Sequence[int]) -> int:
        """Put trashed outputs back as kept (favourites, collections, text checks untouched)."""
        if not output_ids:
            return 0
        marks = ",".join("?" * len(output_ids))
        cur = self._write(
            f"UPDATE outputs SET state = 'kept' WHERE state = '{TRASHED}' AND id IN ({marks})",
            list(output_ids),
        )
        return cur.rowcount

    def trashed_outputs(self) -> list[int]:
        return [r[0] for r in self._conn().execute(f"SELECT id FROM outputs WHERE state = '{TRASHED}'")]

    def purge_trashed(self, output_ids: Sequence[int] | None = None) -> list[str]:
        """Delete for good those of `output_ids` (default: all) still trashed; returns
        the sha256 of files no longer used, as `delete_outputs` does."""
        trashed = set(self.trashed_outputs())
        ids = sorted(trashed if output_ids is None else trashed.intersection(output_ids))
        return self.delete_outputs(ids)

    def delete_outputs(self, output_ids: Sequence[int]) -> list[str]:
        """Delete outputs (and submissions left without any). Returns the sha256
        of files no other output still uses, for the caller to remove from disk."""
        if not output_ids:
            return []
        marks = ",".join("?" * len(output_ids))
        with self._tx() as c:
            rows = c.execute(
                f"SELECT DISTINCT sha256, submission_id FROM outputs WHERE id IN ({marks})", list(output_ids)
            ).fetchall()
            c.execute(f"DELETE FROM outputs WHERE id IN ({marks})", list(output_ids))
            for sub_id in {r[1] for r in rows}:
                left = c.execute(
                    "SELECT COUNT(*) FROM outputs WHERE submission_id = ?", (sub_id,)
                ).fetchone()[0]
                if not left:
                    c.execute("DELETE FROM submissions WHERE id = ?", (sub_id,))
            orphans = []
            for sha in {r[0] for r in rows if r[0]}:
                if not c.execute("SELECT 1 FROM outputs WHERE sha256 = ? LIMIT 1", (sha,)).fetchone():
                    orphans.append(sha)
            return orphans


def click_keys(token: str, n: int) -> list[str]:
    """The idempotency keys of one click's `n` creates: derived from its token, so every
    recording or resend of the click carries the same keys (HiAPI replays, never re-bills)."""
    return [f"{token}-{i}" for i in range(n)]


def insert_submission(
    c: sqlite3.Connection, request: TaskRequest, *, idempotency_key: str, creative_id: str, now: float
) -> int:
    """Insert one `submitting` row and its first event inside the caller's transaction."""
    cur = c.execute(
        "INSERT INTO submissions (creative_id, prompt, aspect_ratio, resolution, model,"
        " idempotency_key, state, created_at, callback_url, input_urls, quality, background, storage)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
def _clean(text: str) -> str: ...
@overload
def _clean(text: None) -> None: ...
def _clean(text: str | None) -> str | None:
    """A HiAPI-provided code or message, redacted (None stays None)."""
    return None if text is None else redact(text)


def _scrubbed(task: Task) -> Task:
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


def _raw_json(task: Task) -> str:
    """The report as HiAPI sent it, unknown fields included (what we parsed, if that fails)."""
    try:
        return json.dumps(task.raw or task.to_dict(), ensure_ascii=True, default=str)
    except (TypeError, ValueError, RecursionError):
        return json.dumps(task.to_dict(), ensure_ascii=True)


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    out, buf = [], []
    for line in script.strip().splitlines():
        buf.append(line)
        joined = "\n".join(buf).strip()
        if joined.endswith(";") and (
            not joined.upper().startswith("CREATE TRIGGER") or joined.upper().endswith("END;")
        ):
            out.append(joined)
            buf = []
    if "\n".join(buf).strip():
        out.append("\n".join(buf).strip())
    return out
