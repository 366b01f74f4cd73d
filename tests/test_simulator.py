"""The simulator, exercised over real HTTP with plain httpx, from HiAPI's documented contract."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import io
import json
import logging
import re
import subprocess
import sys
import threading
import time
from email.utils import parsedate_to_datetime

import httpx
import pytest
from PIL import Image, ImageChops, UnidentifiedImageError

from studio.ratios import RATIOS, pixel_size
from studio.simulator import Faults, Simulator, misspell, quoted_parts, realistic_duration
from studio.validation import validate_request
from tests.support import wait_for

KEY = "sk-test-alpha-0001"
OTHER_KEY = "sk-test-beta-0002"
SECRET = "whsec-0123456789abcdef"
TASK_ID_RE = re.compile(r"^tk-hiapi-[0-9A-Z]{26}$")
TERMINAL = ("success", "fail")
ORDER = ["queued", "handling", "archiving"]


# --------------------------------------------------------------------- fixtures


@pytest.fixture
def make_sim():
    started: list[Simulator] = []

    def make(**kw) -> Simulator:
        kw.setdefault("min_duration", 0.05)
        kw.setdefault("max_duration", 0.15)
        kw.setdefault("seed", 7)
        kw.setdefault("callback_backoff", 0.05)
        sim = Simulator(**kw).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim) -> Simulator:
    return make_sim()


def _client(sim: Simulator, key: str | None = KEY) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=sim.base_url, headers=headers, timeout=10, trust_env=False)


@pytest.fixture
def client(sim):
    with _client(sim) as c:
        yield c


def body(prompt="A red bicycle in the rain", ratio="16:9", res="1K", **top) -> dict:
    out = {"model": "gpt-image-2", "input": {"prompt": prompt, "aspect_ratio": ratio, "resolution": res}}
    out.update(top)
    return out


def create(client: httpx.Client, payload: dict | None = None, **kw) -> str:
    r = client.post("/v1/tasks", json=payload or body(**kw))
    assert r.status_code == 200, r.text
    return r.json()["data"]["taskId"]


def wait_terminal(client: httpx.Client, task_id: str, timeout: float = 60.0) -> dict:
    """The task's `data` once it reports a terminal status (polled every 20 ms)."""

    def terminal() -> dict | None:
        r = client.get(f"/v1/tasks/{task_id}")
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        return data if data["status"] in TERMINAL else None

    return wait_for(terminal, timeout=timeout, step=0.02)


def assert_error(r: httpx.Response, status: int, error_code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    env = r.json()
    assert env["code"] == status
    assert env["data"] is None
    assert isinstance(env["message"], str) and env["message"]
    if error_code is None:
        assert "error_code" not in env
    else:
        assert env["error_code"] == error_code
    return env


def count_color(img: Image.Image, color: tuple[int, int, int]) -> int:
    colors = img.getcolors(maxcolors=img.width * img.height) or []
    return sum(n for n, c in colors if c == color)


class Receiver:
    """A tiny callback endpoint: answers the given statuses in turn, then 200,
    each after the matching entry of `delays` (seconds; none by default)."""

    def __init__(self, statuses=(), delays=()):
        self.hits: list[tuple[dict[str, str], bytes]] = []
        self._statuses = list(statuses)
        self._delays = list(delays)
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer._lock:
                    outer.hits.append(({k: v for k, v in self.headers.items()}, raw))
                    status = outer._statuses.pop(0) if outer._statuses else 200
                    delay = outer._delays.pop(0) if outer._delays else 0.0
                if delay:
                    time.sleep(delay)  # a slow receiver, to trip the simulator's answer timeout
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait(self, n: int, timeout: float = 5.0) -> list[tuple[dict[str, str], bytes]]:
        wait_for(lambda: len(self.hits) >= n, timeout)
        with self._lock:
            return list(self.hits)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory():
    made: list[Receiver] = []

    def make(statuses=(), delays=()) -> Receiver:
        rx = Receiver(statuses, delays)
        made.append(rx)
        return rx

    yield make
    for rx in made:
        rx.close()


# ------------------------------------------------------------ happy path, images


@pytest.mark.parametrize(
    ("ratio", "res"), [("16:9", "2K"), ("auto", "1K"), ("4:5", "4K"), ("9:21", "1K"), ("3:1", "1K")]
)
def test_create_poll_download_png_at_table_size(client, ratio, res):
    task_id = create(client, prompt='A poster with the headline "SUMMER DROP"', ratio=ratio, res=res)
    assert TASK_ID_RE.match(task_id)
    data = wait_terminal(client, task_id)
    assert data["status"] == "success"
    assert data["taskId"] == task_id and data["model"] == "gpt-image-2"
    [item] = data["output"]
    assert item["type"] == "image"
    assert isinstance(item["expireAt"], int) and item["expireAt"] > time.time()

    r = httpx.get(item["url"], timeout=10, trust_env=False)  # temporary URLs need no auth
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert int(r.headers["content-length"]) == len(r.content)
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "PNG"
    assert img.size == pixel_size(ratio, res)
    w, h = img.size
    ratio_value = RATIOS[ratio].value
    assert abs(w / h - ratio_value) / ratio_value < 0.02


def test_envelope_shape_and_content_type(client):
    r = client.post("/v1/tasks", json=body())
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.content)
    env = r.json()
    assert set(env) == {"code", "message", "data"}
    assert env["code"] == 200 and env["message"] == "success"
    assert set(env["data"]) == {"taskId"}

    got = client.get(f"/v1/tasks/{env['data']['taskId']}").json()
    assert got["code"] == 200 and got["message"] == "success"
    assert {"taskId", "model", "status", "created", "completed"} <= set(got["data"])
    assert isinstance(got["data"]["created"], int) and isinstance(got["data"]["completed"], int)


