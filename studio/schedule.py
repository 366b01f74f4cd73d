"""When to look at a task next: the adaptive polling schedule.

Pure functions, so the policy can be unit-tested and replayed on a virtual
clock. The idea: a task cannot finish much before its resolution's usual
duration, so we look sparsely early on, densely around the expected finish,
and progressively less often when it runs late. `archiving` means the result
is being stored, so the finish is imminent. Errors back off exponentially and
a server's Retry-After always wins.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from .models import TaskStatus

# Priors for GPT Image 2 from third-party timings (30 s to 3 min, longer at
# higher resolution); replaced by what we learn from finished tasks.
DEFAULT_EXPECTED = {"1K": 45.0, "2K": 70.0, "4K": 110.0}

FIRST_CHECK = 1.0  # catch instant failures (safety rejections) quickly
MIN_INTERVAL = 0.25
DENSE_INTERVAL = 0.5
MAX_INTERVAL = 15.0
ERROR_BASE = 2.0
ERROR_CAP = 60.0


@dataclass(frozen=True)
class Expectation:
    """What we expect of a task's duration, in seconds since submit."""

    early: float  # it is rarely done before this
    typical: float  # median
    late: float  # it is usually done by now

    @classmethod
    def learn(cls, durations: Sequence[float], prior: float) -> Expectation:
        """From recent durations (needs 3+), else from a prior median."""
        data = sorted(d for d in durations if d > 0)
        if len(data) >= 3:
            q = statistics.quantiles(data, n=10, method="inclusive")
            return cls(early=q[0] * 0.9, typical=statistics.median(data), late=q[-1] * 1.1)
        return cls(early=prior * 0.4, typical=prior, late=prior * 2.0)


def next_check_delay(
    elapsed: float,
    status: str,
    expected: Expectation,
    *,
    checks: int,
    errors: int = 0,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait before the next GET of a task.

    `elapsed`: seconds since our submit; `checks`: GETs made so far;
    `errors`: consecutive failed GETs; `retry_after`: the server's last word.
    """
    if errors:
        delay = min(ERROR_CAP, ERROR_BASE * 2 ** (errors - 1))
        return max(delay, retry_after or 0.0)
    if retry_after:
        return max(retry_after, MIN_INTERVAL)
    if checks == 0:
        return max(MIN_INTERVAL, min(FIRST_CHECK, expected.early) - elapsed)
    if status == TaskStatus.ARCHIVING:
        return DENSE_INTERVAL
    if elapsed < expected.early:
        # Sparse: aim at the start of the window, in at most a few hops.
        return max(DENSE_INTERVAL, min(MAX_INTERVAL, (expected.early - elapsed) * 0.6))
    if elapsed < expected.late:
        # Dense where finishes are likely; a little denser near the median.
        spread = max(1.0, expected.late - expected.early)
        closeness = abs(elapsed - expected.typical) / spread
        return min(2.0, DENSE_INTERVAL + 1.5 * closeness)
    # Running late: back off gently, never past MAX_INTERVAL.
    overdue = elapsed - expected.late
    return min(MAX_INTERVAL, 1.0 + overdue * 0.1)
