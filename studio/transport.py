"""How requests travel to HiAPI: the pooled HTTP client and the retry policy.

The contract enforced here (see the HiAPI contract notes, "Errors" and "Idempotency"):

* One pooled, thread-safe `httpx.Client` per API client, with explicit timeouts
  (connect 5 s, read 30 s, write 30 s, pool 10 s) and pool limits sized for a
  background tracker thread plus many page threads.
* Only what is safe is retried:

  - GET (status, list): network errors, 429, 502/503/504, an unreadable 5xx
    answer, and the documented transient codes TASK_TIMEOUT/STORAGE_UNAVAILABLE.
  - POST create: only when it carries an `Idempotency-Key` (the same key and body
    replay the first task instead of creating a second one). Then: network errors,
    429, 502/503/504, an unreadable 5xx answer, the transient codes, and 409
    IDEMPOTENCY_KEY_PROCESSING. A POST without a key is never retried: after a
    network failure its outcome is unknown and it may have billed a task.
  - Never: 400, 401, 402, 404, 422 (IDEMPOTENCY_KEY_MISMATCH), MODEL_UNAVAILABLE
    (a "later", not a "now") or anything else.

* Waits are `backoff_base * 2**n` capped at `backoff_cap`, or the server's
  `Retry-After` (seconds or an HTTP date, capped at `retry_after_cap`) when it is
  longer, plus a small random jitter so that parallel callers spread out.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from .errors import (
    HiAPIConnectionError,
    HiAPIError,
    IdempotencyKeyInFlightError,
    MalformedResponseError,
    RateLimitedError,
)

USER_AGENT = "hiapi-studio/0.1"

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=10.0)
#: Shared by the tracker thread and every page thread; keep-alive saves TLS handshakes.
DEFAULT_LIMITS = httpx.Limits(max_connections=32, max_keepalive_connections=16, keepalive_expiry=30.0)

#: Status codes a gateway or HiAPI uses for "busy, try again".
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
#: Business codes the contract marks as transient ("upstream trouble: yes").
RETRYABLE_ERROR_CODES = frozenset({"TASK_TIMEOUT", "STORAGE_UNAVAILABLE"})

_SECONDS_RE = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)\s*$")


def build_timeout(timeout: httpx.Timeout | float | None) -> httpx.Timeout:
    """`None` means the defaults above (never "no timeout"); a number applies to every phase."""
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, httpx.Timeout):
        return timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError("timeout must be a positive number of seconds or an httpx.Timeout")
    return httpx.Timeout(float(timeout))


def build_http_client(
    base_url: str,
    api_key: str | None,
    *,
    timeout: httpx.Timeout,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """The one pooled client. Redirects are not followed: HiAPI never redirects,
    and following one would carry the key somewhere unexpected."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"{USER_AGENT} httpx/{httpx.__version__}",
    }
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    kwargs: dict = {}
    if transport is not None:
        kwargs["transport"] = transport
    else:
        kwargs["limits"] = DEFAULT_LIMITS
    return httpx.Client(
        base_url=base_url,
        headers=headers,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        **kwargs,
    )


def parse_retry_after(value: str | None, *, cap: float = 60.0, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header, or None when absent or unusable.

    Accepts delta-seconds (`"3"`, `"1.5"`) and HTTP dates
    (`"Wed, 21 Oct 2015 07:28:00 GMT"`). A negative number or garbage gives None;
    a date in the past gives 0 (retry now). The result is capped at `cap`.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if _SECONDS_RE.match(value):
        seconds = float(value)
        if seconds < 0 or not math.isfinite(seconds):
            return None
        return min(seconds, cap)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), cap)


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are sent again, and how long to wait before each retry."""

    max_retries: int = 2
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    retry_after_cap: float = 60.0
    #: Extra random wait, as a fraction of the backoff (0.1 -> up to 10 % more).
    jitter: float = 0.1
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise ValueError("max_retries must be an integer >= 0")
        for name in ("backoff_base", "backoff_cap", "retry_after_cap", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number >= 0")

    def backoff(self, retry: int) -> float:
        """Base wait before retry number `retry` (0 for the first retry)."""
        return min(self.backoff_cap, self.backoff_base * (2 ** min(retry, 62)))

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to sleep: max(backoff, Retry-After) plus a little jitter."""
        backoff = self.backoff(retry)
        wait = backoff
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.retry_after_cap))
        return wait + self.rng.uniform(0.0, backoff * self.jitter)

    def should_retry(self, method: str, error: HiAPIError, *, attempt: int, keyed: bool) -> bool:
        """May `error`, raised by attempt number `attempt` (0-based), be sent again?

        `keyed` says whether the request carries an Idempotency-Key; it matters
        only for POST. See the module docstring for the full rules.
        """
        if attempt >= self.max_retries:
            return False
        method = method.upper()
        if method == "GET":
            return is_transient(error)
        if method == "POST" and keyed:
            return is_transient(error) or isinstance(error, IdempotencyKeyInFlightError)
        return False


def is_transient(error: HiAPIError) -> bool:
    """Failures that say "try the same thing again soon"."""
    if isinstance(error, HiAPIConnectionError | RateLimitedError):
        return True
    if isinstance(error, MalformedResponseError):
        # An HTML page from a gateway in front of HiAPI; a 2xx that is not JSON will not improve.
        return error.status is not None and (error.status >= 500 or error.status == 429)
    if error.error_code in RETRYABLE_ERROR_CODES:
        return True
    if error.error_code:  # e.g. MODEL_UNAVAILABLE, INVALID_REQUEST: not "now"
        return False
    return error.status in RETRYABLE_STATUSES
