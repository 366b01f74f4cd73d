"""A task report listing thousands of outputs makes at most `MAX_OUTPUTS` rows and downloads;
the rest are refused and the refusal is recorded on the task."""

from __future__ import annotations

import json

from studio.models import MAX_OUTPUTS, Task, TaskRequest
from studio.store import OUTPUTS_REFUSED, Store
from tests.support import sql_rows


def _report(n: int) -> dict:
    output = [{"url": f"https://cdn.example/{i}.png", "type": "image", "expireAt": 0} for i in range(n)]
    return {"taskId": "tk-many", "status": "success", "created": 1, "completed": 2, "output": output}


def test_parsing_keeps_the_cap_and_counts_the_rest():
    task = Task.parse(_report(5000) | {"output": [None, {"url": "ftp://x"}] + _report(5000)["output"]})
    assert len(task.outputs) == MAX_OUTPUTS <= 8
    assert task.outputs[0].url == "https://cdn.example/0.png"  # malformed items are skipped, not counted
    assert task.refused_outputs == 5000 - MAX_OUTPUTS
    assert Task.parse(_report(1)).refused_outputs == 0


def test_a_report_with_thousands_of_outputs_stores_only_the_cap(tmp_path):
    store = Store(tmp_path / "studio.db")
    sid = store.add_submission(TaskRequest("a kite", "1:1", "1K"), idempotency_key="k", creative_id="c")
    store.mark_created(sid, "tk-many")
    assert store.record_task(Task.parse(_report(5000)), now=10.0)
    outputs = store.outputs_for([sid])[sid]
    assert [o.idx for o in outputs] == list(range(MAX_OUTPUTS))
    assert len(store.pending_outputs()) == MAX_OUTPUTS  # what the tracker would download
    refused = [e for e in store.events(sid) if e[0] == OUTPUTS_REFUSED]
    assert refused == [(OUTPUTS_REFUSED, 10.0, f"{5000 - MAX_OUTPUTS} over the cap of {MAX_OUTPUTS}")]
    raw = json.loads(sql_rows(store, "SELECT raw_task FROM submissions")[0][0])
    assert len(raw["output"]) == MAX_OUTPUTS  # the stored report is cut too, not 5000 links
    store.close()
