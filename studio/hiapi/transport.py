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

And how every connection this studio opens is bounded and checked
(`GuardedBackend`, used by the HiAPI client and the image keeper):

* Deadlines: inside `with deadline(seconds):` every connect, write and read on
  the calling thread is given at most the time left, and fails with a timeout
  once none is left. A per-read timeout alone never ends an answer that
  trickles one byte every few seconds; the deadline does.
* Targets (optional `AddressPolicy`): the host is resolved here, every address
  it resolves to is checked, and the connection goes to a checked address
  itself, so a second DNS answer (a rebind) cannot swap in another one. TLS
  still verifies the certificate against the host name.
"""

from __future__ import annotations

import ipaddress
import math
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
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
#: Deadline for one whole HiAPI answer (one attempt: connect, send, headers and
#: body). Answers are a few kilobytes and normally take well under a second; a
#: server that trickles bytes must not hold a tracker worker longer than this
#: (a trickled status answer once held one for 358 s). Each retry of the
#: `RetryPolicy` gets a fresh deadline, so a call lasts at most
#: (retries + 1) x this plus the waits between attempts.
ANSWER_DEADLINE_S = 30.0
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
    and following one would carry the key somewhere unexpected.

    Without a `transport` the client connects through `GuardedBackend`, so
    `deadline()` bounds every answer (no address policy: the base URL is the
    operator's own choice, the local simulator included)."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"{USER_AGENT} httpx/{httpx.__version__}",
    }
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return httpx.Client(
        base_url=base_url,
        headers=headers,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        transport=transport if transport is not None else guarded_transport(GuardedBackend()),
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


# -- deadlines and checked connections ----------------------------------------------

_local = threading.local()


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound the network I/O of this thread inside the block to `seconds` in all.

    Applies to connections made through `GuardedBackend` (the HiAPI client's
    and the image keeper's): each connect, write and read gets at most the time
    left, then fails with an httpcore/httpx timeout. Nested blocks keep the
    earlier deadline. A thread's deadline follows it onto pooled connections,
    since every read happens on the thread that asked for it.
    """
    previous = getattr(_local, "at", None), getattr(_local, "total", None)
    at = time.monotonic() + seconds
    if previous[0] is None or at < previous[0]:
        _local.at, _local.total = at, seconds
    try:
        yield
    finally:
        _local.at, _local.total = previous


def time_left() -> float | None:
    """Seconds left before this thread's deadline, or None outside `deadline()`."""
    at = getattr(_local, "at", None)
    return None if at is None else at - time.monotonic()


def _deadline_message() -> str:
    return f"no complete answer within the {getattr(_local, 'total', 0) or 0:g} s deadline"


def _bounded(timeout: float | None, timeout_error: type[Exception]) -> float | None:
    """`timeout` shortened to the time left; raises `timeout_error` when none is left."""
    left = time_left()
    if left is None:
        return timeout
    if left <= 0:
        raise timeout_error(_deadline_message())
    return left if timeout is None else min(timeout, left)


@contextmanager
def _explained(timeout_error: type[Exception]) -> Iterator[None]:
    """A timeout that came from the deadline says so (the socket only says "timed out")."""
    try:
        yield
    except timeout_error:
        left = time_left()
        if left is not None and left <= 0:
            raise timeout_error(_deadline_message()) from None
        raise


class RefusedAddress(Exception):
    """A connection refused by an `AddressPolicy`; `reason` completes "the URL ..."."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (IP literals resolve to themselves)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo client), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a connection may go to: public internet addresses only.

    Private, loopback, link-local, multicast, reserved, unspecified and shared
    (CGNAT) addresses are refused, also when carried inside an IPv6 address.
    `allow_loopback` lets loopback through (the local simulator serves its
    images there); nothing else private is ever allowed. `resolve` is the name
    lookup (replaceable in tests); every address it returns must pass.
    """

    allow_loopback: bool = False
    resolve: Callable[[str, int], list[str]] = resolve_host

    def refusal(self, address: str) -> str | None:
        """Why `address` is refused, or None when it may be used."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return "points to an address that cannot be checked"
        ip = _embedded_ipv4(ip) or ip
        if ip.is_loopback:
            return None if self.allow_loopback else "points to a private address"
        if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
            return "points to a private address"
        return None

    def checked(self, host: str, port: int) -> list[str]:
        """The addresses of `host`, each one checked; RefusedAddress if any fails.

        A name that does not resolve raises httpcore.ConnectError (a network
        failure, worth retrying), not a refusal.
        """
        try:
            addresses = self.resolve(host.strip("[]"), port)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve the host ({type(exc).__name__})") from None
        if not addresses:
            raise httpcore.ConnectError("the host resolves to no address")
        for address in addresses:
            reason = self.refusal(address)
            if reason:
                raise RefusedAddress(reason)
        return addresses


class _GuardedStream(httpcore.NetworkStream):
    """A connection whose every operation is bounded by the thread's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _explained(httpcore.ReadTimeout):
            return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with _explained(httpcore.WriteTimeout):
            self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        with _explained(httpcore.ConnectTimeout):
            bounded = _bounded(timeout, httpcore.ConnectTimeout)
            return _GuardedStream(self._inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's socket backend with deadlines and, given a policy, checked targets.

    With an `AddressPolicy` the host is resolved once, every address is
    checked, and the socket connects to those checked addresses (in order)
    rather than to the name: DNS cannot answer differently between check and
    connect. The TLS handshake still names the host, so certificates are
    verified as usual.
    """

    def __init__(self, policy: AddressPolicy | None = None) -> None:
        self.policy = policy
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = [host] if self.policy is None else self.policy.checked(host, port)
        last: Exception | None = None
        for address in addresses:
            try:
                with _explained(httpcore.ConnectTimeout):
                    bounded = _bounded(timeout, httpcore.ConnectTimeout)
                    stream = self._inner.connect_tcp(address, port, bounded, local_address, socket_options)
                return _GuardedStream(stream)
            except httpcore.ConnectError as exc:  # try the host's next address
                last = exc
        assert last is not None
        raise last

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not used here")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def guarded_transport(
    backend: GuardedBackend, *, limits: httpx.Limits = DEFAULT_LIMITS
) -> httpx.HTTPTransport:
    """An httpx transport whose connections are made by `backend`.

    httpx has no parameter for a network backend, so the transport's
    connection pool is replaced by one built with the same settings and ours.
    """
    transport = httpx.HTTPTransport(limits=limits, trust_env=False)
    transport._pool.close()
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=backend,
    )
    return transport
