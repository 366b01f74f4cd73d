"""Refusals at start come before anything listens, and one data folder has one server.

`make run` starts the studio through `launch.py`; the command is read from the
Makefile, so these tests start exactly what `make run` starts.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys

import pytest

from studio import services as core
from studio.config import Settings
from studio.startup import StartupError
from tests.support import ROOT, StudioServer, free_port

FAKE_KEY = "sk-fake-real-key-for-the-bind-test-0123"


def make_run_command(port: int, address: str) -> list[str]:
    """The `run:` recipe of the Makefile, with this virtualenv's interpreter."""
    recipe = re.search(r"^run:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    line = recipe.strip().splitlines()[-1].strip()
    line = line.replace("$(PORT)", str(port)).replace("$(ADDRESS)", address)
    words = shlex.split(line)
    tool = words[0].removeprefix("$(BIN)/")
    head = [sys.executable] if tool == "python" else [sys.executable, "-m", tool]
    return [*head, *words[1:], "--server.headless", "true", "--browser.gatherUsageStats", "false"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HIAPI_", "STUDIO_"))}
    return env | {"PYTHONUNBUFFERED": "1"} | extra


def _connects_until_exit(proc: subprocess.Popen, port: int) -> int:
    """Try to connect to `port` from now until `proc` exits; how many connects succeeded."""
    accepted = 0
    while proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                accepted += 1
        except OSError:
            pass
    return accepted


def test_make_run_refuses_an_exposed_address_before_it_listens(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        make_run_command(port, "0.0.0.0"),
        cwd=ROOT,
        env=_env(HIAPI_API_KEY=FAKE_KEY, STUDIO_DATA_DIR=str(tmp_path / "d")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    accepted = _connects_until_exit(proc, port)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "Studio not started: Refusing to listen on 0.0.0.0 with a real HiAPI API key" in err
    assert accepted == 0  # no socket ever took a connection
    assert "Traceback" not in out + err and FAKE_KEY not in out + err


def test_a_second_server_on_the_same_data_folder_refuses_with_one_sentence(tmp_path):
    data = tmp_path / "data"
    first = StudioServer(data).start()
    try:
        port = free_port()
        second = subprocess.Popen(
            make_run_command(port, "127.0.0.1"),
            cwd=ROOT,
            env=_env(STUDIO_DATA_DIR=str(data)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        accepted = _connects_until_exit(second, port)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 2
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines == [
            f"Studio not started: Another studio (process {first.proc.pid}) is already running on the "
            f"data folder {data}; stop it, or point STUDIO_DATA_DIR at another folder, and restart."
        ]
        assert accepted == 0 and "Traceback" not in out

        # In this process (what a page would show): the same sentence, nothing started.
        core.shutdown()
        with pytest.raises(StartupError, match="Another studio .* is already running on the data folder"):
            core.boot(Settings.load(env={"STUDIO_DATA_DIR": str(data)}))
        assert core.current() is None
    finally:
        first.stop()
    s = core.boot(Settings.load(env={"STUDIO_DATA_DIR": str(data)}))  # the first one is gone: free again
    try:
        assert s.tracker.alive
    finally:
        core.shutdown()
