"""Fuzzing the callback receiver over real HTTP: arbitrary bodies, headers and tokens.

`tests/test_callbacks.py` fuzzes `CallbackReceiver.receive` in-process; this
sends the same kind of junk through the real route of a running server
(Starlette, the body cap, the thread hand-off, SQLite), including deliveries
that are correctly signed but malformed. Whatever arrives: never a 5xx, never
a stored record.
"""

from __future__ import annotations

import json
import string
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio.simulator import sign
from tests.test_callback_route import SECRET, TOKEN, route, rows, server  # noqa: F401
from tests.test_fuzz import JSON, STATUS, TASKISH

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))

# What a header value can carry on the wire (no control characters, no surrounding spaces).
HEADER_TEXT = st.text(
    alphabet=string.ascii_letters + string.digits + string.punctuation + " ", max_size=80
).map(str.strip)
TOKENS = st.one_of(
    st.just(TOKEN),
    st.text(alphabet=string.ascii_letters + string.digits + "-_.%~", min_size=1, max_size=80),
    st.just(TOKEN + "x"),
    st.just(TOKEN.upper()),
)
BODIES = st.one_of(
    st.binary(max_size=2000),
    JSON.map(lambda d: json.dumps(d).encode()),
    st.builds(lambda t, s: json.dumps(dict(t, status=s)).encode(), TASKISH, STATUS),
)


def _signed_headers(body: bytes, stamp: str) -> dict[str, str]:
    return {"X-HiAPI-Timestamp": stamp, "X-HiAPI-Signature": sign(SECRET, stamp, body)}


@pytest.fixture(scope="module")
def client(server):  # noqa: F811
    with httpx.Client(timeout=20) as c:
        yield c


@FUZZ
@given(
    token=TOKENS,
    body=BODIES,
    headers=st.dictionaries(
        st.sampled_from(
            ["X-HiAPI-Timestamp", "X-HiAPI-Signature", "Content-Type", "X-Forwarded-For", "Cookie"]
        ),
        HEADER_TEXT,
        max_size=4,
    ),
    method=st.sampled_from(["POST", "POST", "POST", "PUT", "DELETE"]),  # GET serves the page shell
)
def test_arbitrary_deliveries_get_a_4xx_and_store_nothing(server, client, token, body, headers, method):  # noqa: F811
    r = client.request(method, route(server, token), content=body, headers=headers)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])


@FUZZ
@given(
    body=BODIES,
    stamp=st.one_of(
        st.just("now"), st.integers(-(2**40), 2**40).map(str), HEADER_TEXT.filter(lambda s: s.strip() != "")
    ),
)
def test_signed_junk_never_breaks_the_receiver(server, client, body, stamp):  # noqa: F811
    stamp = str(int(time.time())) if stamp == "now" else stamp
    r = client.post(route(server), content=body, headers=_signed_headers(body, stamp))
    # A correctly signed terminal task for a task nobody here knows is acknowledged (redelivery
    # would not help) but never kept; everything else is a 4xx.
    assert r.status_code < 500, (r.status_code, r.text[:200])
    if 200 <= r.status_code < 300:
        task = json.loads(body)
        assert task.get("status") in ("success", "fail")


def test_after_all_that_nothing_was_stored(server, client):  # noqa: F811
    assert rows(server) == {"submissions": 0, "task_events": 0, "outputs": 0, "pending_callbacks": 0}
    health = client.get(server.url + "/api/health").json()
    assert health["status"] == "ok"  # the tracker and the server survived it
