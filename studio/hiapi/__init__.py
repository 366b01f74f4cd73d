"""A Python client for HiAPI's GPT Image 2 task API.

Create a task, then read it back until it is terminal (or let HiAPI call you back)::

    from studio.hiapi import HiAPIClient, TaskRequest, TaskStatus

    with HiAPIClient("sk-...") as client:
        created = client.create_task(
            TaskRequest(prompt='A poster that says "Open late"', aspect_ratio="4:5", resolution="2K"),
            idempotency_key=HiAPIClient.new_idempotency_key(),
        )
        task = client.get_task(created.task_id)
        if task.status == TaskStatus.SUCCESS:
            print([output.url for output in task.outputs])  # the URLs expire: download them now

The surface:

- `HiAPIClient`: `create_task`, `get_task`, `list_tasks`; one pooled, thread-safe
  HTTP client with explicit timeouts and a per-answer deadline. A request is
  validated before it is sent (an invalid one never leaves the process), every
  create can carry an `Idempotency-Key` so a create lost on the network is sent
  again without a second task, and only what is safe is retried
  (`RetryPolicy`, `Retry-After` honoured). The API key is never in an error,
  a repr or a log record.
- Errors, one class per documented failure, all `HiAPIError`:
  `InvalidRequestError` (400; `RequestValidationError` when refused locally,
  `UnsupportedMediaTypeError` 415), `AuthenticationError` (401),
  `InsufficientBalanceError` (402: nothing created, nothing charged),
  `NotFoundError` (404), `IdempotencyKeyInFlightError` (409),
  `IdempotencyKeyMismatchError` (422), `RateLimitedError` (429),
  `UnavailableError` (5xx), `HiAPIConnectionError` (the network),
  `MalformedResponseError` (an answer that is not HiAPI's envelope). Each
  carries the HTTP `status`, HiAPI's `error_code`, whether it is `retryable`
  and the server's `retry_after`; a request id HiAPI gave ends the message.
- Models parse tolerantly and keep the raw payload (`Task.raw`, `Output.raw`,
  `TaskPage.raw`): an unknown status or an extra field is kept as-is, a
  malformed output item is skipped, nothing raises on odd input from the
  server. `TaskRequest` builds the create body, `Callback` the callback.
- Webhooks (`studio.hiapi.webhooks`): `sign` / `signature_problem` (HMAC-SHA256
  over `timestamp.body`, constant-time, bounded clock skew), the body cap and
  `parse_terminal_task`.

The package knows nothing of the studio (`tests/test_layers.py` keeps it so);
it shares only the studio's one request-validation function.
"""

from .client import HiAPIClient, InvalidArgumentError
from .errors import (
    AuthenticationError,
    HiAPIConnectionError,
    HiAPIError,
    IdempotencyKeyInFlightError,
    IdempotencyKeyMismatchError,
    InsufficientBalanceError,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    RequestValidationError,
    UnavailableError,
    UnsupportedMediaTypeError,
    redact,
)
from .models import Callback, Created, Output, Task, TaskFailure, TaskPage, TaskRequest, TaskStatus
from .transport import RetryPolicy
from .webhooks import parse_terminal_task, sign, signature_problem

__all__ = [
    "AuthenticationError",
    "Callback",
    "Created",
    "HiAPIClient",
    "HiAPIConnectionError",
    "HiAPIError",
    "IdempotencyKeyInFlightError",
    "IdempotencyKeyMismatchError",
    "InsufficientBalanceError",
    "InvalidArgumentError",
    "InvalidRequestError",
    "MalformedResponseError",
    "NotFoundError",
    "Output",
    "RateLimitedError",
    "RequestValidationError",
    "RetryPolicy",
    "Task",
    "TaskFailure",
    "TaskPage",
    "TaskRequest",
    "TaskStatus",
    "UnavailableError",
    "UnsupportedMediaTypeError",
    "parse_terminal_task",
    "redact",
    "sign",
    "signature_problem",
]
