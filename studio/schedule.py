"""When to look at a task next: the adaptive polling schedule.

Pure functions, so the policy can be unit-tested and replayed on a virtual
clock (benchmarks/detection.py). The policy:

- a first check soon after submit (instant failures, safety rejections);
- until a few tasks at a resolution have finished, gently growing intervals
  (a prior may be far off);
- then, from the durations of recently finished tasks at the same resolution,
  the next look is at the point where a quarter of the tasks still running
  at this age would have finished (the conditional quantile). Early on, when
  nothing can be done yet, that is one long hop; near the usual finish the
  hops are short. Inside the window of likely finishes no gap exceeds a cap,
  so a finished image never waits long;
- `archiving` means the result is being stored: the finish is a second or
  two away, so look densely;
- running later than anything seen: back off gently, never drop the task;
- errors back off exponentially; a server's Retry-After always wins.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .models import TaskStatus

# Priors for GPT Image 2 (third-party timings: 30 s to 3 min, longer at higher
# resolution), used until enough tasks have finished to learn from.
DEFAULT_EXPECTED = {"1K": 45.0, "2K": 70.0, "4K": 110.0}

FIRST_CHECK = 1.0
MIN_INTERVAL = 0.25
WINDOW_CAP = 3.0  # longest gap once finishes are plausible
ARCHIVING_INTERVAL = 0.5
MAX_INTERVAL = 15.0
CATCH_SHARE = 0.25  # share of still-running tasks expected to finish before the next look
ERROR_BASE = 2.0
ERROR_CAP = 60.0
MIN_HISTORY = 5

# Standard normal quantiles used to draw a prior history around a median.
_PRIOR_Z = (-1.5, -1.0, -0.7, -0.4, -0.2, 0.0, 0.2, 0.4, 0.7, 1.0, 1.5)


@dataclass(frozen=True)
class DurationHistory:
    """Sorted seconds from submit to finish of recent tasks at one resolution."""

    seconds: tuple[float, ...]
    learned: bool = True  # False: drawn from a prior, nothing finished yet to learn from

    @classmethod
    def learn(cls, durations: Sequence[float], prior: float, spread: float = 0.3) -> DurationHistory:
        """From recent durations, or a lognormal spread around a prior median."""
        data = sorted(float(d) for d in durations if d > 0)
        if len(data) < MIN_HISTORY:
            return cls(tuple(sorted(prior * math.exp(spread * z) for z in _PRIOR_Z)), learned=False)
        return cls(tuple(data))

    @property
    def typical(self) -> float:
        s = self.seconds
        return s[len(s) // 2]

    @property
    def late(self) -> float:
        """By this age nearly every task has finished (for reconciliation timers)."""
        s = self.seconds
        return s[min(len(s) - 1, int(0.9 * len(s)))] * 1.1

    def window_start(self) -> float:
        """The age before which almost no task has finished."""
        s = self.seconds
        return s[int(0.03 * len(s))]


def next_check_delay(
    elapsed: float,
    status: str,
    history: DurationHistory,
    *,
    checks: int,
    errors: int = 0,
    retry_after: float | None = None,
    scale: float = 1.0,
) -> float:
    """Seconds to wait before the next GET of a task.

    `elapsed`: seconds since our submit; `checks`: GETs made so far;
    `errors`: consecutive failed GETs; `retry_after`: the server's last word;
    `scale`: >1 compresses the fixed intervals (only for time-compressed
    benchmark runs against a simulator; 1 in production).
    """
    if errors:
        delay = min(ERROR_CAP, ERROR_BASE * 2 ** (errors - 1)) / scale
        return max(delay, retry_after or 0.0)
    if retry_after:
        return max(retry_after, MIN_INTERVAL / scale)
    if checks == 0:
        return max(MIN_INTERVAL / scale, FIRST_CHECK / scale - elapsed)
    if status == TaskStatus.ARCHIVING:
        return ARCHIVING_INTERVAL / scale
    if not history.learned:
        # A prior may be far off (another load, a faster model): no long hops
        # until a few tasks have finished; look at gently growing intervals.
        return min(MAX_INTERVAL, max(MIN_INTERVAL, 1.0 + 0.25 * elapsed)) / scale
    seen = history.seconds
    # Short tasks (a fast model, the simulator) get proportionally short gaps.
    cap = max(MIN_INTERVAL / scale, min(WINDOW_CAP / scale, 0.08 * history.typical))
    still_running = seen[bisect.bisect_right(seen, elapsed) :]
    if not still_running:  # later than anything seen
        return min(MAX_INTERVAL / scale, min(1.0 / scale, cap) + 0.2 * (elapsed - seen[-1]))
    target = still_running[min(len(still_running) - 1, int(CATCH_SHARE * len(still_running)))]
    delay = max(MIN_INTERVAL / scale, target - elapsed)
    start = history.window_start()
    if elapsed + delay > start:  # inside the window: never a long gap
        delay = min(delay, max(cap, start - elapsed))
    # Before the window one hop may be long: the window start is already a low quantile.
    return delay if elapsed < start else min(delay, MAX_INTERVAL / scale)


def replay(
    policy: Callable[[float, str, int], float], phases: tuple[float, float, float]
) -> tuple[float, int]:
    """Follow one task on a virtual clock: (detection delay, GETs) for a policy
    `(elapsed, status, checks) -> delay` and a task spending (queued, handling,
    archiving) seconds in each status. Used by tests and benchmarks alike."""
    q, h, a = phases
    finish = q + h + a
    t, checks = 0.0, 0
    while True:
        status = TaskStatus.QUEUED if t < q else TaskStatus.HANDLING if t < q + h else TaskStatus.ARCHIVING
        t += policy(t, status, checks)
        checks += 1
        if t >= finish:
            return t - finish, checks
