"""P4 start-up, and the instrumented studio launcher the gallery and load benchmarks use.

Start-up: launch → `/_stcore/health` answers "ok", for the studio (`streamlit
run server.py` on a fresh data folder, as `make run` starts it) and, in the
same run, for a bare `streamlit run` of a one-line hello script with the same
server flags; then the first page load in Chromium (goto → the Generate button
visible) beside the hello page's (goto → its text visible). Launches alternate
studio / hello so that background load hits both alike; each figure is the
median of the launches.

Script-run timing: `TimedStudioServer` runs the real studio through
`python -m benchmarks.startup serve run server.py …`, which wraps Streamlit's
`ScriptRunner._run_script` and then hands over to Streamlit's own CLI. Every
script run (a full page run, or a fragment rerun such as the queue's timed
redraw) is appended to `<data>/runs.jsonl` with its wall time, the script
thread's CPU time, the whole process's CPU time over the same span and the
page it ran. The studio's code is untouched; what is timed is the whole
server-side run including Streamlit's own work (widget state, queueing the
deltas, the post-run garbage collection). `BENCH_PROFILE_DIR=/some/folder`
also writes a pyinstrument profile of every run (`pip install pyinstrument`;
for finding slow paths, not for the figures: profiling slows each run).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import Row

# Kept free of test imports (pytest): the timed server process imports this module.
ROOT = Path(__file__).resolve().parent.parent

RUN_LOG_ENV = "BENCH_RUN_LOG"
PROFILE_ENV = "BENCH_PROFILE_DIR"  # set (to a folder) to write a pyinstrument profile of every run
SECTION = "P4 start-up"
GENERATE = ".st-key-generate_box button:visible"
HELLO = 'import streamlit as st; st.title("Hello")\n'
HEALTH_TARGET_S = 3.0
SERVER_FLAGS = ["--server.headless", "true", "--browser.gatherUsageStats", "false"]


# --------------------------------------------------------------------------- script-run timing


def install_run_timer(log_path: str) -> None:
    """Wrap ScriptRunner._run_script so each run is logged (in the server process)."""
    from streamlit.runtime.scriptrunner import script_runner as sr

    original = sr.ScriptRunner._run_script
    lock = threading.Lock()
    profile_dir = os.environ.get(PROFILE_ENV)
    count = iter(range(1_000_000))

    def timed(self: Any, rerun_data: Any) -> None:
        fragment = bool(rerun_data.fragment_id_queue)
        profiler = None
        if profile_dir:  # for finding slow paths only: profiling slows every run down
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005)
            profiler.start()
        t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
        try:
            original(self, rerun_data)
        finally:
            ms = (time.perf_counter() - t0) * 1000
            cpu_ms = (time.thread_time() - c0) * 1000
            # Every thread of the server over the same span: with cpu_ms, tells GIL waits
            # (process busy elsewhere) from CPU waits (the machine busy elsewhere).
            proc_ms = (time.process_time() - p0) * 1000
            if profiler is not None:
                profiler.stop()
                name = f"{next(count):04d}-{'fragment' if fragment else 'page'}-{ms:.0f}ms.txt"
                Path(profile_dir, name).write_text(profiler.output_text(unicode=True, show_all=False))
            page = ""
            try:
                h = self._get_script_run_ctx().page_script_hash
                page = (self._pages_manager.get_pages().get(h) or {}).get("page_name", "")
            except Exception:  # the log must never break a run
                pass
            line = json.dumps(
                {"t": time.time(), "ms": ms, "cpu_ms": cpu_ms, "proc_ms": proc_ms, "fragment": fragment, "page": page,
                 "session": self._session_id, "fragments": list(rerun_data.fragment_id_queue or ())}
            )  # fmt: skip
            with lock, open(log_path, "a") as f:
                f.write(line + "\n")

    sr.ScriptRunner._run_script = timed


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the benchmark that started it dies, so a
    killed run leaves no server behind (it survives exec; servers run in their own session)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def _serve(argv: list[str]) -> None:
    die_with_parent()
    install_run_timer(os.environ[RUN_LOG_ENV])
    from streamlit.web.cli import main

    sys.argv = ["streamlit", *argv]
    main(prog_name="streamlit")


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float, log: Callable[[], str] = str) -> float:
    """Poll `/_stcore/health` every 20 ms until it answers "ok"; returns that perf_counter time."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{log()}")
            try:
                if http.get(url + "/_stcore/health").text.strip() == "ok":
                    return time.perf_counter()
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    raise RuntimeError(f"server did not become healthy within {timeout:.0f} s:\n{log()}")


def stop_group(proc: subprocess.Popen | None) -> None:
    """SIGTERM a server's process group (it was started in its own session), then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TimedStudioServer:
    """The studio as `tests.conftest.StudioServer` runs it (same environment and
    flags, same interface), launched through `_serve` so every script run is logged."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir / "server.log"
        self.run_log = data_dir / "runs.jsonl"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_group(self.proc)

    def start(self, timeout: float = 60.0) -> TimedStudioServer:
        env = studio_env(self.data_dir) | {RUN_LOG_ENV: str(self.run_log)} | self.extra_env
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.startup", "serve", *studio_args(self.port)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            wait_healthy(self.url, self.proc, timeout, self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def runs(
        self, since: float = 0.0, *, page: str | None = None, fragment: bool | None = None
    ) -> list[dict]:
        """Logged script runs that ended after `since` (wall clock), optionally filtered."""
        if not self.run_log.exists():
            return []
        out = []
        for line in self.run_log.read_text().splitlines():
            r = json.loads(line)
            if r["t"] < since or (page is not None and r["page"] != page):
                continue
            if fragment is not None and r["fragment"] != fragment:
                continue
            out.append(r)
        return out


