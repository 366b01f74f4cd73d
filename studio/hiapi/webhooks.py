"""HiAPI's webhooks: how a task callback is signed, bounded and read, without a server.

HiAPI POSTs the task-detail object to a task's `callback.url` when the task
reaches a terminal state, at least once, possibly concurrently, and redelivers
on any non-2xx answer. What a receiver checks here, in this order:

- bodies over `MAX_BODY_BYTES` are refused before they are read whole
  (`declared_too_large` on the Content-Length, `read_capped` on the stream);
- with a signing secret: `X-HiAPI-Timestamp` and `X-HiAPI-Signature` (lowercase
  hex HMAC-SHA256 of `timestamp + "." + raw body`, see `sign`) are checked over
  the raw bytes, constant-time, and timestamps more than `MAX_SKEW_S` from now
  are refused (`signature_problem`);
- the body must be a task object in a terminal state (`parse_terminal_task`);
  the `{code, message, data}` envelope of the GET answer is tolerated.

Each check answers a short reason (never a secret) or None/the parsed `Task`;
what to answer and where a verified task goes is the receiver's business
(`studio.callbacks`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterable, Mapping

from .models import Task, TaskStatus

MAX_BODY_BYTES = 1 << 20  # 1 MiB; a task object is a few hundred bytes
MAX_SKEW_S = 300.0
TIMESTAMP_HEADER = "x-hiapi-timestamp"
SIGNATURE_HEADER = "x-hiapi-signature"
MAX_TASK_ID_CHARS = 256


# -- the signature --------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """HiAPI's signature: lowercase hex HMAC-SHA256(secret, timestamp + "." + raw body)."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_problem(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> str | None:
    """Why a delivery's signature is not acceptable, or None when it is.

    `headers` are looked up lower-case (pass a case-insensitive mapping or
    lower-cased keys). The comparison is constant-time over the raw bytes.
    """
    timestamp = _header(headers, TIMESTAMP_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    if not timestamp or not signature:
        missing = [
            name
            for name, value in (("X-HiAPI-Timestamp", timestamp), ("X-HiAPI-Signature", signature))
            if not value
        ]
        return f"missing {' and '.join(missing)} header{'s' if len(missing) > 1 else ''}"
    timestamp = timestamp.strip()
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return "X-HiAPI-Timestamp is not Unix seconds"
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > MAX_SKEW_S:
        return f"timestamp more than {int(MAX_SKEW_S)} s from now"
    expected = sign(secret, timestamp, body).encode()
    given = signature.strip().lower().encode("utf-8", "replace")
    if not hmac.compare_digest(expected, given):
        return "signature does not match"
    return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # a plain dict: look the name up case-insensitively
        value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == name), None)
    return value if isinstance(value, str) else None


# -- the body -------------------------------------------------------------------


def parse_terminal_task(body: bytes) -> Task | str:
    """The terminal task a callback body describes, or a short reason why not."""
    if not body:
        return "empty body"
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return "body is not JSON"
    if isinstance(data, dict) and "taskId" not in data and isinstance(data.get("data"), dict):
        data = data["data"]  # tolerate the {code, message, data} envelope of the GET answer
    if not isinstance(data, dict):
        return "body is not a task object"
    task_id = data.get("taskId")
    if not isinstance(task_id, str) or not task_id:
        return "taskId is missing"
    if len(task_id) > MAX_TASK_ID_CHARS or any(ch.isspace() or not ch.isprintable() for ch in task_id):
        return "taskId is not a task id"
    status = data.get("status")
    if not isinstance(status, str) or status not in TaskStatus.TERMINAL:
        shown = status if isinstance(status, str) and len(status) <= 20 else type(status).__name__
        return f"status {shown!r} is not terminal (success or fail)"
    try:
        task = Task.parse(data)
    except Exception:  # the parser is tolerant; this is belt and braces
        task = None
    if task is None:
        return "body is not a task object"
    if task.status == TaskStatus.SUCCESS and not task.outputs:
        return "success without any output URL"
    return task


# -- reading the body -----------------------------------------------------------


class BodyTooLarge(Exception):
    """The body went past the cap while it was being read."""


async def read_capped(chunks: AsyncIterable[bytes], cap: int = MAX_BODY_BYTES) -> bytes:
    """Read a streamed body, stopping (BodyTooLarge) as soon as it passes `cap` bytes."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        if len(buf) > cap:
            raise BodyTooLarge
    return bytes(buf)


def declared_too_large(content_length: str | None, cap: int = MAX_BODY_BYTES) -> bool:
    """True when a Content-Length header announces more than `cap` bytes."""
    if content_length is None:
        return False
    value = content_length.strip()
    return value.isdigit() and int(value) > cap
