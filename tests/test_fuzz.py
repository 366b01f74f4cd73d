"""Fuzzing with hypothesis: the validation function, the task parser, the client and the store.

Properties, not examples: whatever arrives, nothing here raises anything but
the documented errors, and what is kept is kept exactly.
"""

from __future__ import annotations

import json
import tempfile
import unicodedata
import uuid
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from studio.client import HiAPIClient
from studio.errors import HiAPIError
from studio.models import MAX_STATUS_CHARS, Task, TaskPage, TaskRequest, TaskStatus
from studio.ratios import RATIO_NAMES, RESOLUTIONS, combination_problem
from studio.store import TERMINAL_STATES, Store
from studio.validation import MAX_PROMPT_CHARS, validate_request

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELDS = {"prompt", "aspect_ratio", "resolution", "callback.url", "callback.when"}

# Characters that trip up naive text handling.
COMBINING = st.sampled_from(["\u0301", "\u0308", "\u0327", "\u20dd", "\u0489"])
EMOJI = st.sampled_from(["😀", "👩‍👩‍👧‍👦", "🇫🇷", "👍🏽", "🏳️‍🌈"])
RTL = st.sampled_from(["שלום", "مرحبا", "\u202e", "\u200f", "\u061c"])
INVISIBLE = st.sampled_from(["\u200b", "\u200e", "\u2060", "\ufeff", " ", "\t", "\n"])
NASTY = st.one_of(
    st.text(min_size=1, max_size=8),
    COMBINING,
    EMOJI,
    RTL,
    INVISIBLE,
    st.just("\x00"),
    st.sampled_from(["\ud800", "\udfff"]),  # lone surrogates: a str can hold them, UTF-8 cannot
)
PROMPTS = st.lists(NASTY, max_size=12).map("".join)
ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.binary(), st.text(), PROMPTS)


def _blank(text: str) -> bool:
    return all(c.isspace() or unicodedata.category(c) in ("Zs", "Zl", "Zp", "Cc", "Cf") for c in text)


def _expected_valid(prompt, ratio, res) -> bool:
    """An independent statement of the rules, to compare the one function with."""
    return (
        isinstance(prompt, str)
        and not _blank(prompt)
        and len(prompt) <= MAX_PROMPT_CHARS
        and "\x00" not in prompt
        and not any("\ud800" <= c <= "\udfff" for c in prompt)
        and ratio in RATIO_NAMES
        and res in RESOLUTIONS
        and combination_problem(ratio, res) is None
    )


# -- the validation function ---------------------------------------------------------------


def _check(prompt, ratio, res) -> None:
    problems = validate_request(prompt, ratio, res)
    assert (problems == []) == _expected_valid(prompt, ratio, res)
    for p in problems:
        assert p.field in FIELDS
        assert isinstance(p.message, str) and p.message.strip()
        # A refusal must be showable and storable: the message is valid UTF-8.
        p.message.encode("utf-8")


@FUZZ
@given(prompt=PROMPTS, ratio=st.sampled_from(RATIO_NAMES), res=st.sampled_from(RESOLUTIONS))
def test_validation_of_nasty_text_agrees_with_the_rules(prompt, ratio, res):
    _check(prompt, ratio, res)


@FUZZ
@given(prompt=ANYTHING, ratio=ANYTHING, res=ANYTHING)
def test_validation_of_anything_never_raises(prompt, ratio, res):
    _check(prompt, ratio, res)


