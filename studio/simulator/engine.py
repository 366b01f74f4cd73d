"""The simulator's engine: HiAPI's task model without HTTP.

The public API, which the HTTP layer (`http.py`) and tests use and nothing
else reaches under:

- tasks: `create_task(owner, model, prompt, aspect_ratio, resolution,
  callback_url, idempotency_key, ...)`, `get_task(owner, task_id)` (None when
  unknown or another key's), `list_tasks(owner, page, size)` (newest first,
  with the total), `cancel_task(task_id)` (ends it now as `fail`),
  `view(task, now)` (the task-detail object HiAPI would answer),
  `task_snapshot`, `task_finished_at`, `task_count`, `png(task)` and
  `task_by_file_token` (the output file);
- keys and idempotency: `key_ok(key)`, `owner_of(key)` (the partition),
  `idempotency_begin` / `idempotency_release` (24 h window, body fingerprint);
- time: `now()` is `time.time()` plus every `advance(seconds)`, so a test can
  make tasks finish and callbacks fall due without waiting; every status is
  computed from it, never stored;
- faults: `faults`, `set_faults(**changes)`, `reset_faults()`, `draw_fault(rate)`
  (see `Faults`); stats: `stats()`, `reset_stats()`, `count`, `count_in`
  (the counters are listed in the package docstring);
- callbacks: scheduled at the task's end, signed when `signing_key` is set,
  redelivered on HiAPI's schedule (`callback_retry_delay`); `start()` /
  `stop()` run the scheduler.

Creates are checked before they reach the engine (`validation.py`, the
studio's one validation function); the engine trusts its arguments.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import math
import os
import random
import secrets
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import httpx

from ..hiapi.models import IMAGE_TO_IMAGE_MODEL, LEGACY_MODEL, TEXT_TO_IMAGE_MODEL
from .inputs import INPUT_TIMEOUT_S, MAX_INPUT_BYTES, InputFetchError, fetch_input
from .render import MISSPELL_MARKER, render_png
from .signing import sign

log = logging.getLogger("studio.simulator")

# HiAPI's current IDs and the legacy alias of text-to-image.
DEFAULT_MODELS: frozenset[str] = frozenset({TEXT_TO_IMAGE_MODEL, IMAGE_TO_IMAGE_MODEL, LEGACY_MODEL})
TASK_ID_PREFIX = "tk-hiapi-"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
IDEMPOTENCY_WINDOW_S = 24 * 3600
# HiAPI's callback redelivery: after a failed attempt it waits about 1, 5 and 20
# minutes (four attempts in all). `callback_backoff` is the first wait; the later
# ones keep these proportions, so a test can compress the whole schedule.
CALLBACK_RETRY_FACTORS: tuple[float, ...] = (1.0, 5.0, 20.0)
CALLBACK_FIRST_RETRY_S = 60.0
CALLBACK_BACKOFF_ENV = "STUDIO_SIM_CALLBACK_BACKOFF"
FAIL_MARKER = "[sim:fail]"

# Share of a task's duration spent in each non-terminal status.
PHASES: tuple[tuple[str, float], ...] = (("queued", 0.2), ("handling", 0.9), ("archiving", 1.0))

# (weight, code, message) of failures drawn by `fail_rate`; most are rejections.
FAILURES: tuple[tuple[float, str, str], ...] = (
    (0.85, "TASK_FAILED", "upstream rejected the prompt"),
    (0.10, "TASK_TIMEOUT", "upstream timed out"),
    (0.05, "STORAGE_UNAVAILABLE", "result storage unavailable"),
)
PROMPT_REJECTED = {"code": "TASK_FAILED", "message": "upstream rejected the prompt"}

_MEDIAN_S = {"1K": 45.0, "2K": 70.0, "4K": 110.0}
QUEUE_MEAN_S = 4.0
#: How much longer handling takes per `ext` quality (the default route is 1.0).
QUALITY_SLOWDOWN = {"low": 0.6, "medium": 1.0, "high": 1.6}
HANDLING_SPREAD = 0.15  # lognormal sigma of handling time at one resolution

# A model returns total seconds (phases split by PHASES) or (queued, handling, archiving) seconds.
DurationModel = Callable[[str, random.Random], "float | tuple[float, float, float]"]


def realistic_duration(resolution: str, rng: random.Random) -> tuple[float, float, float]:
    """Seconds spent queued, handling and archiving, as third parties report the family.

    An exponential queue wait (mean 4 s, the part that varies with load), a
    handling time whose median grows with resolution (1K ~45 s, 2K ~70 s,
    4K ~110 s overall) and varies little at one resolution (lognormal sigma
    0.15), and 1-2.5 s of archiving (storing the result). Totals clip to 20-240 s.
    """
    median = _MEDIAN_S.get(resolution, _MEDIAN_S["1K"])
    queue = rng.expovariate(1 / QUEUE_MEAN_S)
    handling = (median - QUEUE_MEAN_S - 1.75) * math.exp(rng.gauss(0.0, HANDLING_SPREAD))
    archiving = rng.uniform(1.0, 2.5)
    total = queue + handling + archiving
    if total < 20.0:
        handling += 20.0 - total
    elif total > 240.0:
        handling -= total - 240.0
    return queue, handling, archiving


@dataclass(frozen=True)
class Faults:
    """Injected misbehaviour. Rates are probabilities in [0, 1]; `*_s` are seconds.

    `get_*` apply to `GET /v1/tasks` and `GET /v1/tasks/{id}`, `post_*` to
    `POST /v1/tasks`; both answer with a `Retry-After` of `retry_after` seconds
    (an HTTP date instead when `retry_after_as_date`). `fail_rate`,
    `misspell_rate` (the quoted headline drawn misspelled, as the
    `[sim:misspell]` marker does) and the `callback_*` rates are drawn when a
    task is created; the others per request. `get_trickle_s` and
    `download_trickle_s` send the body of every status answer or image one
    byte at a time, this many seconds apart (a server that never times out a
    read but never finishes either).
    """

    fail_rate: float = 0.0
    get_429_rate: float = 0.0
    get_503_rate: float = 0.0
    post_429_rate: float = 0.0
    post_503_rate: float = 0.0
    retry_after: float = 1.0
    retry_after_as_date: bool = False
    drop_create_answer_rate: float = 0.0
    create_delay_s: float = 0.0
    download_fail_rate: float = 0.0
    download_truncate_rate: float = 0.0
    download_non_image_rate: float = 0.0
    download_slow_s: float = 0.0
    get_trickle_s: float = 0.0
    download_trickle_s: float = 0.0
    callback_drop_rate: float = 0.0
    callback_duplicate_rate: float = 0.0
    misspell_rate: float = 0.0  # share of tasks whose quoted headline is drawn misspelled

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "retry_after_as_date":
                if not isinstance(value, bool):
                    raise ValueError("retry_after_as_date must be true or false")
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{f.name} must be a number (got {value!r})")
            if value < 0 or (f.name.endswith("_rate") and value > 1):
                limit = "between 0 and 1" if f.name.endswith("_rate") else "at least 0"
                raise ValueError(f"{f.name} must be {limit} (got {value!r})")
            object.__setattr__(self, f.name, float(value))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def merged(self, **changes: Any) -> Faults:
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(self.names())}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    owner: str
    seq: int
    model: str
    prompt: str
    aspect_ratio: str
    resolution: str
    callback_url: str | None
    created_at: float
    finished_at: float
    error: dict[str, str] | None
    misspelled: bool
    file_token: str
    handling_at: float = 0.0  # when `handling` starts
    archiving_at: float = 0.0  # when `archiving` starts
    callback_fate: str = "send"  # "send", "drop" or "duplicate", drawn at create time
    input_urls: tuple[str, ...] = ()  # image-to-image: fetched once `handling` starts
    quality: str | None = None  # `ext` route: low, medium or high
    background: str | None = None  # "transparent" renders real alpha


@dataclass
class _Inputs:
    """What fetching an image-to-image task's input URLs came to (tasks themselves are frozen)."""

    fetched: bool = False  # until every input URL was fetched, or one failed
    error: dict[str, str] | None = None
    reference: bytes | None = None  # the first input image, drawn into the result


