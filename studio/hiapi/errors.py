"""Errors that read like HiAPI's documented ones, and the redaction of secrets.

Mapped from the HTTP status and the business code: the envelope's `error_code`
or, in HiAPI's other shape, `error.code` (see `parse_error_shape`). Messages never
carry the API key: they are built from the server's message and our own text,
and `redact` scrubs anything that looks like a key before it is stored.

A server may echo the key back anywhere (an error message, an extra field, a
status). `remember_secret` registers the configured key (and the webhook
signing secret) once per process; from then on every `redact` removes those
exact strings too, whatever they look like, and so does every log record
(a log-record factory scrubs the formatted message and traceback).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

_KEY_RE = re.compile(r"sk-[A-Za-z0-9_\-]{4,}")
#: Shorter strings are not registered: replacing them would mangle ordinary text.
MIN_SECRET_CHARS = 8
REDACTED = "[redacted]"

_secrets: tuple[str, ...] = ()  # longest first, so a key containing another is removed whole
_secrets_lock = threading.Lock()
_logs_guarded = False


def remember_secret(secret: str | None) -> None:
    """Have every later `redact` (and every log record) remove this exact string."""
    global _secrets
    if not isinstance(secret, str) or len(secret.strip()) < MIN_SECRET_CHARS:
        return
    with _secrets_lock:
        if secret not in _secrets:
            _secrets = tuple(sorted({*_secrets, secret, secret.strip()}, key=len, reverse=True))
        _guard_logs()


def redact(text: str, *secrets: str | None) -> str:
    """Remove API keys (the configured ones and any given secret) from text meant for people or logs."""
    if not isinstance(text, str):
        text = str(text)
    for s in (*secrets, *_secrets):
        if s and s in text:
            text = text.replace(s, REDACTED)
    return _KEY_RE.sub("sk-[redacted]", text)


def redact_deep(value: Any) -> Any:
    """`value` (parsed JSON) with every string in it, keys included, redacted.

    Raises RecursionError for absurdly deep values; callers fall back to what they parsed.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k) if isinstance(k, str) else k: redact_deep(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_deep(v) for v in value]
    return value


def _guard_logs() -> None:
    """Install (once) a log-record factory that redacts every record's text."""
    global _logs_guarded
    if _logs_guarded:
        return
    _logs_guarded = True
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is logging's problem, not ours
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)


class HiAPIError(Exception):
    """Base of every error the client raises."""

    status: int | None = None
    #: Safe to send again as it is (possibly after waiting)?
    retryable: bool = False
    #: HiAPI's own words, when our message replaces them (402, 415, an unknown model).
    server_message: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        retry_after: float | None = None,
        payload: Any = None,
    ) -> None:
        message = redact(message)
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.error_code = error_code
        self.retry_after = retry_after
        self.payload = payload

    @property
    def code(self) -> str:
        return self.error_code or (f"HTTP_{self.status}" if self.status else type(self).__name__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, error_code={self.error_code!r}, message={self.message!r})"


class InvalidRequestError(HiAPIError):
    """400 INVALID_REQUEST: fix the request; never resend it as is."""

    status: int | None = 400


class RequestValidationError(InvalidRequestError):
    """Caught locally before sending; `problems` name each field and what to do."""

    def __init__(self, problems: list) -> None:
        self.problems = list(problems)
        super().__init__(" ".join(p.message for p in self.problems), error_code="INVALID_REQUEST")
        self.status = None


class AuthenticationError(HiAPIError):
    """401: the API key is missing or wrong."""

    status = 401


class InsufficientBalanceError(HiAPIError):
    """402: the balance is too low. The task was not created and not charged; never retried."""

    status = 402


#: What a person reads for a 402 (HiAPI's own words are kept in `server_message`).
BALANCE_MESSAGE = (
    "Your HiAPI balance is too low: the task was not created and not charged; "
    "top up your HiAPI balance, then generate again."
)


class NotFoundError(HiAPIError):
    """404: unknown task, or a task that belongs to another key."""

    status = 404


class UnsupportedMediaTypeError(InvalidRequestError):
    """415: HiAPI did not take the body as JSON. A bug in the studio; never retried."""

    status = 415


#: What a person reads for a 415.
MEDIA_TYPE_MESSAGE = (
    "HiAPI refused the request's Content-Type (HTTP 415): this is a bug in the studio, "
    "not in your prompt; please report it."
)