@FUZZ
@given(unit=st.one_of(COMBINING, EMOJI, RTL, st.characters(min_codepoint=0x20, exclude_categories=("Cs",))))
def test_the_20000_boundary_counts_code_points(unit):
    base = "a" + unit * ((MAX_PROMPT_CHARS - 1) // len(unit))
    prompt = base + "b" * (MAX_PROMPT_CHARS - len(base))
    assert len(prompt) == MAX_PROMPT_CHARS
    assume("\x00" not in prompt)
    assert validate_request(prompt, "16:9", "2K") == []
    [problem] = validate_request(prompt + "z", "16:9", "2K")
    assert problem.field == "prompt"
    assert "20,001 characters" in problem.message and "Shorten it by 1 character." in problem.message


@FUZZ
@given(prefix=PROMPTS, suffix=PROMPTS)
def test_nul_is_refused_anywhere_at_any_length(prefix, suffix):
    problems = validate_request(prefix + "\x00" + suffix, "1:1", "1K")
    assert any(p.field == "prompt" and "NUL" in p.message for p in problems)


@pytest.fixture(scope="module")
def store():
    with tempfile.TemporaryDirectory() as d:
        s = Store(Path(d) / "fuzz.db")
        yield s
        s.close()


@FUZZ
@given(prompt=PROMPTS)
def test_every_valid_prompt_survives_the_wire_and_the_store_exactly(store, prompt):
    assume(validate_request(prompt, "1:1", "1K") == [])
    request = TaskRequest(prompt, "1:1", "1K")
    wire = json.dumps(request.to_body(), ensure_ascii=False).encode("utf-8")
    assert TaskRequest.from_body(json.loads(wire)).prompt == prompt
    sid = store.add_submission(request, idempotency_key=f"k-{uuid.uuid4().hex}", creative_id="c")
    assert store.submission(sid).prompt == prompt


# -- the task parser -----------------------------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(), PROMPTS
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
STATUS = st.one_of(st.sampled_from([*TaskStatus.KNOWN, "paused", "QUEUED", "moderation"]), st.text(), PROMPTS)
TASKISH = st.fixed_dictionaries(
    {"taskId": st.text(min_size=1, max_size=40)},
    optional={
        "status": st.one_of(STATUS, JSON),
        "model": JSON,
        "created": JSON,
        "completed": JSON,
        "output": st.one_of(
            JSON,
            st.lists(st.fixed_dictionaries({}, optional={"url": JSON, "type": JSON, "expireAt": JSON})),
        ),
        "error": st.one_of(JSON, st.fixed_dictionaries({}, optional={"code": JSON, "message": JSON})),
        "progress": JSON,
        "futureField": JSON,
    },
)


@FUZZ
@given(data=st.one_of(JSON, TASKISH))
def test_task_parser_never_raises(data):
    task = Task.parse(data)
    if task is None:
        return
    assert isinstance(task.status, str) and task.status
    assert all(o.url.startswith(("http://", "https://")) for o in task.outputs)
    json.dumps(task.to_dict())  # always storable
    TaskPage.parse(data)
    TaskPage.parse([data, data])


@FUZZ
@given(data=TASKISH, status=STATUS)
def test_unknown_statuses_and_fields_are_kept(data, status):
    assume(not any("\ud800" <= c <= "\udfff" for c in data["taskId"]))
    data = dict(data, status=status)
    task = Task.parse(data)
    assert task is not None and task.task_id == data["taskId"]
    clean = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in status)
    assert task.status == (clean or "unknown")[:MAX_STATUS_CHARS]  # an unknown status is shown: capped
    assert task.raw == data  # every field, known or not, is kept as sent
    assert task.is_terminal == (status in TaskStatus.TERMINAL)


# -- the client and the store under arbitrary answers ---------------------------------------


def _client_answering(body: bytes, status: int) -> HiAPIClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"Content-Type": "application/json"})

    return HiAPIClient("sk-fuzz-0123456789", transport=httpx.MockTransport(handler), max_retries=0)


@FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=200),
        JSON.map(lambda d: json.dumps(d).encode()),
        st.builds(
            lambda d: json.dumps({"code": 200, "message": "success", "data": d}).encode(),
            st.one_of(JSON, TASKISH),
        ),
    ),
    status=st.sampled_from([200, 201, 400, 404, 429, 500, 502, 503]),
)
def test_client_raises_only_hiapi_errors_on_any_answer(body, status):
    client = _client_answering(body, status)
    try:
        task = client.get_task("tk-hiapi-fuzz")
        assert isinstance(task, Task)
    except HiAPIError as exc:
        assert exc.message and "sk-fuzz" not in exc.message
    finally:
        client.close()


@FUZZ
@given(
    reports=st.lists(st.one_of(TASKISH, st.fixed_dictionaries({"status": STATUS})), min_size=1, max_size=6)
)
def test_store_takes_any_sequence_of_reports(store, reports):
    # A fresh key per example: keys built from id()/hash() collide across examples.
    sid = store.add_submission(
        TaskRequest("p", "1:1", "1K"), idempotency_key=f"k-{uuid.uuid4().hex}", creative_id="c"
    )
    task_id = f"tk-{sid}"
    store.mark_created(sid, task_id)
    seen_terminal = None
    for report in reports:
        task = Task.parse(dict(report, taskId=task_id))
        store.record_task(task)
        if seen_terminal is None and task.status in TaskStatus.TERMINAL:
            seen_terminal = task.status
    state = store.submission(sid).state
    if seen_terminal:
        assert state == seen_terminal  # the first terminal report wins and sticks
    else:
        assert state not in TERMINAL_STATES


# -- text from outside, shown inside markdown -------------------------------------------------


@FUZZ
@given(
    text=st.one_of(PROMPTS, st.text(), st.just("see https://evil.example/x or www.evil.example, mail a@b.c"))
)
def test_outside_text_in_markdown_is_fully_escaped(text):
    from components.text import ZWSP, literal

    out = literal(text)
    # Every markdown punctuation mark is escaped, so nothing is interpreted…
    shown, i = [], 0
    while i < len(out):
        if out[i] == "\\":
            shown.append(out[i + 1])
            i += 2
            continue
        assert out[i] not in "\\`*_{}[]()<>#+-.!|~$:&=\"'", (out[i], out)
        shown.append(out[i])
        i += 1
    text_shown = "".join(shown)
    # …nothing can become a link…
    assert "://" not in text_shown and "www." not in text_shown.lower()
    assert "@" not in text_shown.replace(ZWSP + "@", "")
    # …and the reader sees exactly the text (whitespace collapsed).
    assert text_shown.replace(ZWSP, "") == " ".join(text.split()).replace(ZWSP, "")