@dataclass
class _IdemEntry:
    fingerprint: str
    started_at: float
    task_id: str | None = None  # None while the first request is still being handled


def _new_stats() -> dict[str, Any]:
    return {
        "requests": {},
        "creates": 0,
        "tasks_created": 0,
        "idempotent_replays": 0,
        "create_answers_dropped": 0,
        "gets_by_task": {},
        "downloads": 0,
        "callbacks_sent": 0,
        "callbacks_acked": 0,
        "callbacks_failed": 0,
        "callbacks_dropped": 0,
        "callbacks_abandoned": 0,
        "connections": 0,
        "trickles_started": 0,
        "trickles_cut": 0,  # the client hung up before the last byte
        "trickles_finished": 0,
    }


def _chance(rng: random.Random, rate: float) -> bool:
    # No draw at all for 0 and 1, so turning a fault off leaves other draws reproducible.
    if rate <= 0:
        return False
    if rate >= 1:
        return True
    return rng.random() < rate


def new_task_id() -> str:
    """`tk-hiapi-` + 26 Crockford base32 characters: 48-bit ms time, 80 random bits."""
    value = (int(time.time() * 1000) & ((1 << 48) - 1)) << 80 | secrets.randbits(80)
    chars = [CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1)]
    return TASK_ID_PREFIX + "".join(chars)


