"""The simulator's HTTP layer: HiAPI's routes over the engine, and `/_sim/`.

`_Server` is a threading HTTP/1.1 server (keep-alive, no reverse DNS) holding
the engine; `_Handler` reads a request (bodies capped at `MAX_BODY_BYTES`,
chunked or not), checks the bearer key, draws the per-request faults (429/503
with `Retry-After`, dropped create answers, trickled, truncated or non-image
downloads), validates creates (`validation.py`) and answers HiAPI's envelope
`{code, message, data[, error_code]}`. Every decision about a task is the
engine's (`engine.py`, public API only); every answer is counted under
`requests` in the engine's stats, `/_sim/` calls excepted.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import math
import socket
import socketserver
import time
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .engine import Engine, Faults
from .validation import (
    DEFAULT_PAGE_SIZE,
    MAX_BODY_BYTES,
    MAX_IDEMPOTENCY_KEY_BYTES,
    MAX_PAGE_SIZE,
    create_problems,
    is_json,
    query_int,
)

log = logging.getLogger("studio.simulator")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    sim: Engine

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_NON_IMAGE_PAGE = (
    b"<!DOCTYPE html><html><head><title>Service Unavailable</title></head>"
    b"<body><h1>Service temporarily unavailable</h1><p>Please try again later.</p></body></html>"
)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "HiAPI-Simulator/1.0"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed after this
    server: _Server

    # Quiet: the base class would log request lines; we log method, route and status only.
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's algorithm
        # and the client's delayed ACK add ~40 ms to every answer on a kept-alive connection.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.server.sim.track_connection(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sim.track_connection(self.connection, False)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ------------------------------------------------------------------ plumbing

    @property
    def sim(self) -> Engine:
        return self.server.sim

    def _dispatch(self, method: str) -> None:
        self._method = method
        self._route = "<unknown>"
        self._answered = False
        self._admin = False
        try:
            try:
                body = self._read_body()
            except _BadRequest as e:
                self.close_connection = True
                self._error(e.status, e.message, "INVALID_REQUEST")
                return
            if self.sim.stopping:
                self.close_connection = True
                self._error(503, "Simulator is stopping.")
                return
            url = urlsplit(self.path)
            path = url.path.rstrip("/") or "/"
            if path.startswith("/_sim/"):
                self._admin = True
                self._route = path
                self._handle_admin(method, path, body)
            elif path == "/v1/tasks":
                self._route = "/v1/tasks"
                if method == "POST":
                    self._handle_create(body)
                elif method == "GET":
                    self._handle_list(url.query)
                else:
                    self._error(405, f"Method {method} is not allowed here.")
            elif path.startswith("/v1/tasks/") and "/" not in path[len("/v1/tasks/") :]:
                self._route = "/v1/tasks/{id}"
                if method == "GET":
                    self._handle_get(unquote(path[len("/v1/tasks/") :]))
                else:
                    self._error(405, f"Method {method} is not allowed here.")
            elif path.startswith("/files/") and method == "GET":
                self._route = "/files/{file}"
                self._handle_file(path[len("/files/") :])
            else:
                self._error(404, "Not found.")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            log.exception("simulator error on %s %s", method, self._route)
            self.close_connection = True
            if not self._answered:
                try:
                    self._error(500, "Internal simulator error.")
                except OSError:
                    pass

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                raise _BadRequest(400, "Invalid Content-Length header.") from None
            if n < 0:
                raise _BadRequest(400, "Invalid Content-Length header.")
            if n > MAX_BODY_BYTES:
                raise _BadRequest(413, "Request body too large.")
            return self.rfile.read(n) if n else b""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip() or b"x", 16)
                except ValueError:
                    raise _BadRequest(400, "Malformed chunked body.") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    raise _BadRequest(413, "Request body too large.")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)
        return b""

    def _send(
        self,
        status: int,
        payload: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        *,
        send_only: int | None = None,
        trickle: float = 0.0,
    ) -> None:
        self._answered = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self._record(str(status))
        if trickle > 0:
            self._trickle(payload, trickle)
            return
        self.wfile.write(payload if send_only is None else payload[:send_only])

    def _trickle(self, payload: bytes, every: float) -> None:
        """Write `payload` one byte per `every` seconds until done or the client hangs up."""
        sim = self.sim
        sim.count("trickles_started")
        for i in range(len(payload)):
            try:
                if sim.stopping:
                    raise BrokenPipeError
                self.wfile.write(payload[i : i + 1])
            except OSError:
                sim.count("trickles_cut")
                self.close_connection = True
                return
            time.sleep(every)
        sim.count("trickles_finished")

    def _record(self, outcome: str) -> None:
        if not self._admin:
            self.sim.count_in("requests", f"{self._method} {self._route} {outcome}")
        log.info("%s %s %s", self._method, self._route, outcome)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        self._send(status, raw, "application/json", headers)

    def _ok(self, data: Any, headers: dict[str, str] | None = None) -> None:
        self._json(200, {"code": 200, "message": "success", "data": data}, headers)

    def _error(
        self, status: int, message: str, error_code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        body: dict[str, Any] = {"code": status, "message": message, "data": None}
        if error_code:
            body["error_code"] = error_code
        self._json(status, body, headers)

    def _retry_after(self, faults: Faults) -> dict[str, str]:
        seconds = max(0, math.ceil(faults.retry_after))
        if faults.retry_after_as_date:
            return {"Retry-After": formatdate(time.time() + seconds, usegmt=True)}  # a wall-clock date
        return {"Retry-After": str(seconds)}

    def _rate_faults(self, rate_429: float, rate_503: float) -> bool:
        """Answer an injected 429/503 if one is drawn; True when answered."""
        faults = self.sim.faults
        if self.sim.draw_fault(rate_429):
            self._error(429, "Too many requests; slow down.", headers=self._retry_after(faults))
            return True
        if self.sim.draw_fault(rate_503):
            self._error(503, "Service busy; try again later.", headers=self._retry_after(faults))
            return True
        return False

    def _owner(self) -> str | None:
        """The caller's partition, or None after answering 401."""
        header = self.headers.get("Authorization")
        if not header or not header.strip():
            self._error(401, "Missing API key: send 'Authorization: Bearer <key>'.")
            return None
        scheme, _, key = header.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or not self.sim.key_ok(key):
            self._error(401, "Invalid API key.")
            return None
        return self.sim.owner_of(key)

    # ------------------------------------------------------------------ routes

    def _handle_create(self, raw: bytes) -> None:
        sim = self.sim
        owner = self._owner()
        if owner is None:
            return
        if self._rate_faults(sim.faults.post_429_rate, sim.faults.post_503_rate):
            return
        if not is_json(self.headers.get("Content-Type")):
            self._error(415, "Content-Type must be application/json.")
            return
        idem_key = self.headers.get("Idempotency-Key")
        if idem_key is not None and not 1 <= len(idem_key.encode("latin-1")) <= MAX_IDEMPOTENCY_KEY_BYTES:
            self._error(
                400, f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_BYTES} bytes.", "INVALID_REQUEST"
            )
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._error(400, "Request body must be JSON.", "INVALID_REQUEST")
            return
        if not isinstance(body, dict):
            self._error(400, "Request body must be a JSON object.", "INVALID_REQUEST")
            return

        if idem_key is not None:
            canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            fingerprint = hashlib.sha256(canonical.encode()).hexdigest()
            state, first_id = sim.idempotency_begin(owner, idem_key, fingerprint, sim.now())
            if state == "mismatch":
                self._error(
                    422,
                    "Idempotency-Key was already used with a different request body.",
                    "IDEMPOTENCY_KEY_MISMATCH",
                )
                return
            if state == "processing":
                self._error(
                    409,
                    "A request with this Idempotency-Key is still being processed.",
                    "IDEMPOTENCY_KEY_PROCESSING",
                    headers={"Retry-After": "1"},
                )
                return
            if state == "replay":
                sim.count("idempotent_replays")
                sim.count("creates")
                self._ok({"taskId": first_id}, headers={"idempotent-replay": "true"})
                return

        task = None
        try:
            messages, values = create_problems(body, sim.models)
            if messages:
                self._error(400, " ".join(messages), "INVALID_REQUEST")
                return
            delay = sim.faults.create_delay_s
            if delay > 0:
                time.sleep(delay)
            task = sim.create_task(
                owner,
                values["model"],
                values["prompt"],
                values["aspect_ratio"],
                values["resolution"],
                values["callback_url"],
                idem_key,
                input_urls=values["input_urls"],
                quality=values["quality"],
                background=values["background"],
            )
        finally:
            if task is None and idem_key is not None:
                sim.idempotency_release(owner, idem_key)

        sim.count("creates")
        if sim.draw_fault(sim.faults.drop_create_answer_rate):
            sim.count("create_answers_dropped")
            self._record("dropped")
            self._answered = True
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._ok({"taskId": task.task_id})

    def _handle_get(self, task_id: str) -> None:
        sim = self.sim
        owner = self._owner()
        if owner is None:
            return
        sim.count_in("gets_by_task", task_id)
        if self._rate_faults(sim.faults.get_429_rate, sim.faults.get_503_rate):
            return
        task = sim.get_task(owner, task_id)
        if task is None:
            self._error(404, "Task not found.")
            return
        if sim.faults.get_trickle_s > 0:
            body = {"code": 200, "message": "success", "data": sim.view(task, sim.now())}
            self._send(200, json.dumps(body).encode(), "application/json", trickle=sim.faults.get_trickle_s)
            return
        self._ok(sim.view(task, sim.now()))

    def _handle_list(self, query: str) -> None:
        sim = self.sim
        owner = self._owner()
        if owner is None:
            return
        qs = parse_qs(query)
        # Out-of-range or unreadable values are normalised, as HiAPI does, never refused.
        page = max(1, query_int(qs, "page", 1))
        size = min(MAX_PAGE_SIZE, max(1, query_int(qs, "size", DEFAULT_PAGE_SIZE)))
        if self._rate_faults(sim.faults.get_429_rate, sim.faults.get_503_rate):
            return
        tasks, total = sim.list_tasks(owner, page, size)
        now = sim.now()
        self._ok({"page": page, "size": size, "total": total, "tasks": [sim.view(t, now) for t in tasks]})

    def _handle_file(self, name: str) -> None:
        sim = self.sim
        task = sim.task_by_file_token(name[:-4]) if name.endswith(".png") else None
        now = sim.now()
        if task is None or task.error is not None or now < task.finished_at:
            self._error(404, "File not found.")
            return
        if now >= task.finished_at + sim.output_ttl:
            self._error(410, "This file URL has expired.")
            return
        faults = sim.faults
        if faults.download_slow_s > 0:
            time.sleep(faults.download_slow_s)
        if sim.draw_fault(faults.download_fail_rate):
            self._error(500, "Storage error.")
            return
        if sim.draw_fault(faults.download_non_image_rate):
            sim.count("downloads")
            self._send(200, _NON_IMAGE_PAGE, "text/html; charset=utf-8")
            return
        png = sim.png(task)
        headers = {"Cache-Control": "private, max-age=3600"}
        sim.count("downloads")
        if sim.draw_fault(faults.download_truncate_rate):
            self.close_connection = True
            self._send(200, png, "image/png", headers, send_only=len(png) // 2)
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(200, png, "image/png", headers, trickle=faults.download_trickle_s)

    def _handle_admin(self, method: str, path: str, raw: bytes) -> None:
        sim = self.sim
        if path == "/_sim/faults" and method == "GET":
            self._json(200, sim.faults.to_dict())
        elif path == "/_sim/faults" and method == "POST":
            try:
                changes = json.loads(raw or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("send a JSON object of fault settings")
                faults = sim.set_faults(**changes)
            except (ValueError, TypeError) as e:
                self._json(400, {"error": str(e)})
                return
            self._json(200, faults.to_dict())
        elif path == "/_sim/stats" and method == "GET":
            self._json(200, sim.stats())
        elif path == "/_sim/reset" and method == "POST":
            sim.reset_stats()
            self._json(200, {"ok": True})
        elif path == "/_sim/health" and method == "GET":
            self._json(200, {"ok": True, "tasks": sim.task_count()})
        else:
            self._json(404, {"error": "unknown admin endpoint"})
