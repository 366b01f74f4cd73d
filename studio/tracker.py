"""The task tracker: one per server process, the only thing that talks to HiAPI.

Pages hand it requests (`submit`) and read the store; the tracker's thread
sends each create (once, with the idempotency key stored beforehand), follows
every task on the adaptive schedule in `schedule.py`, and keeps the outputs on
disk the moment a task succeeds. Tasks finish and are kept even when no browser
is open, and a restarted process resumes every unfinished submission from the
store: creates are re-sent with their original key and body (HiAPI replays, no
second task), tasks in flight are looked at again at once. Failed tasks are
never retried by the tracker; only the user resubmits.

With callbacks on (`callback_url`), every new task is created with HiAPI's
`callback: {url, when: final}` and the result arrives through `ingest_callback`
(from the receiver in `callbacks.py`); there is no routine polling. A task
whose callback has not come by its expected finish plus a grace period gets
one reconciliation GET, then slow polling. Whether a task is followed this way
is decided by how it was created (its stored callback URL), so tasks created
before callbacks were switched on or off are still followed correctly.

Pacing: campaign rows are sent only while fewer than `max_active` tasks are in
flight (sent, or being sent, and not finished); a single prompt's creates (one
click, at most one per ratio) go at once. A 429 on a create holds every new
create until its Retry-After and halves the campaign pace, which grows back by
one slot per window of successful creates. A campaign can be paused (its
never-tried creates wait), resumed and cancelled (its never-tried creates are
dropped); a create already tried may exist at HiAPI and is always followed to
its end.

Lanes: creates, polls and downloads run in three separate bounded thread
pools, each counting its own jobs in flight, and the loop hands a lane only as
many jobs as it has free workers. A slow image server can fill the download
lane but never delays a create or a poll; a slow status answer fills at most
the poll lane. Every HiAPI answer has a deadline (`transport.ANSWER_DEADLINE_S`)
and every download one too (`images.DOWNLOAD_DEADLINE_S`), so no worker is
held longer than that: a download past its deadline is a failed attempt,
tried again while its link lives.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from . import errors as E
from . import events as ev
from .campaign_store import CANCELLED_STATE, PAUSED, RUNNING, CampaignStore, NewCampaign
from .models import Callback, Task, TaskRequest, TaskStatus
from .references import reference_names
from .schedule import DEFAULT_EXPECTED, DurationHistory, next_check_delay
from .store import CallbackOutcome, SpendRate, Store, Submission, click_keys

if TYPE_CHECKING:  # images pulls in Pillow; the tracker only needs the name for typing
    from .images import KeptImage

log = logging.getLogger("studio.tracker")

# Errors after which a create must not be sent again as it is.
_FINAL_CREATE_ERRORS = (
    E.InvalidRequestError,
    E.AuthenticationError,
    E.InsufficientBalanceError,
    E.IdempotencyKeyMismatchError,
    E.NotFoundError,
)
#: Download attempts when HiAPI gave no expiry; with one, retryable failures go on until it.
DOWNLOAD_ATTEMPTS = 8
DOWNLOAD_BACKOFF_CAP = 30.0
NOT_FOUND_LIMIT = 5
DEFAULT_MAX_ACTIVE = 8
#: Workers per lane. Creates: one click sends at most one create per ratio at
#: once, campaigns are paced by `max_active` anyway. Polls: one per task in
#: flight at the default pace. Downloads: images are megabytes each; four at a
#: time keep a link busy without starving the machine.
CREATE_WORKERS = 8
POLL_WORKERS = 8
DOWNLOAD_WORKERS = 4
# Callbacks on: the first (reconciliation) GET comes this long, at least, after
# a task's expected finish (or half of that expectation, if longer), so that a
# callback HiAPI had to redeliver still beats it. Then one GET per SLOW_POLL.
RECONCILE_GRACE = 10.0
SLOW_POLL = 30.0
#: HiAPI replays a create by its idempotency key for "about 24 h"; past this
#: age a resend could create (and bill) a second task, so it is never sent.
IDEMPOTENCY_SAFE_S = 23 * 3600.0


@dataclass
class _Watch:
    """Tracker-side state of one unfinished submission."""

    submission_id: int
    due: float
    kind: str  # "create" | "check"
    checks: int = 0
    errors: int = 0
    retry_after: float | None = None
    status: str = "submitting"
    busy: bool = False
    last_running_at: float | None = None  # when a poll last saw the task unfinished
    callback: bool = False  # created with a callback URL: no routine polling


class _Lane:
    """A bounded pool for one kind of job, with its own count of jobs in flight.

    `take(n)` reserves up to n free workers; each reserved slot is either given
    a job with `run` or handed back with `give_back`. Nothing queues behind a
    slow job: what finds no free worker stays due and goes out on a later tick.
    """

    def __init__(self, name: str, workers: int) -> None:
        self.name = name
        self.workers = max(1, int(workers))
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=f"tracker-{name}")
        self._lock = threading.Lock()
        self._busy = 0

    @property
    def busy(self) -> int:
        with self._lock:
            return self._busy

    def take(self, n: int) -> int:
        """Reserve up to `n` free workers; returns how many were reserved."""
        with self._lock:
            got = max(0, min(n, self.workers - self._busy))
            self._busy += got
            return got

    def give_back(self, n: int) -> None:
        """Release `n` reserved slots that were not used."""
        with self._lock:
            self._busy -= n

    def run(self, job: Callable[..., None], *args: Any) -> None:
        """Run `job(*args)` on a reserved worker; the slot is freed when it ends."""

        def slot() -> None:
            try:
                job(*args)
            finally:
                self.give_back(1)

        try:
            self._pool.submit(slot)
        except RuntimeError:  # shut down meanwhile
            self.give_back(1)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


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


_CLICK_TOKEN = re.compile(r"^[A-Za-z0-9_-]{8,128}$")


def check_click_token(token: str) -> str:
    """A click token becomes part of idempotency keys (at most 255 bytes at HiAPI): keep it plain."""
    if not _CLICK_TOKEN.match(token):
        raise ValueError("a click token is 8-128 letters, digits, '-' or '_'")
    return token


class Keeper(Protocol):
    """What the tracker needs of an image keeper (`images.ImageKeeper` in the app)."""

    def fetch(
        self, url: str, recipe: Mapping[str, Any] | None, *, allow_loopback: bool | None = None
    ) -> KeptImage: ...


class Tracker:
    """Background owner of the HiAPI client; thread-safe `submit`, `ingest_callback`, `health`."""

    def __init__(
        self,
        store: Store,
        client: Any,  # HiAPIClient: create_task / get_task
        keeper: Keeper | None,  # None: nothing is downloaded
        *,
        priors: dict[str, float] | None = None,
        create_workers: int = CREATE_WORKERS,
        poll_workers: int = POLL_WORKERS,
        download_workers: int = DOWNLOAD_WORKERS,
        callback_url: str | None = None,
        reconcile_grace: float = RECONCILE_GRACE,
        slow_poll: float = SLOW_POLL,
        clock: Callable[[], float] = time.time,
        time_scale: float = 1.0,
        max_active: int = DEFAULT_MAX_ACTIVE,
        on_kept: Callable[[int], None] | None = None,
        events: ev.EventBus | None = None,
    ) -> None:
        self.store = store
        # Every state change a page shows is published here (the pages' push channel).
        self.events = events if events is not None else ev.EventBus()
        # Called (on a worker thread) with each output id the moment its image is
        # kept, e.g. to queue the text-fidelity check; must return quickly.
        self.on_kept = on_kept
        self.client = client
        self.keeper = keeper
        self.priors = dict(DEFAULT_EXPECTED if priors is None else priors)
        self.callback_url = callback_url
        self.reconcile_grace = reconcile_grace
        self.slow_poll = slow_poll
        self.clock = clock
        self.time_scale = time_scale  # >1 only when benchmarking a time-compressed simulator
        self._creates = _Lane("create", create_workers)
        self._polls = _Lane("poll", poll_workers)
        self._downloads = _Lane("download", download_workers)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._watches: dict[int, _Watch] = {}
        self._downloading: set[int] = set()
        self._expect_cache: dict[str, tuple[float, DurationHistory]] = {}
        self._thread: threading.Thread | None = None
        self.health_info = Health()
        self._campaigns = CampaignStore(store)
        self._max_active = max(1, int(max_active))
        self._pace = float(self._max_active)  # lowered by 429s, regrown by successful creates
        self._hold_until = 0.0  # no new create before this (a create's 429 Retry-After)

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> Tracker:
        if self._thread and self._thread.is_alive():
            return self
        self.health_info.started_at = self.clock()
        self._resume()
        self._thread = threading.Thread(target=self._run, name="task-tracker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)
        for lane in (self._creates, self._polls, self._downloads):
            lane.shutdown()

    @property
    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    @property
    def mode(self) -> str:
        """ "callbacks" when new tasks are created with a callback URL, else "polling"."""
        return "callbacks" if self.callback_url else "polling"

    def _resume(self) -> None:
        now = self.clock()
        for sub in self.store.unfinished():
            kind = "create" if sub.task_id is None else "check"
            w = _Watch(sub.id, now, kind, status=sub.state, callback=bool(sub.callback_url))
            if kind == "check" and w.callback:
                # Its callback may still come (HiAPI redelivers); look only once it is overdue.
                w.due = max(now, (sub.submitted_at or sub.created_at) + self._reconcile_after(sub.resolution))
            self._watches[sub.id] = w

    # -- what pages call ------------------------------------------------------
    def submit(
        self,
        requests: Sequence[TaskRequest],
        *,
        creative_id: str | None = None,
        click_token: str | None = None,
        spend: SpendRate | None = None,
    ) -> list[int]:
        """Record one click's requests (and their spend) once, and queue their creates.

        `click_token` names the click (a button press, a shortcut, a confirm):
        the same token always yields the same submissions, however often it is
        submitted — a Streamlit rerun that calls the button's callback again,
        a double click or a race between replicas records nothing new and
        returns the first recording's ids. Each create's idempotency key is
        derived from the token, so HiAPI replays rather than re-bills a resend.
        Without a token the call is its own click.

        Requests must already be valid; an invalid one raises
        RequestValidationError before anything is written. The callback is
        the tracker's business: whatever a request carries is replaced by the
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
        ids, created = self.store.add_click(keyed, creative_id=creative_id, spend=spend, now=now)
        if created:
            self.follow(ids)
        return ids

    def follow(self, submission_ids: Sequence[int]) -> None:
        """Queue the creates of submissions just recorded (by `submit` or a campaign launch)."""
        now = self.clock()
        with self._lock:
            for sid in submission_ids:
                self._watches.setdefault(sid, _Watch(sid, now, "create"))
        self._wake.set()
        for sid in submission_ids:
            self.events.publish(ev.NEW, sid)

    def ingest_callback(self, task: Task) -> str:
        """Store a terminal task report that came by callback; returns a `CallbackOutcome`.

        Returns only once the report is stored (or held), so the receiver may
        answer 2xx; raises if the store fails. A newly stored result stops the
        task's watch and wakes the loop, which downloads the outputs exactly
        as after a poll.
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
            if sub is not None and sub.is_terminal:
                with self._lock:
                    self._watches.pop(sub.id, None)
            self._tell_task(sub, task.status)
            self._wake.set()
        return outcome

    def note_callback_rejected(self, status: int, reason: str) -> None:
        """Count a refused callback delivery (the receiver calls this)."""
        h = self.health_info
        with self._lock:
            h.callbacks_rejected += 1
            h.last_rejection = E.redact(f"{status} {reason}")
            h.last_rejection_at = self.clock()

    def submit_campaign(
        self,
        campaign_id: int,
        cells: Sequence[tuple[int, TaskRequest]],
        *,
        unit_micros: int,
        currency: str,
        click_token: str | None = None,
    ) -> list[int]:
        """Record (row, request) cells of an existing campaign in one transaction and queue their creates.

        Once per `click_token`, like `submit`. Requests must already be valid
        (RequestValidationError otherwise, nothing written).
        """
        keyed = self._keyed_cells(cells, click_token)
        ids, created = self._campaigns.add_cells_once(
            campaign_id, keyed, unit_micros=unit_micros, currency=currency, now=self.clock()
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
        """Record a new campaign with all its cells in one transaction, once per click; queue the creates."""
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
        """Change the concurrency limit (Settings); takes effect on the next tick."""
        with self._lock:
            self._max_active = max(1, int(n))
            self._pace = float(self._max_active)
        self._wake.set()

    def pause_campaign(self, campaign_id: int) -> None:
        """Hold the campaign's creates that were never tried; tasks already sent run on."""
        self._campaigns.set_state(campaign_id, PAUSED)

    def resume_campaign(self, campaign_id: int) -> None:
        self._campaigns.set_state(campaign_id, RUNNING)
        self._wake.set()

    def cancel_campaign(self, campaign_id: int) -> int:
        """Drop the campaign's creates that were never tried; returns how many were cancelled."""
        ids = set(self._campaigns.submission_ids(campaign_id))
        with self._lock:
            # Claim every idle create so the loop cannot start one while we cancel;
            # a busy one is being sent right now and must be followed.
            busy = [sid for sid in ids if sid in self._watches and self._watches[sid].busy]
            claimed = [w for sid, w in self._watches.items() if sid in ids and not w.busy]
            for w in claimed:
                w.busy = True
        try:
            cancelled = set(self._campaigns.cancel(campaign_id, keep=busy, now=self.clock()))
        finally:
            with self._lock:
                for w in claimed:
                    if w.submission_id in cancelled:
                        self._watches.pop(w.submission_id, None)
                    w.busy = False
            self._wake.set()
        for sid in cancelled:
            self.events.publish(ev.FAILED, sid)
        return len(cancelled)

    def health(self) -> dict[str, Any]:
        h = self.health_info
        with self._lock:
            in_flight = len(self._watches)
            active = self._active_count()
        return {
            "alive": self.alive,
            "mode": self.mode,
            "in_flight": in_flight,
            "active": active,
            "waiting_to_send": in_flight - active,
            "max_active": self._max_active,
            "pace": self._limit(),
            "rate_limited": h.rate_limited,
            "downloading": len(self._downloading),
            "lanes": {
                lane.name: {"busy": lane.busy, "workers": lane.workers}
                for lane in (self._creates, self._polls, self._downloads)
            },
            "polls": h.polls,
            "poll_errors": h.poll_errors,
            "creates": h.creates,
            "create_errors": h.create_errors,
            "downloads": h.downloads,
            "download_errors": h.download_errors,
            "callbacks_received": h.callbacks_received,
            "callbacks_stored": h.callbacks_stored,
            "callbacks_duplicate": h.callbacks_duplicate,
            "callbacks_held": h.callbacks_held,
            "callbacks_ignored": h.callbacks_ignored,
            "callbacks_rejected": h.callbacks_rejected,
            "callbacks_waiting": self.store.held_callbacks(),
            "reconcile_polls": h.reconcile_polls,
            "reconciled": h.reconciled,
            "last_callback_at": h.last_callback_at,
            "last_rejection": h.last_rejection,
            "last_rejection_at": h.last_rejection_at,
            "last_poll_at": h.last_poll_at,
            "last_error": h.last_error,
            "last_error_at": h.last_error_at,
            "started_at": h.started_at,
        }

    def expectation(self, resolution: str) -> DurationHistory:
        """Recent durations at a resolution, to plan polls (cached for a few seconds)."""
        now = self.clock()
        cached = self._expect_cache.get(resolution)
        if cached and now - cached[0] < 5.0:
            return cached[1]
        exp = DurationHistory.learn(self.store.durations(resolution), self.priors.get(resolution, 60.0))
        self._expect_cache[resolution] = (now, exp)
        return exp

    # -- the loop -------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                timeout = self._tick()
            except Exception as exc:  # the loop must survive anything
                self._note_error(f"tracker loop: {exc!r}")
                timeout = 1.0
            self._wake.wait(timeout)
            self._wake.clear()

    def _tick(self) -> float:
        """Hand each lane the due jobs it has free workers for; return seconds until the next is due.

        A job left over for want of a worker goes out when a job of its lane
        ends (every guard wakes the loop).
        """
        now = self.clock()
        next_due = now + 1.0
        with self._lock:
            due = [w for w in self._watches.values() if not w.busy and w.due <= now]
            checks = sorted((w for w in due if w.kind != "create"), key=lambda w: w.due)
            checks = checks[: self._polls.take(len(checks))]
            for w in checks:
                w.busy = True
            creates = [w for w in due if w.kind == "create"]
            waiting = [w.due for w in self._watches.values() if not w.busy and w.due > now]
        for w in checks:
            self._polls.run(self._guard, self._check, w)
        if creates:
            room = self._creates.take(len(creates))
            chosen = self._admit(creates, now, room=room)
            self._creates.give_back(room - len(chosen))
            for w in chosen:
                self._creates.run(self._guard, self._create, w)
            if self._hold_until > now:
                next_due = min(next_due, self._hold_until)
        if waiting:
            next_due = min(next_due, min(waiting))
        if self.keeper is not None:
            free = self._downloads.take(self._downloads.workers)
            outputs: list[Any] = []
            if free:
                pending = self.store.pending_outputs(now)
                with self._lock:
                    outputs = [o for o in pending if o.id not in self._downloading][:free]
                    self._downloading.update(o.id for o in outputs)
            self._downloads.give_back(free - len(outputs))
            for o in outputs:
                self._downloads.run(self._guard_download, o)
            nd = self.store.next_output_due()
            if nd is not None and nd > now:
                next_due = min(next_due, nd)
        return max(0.02, next_due - self.clock())

    # -- pacing ---------------------------------------------------------------
    def _limit(self) -> int:
        return max(1, min(self._max_active, int(self._pace)))

    def _active_count(self) -> int:
        """Tasks sent (or being sent) and not finished; call with the lock held."""
        return sum(1 for w in self._watches.values() if w.kind != "create" or w.busy)

    def _admit(self, creates: list[_Watch], now: float, *, room: int) -> list[_Watch]:
        """The due creates that may start now, at most `room` (the create lane's free workers).

        Nothing starts during a 429's hold. A single prompt's creates (one click,
        at most one per ratio) start at once; campaign rows start only while fewer
        than the pace limit of tasks are in flight, and not while paused.
        """
        if now < self._hold_until or room <= 0:
            return []
        gates = self._campaigns.gates([w.submission_id for w in creates])

        def campaign(w: _Watch) -> bool:
            return gates.get(w.submission_id, (0, None, None))[1] is not None

        def held(w: _Watch) -> bool:
            attempts, cid, state = gates.get(w.submission_id, (0, None, None))
            return cid is not None and attempts == 0 and state in (PAUSED, CANCELLED_STATE)

        def order(w: _Watch) -> tuple[bool, bool, int]:
            attempts = gates.get(w.submission_id, (0, None, None))[0]
            # Single prompts first; then a create already tried (it may exist at HiAPI); then the rest.
            return (campaign(w), attempts == 0 and w.errors == 0, w.submission_id)

        chosen: list[_Watch] = []
        with self._lock:
            free = self._limit() - self._active_count()
            for w in sorted(creates, key=order):
                if len(chosen) >= room:
                    break
                if w.busy or self._watches.get(w.submission_id) is not w or held(w):
                    continue
                if campaign(w) and free <= 0:
                    break
                w.busy = True
                chosen.append(w)
                free -= 1
        return chosen

    def _rate_limited(self, exc: E.HiAPIError, errors: int) -> None:
        wait = exc.retry_after if exc.retry_after is not None else min(30.0, 1.0 * 2**errors)
        with self._lock:
            self._hold_until = max(self._hold_until, self.clock() + wait)
            self._pace = max(1.0, self._pace / 2)
        self.health_info.rate_limited += 1

    def _guard(self, job: Callable[[_Watch], None], w: _Watch) -> None:
        try:
            job(w)
        except Exception as exc:
            self._note_error(f"{job.__name__}: {exc!r}")
            w.errors += 1
            self._reschedule(w, min(60.0, 2.0 * 2**w.errors))
        finally:
            w.busy = False
            self._wake.set()

    def _reschedule(self, w: _Watch, delay: float) -> None:
        w.due = self.clock() + delay

    def _drop(self, w: _Watch) -> None:
        with self._lock:
            self._watches.pop(w.submission_id, None)

    def _note_error(self, message: str) -> None:
        h = self.health_info
        h.last_error = E.redact(message)
        h.last_error_at = self.clock()
        log.warning("%s", h.last_error)

    # -- create ---------------------------------------------------------------
    def _create(self, w: _Watch) -> None:
        sub = self.store.submission(w.submission_id)
        if sub is None or sub.is_terminal:
            self._drop(w)
            return
        if sub.task_id:
            w.kind = "check"
            w.callback = sub.callback_url is not None
            self._reschedule(w, 0)
            return
        if self.clock() - sub.created_at > IDEMPOTENCY_SAFE_S:
            # The first POST may have created a task whose answer was lost; a
            # resend this late would not be recognised as the same request.
            self.store.mark_rejected(
                sub.id,
                "CREATE_UNCONFIRMED",
                "Not sent again: HiAPI never confirmed this request, and it is older than the 24 h "
                "in which HiAPI recognises a resend. Check your task list on HiAPI, then resubmit if "
                "no image was made.",
                now=self.clock(),
            )
            self.events.publish(ev.FAILED, sub.id)
            self._drop(w)
            return
        request = sub.request  # as first sent, callback URL included: HiAPI replays only the same body
        try:
            created = self.client.create_task(request, idempotency_key=sub.idempotency_key)
        except _FINAL_CREATE_ERRORS as exc:
            self.health_info.create_errors += 1
            self.store.mark_rejected(sub.id, exc.code, exc.message, now=self.clock())
            self.events.publish(ev.FAILED, sub.id)
            self._drop(w)
            return
        except E.HiAPIError as exc:
            # Safe to resend: the same idempotency key makes HiAPI replay, not re-create.
            w.errors += 1
            if isinstance(exc, E.RateLimitedError):
                self._rate_limited(exc, w.errors)  # first, so no other create starts meanwhile
            self.health_info.create_errors += 1
            self._note_error(f"create: {exc.code}: {exc.message}")
            self.store.note_attempt(sub.id, exc.code, exc.message)
            self.events.publish(ev.PROGRESS, sub.id)
            self._reschedule(
                w,
                next_check_delay(
                    0,
                    "",
                    self.expectation(sub.resolution),
                    checks=1,
                    errors=w.errors,
                    retry_after=exc.retry_after,
                ),
            )
            return
        self.health_info.creates += 1
        with self._lock:
            self._pace = min(float(self._max_active), self._pace + 1.0 / max(1.0, self._pace))
        self.store.mark_created(sub.id, created.task_id, now=self.clock())
        self.events.publish(ev.PROGRESS, sub.id)
        after = self.store.submission(sub.id)
        if after is not None and after.is_terminal:
            # Its callback outran this answer and was held; mark_created applied it.
            log.info("task %s: held callback applied", created.task_id)
            self._drop(w)
            self._wake.set()
            return
        w.kind, w.errors, w.checks, w.status = "check", 0, 0, TaskStatus.QUEUED
        w.last_running_at = self.clock()
        w.callback = sub.callback_url is not None
        self._schedule_check(w, sub.resolution, elapsed=0.0)

    # -- check ----------------------------------------------------------------
    def _reconcile_after(self, resolution: str) -> float:
        """Seconds after submit at which a task's callback counts as missed."""
        exp = self.expectation(resolution)
        return exp.late + max(self.reconcile_grace / self.time_scale, exp.late * 0.5)

    def _schedule_check(self, w: _Watch, resolution: str, elapsed: float) -> None:
        exp = self.expectation(resolution)
        if w.callback and not w.errors:
            # The callback carries the result: one reconciliation GET once it is
            # overdue, then slow polling. Errors fall through to the usual backoff.
            if w.checks == 0:
                delay = self._reconcile_after(resolution) - elapsed
            else:
                delay = self.slow_poll / self.time_scale
            self._reschedule(w, max(0.0, delay))
            return
        self._reschedule(
            w,
            next_check_delay(
                elapsed,
                w.status,
                exp,
                checks=w.checks,
                errors=w.errors,
                retry_after=w.retry_after,
                scale=self.time_scale,
            ),
        )

    def _check(self, w: _Watch) -> None:
        sub = self.store.submission(w.submission_id)
        if sub is None or sub.is_terminal:
            self._drop(w)
            return
        assert sub.task_id
        h = self.health_info
        try:
            task = self.client.get_task(sub.task_id)
        except E.HiAPIError as exc:
            h.polls += 1
            h.poll_errors += 1
            h.reconcile_polls += w.callback
            h.last_poll_at = self.clock()
            self._note_error(f"poll {sub.task_id}: {exc.code}: {exc.message}")
            w.errors += 1
            w.retry_after = exc.retry_after
            self.store.note_problem(sub.id, exc.code, exc.message)
            self.events.publish(ev.PROGRESS, sub.id)
            if isinstance(exc, E.NotFoundError) and w.errors >= NOT_FOUND_LIMIT:
                self.store.mark_rejected(
                    sub.id, "NOT_FOUND", "HiAPI no longer knows this task (404); was the API key changed?"
                )
                self.events.publish(ev.FAILED, sub.id)
                self._drop(w)
                return
            self._schedule_check(w, sub.resolution, self._elapsed(sub))
            return
        h.polls += 1
        h.last_poll_at = self.clock()
        w.checks += 1
        if w.errors:
            self.store.note_problem(sub.id, None, None)  # answers are readable again
            self.events.publish(ev.PROGRESS, sub.id)
        w.errors = 0
        w.retry_after = None
        now = self.clock()
        if w.callback:
            h.reconcile_polls += 1
        estimate = None
        if task.is_terminal:
            if w.callback and task.created and task.completed >= task.created:
                # Seen only by a reconciliation GET, possibly long after it finished:
                # HiAPI's own duration (whole seconds) says when, not our lateness.
                estimate = min(now, (sub.submitted_at or now) + (task.completed - task.created) + 0.5)
            elif w.last_running_at:
                estimate = (w.last_running_at + now) / 2
        changed = self.store.record_task(
            task, source="reconcile" if w.callback else "poll", now=now, finish_estimate=estimate
        )
        if changed or task.status != w.status:
            self._tell_task(sub, task.status)
        if task.is_terminal:
            self._expect_cache.pop(sub.resolution, None)  # learn from it at once
            if changed and w.callback:
                h.reconciled += 1
                log.info("task %s: callback missed, result reconciled by GET", task.task_id)
            self._drop(w)
            self._wake.set()
            return
        w.status = task.status
        w.last_running_at = now
        self._schedule_check(w, sub.resolution, self._elapsed(sub))

    def _tell_task(self, sub: Submission | None, status: str) -> None:
        """Publish a task's new status: failed, or progress (a success's images follow as kept)."""
        if sub is not None:
            self.events.publish(ev.FAILED if status == TaskStatus.FAIL else ev.PROGRESS, sub.id)

    def _elapsed(self, sub: Submission) -> float:
        return max(0.0, self.clock() - (sub.submitted_at or sub.created_at))

    # -- downloads ------------------------------------------------------------
    def _guard_download(self, o: Any) -> None:
        try:
            self._download(o)
        except Exception as exc:
            self._note_error(f"download {o.id}: {exc!r}")
            self.store.output_failed(
                o.id, "Internal error while keeping the image.", retry_at=self.clock() + 30
            )
            self.events.publish(ev.FAILED, o.submission_id, o.id)
        finally:
            with self._lock:
                self._downloading.discard(o.id)
            self._wake.set()

    def _download(self, o: Any) -> None:
        from .images import DownloadError

        sub = self.store.submission(o.submission_id)
        if sub is None:
            return
        recipe: dict[str, object] = {
            "prompt": sub.prompt,
            "aspect_ratio": sub.aspect_ratio,
            "resolution": sub.resolution,
            "model": sub.model,
            "task_id": sub.task_id,
            "created": int(sub.created_at),
        }
        if sub.references:  # by name: the signed URLs expire, the kept references do not
            recipe["references"] = reference_names(sub.references)
        assert self.keeper is not None  # downloads are only queued when there is a keeper
        try:
            # Loopback output URLs are fetched only from a simulator on this machine.
            kept = self.keeper.fetch(
                o.url, recipe, allow_loopback=bool(getattr(self.client, "is_local", False))
            )
        except DownloadError as exc:
            self.health_info.download_errors += 1
            now = self.clock()
            if o.expire_at:
                # The image is paid for: keep trying while its link lives.
                final = (not exc.retryable) or now >= o.expire_at
            else:
                final = (not exc.retryable) or o.attempts + 1 >= DOWNLOAD_ATTEMPTS
            message = str(exc)
            if final and exc.retryable and o.expire_at and now >= o.expire_at:
                message += " The link has expired since; run the prompt again for a new image."
            retry_at = None if final else now + min(DOWNLOAD_BACKOFF_CAP, 1.0 * 2**o.attempts)
            self.store.output_failed(o.id, message, retry_at=retry_at)
            self.events.publish(ev.FAILED if final else ev.PROGRESS, o.submission_id, o.id)
            return
        self.health_info.downloads += 1
        self.store.output_kept(
            o.id,
            sha256=kept.sha256,
            width=kept.width,
            height=kept.height,
            nbytes=kept.bytes,
            now=self.clock(),
        )
        self.events.publish(ev.KEPT, o.submission_id, o.id)
        if self.on_kept is not None:
            try:
                self.on_kept(o.id)
            except Exception as exc:  # a hook's trouble never un-keeps an image
                self._note_error(f"after keeping output {o.id}: {exc!r}")
