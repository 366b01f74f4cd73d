"""The task tracker: a worker, the only thing that talks to HiAPI.

Pages hand requests to the intake (`intake.Intake.submit`, which a tracker is
too) and read the store; a tracker's thread claims the work (`sqlite/claims.py`:
unfinished submissions and pending outputs nobody holds, each with a lease it
renews while it follows them), sends each create (once, with the idempotency
key stored beforehand), follows every task on the adaptive schedule in
`schedule.py`, and keeps the outputs on disk the moment a task succeeds. Tasks
finish and are kept even when no browser is open. Several trackers (processes)
may share one database: each row is followed by one of them at a time, and a
tracker that dies loses its leases, so another takes its rows over: creates are
re-sent with their original key and body (HiAPI replays, no second task), tasks
in flight are looked at again at once. Failed tasks are never retried by the
tracker; only the user resubmits.

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
one slot per window of successful creates. The hold, the pace and the
limit are one budget per HiAPI key in the store (`Store.create_budget`), so
every tracker on that key keeps to them, and "in flight" counts every
tracker's tasks. A campaign can be paused (its
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

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from . import errors as E
from . import events as ev
from .blobs import BlobStoreUnavailable
from .campaign_store import CANCELLED_STATE, PAUSED
from .intake import DEFAULT_MAX_ACTIVE, Health, Intake, check_click_token  # noqa: F401 (re-exported)
from .models import TaskStatus
from .records import CreateBudget, Submission
from .references import reference_names
from .repositories import Repositories, StoreUnavailable
from .schedule import DEFAULT_EXPECTED, DurationHistory, next_check_delay

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
#: While the database is away, a task's next step is tried again this often (seconds).
OUTAGE_RETRY_S = 2.0
#: While the image storage is away, a paid-for image is fetched again this often (seconds).
STORAGE_RETRY_S = 5.0
STORAGE_AWAY = "The image storage can't be reached; the image is kept as soon as it is back."
DOWNLOAD_BACKOFF_CAP = 30.0
NOT_FOUND_LIMIT = 5
#: A claim lasts this long unless renewed (every third of it): a dead worker's
#: rows are taken over by another within about this many seconds.
LEASE_S = 15.0
#: How often a tracker looks for work nobody holds (new clicks from a web
#: process, rows of a worker whose lease ran out).
CLAIM_EVERY = 1.0
#: Rows claimed per look, and the most a tracker follows at once.
CLAIM_BATCH = 200
MAX_WATCHES = 2000
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


def new_worker_id() -> str:
    """A name for one tracker's claims: host, process and a random part (never reused)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Keeper(Protocol):
    """What the tracker needs of an image keeper (`images.ImageKeeper` in the app)."""

    def fetch(
        self, url: str, recipe: Mapping[str, Any] | None, *, allow_loopback: bool | None = None
    ) -> KeptImage: ...


