"""Campaigns and the spend ledger in the studio database (schema: migration 4 in store.py).

Contract:
- A campaign's submissions, their row/ratio links and their spend entries are
  written in ONE transaction, before anything is sent: a crash never leaves a
  task outside its campaign or unpriced.
- A cell is (row, ratio); resubmitting a cell adds a submission, and the
  newest submission of each cell is the one shown and counted.
- Pause and cancel act only on creates never tried (attempts = 0): one that
  was tried may already exist at HiAPI and is always followed to its end.
- The spend ledger outlives deleted images: a trigger keeps the state the
  submission had when it was deleted. Spent = tasks that succeeded; failed,
  refused and cancelled ones are not counted (HiAPI does not document billing
  failed tasks); tasks still running are shown as pending.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .models import TaskRequest, TaskStatus
from .pricing import from_micros
from .records import (  # the records live there; re-exported so `from .campaign_store import …` keeps working
    CANCELLED,
    Campaign,
    CampaignRow,
    CampaignState,
    CellView,
    Progress,
    SpendLine,
)
from .sqlite.store import (
    _GALLERY_FROM,
    _GALLERY_SELECT,
    _MIGRATIONS,
    REJECTED,
    SUBMITTING,
    GalleryItem,
    Store,
    _split_sql,
    insert_submission,
)

RUNNING, PAUSED, CANCELLED_STATE = CampaignState.RUNNING, CampaignState.PAUSED, CampaignState.CANCELLED
CANCELLED_MESSAGE = "Cancelled before it was sent; nothing was created or billed."


def _progress(cells: Sequence[CellView]) -> Progress:
    done = sum(c.state == TaskStatus.SUCCESS for c in cells)
    cancelled = sum(c.cancelled for c in cells)
    failed = sum(c.failed for c in cells)
    left = len(cells) - done - cancelled - failed
    held = sum(c.state == SUBMITTING and c.attempts == 0 for c in cells)
    return Progress(len(cells), done, failed, cancelled, left, held)


_CELLS_SQL = (
    "SELECT ct.row_idx, ct.aspect_ratio, s.id, s.state, s.error_code, s.error_message, s.attempts, s.task_id"
    " FROM campaign_tasks ct JOIN submissions s ON s.id = ct.submission_id"
    " WHERE ct.campaign_id = ? AND ct.submission_id = ("
    "   SELECT MAX(x.submission_id) FROM campaign_tasks x"
    "   WHERE x.campaign_id = ct.campaign_id AND x.row_idx = ct.row_idx AND x.aspect_ratio = ct.aspect_ratio)"
    " ORDER BY ct.row_idx, ct.submission_id"
)


CAMPAIGN_MIGRATION = 3  # index of slot 4 in store._MIGRATIONS


def ensure_schema(store: Store) -> bool:
    """Create the campaign/library tables if missing; True when it had to.

    Slot 4 was a placeholder while slot 5 shipped, so a database written then is
    at a later version without these tables. Slot 4's statements are idempotent
    (IF NOT EXISTS) and are simply run again.
    """
    if store.reader().execute("SELECT 1 FROM sqlite_master WHERE name = 'campaigns'").fetchone():
        return False
    with store.transaction() as c:
        for stmt in _split_sql(_MIGRATIONS[CAMPAIGN_MIGRATION]):
            c.execute(stmt)
    return True


@dataclass(frozen=True)
class NewCampaign:
    """A campaign about to be launched: its template, variables, ratios and rows (values, prompt)."""

    name: str
    template: str
    variables: tuple[str, ...]
    ratios: tuple[str, ...]
    resolution: str
    rows: tuple[tuple[dict[str, str], str], ...]


def _key_seen(c: Any, key: str) -> bool:
    return c.execute("SELECT 1 FROM submissions WHERE idempotency_key = ?", (key,)).fetchone() is not None


def _insert_campaign(c: Any, new: NewCampaign, *, unit_micros: int, currency: str, now: float) -> int:
    cur = c.execute(
        "INSERT INTO campaigns (name, template, variables, ratios, resolution, state, unit_micros,"
        " currency, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            new.name.strip() or "Campaign",
            new.template,
            json.dumps(list(new.variables)),
            json.dumps(list(new.ratios)),
            new.resolution,
            RUNNING,
            int(unit_micros),
            currency,
            now,
        ),
    )
    cid = int(cur.lastrowid)
    c.executemany(
        "INSERT INTO campaign_rows (campaign_id, idx, vals, prompt) VALUES (?,?,?,?)",
        [(cid, i, json.dumps(v, ensure_ascii=False), p) for i, (v, p) in enumerate(new.rows, 1)],
    )
    return cid


def _insert_cells(
    c: Any,
    campaign_id: int,
    cells: Sequence[tuple[int, TaskRequest, str]],
    *,
    unit_micros: int,
    currency: str,
    now: float,
) -> list[int]:
    ids = []
    for row, request, key in cells:
        sid = insert_submission(
            c, request, idempotency_key=key, creative_id=f"cmp{campaign_id}-r{row}", now=now
        )
        c.execute(
            "INSERT INTO campaign_tasks (submission_id, campaign_id, row_idx, aspect_ratio) VALUES (?,?,?,?)",
            (sid, campaign_id, row, request.aspect_ratio),
        )
        c.execute(
            "INSERT INTO spend (submission_id, campaign_id, resolution, unit_micros, currency, at)"
            " VALUES (?,?,?,?,?,?)",
            (sid, campaign_id, request.resolution, int(unit_micros), currency, now),
        )
        ids.append(sid)
    if ids:
        c.execute("UPDATE campaigns SET state = ? WHERE id = ?", (RUNNING, campaign_id))
    return ids


class CampaignStore:
    """Campaign and spend queries over a `Store` (thread-safe like the store)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- writing ----------------------------------------------------------------
    def add_campaign(
        self,
        *,
        name: str,
        template: str,
        variables: Sequence[str],
        ratios: Sequence[str],
        resolution: str,
        rows: Sequence[tuple[dict[str, str], str]],
        unit_micros: int,
        currency: str,
        now: float | None = None,
    ) -> int:
        """Record a campaign and its rows (values, rendered prompt); rows are numbered from 1."""
        new = NewCampaign(name, template, tuple(variables), tuple(ratios), resolution, tuple(rows))
        now = time.time() if now is None else now
        with self.store.transaction() as c:
            return _insert_campaign(c, new, unit_micros=unit_micros, currency=currency, now=now)

    def add_cells(
        self,
        campaign_id: int,
        cells: Sequence[tuple[int, TaskRequest, str]],
        *,
        unit_micros: int,
        currency: str,
        now: float | None = None,
    ) -> list[int]:
        """Record (row, request, idempotency key) cells as submissions of the campaign, with spend entries."""
        return self.add_cells_once(campaign_id, cells, unit_micros=unit_micros, currency=currency, now=now)[0]

    def add_cells_once(
        self,
        campaign_id: int,
        cells: Sequence[tuple[int, TaskRequest, str]],
        *,
        unit_micros: int,
        currency: str,
        now: float | None = None,
    ) -> tuple[list[int], bool]:
        """`add_cells`, at most once per click: returns (submission ids, created).

        When the first cell's key is stored already, nothing is written and the
        submissions recorded under these keys are returned with `False`.
        """
        now = time.time() if now is None else now
        with self.store.transaction() as c:
            if cells and _key_seen(c, cells[0][2]):
                marks = ",".join("?" * len(cells))
                rows = c.execute(
                    f"SELECT id FROM submissions WHERE idempotency_key IN ({marks}) ORDER BY id",
                    [key for _, _, key in cells],
                )
                return [int(r[0]) for r in rows], False
            ids = _insert_cells(c, campaign_id, cells, unit_micros=unit_micros, currency=currency, now=now)
            return ids, True

    def launch_once(
        self,
        new: NewCampaign,
        cells: Sequence[tuple[int, TaskRequest, str]],
        *,
        unit_micros: int,
        currency: str,
        now: float | None = None,
    ) -> tuple[int, list[int], bool]:
        """Record a campaign, its rows, cells and spend in ONE transaction, at most once per click.

        Returns (campaign id, submission ids, created). When the click's first
        key is stored already, the campaign it launched is returned and nothing
        is written (`created` False): one click launches one campaign.
        """
        if not cells:
            raise ValueError("a campaign needs at least one cell")
        now = time.time() if now is None else now
        with self.store.transaction() as c:
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
            ids = _insert_cells(c, cid, cells, unit_micros=unit_micros, currency=currency, now=now)
            return cid, ids, True

    def record_spend(
        self, submission_ids: Sequence[int], *, resolution: str, unit_micros: int, currency: str
    ) -> None:
        """Price submissions made outside a campaign (a plain Generate)."""
        now = time.time()
        with self.store.transaction() as c:
            c.executemany(
                "INSERT OR IGNORE INTO spend (submission_id, campaign_id, resolution, unit_micros, currency, at)"
                " VALUES (?, NULL, ?, ?, ?, ?)",
                [(sid, resolution, int(unit_micros), currency, now) for sid in submission_ids],
            )

    def update_row(self, campaign_id: int, idx: int, values: dict[str, str], prompt: str) -> None:
        with self.store.transaction() as c:
            c.execute(
                "UPDATE campaign_rows SET vals = ?, prompt = ? WHERE campaign_id = ? AND idx = ?",
                (json.dumps(values, ensure_ascii=False), prompt, campaign_id, idx),
            )

    def set_state(self, campaign_id: int, state: str) -> None:
        if state not in (RUNNING, PAUSED, CANCELLED_STATE):
            raise ValueError(f"unknown campaign state {state!r}")
        with self.store.transaction() as c:
            c.execute("UPDATE campaigns SET state = ? WHERE id = ?", (state, campaign_id))

    def cancel(self, campaign_id: int, *, keep: Sequence[int] = (), now: float | None = None) -> list[int]:
        """Mark the campaign cancelled and every never-tried create in it (except `keep`) as cancelled.

        Returns the submission ids cancelled. Creates already tried are left to finish.
        """
        now = time.time() if now is None else now
        keep_set = set(keep)
        with self.store.transaction() as c:
            c.execute("UPDATE campaigns SET state = ? WHERE id = ?", (CANCELLED_STATE, campaign_id))
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
                    (REJECTED, CANCELLED, CANCELLED_MESSAGE, now, sid),
                )
                c.execute(
                    "INSERT INTO task_events (submission_id, status, at, source) VALUES (?,?,?,?)",
                    (sid, REJECTED, now, "cancel"),
                )
        return ids

    # -- reading ----------------------------------------------------------------
    def gates(self, submission_ids: Sequence[int]) -> dict[int, tuple[int, int | None, str | None]]:
        """submission id -> (attempts, campaign id or None, campaign state or None), for the tracker."""
        out: dict[int, tuple[int, int | None, str | None]] = {}
        ids = list(submission_ids)
        conn = self.store.reader()
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

    def submission_ids(self, campaign_id: int) -> list[int]:
        rows = self.store.reader().execute(
            "SELECT submission_id FROM campaign_tasks WHERE campaign_id = ? ORDER BY submission_id",
            (campaign_id,),
        )
        return [r[0] for r in rows]

    def cells(self, campaign_id: int) -> list[CellView]:
        rows = self.store.reader().execute(_CELLS_SQL, (campaign_id,))
        return [CellView(*r) for r in rows]

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
            progress=_progress(self.cells(r["id"])),
        )

    def campaign(self, campaign_id: int) -> Campaign | None:
        r = self.store.reader().execute("SELECT * FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
        return self._campaign(r) if r else None

    def campaigns(self, limit: int = 50) -> list[Campaign]:
        """Newest first."""
        rows = self.store.reader().execute("SELECT * FROM campaigns ORDER BY id DESC LIMIT ?", (limit,))
        return [self._campaign(r) for r in rows.fetchall()]

    def rows(self, campaign_id: int) -> list[CampaignRow]:
        rows = self.store.reader().execute(
            "SELECT idx, vals, prompt FROM campaign_rows WHERE campaign_id = ? ORDER BY idx", (campaign_id,)
        )
        return [CampaignRow(r[0], json.loads(r[1]), r[2]) for r in rows]

    def kept_items(self, campaign_id: int) -> list[tuple[int, GalleryItem]]:
        """(row, kept image) for the newest submission of every cell, in row then ratio order."""
        cells = self.cells(campaign_id)
        latest = {c.submission_id: c.row for c in cells}
        if not latest:
            return []
        marks = ",".join("?" * len(latest))
        rows = self.store.reader().execute(
            _GALLERY_SELECT
            + _GALLERY_FROM
            + f" WHERE o.state = 'kept' AND s.id IN ({marks}) ORDER BY s.id, o.idx",
            list(latest),
        )
        items = [GalleryItem(**(dict(r) | {"favourite": bool(r["favourite"])})) for r in rows]
        order = {c.submission_id: i for i, c in enumerate(cells)}
        items.sort(key=lambda it: order[it.submission_id])
        return [(latest[it.submission_id], it) for it in items]

    # -- spend ------------------------------------------------------------------
    def spend(self, by: str = "all", *, limit: int = 60) -> list[SpendLine]:
        """Estimated spend grouped `by` "all", "day" (local days, newest first) or "campaign"."""
        state = "COALESCE(s.state, sp.final_state)"
        if by == "day":
            key = "date(sp.at, 'unixepoch', 'localtime')"
            order = "key DESC"
        elif by == "campaign":
            key = "COALESCE(c.name || ' (#' || c.id || ')', 'Single prompts')"
            order = "MAX(sp.at) DESC"
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
        rows = self.store.reader().execute(sql, (limit,))
        return [
            SpendLine(r[0], r[1], from_micros(r[2] or 0), r[3] or 0, from_micros(r[4] or 0), r[5] or 0)
            for r in rows
        ]

    def campaign_spend(self, campaign_id: int) -> tuple[Decimal, Decimal]:
        """(spent, planned) for one campaign: planned counts every cell not failed or cancelled."""
        r = (
            self.store.reader()
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


def default_name(now: float | None = None) -> str:
    return "Campaign " + dt.datetime.fromtimestamp(time.time() if now is None else now).strftime(
        "%Y-%m-%d %H:%M"
    )