def test_task_ids_are_ulid_like_and_unique(client):
    ids = [create(client, prompt=f"tile {i}") for i in range(20)]
    assert all(TASK_ID_RE.match(t) for t in ids)
    assert not any(set(t[len("tk-hiapi-") :]) & set("ILOU") for t in ids)  # Crockford alphabet
    assert len(set(ids)) == 20


def test_lifecycle_steps_in_order_and_completed_zero_until_terminal(make_sim):
    sim = make_sim(min_duration=0.3, max_duration=0.3)
    with _client(sim) as c:
        t0 = time.time()
        task_id = create(c)
        seen: list[dict] = []

        def look() -> bool:  # every answer is kept: the test is about the order of what was seen
            seen.append(c.get(f"/v1/tasks/{task_id}").json()["data"])
            return seen[-1]["status"] in TERMINAL

        wait_for(look, step=0.005)
    statuses = [d["status"] for d in seen]
    assert statuses[0] == "queued"
    assert statuses[-1] == "success"
    assert "handling" in statuses
    ranks = [ORDER.index(s) for s in statuses[:-1]]
    assert ranks == sorted(ranks), statuses
    assert all(d["completed"] == 0 for d in seen[:-1])
    assert seen[-1]["completed"] >= seen[-1]["created"] >= int(t0)
    finished = sim.task_finished_at(task_id)
    assert 0.29 <= finished - t0 <= 0.5
    with pytest.raises(KeyError):
        sim.task_finished_at("tk-hiapi-00000000000000000000000000")


def test_duration_model_hook_and_time_scale(make_sim):
    calls = []

    def model(resolution, rng):
        calls.append((resolution, rng))
        return {"1K": 10.0, "2K": 30.0}[resolution]

    sim = make_sim(duration_model=model, time_scale=100)
    with _client(sim) as c:
        t0 = time.time()
        one = create(c, res="1K")
        two = create(c, res="2K")
    assert [res for res, _ in calls] == ["1K", "2K"]
    assert all(hasattr(rng, "random") for _, rng in calls)
    assert 0.09 <= sim.task_finished_at(one) - t0 <= 0.2
    assert 0.29 <= sim.task_finished_at(two) - t0 <= 0.4


def test_phases_follow_the_duration_model():
    with Simulator(api_keys=[KEY], duration_model=lambda res, rng: (0.3, 0.4, 0.3), seed=1).start() as sim:
        with _client(sim) as c:
            tid = create(c)
            seen: list[str] = []

            def look() -> bool:  # each status once, in the order seen
                status = c.get(f"/v1/tasks/{tid}").json()["data"]["status"]
                if not seen or seen[-1] != status:
                    seen.append(status)
                return status == "success"

            wait_for(look, step=0.05)
    assert seen == ["queued", "handling", "archiving", "success"]