class Tracker(Intake):
    """Background owner of the HiAPI client; thread-safe `submit`, `ingest_callback`, `health`.

    A worker: it claims unfinished submissions nobody holds (`Store.claim_due_submissions`)
    and pending outputs, renews its leases while it follows them, and lets each go
    when it is done. Several trackers on one database share the work and one
    create budget per HiAPI key (`pacing_key`); a tracker that dies loses its
    leases after `lease_s`, and another takes its rows over.
    """

    works = True

    def __init__(
        self,
        store: Repositories,
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
        worker_id: str | None = None,
        lease_s: float = LEASE_S,
        claim_every: float = CLAIM_EVERY,
        claim_batch: int = CLAIM_BATCH,
        pacing_key: str | None = None,
    ) -> None:
        super().__init__(
            store,
            callback_url=callback_url,
            clock=clock,
            events=events,
            pacing_key=pacing_key,
            max_active=max_active,
        )
        # Called (on a worker thread) with each output id the moment its image is
        # kept, e.g. to queue the text-fidelity check; must return quickly.
        self.on_kept = on_kept
        self.client = client
        self.keeper = keeper
        self.priors = dict(DEFAULT_EXPECTED if priors is None else priors)
        self.reconcile_grace = reconcile_grace
        self.slow_poll = slow_poll
        self.time_scale = time_scale  # >1 only when benchmarking a time-compressed simulator
        self.worker_id = worker_id or new_worker_id()
        self.lease_s = float(lease_s)
        self.claim_every = float(claim_every)
        self.claim_batch = max(1, int(claim_batch))
        self._creates = _Lane("create", create_workers)
        self._polls = _Lane("poll", poll_workers)
        self._downloads = _Lane("download", download_workers)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._claiming = threading.Lock()  # one claim round at a time (loop and page threads)
        self._watches: dict[int, _Watch] = {}
        self._downloading: set[int] = set()
        self._expect_cache: dict[str, tuple[float, DurationHistory]] = {}
        self._thread: threading.Thread | None = None
        self._next_claim_at = 0.0
        self._next_renew_at = 0.0
        #: Rounds of the loop run so far (with `wake`, how a test on a fake clock sees the loop act).
        self.rounds = 0
        # The shared create budget as last read or written (health shows it; `_admit` rereads it).
        self._budget = CreateBudget(0.0, float(self._max_active), self._max_active)

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> Tracker:
        if self._thread and self._thread.is_alive():
            return self
        now = self.clock()
        self.health_info.started_at = now
        if self.store.create_budget(self.pacing_key, self._max_active).max_active != self._max_active:
            self._budget = self.store.set_create_limit(self.pacing_key, self._max_active, now)
        self._claim(now)
        self._next_renew_at = now + self.lease_s / 3
        self._thread = threading.Thread(target=self._run, name="task-tracker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0, *, release: bool = True) -> None:
        """Stop the loop and the lanes, then give up every claim (another worker may take them at once).

        `release=False` leaves the claims to expire, as a crash does (tests of takeover use it).
        """
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)
        for lane in (self._creates, self._polls, self._downloads):
            lane.shutdown()
        if release:
            try:
                self.store.release_submissions(self.worker_id)
                self.store.release_outputs(self.worker_id)
            except Exception as exc:  # the leases expire by themselves
                self._note_error(f"release: {exc!r}")

    @property
    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    def wake(self) -> None:
        """Run the loop's next round now instead of at its next due time (e.g. after its clock moved)."""
        self._wake.set()

    # -- claims and leases ----------------------------------------------------
    def _claim(self, now: float) -> int:
        """Claim unfinished submissions nobody holds and watch them; returns how many were new."""
        with self._claiming:
            with self._lock:
                room = MAX_WATCHES - len(self._watches)
            subs = self.store.claim_due_submissions(
                self.worker_id, self.lease_s, now, min(room, self.claim_batch)
            )
            self._next_claim_at = now + self.claim_every
            new = 0
            with self._lock:
                for sub in subs:
                    if sub.id in self._watches:
                        continue
                    kind = "create" if sub.task_id is None else "check"
                    w = _Watch(sub.id, now, kind, status=sub.state, callback=bool(sub.callback_url))
                    if kind == "check" and w.callback:
                        # Its callback may still come (HiAPI redelivers); look only once it is overdue.
                        w.due = max(
                            now, (sub.submitted_at or sub.created_at) + self._reconcile_after(sub.resolution)
                        )
                    self._watches[sub.id] = w
                    new += 1
        if new:
            self._wake.set()
        return new

    def _renew(self, now: float) -> None:
        """Extend the leases of everything followed; let go of rows finished elsewhere or lost."""
        with self._lock:
            ids = list(self._watches)
            downloading = list(self._downloading)
        self._next_renew_at = now + self.lease_s / 3
        kept = self.store.renew_submission_leases(self.worker_id, ids, self.lease_s, now) if ids else set()
        if downloading:
            self.store.renew_output_leases(self.worker_id, downloading, self.lease_s, now)
        gone = [sid for sid in ids if sid not in kept]
        if gone:
            with self._lock:
                for sid in gone:
                    w = self._watches.get(sid)
                    if w is not None and not w.busy:
                        self._watches.pop(sid, None)

    def _release(self, submission_id: int) -> None:
        try:
            self.store.release_submissions(self.worker_id, [submission_id])
        except Exception as exc:  # the lease expires by itself
            self._note_error(f"release {submission_id}: {exc!r}")

    # -- what pages call (beyond the intake's recording) -----------------------
    def follow(self, submission_ids: Sequence[int]) -> None:
        """Claim and queue the creates of submissions just recorded (by `submit` or a campaign launch)."""
        self._claim(self.clock())
        super().follow(submission_ids)

    def _stored(self, submission_id: int | None) -> None:
        if submission_id is not None:
            with self._lock:
                gone = self._watches.pop(submission_id, None)
            if gone is not None:
                self._release(submission_id)
        self._wake.set()

    def set_max_active(self, n: int) -> None:
        """Change the concurrency limit (Settings) for every worker on this key; takes effect on the next tick."""
        super().set_max_active(n)
        self._budget = self.store.create_budget(self.pacing_key, self._max_active)
        self._wake.set()

    def resume_campaign(self, campaign_id: int) -> None:
        super().resume_campaign(campaign_id)
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
            self._release(sid)
            self.events.publish(ev.FAILED, sid)
        return len(cancelled)

    def health(self) -> dict[str, Any]:
        h = self.health_info
        with self._lock:
            in_flight = len(self._watches)
            active = self._active_count()
        return {
            "alive": self.alive,
            "works": True,
            "worker_id": self.worker_id,
            "mode": self.mode,
            "in_flight": in_flight,
            "active": active,
            "waiting_to_send": in_flight - active,
            "max_active": self._budget.max_active,
            "pace": self._limit(),
            "hold_until": self._budget.hold_until,
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
        away = False  # the database is away: said once, not every round until it is back
        while not self._stop.is_set():
            try:
                timeout = self._tick()
                away = False
            except StoreUnavailable as exc:
                if not away:
                    self._note_error(f"tracker loop: {exc!r}")
                away = True
                timeout = 1.0
            except Exception as exc:  # the loop must survive anything
                self._note_error(f"tracker loop: {exc!r}")
                timeout = 1.0
            self.rounds += 1
            self._wake.wait(timeout)
            self._wake.clear()

    def _tick(self) -> float:
        """Hand each lane the due jobs it has free workers for; return seconds until the next is due.

        A job left over for want of a worker goes out when a job of its lane
        ends (every guard wakes the loop).
        """
        now = self.clock()
        if now >= self._next_renew_at:
            self._renew(now)
        if now >= self._next_claim_at:
            self._claim(now)
        next_due = min(now + 1.0, self._next_claim_at, self._next_renew_at)
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
            chosen: list[_Watch] = []
            try:  # a database gone mid-round must not keep the lane's slots for ever
                chosen = self._admit(creates, now, room=room)
            finally:
                self._creates.give_back(room - len(chosen))
            for w in chosen:
                self._creates.run(self._guard, self._create, w)
            if self._budget.hold_until > now:
                next_due = min(next_due, self._budget.hold_until)
        if waiting:
            next_due = min(next_due, min(waiting))
        if self.keeper is not None:
            free = self._downloads.take(self._downloads.workers)
            outputs: list[Any] = []
            try:  # as above: slots taken for a claim that failed are given back
                if free:
                    claimed = self.store.claim_due_outputs(self.worker_id, self.lease_s, now, free)
                    with self._lock:  # one of ours whose lease ran out while downloading: not twice
                        outputs = [o for o in claimed if o.id not in self._downloading]
                        self._downloading.update(o.id for o in outputs)
            finally:
                self._downloads.give_back(free - len(outputs))
            for o in outputs:
                self._downloads.run(self._guard_download, o)
            nd = self.store.next_output_due()
            if nd is not None and nd > now:
                next_due = min(next_due, nd)
        return max(0.02, next_due - self.clock())

    # -- pacing ---------------------------------------------------------------
    def _limit(self) -> int:
        return self._budget.limit

    def _active_count(self) -> int:
        """Tasks this tracker sent (or is sending) and not finished; call with the lock held."""
        return sum(1 for w in self._watches.values() if w.kind != "create" or w.busy)

    def _sending_count(self) -> int:
        """Creates this tracker is sending right now; call with the lock held."""
        return sum(1 for w in self._watches.values() if w.kind == "create" and w.busy)

    def _admit(self, creates: list[_Watch], now: float, *, room: int) -> list[_Watch]:
        """The due creates that may start now, at most `room` (the create lane's free workers).

        Nothing starts during a 429's hold, whichever worker on this key met it.
        A single prompt's creates (one click, at most one per ratio) start at
        once; campaign rows start only while fewer than the shared pace limit of
        tasks are at HiAPI (from every worker, counted in the store), and not
        while paused.
        """
        if room <= 0:
            return []
        self._budget = self.store.create_budget(self.pacing_key, self._max_active)
        if now < self._budget.hold_until:
            return []
        with self._lock:
            # Counted before the store is read, never after: a create answered in between
            # is then counted twice for one tick (its job's end wakes the loop again), never
            # missed, since a create stops being "sent" only once its task id is stored.
            sending = self._sending_count()
        at_hiapi = self.store.in_flight_count()
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
            # Two workers admitting in the same instant may both take the last slot; the
            # next tick of each sees the other's tasks. (A row lock closes this on PostgreSQL.)
            free = self._limit() - at_hiapi - sending
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
        now = self.clock()
        # In the store, so every worker on this key holds its creates too.
        self._budget = self.store.hold_creates(self.pacing_key, now + wait, self._max_active, now)
        self.health_info.rate_limited += 1

    def _guard(self, job: Callable[[_Watch], None], w: _Watch) -> None:
        try:
            job(w)
        except StoreUnavailable:
            # The database is away: not this task's fault, so no backoff grows while it lasts;
            # tried again shortly (and at once when it is back: the health check wakes the loop).
            self._reschedule(w, OUTAGE_RETRY_S)
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
            gone = self._watches.pop(w.submission_id, None)
        if gone is not None:
            self._release(w.submission_id)

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
        if not self.store.begin_create(sub.id, self.clock()):
            self._drop(w)  # cancelled meanwhile (maybe by another process): never sent
            return
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
        grown = self.store.note_create_accepted(self.pacing_key, self.clock())
        if grown is not None:
            self._budget = grown
        self.store.mark_created(sub.id, created.task_id, now=self.clock())
        self.events.publish(ev.PROGRESS, sub.id)
        after = self.store.submission(sub.id)
        if after is not None and after.is_terminal:
            # Its callback outran this answer and was held; mark_created applied it.
            log.info("task %s: held callback applied", created.task_id)
            self._drop(w)
            self._wake.set()
            return
        with self._lock:  # after mark_created: `_admit` counts it as sent or as stored, never neither
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
        except BlobStoreUnavailable as exc:
            # Paid for and still at HiAPI: tried again every few seconds while the storage is away
            # (a wake when it is back starts the next round at once), never given up on for it.
            self._note_error(f"download {o.id}: {exc!r}")
            self.store.output_failed(o.id, STORAGE_AWAY, retry_at=self.clock() + STORAGE_RETRY_S)
            self.events.publish(ev.PROGRESS, o.submission_id, o.id)
        except Exception as exc:
            self._note_error(f"download {o.id}: {exc!r}")
            self.store.output_failed(
                o.id, "Internal error while keeping the image.", retry_at=self.clock() + 30
            )
            self.events.publish(ev.FAILED, o.submission_id, o.id)
        finally:
            with self._lock:
                self._downloading.discard(o.id)
            try:
                self.store.release_outputs(self.worker_id, [o.id])
            except Exception as exc:  # the lease expires by itself
                self._note_error(f"release output {o.id}: {exc!r}")
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
