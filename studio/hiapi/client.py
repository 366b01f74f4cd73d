"""A small, typed client for HiAPI's task API (GPT Image 2).

The contract it enforces (HiAPI's documented task API):

* `POST /v1/tasks`, `GET /v1/tasks/{taskId}`, `GET /v1/tasks?page=&size=` under
  the base URL, every request with `Authorization: Bearer <key>` and JSON headers.
* Every answer is the envelope `{code, message, data[, error_code]}`. `data` is
  returned on a 2xx status with a 2xx `code`; anything else raises the error
  class `studio.hiapi.errors.error_for` picks. HiAPI's other error shape,
  `{"error": {"type", "code", "request_id"}}`, is read as an error too (its
  request id ends the message). 402 (balance: nothing created, nothing charged)
  and 415 (a bug) are never retried. An answer that is not the envelope
  (HTML, empty, not JSON, too large) raises `MalformedResponseError`; a network
  failure raises `HiAPIConnectionError`. Nothing else escapes: every failure is
  a `HiAPIError`.
* A request is validated locally (`studio.validation.validate_request`) and an
  invalid one is never sent.
* Every create carries an `Idempotency-Key` (at most 255 bytes), so a create that
  died on the network can be sent again without creating a second task. Retries
  follow `studio.hiapi.transport.RetryPolicy`.
* The API key never appears in an exception, a repr, or a log record.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from ..validation import Problem, is_loopback_host
from .errors import (
    AuthenticationError,
    HiAPIConnectionError,
    HiAPIError,
    InvalidRequestError,
    MalformedResponseError,
    RequestValidationError,
    error_for,
    parse_error_shape,
    redact,
    remember_secret,
)
from .models import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    Created,
    Task,
    TaskPage,
    TaskRequest,
    unknown_model_message,
)
from .transport import (
    ANSWER_DEADLINE_S,
    RetryPolicy,
    build_http_client,
    build_timeout,
    deadline,
    parse_retry_after,
    time_left,
)

__all__ = ["HiAPIClient", "InvalidArgumentError", "MAX_IDEMPOTENCY_KEY_BYTES"]

log = logging.getLogger("studio.client")

TASKS_PATH = "/v1/tasks"
MAX_IDEMPOTENCY_KEY_BYTES = 255
MAX_TASK_ID_CHARS = 256
#: Larger answers are refused unread: a page of tasks is a few kilobytes.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
#: How much of an unexpected body an error message quotes.
SNIPPET_CHARS = 100
MAX_MESSAGE_CHARS = 500

_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")
_PRINTABLE_ASCII_RE = re.compile(r"^[\x21-\x7e]+$")


class InvalidArgumentError(RequestValidationError, ValueError):
    """A bad argument caught before anything is sent (task id, idempotency key, page).

    Both a `HiAPIError` (so callers that catch those see it) and a `ValueError`.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__([Problem(field, message)])