def test_realistic_duration_grows_with_resolution():
    import random

    rng = random.Random(3)
    medians = {}
    for res in ("1K", "2K", "4K"):
        phases = [realistic_duration(res, rng) for _ in range(400)]
        assert all(q >= 0 and h > 0 and 1.0 <= a <= 2.5 for q, h, a in phases)
        values = sorted(sum(p) for p in phases)
        assert all(20 <= v <= 240.001 for v in values)
        medians[res] = values[len(values) // 2]
    assert medians["1K"] < medians["2K"] < medians["4K"]
    assert 38 <= medians["1K"] <= 53 and 60 <= medians["2K"] <= 82 and 95 <= medians["4K"] <= 128


def test_list_is_newest_first_paged_and_partitioned(sim, client):
    ids = [create(client, prompt=f"poster {i}") for i in range(3)]
    with _client(sim, OTHER_KEY) as other:
        create(other, prompt="someone else's")
        assert other.get("/v1/tasks").json()["data"]["total"] == 1

    first = client.get("/v1/tasks", params={"page": 1, "size": 2})
    assert first.status_code == 200
    data = first.json()["data"]
    assert list(data) == ["page", "size", "total", "tasks"]  # HiAPI's documented shape
    assert [t["taskId"] for t in data["tasks"]] == [ids[2], ids[1]]
    assert (data["page"], data["size"], data["total"]) == (1, 2, 3)
    second = client.get("/v1/tasks", params={"page": 2, "size": 2}).json()["data"]
    assert [t["taskId"] for t in second["tasks"]] == [ids[0]]
    assert client.get("/v1/tasks", params={"page": 3, "size": 2}).json()["data"]["tasks"] == []


@pytest.mark.parametrize(
    ("params", "page", "size"),
    [
        ({}, 1, 10),  # HiAPI's defaults
        ({"page": 0, "size": 0}, 1, 1),
        ({"page": -3, "size": 1000}, 1, 100),
        ({"page": "two", "size": "many"}, 1, 10),
        ({"page": 2, "size": 100}, 2, 100),
    ],
)
def test_list_normalises_page_and_size_instead_of_refusing(client, params, page, size):
    r = client.get("/v1/tasks", params=params)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert (data["page"], data["size"]) == (page, size)


# ------------------------------------------------------------------ auth and 404


def test_401_for_missing_or_bad_key(sim):
    with _client(sim, key=None) as c:
        assert_error(c.post("/v1/tasks", json=body()), 401)
        assert_error(c.get("/v1/tasks/tk-hiapi-01HZTQ8BX2N3GM3YFK4Z9D7VQR"), 401)
        assert_error(c.get("/v1/tasks"), 401)
        for header in ("Bearer", "Basic c2stdGVzdA==", "Bearer not-a-key", f"Token {KEY}"):
            env = assert_error(c.post("/v1/tasks", json=body(), headers={"Authorization": header}), 401)
            assert "c2stdGVzdA" not in env["message"] and "not-a-key" not in env["message"]
    assert sim.stats()["tasks_created"] == 0


def test_configured_api_keys_only(make_sim):
    sim = make_sim(api_keys=["sk-allowed-1"])
    with _client(sim, "sk-allowed-1") as ok, _client(sim, "sk-anything-else") as bad:
        assert ok.post("/v1/tasks", json=body()).status_code == 200
        assert_error(bad.post("/v1/tasks", json=body()), 401)


def test_404_for_unknown_task_and_for_another_keys_task(sim, client):
    assert_error(client.get("/v1/tasks/tk-hiapi-01HZTQ8BX2N3GM3YFK4Z9D7VQR"), 404)
    mine = create(client)
    with _client(sim, OTHER_KEY) as other:
        assert_error(other.get(f"/v1/tasks/{mine}"), 404)
    assert client.get(f"/v1/tasks/{mine}").status_code == 200
    assert_error(client.get("/v1/nothing-here"), 404)


# -------------------------------------------------------------------- validation


LONG = "x" * 20_001
VALIDATION_CASES = {
    "blank prompt": ({"prompt": "   "}, None),
    "20,001 chars": ({"prompt": LONG}, None),
    "bad ratio": ({"ratio": "7:5"}, None),
    "bad resolution": ({"res": "8K"}, None),
    "auto with 2K": ({"ratio": "auto", "res": "2K"}, None),
    "1:1 with 4K": ({"ratio": "1:1", "res": "4K"}, None),
    "5:4 with 2K": ({"ratio": "5:4", "res": "2K"}, None),
    "1:3 with 4K": ({"ratio": "1:3", "res": "4K"}, None),
    "http callback off loopback": ({"callback": {"url": "http://example.com/hook", "when": "final"}}, None),
    "callback when not final": ({"callback": {"url": "https://example.com/hook", "when": "always"}}, None),
}


@pytest.mark.parametrize("case", list(VALIDATION_CASES))
def test_400_for_each_validation_rule_with_the_shared_messages(sim, client, case):
    kw, _ = VALIDATION_CASES[case]
    payload = body(**kw)
    inp = payload["input"]
    cb = payload.get("callback")
    expected = validate_request(
        inp["prompt"],
        inp["aspect_ratio"],
        inp["resolution"],
        cb["url"] if cb else None,
        cb["when"] if cb else "final",
        allow_loopback_http=True,
    )
    assert expected, "the case must be invalid by the shared rules"
    env = assert_error(client.post("/v1/tasks", json=payload), 400, "INVALID_REQUEST")
    for problem in expected:
        assert problem.message in env["message"]
    assert sim.stats()["tasks_created"] == 0


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"not json at all", "JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps(body(callback=None) | {"model": "dall-e-3"}).encode(), "not available"),
        (json.dumps({"input": {"prompt": "p"}}).encode(), "Model is required"),
        (
            json.dumps(
                {"model": "gpt-image-2", "input": {"prompt": "p", "callback": {"url": "https://a.b/c"}}}
            ).encode(),
            "top level",
        ),
        (json.dumps(body(callback={"when": "final"})).encode(), "Callback URL"),
    ],
)
def test_400_for_malformed_bodies(sim, client, raw, needle):
    r = client.post("/v1/tasks", content=raw, headers={"Content-Type": "application/json"})
    env = assert_error(r, 400, "INVALID_REQUEST")
    assert needle in env["message"]
    assert sim.stats()["tasks_created"] == 0


