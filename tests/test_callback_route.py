"""`POST /hiapi/callback/{token}` on the real server (`streamlit run server.py`),
with callbacks on against its embedded simulator, over real sockets."""

from __future__ import annotations

import json
import socket
import sqlite3
import time

import httpx
import pytest

from studio.simulator import sign
from tests.support import StudioServer

TOKEN = "route_" + "Zx9Yw8Vu" * 4
SECRET = "whsec-route-0123456789abcdef"
CAP = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = StudioServer(tmp_path_factory.mktemp("callback-route"))
    s.extra_env.update(
        {
            "HIAPI_CALLBACK_URL": s.url,  # the embedded simulator may call plain http on loopback
            "HIAPI_CALLBACK_TOKEN": TOKEN,
            "HIAPI_WEBHOOK_SECRET": SECRET,
        }
    )
    s.start()
    yield s
    s.stop()


def route(server, token: str = TOKEN) -> str:
    return f"{server.url}/hiapi/callback/{token}"


def signed(body: bytes, ts: float | None = None, secret: str = SECRET) -> dict[str, str]:
    stamp = str(int(time.time() if ts is None else ts))
    return {
        "Content-Type": "application/json",
        "X-HiAPI-Timestamp": stamp,
        "X-HiAPI-Signature": sign(secret, stamp, body),
    }


def health(server) -> dict:
    return httpx.get(server.url + "/api/health", timeout=10).json()


def rows(server) -> dict[str, int]:
    """What the server's database holds, read through a separate connection."""
    with sqlite3.connect(server.data_dir / "studio.db", timeout=10) as db:
        return {
            table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("submissions", "task_events", "outputs", "pending_callbacks")
        }


def task_body(status: str = "success", **extra) -> bytes:
    now = int(time.time())
    data = {
        "taskId": "tk-hiapi-01HZTQ8BX2N3GM3YFK4Z9D7VQR",
        "model": "gpt-image-2",
        "status": status,
        "created": now - 40,
        "completed": now if status in ("success", "fail") else 0,
    }
    if status == "success":
        data["output"] = [{"url": "https://files.example/x.png", "type": "image", "expireAt": now + 3600}]
    return json.dumps(data | extra).encode()


def raw_exchange(server, head: bytes, chunks, timeout: float = 20.0) -> bytes:
    """Send raw bytes (head, then chunks while the server reads) and return the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        answer = b""
        while b"\r\n\r\n" not in answer:
            part = sock.recv(65536)
            if not part:
                break
            answer += part
        return answer


def test_health_names_the_mode_and_the_simulator_never_the_key(server):
    h = health(server)
    assert h["tracker"]["mode"] == "callbacks"
    assert h["simulator"].startswith("http://127.0.0.1:")
    assert "sk-" not in json.dumps(h) and TOKEN not in json.dumps(h) and SECRET not in json.dumps(h)
    assert httpx.get(h["simulator"] + "/_sim/health", timeout=10).json()["ok"] is True


def _refusal(server, before, status: int, response: httpx.Response) -> None:
    assert response.status_code == status, response.text
    assert response.json()["ok"] is False and response.json()["reason"]
    assert rows(server) == before
    assert health(server)["tracker"]["callbacks_rejected"] >= 1


CASES = {
    "wrong token": (
        404,
        "not found",
        lambda s, b: httpx.post(route(s, TOKEN[:-1] + "q"), content=b, headers=signed(b)),
    ),
    "no token": (404, "not found", lambda s, b: httpx.post(route(s, "x" * 20), content=b, headers=signed(b))),
    "missing headers": (401, "missing", lambda s, b: httpx.post(route(s), content=b)),
    "missing signature": (
        401,
        "missing X-HiAPI-Signature",
        lambda s, b: httpx.post(route(s), content=b, headers={"X-HiAPI-Timestamp": str(int(time.time()))}),
    ),
    "bad signature": (
        401,
        "does not match",
        lambda s, b: httpx.post(route(s), content=b, headers=signed(b, secret="n" * 20)),
    ),
    "stale timestamp": (
        401,
        "300 s",
        lambda s, b: httpx.post(route(s), content=b, headers=signed(b, time.time() - 400)),
    ),
    "non-terminal": (
        400,
        "not terminal",
        lambda s, b: httpx.post(route(s), content=(nb := task_body("handling")), headers=signed(nb)),
    ),
    "malformed": (
        400,
        "not JSON",
        lambda s, b: httpx.post(route(s), content=b"{not json", headers=signed(b"{not json")),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refusals_over_http_store_nothing(server, case):
    status, why, send = CASES[case]
    before = rows(server)
    response = send(server, task_body())
    _refusal(server, before, status, response)
    assert why in response.json()["reason"]


def test_declared_oversize_body_is_refused_before_it_is_sent(server):
    before = rows(server)
    body = task_body()
    head = (
        f"POST /hiapi/callback/{TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {CAP + 1}\r\n\r\n"
    ).encode()
    # Only the first bytes of the announced body are ever sent: the answer cannot wait for the rest.
    answer = raw_exchange(server, head, [body])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert rows(server) == before


def test_streamed_oversize_body_is_cut_at_the_cap(server):
    before = rows(server)
    head = (
        f"POST /hiapi/callback/{TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = b" " * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    # No Content-Length and no final chunk: the server must stop on its own once past 1 MiB.
    answer = raw_exchange(server, head, [chunk] * (CAP // len(piece) + 2))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert rows(server) == before


def test_signed_callback_for_no_known_task_is_acknowledged_and_not_kept(server):
    before = rows(server)
    body = task_body()
    r = httpx.post(route(server), content=body, headers=signed(body))
    assert r.status_code == 200 and "ignored" in r.json()["reason"]
    assert rows(server) == before
    assert health(server)["tracker"]["callbacks_ignored"] >= 1
