"""Campaigns and the spend ledger: the use cases over the campaign repository.

Contract:
- A campaign's submissions, their row/ratio links and their spend entries are
  written in ONE transaction, before anything is sent: a crash never leaves a
  task outside its campaign or unpriced.
- A cell is (row, ratio); resubmitting a cell adds a submission, and the
  newest submission of each cell is the one shown and counted.
- Pause and cancel act only on creates never tried (attempts = 0): one that
  was tried may already exist at HiAPI and is always followed to its end.
- Nothing here writes SQL: the records are kept by a `CampaignBook`
  (`studio/repositories.py`; `studio/sqlite/campaigns.py` for SQLite).
- The spend ledger outlives deleted images: a trigger keeps the state the
  submission had when it was deleted. Spent = tasks that succeeded; failed,
  refused and cancelled ones are not counted (HiAPI does not document billing
  failed tasks); tasks still running are shown as pending.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from decimal import Decimal

from .models import TaskRequest
from .records import (  # the records live there; re-exported so `from .campaign_store import …` keeps working
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
from .repositories import CampaignBook

RUNNING, PAUSED, CANCELLED_STATE = CampaignState.RUNNING, CampaignState.PAUSED, CampaignState.CANCELLED
CANCELLED_MESSAGE = "Cancelled before it was sent; nothing was created or billed."

__all__ = [
    "CANCELLED",
    "CANCELLED_MESSAGE",
    "CANCELLED_STATE",
    "PAUSED",
    "RUNNING",
    "Campaign",
    "CampaignRow",
    "CampaignStore",
    "CellView",
    "NewCampaign",
    "Progress",
    "SpendLine",
    "default_name",
]


class CampaignStore:
    """Campaign and spend use of a `CampaignBook` (the store; thread-safe like it)."""

    def __init__(self, store: CampaignBook) -> None:
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
        return self.store.add_campaign(new, unit_micros=unit_micros, currency=currency, now=now)

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
        author: str = LOCAL_AUTHOR,
    ) -> tuple[list[int], bool]:
        """`add_cells` (as `author`'s), at most once per click: returns (submission ids, created).

        When the first cell's key is stored already, nothing is written and the
        submissions recorded under these keys are returned with `False`.
        """
        return self.store.add_campaign_cells_once(
            campaign_id, cells, unit_micros=unit_micros, currency=currency, now=now, author=author
        )

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
        return self.store.launch_campaign_once(
            new, cells, unit_micros=unit_micros, currency=currency, now=now
        )

    def record_spend(
        self,
        submission_ids: Sequence[int],
        *,
        resolution: str,
        unit_micros: int,
        currency: str,
        author: str = LOCAL_AUTHOR,
    ) -> None:
        """Price submissions made outside a campaign (a plain Generate) as `author`'s spend."""
        self.store.record_spend(
            submission_ids, resolution=resolution, unit_micros=unit_micros, currency=currency, author=author
        )

    def update_row(self, campaign_id: int, idx: int, values: dict[str, str], prompt: str) -> None:
        self.store.update_campaign_row(campaign_id, idx, values, prompt)

    def set_state(self, campaign_id: int, state: str) -> None:
        if state not in (RUNNING, PAUSED, CANCELLED_STATE):
            raise ValueError(f"unknown campaign state {state!r}")
        self.store.set_campaign_state(campaign_id, state)

    def cancel(self, campaign_id: int, *, keep: Sequence[int] = (), now: float | None = None) -> list[int]:
        """Mark the campaign cancelled and every never-tried create in it (except `keep`) as cancelled.

        Returns the submission ids cancelled. Creates already tried are left to finish.
        """
        return self.store.cancel_campaign(campaign_id, message=CANCELLED_MESSAGE, keep=keep, now=now)

    # -- reading ----------------------------------------------------------------
    def gates(self, submission_ids: Sequence[int]) -> dict[int, tuple[int, int | None, str | None]]:
        """submission id -> (attempts, campaign id or None, campaign state or None), for the tracker."""
        return self.store.campaign_gates(submission_ids)

    def submission_ids(self, campaign_id: int) -> list[int]:
        return self.store.campaign_submission_ids(campaign_id)

    def cells(self, campaign_id: int) -> list[CellView]:
        return self.store.campaign_cells(campaign_id)

    def campaign(self, campaign_id: int) -> Campaign | None:
        return self.store.campaign(campaign_id)

    def campaigns(self, limit: int = 50, *, author: str | None = None) -> list[Campaign]:
        """Newest first; only `author`'s when given (None: everyone's)."""
        return self.store.campaigns(limit, author=author)

    def rows(self, campaign_id: int) -> list[CampaignRow]:
        return self.store.campaign_rows(campaign_id)

    def kept_items(self, campaign_id: int) -> list[tuple[int, GalleryItem]]:
        """(row, kept image) for the newest submission of every cell, in row then ratio order."""
        return self.store.campaign_kept_items(campaign_id)

    # -- spend ------------------------------------------------------------------
    def spend(self, by: str = "all", *, limit: int = 60) -> list[SpendLine]:
        """Estimated spend grouped `by` "all", "day" (local days, newest first), "campaign" or
        "author" (spend per person)."""
        return self.store.spend_lines(by, limit=limit)

    def campaign_spend(self, campaign_id: int) -> tuple[Decimal, Decimal]:
        """(spent, planned) for one campaign: planned counts every cell not failed or cancelled."""
        return self.store.campaign_spend(campaign_id)


def default_name(now: float | None = None) -> str:
    return "Campaign " + dt.datetime.fromtimestamp(time.time() if now is None else now).strftime(
        "%Y-%m-%d %H:%M"
    )
