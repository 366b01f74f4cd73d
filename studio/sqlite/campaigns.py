"""Campaigns and the spend ledger (schema slot 4).

Contract:
- A campaign's submissions, their row/ratio links and their spend entries are
  written in ONE transaction, before anything is sent: a crash never leaves a
  task outside its campaign or unpriced. A click recorded twice (its first
  idempotency key stored already) writes nothing and returns what the first
  recording wrote.
- A cell is (row, ratio); resubmitting a cell adds a submission, and the
  newest submission of each cell is the one shown and counted.
- Cancel acts only on creates never tried (attempts = 0): one that was tried
  may already exist at HiAPI and is always followed to its end.
- The spend ledger outlives deleted images: a trigger keeps the state the
  submission had when it was deleted. Spent = tasks that succeeded; failed,
  refused and cancelled ones are not counted; tasks still running are pending.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from decimal import Decimal
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
)
from .db import Database
from .gallery import GALLERY_FROM, GALLERY_SELECT, gallery_item
from .submissions import REJECTED, SUBMITTING, insert_submission

_CELLS_SQL = (
    "SELECT ct.row_idx, ct.aspect_ratio, s.id, s.state, s.error_code, s.error_message, s.attempts, s.task_id"
    " FROM campaign_tasks ct JOIN submissions s ON s.id = ct.submission_id"
    " WHERE ct.campaign_id = ? AND ct.submission_id = ("
    "   SELECT MAX(x.submission_id) FROM campaign_tasks x"
    "   WHERE x.campaign_id = ct.campaign_id AND x.row_idx = ct.row_idx AND x.aspect_ratio = ct.aspect_ratio)"
    " ORDER BY ct.row_idx, ct.submission_id"
)

Cell = tuple[int, TaskRequest, str]  # (row, request, idempotency key)


def _insert_campaign(
    c: sqlite3.Connection, new: NewCampaign, *, unit_micros: int, currency: str, now: float
) -> int:
    cur = c.execute(
        "INSERT INTO campaigns (name, template, variables, ratios, resolution, state, unit_micros,"
        " currency, created_at, author) VALUES (?,?,?,?,?,?,?,?,?,?)",
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
    )
    cid = cur.lastrowid
    assert cid is not None  # sqlite3 sets it after every INSERT
    c.executemany(
        "INSERT INTO campaign_rows (campaign_id, idx, vals, prompt) VALUES (?,?,?,?)",
        [(cid, i, json.dumps(v, ensure_ascii=False), p) for i, (v, p) in enumerate(new.rows, 1)],
    )
    return int(cid)


def _insert_cells(
    c: sqlite3.Connection,
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
            "INSERT INTO campaign_tasks (submission_id, campaign_id, row_idx, aspect_ratio) VALUES (?,?,?,?)",
            (sid, campaign_id, row, request.aspect_ratio),
        )
        c.execute(
            "INSERT INTO spend (submission_id, campaign_id, resolution, unit_micros, currency, at, author)"
            " VALUES (?,?,?,?,?,?,?)",
            (sid, campaign_id, request.resolution, int(unit_micros), currency, now, author),
        )
        ids.append(sid)
    if ids:
        c.execute("UPDATE campaigns SET state = ? WHERE id = ?", (CampaignState.RUNNING, campaign_id))
    return ids


class CampaignRows(Database):
    """`CampaignRepository` and `SpendRepository` over SQLite."""

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

        When the first cell's key is stored already, nothing is written and the
        submissions recorded under these keys are returned with `False`.
        """
        now = time.time() if now is None else now
        with self._tx() as c:
            if (
                cells
                and c.execute(
                    "SELECT 1 FROM submissions WHERE idempotency_key = ?", (cells[0][2],)
                ).fetchone()
            ):
                marks = ",".join("?" * len(cells))
                rows = c.execute(
                    f"SELECT id FROM submissions WHERE idempotency_key IN ({marks}) ORDER BY id",
                    [key for _, _, key in cells],
                )
                return [int(r[0]) for r in rows], False
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

        Returns (campaign id, submission ids, created). When the click's first
        key is stored already, the campaign it launched is returned and nothing
        is written (`created` False).
        """
        if not cells:
            raise ValueError("a campaign needs at least one cell")
        now = time.time() if now is None else now
        with self._tx() as c:
            seen = c.execute(
                "SELECT t.campaign_id FROM submissions s JOIN campaign_tasks t ON t.submission_id = s.id"
                " WHERE s.idempotency_key = ?",
                (cells[0][2],),
            ).fetchone()
            if seen is not None:
                cid = int(seen[0])
                rows = c.execute(
                    "SELECT submission_id FROM campaign_tasks WHERE campaign_id = ? ORDER BY submission_id",
                    (cid,),
                )
                return cid, [int(r[0]) for r in rows], False
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
        now = time.time() if now is None else now
        with self._tx() as c:
            c.executemany(
                "INSERT OR IGNORE INTO spend (submission_id, campaign_id, resolution, unit_micros, currency,"
                " at, author) VALUES (?, NULL, ?, ?, ?, ?, ?)",
                [(sid, resolution, int(unit_micros), currency, now, author) for sid in submission_ids],
            )

    def update_campaign_row(self, campaign_id: int, idx: int, values: dict[str, str], prompt: str) -> None:
        self._write(
            "UPDATE campaign_rows SET vals = ?, prompt = ? WHERE campaign_id = ? AND idx = ?",
            (json.dumps(values, ensure_ascii=False), prompt, campaign_id, idx),
        )

    def set_campaign_state(self, campaign_id: int, state: str) -> None:
        self._write("UPDATE campaigns SET state = ? WHERE id = ?", (state, campaign_id))

    def cancel_campaign(
        self, campaign_id: int, *, message: str, keep: Sequence[int] = (), now: float | None = None
    ) -> list[int]:
        """Mark the campaign cancelled and every never-tried create in it (except `keep`)
        rejected with code CANCELLED and `message`, in one transaction; returns their ids."""
        now = time.time() if now is None else now
        keep_set = set(keep)
        with self._tx() as c:
            c.execute("UPDATE campaigns SET state = ? WHERE id = ?", (CampaignState.CANCELLED, campaign_id))
            rows = c.execute(
                "SELECT s.id FROM campaign_tasks ct JOIN submissions s ON s.id = ct.submission_id"
                # sent_at: a worker (maybe another process) has begun its POST; it may exist at HiAPI.
                " WHERE ct.campaign_id = ? AND s.state = ? AND s.task_id IS NULL AND s.attempts = 0"
                " AND s.sent_at IS NULL",
                (campaign_id, SUBMITTING),
            ).fetchall()
            ids = [r[0] for r in rows if r[0] not in keep_set]
            for sid in ids:
                c.execute(
                    "UPDATE submissions SET state = ?, error_code = ?, error_message = ?, finished_at = ?"
                    " WHERE id = ?",
                    (REJECTED, CANCELLED, message, now, sid),
                )
                c.execute(
                    "INSERT INTO task_events (submission_id, status, at, source) VALUES (?,?,?,?)",
                    (sid, REJECTED, now, "cancel"),
                )
        return ids

    # -- reading ----------------------------------------------------------------
    def campaign_gates(self, submission_ids: Sequence[int]) -> dict[int, tuple[int, int | None, str | None]]:
        """submission id -> (attempts, campaign id or None, campaign state or None)."""
        out: dict[int, tuple[int, int | None, str | None]] = {}
        ids = list(submission_ids)
        conn = self._conn()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            rows = conn.execute(
                # A create begun (sent_at) counts as tried: it may exist at HiAPI, so a pause never holds it.
                "SELECT s.id, s.attempts + (s.sent_at IS NOT NULL), c.id, c.state FROM submissions s"
                " LEFT JOIN campaign_tasks ct ON ct.submission_id = s.id"
                " LEFT JOIN campaigns c ON c.id = ct.campaign_id"
                f" WHERE s.id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for r in rows:
                out[r[0]] = (r[1], r[2], r[3])
        return out

    def campaign_submission_ids(self, campaign_id: int) -> list[int]:
        rows = self._conn().execute(
            "SELECT submission_id FROM campaign_tasks WHERE campaign_id = ? ORDER BY submission_id",
            (campaign_id,),
        )
        return [r[0] for r in rows]

    def campaign_cells(self, campaign_id: int) -> list[CellView]:
        """The newest submission of every (row, ratio) cell, in row order."""
        return [CellView(*r) for r in self._conn().execute(_CELLS_SQL, (campaign_id,))]

    def _campaign(self, r: Any) -> Campaign:
        return Campaign(
            id=r["id"],
            name=r["name"],
            template=r["template"],
            variables=tuple(json.loads(r["variables"])),
            ratios=tuple(json.loads(r["ratios"])),
            resolution=r["resolution"],
            state=r["state"],
            unit_micros=r["unit_micros"],
            currency=r["currency"],
            created_at=r["created_at"],
            progress=Progress.of(self.campaign_cells(r["id"])),
            author=r["author"],
        )

    def campaign(self, campaign_id: int) -> Campaign | None:
        r = self._conn().execute("SELECT * FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
        return self._campaign(r) if r else None

    def campaigns(self, limit: int = 50, *, author: str | None = None) -> list[Campaign]:
        """Newest first; only `author`'s when given (None: everyone's)."""
        if author is None:
            rows = self._conn().execute("SELECT * FROM campaigns ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._conn().execute(
                "SELECT * FROM campaigns WHERE author = ? ORDER BY id DESC LIMIT ?", (author, limit)
            )
        return [self._campaign(r) for r in rows.fetchall()]

    def campaign_rows(self, campaign_id: int) -> list[CampaignRow]:
        rows = self._conn().execute(
            "SELECT idx, vals, prompt FROM campaign_rows WHERE campaign_id = ? ORDER BY idx", (campaign_id,)
        )
        return [CampaignRow(r[0], json.loads(r[1]), r[2]) for r in rows]

    def campaign_kept_items(self, campaign_id: int) -> list[tuple[int, GalleryItem]]:
        """(row, kept image) for the newest submission of every cell, in row then ratio order."""
        cells = self.campaign_cells(campaign_id)
        latest = {c.submission_id: c.row for c in cells}
        if not latest:
            return []
        marks = ",".join("?" * len(latest))
        rows = self._conn().execute(
            GALLERY_SELECT
            + GALLERY_FROM
            + f" WHERE o.state = 'kept' AND s.id IN ({marks}) ORDER BY s.id, o.idx",
            list(latest),
        )
        items = [gallery_item(r) for r in rows]
        order = {c.submission_id: i for i, c in enumerate(cells)}
        items.sort(key=lambda it: order[it.submission_id])
        return [(latest[it.submission_id], it) for it in items]

    # -- spend ------------------------------------------------------------------
    def spend_lines(self, by: str = "all", *, limit: int = 60) -> list[SpendLine]:
        """Estimated spend grouped `by` "all", "day" (local days, newest first), "campaign" or
        "author" (who made it: spend per person, the biggest spender first)."""
        state = "COALESCE(s.state, sp.final_state)"
        if by == "day":
            key = "date(sp.at, 'unixepoch', 'localtime')"
            order = "key DESC"
        elif by == "campaign":
            key = "COALESCE(c.name || ' (#' || c.id || ')', 'Single prompts')"
            order = "MAX(sp.at) DESC"
        elif by == "author":
            key = "sp.author"
            order = f"SUM(CASE WHEN {state} = 'success' THEN sp.unit_micros ELSE 0 END) DESC, key"
        else:
            key = "'all'"
            order = "key"
        sql = (
            f"SELECT {key} AS key, sp.currency,"
            f" SUM(CASE WHEN {state} = 'success' THEN sp.unit_micros ELSE 0 END),"
            f" SUM({state} = 'success'),"
            f" SUM(CASE WHEN {state} NOT IN ('success', 'fail', 'rejected') THEN sp.unit_micros ELSE 0 END),"
            f" SUM({state} NOT IN ('success', 'fail', 'rejected'))"
            " FROM spend sp LEFT JOIN submissions s ON s.id = sp.submission_id"
            " LEFT JOIN campaigns c ON c.id = sp.campaign_id"
            f" GROUP BY key, sp.currency ORDER BY {order} LIMIT ?"
        )
        rows = self._conn().execute(sql, (limit,))
        return [
            SpendLine(r[0], r[1], from_micros(r[2] or 0), r[3] or 0, from_micros(r[4] or 0), r[5] or 0)
            for r in rows
        ]

    def campaign_spend(self, campaign_id: int) -> tuple[Decimal, Decimal]:
        """(spent, planned) for one campaign: planned counts every cell not failed or cancelled."""
        r = (
            self._conn()
            .execute(
                "SELECT SUM(CASE WHEN COALESCE(s.state, sp.final_state) = 'success' THEN sp.unit_micros END),"
                " SUM(CASE WHEN COALESCE(s.state, sp.final_state) NOT IN ('fail', 'rejected')"
                " THEN sp.unit_micros END)"
                " FROM spend sp LEFT JOIN submissions s ON s.id = sp.submission_id WHERE sp.campaign_id = ?",
                (campaign_id,),
            )
            .fetchone()
        )
        return from_micros(r[0] or 0), from_micros(r[1] or 0)