class IdempotencyKeyInFlightError(HiAPIError):
    """409 IDEMPOTENCY_KEY_PROCESSING: the first request with this key is still running."""

    status = 409
    retryable = True


class IdempotencyKeyMismatchError(HiAPIError):
    """422 IDEMPOTENCY_KEY_MISMATCH: a key reused with another body. A bug; never retried."""

    status = 422


class RateLimitedError(HiAPIError):
    """429: too many requests; wait `retry_after` seconds and reduce concurrency."""

    status = 429
    retryable = True


class UnavailableError(HiAPIError):
    """503, MODEL_UNAVAILABLE, TASK_TIMEOUT, STORAGE_UNAVAILABLE: try again later."""

    status = 503
    retryable = True


class HiAPIConnectionError(HiAPIError):
    """The network failed (connect, read, timeout). For a POST without an
    idempotency key the outcome is unknown: a task may have been created."""

    retryable = True


class MalformedResponseError(HiAPIError):
    """The server answered something that is not HiAPI's documented envelope."""

    retryable = True


_BY_CODE: dict[str, type[HiAPIError]] = {
    "INVALID_REQUEST": InvalidRequestError,
    "IDEMPOTENCY_KEY_PROCESSING": IdempotencyKeyInFlightError,
    "IDEMPOTENCY_KEY_MISMATCH": IdempotencyKeyMismatchError,
    "MODEL_UNAVAILABLE": UnavailableError,
    "TASK_TIMEOUT": UnavailableError,
    "STORAGE_UNAVAILABLE": UnavailableError,
    "RATE_LIMIT_EXCEEDED": RateLimitedError,  # the second error shape's spelling
}
_BY_STATUS: dict[int, type[HiAPIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: InsufficientBalanceError,
    404: NotFoundError,
    415: UnsupportedMediaTypeError,
    409: IdempotencyKeyInFlightError,
    422: IdempotencyKeyMismatchError,
    429: RateLimitedError,
    502: UnavailableError,
    503: UnavailableError,
    504: UnavailableError,
}


def error_for(
    status: int,
    error_code: str | None,
    message: str,
    *,
    retry_after: float | None = None,
    payload: Any = None,
) -> HiAPIError:
    """Build the error class HiAPI's docs describe for this status and code.

    402 and 415 get our own sentence (what happened and what to do); HiAPI's
    message is kept in `server_message` on every error.
    """
    cls = _BY_CODE.get(error_code or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = UnavailableError if status >= 500 else HiAPIError
    text = message
    if cls is InsufficientBalanceError:
        text = BALANCE_MESSAGE
    elif cls is UnsupportedMediaTypeError:
        text = MEDIA_TYPE_MESSAGE
    error = cls(text, status=status, error_code=error_code, retry_after=retry_after, payload=payload)
    error.server_message = redact(message)
    return error


_WORD_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


def parse_error_shape(body: Any) -> tuple[str | None, str, str | None] | None:
    """Read HiAPI's second error shape: `(error_code, message, request_id)`, or None.

    `{"error": {"type": "hiapi_error", "code": "rate_limit_exceeded", "request_id": "req_..."}}`.
    The code is upper-cased and kept as `error_code` only when it is one of the
    documented business codes (so `rate_limit_exceeded` reads as a 429's
    RATE_LIMIT_EXCEEDED); any other code is named in the message instead, and the
    HTTP status decides. The request id, when sane, ends the message, for support.
    """
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None
    err = body["error"]
    raw_code = err.get("code")
    code = raw_code.strip() if isinstance(raw_code, str) and _WORD_RE.match(raw_code.strip()) else None
    error_code = code.upper() if code and code.upper() in _BY_CODE else None
    message = err.get("message")
    message = " ".join(message.split()) if isinstance(message, str) else ""
    if not message:
        kind = err.get("type")
        kind = kind if isinstance(kind, str) and _WORD_RE.match(kind) else "error"
        message = f"HiAPI answered {kind}" + (f" {code}" if code else "")
    request_id = err.get("request_id")
    request_id = request_id if isinstance(request_id, str) and _WORD_RE.match(request_id) else None
    if request_id:
        message = f"{message} (request {request_id})"
    return error_code, message, request_id
