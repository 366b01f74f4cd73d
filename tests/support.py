"""What tests share besides fixtures: the studio as a child process, condition waits,
Chromium's launch flags, a simulator factory and a clock tests move by hand.

Import from here (`from tests.support import wait_for`); conftest.py builds its
fixtures from these and re-exports them for older imports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
#: How long a browser test waits for results to arrive (ms): generous, so a busy 2-core machine passes.
ARRIVAL_MS = 120_000
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StudioServer:
    """The studio (`streamlit run server.py`) as a child process on a free port."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir / "server.log"

    def start(self, timeout: float = 60.0) -> StudioServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HIAPI_", "STUDIO_"))}
        env.update(
            {
                "STUDIO_DATA_DIR": str(self.data_dir),
                "STUDIO_SIM_MIN_DURATION": "1.0",
                "STUDIO_SIM_MAX_DURATION": "2.0",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "streamlit", "run", "server.py",
                "--server.port", str(self.port), "--server.address", "127.0.0.1",
                "--server.headless", "true", "--browser.gatherUsageStats", "false",
            ],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"studio exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/_stcore/health", timeout=1).text.strip() == "ok":
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"studio did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            end_process_group(self.proc, sig)


def end_process_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 30.0) -> None:
    """Cleanup: signal a child's process group, give it `grace` seconds (a busy machine is slow to
    wind down), then SIGKILL. Started with start_new_session=True, so the group is the child's."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        proc.wait(10)


def wait_for(condition: Callable[[], T], timeout: float = 60.0, step: float = 0.05) -> T:
    """Call `condition` until it returns something truthy, and return that.

    Raises AssertionError after `timeout` seconds: a wait that ends is the
    assertion, so a slow machine only makes a test slower, never red.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout:g} s")
        time.sleep(step)


class FakeClock:
    """A clock for `Tracker(clock=...)` and friends that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@contextmanager
def simulators(**defaults: Any) -> Iterator[Callable[..., Any]]:
    """A factory of started HiAPI simulators (`make(**kw)`), all stopped on exit.

    `defaults` apply to every simulator the factory makes; `make`'s own keywords win.
    """
    from studio.simulator import Simulator

    started: list[Simulator] = []

    def make(**kw: Any) -> Simulator:
        s = Simulator(**{**defaults, **kw}).start()
        started.append(s)
        return s

    try:
        yield make
    finally:
        for s in started:
            s.stop()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def generate_button(at):
    """The Studio's Generate button in an AppTest: its key carries the click token (`generate_<token>`)."""
    return next(b for b in at.button if (b.key or "").startswith("generate_"))
