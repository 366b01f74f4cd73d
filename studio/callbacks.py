"""HiAPI callbacks received by the studio itself: the receiver's rules, without a server.

HiAPI POSTs the task-detail object to the `callback.url` of a task when it
reaches a terminal state, at least once, possibly concurrently, and redelivers
on any non-2xx answer. This module decides what each delivery gets; `server.py`
only moves bytes in and out (`POST /hiapi/callback/{token}`). HiAPI's side of
the contract (signature, body cap, what a terminal task body is) is
`studio.hiapi.webhooks`, re-exported here under its old names.

The contract, in the order the checks run (each refusal is counted):
- the token in the path must match (constant-time), else 404 — the URL is the
  first secret, so a wrong one looks like no route at all;
- bodies over `MAX_BODY_BYTES` are refused with 413, by the route before they
  are read whole (`read_capped`);
- with a signing secret: `X-HiAPI-Timestamp` and `X-HiAPI-Signature` (lowercase
  hex HMAC-SHA256 of `timestamp + "." + raw body`) are checked over the raw
  bytes, constant-time, and timestamps more than `MAX_SKEW_S` from now are
  refused — all 401;
- the body must be a task object in a terminal state, else 400 with a short
  reason;
- the result is then stored (`CallbackSink.ingest_callback`) and only then
  answered 2xx: 200 stored or duplicate, 202 held (the callback outran the
  create answer; kept in the store and applied when the task id arrives), 200
  ignored (not a task of this studio, redelivery would not help).

Why hold rather than answer non-2xx for an unknown task id: HiAPI's redelivery
schedule is not published, so a refusal might be the last delivery; a held
callback is already durable in SQLite, and `Store.mark_created` applies it in
the same transaction that attaches the id. A held callback is only taken while
some submission is still waiting for its create answer.

Also here: the callback token (`HIAPI_CALLBACK_TOKEN`, else a random one made
once and kept in the data folder, mode 0600) and the callback URL
`<base>/hiapi/callback/<token>`. This module never imports streamlit.
"""

from __future__ import annotations

import fcntl
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from . import routes
from .hiapi.errors import redact
from .hiapi.models import Task
from .hiapi.webhooks import MAX_BODY_BYTES as MAX_BODY_BYTES
from .hiapi.webhooks import MAX_SKEW_S as MAX_SKEW_S
from .hiapi.webhooks import SIGNATURE_HEADER as SIGNATURE_HEADER
from .hiapi.webhooks import TIMESTAMP_HEADER as TIMESTAMP_HEADER
from .hiapi.webhooks import BodyTooLarge as BodyTooLarge
from .hiapi.webhooks import declared_too_large, parse_terminal_task, signature_problem
from .hiapi.webhooks import read_capped as read_capped
from .hiapi.webhooks import sign as sign
from .validation import is_loopback_host

log = logging.getLogger("studio.callbacks")

CALLBACK_PATH = routes.CALLBACK_PREFIX  # where the token starts in the callback route
TOKEN_FILE = "callback-token"

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


@dataclass(frozen=True)
class Verdict:
    """The answer to one delivery: HTTP status and a short reason (never a secret)."""

    status: int
    reason: str
    task_id: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class CallbackOutcome:
    """What the sink (`Store.record_callback`, via the tracker) did with a terminal task report.

    Defined here, beside the port that returns it, so the receiver needs no store.
    """

    STORED = "stored"  # the first report of this result: stored now
    DUPLICATE = "duplicate"  # already stored (or already held): nothing changed
    HELD = "held"  # the task id is not known yet; kept until the create answer brings it
    UNKNOWN = "unknown"  # not a task of this studio, and no create is waiting for its id


class CallbackSink(Protocol):
    """Where verified callbacks go (the tracker) and where refusals are counted."""

    def ingest_callback(self, task: Task) -> str:
        """Store a terminal task report; return a `CallbackOutcome`. Raises if it could not be stored."""
        ...

    def note_callback_rejected(self, status: int, reason: str) -> None: ...


# -- the receiver ---------------------------------------------------------------

_OUTCOME_ANSWER = {
    CallbackOutcome.STORED: (200, "stored"),
    CallbackOutcome.DUPLICATE: (200, "already stored"),
    CallbackOutcome.HELD: (202, "held until the create answer brings this task id"),
    CallbackOutcome.UNKNOWN: (200, "not a task of this studio; ignored"),
}