def studio_env(data_dir: Path) -> dict[str, str]:
    """The environment `tests.conftest.StudioServer.start` gives the studio."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HIAPI_", "STUDIO_"))}
    env.update(
        {
            "STUDIO_DATA_DIR": str(data_dir),
            "STUDIO_SIM_MIN_DURATION": "1.0",
            "STUDIO_SIM_MAX_DURATION": "2.0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def studio_args(port: int) -> list[str]:
    return ["run", "server.py", "--server.port", str(port), "--server.address", "127.0.0.1", *SERVER_FLAGS]


def launch_niced_browser(pw: Any, folder: Path, niceness: int = 10) -> Any:
    """Debian's Chromium at a lower CPU priority, for driving a server on this same machine.

    The browsers stand in for users on their own computers; at normal priority
    ten of them redrawing on these 2 cores starve the server being measured.
    Niced, they still send every rerun their timers ask for, and the server gets
    the CPU first. (A wrapper script, because Playwright takes only a path.)
    """
    from tests.conftest import CHROMIUM, CHROMIUM_ARGS

    wrapper = folder / "chromium-niced"
    wrapper.write_text(f'#!/bin/sh\nexec nice -n {int(niceness)} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return pw.chromium.launch(executable_path=str(wrapper), headless=True, args=CHROMIUM_ARGS)


# --------------------------------------------------------------------------- P4


def _launch(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, float]:
    with open(log, "ab") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", *args],
            cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return proc, t0


def _one_launch(kind: str, work: Path, browser: Any) -> tuple[float, float]:
    """Launch once; returns (seconds to health ok, seconds for the first page load)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = work / f"{kind}.log"
    if kind == "studio":
        data = Path(tempfile.mkdtemp(prefix="studio-", dir=work))
        proc, t0 = _launch(studio_args(port), ROOT, studio_env(data), log)
        ready = GENERATE
    else:
        (work / "hello.py").write_text(HELLO)
        args = ["run", "hello.py", "--server.port", str(port), "--server.address", "127.0.0.1",
                "--server.fileWatcherType", "none", *SERVER_FLAGS]  # fmt: skip
        proc, t0 = _launch(args, work, dict(os.environ), log)
        ready = "h1:has-text('Hello')"
    try:
        healthy = wait_healthy(url, proc, 60.0, lambda: log.read_text(errors="replace")) - t0
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        try:
            page = context.new_page()
            page.set_default_timeout(30_000)
            t1 = time.perf_counter()
            page.goto(url + "/")
            page.wait_for_selector(ready, state="visible")
            first_page = time.perf_counter() - t1
        finally:
            context.close()
        return healthy, first_page
    finally:
        stop_group(proc)


def run(quick: bool = False) -> list[Row]:
    from playwright.sync_api import sync_playwright

    from tests.conftest import CHROMIUM, CHROMIUM_ARGS

    rounds = 1 if quick else 3
    got: dict[str, list[tuple[float, float]]] = {"studio": [], "hello": []}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            _one_launch("hello", Path(tmp), browser)  # warm the OS file cache for both alike
            for _ in range(rounds):
                for kind in ("studio", "hello"):
                    got[kind].append(_one_launch(kind, Path(tmp), browser))
        finally:
            browser.close()

    def med(kind: str, i: int) -> float:
        return statistics.median(x[i] for x in got[kind])

    def listing(kind: str, i: int) -> str:
        return ", ".join(f"{x[i]:.2f}" for x in got[kind])

    health = med("studio", 0)
    return [
        Row(
            SECTION, "launch → /_stcore/health ok", health, "s",
            baseline=med("hello", 0), baseline_name="bare streamlit hello",
            target=f"≤ {HEALTH_TARGET_S:g} s", met=health <= HEALTH_TARGET_S,
            note=f"median of {rounds}; studio {listing('studio', 0)} s, hello {listing('hello', 0)} s",
        ),
        Row(
            SECTION, "first page load (goto → Generate visible)", med("studio", 1), "s",
            baseline=med("hello", 1), baseline_name="hello page",
            note=f"Chromium, right after health ok; studio {listing('studio', 1)} s, hello {listing('hello', 1)} s",
        ),
    ]  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        _serve(sys.argv[2:])
    elif sys.argv[1:2] == ["simulator"]:  # `python -m studio.simulator …` that dies with the benchmark
        die_with_parent()
        from studio.simulator.__main__ import main as simulator_main

        raise SystemExit(simulator_main(sys.argv[2:]))
    else:
        from benchmarks.common import table

        rows = run(quick="--quick" in sys.argv)
        print(table(rows))
        print("\n".join(f"- {r.metric}: {r.note}" for r in rows if r.note))