def test_valid_edges_are_accepted(client):
    create(client, prompt="y" * 20_000)
    create(client, ratio="auto")  # defaults: auto / 1K
    r = client.post("/v1/tasks", json={"model": "gpt-image-2/text-to-image", "input": {"prompt": "defaults"}})
    assert r.status_code == 200
    create(client, callback={"url": "http://127.0.0.1:9/hook", "when": "final"})  # loopback http is allowed
    create(client, callback={"url": "https://example.com/hook", "when": "final"})


@pytest.mark.parametrize("model", ["gpt-image-2", "gpt-image-2/text-to-image"])
def test_text_to_image_ids_are_accepted_and_echoed(client, model):
    task_id = create(client, {"model": model, "input": {"prompt": "a kite"}})
    assert wait_terminal(client, task_id)["model"] == model


def test_image_to_image_takes_references_and_allows_a_square_at_4k(client, reference_urls):
    refs = reference_urls(2)
    model = "gpt-image-2/image-to-image"
    payload = body(ratio="1:1", res="4K", model=model)
    payload["input"]["input_urls"] = refs
    data = wait_terminal(client, create(client, payload))
    assert data["status"] == "success" and data["model"] == model
    env = assert_error(client.post("/v1/tasks", json=body(model=model)), 400, "INVALID_REQUEST")
    assert "input_urls" in env["message"]
    stray = body()
    stray["input"]["input_urls"] = ["https://cdn.example.com/a.png"]
    env = assert_error(client.post("/v1/tasks", json=stray), 400, "INVALID_REQUEST")
    assert "image-to-image" in env["message"]
    square = assert_error(client.post("/v1/tasks", json=body(ratio="1:1", res="4K")), 400, "INVALID_REQUEST")
    assert "text-to-image" in square["message"]


