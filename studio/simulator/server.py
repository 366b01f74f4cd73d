"""A local HTTP server that answers like HiAPI's task API.

It serves the documented surface (create, status, list, temporary file URLs,
signed callbacks) with lazily computed task lifecycles, and adds fault
injection and counters under `/_sim/` for tests and benchmarks. See the
package docstring for the Python API.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import hmac
import http.server
import itertools
import json
import logging
import math
import os
import random
import secrets
import socket
import socketserver
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from ..models import IMAGE_TO_IMAGE_MODEL, LEGACY_MODEL, TEXT_TO_IMAGE_MODEL
from ..ratios import EXT_ROUTE
from ..validation import validate_request
from .inputs import INPUT_TIMEOUT_S, MAX_INPUT_BYTES, InputFetchError, fetch_input
from .render import MISSPELL_MARKER, render_png

log = logging.getLogger("studio.simulator")

# HiAPI's current IDs and the legacy alias of text-to-image.
DEFAULT_MODELS: frozenset[str] = frozenset({TEXT_TO_IMAGE_MODEL, IMAGE_TO_IMAGE_MODEL, LEGACY_MODEL})
TASK_ID_PREFIX = "tk-hiapi-"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
IDEMPOTENCY_WINDOW_S = 24 * 3600
MAX_IDEMPOTENCY_KEY_BYTES = 255
MAX_BODY_BYTES = 1 << 20
DEFAULT_PAGE_SIZE = 10  # HiAPI's documented default
MAX_PAGE_SIZE = 100
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
class _Task:
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


class Simulator:
    """An in-process HiAPI look-alike serving real HTTP on a daemon thread.

    - `api_keys`: accepted bearer keys; empty/None accepts any key starting `sk-`.
      Tasks are partitioned by key (another key's task answers 404).
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
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
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
        self.host = host
        self._port = port
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

        self._lock = threading.Lock()  # guards everything below; never held across I/O or rendering
        self._tasks: dict[str, _Task] = {}
        self._by_owner: dict[str, list[_Task]] = {}
        self._by_token: dict[str, _Task] = {}
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

        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._executor: ThreadPoolExecutor | None = None
        self._http: httpx.Client | None = None
        self._stopping = False

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Simulator:
        if self._server is not None:
            raise RuntimeError("simulator already started")
        server_cls = _Server6 if ":" in self.host else _Server
        self._server = server_cls((self.host, self._port), _Handler)
        self._server.sim = self
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sim-callback")
        self._http = httpx.Client(timeout=self.callback_timeout, trust_env=False, follow_redirects=False)
        self._stopping = False
        for target, name in ((self._serve, "sim-http"), (self._scheduler_loop, "sim-scheduler")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _serve(self) -> None:
        assert self._server is not None
        self._server.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        server = self._server
        if server is None or self._stopping:
            return
        self._stopping = True
        with self._cond:
            self._heap.clear()
            self._cond.notify_all()
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # end kept-alive connections too
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=2)
        self._threads.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> Simulator:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("simulator not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

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
        """When the task reaches (or reached) its terminal status, as `time.time()`; KeyError if unknown."""
        with self._lock:
            return self._tasks[task_id].finished_at

    def task_snapshot(self, task_id: str) -> dict[str, Any]:
        """What `GET /v1/tasks/{id}` would answer in `data` right now; KeyError if unknown."""
        with self._lock:
            task = self._tasks[task_id]
        return self._view(task, time.time())

    def task_count(self) -> int:
        with self._lock:
            return len(self._tasks)

    # -------------------------------------------------------------- bookkeeping

    def _bump(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def _bump_in(self, key: str, sub: str) -> None:
        with self._lock:
            d = self._stats[key]
            d[sub] = d.get(sub, 0) + 1

    def _transport_fault(self, rate: float) -> bool:
        with self._lock:
            return _chance(self._transport_rng, rate)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
                self._stats["connections"] += 1
            else:
                self._conns.discard(conn)

    def _key_ok(self, key: str) -> bool:
        if self._api_keys:
            ok = False
            for k in self._api_keys:
                ok |= hmac.compare_digest(k.encode(), key.encode())
            return ok
        return key.startswith("sk-") and len(key) > 3

    @staticmethod
    def _owner_id(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    # -------------------------------------------------------------- idempotency

    def _idem_begin(self, owner: str, key: str, fingerprint: str, now: float) -> tuple[str, str | None]:
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

    def _idem_release(self, owner: str, key: str) -> None:
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

    def _create_task(
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
    ) -> _Task:
        now = time.time()
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
            task = _Task(
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
            self._schedule(task.finished_at, functools.partial(self._deliver, task.task_id, 1, False))
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

    def _owned_task(self, owner: str, task_id: str) -> _Task | None:
        with self._lock:
            task = self._tasks.get(task_id)
        return task if task is not None and task.owner == owner else None

    def _page(self, owner: str, page: int, size: int) -> tuple[list[_Task], int]:
        with self._lock:
            tasks = self._by_owner.get(owner, [])
            total = len(tasks)
            end = total - (page - 1) * size
            start = max(0, end - size)
            chunk = tasks[start:end] if end > 0 else []
        return list(reversed(chunk)), total

    def _task_by_token(self, token: str) -> _Task | None:
        with self._lock:
            return self._by_token.get(token)

    def _view(self, t: _Task, now: float) -> dict[str, Any]:
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

    def _png(self, task: _Task) -> bytes:
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
                    now = time.time()
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

    def _deliver(self, task_id: str, attempt: int, is_copy: bool) -> None:
        """One callback attempt; schedules the next one on failure."""
        if self._stopping or self._http is None:
            return
        with self._lock:
            task = self._tasks.get(task_id)
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
        data = self._view(task, max(time.time(), task.finished_at))
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "HiAPI-Callback/1.0"}
        if self.signing_key:
            timestamp = str(int(time.time()))
            headers["X-HiAPI-Timestamp"] = timestamp
            headers["X-HiAPI-Signature"] = sign(self.signing_key, timestamp, body)
        self._bump("callbacks_sent")
        try:
            response = self._http.post(task.callback_url, content=body, headers=headers)
            ok = 200 <= response.status_code < 300
        except (httpx.HTTPError, OSError, RuntimeError):
            ok = False
        if ok:
            self._bump("callbacks_acked")
            return
        self._bump("callbacks_failed")
        if attempt >= self.callback_max_attempts:
            self._bump("callbacks_abandoned")
            return
        delay = self.callback_retry_delay(attempt)
        self._schedule(time.time() + delay, functools.partial(self._deliver, task_id, attempt + 1, True))

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


def sign(signing_key: str, timestamp: str, body: bytes) -> str:
    """HiAPI's callback signature: hex HMAC-SHA256(key, timestamp + "." + raw body)."""
    return hmac.new(signing_key.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------- HTTP


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    sim: Simulator

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _problems(body: dict[str, Any], models: frozenset[str]) -> tuple[list[str], dict[str, Any]]:
    """Every problem with a create body (messages), and the values it asks for."""
    messages: list[str] = []
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        messages.append(f"Model is required, e.g. {TEXT_TO_IMAGE_MODEL!r}.")
    elif models and model not in models:
        messages.append(f"Model {model[:100]!r} is not available; use one of {', '.join(sorted(models))}.")
    inp = body.get("input")
    if inp is None:
        inp = {}
    elif not isinstance(inp, dict):
        messages.append("'input' must be an object holding prompt, aspect_ratio and resolution.")
        inp = {}
    if "callback" in inp:
        messages.append("'callback' belongs at the top level of the request body, not inside 'input'.")
    ratio = inp.get("aspect_ratio")
    resolution = inp.get("resolution")
    route = body.get("route")
    urls_key = "image_urls" if route == EXT_ROUTE else "input_urls"  # what each route calls references
    if route == EXT_ROUTE and resolution is None:
        messages.append("'resolution' is required on the ext route: send 1K, 2K or 4K.")
    if route == EXT_ROUTE and "input_urls" in inp:
        messages.append("The ext route takes references as 'image_urls', not 'input_urls'.")
    values: dict[str, Any] = {
        "model": model,
        "prompt": inp.get("prompt"),
        "aspect_ratio": "auto" if ratio is None else ratio,
        "resolution": "1K" if resolution is None else resolution,
        "callback_url": None,
        "input_urls": tuple(u for u in inp.get(urls_key) or () if isinstance(u, str)),
        "quality": inp.get("quality"),
        "background": inp.get("background"),
    }
    callback_when: Any = "final"
    callback = body.get("callback")
    if callback is not None:
        if isinstance(callback, dict):
            url = callback.get("url")
            values["callback_url"] = "" if url is None else url
            callback_when = callback.get("when", "final")
        else:
            messages.append("'callback' must be an object {url, when}.")
    problems = validate_request(
        values["prompt"],
        values["aspect_ratio"],
        values["resolution"],
        values["callback_url"],
        callback_when,
        allow_loopback_http=True,
        image_to_image=model == IMAGE_TO_IMAGE_MODEL,
        references=inp.get(urls_key),
        route=route,
        quality=values["quality"],
        background=values["background"],
        storage=body.get("storage"),
    )
    messages.extend(p.message for p in problems)
    return messages, values


def _query_int(qs: dict[str, list[str]], name: str, default: int) -> int:
    try:
        return int(qs.get(name, [""])[-1])
    except ValueError:
        return default


def _is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == "application/json"


_NON_IMAGE_PAGE = (
    b"<!DOCTYPE html><html><head><title>Service Unavailable</title></head>"
    b"<body><h1>Service temporarily unavailable</h1><p>Please try again later.</p></body></html>"
)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "HiAPI-Simulator/1.0"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed after this
    server: _Server

    # Quiet: the base class would log request lines; we log method, route and status only.
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's algorithm
        # and the client's delayed ACK add ~40 ms to every answer on a kept-alive connection.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.server.sim._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sim._track(self.connection, False)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ------------------------------------------------------------------ plumbing

    @property
    def sim(self) -> Simulator:
        return self.server.sim

    def _dispatch(self, method: str) -> None:
        self._method = method
        self._route = "<unknown>"
        self._answered = False
        self._admin = False
        try:
            try:
                body = self._read_body()
            except _BadRequest as e:
                self.close_connection = True
                self._error(e.status, e.message, "INVALID_REQUEST")
                return
            if self.sim._stopping:
                self.close_connection = True
                self._error(503, "Simulator is stopping.")
                return
            url = urlsplit(self.path)
            path = url.path.rstrip("/") or "/"
            if path.startswith("/_sim/"):
                self._admin = True
                self._route = path
                self._handle_admin(method, path, body)
            elif path == "/v1/tasks":
                self._route = "/v1/tasks"
                if method == "POST":
                    self._handle_create(body)
                elif method == "GET":
                    self._handle_list(url.query)
                else:
                    self._error(405, f"Method {method} is not allowed here.")
            elif path.startswith("/v1/tasks/") and "/" not in path[len("/v1/tasks/") :]:
                self._route = "/v1/tasks/{id}"
                if method == "GET":
                    self._handle_get(unquote(path[len("/v1/tasks/") :]))
                else:
                    self._error(405, f"Method {method} is not allowed here.")
            elif path.startswith("/files/") and method == "GET":
                self._route = "/files/{file}"
                self._handle_file(path[len("/files/") :])
            else:
                self._error(404, "Not found.")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            log.exception("simulator error on %s %s", method, self._route)
            self.close_connection = True
            if not self._answered:
                try:
                    self._error(500, "Internal simulator error.")
                except OSError:
                    pass

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                raise _BadRequest(400, "Invalid Content-Length header.") from None
            if n < 0:
                raise _BadRequest(400, "Invalid Content-Length header.")
            if n > MAX_BODY_BYTES:
                raise _BadRequest(413, "Request body too large.")
            return self.rfile.read(n) if n else b""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip() or b"x", 16)
                except ValueError:
                    raise _BadRequest(400, "Malformed chunked body.") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    raise _BadRequest(413, "Request body too large.")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)
        return b""

    def _send(
        self,
        status: int,
        payload: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        *,
        send_only: int | None = None,
        trickle: float = 0.0,
    ) -> None:
        self._answered = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self._record(str(status))
        if trickle > 0:
            self._trickle(payload, trickle)
            return
        self.wfile.write(payload if send_only is None else payload[:send_only])

    def _trickle(self, payload: bytes, every: float) -> None:
        """Write `payload` one byte per `every` seconds until done or the client hangs up."""
        sim = self.sim
        sim._bump("trickles_started")
        for i in range(len(payload)):
            try:
                if sim._stopping:
                    raise BrokenPipeError
                self.wfile.write(payload[i : i + 1])
            except OSError:
                sim._bump("trickles_cut")
                self.close_connection = True
                return
            time.sleep(every)
        sim._bump("trickles_finished")

    def _record(self, outcome: str) -> None:
        if not self._admin:
            self.sim._bump_in("requests", f"{self._method} {self._route} {outcome}")
        log.info("%s %s %s", self._method, self._route, outcome)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        self._send(status, raw, "application/json", headers)

    def _ok(self, data: Any, headers: dict[str, str] | None = None) -> None:
        self._json(200, {"code": 200, "message": "success", "data": data}, headers)

    def _error(
        self, status: int, message: str, error_code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        body: dict[str, Any] = {"code": status, "message": message, "data": None}
        if error_code:
            body["error_code"] = error_code
        self._json(status, body, headers)

    def _retry_after(self, faults: Faults) -> dict[str, str]:
        seconds = max(0, math.ceil(faults.retry_after))
        if faults.retry_after_as_date:
            return {"Retry-After": formatdate(time.time() + seconds, usegmt=True)}
        return {"Retry-After": str(seconds)}

    def _rate_faults(self, rate_429: float, rate_503: float) -> bool:
        """Answer an injected 429/503 if one is drawn; True when answered."""
        faults = self.sim.faults
        if self.sim._transport_fault(rate_429):
            self._error(429, "Too many requests; slow down.", headers=self._retry_after(faults))
            return True
        if self.sim._transport_fault(rate_503):
            self._error(503, "Service busy; try again later.", headers=self._retry_after(faults))
            return True
        return False

    def _owner(self) -> str | None:
        """The caller's partition, or None after answering 401."""
        header = self.headers.get("Authorization")
        if not header or not header.strip():
            self._error(401, "Missing API key: send 'Authorization: Bearer <key>'.")
            return None
        scheme, _, key = header.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or not self.sim._key_ok(key):
            self._error(401, "Invalid API key.")
            return None
        return self.sim._owner_id(key)

    # ------------------------------------------------------------------ routes

    def _handle_create(self, raw: bytes) -> None:
        sim = self.sim
        owner = self._owner()
        if owner is None:
            return
        if self._rate_faults(sim.faults.post_429_rate, sim.faults.post_503_rate):
            return
        if not _is_json(self.headers.get("Content-Type")):
            self._error(415, "Content-Type must be application/json.")
            return
        idem_key = self.headers.get("Idempotency-Key")
        if idem_key is not None and not 1 <= len(idem_key.encode("latin-1")) <= MAX_IDEMPOTENCY_KEY_BYTES:
            self._error(
                400, f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_BYTES} bytes.", "INVALID_REQUEST"
            )
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._error(400, "Request body must be JSON.", "INVALID_REQUEST")
            return
        if not isinstance(body, dict):
            self._error(400, "Request body must be a JSON object.", "INVALID_REQUEST")
            return

        if idem_key is not None:
            canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            fingerprint = hashlib.sha256(canonical.encode()).hexdigest()
            state, first_id = sim._idem_begin(owner, idem_key, fingerprint, time.time())
            if state == "mismatch":
                self._error(
                    422,
                    "Idempotency-Key was already used with a different request body.",
                    "IDEMPOTENCY_KEY_MISMATCH",
                )
                return
            if state == "processing":
                self._error(
                    409,
                    "A request with this Idempotency-Key is still being processed.",
                    "IDEMPOTENCY_KEY_PROCESSING",
                    headers={"Retry-After": "1"},
                )
                return
            if state == "replay":
                sim._bump("idempotent_replays")
                sim._bump("creates")
                self._ok({"taskId": first_id}, headers={"idempotent-replay": "true"})
                return

        task = None
        try:
            messages, values = _problems(body, sim.models)
            if messages:
                self._error(400, " ".join(messages), "INVALID_REQUEST")
                return
            delay = sim.faults.create_delay_s
            if delay > 0:
                time.sleep(delay)
            task = sim._create_task(
                owner,
                values["model"],
                values["prompt"],
                values["aspect_ratio"],
                values["resolution"],
                values["callback_url"],
                idem_key,
                input_urls=values["input_urls"],
                quality=values["quality"],
                background=values["background"],
            )
        finally:
            if task is None and idem_key is not None:
                sim._idem_release(owner, idem_key)

        sim._bump("creates")
        if sim._transport_fault(sim.faults.drop_create_answer_rate):
            sim._bump("create_answers_dropped")
            self._record("dropped")
            self._answered = True
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._ok({"taskId": task.task_id})

    def _handle_get(self, task_id: str) -> None:
        sim = self.sim
        owner = self._owner()
        if owner is None:
            return
        sim._bump_in("gets_by_task", task_id)
        if self._rate_faults(sim.faults.get_429_rate, sim.faults.get_503_rate):
            return
        task = sim._owned_task(owner, task_id)
        if task is None:
            self._error(404, "Task not found.")
            return
        if sim.faults.get_trickle_s > 0:
            body = {"code": 200, "message": "success", "data": sim._view(task, time.time())}
            self._send(200, json.dumps(body).encode(), "application/json", trickle=sim.faults.get_trickle_s)
            return
        self._ok(sim._view(task, time.time()))

    def _handle_list(self, query: str) -> None:
        sim = self.sim
        owner = self._owner()
        if owner is None:
            return
        qs = parse_qs(query)
        # Out-of-range or unreadable values are normalised, as HiAPI does, never refused.
        page = max(1, _query_int(qs, "page", 1))
        size = min(MAX_PAGE_SIZE, max(1, _query_int(qs, "size", DEFAULT_PAGE_SIZE)))
        if self._rate_faults(sim.faults.get_429_rate, sim.faults.get_503_rate):
            return
        tasks, total = sim._page(owner, page, size)
        now = time.time()
        self._ok({"page": page, "size": size, "total": total, "tasks": [sim._view(t, now) for t in tasks]})

    def _handle_file(self, name: str) -> None:
        sim = self.sim
        task = sim._task_by_token(name[:-4]) if name.endswith(".png") else None
        now = time.time()
        if task is None or task.error is not None or now < task.finished_at:
            self._error(404, "File not found.")
            return
        if now >= task.finished_at + sim.output_ttl:
            self._error(410, "This file URL has expired.")
            return
        faults = sim.faults
        if faults.download_slow_s > 0:
            time.sleep(faults.download_slow_s)
        if sim._transport_fault(faults.download_fail_rate):
            self._error(500, "Storage error.")
            return
        if sim._transport_fault(faults.download_non_image_rate):
            sim._bump("downloads")
            self._send(200, _NON_IMAGE_PAGE, "text/html; charset=utf-8")
            return
        png = sim._png(task)
        headers = {"Cache-Control": "private, max-age=3600"}
        sim._bump("downloads")
        if sim._transport_fault(faults.download_truncate_rate):
            self.close_connection = True
            self._send(200, png, "image/png", headers, send_only=len(png) // 2)
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(200, png, "image/png", headers, trickle=faults.download_trickle_s)

    def _handle_admin(self, method: str, path: str, raw: bytes) -> None:
        sim = self.sim
        if path == "/_sim/faults" and method == "GET":
            self._json(200, sim.faults.to_dict())
        elif path == "/_sim/faults" and method == "POST":
            try:
                changes = json.loads(raw or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("send a JSON object of fault settings")
                faults = sim.set_faults(**changes)
            except (ValueError, TypeError) as e:
                self._json(400, {"error": str(e)})
                return
            self._json(200, faults.to_dict())
        elif path == "/_sim/stats" and method == "GET":
            self._json(200, sim.stats())
        elif path == "/_sim/reset" and method == "POST":
            sim.reset_stats()
            self._json(200, {"ok": True})
        elif path == "/_sim/health" and method == "GET":
            self._json(200, {"ok": True, "tasks": sim.task_count()})
        else:
            self._json(404, {"error": "unknown admin endpoint"})
