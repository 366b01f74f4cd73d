"""The simulator's image-to-image, over real HTTP: it fetches every input URL, as HiAPI does,
and draws a result visibly built from the first one; an input it cannot use fails the task."""

from __future__ import annotations

import http.server
import io
import threading

import httpx
import pytest
from PIL import Image

from studio.simulator import Simulator
from tests.support import wait_for

KEY = "sk-test-i2i-0001"
GREEN = (20, 200, 60)


def _png(color, size=(320, 180)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict[str, tuple[int, bytes]] = {}
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).hits.append(self.path)
        status, body = self.files.get(self.path, (404, b"missing"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def files():
    _Files.files = {
        "/green.png": (200, _png(GREEN)),
        "/blue.png": (200, _png((10, 30, 220))),
        "/notes.txt": (200, b"plain text, not an image"),
    }
    _Files.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def sim():
    s = Simulator(api_keys=[KEY], min_duration=0.05, max_duration=0.1, seed=11, input_timeout=3).start()
    yield s
    s.stop()


def _run(sim, urls, ratio="16:9") -> dict:
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as c:
        body = {
            "model": "gpt-image-2/image-to-image",
            "input": {"prompt": 'restyle as an ad "FRESH"', "aspect_ratio": ratio, "resolution": "1K",
                      "input_urls": urls},
        }  # fmt: skip
        created = c.post("/v1/tasks", json=body)
        assert created.status_code == 200, created.text
        task_id = created.json()["data"]["taskId"]
        data = wait_for(
            lambda: (d := c.get(f"/v1/tasks/{task_id}").json()["data"])["status"] in ("success", "fail") and d
        )
        if data["status"] == "success":
            data["png"] = c.get(data["output"][0]["url"]).content
        return data


def test_the_result_is_built_from_the_first_reference_and_every_input_is_fetched(sim, files):
    data = _run(sim, [files + "/green.png", files + "/blue.png"])
    assert data["status"] == "success"
    assert sorted(_Files.hits) == ["/blue.png", "/green.png"]
    with Image.open(io.BytesIO(data["png"])) as im:
        rgb = im.convert("RGB")
        w, h = rgb.size
        # The 16:9 reference fills the 16:9 canvas: its colour shows away from the centred text panel.
        for x, y in ((w // 10, h // 2), (w * 9 // 10, h * 9 // 10), (w // 2, h // 12)):
            px = rgb.getpixel((x, y))
            assert all(abs(a - b) < 40 for a, b in zip(px, GREEN, strict=True)), (x, y, px)


def test_text_to_image_draws_no_reference(sim, files):
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as c:
        body = {"model": "gpt-image-2/text-to-image", "input": {"prompt": "a kite", "aspect_ratio": "1:1"},
                "input_urls": [files + "/green.png"]}  # fmt: skip
        assert c.post("/v1/tasks", json=body).status_code == 200  # a top-level field is not an input
    assert _Files.hits == []


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/missing.png", "input_urls[1] could not be downloaded: HTTP 404."),
        ("/notes.txt", "input_urls[1] is not a JPEG, PNG or WebP image."),
    ],
)
def test_an_input_it_cannot_use_fails_the_task_with_the_reason(sim, files, path, reason):
    data = _run(sim, [files + "/green.png", files + path])
    assert data["status"] == "fail"
    assert data["error"]["code"] == "INPUT_FETCH_FAILED"
    assert data["error"]["message"] == reason


def test_an_unreachable_input_fails_the_task(sim):
    with socket_closed_port() as port:
        data = _run(sim, [f"http://127.0.0.1:{port}/x.png"])
    assert data["status"] == "fail" and "input_urls[0] could not be downloaded" in data["error"]["message"]


class socket_closed_port:  # noqa: N801 (a context manager used like a function)
    """A loopback port with nothing listening on it."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc) -> None:
        pass
