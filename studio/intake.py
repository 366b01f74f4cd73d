"""The intake: where pages hand work in. It records, it never sends.

Contract:
- A click (`submit`) or a campaign launch is recorded once, with the
  idempotency key of every create derived from the click token, and announced
  on the event bus. Whichever worker claims it (`Tracker`, in this process or
  another, see `sqlite/claims.py`) sends it; a web process with no tracker
  (`STUDIO_ROLE=web`) takes clicks all the same.
- A verified callback (`ingest_callback`) is stored and announced here: the
  result is recorded, its outputs wait, pending, for a worker to download them.
- Pause, resume and cancel act on the store, so they hold whichever worker
  follows the campaign; cancel drops only creates no worker has begun to send.
- The Settings limit of tasks at HiAPI at once is written to the create
  budget every worker on the same HiAPI key reads (`set_max_active`).

`Tracker` extends this class: the same calls, plus the worker that follows them.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from . import errors as E
from . import events as ev
from .callbacks import CallbackOutcome
from .campaign_store import PAUSED, RUNNING, CampaignStore, NewCampaign
from .models import Callback, Task, TaskRequest, TaskStatus
from .records import LOCAL_AUTHOR, SpendRate, click_keys
from .repositories import Repositories

DEFAULT_MAX_ACTIVE = 8
#: The create budget's name when no key is given (tests, tools): one budget for the database.
LOCAL_BUDGET = "local"


def budget_key(api_key: str, base_url: str = "") -> str:
    """The create budget's name for a HiAPI key: a hash, so the database never holds the key."""
    return hashlib.sha256(f"hiapi-budget\0{base_url}\0{api_key}".encode()).hexdigest()[:32]


_CLICK_TOKEN = re.compile(r"^[A-Za-z0-9_-]{8,128}$")


def check_click_token(token: str) -> str:
    """A click token becomes part of idempotency keys (at most 255 bytes at HiAPI): keep it plain."""
    if not _CLICK_TOKEN.match(token):
        raise ValueError("a click token is 8-128 letters, digits, '-' or '_'")
    return token


