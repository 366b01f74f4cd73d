"""Campaigns and the spend ledger on PostgreSQL, with the methods, rows and meaning of
`studio/sqlite/campaigns.py`.

Contract (as on SQLite):
- A campaign's submissions, their row/ratio links and their spend entries are written in ONE
  transaction, before anything is sent: a crash never leaves a task outside its campaign or
  unpriced. A click recorded twice (its first idempotency key stored already) writes nothing
  and returns what the first recording wrote.
- A cell is (row, ratio); resubmitting a cell adds a submission, and the newest submission of
  each cell is the one shown and counted.
- Cancel acts only on creates never tried (attempts = 0, not begun): one that was tried may
  already exist at HiAPI and is always followed to its end.
- The spend ledger outlives deleted images (a trigger keeps the state the submission had when
  it was deleted). Spent = tasks that succeeded; failed, refused and cancelled ones are not
  counted; tasks still running are pending.

The races SQLite avoided by its single writer, closed explicitly for several replicas:
- One click launching a campaign (or adding cells) on two replicas at once: both take
  `pg_advisory_xact_lock(CLICK_LOCK, hashtext(first key))` before looking for the first key
  (the lock recording a plain click takes too), so the second waits for the first to commit,
  then finds its rows and writes nothing. The unique idempotency key stays the backstop.
- Cancel against a worker beginning a create: the cancel is one `UPDATE … WHERE state =
  'submitting' AND sent_at IS NULL …`, and beginning a create is an update of the same row
  on `state = 'submitting'`; the row lock orders them, so either the create is marked begun
  and the cancel (re-checking its condition) leaves it alone, or it is cancelled and is
  never sent.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..models import TaskRequest
from ..pricing import from_micros
from ..records import (
    CANCELLED,
    LOCAL_AUTHOR,
    Campaign,
    CampaignRow,
    CampaignState,
    CellView,
    GalleryItem,
    NewCampaign,
    Progress,
    SpendLine,
    TaskState,
)
from .db import PgDatabase
from .gallery import GALLERY_FROM, GALLERY_SELECT, gallery_item
from .submissions import insert_submission, lock_click  # one click is one recording, however it arrives

SUBMITTING = TaskState.SUBMITTING
REJECTED = TaskState.REJECTED

_CELLS_SQL = (
    "SELECT ct.row_idx, ct.aspect_ratio, s.id AS submission_id, s.state, s.error_code, s.error_message,"
    " s.attempts, s.task_id"
    " FROM campaign_tasks ct JOIN submissions s ON s.id = ct.submission_id"
    " WHERE ct.campaign_id = %s AND ct.submission_id = ("
    "   SELECT MAX(x.submission_id) FROM campaign_tasks x"
    "   WHERE x.campaign_id = ct.campaign_id AND x.row_idx = ct.row_idx AND x.aspect_ratio = ct.aspect_ratio)"
    " ORDER BY ct.row_idx, ct.submission_id"
)

Cell = tuple[int, TaskRequest, str]  # (row, request, idempotency key)


def _insert_campaign(c: Any, new: NewCampaign, *, unit_micros: int, currency: str, now: float) -> int:
    row = c.execute(
        "INSERT INTO campaigns (name, template, variables, ratios, resolution, state, unit_micros,"
        " currency, created_at, author) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            new.name.strip() or "Campaign",
            new.template,
            json.dumps(list(new.variables)),
            json.dumps(list(new.ratios)),
            new.resolution,
            CampaignState.RUNNING,
            int(unit_micros),
            currency,
            now,
            new.author,
        ),
    ).fetchone()
    cid = int(row["id"])
    with c.cursor() as cur:
        cur.executemany(
            "INSERT INTO campaign_rows (campaign_id, idx, vals, prompt) VALUES (%s, %s, %s, %s)",
            [(cid, i, json.dumps(v, ensure_ascii=False), p) for i, (v, p) in enumerate(new.rows, 1)],
        )
    return cid


def _insert_cells(
    c: Any,
    campaign_id: int,
    cells: Sequence[Cell],
    *,
    unit_micros: int,
    currency: str,
    now: float,
    author: str,
) -> list[int]:
    ids = []
    for row, request, key in cells:
        sid = insert_submission(
            c, request, idempotency_key=key, creative_id=f"cmp{campaign_id}-r{row}", now=now, author=author
        )
        c.execute(
            "INSERT INTO campaign_tasks (submission_id, campaign_id, row_idx, aspect_ratio)"
            " VALUES (%s, %s, %s, %s)",
            (sid, campaign_id, row, request.aspect_ratio),
        )
        c.execute(
            "INSERT INTO spend (submission_id, campaign_id, resolution, unit_micros, currency, at, author)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (sid, campaign_id, request.resolution, int(unit_micros), currency, now, author),
        )
        ids.append(sid)
    if ids:
        c.execute("UPDATE campaigns SET state = %s WHERE id = %s", (CampaignState.RUNNING, campaign_id))
    return ids


def local_zone() -> str:
    """The studio process's time zone, for PostgreSQL's `AT TIME ZONE` (spend per local day,
    as SQLite's 'localtime'): $TZ or /etc/localtime's IANA name, else the current offset as a
    POSIX zone (hours west of UTC, as `time.timezone` counts them)."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz and not tz.startswith("/"):  # a zone name or a POSIX rule; a file path falls through
        return tz
    link = Path("/etc/localtime")
    if link.is_symlink():
        target = str(link.resolve())
        if "/zoneinfo/" in target:
            return target.split("/zoneinfo/", 1)[1]
    west = time.altzone if time.localtime().tm_isdst > 0 else time.timezone
    sign = "-" if west < 0 else "+"
    return f"LOC{sign}{abs(west) // 3600:02d}:{abs(west) % 3600 // 60:02d}"


class PgCampaignRows(PgDatabase):
    """`CampaignRepository` and `SpendRepository` over PostgreSQL."""

    # -- writing ----------------------------------------------------------------
    def add_campaign(
        self, new: NewCampaign, *, unit_micros: int, currency: str, now: float | None = None
    ) -> int:
        """Record a campaign and its rows (values, rendered prompt); rows are numbered from 1."""
        now = time.time() if now is None else now
        with self._tx() as c:
            return _insert_campaign(c, new, unit_micros=unit_micros, currency=currency, now=now)

    def add_campaign_cells_once(
        self,
        campaign_id: int,
        cells: Sequence[Cell],
        *,
        unit_micros: int,
        currency: str,
        now: float | None = None,
        author: str = LOCAL_AUTHOR,
    ) -> tuple[list[int], bool]:
        """Record cells as submissions of the campaign, with spend entries, made by `author`,
        at most once per click.

        When the first cell's key is stored already, nothing is written and the submissions
        recorded under these keys are returned with `False` (racing replicas: the click lock).
        """
        now = time.time() if now is None else now
        with self._tx() as c:
            if cells:
                lock_click(c, cells[0][2])
                if c.execute(
                    "SELECT 1 FROM submissions WHERE idempotency_key = %s", (cells[0][2],)
                ).fetchone():
                    rows = c.execute(
                        "SELECT id FROM submissions WHERE idempotency_key = ANY(%s) ORDER BY id",
                        ([key for _, _, key in cells],),
                    ).fetchall()
                    return [int(r["id"]) for r in rows], False
            ids = _insert_cells(
                c, campaign_id, cells, unit_micros=unit_micros, currency=currency, now=now, author=author
            )
            return ids, True

    def launch_campaign_once(
        self,
        new: NewCampaign,
        cells: Sequence[Cell],
        *,
        unit_micros: int,
        currency: str,
        now: float | None = None,
    ) -> tuple[int, list[int], bool]:
        """Record a campaign, its rows, cells and spend in ONE transaction, at most once per click.

        Returns (campaign id, submission ids, created). When the click's first key is stored
        already, the campaign it launched is returned and nothing is written (`created`
        False); two replicas launching one click at once make one campaign (the click lock).
        """
        if not cells:
            raise ValueError("a campaign needs at least one cell")
        now = time.time() if now is None else now
        with self._tx() as c:
            lock_click(c, cells[0][2])
            seen = c.execute(
                "SELECT t.campaign_id FROM submissions s JOIN campaign_tasks t ON t.submission_id = s.id"
                " WHERE s.idempotency_key = %s",
                (cells[0][2],),
            ).fetchone()
            if seen is not None:
                cid = int(seen["campaign_id"])
                rows = c.execute(
                    "SELECT submission_id FROM campaign_tasks WHERE campaign_id = %s ORDER BY submission_id",
                    (cid,),
                ).fetchall()
                return cid, [int(r["submission_id"]) for r in rows], False
            cid = _insert_campaign(c, new, unit_micros=unit_micros, currency=currency, now=now)
            ids = _insert_cells(
                c, cid, cells, unit_micros=unit_micros, currency=currency, now=now, author=new.author
            )
            return cid, ids, True

    def record_spend(
        self,
        submission_ids: Sequence[int],
        *,
        resolution: str,
        unit_micros: int,
        currency: str,
        now: float | None = None,
        author: str = LOCAL_AUTHOR,
    ) -> None:
        """Price submissions made outside a campaign (a plain Generate) as `author`'s spend;
        a priced one stays as it was."""
        if not submission_ids:
            return
        now = time.time() if now is None else now
        with self._tx() as c, c.cursor() as cur:
            cur.executemany(
                "INSERT INTO spend (submission_id, campaign_id, resolution, unit_micros, currency, at, author)"
                " VALUES (%s, NULL, %s, %s, %s, %s, %s) ON CONFLICT (submission_id) DO NOTHING",
                [(sid, resolution, int(unit_micros), currency, now, author) for sid in submission_ids],
            )

    def update_campaign_row(self, campaign_id: int, idx: int, values: dict[str, str], prompt: str) -> None:
        self._write(
            "UPDATE campaign_rows SET vals = %s, prompt = %s WHERE campaign_id = %s AND idx = %s",
            (json.dumps(values, ensure_ascii=False), prompt, campaign_id, idx),
        )

    def set_campaign_state(self, campaign_id: int, state: str) -> None:
        self._write("UPDATE campaigns SET state = %s WHERE id = %s", (state, campaign_id))

    def cancel_campaign(
        self, campaign_id: int, *, message: str, keep: Sequence[int] = (), now: float | None = None
    ) -> list[int]:
        """Mark the campaign cancelled and every never-tried create in it (except `keep`)
        rejected with code CANCELLED and `message`, in one transaction; returns their ids."""
        now = time.time() if now is None else now
        with self._tx() as c:
            c.execute("UPDATE campaigns SET state = %s WHERE id = %s", (CampaignState.CANCELLED, campaign_id))
            rows = c.execute(
                "UPDATE submissions s SET state = %s, error_code = %s, error_message = %s, finished_at = %s"
                " FROM campaign_tasks ct WHERE ct.submission_id = s.id AND ct.campaign_id = %s"
                # sent_at: a worker (maybe another replica) has begun its POST; it may exist at HiAPI.
                " AND s.state = %s AND s.task_id IS NULL AND s.attempts = 0 AND s.sent_at IS NULL"
                " AND NOT (s.id = ANY(%s)) RETURNING s.id",
                (REJECTED, CANCELLED, message, now, campaign_id, SUBMITTING, list(keep)),
            ).fetchall()
            ids = sorted(int(r["id"]) for r in rows)
            if ids:
                with c.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO task_events (submission_id, status, at, source) VALUES (%s, %s, %s, %s)",
                        [(sid, REJECTED, now, "cancel") for sid in ids],
                    )
        return ids

    # -- reading ----------------------------------------------------------------
    def campaign_gates(self, submission_ids: Sequence[int]) -> dict[int, tuple[int, int | None, str | None]]:
        """submission id -> (attempts, campaign id or None, campaign state or None)."""
        ids = list(submission_ids)
        if not ids:
            return {}
        with self._read() as c:
            rows = c.execute(
                # A create begun (sent_at) counts as tried: it may exist at HiAPI, so a pause never holds it.
                "SELECT s.id, s.attempts + (s.sent_at IS NOT NULL)::int AS tried, c.id AS campaign_id,"
                " c.state FROM submissions s"
                " LEFT JOIN campaign_tasks ct ON ct.submission_id = s.id"
                " LEFT JOIN campaigns c ON c.id = ct.campaign_id"
                " WHERE s.id = ANY(%s)",
                (ids,),
            ).fetchall()
        return {
            int(r["id"]): (
                int(r["tried"]),
                None if r["campaign_id"] is None else int(r["campaign_id"]),
                r["state"],
            )
            for r in rows
        }

    def campaign_submission_ids(self, campaign_id: int) -> list[int]:
        with self._read() as c:
            rows = c.execute(
                "SELECT submission_id FROM campaign_tasks WHERE campaign_id = %s ORDER BY submission_id",
                (campaign_id,),
            ).fetchall()
        return [int(r["submission_id"]) for r in rows]

    def campaign_cells(self, campaign_id: int) -> list[CellView]:
        """The newest submission of every (row, ratio) cell, in row order."""
        with self._read() as c:
            rows = c.execute(_CELLS_SQL, (campaign_id,)).fetchall()
        return [
            CellView(
                row=r["row_idx"],
                aspect_ratio=r["aspect_ratio"],
                submission_id=int(r["submission_id"]),
                state=r["state"],
                error_code=r["error_code"],
                error_message=r["error_message"],
                attempts=r["attempts"],
                task_id=r["task_id"],
            )
            for r in rows
        ]

    def _campaign(self, r: dict[str, Any]) -> Campaign:
        return Campaign(
            id=int(r["id"]),
            name=r["name"],
            template=r["template"],
            variables=tuple(json.loads(r["variables"])),
            ratios=tuple(json.loads(r["ratios"])),
            resolution=r["resolution"],
            state=r["state"],
            unit_micros=int(r["unit_micros"]),
            currency=r["currency"],
            created_at=r["created_at"],
            progress=Progress.of(self.campaign_cells(int(r["id"]))),
            author=r["author"],
        )

    def campaign(self, campaign_id: int) -> Campaign | None:
        with self._read() as c:
            r = c.execute("SELECT * FROM campaigns WHERE id = %s", (campaign_id,)).fetchone()
        return self._campaign(r) if r else None

    def campaigns(self, limit: int = 50, *, author: str | None = None) -> list[Campaign]:
        """Newest first; only `author`'s when given (None: everyone's)."""
        with self._read() as c:
            if author is None:
                rows = c.execute("SELECT * FROM campaigns ORDER BY id DESC LIMIT %s", (limit,)).fetchall()
            else:
                rows = c.execute(
                    "SELECT * FROM campaigns WHERE author = %s ORDER BY id DESC LIMIT %s", (author, limit)
                ).fetchall()
        return [self._campaign(r) for r in rows]

    def campaign_rows(self, campaign_id: int) -> list[CampaignRow]:
        with self._read() as c:
            rows = c.execute(
                "SELECT idx, vals, prompt FROM campaign_rows WHERE campaign_id = %s ORDER BY idx",
                (campaign_id,),
            ).fetchall()
        return [CampaignRow(r["idx"], json.loads(r["vals"]), r["prompt"]) for r in rows]

    def campaign_kept_items(self, campaign_id: int) -> list[tuple[int, GalleryItem]]:
        """(row, kept image) for the newest submission of every cell, in row then ratio order."""
        cells = self.campaign_cells(campaign_id)
        latest = {c.submission_id: c.row for c in cells}
        if not latest:
            return []
        with self._read() as c:
            rows = c.execute(
                GALLERY_SELECT
                + GALLERY_FROM
                + " WHERE o.state = 'kept' AND s.id = ANY(%s) ORDER BY s.id, o.idx",
                (list(latest),),
            ).fetchall()
        items = [gallery_item(r) for r in rows]
        order = {c.submission_id: i for i, c in enumerate(cells)}
        items.sort(key=lambda it: order[it.submission_id])
        return [(latest[it.submission_id], it) for it in items]

    # -- spend ------------------------------------------------------------------
    def spend_lines(self, by: str = "all", *, limit: int = 60) -> list[SpendLine]:
        """Estimated spend grouped `by` "all", "day" (the studio's local days, newest first), "campaign"
        or "author" (who made it: spend per person, the biggest spender first)."""
        state = "COALESCE(s.state, sp.final_state)"
        params: list[Any] = []
        if by == "day":
            key = "to_char(to_timestamp(sp.at) AT TIME ZONE %s, 'YYYY-MM-DD')"
            params.append(local_zone())
            order = "key DESC"
        elif by == "campaign":
            key = "COALESCE(c.name || ' (#' || c.id || ')', 'Single prompts')"
            order = "MAX(sp.at) DESC"
        elif by == "author":
            key = "sp.author"
            order = f"SUM(CASE WHEN {state} = 'success' THEN sp.unit_micros ELSE 0 END) DESC, sp.author COLLATE \"C\""
        else:
            key = "'all'::text"
            order = "key"
        sql = (
            f"SELECT {key} AS key, sp.currency,"
            f" SUM(CASE WHEN {state} = 'success' THEN sp.unit_micros ELSE 0 END) AS spent,"
            f" SUM(CASE WHEN {state} = 'success' THEN 1 ELSE 0 END) AS images,"
            f" SUM(CASE WHEN {state} NOT IN ('success', 'fail', 'rejected') THEN sp.unit_micros ELSE 0 END)"
            " AS pending,"
            f" SUM(CASE WHEN {state} NOT IN ('success', 'fail', 'rejected') THEN 1 ELSE 0 END) AS pending_images"
            " FROM spend sp LEFT JOIN submissions s ON s.id = sp.submission_id"
            " LEFT JOIN campaigns c ON c.id = sp.campaign_id"
            f" GROUP BY 1, sp.currency ORDER BY {order} LIMIT %s"
        )
        with self._read() as c:
            rows = c.execute(sql, [*params, limit]).fetchall()
        return [
            SpendLine(
                r["key"],
                r["currency"],
                from_micros(r["spent"] or 0),
                int(r["images"] or 0),
                from_micros(r["pending"] or 0),
                int(r["pending_images"] or 0),
            )
            for r in rows
        ]

    def campaign_spend(self, campaign_id: int) -> tuple[Decimal, Decimal]:
        """(spent, planned) for one campaign: planned counts every cell not failed or cancelled."""
        with self._read() as c:
            r = c.execute(
                "SELECT SUM(CASE WHEN COALESCE(s.state, sp.final_state) = 'success' THEN sp.unit_micros END)"
                " AS spent,"
                " SUM(CASE WHEN COALESCE(s.state, sp.final_state) NOT IN ('fail', 'rejected')"
                " THEN sp.unit_micros END) AS planned"
                " FROM spend sp LEFT JOIN submissions s ON s.id = sp.submission_id WHERE sp.campaign_id = %s",
                (campaign_id,),
            ).fetchone()
        return from_micros(r["spent"] or 0), from_micros(r["planned"] or 0)
