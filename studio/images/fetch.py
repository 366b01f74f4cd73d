"""Downloading an output: plain, bounded, and only from public addresses.

* Downloads use their own plain HTTP requests: no Authorization header, no
  cookies, no client default headers, ever. Output URLs point at third-party
  storage and must never see the API key.
* Explicit timeouts, a byte cap checked against Content-Length before reading
  and again while reading, and a check that every announced byte arrived. The
  whole download, redirects included, must finish within `total_timeout`
  (`DOWNLOAD_DEADLINE_S`); each connect and read gets only the time left, so a
  server trickling bytes is cut off there.
* Only https is fetched, and only from public internet addresses: the host is
  resolved, every address checked, and the connection made to a checked
  address (see `transport.GuardedBackend`), so a DNS rebind cannot swap it.
  With `local` (the simulator on this machine) loopback addresses, over http
  too, are allowed; private, link-local and other non-public ones never are.
  At most `MAX_REDIRECTS` redirects are followed, each hop checked the same
  way. A refused URL raises DownloadFailed(code="refused"), not retryable.
Nothing here imports streamlit.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import BinaryIO

import httpcore
import httpx

from ..transport import (
    AddressPolicy,
    GuardedBackend,
    RefusedAddress,
    deadline,
    guarded_transport,
    resolve_host,
    time_left,
)
from ..validation import is_loopback_host
from .errors import DownloadError, DownloadFailed, NotAnImage, OutputExpired, TooLarge, TruncatedDownload
from .png import sniff

log = logging.getLogger("studio.images")

#: Redirects followed per download; storage links redirect once, if at all.
MAX_REDIRECTS = 3
#: Deadline for one whole download (connect, redirects, every byte). A 4K PNG
#: is 10-25 MB: 120 s is enough down to about 2 Mbit/s, and a server that
#: trickles bytes (eight such downloads once held every worker 300 s) is cut
#: off here. A download past it is a failed, retryable attempt: the tracker
#: tries again while the output link lives.
DOWNLOAD_DEADLINE_S = 120.0
#: Connections kept per client; the tracker's download lane is smaller.
_LIMITS = httpx.Limits(max_connections=16, max_keepalive_connections=8, keepalive_expiry=30.0)

_REQUEST_HEADERS = {
    "Accept": "image/png,image/webp,image/jpeg;q=0.9,*/*;q=0.1",
    # Images gain nothing from transfer compression, and identity keeps
    # Content-Length comparable with the bytes we receive.
    "Accept-Encoding": "identity",
    "User-Agent": "hiapi-studio-images/0.1",
}


class Downloader:
    """Streams output URLs into files as this module's docstring says. Thread-safe.

    `http`, if given, is used only as a transport (connection pool, proxies,
    TLS settings): every request, redirects included, is built here with fixed
    headers, and the client's auth, default headers and cookies are never
    applied. Only a client made here is closed here. Such a passed-in client
    makes its own connections, so each hop's host is resolved and checked
    beforehand but not pinned; our own clients pin the address. `resolve`
    replaces the name lookup (tests map made-up names to chosen addresses).
    """

    def __init__(
        self,
        *,
        http: httpx.Client | None = None,
        max_bytes: int,
        timeout: float,
        total_timeout: float = DOWNLOAD_DEADLINE_S,
        resolve: Callable[[str, int], list[str]] = resolve_host,
    ) -> None:
        self.max_bytes = max_bytes
        # A per-read timeout does not stop a server that trickles one byte a
        # second; the total deadline does.
        self.total_timeout = total_timeout
        self._timeouts = httpx.Timeout(timeout, connect=min(timeout, 15.0))
        self._policies = {
            local: AddressPolicy(allow_loopback=local, resolve=resolve) for local in (False, True)
        }
        # One pool per policy: a connection opened to loopback for the simulator
        # must never be reused by a download that may not go there.
        self._clients: dict[bool, httpx.Client] = {}
        self._clients_lock = threading.Lock()
        self._http = http

    def download(self, url: str, out: BinaryIO, local: bool) -> None:
        """Stream `url` into `out` within the deadline; a DownloadError otherwise."""
        target = _web_url(url, local)
        with deadline(self.total_timeout):
            self._stream_into(target, out, local)

    def close(self) -> None:
        """Close the HTTP clients made here (never one passed in)."""
        with self._clients_lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def client(self, local: bool) -> httpx.Client:
        """The client for this policy: the one passed in, or ours (made on first use)."""
        if self._http is not None:
            return self._http
        with self._clients_lock:
            client = self._clients.get(local)
            if client is None:
                backend = GuardedBackend(self._policies[local])
                transport = guarded_transport(backend, limits=_LIMITS)
                client = httpx.Client(timeout=self._timeouts, transport=transport, trust_env=False)
                self._clients[local] = client
            return client

    def _request(self, url: httpx.URL) -> httpx.Request:
        # Built by hand, never with client.build_request(): client default
        # headers (an Authorization among them) and cookies are not merged in.
        return httpx.Request(
            "GET", url, headers=_REQUEST_HEADERS, extensions={"timeout": self._timeouts.as_dict()}
        )

    def _open_response(self, url: httpx.URL, local: bool) -> httpx.Response:
        """Send the GET, following redirects here rather than in the client, so
        every hop is a request built by `_request` (a client would add its
        cookies to redirected requests) and is checked like the first URL."""
        http = self.client(local)
        for _hop in range(MAX_REDIRECTS + 1):
            if self._http is not None:  # not our connections: check the host before sending
                self._policies[local].checked(url.host, url.port or (443 if url.scheme == "https" else 80))
            # The no-op Auth overrides any client auth and user:pass in the URL.
            response = http.send(self._request(url), stream=True, auth=httpx.Auth(), follow_redirects=False)
            if not response.has_redirect_location:
                return response
            location = response.headers["location"]
            response.close()
            url = _web_url(str(url.join(location)), local)
        raise DownloadFailed(
            f"Refused: output URL redirects more than {MAX_REDIRECTS} times.",
            code="redirects",
            retryable=False,
        )

    def _timed_out(self) -> DownloadFailed:
        left = time_left()
        if left is not None and left <= 0:
            return DownloadFailed(
                f"The image download did not finish within {self.total_timeout:g} s. It is tried again "
                "while its link lasts.",
                code="timeout",
            )
        return DownloadFailed("The image download timed out. Try again.", code="timeout")

    def _stream_into(self, url: httpx.URL, out: BinaryIO, local: bool) -> None:
        host = url.host
        try:
            response = self._open_response(url, local)
        except RefusedAddress as exc:
            log.info("image download from %s refused: %s", host, exc.reason)
            raise DownloadFailed(
                f"Refused: output URL {exc.reason}.", code="refused", retryable=False
            ) from None
        except httpcore.ConnectError:  # our pre-flight check could not resolve the host
            log.info("image download from %s failed: the host does not resolve", host)
            raise DownloadFailed() from None
        except httpx.TimeoutException:
            log.info("image download timed out connecting to %s", host)
            raise self._timed_out() from None
        except httpx.HTTPError as exc:
            log.info("image download from %s failed: %s", host, type(exc).__name__)
            raise DownloadFailed() from None

        expected: int | None = None
        try:
            if not response.is_success:
                raise _error_for_status(response)
            expected = _content_length(response)
            if expected is not None and expected > self.max_bytes:
                raise self.too_many_bytes()  # refused before reading a byte of body
            received = 0
            head = b""
            # Pieces as they arrive (no re-chunking), so the deadline is checked
            # after every read even when a passed-in client does not enforce it.
            for piece in response.iter_bytes():
                received += len(piece)
                if received > self.max_bytes:
                    raise self.too_many_bytes()
                if len(head) < 12:
                    head += piece[: 12 - len(head)]
                    if len(head) >= 12 and not sniff(head):
                        raise NotAnImage()  # e.g. an HTML error page: stop reading now
                out.write(piece)
                left = time_left()
                if left is not None and left <= 0:
                    raise self._timed_out()
            # Raw bytes on the wire, so a compressed body is compared correctly too.
            if expected is not None and response.num_bytes_downloaded < expected:
                raise TruncatedDownload()
            if received == 0:
                raise NotAnImage("The link returned an empty file.")
        except httpx.TimeoutException:
            raise self._timed_out() from None
        except httpx.HTTPError as exc:
            # A server closing early with Content-Length set surfaces here as a
            # protocol error: that is truncation, not a generic network failure.
            if expected is not None and response.num_bytes_downloaded < expected:
                raise TruncatedDownload() from None
            log.info("image download from %s failed mid-body: %s", host, type(exc).__name__)
            raise DownloadFailed() from None
        finally:
            response.close()

    def too_many_bytes(self) -> TooLarge:
        return TooLarge(f"The image is larger than the {self.max_bytes / 2**20:g} MB limit.")


def _web_url(url: str, local: bool) -> httpx.URL:
    """Parse an https URL (or, when `local`, an http one to a loopback host);
    anything else (file:, ftp:, junk, plain http elsewhere) is refused up front."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise DownloadFailed(
            "The image link is not a valid web address.", code="bad_url", retryable=False
        ) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise DownloadFailed("The image link is not a web address.", code="bad_url", retryable=False)
    if parsed.scheme == "http" and not (local and is_loopback_host(parsed.host)):
        raise DownloadFailed("Refused: output URL is not https.", code="refused", retryable=False)
    return parsed


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None:
        return None
    try:
        n = int(value.split(",")[0].strip())
    except ValueError:
        return None
    return n if n >= 0 else None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date is rare for storage servers; the caller backs off anyway
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _error_for_status(response: httpx.Response) -> DownloadError:
    status = response.status_code
    if status in (404, 410):
        return OutputExpired(status=status)
    code = f"http_{status}"
    if status >= 500 or status in (408, 425, 429):
        return DownloadFailed(
            f"The image server is having trouble (HTTP {status}). Try again shortly.",
            code=code,
            retryable=True,
            status=status,
            retry_after=_retry_after(response),
        )
    # 401/403 are what many storage services answer for an expired signed URL.
    hint = " The link may have expired." if status in (401, 403) else ""
    return DownloadFailed(
        f"The image server refused the download (HTTP {status}).{hint}",
        code=code,
        retryable=False,
        status=status,
    )
