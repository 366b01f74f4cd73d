"""A local HTTP server that answers like HiAPI's task API: the engine, served.

It serves the documented surface (create, status, list, temporary file URLs,
signed callbacks) with lazily computed task lifecycles, and adds fault
injection and counters under `/_sim/` for tests and benchmarks. See the
package docstring for the Python API. The parts: `engine.py` (the task model,
faults, stats, callbacks), `validation.py` (what a request may say),
`http.py` (the routes), `signing.py` (the callback signature); this module
binds them and keeps the names they had when they all lived here.
"""

from __future__ import annotations

from typing import Any

from .engine import (
    CALLBACK_BACKOFF_ENV,
    CALLBACK_FIRST_RETRY_S,
    CALLBACK_RETRY_FACTORS,
    DEFAULT_MODELS,
    FAIL_MARKER,
    FAILURES,
    IDEMPOTENCY_WINDOW_S,
    PHASES,
    PROMPT_REJECTED,
    QUALITY_SLOWDOWN,
    TASK_ID_PREFIX,
    DurationModel,
    Engine,
    Faults,
    TaskRecord,
    new_task_id,
    realistic_duration,
)
from .http import _Handler, _Server, _Server6
from .signing import sign
from .validation import DEFAULT_PAGE_SIZE, MAX_BODY_BYTES, MAX_IDEMPOTENCY_KEY_BYTES, MAX_PAGE_SIZE

__all__ = [
    "CALLBACK_BACKOFF_ENV",
    "CALLBACK_FIRST_RETRY_S",
    "CALLBACK_RETRY_FACTORS",
    "DEFAULT_MODELS",
    "DEFAULT_PAGE_SIZE",
    "FAILURES",
    "FAIL_MARKER",
    "IDEMPOTENCY_WINDOW_S",
    "MAX_BODY_BYTES",
    "MAX_IDEMPOTENCY_KEY_BYTES",
    "MAX_PAGE_SIZE",
    "PHASES",
    "PROMPT_REJECTED",
    "QUALITY_SLOWDOWN",
    "TASK_ID_PREFIX",
    "DurationModel",
    "Engine",
    "Faults",
    "Simulator",
    "TaskRecord",
    "new_task_id",
    "realistic_duration",
    "sign",
]


class Simulator(Engine):
    """An in-process HiAPI look-alike serving real HTTP on a daemon thread.

    `host` and `port` (0 picks a free one) are where it listens; every other
    argument is the `Engine`'s (keys, signing key, durations, faults, seed,
    models, callback schedule). `start()` binds the port and runs the engine;
    `stop()` refuses new requests, ends kept-alive connections and drops
    pending callbacks. Use it as a context manager.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.host = host
        self._port = port
        self._server: _Server | None = None

    def start(self) -> Simulator:
        if self._server is not None:
            raise RuntimeError("simulator already started")
        server_cls = _Server6 if ":" in self.host else _Server
        self._server = server_cls((self.host, self._port), _Handler)
        self._server.sim = self
        super().start()
        self._spawn(self._serve, "sim-http")
        return self

    def _serve(self) -> None:
        assert self._server is not None
        self._server.serve_forever(poll_interval=0.05)

    def _stop_serving(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Simulator:
        return self if self._server is not None else self.start()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("simulator not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"