class HiAPIClient:
    """Creates GPT Image 2 tasks on HiAPI and reads them back.

    One instance holds one pooled, thread-safe `httpx.Client`; share it between
    threads and close it once (or use it as a context manager).

    Model: the configured `model` (default `gpt-image-2/text-to-image`; `HIAPI_MODEL`
    overrides it) is used when the request carries the default model
    (`models.DEFAULT_MODEL`) or none; a request that names another model keeps it.
    The ID sent follows the request (`models.model_for`): a request with reference
    images goes to `gpt-image-2/image-to-image`; a name HiAPI does not document is
    sent unchanged, and when HiAPI refuses it the error says so in one sentence.

    Timeouts: `None` means connect 5 s, read 30 s, write 30 s, pool 10 s; a number
    applies to every phase. On top of those, each attempt must be answered in
    full within `answer_deadline` seconds (`transport.ANSWER_DEADLINE_S`), or it
    fails as a timeout (HiAPIConnectionError), like a network failure.

    Callbacks: plain `http://` callback URLs are accepted only when `base_url`
    itself is a loopback address (the local simulator); HiAPI requires https.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://api.hiapi.ai",
        model: str = DEFAULT_MODEL,
        timeout: httpx.Timeout | float | None = None,
        max_retries: int = 2,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        retry_after_cap: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        answer_deadline: float = ANSWER_DEADLINE_S,
    ) -> None:
        if not isinstance(api_key, str):
            raise TypeError("api_key must be a string")
        api_key = api_key.strip()
        # A missing or unusable key is not fatal here (the app must still start and
        # show its settings); every request then fails locally with AuthenticationError.
        self._key_problem: str | None = None
        if not api_key:
            self._key_problem = "No HiAPI API key is set; add one (keys start with 'sk-')."
        elif not _PRINTABLE_ASCII_RE.match(api_key):
            # Never echo the key itself, not even in this message.
            self._key_problem = "The HiAPI API key contains spaces or characters a header cannot carry."
        self.base_url = _normalise_base_url(base_url)
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be a non-empty string, e.g. {DEFAULT_MODEL!r}.")
        self.model = model.strip()
        self._api_key = api_key
        remember_secret(api_key)  # a server echoing it back is redacted everywhere, logs included
        self._policy = RetryPolicy(
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            retry_after_cap=retry_after_cap,
        )
        self._sleep = sleep
        if isinstance(answer_deadline, bool) or not isinstance(answer_deadline, int | float):
            raise ValueError("answer_deadline must be a positive number of seconds")
        if not answer_deadline > 0:
            raise ValueError("answer_deadline must be a positive number of seconds")
        self.answer_deadline = float(answer_deadline)
        self._allow_loopback_http = is_loopback_host(urlsplit(self.base_url).hostname)
        self._http = build_http_client(
            self.base_url,
            None if self._key_problem else api_key,
            timeout=build_timeout(timeout),
            transport=transport,
        )
        self._closed = False

    # -- public API -----------------------------------------------------------------

    @staticmethod
    def new_idempotency_key() -> str:
        """A fresh key for one logical create: `studio-` and 32 hex digits."""
        return "studio-" + uuid.uuid4().hex

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._policy

    @property
    def is_local(self) -> bool:
        """True when HiAPI here is on this machine (the simulator): its output
        URLs are loopback ones, which may then be downloaded."""
        return self._allow_loopback_http

    def create_task(self, request: TaskRequest, *, idempotency_key: str | None = None) -> Created:
        """Validate `request` locally, then `POST /v1/tasks` with an Idempotency-Key.

        The key is generated here when none is given, before anything is sent; pass
        the key you stored to resend the same create safely. Raises
        `RequestValidationError` (nothing sent) for an invalid request or key.
        Every error raised carries `.idempotency_key`, so a create whose outcome
        is unknown (a network failure) can be sent again with the same key.
        """
        if not isinstance(request, TaskRequest):
            raise TypeError("create_task expects a TaskRequest")
        problems = request.problems(allow_loopback_http=self._allow_loopback_http)
        if problems:
            raise RequestValidationError(problems)
        key = self.new_idempotency_key() if idempotency_key is None else idempotency_key
        _check_idempotency_key(key)
        if not request.model or request.model == DEFAULT_MODEL:
            request = dataclasses.replace(request, model=self.model)
        body = json.dumps(request.to_body(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        try:
            data, response = self._request("POST", TASKS_PATH, content=body, idempotency_key=key)
            task_id = data.get("taskId") if isinstance(data, dict) else None
            if not isinstance(task_id, str) or not task_id:
                raise MalformedResponseError(
                    "HiAPI accepted the task but its answer has no taskId.",
                    status=response.status_code,
                )
        except InvalidRequestError as exc:
            exc.idempotency_key = key  # type: ignore[attr-defined]
            refused = _unknown_model_refusal(exc, request.wire_model)
            if refused is None:
                raise
            raise refused from exc
        except HiAPIError as exc:
            exc.idempotency_key = key  # type: ignore[attr-defined]
            raise
        replayed = response.headers.get("idempotent-replay", "").strip().lower() == "true"
        return Created(task_id=task_id, replayed=replayed, idempotency_key=key)

    def get_task(self, task_id: str) -> Task:
        """`GET /v1/tasks/{taskId}`: the task's status, outputs or failure.

        An unknown task, or one that belongs to another key, raises `NotFoundError`.
        A failed task is not an exception: it is a `Task` with status `fail` and `.error`.
        """
        _check_task_id(task_id)
        data, response = self._request("GET", f"{TASKS_PATH}/{quote(task_id, safe='')}")
        task = _parse_or_malformed(Task.parse, data, status=response.status_code)
        if task is None:
            raise MalformedResponseError("HiAPI's task answer has no taskId.", status=response.status_code)
        return task

    def list_tasks(self, *, page: int = 1, size: int = 20) -> TaskPage:
        """`GET /v1/tasks?page=&size=`: one page of this key's tasks, newest first.

        The page's shape is not documented; `TaskPage.parse` accepts the usual ones.
        """
        for name, value in (("page", page), ("size", size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(name, f"{name} must be an integer >= 1 (got {value!r}).")
        data, response = self._request("GET", TASKS_PATH, params={"page": page, "size": size})
        return _parse_or_malformed(
            lambda d: TaskPage.parse(d, page=page, size=size), data, status=response.status_code
        )

    def close(self) -> None:
        """Close the connection pool. Idempotent."""
        self._closed = True
        self._http.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> HiAPIClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        key = "missing" if self._key_problem else "set"
        return f"HiAPIClient(base_url={self.base_url!r}, model={self.model!r}, key={key})"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # pickling would copy the key around
        raise TypeError("HiAPIClient cannot be pickled")

    # -- the wire -------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Any, httpx.Response]:
        """Send with retries; return the envelope's `data` and the final response."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        keyed = idempotency_key is not None
        attempt = 0
        while True:
            try:
                return self._send_once(method, path, params, content, headers, attempt)
            except HiAPIError as exc:
                if not self._policy.should_retry(method, exc, attempt=attempt, keyed=keyed):
                    raise
                delay = self._policy.delay(attempt, exc.retry_after)
                log.debug(
                    "%s %s: %s on attempt %d, retrying in %.2fs",
                    method,
                    path,
                    exc.code,
                    attempt + 1,
                    delay,
                )
            self._sleep(delay)
            attempt += 1

    def _send_once(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        content: bytes | None,
        headers: dict[str, str] | None,
        attempt: int,
    ) -> tuple[Any, httpx.Response]:
        if self._closed:
            raise HiAPIError("The HiAPI client is closed; create a new one.")
        if self._key_problem:
            raise AuthenticationError(self._key_problem)
        with deadline(self.answer_deadline):  # the whole answer, not each read
            return self._send_within_deadline(method, path, params, content, headers, attempt)

    def _send_within_deadline(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        content: bytes | None,
        headers: dict[str, str] | None,
        attempt: int,
    ) -> tuple[Any, httpx.Response]:
        try:
            request = self._http.build_request(method, path, params=params, content=content, headers=headers)
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            log.debug("%s %s -> %s (attempt %d)", method, path, type(exc).__name__, attempt + 1)
            raise HiAPIConnectionError(self._connection_message(method, exc)) from exc
        except RuntimeError as exc:  # the pool was closed by another thread
            raise HiAPIError("The HiAPI client is closed; create a new one.") from exc
        try:
            body = self._read_capped(response)
        except httpx.TransportError as exc:
            log.debug("%s %s -> %s while reading (attempt %d)", method, path, type(exc).__name__, attempt + 1)
            raise HiAPIConnectionError(self._connection_message(method, exc)) from exc
        except httpx.HTTPError as exc:  # e.g. a broken gzip stream
            raise MalformedResponseError(
                f"HiAPI's answer (HTTP {response.status_code}) could not be decoded.",
                status=response.status_code,
            ) from exc
        finally:
            response.close()
        log.debug("%s %s -> %d (attempt %d)", method, path, response.status_code, attempt + 1)
        retry_after = parse_retry_after(response.headers.get("retry-after"), cap=self._policy.retry_after_cap)
        return self._unwrap(response, body, retry_after), response

    def _read_capped(self, response: httpx.Response) -> bytes | None:
        """The body, or None when it is larger than MAX_RESPONSE_BYTES.

        Raises httpx.ReadTimeout once the answer deadline has passed (the
        connection enforces it too; this covers a transport passed in)."""
        chunks: list[bytes] = []
        total = 0
        for chunk in response.iter_bytes():
            left = time_left()
            if left is not None and left <= 0:
                raise httpx.ReadTimeout(f"no complete answer within the {self.answer_deadline:g} s deadline")
            total += len(chunk)
            if total > MAX_RESPONSE_BYTES:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _unwrap(self, response: httpx.Response, body: bytes | None, retry_after: float | None) -> Any:
        """Return `data` from a successful envelope, or raise the matching HiAPIError."""
        status = response.status_code

        def malformed(what: str, snippet: str = "") -> MalformedResponseError:
            text = f"Unexpected answer from HiAPI (HTTP {status}, {what})"
            if snippet:
                text += f": {snippet}"
            return MalformedResponseError(redact(text, self._api_key), status=status, retry_after=retry_after)

        if body is None:
            raise malformed(f"larger than {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB")
        if not body.strip():
            raise malformed("empty body")
        try:
            envelope = json.loads(body)
        except (ValueError, RecursionError):
            raise malformed("not JSON", self._snippet(body)) from None
        if isinstance(envelope, dict) and "code" not in envelope:
            shape = parse_error_shape(envelope)  # HiAPI's other error shape, {"error": {...}}
            if shape is not None:
                error_code, message, _ = shape
                effective = status if not 200 <= status < 300 else 500
                message = redact(_SPACE_RE.sub(" ", message).strip()[:MAX_MESSAGE_CHARS], self._api_key)
                raise error_for(effective, error_code, message, retry_after=retry_after, payload=envelope)
        if not isinstance(envelope, dict) or "code" not in envelope:
            raise malformed("not HiAPI's envelope", self._snippet(body))
        code = _as_status(envelope.get("code"))
        if code is None:
            raise malformed("the envelope's code is not a number", self._snippet(body))
        if 200 <= status < 300 and 200 <= code < 300:
            return envelope.get("data")
        error_code = envelope.get("error_code")
        error_code = error_code if isinstance(error_code, str) and error_code else None
        if error_code is None and (shape := parse_error_shape(envelope)) is not None:
            error_code = shape[0]  # an envelope that carries the other shape's error object too
        effective = status if not 200 <= status < 300 else (code if 100 <= code <= 599 else 500)
        said = envelope.get("message")
        message = _SPACE_RE.sub(" ", said).strip() if isinstance(said, str) else ""
        if not message:
            message = f"HiAPI answered HTTP {effective}"
        message = redact(message[:MAX_MESSAGE_CHARS], self._api_key)
        raise error_for(effective, error_code, message, retry_after=retry_after, payload=envelope.get("data"))

    def _snippet(self, body: bytes) -> str:
        text = body[: SNIPPET_CHARS * 20].decode("utf-8", errors="replace")
        text = _SPACE_RE.sub(" ", _TAG_RE.sub(" ", text)).strip()
        return redact(text[:SNIPPET_CHARS], self._api_key)

    def _connection_message(self, method: str, exc: Exception) -> str:
        detail = _SPACE_RE.sub(" ", str(exc)).strip()[:200] or type(exc).__name__
        what = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
        text = f"The connection to HiAPI {what} ({type(exc).__name__}: {detail})."
        if method == "POST":
            text += " The task may have been created; resend with the same Idempotency-Key."
        return redact(text, self._api_key)


