"""The documented HiAPI payloads, verbatim, parsed by the models and the client.

Each fixture is copied from the HiAPI contract notes (the create body, the create
answer, the status answers, a failed task, the 400 error envelope, the error table).
If the client or the models drift from the documentation, these fail.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from studio import errors as E
from studio.client import HiAPIClient
from studio.models import LEGACY_MODEL, TEXT_TO_IMAGE_MODEL, Callback, Task, TaskRequest, TaskStatus

KEY = "sk-test-contract-0123456789"
BASE = "https://api.hiapi.ai"

# -- verbatim from the contract ---------------------------------------------------------

DOCUMENTED_CREATE_BODY = """
{"model": "gpt-image-2",
 "input": {"prompt": "...", "aspect_ratio": "16:9", "resolution": "2K"},
 "callback": {"url": "https://example.com/hook", "when": "final"}}
"""
DOCUMENTED_CREATE_ANSWER = (
    '{"code":200,"message":"success","data":{"taskId":"tk-hiapi-01HZTQ8BX2N3GM3YFK4Z9D7VQR"}}'
)
DOCUMENTED_ERROR_ENVELOPE = (
    '{"code": 400, "message": "invalid request", "data": null, "error_code": "INVALID_REQUEST"}'
)
DOCUMENTED_SUCCESS_ENVELOPE_SHAPE = '{"code": 200, "message": "success", "data": {}}'
DOCUMENTED_FAILURE = {"code": "TASK_FAILED", "message": "upstream rejected the prompt"}

TASK_ID = "tk-hiapi-01HZTQ8BX2N3GM3YFK4Z9D7VQR"
CREATED_AT = 1_760_000_000
COMPLETED_AT = 1_760_000_095
EXPIRE_AT = COMPLETED_AT + 7 * 24 * 3600  # output URLs live 7 days by default


def status_answer(status: str, **extra: Any) -> dict[str, Any]:
    """`data` = {taskId, model, status, created, completed, output?, error?}, in the envelope."""
    data: dict[str, Any] = {
        "taskId": TASK_ID,
        "model": "gpt-image-2",
        "status": status,
        "created": CREATED_AT,
        "completed": 0,
    }
    data.update(extra)
    return {"code": 200, "message": "success", "data": data}


def client_answering(body: str | dict, status: int = 200, headers: dict[str, str] | None = None):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        content = body if isinstance(body, str) else json.dumps(body)
        return httpx.Response(status, content=content.encode(), headers=headers)

    client = HiAPIClient(KEY, base_url=BASE, transport=httpx.MockTransport(handler), sleep=lambda s: None)
    return client, seen


# -- create -----------------------------------------------------------------------------


def documented_body(model: str = TEXT_TO_IMAGE_MODEL) -> dict[str, Any]:
    """The documented body with the model the studio sends by default (its current ID)."""
    return json.loads(DOCUMENTED_CREATE_BODY) | {"model": model}


def test_documented_create_body_is_exactly_what_the_request_builds() -> None:
    request = TaskRequest("...", "16:9", "2K", callback=Callback("https://example.com/hook"))
    assert request.to_body() == documented_body()
    assert request.problems() == []
    legacy = TaskRequest("...", "16:9", "2K", LEGACY_MODEL, Callback("https://example.com/hook"))
    assert legacy.to_body() == json.loads(DOCUMENTED_CREATE_BODY)  # verbatim, legacy alias
    assert "callback" not in request.to_body()["input"]


def test_client_sends_the_documented_create_body_and_reads_the_documented_answer() -> None:
    client, seen = client_answering(DOCUMENTED_CREATE_ANSWER)
    with client:
        created = client.create_task(
            TaskRequest("...", "16:9", "2K", callback=Callback("https://example.com/hook")),
            idempotency_key="studio-contract-1",
        )
    assert created.task_id == "tk-hiapi-01HZTQ8BX2N3GM3YFK4Z9D7VQR"
    assert created.task_id.startswith("tk-hiapi-") and len(created.task_id) == len("tk-hiapi-") + 26
    assert created.replayed is False
    assert created.idempotency_key == "studio-contract-1"
    (request,) = seen
    assert (request.method, request.url.path) == ("POST", "/v1/tasks")
    assert json.loads(request.content) == documented_body()
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == "studio-contract-1"


def test_documented_replay_header_marks_the_create_as_replayed() -> None:
    client, seen = client_answering(DOCUMENTED_CREATE_ANSWER, headers={"idempotent-replay": "true"})
    with client:
        created = client.create_task(TaskRequest("a cat"), idempotency_key="studio-contract-2")
    assert created.replayed is True and created.task_id == TASK_ID
    assert len(seen) == 1


def test_defaults_match_the_documented_ones() -> None:
    body = TaskRequest("a cat").to_body()
    assert body == {
        "model": "gpt-image-2/text-to-image",
        "input": {"prompt": "a cat", "aspect_ratio": "auto", "resolution": "1K"},
    }


# -- status ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["queued", "handling", "archiving"])
def test_documented_running_statuses_parse_and_are_not_terminal(status: str) -> None:
    client, seen = client_answering(status_answer(status))
    with client:
        task = client.get_task(TASK_ID)
    assert (seen[0].method, seen[0].url.path) == ("GET", f"/v1/tasks/{TASK_ID}")
    assert task == Task(task_id=TASK_ID, status=status, model="gpt-image-2", created=CREATED_AT, completed=0)
    assert task.is_known_status and not task.is_terminal
    assert task.outputs == () and task.error is None


def test_documented_success_answer_parses_every_field() -> None:
    answer = status_answer(
        "success",
        completed=COMPLETED_AT,
        output=[{"url": "https://files.hiapi.ai/out/a.png", "type": "image", "expireAt": EXPIRE_AT}],
    )
    client, _ = client_answering(answer)
    with client:
        task = client.get_task(TASK_ID)
    assert task.status == TaskStatus.SUCCESS and task.is_terminal
    assert (task.task_id, task.model, task.created, task.completed) == (
        TASK_ID,
        "gpt-image-2",
        CREATED_AT,
        COMPLETED_AT,
    )
    assert len(task.outputs) == 1
    out = task.outputs[0]
    assert (out.url, out.type, out.expire_at) == ("https://files.hiapi.ai/out/a.png", "image", EXPIRE_AT)
    assert task.error is None
    assert task.to_dict() == answer["data"]


def test_documented_fail_answer_is_an_http_200_task_with_its_error() -> None:
    answer = status_answer("fail", completed=COMPLETED_AT, error=DOCUMENTED_FAILURE)
    client, _ = client_answering(answer)
    with client:
        task = client.get_task(TASK_ID)  # not an exception: the task answer is HTTP 200
    assert task.status == TaskStatus.FAIL and task.is_terminal
    assert task.error is not None
    assert (task.error.code, task.error.message) == ("TASK_FAILED", "upstream rejected the prompt")
    assert str(task.error) == "TASK_FAILED: upstream rejected the prompt"
    assert task.outputs == ()
    assert task.to_dict() == answer["data"]


def test_unknown_future_status_does_not_break_the_client() -> None:
    client, _ = client_answering(status_answer("upscaling", progress=42, width=2048))
    with client:
        task = client.get_task(TASK_ID)
    assert task.status == "upscaling"
    assert not task.is_known_status and not task.is_terminal
    assert task.raw["progress"] == 42


# -- errors ---------------------------------------------------------------------------------


def test_documented_400_envelope_becomes_invalid_request_error() -> None:
    client, seen = client_answering(DOCUMENTED_ERROR_ENVELOPE, status=400)
    with client, pytest.raises(E.InvalidRequestError) as info:
        client.create_task(TaskRequest("a cat"))
    err = info.value
    assert type(err) is E.InvalidRequestError
    assert (err.status, err.error_code, err.message, err.payload) == (
        400,
        "INVALID_REQUEST",
        "invalid request",
        None,
    )
    assert err.code == "INVALID_REQUEST"
    assert len(seen) == 1  # "never as is"


def test_documented_success_envelope_shape_is_unwrapped() -> None:
    client, _ = client_answering(DOCUMENTED_SUCCESS_ENVELOPE_SHAPE)
    with client:
        page = client.list_tasks()
    assert page.tasks == ()


# One row per line of the documented error table: HTTP, error_code, class, retried?
ERROR_TABLE = [
    (400, "INVALID_REQUEST", E.InvalidRequestError, False),
    (401, None, E.AuthenticationError, False),
    (402, None, E.InsufficientBalanceError, False),
    (415, None, E.UnsupportedMediaTypeError, False),  # a bug in the studio
    (404, None, E.NotFoundError, False),
    (409, "IDEMPOTENCY_KEY_PROCESSING", E.IdempotencyKeyInFlightError, True),
    (422, "IDEMPOTENCY_KEY_MISMATCH", E.IdempotencyKeyMismatchError, False),
    (429, None, E.RateLimitedError, True),
    (503, None, E.UnavailableError, True),
    (503, "MODEL_UNAVAILABLE", E.UnavailableError, False),  # "later", not now
    (500, "TASK_TIMEOUT", E.UnavailableError, True),
    (500, "STORAGE_UNAVAILABLE", E.UnavailableError, True),
]


@pytest.mark.parametrize(("status", "error_code", "cls", "retried"), ERROR_TABLE)
def test_documented_error_table_on_create(
    status: int, error_code: str | None, cls: type, retried: bool
) -> None:
    body: dict[str, Any] = {"code": status, "message": "documented", "data": None}
    if error_code:
        body["error_code"] = error_code
    client, seen = client_answering(body, status=status, headers={"Retry-After": "1"})
    with client, pytest.raises(cls) as info:
        client.create_task(TaskRequest("a cat"), idempotency_key="studio-table")
    assert type(info.value) is cls
    assert (info.value.status, info.value.error_code) == (status, error_code)
    assert len(seen) == (3 if retried else 1)
    assert {r.headers["idempotency-key"] for r in seen} == {"studio-table"}
    if status == 429:
        assert info.value.retry_after == 1.0


DOCUMENTED_OTHER_ERROR_SHAPE = (
    '{"error": {"type": "hiapi_error", "code": "rate_limit_exceeded", "request_id": "req_8f2k1"}}'
)


def test_the_other_error_shape_is_read_like_the_envelope() -> None:
    client, seen = client_answering(DOCUMENTED_OTHER_ERROR_SHAPE, status=429, headers={"Retry-After": "2"})
    with client, pytest.raises(E.RateLimitedError) as info:
        client.create_task(TaskRequest("a cat"), idempotency_key="studio-shape")
    assert len(seen) == 3  # retried like any 429, with the same key
    assert info.value.status == 429 and info.value.retry_after == 2.0
    assert info.value.error_code == "RATE_LIMIT_EXCEEDED"
    assert "rate_limit_exceeded" in info.value.message and "req_8f2k1" in info.value.message


@pytest.mark.parametrize(
    ("status", "cls", "needle"),
    [
        (402, E.InsufficientBalanceError, "top up your HiAPI balance"),
        (415, E.UnsupportedMediaTypeError, "bug in the studio"),
        (401, E.AuthenticationError, "invalid_api_key"),
        (503, E.UnavailableError, "req_1"),
    ],
)
def test_the_other_error_shape_maps_by_http_status(status: int, cls: type, needle: str) -> None:
    body = {"error": {"type": "hiapi_error", "code": "invalid_api_key", "request_id": "req_1"}}
    client, seen = client_answering(body, status=status)
    with client, pytest.raises(cls) as info:
        client.get_task(TASK_ID)
    assert type(info.value) is cls and info.value.status == status
    assert info.value.error_code is None  # not one of the documented business codes
    assert needle in info.value.message
    assert len(seen) == (3 if status == 503 else 1)


def test_the_other_error_shape_with_its_own_message_and_odd_fields() -> None:
    body = {"error": {"type": "x" * 500, "code": 7, "request_id": "req 1; drop", "message": "  too\n many  "}}
    client, _ = client_answering(body, status=429)
    with client, pytest.raises(E.RateLimitedError) as info:
        client.get_task(TASK_ID)
    assert info.value.message == "too many"  # an unreadable request id is left out


def test_unknown_task_is_404_not_found() -> None:
    client, _ = client_answering({"code": 404, "message": "task not found", "data": None}, status=404)
    with client, pytest.raises(E.NotFoundError) as info:
        client.get_task("tk-hiapi-00000000000000000000000000")
    assert (info.value.status, info.value.message) == (404, "task not found")
