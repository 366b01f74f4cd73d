"""Shared fixtures: a simulator on loopback, the studio server, Debian's Chromium, and the
team-mode engines (a throwaway PostgreSQL cluster, SeaweedFS as a local S3).

The helpers they are built from live in tests/support.py; the names below stay
importable from here for older imports.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import (  # noqa: F401 (re-exported)
    ARRIVAL_MS,
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    PG_MISSING,
    ROOT,
    WEED_MISSING,
    FakeClock,
    PostgresServer,
    S3Server,
    StudioServer,
    free_port,
    generate_button,
    postgres_bin,
    screenshot,
    simulators,
    wait_for,
    weed_binary,
)


@pytest.fixture(scope="module")
def studio_server(tmp_path_factory):
    server = StudioServer(tmp_path_factory.mktemp("studio-data")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


#: How long a browser action or an `expect` waits for its condition by default: generous, since a
#: condition wait costs nothing when it holds and a busy 2-core machine can take seconds per rerun.
ACTION_MS = 60_000


@pytest.fixture(autouse=True, scope="session")
def _patient_expectations():
    try:
        from playwright.sync_api import expect
    except ImportError:  # no browser tests in this environment
        yield
        return
    expect.set_options(timeout=30_000)
    yield


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 2000})
    p = context.new_page()
    p.set_default_timeout(ACTION_MS)
    yield p
    context.close()


@pytest.fixture
def reference_urls():
    """A loopback server of small PNGs: `reference_urls(n)` gives n URLs the simulator can fetch."""
    import http.server
    import io
    import threading

    from PIL import Image

    def png(i: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (96, 64), (40 * i % 256, 120, 200)).save(buf, "PNG")
        return buf.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            stem = self.path.strip("/").split(".")[0]
            body = png(int(stem) if stem.isdigit() else 0)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield lambda n: [f"{base}/{i}.png" for i in range(n)]
    server.shutdown()
    server.server_close()


@pytest.fixture
def make_simulator():
    """`make_simulator(**kw)`: a started HiAPI simulator, stopped after the test."""
    with simulators() as make:
        yield make


@pytest.fixture(scope="session")
def postgres_cluster():
    """The session's PostgreSQL cluster (tests/support.PostgresServer). A missing engine fails
    the test with the command that installs it: `make test` installs it, so it never skips."""
    if postgres_bin() is None:
        pytest.fail(PG_MISSING)
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server(postgres_cluster):
    """The DSN of the session cluster's `studio` database (password in it: never print it)."""
    return postgres_cluster.dsn


@pytest.fixture
def postgres_db(postgres_cluster):
    """The DSN of a fresh empty database on the session cluster, dropped after the test."""
    dsn = postgres_cluster.create_database()
    yield dsn
    postgres_cluster.drop_database(dsn)


@pytest.fixture(scope="session")
def s3_server():
    """The session's SeaweedFS S3 (tests/support.S3Server: endpoint_url, access_key, secret_key,
    bucket, client()). A missing `weed` fails the test with the command that installs it."""
    if weed_binary() is None:
        pytest.fail(WEED_MISSING)
    server = S3Server().start()
    yield server
    server.stop()