# -- helpers ----------------------------------------------------------------------------


def _normalise_base_url(base_url: str) -> str:
    if not isinstance(base_url, str):
        raise ValueError("base_url must be a string such as 'https://api.hiapi.ai'.")
    base_url = base_url.strip().rstrip("/")
    try:
        parts = urlsplit(base_url)
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host or parts.query or parts.fragment:
        raise ValueError("base_url must look like 'https://api.hiapi.ai'.")
    if parts.username or parts.password:
        raise ValueError("base_url must not carry credentials; pass api_key instead.")
    return base_url


def _as_status(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 4:
        return int(value.strip())
    return None


def _unknown_model_refusal(exc: InvalidRequestError, model: str) -> InvalidRequestError | None:
    """A 400 about a model HiAPI does not document, restated as one clear sentence (else None)."""
    if model in KNOWN_MODELS or exc.status != 400 or "model" not in exc.message.lower():
        return None
    refused = InvalidRequestError(
        unknown_model_message(model), status=400, error_code=exc.error_code, payload=exc.payload
    )
    refused.server_message = exc.message
    refused.idempotency_key = exc.idempotency_key  # type: ignore[attr-defined]
    return refused


def _check_task_id(task_id: Any) -> None:
    if not isinstance(task_id, str) or not task_id:
        raise InvalidArgumentError("task_id", "A task id is required, e.g. 'tk-hiapi-…'.")
    if len(task_id) > MAX_TASK_ID_CHARS:
        raise InvalidArgumentError("task_id", f"Task id is longer than {MAX_TASK_ID_CHARS} characters.")
    if task_id in (".", "..") or any(ch.isspace() or not ch.isprintable() for ch in task_id):
        raise InvalidArgumentError("task_id", "Task id contains spaces or control characters.")


def _check_idempotency_key(key: Any) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError("idempotency_key", "Idempotency-Key must be a non-empty string.")
    if len(key.encode("utf-8")) > MAX_IDEMPOTENCY_KEY_BYTES:
        raise InvalidArgumentError(
            "idempotency_key", f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY_BYTES} bytes."
        )
    if not _PRINTABLE_ASCII_RE.match(key):
        raise InvalidArgumentError(
            "idempotency_key", "Idempotency-Key may hold only printable ASCII without spaces."
        )


def _parse_or_malformed(parse: Callable[[Any], Any], data: Any, *, status: int) -> Any:
    """Run a tolerant model parser; should it still trip over odd input, report it as malformed."""
    try:
        return parse(data)
    except Exception as exc:  # noqa: BLE001 - the contract: every failure is a HiAPIError
        raise MalformedResponseError(
            f"HiAPI's answer (HTTP {status}) has fields the studio cannot read ({type(exc).__name__}).",
            status=status,
        ) from None
