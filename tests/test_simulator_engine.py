"""The simulator's engine API: its clock moves on with `advance`, `cancel_task` ends a task,
and the engine runs without HTTP. Over real HTTP where HiAPI's answers are what is checked."""

from __future__ import annotations

import ast
import json

import httpx
import pytest

from studio.simulator import Engine, Simulator
from studio.simulator.engine import FAIL_MARKER
from tests.support import ROOT, wait_for
from tests.test_simulator import Receiver

KEY = "sk-test-engine-0001"
HOUR = 3600.0


@pytest.fixture
def slow_sim():
    """Tasks that take an hour each: only `advance` finishes them within a test."""
    with Simulator(min_duration=HOUR, max_duration=HOUR, seed=3, callback_backoff=0.05) as sim:
        yield sim


@pytest.fixture
def receiver():
    rx = Receiver()
    yield rx
    rx.close()


def _client(sim: Simulator) -> httpx.Client:
    return httpx.Client(
        base_url=sim.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10, trust_env=False
    )


def _create(client: httpx.Client, prompt: str = "A lighthouse at dusk", callback: str | None = None) -> str:
    body: dict = {"model": "gpt-image-2", "input": {"prompt": prompt, "aspect_ratio": "1:1"}}
    if callback:
        body["callback"] = {"url": callback, "when": "final"}
    r = client.post("/v1/tasks", json=body)
    assert r.status_code == 200, r.text
    return r.json()["data"]["taskId"]


def _status(client: httpx.Client, task_id: str) -> str:
    return client.get(f"/v1/tasks/{task_id}").json()["data"]["status"]


def test_advance_moves_tasks_through_their_lifecycle_and_sends_the_callback(slow_sim, receiver):
    with _client(slow_sim) as c:
        task_id = _create(c, callback=receiver.url)
        assert _status(c, task_id) == "queued"
        slow_sim.advance(0.5 * HOUR)  # queued for the first 20 %, handling until 90 %
        assert _status(c, task_id) == "handling"
        assert receiver.hits == []
        slow_sim.advance(0.5 * HOUR)
        data = c.get(f"/v1/tasks/{task_id}").json()["data"]
        assert data["status"] == "success"
        assert c.get(data["output"][0]["url"]).headers["content-type"] == "image/png"
        [(_, raw)] = receiver.wait(1)
    assert json.loads(raw)["taskId"] == task_id
    assert slow_sim.now() >= slow_sim.task_finished_at(task_id)


def test_advance_refuses_going_back():
    with pytest.raises(ValueError):
        Engine().advance(-1)


def test_cancel_task_ends_it_now_as_fail_with_one_callback(slow_sim, receiver):
    with _client(slow_sim) as c:
        cancelled = _create(c, callback=receiver.url)
        ended = slow_sim.cancel_task(cancelled)
        data = c.get(f"/v1/tasks/{cancelled}").json()["data"]
        assert data["status"] == "fail" and data["error"]["code"] == "CANCELLED"
        [(_, raw)] = receiver.wait(1)
        assert json.loads(raw)["status"] == "fail"
        assert slow_sim.cancel_task(cancelled) == ended  # already terminal: unchanged
        # A task that ends after the cancelled one was first due: once its callback is in,
        # the cancelled task's original (now stale) callback has had its turn, and sent nothing.
        sentinel = _create(c, callback=receiver.url)
        slow_sim.advance(2 * HOUR)
        wait_for(lambda: len(receiver.hits) >= 2)
    assert [json.loads(raw)["taskId"] for _, raw in receiver.hits] == [cancelled, sentinel]
    assert slow_sim.stats()["callbacks_sent"] == 2


def test_the_engine_runs_without_http():
    engine = Engine(min_duration=HOUR, max_duration=HOUR, seed=1)
    owner = engine.owner_of(KEY)
    assert engine.key_ok(KEY) and not engine.key_ok("not-a-key")
    failing = engine.create_task(owner, "gpt-image-2", f"A fox {FAIL_MARKER}", "1:1", "1K", None, None)
    other = engine.create_task(owner, "gpt-image-2", "A fox", "1:1", "1K", None, None)
    assert engine.get_task(owner, failing.task_id) == failing
    assert engine.get_task(engine.owner_of("sk-someone-else"), failing.task_id) is None
    tasks, total = engine.list_tasks(owner, page=1, size=10)
    assert total == 2 and [t.task_id for t in tasks] == [other.task_id, failing.task_id]  # newest first
    assert engine.task_snapshot(failing.task_id)["status"] == "queued"
    engine.advance(2 * HOUR)
    assert engine.task_snapshot(failing.task_id)["error"]["code"] == "TASK_FAILED"
    assert engine.stats()["tasks_created"] == 2


def _engine_attributes(path) -> list[str]:
    """Every `<...>.sim.<name>` / `sim.<name>` attribute a module reads, as names."""
    tree = ast.parse(path.read_text(), str(path))
    return [
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and (getattr(node.value, "attr", None) == "sim" or getattr(node.value, "id", None) == "sim")
    ]


def test_the_http_layer_reaches_the_engine_only_through_its_public_api():
    used = _engine_attributes(ROOT / "studio" / "simulator" / "http.py")
    assert "create_task" in used and "view" in used  # the reader finds the calls
    assert [name for name in used if name.startswith("_")] == []
    engine_imports = {
        node.module
        for node in ast.walk(ast.parse((ROOT / "studio" / "simulator" / "engine.py").read_text()))
        if isinstance(node, ast.ImportFrom)
    }
    assert not engine_imports & {"http", "server"}  # the engine knows nothing of being served
