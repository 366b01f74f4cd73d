"""Output URLs may point anywhere: only https to public addresses is fetched (loopback for the simulator).

A real loopback HTTP server shows refusal in real-key mode and acceptance in
simulator mode; made-up host names are resolved by a test resolver, so the
checks run on the addresses a lookup would give. MockTransport stands in only
for what no local server can be: an https image host that redirects, and a
HiAPI that is not on this machine.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from PIL import Image

from studio.client import HiAPIClient
from studio.images import DownloadFailed, ImageKeeper
from studio.models import TaskRequest
from studio.store import Store
from studio.tracker import Tracker
from studio.transport import AddressPolicy
from tests.support import wait_for

RECIPE = {"prompt": "a fox"}
PRIVATE = "Refused: output URL points to a private address."


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(buf, "PNG")
    return buf.getvalue()


class ImageServer(ThreadingHTTPServer):
    """Serves /good.png; /hop/N redirects N times before it; /to?u=URL redirects to URL."""

    daemon_threads = True
    png = _png()

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), _Handler)
        self.connections = 0
        self.paths: list[str] = []
        self.base = f"http://{host}:{self.server_address[1]}"
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: ImageServer

    def log_message(self, *args: object) -> None:
        pass

    def setup(self) -> None:
        self.server.connections += 1
        super().setup()

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        if self.path == "/good.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(self.server.png)))
            self.end_headers()
            self.wfile.write(self.server.png)
            return
        if self.path.startswith("/hop/"):
            n = int(self.path.removeprefix("/hop/"))
            target = "/good.png" if n <= 1 else f"/hop/{n - 1}"
        elif self.path.startswith("/to?u="):
            target = self.path.removeprefix("/to?u=")
        else:
            self.send_error(404)
            return
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def server() -> Iterator[ImageServer]:
    s = ImageServer()
    yield s
    s.close()


def resolver(table: dict[str, list[str]], calls: list[str] | None = None):
    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        return table[host]

    return resolve


def refused(keeper: ImageKeeper, url: str, **kw) -> DownloadFailed:
    with pytest.raises(DownloadFailed) as info:
        keeper.fetch(url, RECIPE, **kw)
    assert info.value.code in ("refused", "redirects")
    assert info.value.retryable is False
    return info.value


# -- the address rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.7",
        "172.16.0.1",
        "192.168.1.2",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # shared (CGNAT)
        "0.0.0.0",
        "224.0.0.1",  # multicast, "global" to ipaddress
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "fe80::1",
        "fd00::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
        "2001:db8::1",
    ],
)
def test_private_and_special_addresses_are_refused(address):
    assert AddressPolicy().refusal(address) == "points to a private address"


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert AddressPolicy().refusal(address) is None


def test_loopback_only_is_allowed_for_the_simulator():
    local = AddressPolicy(allow_loopback=True)
    assert local.refusal("127.0.0.1") is None and local.refusal("::1") is None
    assert local.refusal("10.0.0.7") == local.refusal("169.254.169.254") == "points to a private address"


# -- real-key mode: refused before any connection ----------------------------------------


def test_real_mode_refuses_plain_http_and_loopback(server, tmp_path):
    with ImageKeeper(tmp_path / "images") as keeper:
        assert refused(keeper, f"{server.base}/good.png").message == "Refused: output URL is not https."
        assert refused(keeper, f"https://127.0.0.1:{server.port}/good.png").message == PRIVATE
    assert server.connections == 0


@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],
        ["10.0.0.7"],
        ["169.254.169.254"],
        ["::ffff:127.0.0.1"],
        ["93.184.216.34", "127.0.0.1"],  # every address counts, not just the first
    ],
)
def test_real_mode_refuses_names_that_resolve_to_private_addresses(server, tmp_path, addresses):
    calls: list[str] = []
    resolve = resolver({"images.example.com": addresses}, calls)
    with ImageKeeper(tmp_path / "images", resolve=resolve) as keeper:
        error = refused(keeper, f"https://images.example.com:{server.port}/good.png")
    assert error.message == PRIVATE
    assert calls == ["images.example.com"]
    assert server.connections == 0  # the loopback server behind the name was never reached


# -- simulator mode: loopback accepted, nothing else private ---------------------------------


def test_simulator_mode_keeps_loopback_images(server, tmp_path):
    with ImageKeeper(tmp_path / "images") as keeper:
        kept = keeper.fetch(f"{server.base}/good.png", RECIPE, allow_loopback=True)
    assert (kept.width, kept.height) == (8, 8)
    with ImageKeeper(tmp_path / "images2", allow_loopback=True) as keeper:
        assert keeper.fetch(f"{server.base}/good.png", RECIPE).sha256 == kept.sha256


def test_simulator_mode_still_refuses_private_lan_addresses(tmp_path):
    resolve = resolver({"nas.lan": ["192.168.1.20"]})
    with ImageKeeper(tmp_path / "images", allow_loopback=True, resolve=resolve) as keeper:
        assert refused(keeper, "https://nas.lan/x.png").message == PRIVATE
        assert refused(keeper, "http://10.0.0.7/x.png").message == "Refused: output URL is not https."


def test_the_connection_goes_to_the_checked_address(tmp_path):
    """The name is looked up once, by the check; the socket connects to that answer.

    The server listens on 127.0.0.2 only, where the system's own lookup of
    "localhost" (127.0.0.1 or ::1) would never reach it.
    """
    try:
        pinned = ImageServer("127.0.0.2")
    except OSError:
        pytest.skip("127.0.0.2 is not available here")
    try:
        calls: list[str] = []
        resolve = resolver({"localhost": ["127.0.0.2"]}, calls)
        with ImageKeeper(tmp_path / "images", allow_loopback=True, resolve=resolve) as keeper:
            kept = keeper.fetch(f"http://localhost:{pinned.port}/good.png", RECIPE)
        assert kept.width == 8
        assert calls == ["localhost"] and pinned.connections == 1
    finally:
        pinned.close()


# -- redirects -----------------------------------------------------------------------------


def test_at_most_three_redirects_are_followed(server, tmp_path):
    with ImageKeeper(tmp_path / "images", allow_loopback=True) as keeper:
        assert keeper.fetch(f"{server.base}/hop/3", RECIPE).width == 8
        error = refused(keeper, f"{server.base}/hop/4")
    assert error.message == "Refused: output URL redirects more than 3 times."
    assert server.paths[-4:] == ["/hop/4", "/hop/3", "/hop/2", "/hop/1"]  # /good.png never asked for


def test_every_redirect_hop_is_checked(server, tmp_path):
    with ImageKeeper(tmp_path / "images", allow_loopback=True) as keeper:
        metadata = refused(keeper, f"{server.base}/to?u=https://169.254.169.254/latest/meta-data")
        plain = refused(keeper, f"{server.base}/to?u=http://93.184.216.34/x.png")
    assert metadata.message == PRIVATE
    assert plain.message == "Refused: output URL is not https."


def test_a_public_https_host_redirecting_to_a_private_one_is_refused(tmp_path):
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "https://internal.example/secret.png"})

    resolve = resolver({"cdn.example": ["93.184.216.34"], "internal.example": ["10.1.2.3"]})
    http = httpx.Client(transport=httpx.MockTransport(handler))
    with ImageKeeper(tmp_path / "images", http=http, resolve=resolve) as keeper:
        assert refused(keeper, "https://cdn.example/out.png").message == PRIVATE
    assert seen == ["https://cdn.example/out.png"]  # the private hop was never sent
    http.close()


# -- the tracker: a refused output fails at once, with the reason ---------------------------


def _remote_hiapi(output_url: str) -> httpx.MockTransport:
    """A HiAPI that is not on this machine (so not the simulator) whose output points at `output_url`."""

    def handler(request: httpx.Request) -> httpx.Response:
        now = int(time.time())
        if request.method == "POST":
            data = {"taskId": "tk-hiapi-remote1"}
        else:
            data = {
                "taskId": "tk-hiapi-remote1",
                "status": "success",
                "created": now - 1,
                "completed": now,
                "output": [{"url": output_url, "type": "image", "expireAt": now + 86400}],
            }
        return httpx.Response(200, content=json.dumps({"code": 200, "message": "ok", "data": data}))

    return httpx.MockTransport(handler)


def test_tracker_marks_a_refused_output_failed_with_the_reason(server, tmp_path: Path):
    store = Store(tmp_path / "studio.db")
    transport = _remote_hiapi(f"https://127.0.0.1:{server.port}/good.png")
    client = HiAPIClient("sk-test-remote-0123456789", base_url="https://api.hiapi.test", transport=transport)
    assert client.is_local is False
    tracker = Tracker(store, client, ImageKeeper(tmp_path / "images"), priors={"1K": 0.2})
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("a fox", "1:1", "1K")])
        o = wait_for(
            lambda: next((x for x in store.outputs_for([sid]).get(sid, []) if x.state == "failed"), None)
        )
        assert o.state == "failed"
        assert o.error == PRIVATE
        assert o.attempts == 1  # final at once: refusing again would change nothing
        assert server.connections == 0
    finally:
        tracker.stop()