class CallbackReceiver:
    """Everything `POST /hiapi/callback/{token}` decides, testable without a server.

    Thread-safe as long as the sink is. `receive` never raises: a failure to
    store answers 503 so that HiAPI redelivers.
    """

    def __init__(
        self,
        token: str,
        sink: CallbackSink,
        *,
        secret: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._token = token.encode()
        self._secret = secret or None
        self.sink = sink
        self.clock = clock

    @property
    def signed(self) -> bool:
        """True when deliveries must carry a valid signature."""
        return self._secret is not None

    def token_ok(self, token: str) -> bool:
        return hmac.compare_digest(self._token, token.encode("utf-8", "replace"))

    def refuse(self, status: int, reason: str) -> Verdict:
        """Count and return a refusal; the reason may quote the body, so it is redacted first."""
        reason = redact(reason)
        try:
            self.sink.note_callback_rejected(status, reason)
        except Exception:  # counting must never turn a refusal into a 500
            log.exception("could not count a refused callback")
        return Verdict(status, reason)

    def precheck(self, token: str, content_length: str | None) -> Verdict | None:
        """The checks made before any of the body is read: token, then declared size."""
        if not self.token_ok(token):
            return self.refuse(404, "not found")
        if declared_too_large(content_length):
            return self.refuse(413, f"body over {MAX_BODY_BYTES} bytes")
        return None

    def receive(self, token: str, headers: Mapping[str, str], body: bytes) -> Verdict:
        """Judge one delivery and, if it is acceptable, store it before answering 2xx."""
        if not self.token_ok(token):
            return self.refuse(404, "not found")
        if len(body) > MAX_BODY_BYTES:
            return self.refuse(413, f"body over {MAX_BODY_BYTES} bytes")
        if self._secret is not None:
            why = signature_problem(self._secret, headers, body, now=self.clock())
            if why:
                return self.refuse(401, why)
        parsed = parse_terminal_task(body)
        if isinstance(parsed, str):
            return self.refuse(400, parsed)
        try:
            outcome = self.sink.ingest_callback(parsed)
        except Exception as exc:  # not stored, so not acknowledged: HiAPI redelivers
            log.warning("callback for %s not stored: %r", parsed.task_id, exc)
            return Verdict(503, "could not store the result; deliver again", parsed.task_id)
        status, reason = _OUTCOME_ANSWER.get(outcome, (200, outcome))
        return Verdict(status, reason, parsed.task_id)


# -- token and URL --------------------------------------------------------------


def token_problem(token: str) -> str | None:
    """Why a configured HIAPI_CALLBACK_TOKEN cannot be used, or None."""
    if _TOKEN_RE.match(token):
        return None
    return (
        "HIAPI_CALLBACK_TOKEN must be 16-128 characters of letters, digits, '-' or '_' "
        "(it is part of the callback URL and its only secret without a signing key); "
        "leave it unset to have one generated."
    )


def load_or_create_token(data_dir: Path, configured: str | None = None) -> str:
    """The callback token: `configured` when given, else one kept in `data_dir`.

    A generated token is written once (mode 0600, under a lock file so that
    concurrent starters agree on one), so the callback URL stays the same
    across restarts; an unreadable or malformed file is replaced. Raises
    ValueError for an unusable configured token.
    """
    if configured:
        why = token_problem(configured)
        if why:
            raise ValueError(why)
        return configured
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / TOKEN_FILE
    with open(data_dir / f".{TOKEN_FILE}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        existing = _read_token(path)
        if existing:
            return existing
        token = secrets.token_urlsafe(32)
        tmp = data_dir / f".{TOKEN_FILE}.tmp"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, token.encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return token


def _read_token(path: Path) -> str | None:
    try:
        value = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not _TOKEN_RE.match(value):
        log.warning("ignoring an unusable callback token in %s; a new one is made", path)
        return None
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass
    return value


def base_url_problem(base: str, *, allow_loopback_http: bool = False) -> str | None:
    """Why HIAPI_CALLBACK_URL cannot be used as the callback base, or None."""
    try:
        parts = urlsplit(base)
        host = parts.hostname
    except ValueError:
        host, parts = None, None
    if parts is None or not host:
        return f"HIAPI_CALLBACK_URL {base!r} is not a URL; set it to the public base, e.g. https://studio.example.com."
    if parts.query or parts.fragment:
        return "HIAPI_CALLBACK_URL must not have a query or fragment; set only the public base URL."
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and allow_loopback_http and is_loopback_host(host):
        return None
    if parts.scheme == "http" and is_loopback_host(host):
        return (
            "HIAPI_CALLBACK_URL may use plain http only on loopback with the built-in simulator; "
            "HiAPI needs a public https:// URL."
        )
    return "HIAPI_CALLBACK_URL must start with https://; HiAPI refuses plain http callbacks."


def callback_url(base: str, token: str) -> str:
    """`<base>/hiapi/callback/<token>`; a path in `base` (a proxy prefix) is kept."""
    return routes.callback(base, token)


def masked_url(base: str) -> str:
    """The callback URL as pages show it: the token replaced by dots."""
    return base.rstrip("/") + CALLBACK_PATH + "\u2022" * 8