@dataclass
class Health:
    started_at: float = 0.0
    polls: int = 0
    poll_errors: int = 0
    creates: int = 0
    create_errors: int = 0
    downloads: int = 0
    download_errors: int = 0
    callbacks_received: int = 0  # accepted deliveries (stored, duplicate, held or ignored)
    callbacks_stored: int = 0
    callbacks_duplicate: int = 0
    callbacks_held: int = 0
    callbacks_ignored: int = 0
    callbacks_rejected: int = 0  # refused deliveries (404, 413, 401, 400)
    reconcile_polls: int = 0  # GETs of tasks created with a callback
    reconciled: int = 0  # tasks whose result came by such a GET: their callback was missed
    last_callback_at: float | None = None
    last_rejection: str | None = None
    last_rejection_at: float | None = None
    rate_limited: int = 0
    last_poll_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Intake:
    """Records clicks, campaigns and callbacks in the store and tells the event bus; thread-safe."""

    #: False here: this process follows no task (a web role). True on `Tracker`.
    works = False

    def __init__(
        self,
        store: Repositories,
        *,
        callback_url: str | None = None,
        clock: Callable[[], float] = time.time,
        events: ev.EventBus | None = None,
        pacing_key: str | None = None,
        max_active: int = DEFAULT_MAX_ACTIVE,
    ) -> None:
        self.store = store
        # Every state change a page shows is published here (the pages' push channel).
        self.events = events if events is not None else ev.EventBus()
        self.callback_url = callback_url
        self.clock = clock
        self.pacing_key = pacing_key or LOCAL_BUDGET
        self._max_active = max(1, int(max_active))
        self._lock = threading.Lock()
        self._campaigns = CampaignStore(store)
        self.health_info = Health()

    @property
    def mode(self) -> str:
        """ "callbacks" when new tasks are created with a callback URL, else "polling"."""
        return "callbacks" if self.callback_url else "polling"

    # -- clicks and campaigns -------------------------------------------------
    def submit(
        self,
        requests: Sequence[TaskRequest],
        *,
        creative_id: str | None = None,
        click_token: str | None = None,
        spend: SpendRate | None = None,
        author: str = LOCAL_AUTHOR,
    ) -> list[int]:
        """Record one click's requests (and their spend) once, as `author`'s, and queue their creates.

        `click_token` names the click (a button press, a shortcut, a confirm):
        the same token always yields the same submissions, however often it is
        submitted — a Streamlit rerun that calls the button's callback again,
        a double click or a race between replicas records nothing new and
        returns the first recording's ids. Each create's idempotency key is
        derived from the token, so HiAPI replays rather than re-bills a resend.
        Without a token the call is its own click.

        Requests must already be valid; an invalid one raises
        RequestValidationError before anything is written. The callback is
        the studio's business: whatever a request carries is replaced by the
        studio's own callback URL (or none, when polling).
        """
        requests = [replace(r, callback=None) for r in requests]
        for r in requests:
            problems = r.problems()
            if problems:
                raise E.RequestValidationError(problems)
        token = check_click_token(click_token or uuid.uuid4().hex)
        creative_id = creative_id or hashlib.sha256(token.encode()).hexdigest()[:12]
        if self.callback_url:
            # Stored with the submission: a resend must carry the same body.
            requests = [replace(r, callback=Callback(self.callback_url)) for r in requests]
        now = self.clock()
        keyed = list(zip(requests, click_keys(token, len(requests)), strict=True))
        ids, created = self.store.add_click(
            keyed, creative_id=creative_id, spend=spend, now=now, author=author
        )
        if created:
            self.follow(ids)
        return ids

    def follow(self, submission_ids: Sequence[int]) -> None:
        """Announce submissions just recorded (by `submit` or a campaign launch); a worker claims them."""
        for sid in submission_ids:
            self.events.publish(ev.NEW, sid)

    def submit_campaign(
        self,
        campaign_id: int,
        cells: Sequence[tuple[int, TaskRequest]],
        *,
        unit_micros: int,
        currency: str,
        click_token: str | None = None,
        author: str = LOCAL_AUTHOR,
    ) -> list[int]:
        """Record (row, request) cells of an existing campaign in one transaction and queue their creates.

        Once per `click_token`, like `submit`; the cells and their spend are `author`'s. Requests must already be valid
        (RequestValidationError otherwise, nothing written).
        """
        keyed = self._keyed_cells(cells, click_token)
        ids, created = self._campaigns.add_cells_once(
            campaign_id, keyed, unit_micros=unit_micros, currency=currency, now=self.clock(), author=author
        )
        if created:
            self.follow(ids)
        return ids

    def launch_campaign(
        self,
        new: NewCampaign,
        cells: Sequence[tuple[int, TaskRequest]],
        *,
        unit_micros: int,
        currency: str,
        click_token: str | None = None,
    ) -> tuple[int, list[int]]:
        """Record a new campaign with all its cells in one transaction, once per click; queue the creates.

        The campaign, its cells and their spend are `new.author`'s."""
        keyed = self._keyed_cells(cells, click_token)
        cid, ids, created = self._campaigns.launch_once(
            new, keyed, unit_micros=unit_micros, currency=currency, now=self.clock()
        )
        if created:
            self.follow(ids)
        return cid, ids

    def _keyed_cells(
        self, cells: Sequence[tuple[int, TaskRequest]], click_token: str | None
    ) -> list[tuple[int, TaskRequest, str]]:
        """Validate the cells, attach the studio's callback, and key each create from the click."""
        cells = [(row, replace(r, callback=None)) for row, r in cells]
        for _, r in cells:
            problems = r.problems()
            if problems:
                raise E.RequestValidationError(problems)
        if self.callback_url:  # stored with each submission, like `submit`
            cells = [(row, replace(r, callback=Callback(self.callback_url))) for row, r in cells]
        token = check_click_token(click_token or uuid.uuid4().hex)
        keys = click_keys(token, len(cells))
        return [(row, r, key) for (row, r), key in zip(cells, keys, strict=True)]

    def set_max_active(self, n: int) -> None:
        """Change the limit of campaign tasks at HiAPI at once, for every worker on this HiAPI key."""
        with self._lock:
            self._max_active = max(1, int(n))
        self.store.set_create_limit(self.pacing_key, self._max_active, self.clock())

    def pause_campaign(self, campaign_id: int) -> None:
        """Hold the campaign's creates that were never tried; tasks already sent run on."""
        self._campaigns.set_state(campaign_id, PAUSED)

    def resume_campaign(self, campaign_id: int) -> None:
        self._campaigns.set_state(campaign_id, RUNNING)

    def cancel_campaign(self, campaign_id: int) -> int:
        """Drop the campaign's creates no worker has begun to send; returns how many were cancelled."""
        cancelled = self._campaigns.cancel(campaign_id, now=self.clock())
        for sid in cancelled:
            self.events.publish(ev.FAILED, sid)
        return len(cancelled)

    # -- callbacks --------------------------------------------------------------
    def ingest_callback(self, task: Task) -> str:
        """Store a terminal task report that came by callback; returns a `CallbackOutcome`.

        Returns only once the report is stored (or held), so the receiver may
        answer 2xx; raises if the store fails. A stored success's outputs wait
        in the store for a worker to download them.
        """
        now = self.clock()
        outcome = self.store.record_callback(task, now=now)
        h = self.health_info
        with self._lock:
            h.callbacks_received += 1
            h.last_callback_at = now
            if outcome == CallbackOutcome.STORED:
                h.callbacks_stored += 1
            elif outcome == CallbackOutcome.DUPLICATE:
                h.callbacks_duplicate += 1
            elif outcome == CallbackOutcome.HELD:
                h.callbacks_held += 1
            else:
                h.callbacks_ignored += 1
        if outcome == CallbackOutcome.STORED:
            sub = self.store.submission_by_task(task.task_id)
            if sub is not None:
                self.events.publish(ev.FAILED if task.status == TaskStatus.FAIL else ev.PROGRESS, sub.id)
            self._stored(sub.id if sub is not None else None)
        return outcome

    def _stored(self, submission_id: int | None) -> None:
        """A callback result was just stored (the tracker stops its watch and wakes)."""

    def note_callback_rejected(self, status: int, reason: str) -> None:
        """Count a refused callback delivery (the receiver calls this)."""
        h = self.health_info
        with self._lock:
            h.callbacks_rejected += 1
            h.last_rejection = E.redact(f"{status} {reason}")
            h.last_rejection_at = self.clock()

    # -- health ------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """The same keys as `Tracker.health`; counts of work come from the store (no worker here)."""
        h = self.health_info
        budget = self.store.create_budget(self.pacing_key, self._max_active)
        waiting = len(self.store.unfinished())
        active = self.store.in_flight_count()
        return {
            "alive": False,
            "works": False,
            "mode": self.mode,
            "in_flight": waiting,
            "active": active,
            "waiting_to_send": max(0, waiting - active),
            "max_active": budget.max_active,
            "pace": budget.limit,
            "hold_until": budget.hold_until,
            "rate_limited": 0,
            "downloading": 0,
            "lanes": {},
            "polls": 0,
            "poll_errors": 0,
            "creates": 0,
            "create_errors": 0,
            "downloads": 0,
            "download_errors": 0,
            "callbacks_received": h.callbacks_received,
            "callbacks_stored": h.callbacks_stored,
            "callbacks_duplicate": h.callbacks_duplicate,
            "callbacks_held": h.callbacks_held,
            "callbacks_ignored": h.callbacks_ignored,
            "callbacks_rejected": h.callbacks_rejected,
            "callbacks_waiting": self.store.held_callbacks(),
            "reconcile_polls": 0,
            "reconciled": 0,
            "last_callback_at": h.last_callback_at,
            "last_rejection": h.last_rejection,
            "last_rejection_at": h.last_rejection_at,
            "last_poll_at": None,
            "last_error": h.last_error,
            "last_error_at": h.last_error_at,
            "started_at": h.started_at,
        }