def test_unknown_model_is_400_naming_it(sim, client):
    env = assert_error(client.post("/v1/tasks", json=body(model="gpt-image-9")), 400, "INVALID_REQUEST")
    assert "'gpt-image-9' is not available" in env["message"]
    assert "gpt-image-2/text-to-image" in env["message"]
    assert sim.stats()["tasks_created"] == 0


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_415_when_the_body_is_not_declared_json(sim, client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    r = client.post("/v1/tasks", content=json.dumps(body()).encode(), headers=headers)
    assert_error(r, 415)
    ok = client.post(
        "/v1/tasks", content=json.dumps(body()), headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert ok.status_code == 200
    assert sim.stats()["tasks_created"] == 1


def test_several_problems_are_reported_together(client):
    env = assert_error(client.post("/v1/tasks", json=body(ratio="7:5", res="8K")), 400, "INVALID_REQUEST")
    assert "7:5" in env["message"] and "8K" in env["message"]


def test_chunked_request_body_is_read(client):
    raw = json.dumps(body()).encode()
    r = client.post(
        "/v1/tasks", content=iter([raw[:10], raw[10:]]), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200
    assert TASK_ID_RE.match(r.json()["data"]["taskId"])


# ------------------------------------------------------------------- idempotency


def test_idempotent_replay_returns_first_task_and_creates_nothing(sim, client):
    first = client.post("/v1/tasks", json=body(), headers={"Idempotency-Key": "order-1"})
    assert first.status_code == 200
    assert "idempotent-replay" not in first.headers
    again = client.post("/v1/tasks", json=body(), headers={"Idempotency-Key": "order-1"})
    assert again.status_code == 200
    assert again.headers["idempotent-replay"] == "true"
    assert again.json()["data"]["taskId"] == first.json()["data"]["taskId"]
    stats = sim.stats()
    assert stats["tasks_created"] == 1
    assert stats["idempotent_replays"] == 1
    # Keys are per API key: the same key from another account is a new request.
    with _client(sim, OTHER_KEY) as other:
        r = other.post("/v1/tasks", json=body(), headers={"Idempotency-Key": "order-1"})
        assert r.status_code == 200 and "idempotent-replay" not in r.headers
        assert r.json()["data"]["taskId"] != first.json()["data"]["taskId"]


def test_idempotency_key_mismatch_is_422(sim, client):
    assert client.post("/v1/tasks", json=body(), headers={"Idempotency-Key": "k"}).status_code == 200
    r = client.post("/v1/tasks", json=body(prompt="another prompt"), headers={"Idempotency-Key": "k"})
    assert_error(r, 422, "IDEMPOTENCY_KEY_MISMATCH")
    assert sim.stats()["tasks_created"] == 1


def test_idempotency_key_in_flight_is_409_with_retry_after(sim):
    # The first create is held long enough that the second surely arrives while it is in flight,
    # on a machine however busy; the second starts once the key is seen taken (not after a sleep).
    sim.set_faults(create_delay_s=3.0)
    results: list[httpx.Response] = []

    def send():
        with _client(sim) as c:
            results.append(c.post("/v1/tasks", json=body(), headers={"Idempotency-Key": "slow"}))

    first = threading.Thread(target=send)
    first.start()
    wait_for(lambda: any(key == "slow" for _owner, key in list(sim._idem)), timeout=30)
    second = threading.Thread(target=send)
    second.start()
    first.join()
    second.join()
    by_status = {r.status_code: r for r in results}
    assert sorted(by_status) == [200, 409]
    assert_error(by_status[409], 409, "IDEMPOTENCY_KEY_PROCESSING")
    assert by_status[409].headers["retry-after"] == "1"

    sim.set_faults(create_delay_s=0)
    with _client(sim) as c:
        replay = c.post("/v1/tasks", json=body(), headers={"Idempotency-Key": "slow"})
    assert replay.headers["idempotent-replay"] == "true"
    assert replay.json()["data"]["taskId"] == by_status[200].json()["data"]["taskId"]
    assert sim.stats()["tasks_created"] == 1


def test_idempotency_key_longer_than_255_bytes_is_400(sim, client):
    env = assert_error(
        client.post("/v1/tasks", json=body(), headers={"Idempotency-Key": "k" * 256}), 400, "INVALID_REQUEST"
    )
    assert "Idempotency-Key" in env["message"]
    assert client.post("/v1/tasks", json=body(), headers={"Idempotency-Key": "k" * 255}).status_code == 200
    assert sim.stats()["tasks_created"] == 1


def test_invalid_first_request_does_not_burn_the_key(client):
    bad = body(ratio="7:5")
    assert_error(
        client.post("/v1/tasks", json=bad, headers={"Idempotency-Key": "fix-me"}), 400, "INVALID_REQUEST"
    )
    # The same key with the corrected body is a fresh request, not a mismatch.
    r = client.post("/v1/tasks", json=body(), headers={"Idempotency-Key": "fix-me"})
    assert r.status_code == 200 and "idempotent-replay" not in r.headers


def test_dropped_create_answer_then_replay_finds_the_same_task(sim, client):
    sim.set_faults(drop_create_answer_rate=1.0)
    with pytest.raises(httpx.TransportError):
        client.post("/v1/tasks", json=body(), headers={"Idempotency-Key": "net-1"})
    assert sim.stats()["tasks_created"] == 1  # the task exists although no answer came back

    sim.set_faults(drop_create_answer_rate=0.0)
    r = client.post("/v1/tasks", json=body(), headers={"Idempotency-Key": "net-1"})
    assert r.status_code == 200
    assert r.headers["idempotent-replay"] == "true"
    listed = client.get("/v1/tasks").json()["data"]
    assert listed["total"] == 1
    assert listed["tasks"][0]["taskId"] == r.json()["data"]["taskId"]
    stats = sim.stats()
    assert stats["tasks_created"] == 1
    assert stats["create_answers_dropped"] == 1
    assert stats["requests"]["POST /v1/tasks dropped"] == 1


# ------------------------------------------------------------------ failed tasks


def test_fail_rate_one_fails_every_task_with_http_200(sim, client):
    sim.set_faults(fail_rate=1.0)
    ids = [create(client, prompt=f"poster {i}") for i in range(8)]
    codes = []
    for task_id in ids:
        r = client.get(f"/v1/tasks/{task_id}")
        data = wait_terminal(client, task_id)
        assert r.status_code == 200
        assert data["status"] == "fail"
        assert "output" not in data
        assert data["completed"] >= data["created"]
        assert data["error"]["code"] in {"TASK_FAILED", "TASK_TIMEOUT", "STORAGE_UNAVAILABLE"}
        assert data["error"]["message"]
        codes.append(data["error"]["code"])
    assert codes.count("TASK_FAILED") >= len(codes) // 2


def test_fail_marker_always_fails_with_prompt_rejected(client):
    task_id = create(client, prompt="A forbidden scene [sim:fail]")
    data = wait_terminal(client, task_id)
    assert data["status"] == "fail"
    assert data["error"] == {"code": "TASK_FAILED", "message": "upstream rejected the prompt"}


# ------------------------------------------------------------------ output files


def test_output_url_expires_with_410_and_unknown_file_is_404(make_sim):
    sim = make_sim(output_ttl=0.6)
    with _client(sim) as c:
        data = wait_terminal(c, create(c))
        url = data["output"][0]["url"]
        assert c.get(url).status_code == 200
        assert data["output"][0]["expireAt"] <= time.time() + 1
        wait_for(lambda: c.get(url).status_code == 410)  # the link lives 0.6 s
        assert_error(c.get(url), 410)
        assert_error(c.get(f"{sim.base_url}/files/no-such-file.png"), 404)


def test_download_faults(sim, client):
    url = wait_terminal(client, create(client, res="2K"))["output"][0]["url"]

    sim.set_faults(download_fail_rate=1.0)
    assert client.get(url).status_code == 500

    sim.set_faults(download_fail_rate=0.0, download_non_image_rate=1.0)
    r = client.get(url)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(r.content))

    sim.set_faults(download_non_image_rate=0.0, download_truncate_rate=1.0)
    got, expected, errored = b"", None, False
    try:
        with httpx.Client(trust_env=False, timeout=5) as c, c.stream("GET", url) as r:
            expected = int(r.headers["content-length"])
            for chunk in r.iter_raw():
                got += chunk
    except httpx.TransportError:
        errored = True
    assert errored or (expected is not None and len(got) < expected)

    sim.set_faults(download_truncate_rate=0.0, download_slow_s=0.3)
    t0 = time.monotonic()
    r = client.get(url)
    assert r.status_code == 200 and time.monotonic() - t0 >= 0.3
    assert Image.open(io.BytesIO(r.content)).size == pixel_size("16:9", "2K")


def test_image_has_simulated_label_and_headline(client):
    def fetch(prompt: str) -> Image.Image:
        data = wait_terminal(client, create(client, prompt=prompt, ratio="16:9", res="1K"))
        return Image.open(io.BytesIO(client.get(data["output"][0]["url"]).content)).convert("RGB")

    def white_in_middle_band(img: Image.Image) -> int:
        w, h = img.size
        band = img.crop((0, int(h * 0.35), w, int(h * 0.65)))
        return count_color(band, (255, 255, 255))

    with_quote = fetch('A poster with the headline "SUMMER DROP"')
    without = fetch("A quiet lake at dawn")
    for img in (with_quote, without):
        w, h = img.size
        corner = img.crop((0, 0, w // 4, h // 6))
        assert count_color(corner, (200, 24, 32)) > 500  # the red SIMULATED label
    assert white_in_middle_band(with_quote) > 0.01 * with_quote.width * with_quote.height * 0.3
    assert white_in_middle_band(without) == 0


def test_misspell_marker_changes_only_the_headline(client):
    def fetch(prompt: str) -> Image.Image:
        data = wait_terminal(client, create(client, prompt=prompt, ratio="4:3", res="1K"))
        return Image.open(io.BytesIO(client.get(data["output"][0]["url"]).content)).convert("RGB")

    plain = fetch('Poster "SUMMER DROP"')
    wrong = fetch('Poster "SUMMER DROP" [sim:misspell]')
    box = ImageChops.difference(plain, wrong).getbbox()
    assert box is not None  # the text differs...
    w, h = plain.size
    assert box[1] > h * 0.2 and box[3] < h * 0.8  # ...and only around the centred headline


def test_quoted_parts_and_misspell_helpers():
    assert quoted_parts("Poster \"SUMMER DROP\" with '50% off' and “Free coffee”") == [
        "SUMMER DROP",
        "50% off",
        "Free coffee",
    ]
    assert quoted_parts("don't panic, it's Bob's bike") == []
    assert quoted_parts("say 'don't stop' now [sim:fail]") == ["don't stop"]
    assert misspell("SUMMER DROP") == "SUMMR DRP"
    assert misspell("Why") != "Why"


# --------------------------------------------------------------------- callbacks


def test_signed_callback_matches_task_detail(make_sim, receiver_factory):
    rx = receiver_factory()
    sim = make_sim(signing_key=SECRET)
    with _client(sim) as c:
        task_id = create(c, callback={"url": rx.url, "when": "final"})
        [(headers, raw)] = rx.wait(1)
        detail = c.get(f"/v1/tasks/{task_id}").json()["data"]
    headers = {k.lower(): v for k, v in headers.items()}
    timestamp, signature = headers["x-hiapi-timestamp"], headers["x-hiapi-signature"]
    assert re.fullmatch(r"[0-9a-f]{64}", signature)
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)
    assert not hmac.compare_digest(
        signature,
        hmac.new(SECRET.encode(), timestamp.encode() + b"." + raw + b" ", hashlib.sha256).hexdigest(),
    )
    assert abs(int(timestamp) - time.time()) <= 300
    assert headers["content-type"].startswith("application/json")
    payload = json.loads(raw)
    assert payload == detail  # the bare data object, not an envelope
    assert payload["status"] == "success" and "code" not in payload


def test_callback_for_failed_task_and_unsigned_without_key(sim, client, receiver_factory):
    rx = receiver_factory()
    task_id = create(client, prompt="nope [sim:fail]", callback={"url": rx.url, "when": "final"})
    [(headers, raw)] = rx.wait(1)
    assert not any(k.lower().startswith("x-hiapi-") for k in headers)
    payload = json.loads(raw)
    assert payload["taskId"] == task_id and payload["status"] == "fail"
    assert payload["error"]["code"] == "TASK_FAILED"


def test_callback_retried_after_a_500(sim, client, receiver_factory):
    rx = receiver_factory(statuses=[500])
    task_id = create(client, callback={"url": rx.url, "when": "final"})
    hits = rx.wait(2)
    assert [json.loads(raw)["taskId"] for _, raw in hits] == [task_id, task_id]
    stats = wait_for(lambda: (s := sim.stats())["callbacks_acked"] == 1 and s)
    assert stats["callbacks_sent"] == 2
    assert stats["callbacks_failed"] == 1


def test_callback_redelivery_follows_hiapis_schedule(monkeypatch):
    monkeypatch.delenv("STUDIO_SIM_CALLBACK_BACKOFF", raising=False)
    hiapi = Simulator()
    assert [hiapi.callback_retry_delay(n) for n in (1, 2, 3)] == [60.0, 300.0, 1200.0]  # +1, +5, +20 min
    assert (hiapi.callback_max_attempts, hiapi.callback_timeout) == (4, 10.0)
    monkeypatch.setenv("STUDIO_SIM_CALLBACK_BACKOFF", "0.5")  # compressed for tests
    assert [Simulator().callback_retry_delay(n) for n in (1, 2, 3)] == [0.5, 2.5, 10.0]
    assert Simulator(callback_backoff=2).callback_retry_delay(3) == 40.0
    monkeypatch.setenv("STUDIO_SIM_CALLBACK_BACKOFF", "soon")
    with pytest.raises(ValueError, match="STUDIO_SIM_CALLBACK_BACKOFF"):
        Simulator()


def test_callback_is_tried_four_times_in_all_then_abandoned(sim, client, receiver_factory):
    rx = receiver_factory(statuses=[500, 503, 404, 500, 200])
    task_id = create(client, callback={"url": rx.url, "when": "final"})
    stats = wait_for(lambda: (s := sim.stats())["callbacks_abandoned"] == 1 and s)
    assert [json.loads(raw)["taskId"] for _, raw in rx.hits] == [task_id] * 4
    assert (stats["callbacks_sent"], stats["callbacks_failed"], stats["callbacks_acked"]) == (4, 4, 0)
    assert client.get(f"/v1/tasks/{task_id}").json()["data"]["status"] == "success"  # task unchanged


def test_a_callback_answer_slower_than_the_timeout_counts_as_failed(make_sim, receiver_factory):
    sim = make_sim(callback_timeout=0.3)
    rx = receiver_factory(delays=[3.0])
    with _client(sim) as c:
        create(c, callback={"url": rx.url, "when": "final"})
    stats = wait_for(lambda: (s := sim.stats())["callbacks_acked"] == 1 and s)
    assert (stats["callbacks_sent"], stats["callbacks_failed"]) == (2, 1)


def test_callback_drop_and_duplicate_faults(sim, client, receiver_factory):
    dropped_rx, dup_rx = receiver_factory(), receiver_factory()
    sim.set_faults(callback_drop_rate=1.0)
    dropped = create(client, callback={"url": dropped_rx.url, "when": "final"})
    sim.set_faults(callback_drop_rate=0.0, callback_duplicate_rate=1.0)
    duplicated = create(client, callback={"url": dup_rx.url, "when": "final"})
    hits = dup_rx.wait(2)
    assert [json.loads(raw)["taskId"] for _, raw in hits] == [duplicated, duplicated]
    wait_terminal(client, dropped)
    wait_for(lambda: sim.stats()["callbacks_dropped"] == 1)  # its callback fell due, and was dropped
    # Then a callback to the same receiver: a dropped one that was sent after all would have come first.
    sim.set_faults(callback_duplicate_rate=0.0)
    later = create(client, callback={"url": dropped_rx.url, "when": "final"})
    assert [json.loads(raw)["taskId"] for _, raw in dropped_rx.wait(1)] == [later]
    assert sim.stats()["callbacks_dropped"] == 1


# ------------------------------------------------------------- transport faults


def test_429_and_503_faults_carry_retry_after(sim, client):
    task_id = create(client)
    sim.set_faults(get_429_rate=1.0, retry_after=2)
    r = client.get(f"/v1/tasks/{task_id}")
    assert_error(r, 429)
    assert r.headers["retry-after"] == "2"
    assert_error(client.get("/v1/tasks"), 429)

    sim.set_faults(get_429_rate=0.0, get_503_rate=1.0, retry_after=1)
    r = client.get(f"/v1/tasks/{task_id}")
    assert_error(r, 503)
    assert r.headers["retry-after"] == "1"

    sim.set_faults(get_503_rate=0.0, post_429_rate=1.0)
    r = client.post("/v1/tasks", json=body())
    assert_error(r, 429)
    assert r.headers["retry-after"] == "1"
    sim.set_faults(post_429_rate=0.0, post_503_rate=1.0, retry_after_as_date=True, retry_after=5)
    r = client.post("/v1/tasks", json=body())
    assert_error(r, 503)
    when = parsedate_to_datetime(r.headers["retry-after"]).timestamp()
    assert 3 <= when - time.time() <= 7
    assert sim.stats()["tasks_created"] == 1
    sim.set_faults(post_503_rate=0.0)
    assert client.get(f"/v1/tasks/{task_id}").status_code == 200


def test_admin_fault_endpoints(sim):
    with httpx.Client(base_url=sim.base_url, trust_env=False) as admin:  # no auth on /_sim/
        r = admin.post("/_sim/faults", json={"fail_rate": 1, "retry_after": 3})
        assert r.status_code == 200
        assert r.json()["fail_rate"] == 1.0 and r.json()["retry_after"] == 3.0
        r = admin.post("/_sim/faults", json={"get_429_rate": 0.5})
        assert r.json()["fail_rate"] == 1.0 and r.json()["get_429_rate"] == 0.5  # merged
        assert admin.get("/_sim/faults").json() == sim.faults.to_dict()
        assert admin.post("/_sim/faults", json={"bogus": 1}).status_code == 400
        assert admin.post("/_sim/faults", json={"fail_rate": 2}).status_code == 400
        assert admin.post("/_sim/faults", content=b"[]").status_code == 400
    assert sim.faults.get_429_rate == 0.5
    with pytest.raises(ValueError):
        sim.set_faults(nope=1)
    with pytest.raises(ValueError):
        Faults(download_truncate_rate=-0.1)


# ------------------------------------------------------------------------- stats


def test_stats_count_requests_gets_downloads_and_reset(sim, client):
    task_id = create(client)
    answers: list[dict] = []  # every GET is counted by the simulator, so the test counts them too

    def terminal() -> bool:
        answers.append(client.get(f"/v1/tasks/{task_id}").json()["data"])
        return answers[-1]["status"] in TERMINAL

    wait_for(terminal, step=0.02)
    gets, data = len(answers), answers[-1]
    client.get(data["output"][0]["url"])
    client.get("/v1/tasks/tk-hiapi-01HZTQ8BX2N3GM3YFK4Z9D7VQR")
    with _client(sim, key=None) as anon:
        anon.get("/v1/tasks")

    with httpx.Client(base_url=sim.base_url, trust_env=False) as admin:
        over_http = admin.get("/_sim/stats").json()
    stats = sim.stats()
    assert over_http == stats  # admin calls are not counted
    assert stats["creates"] == 1 and stats["tasks_created"] == 1
    assert stats["gets_by_task"][task_id] == gets
    assert stats["requests"]["POST /v1/tasks 200"] == 1
    assert stats["requests"]["GET /v1/tasks/{id} 200"] == gets
    assert stats["requests"]["GET /v1/tasks/{id} 404"] == 1
    assert stats["requests"]["GET /v1/tasks 401"] == 1
    assert stats["requests"]["GET /files/{file} 200"] == 1
    assert stats["downloads"] == 1
    for key in ("idempotent_replays", "callbacks_sent", "callbacks_acked", "callbacks_failed"):
        assert stats[key] == 0

    with httpx.Client(base_url=sim.base_url, trust_env=False) as admin:
        assert admin.post("/_sim/reset").status_code == 200
    cleared = sim.stats()
    assert cleared["requests"] == {} and cleared["gets_by_task"] == {} and cleared["creates"] == 0
    assert client.get(f"/v1/tasks/{task_id}").json()["data"]["status"] == "success"  # tasks survive


def test_keep_alive_connection_is_reused_across_answers(sim):
    sim.reset_stats()
    with _client(sim) as c:
        task_id = create(c)
        for _ in range(3):
            assert c.get(f"/v1/tasks/{task_id}").status_code == 200
            assert c.post("/v1/tasks", content=b"{bad").status_code == 415  # no Content-Type
            bad = c.post("/v1/tasks", content=b"{bad", headers={"Content-Type": "application/json"})
            assert bad.status_code == 400
            assert c.get("/v1/tasks/tk-hiapi-01HZTQ8BX2N3GM3YFK4Z9D7VQR").status_code == 404
            assert c.get("/v1/tasks", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert sim.stats()["connections"] == 1


def test_logs_never_carry_the_api_key(sim, client, caplog):
    caplog.set_level(logging.DEBUG, logger="studio.simulator")
    task_id = create(client)
    client.get(f"/v1/tasks/{task_id}")
    client.get("/v1/tasks", headers={"Authorization": "Bearer sk-wrong-key-123"})
    assert "POST /v1/tasks 200" in caplog.text
    assert KEY not in caplog.text and "sk-wrong-key-123" not in caplog.text
    assert "Bearer" not in caplog.text


# --------------------------------------------------------------- packaging, CLI


def test_simulator_never_imports_streamlit():
    code = "import sys, studio.simulator, studio.simulator.__main__; assert 'streamlit' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_cli_prints_base_url_and_serves(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "studio.simulator", "--port", "0", "--min-duration", "0.01"]
        + ["--max-duration", "0.02", "--seed", "1", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
        with httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {KEY}"}, trust_env=False
        ) as c:
            assert c.get("/_sim/health").json()["ok"] is True
            assert wait_terminal(c, create(c))["status"] == "success"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