class Engine:
    """HiAPI's task model, without HTTP: tasks, their lifecycle, idempotency, faults, stats, callbacks.

    - `api_keys`: accepted bearer keys; empty/None accepts any key starting `sk-`.
      Tasks are partitioned by key (`owner_of(key)`; another key's task is not found).
    - `signing_key`: when set (16-256 chars), callbacks carry `X-HiAPI-Timestamp`
      and `X-HiAPI-Signature`.
    - `min_duration`/`max_duration`: seconds from create to terminal, uniform;
      `duration_model(resolution, rng) -> seconds` replaces them when given (see
      `realistic_duration`). `time_scale` divides every task duration and the
      callback retry waits.
    - Callbacks are redelivered like HiAPI's: after a non-2xx, a timeout
      (`callback_timeout`, 10 s) or a network error, again after `callback_backoff`
      seconds, then 5x and 20x that (60 s by default: about +1, +5, +20 minutes),
      `callback_max_attempts` (4) attempts in all, then abandoned. `callback_backoff`
      defaults to the `STUDIO_SIM_CALLBACK_BACKOFF` environment variable (seconds)
      when set, so tests can compress the schedule.
    - `output_ttl`: seconds an output URL stays valid (then 410).
    - `faults`: a `Faults` (or a mapping of its fields); `seed` makes runs reproducible.
    - `models`: accepted model names (default `DEFAULT_MODELS`; empty accepts any).

    Statuses are computed from the engine's clock (`now()`: `time.time()` plus
    whatever `advance` added), never stored. `start()` runs the callback
    scheduler; `Simulator` adds the HTTP server and the output URLs' base.
    """

    def __init__(
        self,
        api_keys: Iterable[str] | None = None,
        signing_key: str | None = None,
        min_duration: float = 3.0,
        max_duration: float = 8.0,
        duration_model: DurationModel | None = None,
        time_scale: float = 1.0,
        output_ttl: float = 7 * 24 * 3600,
        faults: Faults | Mapping[str, Any] | None = None,
        seed: int | str | None = None,
        models: Iterable[str] | None = None,
        *,
        callback_backoff: float | None = None,
        callback_max_attempts: int = 1 + len(CALLBACK_RETRY_FACTORS),
        callback_timeout: float = 10.0,
        input_timeout: float = INPUT_TIMEOUT_S,
        image_cache_size: int = 64,
    ) -> None:
        if not 0 <= min_duration <= max_duration:
            raise ValueError("need 0 <= min_duration <= max_duration")
        if not time_scale > 0:
            raise ValueError("time_scale must be > 0")
        if signing_key is not None and not 16 <= len(signing_key) <= 256:
            raise ValueError("signing_key must be 16-256 characters, as HiAPI's console requires")
        if callback_max_attempts < 1:
            raise ValueError("callback_max_attempts must be at least 1")
        if callback_backoff is None:
            callback_backoff = _env_seconds(CALLBACK_BACKOFF_ENV, CALLBACK_FIRST_RETRY_S)
        if not (math.isfinite(callback_backoff) and callback_backoff >= 0):
            raise ValueError("callback_backoff must be a number of seconds >= 0")
        self._api_keys = tuple(k for k in (api_keys or ()) if k)
        self.signing_key = signing_key
        self.min_duration = float(min_duration)
        self.max_duration = float(max_duration)
        self.duration_model = duration_model
        self.time_scale = float(time_scale)
        self.output_ttl = float(output_ttl)
        self.models = DEFAULT_MODELS if models is None else frozenset(models)
        self.callback_backoff = float(callback_backoff)
        self.callback_max_attempts = int(callback_max_attempts)
        self.callback_timeout = float(callback_timeout)
        self.input_timeout = float(input_timeout)
        self.image_cache_size = max(1, int(image_cache_size))

        self._faults = faults if isinstance(faults, Faults) else Faults().merged(**(faults or {}))
        self._rng = random.Random(seed)  # task outcomes: durations, failures, callback faults
        self._transport_rng = random.Random(None if seed is None else f"{seed}:transport")
        self._skew = 0.0  # seconds `advance` moved the clock on

        self._lock = threading.Lock()  # guards everything below; never held across I/O or rendering
        self._tasks: dict[str, TaskRecord] = {}
        self._by_owner: dict[str, list[TaskRecord]] = {}
        self._by_token: dict[str, TaskRecord] = {}
        self._inputs: dict[str, _Inputs] = {}  # image-to-image tasks: their fetched inputs
        self._idem: dict[tuple[str, str], _IdemEntry] = {}
        self._seq = itertools.count(1)
        self._stats = _new_stats()
        self._conns: set[socket.socket] = set()

        self._cache_lock = threading.Lock()
        self._png_cache: OrderedDict[str, bytes] = OrderedDict()
        self._render_locks: dict[str, threading.Lock] = {}

        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._heap_seq = itertools.count()

        self._threads: list[threading.Thread] = []
        self._executor: ThreadPoolExecutor | None = None
        self._http: httpx.Client | None = None
        self._running = False
        self._stopping = False

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Engine:
        """Start the callback scheduler (and the pool that delivers callbacks)."""
        if self._running:
            raise RuntimeError("simulator already started")
        self._running = True
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sim-callback")
        self._http = httpx.Client(timeout=self.callback_timeout, trust_env=False, follow_redirects=False)
        self._stopping = False
        self._spawn(self._scheduler_loop, "sim-scheduler")
        return self

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def stopping(self) -> bool:
        """True once `stop()` began: new work is refused."""
        return self._stopping

    def stop(self) -> None:
        """Drop every pending callback, end tracked connections and the scheduler."""
        if not self._running or self._stopping:
            return
        self._stopping = True
        with self._cond:
            self._heap.clear()
            self._cond.notify_all()
        self._stop_serving()
        self._close_connections()
        for t in self._threads:
            t.join(timeout=2)
        self._threads.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._http is not None:
            self._http.close()

    def _stop_serving(self) -> None:
        """Stop taking requests (the HTTP server's part of `stop`); nothing to do without one."""

    def _close_connections(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # end kept-alive connections too
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> Engine:
        return self if self._running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """Where output URLs point (`<base_url>/files/...`); the HTTP server gives it."""
        raise RuntimeError("simulator not started")

    # ------------------------------------------------------------------- clock

    def now(self) -> float:
        """The engine's time: `time.time()` plus every `advance` so far."""
        return time.time() + self._skew

    def advance(self, seconds: float) -> None:
        """Move the engine's clock on: tasks progress and callbacks fall due as if `seconds` passed."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError("advance takes a number of seconds >= 0")
        with self._lock:
            self._skew += seconds
        with self._cond:
            self._cond.notify_all()

    # ------------------------------------------------------------ public helpers

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, **changes: Any) -> Faults:
        """Merge fault settings (ValueError on an unknown name or a bad value)."""
        with self._lock:
            self._faults = self._faults.merged(**changes)
            return self._faults

    def reset_faults(self) -> Faults:
        with self._lock:
            self._faults = Faults()
            return self._faults

    def stats(self) -> dict[str, Any]:
        with self._lock:
            out = dict(self._stats)
            out["requests"] = dict(self._stats["requests"])
            out["gets_by_task"] = dict(self._stats["gets_by_task"])
        return out

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = _new_stats()

    def task_finished_at(self, task_id: str) -> float:
        """When the task reaches (or reached) its terminal status, on the engine's clock; KeyError if unknown."""
        with self._lock:
            return self._tasks[task_id].finished_at

    def task_snapshot(self, task_id: str) -> dict[str, Any]:
        """What `GET /v1/tasks/{id}` would answer in `data` right now; KeyError if unknown."""
        with self._lock:
            task = self._tasks[task_id]
        return self.view(task, self.now())

    def task_count(self) -> int:
        with self._lock:
            return len(self._tasks)

    # -------------------------------------------------------------- bookkeeping

    # -------------------------------------------------------------- bookkeeping

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def count_in(self, key: str, sub: str) -> None:
        with self._lock:
            d = self._stats[key]
            d[sub] = d.get(sub, 0) + 1

    def draw_fault(self, rate: float) -> bool:
        with self._lock:
            return _chance(self._transport_rng, rate)

    def track_connection(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
                self._stats["connections"] += 1
            else:
                self._conns.discard(conn)

    def key_ok(self, key: str) -> bool:
        if self._api_keys:
            ok = False
            for k in self._api_keys:
                ok |= hmac.compare_digest(k.encode(), key.encode())
            return ok
        return key.startswith("sk-") and len(key) > 3

    @staticmethod
    def owner_of(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    # -------------------------------------------------------------- idempotency

    def idempotency_begin(self, owner: str, key: str, fingerprint: str, now: float) -> tuple[str, str | None]:
        """'new' (now reserved), 'replay' (with the first task id), 'processing' or 'mismatch'."""
        with self._lock:
            entry = self._idem.get((owner, key))
            if entry is not None and now - entry.started_at > IDEMPOTENCY_WINDOW_S:
                entry = None
            if entry is None:
                if len(self._idem) > 4096:
                    self._idem = {
                        k: e for k, e in self._idem.items() if now - e.started_at <= IDEMPOTENCY_WINDOW_S
                    }
                self._idem[(owner, key)] = _IdemEntry(fingerprint, now)
                return "new", None
            if entry.fingerprint != fingerprint:
                return "mismatch", None
            if entry.task_id is None:
                return "processing", None
            return "replay", entry.task_id

    def idempotency_release(self, owner: str, key: str) -> None:
        with self._lock:
            entry = self._idem.get((owner, key))
            if entry is not None and entry.task_id is None:
                del self._idem[(owner, key)]

    # -------------------------------------------------------------------- tasks

    def _draw_phases(self, resolution: str) -> tuple[float, float, float]:
        """Seconds (already time-scaled) spent queued, handling and archiving."""
        drawn: float | tuple[float, float, float]
        if self.duration_model is not None:
            drawn = self.duration_model(resolution, self._rng)
        else:
            drawn = self._rng.uniform(self.min_duration, self.max_duration)
        if isinstance(drawn, tuple):
            q, h, a = (max(0.0, float(x)) / self.time_scale for x in drawn)
            return q, h, a
        total = max(0.0, float(drawn)) / self.time_scale
        (_, q_end), (_, h_end), _ = PHASES
        return total * q_end, total * (h_end - q_end), total * (1.0 - h_end)

    def _draw_callback_fate(self) -> str:
        faults = self._faults
        if _chance(self._rng, faults.callback_drop_rate):
            return "drop"
        if _chance(self._rng, faults.callback_duplicate_rate):
            return "duplicate"
        return "send"

    def create_task(
        self,
        owner: str,
        model: str,
        prompt: str,
        aspect_ratio: str,
        resolution: str,
        callback_url: str | None,
        idem_key: str | None,
        *,
        input_urls: tuple[str, ...] = (),
        quality: str | None = None,
        background: str | None = None,
    ) -> TaskRecord:
        now = self.now()
        lowered = prompt.lower()
        with self._lock:
            queued, handling, archiving = self._draw_phases(resolution)
            handling *= QUALITY_SLOWDOWN.get(quality or "", 1.0)  # a finer quality renders longer
            duration = queued + handling + archiving
            error: dict[str, str] | None = None
            if FAIL_MARKER in lowered:
                error = dict(PROMPT_REJECTED)
            elif _chance(self._rng, self._faults.fail_rate):
                _, code, message = self._rng.choices(FAILURES, weights=[f[0] for f in FAILURES])[0]
                error = {"code": code, "message": message}
            if error is not None:  # failures tend to surface early
                shrink = 0.4 + 0.6 * self._rng.random()
                duration, queued, handling = duration * shrink, queued * shrink, handling * shrink
            task = TaskRecord(
                task_id=new_task_id(),
                owner=owner,
                seq=next(self._seq),
                model=model,
                prompt=prompt,
                aspect_ratio=aspect_ratio,
                resolution=resolution,
                callback_url=callback_url,
                created_at=now,
                finished_at=now + duration,
                handling_at=now + queued,
                archiving_at=now + queued + handling,
                error=error,
                misspelled=MISSPELL_MARKER in lowered or _chance(self._rng, self._faults.misspell_rate),
                file_token=secrets.token_urlsafe(24),
                callback_fate=self._draw_callback_fate() if callback_url else "send",
                input_urls=tuple(input_urls),
                quality=quality,
                background=background,
            )
            if input_urls:
                self._inputs[task.task_id] = _Inputs()
            self._tasks[task.task_id] = task
            self._by_owner.setdefault(owner, []).append(task)
            self._by_token[task.file_token] = task
            if idem_key is not None:
                entry = self._idem.get((owner, idem_key))
                if entry is not None:
                    entry.task_id = task.task_id
            self._stats["tasks_created"] += 1
        if input_urls:
            # Like HiAPI: the inputs are downloaded once the task is being handled.
            self._schedule(task.handling_at, functools.partial(self._fetch_inputs, task.task_id))
        if callback_url:
            self._schedule(
                task.finished_at, functools.partial(self._deliver, task.task_id, 1, False, task.finished_at)
            )
        return task

    def _fetch_inputs(self, task_id: str) -> None:
        """Download every input URL of an image-to-image task; the first bad one fails the task."""
        with self._lock:
            task = self._tasks.get(task_id)
            state = self._inputs.get(task_id)
        if task is None or state is None:
            return
        first: bytes | None = None
        error: dict[str, str] | None = None
        for i, url in enumerate(task.input_urls):
            try:
                data = fetch_input(url, timeout=self.input_timeout, max_bytes=MAX_INPUT_BYTES)
            except InputFetchError as exc:
                error = {"code": "INPUT_FETCH_FAILED", "message": f"input_urls[{i}] {exc}"}
                break
            if first is None:
                first = data
        with self._lock:
            state.reference, state.error, state.fetched = first, error, True
            key = "input_fetch_failures" if error else "inputs_fetched"
            self._stats[key] = self._stats.get(key, 0) + (1 if error else len(task.input_urls))

    def get_task(self, owner: str, task_id: str) -> TaskRecord | None:
        with self._lock:
            task = self._tasks.get(task_id)
        return task if task is not None and task.owner == owner else None

    def list_tasks(self, owner: str, page: int, size: int) -> tuple[list[TaskRecord], int]:
        with self._lock:
            tasks = self._by_owner.get(owner, [])
            total = len(tasks)
            end = total - (page - 1) * size
            start = max(0, end - size)
            chunk = tasks[start:end] if end > 0 else []
        return list(reversed(chunk)), total

    def cancel_task(self, task_id: str, *, code: str = "CANCELLED", message: str = "cancelled") -> TaskRecord:
        """End an unfinished task now as `fail` with `{code, message}`; its callback goes now.

        A terminal task is returned unchanged; KeyError if unknown. HiAPI documents
        no cancel route, so this is reached only from Python (a test ending a task).
        """
        now = self.now()
        with self._lock:
            task = self._tasks[task_id]
            if now >= task.finished_at:
                return task
            ended = replace(
                task,
                finished_at=now,
                handling_at=min(task.handling_at, now),
                archiving_at=min(task.archiving_at, now),
                error={"code": code, "message": message},
            )
            self._tasks[task_id] = ended
            owned = self._by_owner[task.owner]
            owned[owned.index(task)] = ended
            self._by_token[task.file_token] = ended
            inputs = self._inputs.get(task_id)
            if inputs is not None:
                inputs.fetched = True  # an ended task waits for no input
        if ended.callback_url:
            self._schedule(now, functools.partial(self._deliver, task_id, 1, False, now))
        return ended

    def task_by_file_token(self, token: str) -> TaskRecord | None:
        with self._lock:
            return self._by_token.get(token)

    def view(self, t: TaskRecord, now: float) -> dict[str, Any]:
        """The task-detail `data` object at time `now` (status computed from the clock)."""
        inputs = self._inputs.get(t.task_id)
        error = t.error or (inputs.error if inputs else None)
        if now >= t.finished_at and inputs is not None and not inputs.fetched:
            status = "handling"  # its inputs are still being downloaded
        elif now >= t.finished_at:
            status = "fail" if error else "success"
        elif now < t.handling_at:
            status = "queued"
        elif now < t.archiving_at:
            status = "handling"
        else:
            status = "archiving"
        terminal = status in ("success", "fail")
        data: dict[str, Any] = {
            "taskId": t.task_id,
            "model": t.model,
            "status": status,
            "created": int(t.created_at),
            "completed": int(t.finished_at) if terminal else 0,
        }
        if status == "success":
            data["output"] = [
                {
                    "url": f"{self.base_url}/files/{t.file_token}.png",
                    "type": "image",
                    "expireAt": int(t.finished_at + self.output_ttl),
                }
            ]
        elif status == "fail":
            data["error"] = dict(error or PROMPT_REJECTED)
        return data

    # ------------------------------------------------------------------- images

    def png(self, task: TaskRecord) -> bytes:
        """The task's PNG, rendered on first use and kept in a small LRU cache."""
        with self._cache_lock:
            png = self._png_cache.get(task.task_id)
            if png is not None:
                self._png_cache.move_to_end(task.task_id)
                return png
            render_lock = self._render_locks.setdefault(task.task_id, threading.Lock())
        with render_lock:
            with self._cache_lock:
                png = self._png_cache.get(task.task_id)
            if png is not None:
                return png
            png = render_png(
                task.prompt,
                task.aspect_ratio,
                task.resolution,
                misspelled=task.misspelled,
                reference=inputs.reference if (inputs := self._inputs.get(task.task_id)) else None,
                transparent=task.background == "transparent",
            )
            with self._cache_lock:
                self._png_cache[task.task_id] = png
                while len(self._png_cache) > self.image_cache_size:
                    self._png_cache.popitem(last=False)
                self._render_locks.pop(task.task_id, None)
        return png

    # ---------------------------------------------------------------- callbacks

    def _schedule(self, due: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._heap_seq), fn))
            self._cond.notify()

    def _scheduler_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    now = self.now()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    timeout = min(1.0, self._heap[0][0] - now) if self._heap else 1.0
                    self._cond.wait(timeout)
                if self._stopping:
                    return
                _, _, fn = heapq.heappop(self._heap)
            try:
                assert self._executor is not None
                self._executor.submit(fn)
            except RuntimeError:  # executor shut down
                return

    def _deliver(self, task_id: str, attempt: int, is_copy: bool, due: float | None = None) -> None:
        """One callback attempt; schedules the next one on failure.

        `due` is the end the first attempt was scheduled for: when `cancel_task`
        has ended the task at another time since, that attempt is stale and skipped.
        """
        if self._stopping or self._http is None:
            return
        with self._lock:
            task = self._tasks.get(task_id)
            if task is not None and due is not None and task.finished_at != due:
                return
            # The drawn fate applies to the first attempt of the original callback only.
            first = attempt == 1 and not is_copy
            fate = task.callback_fate if task is not None and first else "send"
            drop = fate == "drop"
            dup = fate == "duplicate"
            if drop:
                self._stats["callbacks_dropped"] += 1
        if task is None or not task.callback_url or drop:
            return
        if dup and self._executor is not None:
            try:
                self._executor.submit(self._deliver, task_id, 1, True)
            except RuntimeError:
                pass
        data = self.view(task, max(self.now(), task.finished_at))
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "HiAPI-Callback/1.0"}
        if self.signing_key:
            timestamp = str(int(time.time()))  # the wall clock: receivers check it against theirs
            headers["X-HiAPI-Timestamp"] = timestamp
            headers["X-HiAPI-Signature"] = sign(self.signing_key, timestamp, body)
        self.count("callbacks_sent")
        try:
            response = self._http.post(task.callback_url, content=body, headers=headers)
            ok = 200 <= response.status_code < 300
        except (httpx.HTTPError, OSError, RuntimeError):
            ok = False
        if ok:
            self.count("callbacks_acked")
            return
        self.count("callbacks_failed")
        if attempt >= self.callback_max_attempts:
            self.count("callbacks_abandoned")
            return
        delay = self.callback_retry_delay(attempt)
        self._schedule(self.now() + delay, functools.partial(self._deliver, task_id, attempt + 1, True))

    def callback_retry_delay(self, attempt: int) -> float:
        """Seconds between failed attempt number `attempt` (1-based) and the next one."""
        factor = CALLBACK_RETRY_FACTORS[min(attempt, len(CALLBACK_RETRY_FACTORS)) - 1]
        return self.callback_backoff * factor / self.time_scale


def _env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds (got {value!r})") from None
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"{name} must be a number of seconds >= 0 (got {value!r})")
    return seconds
