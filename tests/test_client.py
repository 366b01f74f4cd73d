"""HiAPIClient: validation, envelope, errors, retries, idempotency and key hygiene.

Most tests talk real HTTP to the project's HiAPI simulator over loopback.
`httpx.MockTransport` is used only for wire faults the simulator cannot produce
(HTML pages, empty or non-JSON bodies, missing envelopes, HTTP-date Retry-After,
huge bodies, odd payloads) and for exact control of retry sequences.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from studio import errors as E
from studio.client import MAX_RESPONSE_BYTES, HiAPIClient, InvalidArgumentError
from studio.models import Callback, Task, TaskPage, TaskRequest
from studio.transport import RetryPolicy, parse_retry_after
from tests.support import wait_for

KEY = "sk-test-S3CRETkey0123456789abcdef"
BASE = "https://api.hiapi.test"
TASK_ID = "tk-hiapi-01HZTQ8BX2N3GM3YFK4Z9D7VQR"


# -- helpers ---------------------------------------------------------------------------


class Sleeps(list):
    """A fake `sleep` that records each requested delay instead of waiting."""

    def __init__(self, on_sleep: Callable[[float], None] | None = None) -> None:
        super().__init__()
        self.on_sleep = on_sleep

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        if self.on_sleep:
            self.on_sleep(seconds)


Answer = Callable[[httpx.Request], httpx.Response] | type[Exception]


class Wire:
    """A scripted server for MockTransport: answers in order, the last one repeats."""

    def __init__(self, *answers: Answer) -> None:
        assert answers
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, type) and issubclass(answer, Exception):
            raise answer("simulated network failure", request=request)  # type: ignore[call-arg]
        return answer(request)

    @property
    def keys(self) -> list[str | None]:
        return [r.headers.get("idempotency-key") for r in self.requests]


def env(
    status: int = 200,
    data: Any = None,
    *,
    code: Any = ...,
    message: str = "success",
    error_code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Callable[[httpx.Request], httpx.Response]:
    body: dict[str, Any] = {"code": status if code is ... else code, "message": message, "data": data}
    if error_code:
        body["error_code"] = error_code
    return lambda request: httpx.Response(status, json=body, headers=headers)


def raw(status: int, content: bytes | str, headers: dict[str, str] | None = None) -> Callable:
    return lambda request: httpx.Response(status, content=content, headers=headers)


def task_data(status: str = "queued", **extra: Any) -> dict[str, Any]:
    d = {
        "taskId": TASK_ID,
        "model": "gpt-image-2",
        "status": status,
        "created": 1_760_000_000,
        "completed": 0,
    }
    d.update(extra)
    return d


def make(wire: Wire, sleeps: Sleeps | None = None, **kw: Any) -> HiAPIClient:
    kw.setdefault("base_url", BASE)
    return HiAPIClient(
        KEY, transport=httpx.MockTransport(wire), sleep=sleeps if sleeps is not None else Sleeps(), **kw
    )


def assert_no_key(err: BaseException, key: str = KEY) -> None:
    assert key not in str(err)
    assert key not in repr(err)
    assert key not in "".join(traceback.format_exception(err))


CREATED = env(200, {"taskId": TASK_ID})


# -- construction ----------------------------------------------------------------------


@pytest.mark.parametrize("base", ["https://api.hiapi.test", "https://api.hiapi.test/"])
def test_base_url_with_or_without_trailing_slash_reaches_v1_tasks(base: str) -> None:
    wire = Wire(env(200, task_data()))
    with make(wire, base_url=base) as client:
        client.get_task(TASK_ID)
    assert str(wire.requests[0].url) == f"https://api.hiapi.test/v1/tasks/{TASK_ID}"


def test_base_url_with_a_path_prefix_keeps_it() -> None:
    wire = Wire(env(200, task_data()))
    with make(wire, base_url="https://gw.example/hiapi/") as client:
        client.get_task(TASK_ID)
    assert wire.requests[0].url.path == f"/hiapi/v1/tasks/{TASK_ID}"


@pytest.mark.parametrize("bad", ["api.hiapi.ai", "ftp://api.hiapi.ai", "https://", "https://u:p@host", ""])
def test_bad_base_url_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        HiAPIClient(KEY, base_url=bad)


def test_every_request_carries_auth_json_headers_and_user_agent() -> None:
    wire = Wire(CREATED, env(200, task_data()), env(200, {"list": []}))
    with make(wire) as client:
        client.create_task(TaskRequest("a red fox"))
        client.get_task(TASK_ID)
        client.list_tasks()
    assert len(wire.requests) == 3
    for r in wire.requests:
        assert r.headers["authorization"] == f"Bearer {KEY}"
        assert r.headers["content-type"] == "application/json"
        assert r.headers["accept"] == "application/json"
        assert r.headers["user-agent"].startswith("hiapi-studio/0.1")


def test_default_timeouts_and_pool_are_explicit() -> None:
    client = HiAPIClient(KEY)
    try:
        t = client._http.timeout
        assert (t.connect, t.read, t.write, t.pool) == (5.0, 30.0, 30.0, 10.0)
        assert client._http.follow_redirects is False
    finally:
        client.close()
    assert HiAPIClient(KEY, timeout=2.5)._http.timeout.read == 2.5
    with pytest.raises(ValueError):
        HiAPIClient(KEY, timeout=-1)


def test_repr_and_str_show_base_and_model_never_the_key() -> None:
    client = HiAPIClient(KEY, base_url="https://api.hiapi.ai/", model="gpt-image-2/text-to-image")
    text = repr(client)
    assert text == "HiAPIClient(base_url='https://api.hiapi.ai', model='gpt-image-2/text-to-image', key=set)"
    assert str(client) == text
    assert KEY not in text and KEY not in f"{client}"
    client.close()


def test_a_missing_key_fails_locally_with_authentication_error_and_sends_nothing() -> None:
    wire = Wire(env(200, task_data()))
    client = HiAPIClient("  ", base_url=BASE, transport=httpx.MockTransport(wire))
    assert "key=missing" in repr(client)
    with pytest.raises(E.AuthenticationError, match="No HiAPI API key"):
        client.get_task(TASK_ID)
    with pytest.raises(E.AuthenticationError):
        client.create_task(TaskRequest("a cat"))
    assert wire.requests == []


def test_closed_client_raises_a_hiapi_error_and_sends_nothing() -> None:
    wire = Wire(env(200, task_data()))
    with make(wire) as client:
        pass
    assert client.closed
    with pytest.raises(E.HiAPIError, match="closed"):
        client.get_task(TASK_ID)
    assert wire.requests == []


# -- validation: an invalid request never leaves the machine ----------------------------

LABELS = {
    "prompt": "Prompt",
    "aspect_ratio": "Aspect ratio",
    "resolution": "Resolution",
    "callback.url": "Callback URL",
    "callback.when": "Callback 'when'",
    "references": "Reference image",
}

INVALID_REQUESTS = [
    pytest.param(TaskRequest(""), "prompt", "required", id="empty-prompt"),
    pytest.param(TaskRequest("   \n"), "prompt", "required", id="blank-prompt"),
    pytest.param(TaskRequest("x" * 20_001), "prompt", "20,000", id="prompt-too-long"),
    pytest.param(TaskRequest("a\x00b"), "prompt", "NUL", id="prompt-nul"),
    pytest.param(TaskRequest("cat", aspect_ratio="7:5"), "aspect_ratio", "'7:5'", id="unknown-ratio"),
    pytest.param(TaskRequest("cat", resolution="8K"), "resolution", "'8K'", id="unknown-resolution"),
    pytest.param(TaskRequest("cat", "auto", "2K"), "aspect_ratio", "only with 1K", id="auto-needs-1K"),
    pytest.param(TaskRequest("cat", "1:1", "4K"), "aspect_ratio", "text-to-image", id="square-not-4K"),
    pytest.param(TaskRequest("cat", "5:4", "2K"), "aspect_ratio", "choose 1K or 4K", id="5x4-not-2K"),
    pytest.param(TaskRequest("cat", "9:21", "4K"), "aspect_ratio", "choose 1K", id="9x21-not-4K"),
    pytest.param(TaskRequest("cat", "1:3", "2K"), "aspect_ratio", "choose 1K", id="1x3-not-2K"),
    pytest.param(
        TaskRequest("cat", callback=Callback("http://example.com/hook")),
        "callback.url",
        "https",
        id="cb-http",
    ),
    pytest.param(
        TaskRequest("cat", callback=Callback("https:///hook")), "callback.url", "no host", id="cb-host"
    ),
    pytest.param(TaskRequest("cat", callback=Callback("")), "callback.url", "non-empty", id="cb-empty"),
    pytest.param(
        TaskRequest("cat", callback=Callback("https://example.com/h", when="always")),
        "callback.when",
        "'final'",
        id="cb-when",
    ),
]


@pytest.mark.parametrize(("request_", "field", "fragment"), INVALID_REQUESTS)
def test_invalid_request_is_refused_locally_and_never_sent(
    request_: TaskRequest, field: str, fragment: str
) -> None:
    wire = Wire(CREATED)
    with make(wire) as client, pytest.raises(E.RequestValidationError) as info:
        client.create_task(request_)
    assert wire.requests == []
    err = info.value
    assert [p.field for p in err.problems] == [field]
    assert LABELS[field] in str(err)
    assert fragment in str(err)
    assert err.error_code == "INVALID_REQUEST"


def test_every_problem_is_reported_at_once() -> None:
    wire = Wire(CREATED)
    with make(wire) as client, pytest.raises(E.RequestValidationError) as info:
        client.create_task(TaskRequest("", "9:9", "3K", callback=Callback("http://x.example")))
    assert {p.field for p in info.value.problems} == {"prompt", "aspect_ratio", "resolution", "callback.url"}
    assert wire.requests == []


def test_plain_http_callback_is_allowed_only_towards_a_loopback_base_url() -> None:
    request = TaskRequest("cat", callback=Callback("http://127.0.0.1:9999/hook"))
    wire = Wire(CREATED)
    with make(wire, base_url="http://127.0.0.1:8765") as local:
        assert local.create_task(request).task_id == TASK_ID
    assert json.loads(wire.requests[0].content)["callback"] == {
        "url": "http://127.0.0.1:9999/hook",
        "when": "final",
    }
    remote_wire = Wire(CREATED)
    with make(remote_wire) as remote, pytest.raises(E.RequestValidationError):
        remote.create_task(request)
    assert remote_wire.requests == []


# -- create: body, model, idempotency ---------------------------------------------------


def test_create_sends_the_documented_body_with_the_configured_model() -> None:
    wire = Wire(CREATED)
    with make(wire, model="gpt-image-2/text-to-image") as client:
        created = client.create_task(
            TaskRequest("a lighthouse", "16:9", "2K", callback=Callback("https://example.com/hook"))
        )
    assert created.task_id == TASK_ID
    assert created.replayed is False
    sent = wire.requests[0]
    assert sent.method == "POST" and sent.url.path == "/v1/tasks"
    assert json.loads(sent.content) == {
        "model": "gpt-image-2/text-to-image",
        "input": {"prompt": "a lighthouse", "aspect_ratio": "16:9", "resolution": "2K"},
        "callback": {"url": "https://example.com/hook", "when": "final"},
    }


def test_the_default_model_is_text_to_image_and_follows_the_request() -> None:
    wire = Wire(CREATED)
    refs = ("https://cdn.example.com/ref.png",)
    with make(wire) as client:
        assert client.model == "gpt-image-2/text-to-image"
        client.create_task(TaskRequest("a lighthouse"))
        client.create_task(TaskRequest("a lighthouse", "1:1", "4K", references=refs))
    text, image = (json.loads(r.content) for r in wire.requests)
    assert text["model"] == "gpt-image-2/text-to-image" and "input_urls" not in text["input"]
    assert image["model"] == "gpt-image-2/image-to-image"
    assert image["input"]["input_urls"] == list(refs)  # and 1:1 at 4K is allowed there


@pytest.mark.parametrize(
    ("configured", "text", "image"),
    [
        ("gpt-image-2", "gpt-image-2", "gpt-image-2/image-to-image"),  # the legacy alias
        ("gpt-image-2/image-to-image", "gpt-image-2/text-to-image", "gpt-image-2/image-to-image"),
        ("my-proxy/gpt-image-2", "my-proxy/gpt-image-2", "my-proxy/gpt-image-2"),  # sent as configured
    ],
)
def test_a_configured_model_overrides_the_default(configured: str, text: str, image: str) -> None:
    wire = Wire(CREATED)
    with make(wire, model=configured) as client:
        client.create_task(TaskRequest("a"))
        client.create_task(TaskRequest("a", references=("https://cdn.example.com/r.png",)))
    assert [json.loads(r.content)["model"] for r in wire.requests] == [text, image]


def test_a_model_hiapi_does_not_know_gets_one_clear_sentence() -> None:
    answer = env(400, None, message="model not supported: foo-9", error_code="INVALID_REQUEST")
    wire = Wire(answer)
    with make(wire, model="foo-9") as client, pytest.raises(E.InvalidRequestError) as info:
        client.create_task(TaskRequest("a"), idempotency_key="k-model")
    assert str(info.value) == (
        "HiAPI does not know the model 'foo-9': set HIAPI_MODEL to 'gpt-image-2/text-to-image' "
        "(or remove it to use the default), then generate again."
    )
    assert info.value.server_message == "model not supported: foo-9"
    assert info.value.idempotency_key == "k-model" and len(wire.requests) == 1
    # A known model's 400 keeps HiAPI's words; an unknown model's 400 about something else too.
    for model, message in (("gpt-image-2/text-to-image", "model busy"), ("foo-9", "prompt too odd")):
        wire = Wire(env(400, None, message=message, error_code="INVALID_REQUEST"))
        with make(wire, model=model) as client, pytest.raises(E.InvalidRequestError) as info:
            client.create_task(TaskRequest("a"))
        assert str(info.value) == message


def test_a_request_naming_another_model_keeps_it() -> None:
    wire = Wire(CREATED)
    with make(wire, model="gpt-image-2/text-to-image") as client:
        client.create_task(TaskRequest("a lighthouse", model="gpt-image-2-preview"))
    assert json.loads(wire.requests[0].content)["model"] == "gpt-image-2-preview"


def test_generated_idempotency_key_is_fresh_per_create_and_returned() -> None:
    wire = Wire(CREATED)
    with make(wire) as client:
        a = client.create_task(TaskRequest("one"))
        b = client.create_task(TaskRequest("two"))
    assert re.fullmatch(r"studio-[0-9a-f]{32}", a.idempotency_key or "")
    assert a.idempotency_key != b.idempotency_key
    assert wire.keys == [a.idempotency_key, b.idempotency_key]


def test_caller_key_is_sent_as_is() -> None:
    wire = Wire(CREATED)
    with make(wire) as client:
        created = client.create_task(TaskRequest("one"), idempotency_key="sub-42-abc")
    assert wire.keys == ["sub-42-abc"]
    assert created.idempotency_key == "sub-42-abc"


@pytest.mark.parametrize(
    "key",
    ["k" * 256, "é" * 128, "", "has space", "line\nbreak"],
    ids=["256B", "utf8-256B", "empty", "sp", "nl"],
)
def test_bad_idempotency_key_is_refused_locally(key: str) -> None:
    wire = Wire(CREATED)
    with make(wire) as client:
        with pytest.raises(ValueError) as info:
            client.create_task(TaskRequest("one"), idempotency_key=key)
        assert isinstance(info.value, E.RequestValidationError)
        assert info.value.problems[0].field == "idempotency_key"
        client.create_task(TaskRequest("one"), idempotency_key="k" * 255)  # the limit itself is fine
    assert wire.keys == ["k" * 255]


@pytest.mark.parametrize(
    ("header", "expected"), [("true", True), ("TRUE", True), ("false", False), (None, False)]
)
def test_replayed_comes_from_the_idempotent_replay_header(header: str | None, expected: bool) -> None:
    headers = {"idempotent-replay": header} if header is not None else None
    wire = Wire(env(200, {"taskId": TASK_ID}, headers=headers))
    with make(wire) as client:
        assert client.create_task(TaskRequest("one")).replayed is expected


def test_create_answer_without_task_id_is_malformed_and_names_the_key() -> None:
    wire = Wire(env(200, {"id": "something-else"}))
    with make(wire) as client, pytest.raises(E.MalformedResponseError, match="taskId") as info:
        client.create_task(TaskRequest("one"), idempotency_key="k-1")
    assert info.value.idempotency_key == "k-1"  # type: ignore[attr-defined]
    assert len(wire.requests) == 1


# -- get / list -------------------------------------------------------------------------


def test_get_task_unwraps_the_envelope() -> None:
    wire = Wire(
        env(
            200,
            task_data(
                "success",
                completed=1_760_000_090,
                output=[{"url": "https://cdn.example/a.png", "type": "image", "expireAt": 1_760_604_890}],
            ),
        )
    )
    with make(wire) as client:
        task = client.get_task(TASK_ID)
    assert wire.requests[0].method == "GET"
    assert task.task_id == TASK_ID and task.status == "success" and task.is_terminal
    assert task.completed == 1_760_000_090
    assert [(o.url, o.type, o.expire_at) for o in task.outputs] == [
        ("https://cdn.example/a.png", "image", 1_760_604_890)
    ]


@pytest.mark.parametrize("bad", ["", None, 42, " tk", "tk\n1", "a b", "..", "x" * 257])
def test_get_task_rejects_odd_ids_locally(bad: Any) -> None:
    wire = Wire(env(200, task_data()))
    with make(wire) as client, pytest.raises(ValueError) as info:
        client.get_task(bad)
    assert isinstance(info.value, InvalidArgumentError)
    assert wire.requests == []


def test_get_task_url_quotes_the_id() -> None:
    wire = Wire(env(200, task_data()))
    with make(wire) as client:
        client.get_task("tk/../x?y#z%")
    assert wire.requests[0].url.raw_path == b"/v1/tasks/tk%2F..%2Fx%3Fy%23z%25"


def test_list_tasks_sends_page_and_size_and_parses_the_page() -> None:
    items = [task_data("success"), {"taskId": "tk-hiapi-2", "status": "queued"}, {"no": "id"}, "junk"]
    wire = Wire(env(200, {"list": items, "total": 7, "page": 2, "size": 2}))
    with make(wire) as client:
        page = client.list_tasks(page=2, size=2)
    assert dict(wire.requests[0].url.params) == {"page": "2", "size": "2"}
    assert isinstance(page, TaskPage)
    assert [t.task_id for t in page.tasks] == [TASK_ID, "tk-hiapi-2"]
    assert (page.page, page.size, page.total) == (2, 2, 7)


def test_list_tasks_reads_the_documented_tasks_key_too() -> None:
    wire = Wire(env(200, {"page": 1, "size": 10, "total": 1, "tasks": [task_data()]}))
    with make(wire) as client:
        page = client.list_tasks()
    assert [t.task_id for t in page.tasks] == [TASK_ID]
    assert (page.page, page.size, page.total) == (1, 10, 1)


def test_list_tasks_accepts_a_bare_list_and_null_data() -> None:
    wire = Wire(env(200, [task_data()]), env(200, None))
    with make(wire) as client:
        assert [t.task_id for t in client.list_tasks().tasks] == [TASK_ID]
        assert client.list_tasks().tasks == ()


@pytest.mark.parametrize(("page", "size"), [(0, 20), (1, 0), (-1, 5), (True, 5), (1, "20")])
def test_list_tasks_rejects_bad_paging_locally(page: Any, size: Any) -> None:
    wire = Wire(env(200, []))
    with make(wire) as client, pytest.raises(ValueError):
        client.list_tasks(page=page, size=size)
    assert wire.requests == []


# -- tolerant parsing -------------------------------------------------------------------


def test_unknown_status_and_extra_fields_do_not_break_parsing() -> None:
    data = task_data("rendering", progress=0.4, width=1024, eta={"s": 3})
    wire = Wire(env(200, data))
    with make(wire) as client:
        task = client.get_task(TASK_ID)
    assert task.status == "rendering"
    assert not task.is_terminal and not task.is_known_status
    assert task.raw["progress"] == 0.4


def test_malformed_output_items_are_skipped_and_odd_numbers_tolerated() -> None:
    output = [
        {"url": "https://cdn.example/ok.png", "type": "image", "expireAt": "1760604890"},
        {"type": "image"},
        {"url": "ftp://cdn.example/x.png"},
        "https://cdn.example/bare-string.png",
        None,
        {"url": "https://cdn.example/no-type.png"},
    ]
    wire = Wire(env(200, task_data("success", output=output, created="1760000000", completed=None)))
    with make(wire) as client:
        task = client.get_task(TASK_ID)
    assert [o.url for o in task.outputs] == ["https://cdn.example/ok.png", "https://cdn.example/no-type.png"]
    assert task.outputs[0].expire_at == 1_760_604_890
    assert task.outputs[1].type == "image"
    assert (task.created, task.completed) == (1_760_000_000, 0)


def test_failure_reason_is_parsed_from_an_object_or_a_string() -> None:
    wire = Wire(
        env(200, task_data("fail", error={"code": "TASK_FAILED", "message": "upstream rejected the prompt"})),
        env(200, task_data("fail", error="safety system")),
    )
    with make(wire) as client:
        first, second = client.get_task(TASK_ID), client.get_task(TASK_ID)
    assert (first.error.code, first.error.message) == ("TASK_FAILED", "upstream rejected the prompt")
    assert (second.error.code, second.error.message) == ("UNKNOWN", "safety system")


def test_task_answer_without_task_id_is_malformed() -> None:
    wire = Wire(env(200, {"status": "queued"}), env(200, None), env(200, ["x"]))
    with make(wire) as client:
        for _ in range(3):
            with pytest.raises(E.MalformedResponseError, match="taskId"):
                client.get_task(TASK_ID)
    assert len(wire.requests) == 3  # a 2xx that makes no sense is not retried


def test_a_parser_crash_never_escapes_as_anything_but_a_hiapi_error() -> None:
    # "inf" as a timestamp string makes int(float(...)) overflow inside the models.
    wire = Wire(env(200, task_data(created="inf")), env(200, {"list": [task_data()], "total": "1e999"}))
    with make(wire) as client:
        for call in (lambda: client.get_task(TASK_ID), lambda: client.list_tasks()):
            try:
                result = call()
            except E.HiAPIError as exc:
                assert isinstance(exc, E.MalformedResponseError)
            else:
                assert isinstance(result, Task | TaskPage)


# -- wire faults the simulator cannot produce ---------------------------------------------

HTML_502 = (
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>"
    "<hr><center>nginx</center>" + "<p>padding</p>" * 200 + "</body></html>"
)


def test_html_error_page_is_malformed_with_a_short_tag_free_message() -> None:
    wire = Wire(raw(502, HTML_502, {"content-type": "text/html"}))
    with make(wire, max_retries=0) as client, pytest.raises(E.MalformedResponseError) as info:
        client.get_task(TASK_ID)
    err = info.value
    assert err.status == 502
    assert "502 Bad Gateway" in err.message
    assert "<" not in err.message and ">" not in err.message
    assert len(err.message) < 200


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"", "empty body"),
        (b"   \n", "empty body"),
        (b"Service temporarily unavailable", "not JSON"),
        (b'{"code": 200, "data": ', "not JSON"),
        (b"[1, 2, 3]", "not HiAPI's envelope"),
        (b'{"taskId": "tk-hiapi-1", "status": "queued"}', "not HiAPI's envelope"),
        (b'{"code": "ok", "data": {}}', "not a number"),
        (b"[" * 100_000 + b"]" * 100_000, "not"),
        (b"\xff\xfe\x00garbage", "not JSON"),
    ],
    ids=["empty", "blank", "text", "truncated", "list", "bare-task", "code-text", "deep", "binary"],
)
def test_non_envelope_answers_are_malformed(content: bytes, what: str) -> None:
    wire = Wire(raw(200, content))
    with make(wire) as client, pytest.raises(E.MalformedResponseError) as info:
        client.get_task(TASK_ID)
    assert what in info.value.message
    assert info.value.status == 200
    assert len(info.value.message) < 250
    assert len(wire.requests) == 1


def test_huge_body_is_refused_with_a_short_message() -> None:
    huge = b'{"code":200,"message":"' + b"A" * (MAX_RESPONSE_BYTES + 10) + b'","data":null}'
    wire = Wire(raw(200, huge))
    with make(wire) as client, pytest.raises(E.MalformedResponseError, match="larger than") as info:
        client.list_tasks()
    assert len(info.value.message) < 120


def test_envelope_code_not_2xx_inside_http_200_is_an_error() -> None:
    wire = Wire(env(200, None, code=402, message="balance too low"))
    with make(wire) as client, pytest.raises(E.InsufficientBalanceError) as info:
        client.get_task(TASK_ID)
    assert info.value.status == 402 and info.value.server_message == "balance too low"
    assert len(wire.requests) == 1


def test_string_envelope_code_is_tolerated() -> None:
    wire = Wire(env(200, task_data(), code="200"))
    with make(wire) as client:
        assert client.get_task(TASK_ID).task_id == TASK_ID


# -- error mapping --------------------------------------------------------------------------

NEVER_RETRIED = [
    pytest.param(400, "INVALID_REQUEST", E.InvalidRequestError, id="400"),
    pytest.param(401, None, E.AuthenticationError, id="401"),
    pytest.param(402, None, E.InsufficientBalanceError, id="402"),
    pytest.param(415, None, E.UnsupportedMediaTypeError, id="415"),
    pytest.param(404, None, E.NotFoundError, id="404"),
    pytest.param(422, "IDEMPOTENCY_KEY_MISMATCH", E.IdempotencyKeyMismatchError, id="422"),
    pytest.param(503, "MODEL_UNAVAILABLE", E.UnavailableError, id="model-unavailable"),
    pytest.param(500, None, E.UnavailableError, id="500"),
]


@pytest.mark.parametrize(("status", "error_code", "cls"), NEVER_RETRIED)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_errors_that_are_never_retried(status: int, error_code: str | None, cls: type, method: str) -> None:
    wire = Wire(env(status, None, message="nope", error_code=error_code, headers={"Retry-After": "1"}))
    sleeps = Sleeps()
    with make(wire, sleeps) as client, pytest.raises(cls) as info:
        if method == "GET":
            client.get_task(TASK_ID)
        else:
            client.create_task(TaskRequest("one"))
    assert len(wire.requests) == 1
    assert sleeps == []
    assert info.value.status == status
    assert info.value.error_code == error_code
    assert info.value.server_message == "nope"
    if status == 402:
        assert "not created and not charged" in info.value.message
        assert "top up your HiAPI balance" in info.value.message
    elif status == 415:
        assert "bug in the studio" in info.value.message
    else:
        assert info.value.message == "nope"


def test_error_without_message_gets_a_default_one() -> None:
    wire = Wire(lambda r: httpx.Response(404, json={"code": 404, "data": None}))
    with make(wire) as client, pytest.raises(E.NotFoundError, match="HTTP 404"):
        client.get_task(TASK_ID)


# -- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_get_retries_busy_answers_then_succeeds(status: int) -> None:
    wire = Wire(env(status, None, message="busy"), env(200, task_data("handling")))
    sleeps = Sleeps()
    with make(wire, sleeps) as client:
        assert client.get_task(TASK_ID).status == "handling"
    assert len(wire.requests) == 2
    assert len(sleeps) == 1 and 0.5 <= sleeps[0] <= 0.55


@pytest.mark.parametrize("code", ["TASK_TIMEOUT", "STORAGE_UNAVAILABLE"])
def test_get_retries_documented_transient_codes(code: str) -> None:
    wire = Wire(env(500, None, error_code=code), env(200, task_data()))
    with make(wire) as client:
        assert client.get_task(TASK_ID).task_id == TASK_ID
    assert len(wire.requests) == 2


def test_get_honours_retry_after_seconds() -> None:
    wire = Wire(env(429, None, headers={"Retry-After": "3"}), env(200, task_data()))
    sleeps = Sleeps()
    with make(wire, sleeps) as client:
        client.get_task(TASK_ID)
    assert len(sleeps) == 1 and 3.0 <= sleeps[0] <= 3.06


def test_get_honours_retry_after_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=5)
    wire = Wire(
        env(503, None, headers={"Retry-After": format_datetime(when, usegmt=True)}), env(200, task_data())
    )
    sleeps = Sleeps()
    with make(wire, sleeps) as client:
        client.get_task(TASK_ID)
    assert len(sleeps) == 1 and 3.5 <= sleeps[0] <= 5.6


def test_retry_after_is_capped() -> None:
    wire = Wire(env(429, None, headers={"Retry-After": "3600"}))
    sleeps = Sleeps()
    with make(wire, sleeps, retry_after_cap=60.0, max_retries=1) as client:
        with pytest.raises(E.RateLimitedError) as info:
            client.get_task(TASK_ID)
    assert info.value.retry_after == 60.0
    assert len(sleeps) == 1 and 60.0 <= sleeps[0] <= 60.06


def test_backoff_doubles_and_is_capped_without_retry_after() -> None:
    wire = Wire(env(503, None))
    sleeps = Sleeps()
    with make(wire, sleeps, max_retries=4, backoff_base=0.5, backoff_cap=1.5) as client:
        with pytest.raises(E.UnavailableError):
            client.get_task(TASK_ID)
    assert len(wire.requests) == 5
    for got, base in zip(sleeps, [0.5, 1.0, 1.5, 1.5], strict=True):
        assert base <= got <= base * 1.1


def test_exhausted_retries_raise_the_last_error_with_retry_after() -> None:
    wire = Wire(
        env(503, None, message="busy"), env(429, None, message="slow down", headers={"Retry-After": "2"})
    )
    sleeps = Sleeps()
    with make(wire, sleeps) as client, pytest.raises(E.RateLimitedError) as info:
        client.get_task(TASK_ID)
    assert info.value.retry_after == 2.0
    assert info.value.message == "slow down"
    assert len(wire.requests) == 3 and len(sleeps) == 2
    assert sleeps[1] >= 2.0


def test_max_retries_zero_sends_once() -> None:
    wire = Wire(env(503, None))
    sleeps = Sleeps()
    with make(wire, sleeps, max_retries=0) as client, pytest.raises(E.UnavailableError):
        client.get_task(TASK_ID)
    assert len(wire.requests) == 1 and sleeps == []


def test_malformed_5xx_is_retried_on_get_but_malformed_2xx_is_not() -> None:
    wire = Wire(raw(502, HTML_502), raw(503, b""), env(200, task_data()))
    with make(wire) as client:
        assert client.get_task(TASK_ID).task_id == TASK_ID
    assert len(wire.requests) == 3


@pytest.mark.parametrize("exc", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError])
def test_network_errors_on_get_are_retried_then_raised_as_connection_errors(exc: type[Exception]) -> None:
    wire = Wire(exc)
    sleeps = Sleeps()
    with make(wire, sleeps) as client, pytest.raises(E.HiAPIConnectionError) as info:
        client.get_task(TASK_ID)
    assert len(wire.requests) == 3 and len(sleeps) == 2
    assert isinstance(info.value.__cause__, exc)
    assert exc.__name__ in info.value.message
    assert "Idempotency-Key" not in info.value.message  # only creates have an unknown outcome


def test_post_network_error_is_retried_with_the_same_key_and_body() -> None:
    wire = Wire(httpx.ReadError, httpx.ConnectTimeout, env(200, {"taskId": TASK_ID}))
    with make(wire) as client:
        created = client.create_task(TaskRequest("one"), idempotency_key="sub-7")
    assert created.task_id == TASK_ID
    assert wire.keys == ["sub-7", "sub-7", "sub-7"]
    assert len({r.content for r in wire.requests}) == 1


def test_post_generated_key_is_made_before_sending_and_reused_on_retry() -> None:
    wire = Wire(httpx.ReadError, env(200, {"taskId": TASK_ID}, headers={"idempotent-replay": "true"}))
    with make(wire) as client:
        created = client.create_task(TaskRequest("one"))
    assert wire.keys[0] is not None and wire.keys == [created.idempotency_key] * 2
    assert created.replayed is True


def test_post_network_failure_exhausted_says_the_outcome_is_unknown_and_carries_the_key() -> None:
    wire = Wire(httpx.ReadTimeout)
    with make(wire) as client, pytest.raises(E.HiAPIConnectionError) as info:
        client.create_task(TaskRequest("one"), idempotency_key="sub-9")
    assert wire.keys == ["sub-9"] * 3
    assert info.value.idempotency_key == "sub-9"  # type: ignore[attr-defined]
    assert "may have been created" in info.value.message


@pytest.mark.parametrize("status", [429, 503])
def test_post_retries_429_and_503_because_it_has_a_key(status: int) -> None:
    wire = Wire(env(status, None, headers={"Retry-After": "1"}), env(200, {"taskId": TASK_ID}))
    sleeps = Sleeps()
    with make(wire, sleeps) as client:
        client.create_task(TaskRequest("one"))
    assert len(wire.requests) == 2 and wire.keys[0] == wire.keys[1]
    assert sleeps[0] >= 1.0


def test_post_409_processing_is_retried_after_retry_after_then_replays() -> None:
    wire = Wire(
        env(
            409,
            None,
            message="in flight",
            error_code="IDEMPOTENCY_KEY_PROCESSING",
            headers={"Retry-After": "2"},
        ),
        env(200, {"taskId": TASK_ID}, headers={"idempotent-replay": "true"}),
    )
    sleeps = Sleeps()
    with make(wire, sleeps) as client:
        created = client.create_task(TaskRequest("one"), idempotency_key="sub-1")
    assert created.replayed and created.task_id == TASK_ID
    assert wire.keys == ["sub-1", "sub-1"]
    assert sleeps[0] >= 2.0


def test_409_is_raised_when_it_never_clears() -> None:
    wire = Wire(env(409, None, error_code="IDEMPOTENCY_KEY_PROCESSING", headers={"Retry-After": "1"}))
    with make(wire) as client, pytest.raises(E.IdempotencyKeyInFlightError) as info:
        client.create_task(TaskRequest("one"))
    assert len(wire.requests) == 3
    assert info.value.retry_after == 1.0


def test_post_without_a_key_is_never_retried_on_a_network_error() -> None:
    # create_task always sends a key; the raw path shows what the policy does without one.
    wire = Wire(httpx.ReadError, env(200, {"taskId": TASK_ID}))
    sleeps = Sleeps()
    with make(wire, sleeps) as client, pytest.raises(E.HiAPIConnectionError):
        client._request("POST", "/v1/tasks", content=b"{}")
    assert len(wire.requests) == 1 and sleeps == []
    assert wire.keys == [None]


def test_retry_policy_table() -> None:
    p = RetryPolicy(max_retries=2)
    conn = E.HiAPIConnectionError("x")
    busy = E.error_for(503, None, "busy")
    limited = E.error_for(429, None, "slow")
    processing = E.error_for(409, "IDEMPOTENCY_KEY_PROCESSING", "wait")
    mismatch = E.error_for(422, "IDEMPOTENCY_KEY_MISMATCH", "bug")
    html_5xx = E.MalformedResponseError("x", status=502)
    html_2xx = E.MalformedResponseError("x", status=200)
    for err in (conn, busy, limited, html_5xx):
        assert p.should_retry("GET", err, attempt=0, keyed=False)
        assert p.should_retry("POST", err, attempt=1, keyed=True)
        assert not p.should_retry("POST", err, attempt=0, keyed=False)
        assert not p.should_retry("GET", err, attempt=2, keyed=False)  # exhausted
    assert p.should_retry("POST", processing, attempt=0, keyed=True)
    assert not p.should_retry("GET", processing, attempt=0, keyed=False)
    for err in (mismatch, html_2xx, E.error_for(400, "INVALID_REQUEST", "x"), E.error_for(401, None, "x")):
        assert not p.should_retry("GET", err, attempt=0, keyed=False)
        assert not p.should_retry("POST", err, attempt=0, keyed=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("120", 60.0),
        ("-1", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
        ("inf", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: now
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:30:00 GMT", 60.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(value, cap=60.0, now=now) == expected


# -- key hygiene ----------------------------------------------------------------------------


def test_key_echoed_by_the_server_is_redacted_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    odd_key = "hk_live_NoSkPrefix_98765"  # not shaped like sk-...: redacted because it is ours
    for key in (KEY, odd_key):
        wire = Wire(
            env(401, None, message=f"invalid key {key}"),
            raw(502, f"<html><pre>Authorization: Bearer {key}</pre></html>"),
            raw(200, f"not json {key}"),
            env(400, None, message=f"bad {key}", error_code="INVALID_REQUEST"),
        )
        errors: list[E.HiAPIError] = []
        with HiAPIClient(key, base_url=BASE, transport=httpx.MockTransport(wire), sleep=Sleeps(),
                         max_retries=0) as client:  # fmt: skip
            assert key not in repr(client)
            for call in (client.get_task, client.get_task, client.get_task):
                with pytest.raises(E.HiAPIError) as info:
                    call(TASK_ID)
                errors.append(info.value)
            with pytest.raises(E.HiAPIError) as info:
                client.create_task(TaskRequest("one"))
            errors.append(info.value)
        assert [type(e) for e in errors] == [
            E.AuthenticationError,
            E.MalformedResponseError,
            E.MalformedResponseError,
            E.InvalidRequestError,
        ]
        for err in errors:
            assert "[redacted]" in err.message
            assert_no_key(err, key)
        assert key not in caplog.text


def test_network_errors_chained_from_httpx_never_carry_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    with HiAPIClient(KEY, base_url=f"http://127.0.0.1:{port}", sleep=sleeps) as client:
        with pytest.raises(E.HiAPIConnectionError) as info:
            client.get_task(TASK_ID)
        with pytest.raises(E.HiAPIConnectionError) as post_info:
            client.create_task(TaskRequest("one"))
    assert len(sleeps) == 4  # two retries for each call
    for err in (info.value, post_info.value):
        assert isinstance(err.__cause__, httpx.ConnectError)
        assert_no_key(err)
    assert KEY not in caplog.text
    assert all(KEY not in str(r.args) for r in caplog.records)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.05)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    for c in conns:
        c.close()
    srv.close()


def test_read_timeout_is_a_connection_error(silent_server: int) -> None:
    sleeps = Sleeps()
    # The server accepts and never answers: only the client's read timeout can end this call
    # (a hang is the test's own timeout), so no clock is read here.
    with HiAPIClient(KEY, base_url=f"http://127.0.0.1:{silent_server}", timeout=0.15, max_retries=1,
                     sleep=sleeps) as client:  # fmt: skip
        with pytest.raises(E.HiAPIConnectionError, match="timed out") as info:
            client.get_task(TASK_ID)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert len(sleeps) == 1
    assert_no_key(info.value)


def test_debug_log_has_method_path_status_attempt_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="studio.client")
    wire = Wire(env(503, None), env(200, task_data()))
    with make(wire) as client:
        client.get_task(TASK_ID)
    lines = [r.getMessage() for r in caplog.records if r.name == "studio.client"]
    assert f"GET /v1/tasks/{TASK_ID} -> 503 (attempt 1)" in lines
    assert f"GET /v1/tasks/{TASK_ID} -> 200 (attempt 2)" in lines
    assert any("retrying in" in line for line in lines)
    assert not any("Bearer" in line or KEY in line for line in lines)


# -- against the simulator, over real HTTP on loopback ---------------------------------------

OTHER_KEY = "sk-test-other-tenant-000000000000"


@pytest.fixture(scope="module")
def simulator() -> Iterator[Any]:
    from studio.simulator import Simulator

    sim = Simulator(
        host="127.0.0.1",
        port=0,
        api_keys=[KEY, OTHER_KEY],
        signing_key=None,
        min_duration=0.05,
        max_duration=0.2,
        seed=1,
    ).start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(simulator: Any) -> Any:
    simulator.reset_faults()
    simulator.reset_stats()
    return simulator


def sim_client(sim: Any, sleeps: Sleeps | None = None, key: str = KEY, **kw: Any) -> HiAPIClient:
    return HiAPIClient(key, base_url=sim.base_url, sleep=sleeps if sleeps is not None else Sleeps(), **kw)


def posts(sim: Any) -> dict[str, int]:
    return {k: v for k, v in sim.stats()["requests"].items() if k.startswith("POST ")}


def wait_terminal(client: HiAPIClient, task_id: str, deadline_s: float = 60.0) -> Task:
    """The task once it is terminal (polled every 50 ms); AssertionError if it never gets there."""
    return wait_for(lambda: (task := client.get_task(task_id)).is_terminal and task, deadline_s)


def test_sim_create_poll_and_list_round_trip(sim: Any) -> None:
    with sim_client(sim, model="gpt-image-2/text-to-image") as client:
        created = client.create_task(TaskRequest('a poster saying "HELLO"', "16:9", "2K"))
        task = wait_terminal(client, created.task_id)
        page = client.list_tasks(page=1, size=5)
    assert re.fullmatch(r"tk-hiapi-[0-9A-Z]{26}", created.task_id)
    assert created.replayed is False
    assert task.task_id == created.task_id
    assert task.status == "success" and task.model == "gpt-image-2/text-to-image"
    assert task.completed >= task.created > 0
    assert len(task.outputs) == 1 and task.outputs[0].url.startswith(sim.base_url)
    assert page.tasks[0].task_id == created.task_id  # newest first
    assert page.total is not None and page.total >= 1
    stats = sim.stats()
    assert stats["tasks_created"] == 1
    assert stats["requests"]["POST /v1/tasks 200"] == 1


def test_sim_failed_task_is_a_task_with_its_error(sim: Any) -> None:
    with sim_client(sim) as client:
        created = client.create_task(TaskRequest("a cat [sim:fail]"))
        task = wait_terminal(client, created.task_id)
    assert task.status == "fail" and task.outputs == ()
    assert task.error is not None and task.error.code == "TASK_FAILED"


def test_sim_wrong_key_is_401_and_never_retried(sim: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-test-wrong-key-ZZZZZZZZZZZZ"
    sleeps = Sleeps()
    with sim_client(sim, sleeps, key=wrong) as client:
        for call in (
            lambda: client.get_task(TASK_ID),
            lambda: client.list_tasks(),
            lambda: client.create_task(TaskRequest("a cat")),
        ):
            with pytest.raises(E.AuthenticationError) as info:
                call()
            assert info.value.status == 401
            assert_no_key(info.value, wrong)
    assert sleeps == []
    requests = sim.stats()["requests"]
    assert requests == {"GET /v1/tasks/{id} 401": 1, "GET /v1/tasks 401": 1, "POST /v1/tasks 401": 1}
    assert wrong not in caplog.text


@pytest.mark.parametrize(("request_", "field", "fragment"), INVALID_REQUESTS)
def test_sim_invalid_request_never_reaches_the_server(
    sim: Any, request_: TaskRequest, field: str, fragment: str
) -> None:
    with sim_client(sim) as client, pytest.raises(E.RequestValidationError) as info:
        client.create_task(request_)
    assert field in {p.field for p in info.value.problems}
    assert LABELS[field] in str(info.value)
    assert posts(sim) == {}
    assert sim.stats()["tasks_created"] == 0


def test_sim_server_side_400_is_invalid_request_and_not_retried(sim: Any) -> None:
    sleeps = Sleeps()
    with (
        sim_client(sim, sleeps, model="no-such-model") as client,
        pytest.raises(E.InvalidRequestError) as info,
    ):
        client.create_task(TaskRequest("a cat"))
    assert (info.value.status, info.value.error_code) == (400, "INVALID_REQUEST")
    assert "no-such-model" in info.value.message
    assert posts(sim) == {"POST /v1/tasks 400": 1} and sleeps == []


def test_sim_unknown_model_is_one_clear_sentence(sim: Any) -> None:
    with sim_client(sim, model="gpt-image-3") as client, pytest.raises(E.InvalidRequestError) as info:
        client.create_task(TaskRequest("a cat"))
    assert str(info.value).startswith("HiAPI does not know the model 'gpt-image-3':")
    assert "'gpt-image-3' is not available" in info.value.server_message


@pytest.mark.parametrize("model", ["gpt-image-2", "gpt-image-2/text-to-image", "gpt-image-2/image-to-image"])
def test_sim_accepts_every_current_model_id(sim: Any, model: str, reference_urls: Any) -> None:
    refs = tuple(reference_urls(1))  # the simulator fetches them, as HiAPI does
    with sim_client(sim, model=model) as client:
        plain = wait_terminal(client, client.create_task(TaskRequest("a cat")).task_id)
        square = client.create_task(TaskRequest("a cat", "1:1", "4K", references=refs))
        with_refs = wait_terminal(client, square.task_id)
    assert plain.status == with_refs.status == "success"
    assert plain.model == ("gpt-image-2" if model == "gpt-image-2" else "gpt-image-2/text-to-image")
    assert with_refs.model == "gpt-image-2/image-to-image"


def test_sim_415_for_a_body_that_is_not_json_is_never_retried(sim: Any) -> None:
    sleeps = Sleeps()
    with sim_client(sim, sleeps) as client, pytest.raises(E.UnsupportedMediaTypeError) as info:
        # Only a bug could send this: the client always sets Content-Type itself.
        client._http.headers["Content-Type"] = "text/plain"
        client.create_task(TaskRequest("a cat"))
    assert info.value.status == 415 and "bug in the studio" in info.value.message
    assert posts(sim) == {"POST /v1/tasks 415": 1} and sleeps == []


def test_sim_unknown_task_is_404(sim: Any) -> None:
    with sim_client(sim) as client, pytest.raises(E.NotFoundError) as info:
        client.get_task("tk-hiapi-00000000000000000000000000")
    assert info.value.status == 404
    assert sim.stats()["requests"] == {"GET /v1/tasks/{id} 404": 1}


def test_sim_another_keys_task_is_404(sim: Any) -> None:
    with sim_client(sim) as mine, sim_client(sim, key=OTHER_KEY) as theirs:
        created = mine.create_task(TaskRequest("mine"))
        with pytest.raises(E.NotFoundError):
            theirs.get_task(created.task_id)
        assert all(t.task_id != created.task_id for t in theirs.list_tasks(size=100).tasks)
        assert mine.get_task(created.task_id).task_id == created.task_id


@pytest.mark.parametrize(("fault", "status"), [("get_429_rate", 429), ("get_503_rate", 503)])
def test_sim_get_retries_honour_retry_after(sim: Any, fault: str, status: int) -> None:
    with sim_client(sim) as setup:
        task_id = setup.create_task(TaskRequest("a cat")).task_id
    sim.set_faults(**{fault: 1.0, "retry_after": 1})
    sleeps = Sleeps(on_sleep=lambda s: sim.set_faults(**{fault: 0.0}))
    with sim_client(sim, sleeps) as client:
        assert client.get_task(task_id).task_id == task_id
    assert len(sleeps) == 1 and sleeps[0] >= 1.0
    requests = sim.stats()["requests"]
    assert requests[f"GET /v1/tasks/{{id}} {status}"] == 1
    assert requests["GET /v1/tasks/{id} 200"] == 1


def test_sim_get_retry_after_as_http_date(sim: Any) -> None:
    sim.set_faults(get_503_rate=1.0, retry_after=2, retry_after_as_date=True)
    sleeps = Sleeps(on_sleep=lambda s: sim.set_faults(get_503_rate=0.0))
    with sim_client(sim, sleeps) as client:
        client.list_tasks()
    assert len(sleeps) == 1 and 0.5 < sleeps[0] <= 2.2  # whole seconds in the date, minus elapsed time


def test_sim_rate_limit_exhausted_raises_with_retry_after(sim: Any) -> None:
    sim.set_faults(get_429_rate=1.0, retry_after=3)
    sleeps = Sleeps()
    with sim_client(sim, sleeps) as client, pytest.raises(E.RateLimitedError) as info:
        client.get_task("tk-hiapi-00000000000000000000000000")
    assert info.value.retry_after == 3.0
    assert len(sleeps) == 2 and all(s >= 3.0 for s in sleeps)
    assert sim.stats()["requests"] == {"GET /v1/tasks/{id} 429": 3}


def test_sim_dropped_create_answer_is_resent_and_replayed_not_recreated(sim: Any) -> None:
    sim.set_faults(drop_create_answer_rate=1.0)
    sleeps = Sleeps(on_sleep=lambda s: sim.set_faults(drop_create_answer_rate=0.0))
    with sim_client(sim, sleeps) as client:
        created = client.create_task(TaskRequest("a lighthouse"), idempotency_key="sub-dropped-1")
        assert client.get_task(created.task_id).task_id == created.task_id
    stats = sim.stats()
    assert stats["tasks_created"] == 1
    assert stats["create_answers_dropped"] == 1
    assert stats["idempotent_replays"] == 1
    assert created.replayed is True
    assert created.idempotency_key == "sub-dropped-1"
    assert posts(sim) == {"POST /v1/tasks dropped": 1, "POST /v1/tasks 200": 1}
    assert len(sleeps) == 1


def test_sim_dropped_create_answer_with_a_generated_key(sim: Any) -> None:
    sim.set_faults(drop_create_answer_rate=1.0)
    sleeps = Sleeps(on_sleep=lambda s: sim.set_faults(drop_create_answer_rate=0.0))
    with sim_client(sim, sleeps) as client:
        created = client.create_task(TaskRequest("a lighthouse"))
    assert created.replayed is True
    assert sim.stats()["tasks_created"] == 1
    assert sim.task_count() >= 1 and created.task_id in {t.task_id for t in sim_list(sim)}


def sim_list(sim: Any) -> tuple[Task, ...]:
    with sim_client(sim) as client:
        return client.list_tasks(size=100).tasks


def test_sim_answer_never_comes_back_means_an_unknown_outcome(sim: Any) -> None:
    sim.set_faults(drop_create_answer_rate=1.0)
    with sim_client(sim, max_retries=0) as client, pytest.raises(E.HiAPIConnectionError) as info:
        client.create_task(TaskRequest("a lighthouse"), idempotency_key="sub-lost")
    assert info.value.idempotency_key == "sub-lost"  # type: ignore[attr-defined]
    assert sim.stats()["tasks_created"] == 1  # it was created: resend with the key, never without
    sim.set_faults(drop_create_answer_rate=0.0)
    with sim_client(sim) as client:
        again = client.create_task(TaskRequest("a lighthouse"), idempotency_key="sub-lost")
    assert again.replayed is True and sim.stats()["tasks_created"] == 1


@pytest.mark.parametrize("fault", ["post_429_rate", "post_503_rate"])
def test_sim_post_busy_is_retried_with_the_same_key(sim: Any, fault: str) -> None:
    sim.set_faults(**{fault: 1.0, "retry_after": 1})
    sleeps = Sleeps(on_sleep=lambda s: sim.set_faults(**{fault: 0.0}))
    with sim_client(sim, sleeps) as client:
        created = client.create_task(TaskRequest("a cat"))
    assert created.replayed is False  # the busy answer created nothing
    assert sleeps[0] >= 1.0
    assert sim.stats()["tasks_created"] == 1
    assert sum(posts(sim).values()) == 2


def test_sim_same_key_same_body_replays(sim: Any) -> None:
    with sim_client(sim) as client:
        first = client.create_task(TaskRequest("a cat", "4:3", "2K"), idempotency_key="sub-same")
        second = client.create_task(TaskRequest("a cat", "4:3", "2K"), idempotency_key="sub-same")
    assert (first.replayed, second.replayed) == (False, True)
    assert first.task_id == second.task_id
    assert sim.stats()["tasks_created"] == 1


def test_sim_same_key_other_body_is_422_and_never_retried(sim: Any) -> None:
    sleeps = Sleeps()
    with sim_client(sim, sleeps) as client:
        client.create_task(TaskRequest("a cat"), idempotency_key="sub-reused")
        with pytest.raises(E.IdempotencyKeyMismatchError) as info:
            client.create_task(TaskRequest("a dog"), idempotency_key="sub-reused")
    assert (info.value.status, info.value.error_code) == (422, "IDEMPOTENCY_KEY_MISMATCH")
    assert sleeps == []
    assert posts(sim) == {"POST /v1/tasks 200": 1, "POST /v1/tasks 422": 1}


def test_sim_409_while_the_first_create_is_in_flight_is_retried_then_replayed(sim: Any) -> None:
    sim.set_faults(create_delay_s=0.8)
    results: dict[str, Any] = {}
    request = TaskRequest("a slow cat")
    sending = threading.Event()

    class Signalling(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            sending.set()
            return super().handle_request(request)

    def first() -> None:
        with sim_client(sim, transport=Signalling()) as client:
            results["first"] = client.create_task(request, idempotency_key="sub-inflight")

    t = threading.Thread(target=first)
    t.start()
    assert sending.wait(5)
    # The simulator holds the first create's key (for 0.8 s) before the second is sent.
    wait_for(lambda: any(key == "sub-inflight" for _, key in list(sim._idem)), step=0.01)
    sleeps = Sleeps(on_sleep=lambda s: t.join(5))
    with sim_client(sim, sleeps) as client:
        second = client.create_task(request, idempotency_key="sub-inflight")
    t.join(5)
    assert results["first"].replayed is False
    assert second.replayed is True and second.task_id == results["first"].task_id
    assert len(sleeps) == 1 and sleeps[0] >= 1.0  # the simulator's Retry-After: 1
    assert sim.stats()["tasks_created"] == 1
    assert posts(sim)["POST /v1/tasks 409"] == 1


def test_sim_one_client_shared_by_many_threads(sim: Any) -> None:
    errors: list[BaseException] = []
    ids: list[str] = []
    lock = threading.Lock()
    with sim_client(sim) as client:

        def work(i: int) -> None:
            try:
                created = client.create_task(TaskRequest(f"cat number {i}"))
                task = client.get_task(created.task_id)
                with lock:
                    ids.append(task.task_id)
            except BaseException as exc:  # noqa: BLE001
                with lock:
                    errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(10)
    assert errors == []
    assert len(set(ids)) == 16
    stats = sim.stats()
    assert stats["tasks_created"] == 16
    assert stats["connections"] <= 16  # pooled: no connection per request


def test_sim_nothing_logged_or_raised_carries_the_key(sim: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    sim.set_faults(drop_create_answer_rate=1.0, get_503_rate=1.0)
    # max_retries=0: a resent create would be answered by a (never dropped) replay.
    with sim_client(sim, max_retries=0) as client:
        for call in (lambda: client.create_task(TaskRequest("x")), lambda: client.get_task(TASK_ID)):
            try:
                call()
            except E.HiAPIError as exc:
                errors.append(exc)
    assert [type(e) for e in errors] == [E.HiAPIConnectionError, E.UnavailableError]
    for err in errors:
        assert_no_key(err)
    assert any(r.name == "studio.client" for r in caplog.records)
    assert KEY not in caplog.text
