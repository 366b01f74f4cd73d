"""Keeping generated images safely on disk.

HiAPI's output URLs are temporary (7 days by default, 24 h seen too), so every
result is downloaded at once and kept locally. The contract of this module:

* `ImageKeeper.fetch(url, recipe)` downloads with its own plain HTTP requests:
  no Authorization header, no cookies, no client default headers, ever. Output
  URLs point at third-party storage and must never see the API key.
* Downloads stream into `root/tmp/` with explicit timeouts, a byte cap checked
  against Content-Length before reading and again while reading, and a check
  that every announced byte arrived. The whole download, redirects included,
  must finish within `total_timeout` (`DOWNLOAD_DEADLINE_S`); each connect and
  read gets only the time left, so a server trickling bytes is cut off there.
* Output URLs come from HiAPI answers and callbacks and may point anywhere, so
  only https is fetched, and only from public internet addresses: the host is
  resolved, every address checked, and the connection made to a checked
  address (see `transport.GuardedBackend`), so a DNS rebind cannot swap it.
  With `allow_loopback` (the local simulator) loopback addresses, over http
  too, are allowed; private, link-local and other non-public ones never are.
  At most `MAX_REDIRECTS` redirects are followed, each hop checked the same
  way. A refused URL raises DownloadFailed(code="refused"), not retryable.
* Pillow verifies the file: only PNG, JPEG and WebP are accepted; the pixel
  count is checked from the header before any decoding (decompression bombs
  are refused); `verify()` plus a full `load()` detect truncation. Pillow's
  global flags (`LOAD_TRUNCATED_IMAGES`, `MAX_IMAGE_PIXELS`) are never changed.
* Every kept image is a PNG with the recipe embedded as text chunks: an
  uncompressed iTXt chunk `studio:recipe` holding the JSON recipe, plus one
  text chunk per field of `RECIPE_KEYS` for other tools. A PNG source keeps
  every other byte (pixels, colour profile, other metadata) as it was; a JPEG
  or WebP source is decoded once and re-encoded losslessly as PNG.
* The recipe is scrubbed before it is written: keys named like a credential
  (api_key, authorization, token, secret, password, ...) are dropped at any
  depth, and `sk-...` keys or bearer tokens inside values are redacted.
* Files are content-addressed by the SHA-256 of the final PNG bytes:
  `root/originals/ab/<sha>.png` and a WebP thumbnail `root/thumbs/ab/<sha>.webp`.
  Both are written to a temp file, fsynced and renamed atomically; an existing
  file is reused (identical image and recipe give identical bytes).
* Temp files are removed on every failure path; a crash can leave one behind
  in `root/tmp/`, which `sweep_temp()` removes at start-up.
* Failures raise a `DownloadError` subclass with a short `code`, a `retryable`
  flag and a message that is safe to show (no URL, no key).

`read_recipe()` reads the recipe back from a PNG by walking its chunks; it
never decodes pixels and never raises on junk input. Nothing here imports
streamlit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import struct
import tempfile
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

import httpcore
import httpx
from PIL import Image, UnidentifiedImageError

from .errors import redact
from .transport import (
    AddressPolicy,
    GuardedBackend,
    RefusedAddress,
    deadline,
    guarded_transport,
    resolve_host,
    time_left,
)
from .validation import is_loopback_host

__all__ = [
    "RECIPE_CHUNK",
    "RECIPE_KEYS",
    "DownloadError",
    "DownloadFailed",
    "ImageKeeper",
    "KeptImage",
    "NotAnImage",
    "OutputExpired",
    "TooLarge",
    "TruncatedDownload",
    "clean_recipe",
    "read_recipe",
]

log = logging.getLogger(__name__)

#: The fields written as individual PNG text chunks (besides the JSON chunk).
RECIPE_KEYS: tuple[str, ...] = ("prompt", "aspect_ratio", "resolution", "model", "task_id", "created")
#: Keyword of the iTXt chunk that holds the whole recipe as JSON.
RECIPE_CHUNK = "studio:recipe"

# Formats we accept; restricting Pillow's plugins also narrows the attack surface.
_FORMATS = ("PNG", "JPEG", "WEBP")
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt"})
_OWN_KEYWORDS = frozenset(k.encode("latin-1") for k in (RECIPE_CHUNK, *RECIPE_KEYS))
_MAX_CHUNK_LEN = 2**31 - 1  # PNG spec limit
_MAX_TEXT_READ = 8 * 2**20  # read_recipe ignores text chunks bigger than this
_COPY_SIZE = 1 << 20
_TEMP_SUFFIX = ".part"
#: Redirects followed per download; storage links redirect once, if at all.
MAX_REDIRECTS = 3
#: Deadline for one whole download (connect, redirects, every byte). A 4K PNG
#: is 10-25 MB: 120 s is enough down to about 2 Mbit/s, and a server that
#: trickles bytes (eight such downloads once held every worker 300 s) is cut
#: off here. A download past it is a failed, retryable attempt: the tracker
#: tries again while the output link lives.
DOWNLOAD_DEADLINE_S = 120.0
#: Connections kept per keeper client; the tracker's download lane is smaller.
_LIMITS = httpx.Limits(max_connections=16, max_keepalive_connections=8, keepalive_expiry=30.0)
_SHA_RE = re.compile(r"[0-9a-f]{64}")

# warnings.catch_warnings() swaps process-wide state; two threads interleaving
# enter/exit could leave our filter installed for good. Serialising our own use
# keeps the change scoped to the call (it only covers cheap header parsing).
_WARNINGS_LOCK = threading.Lock()

_REQUEST_HEADERS = {
    "Accept": "image/png,image/webp,image/jpeg;q=0.9,*/*;q=0.1",
    # Images gain nothing from transfer compression, and identity keeps
    # Content-Length comparable with the bytes we receive.
    "Accept-Encoding": "identity",
    "User-Agent": "hiapi-studio-images/0.1",
}


# --------------------------------------------------------------------------- errors


class DownloadError(Exception):
    """Base of every failure to keep an image.

    `code` is a short machine code, `retryable` says whether trying the same
    URL again later may succeed, and the message (also `.message`) is written
    for users: it never contains the URL or an API key.
    """

    code: str = "download_error"
    retryable: bool = False
    default_message = "The image could not be saved."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        message = redact(message or self.default_message)
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        self.status = status
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, retryable={self.retryable!r}, "
            f"status={self.status!r}, message={self.message!r})"
        )


class OutputExpired(DownloadError):
    """HTTP 404/410: the temporary output URL is gone. Generate again."""

    code = "expired"
    retryable = False
    default_message = (
        "This image is no longer available: its temporary link has expired. "
        "Output links last a limited time (often 7 days, sometimes only 24 hours); "
        "run the prompt again to get a new image."
    )


class NotAnImage(DownloadError):
    """The content is not a PNG, JPEG or WebP image (e.g. an HTML page), or is corrupt."""

    code = "not_image"
    retryable = False
    default_message = "The link did not return an image (it looks like a web page or an unsupported file)."


class TooLarge(DownloadError):
    """Over the byte or pixel cap, including decompression bombs. Never retried."""

    code = "too_large"
    retryable = False
    default_message = "The image is larger than this studio accepts."


class TruncatedDownload(DownloadError):
    """Fewer bytes than announced, or an image that ends early. Retrying may help."""

    code = "truncated"
    retryable = True
    default_message = "The image arrived incomplete (the transfer ended early). Try again."


class DownloadFailed(DownloadError):
    """Network trouble, a timeout or an HTTP error status.

    Retryable for network errors, timeouts, 408/425/429 and 5xx; not for other
    statuses (`code` is then `http_<status>`, e.g. `http_403`).
    """

    code = "network"
    retryable = True
    default_message = "Could not download the image. Check the connection and try again."


# --------------------------------------------------------------------------- recipe


_BEARER_RE = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{6,}")
_SECRET_PARTS = (
    "apikey",
    "authorization",
    "secret",
    "password",
    "passwd",
    "token",
    "bearer",
    "cookie",
    "credential",
    "signature",
)
_MAX_DEPTH = 16


def _is_secret_name(name: str) -> bool:
    """True for keys named like a credential: api_key, X-Api-Key, authorization, *_token, key..."""
    n = re.sub(r"[^a-z0-9]", "", name.lower())
    return n in ("key", "auth") or n.endswith("key") or any(p in n for p in _SECRET_PARTS)


def _scrub_text(text: str) -> str:
    # Lone surrogates (possible in text pasted from a browser) cannot be UTF-8
    # encoded into the PNG; they become "?" rather than failing the download.
    text = text.encode("utf-8", "replace").decode("utf-8")
    return _BEARER_RE.sub("Bearer [redacted]", redact(text))


def _clean_value(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # JSON has no NaN/inf
    if isinstance(value, str):
        return _scrub_text(value)
    if depth >= _MAX_DEPTH:  # also stops reference cycles
        return None
    if isinstance(value, Mapping):
        return {
            _scrub_text(str(k)): _clean_value(v, depth + 1)
            for k, v in value.items()
            if not _is_secret_name(str(k))
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean_value(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return None  # raw bytes have no place in a recipe
    return _scrub_text(str(value))


def clean_recipe(recipe: Mapping[str, Any] | None) -> dict[str, Any]:
    """The recipe as it will be embedded: JSON-safe, without credentials.

    Keys named like a credential are dropped at any depth; `sk-...` keys and
    bearer tokens inside strings become `[redacted]`; non-finite floats become
    None and unknown objects their (scrubbed) string form.
    """
    if recipe is None:
        return {}
    if not isinstance(recipe, Mapping):
        raise TypeError(f"recipe must be a mapping, not {type(recipe).__name__}")
    return _clean_value(recipe, 0)


def _recipe_chunks(recipe: dict[str, Any]) -> list[bytes]:
    """PNG chunks for a cleaned recipe: the JSON iTXt chunk, then one per RECIPE_KEYS field."""
    # sort_keys + fixed separators: the same recipe always gives the same bytes,
    # which is what makes content-addressed dedupe work.
    doc = json.dumps(recipe, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)
    chunks = [_itxt_chunk(RECIPE_CHUNK, doc)]
    for key in RECIPE_KEYS:
        if key not in recipe or recipe[key] is None:
            continue
        value = recipe[key]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
        chunks.append(_text_chunk(key, text.replace("\x00", "")))  # NUL is the field separator
    return chunks


# --------------------------------------------------------------------------- PNG chunks


def _chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def _itxt_chunk(keyword: str, text: str) -> bytes:
    # keyword NUL, compression flag 0, method 0, empty language NUL, empty
    # translated keyword NUL, UTF-8 text. Uncompressed on purpose: readable by
    # any tool, and a scrubbed secret can be checked for in the raw bytes.
    return _chunk(b"iTXt", keyword.encode("latin-1") + b"\x00" * 5 + text.encode("utf-8"))


def _text_chunk(keyword: str, text: str) -> bytes:
    """tEXt when the text is Latin-1, else iTXt (what Pillow's PngInfo.add_text does)."""
    try:
        return _chunk(b"tEXt", keyword.encode("latin-1") + b"\x00" + text.encode("latin-1"))
    except UnicodeEncodeError:
        return _itxt_chunk(keyword, text)


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise TruncatedDownload()
    return data


def _copy_exact(f: BinaryIO, n: int, emit: Callable[[bytes], None]) -> None:
    while n > 0:
        piece = f.read(min(n, _COPY_SIZE))
        if not piece:
            raise TruncatedDownload()
        emit(piece)
        n -= len(piece)


def _splice_png(src: Path, dst: BinaryIO, chunks: list[bytes]) -> tuple[str, int]:
    """Copy the PNG at `src` to `dst` with `chunks` inserted right after IHDR.

    Earlier recipe chunks (ours, from a re-import) are dropped; every other
    chunk is copied byte for byte, so pixels and other metadata are untouched.
    Anything after IEND is dropped. Memory stays flat: chunks are streamed.
    Returns (sha256 hex, size) of what was written.
    """
    h = hashlib.sha256()
    size = 0

    def emit(b: bytes) -> None:
        nonlocal size
        dst.write(b)
        h.update(b)
        size += len(b)

    with open(src, "rb") as f:
        if f.read(8) != _PNG_SIG:
            raise NotAnImage()
        emit(_PNG_SIG)
        first = True
        while True:
            head = _read_exact(f, 8)
            length, ctype = struct.unpack(">I4s", head)
            if length > _MAX_CHUNK_LEN or (first and ctype != b"IHDR"):
                raise NotAnImage("The file is damaged and cannot be read as an image.", code="corrupt")
            if ctype in _TEXT_CHUNKS:
                prefix = _read_exact(f, min(length, 80))  # a keyword is at most 79 bytes + NUL
                if prefix.split(b"\x00", 1)[0] in _OWN_KEYWORDS:
                    _read_exact(f, length - len(prefix) + 4)  # skip the rest and the CRC
                    continue
                emit(head)
                emit(prefix)
                _copy_exact(f, length - len(prefix) + 4, emit)
            else:
                emit(head)
                _copy_exact(f, length + 4, emit)
            if first:
                for c in chunks:
                    emit(c)
                first = False
            if ctype == b"IEND":
                # Requiring a complete IEND catches truncation even if Pillow
                # tolerates it (or LOAD_TRUNCATED_IMAGES was set elsewhere).
                break
    return h.hexdigest(), size


def _decode_text_chunk(ctype: bytes, data: bytes) -> tuple[str, str] | None:
    """(keyword, text) of a tEXt/zTXt/iTXt chunk, or None if malformed or too big."""
    keyword, sep, rest = data.partition(b"\x00")
    if not sep or not keyword or len(keyword) > 79:
        return None
    key = keyword.decode("latin-1")
    if ctype == b"tEXt":
        return key, rest.decode("latin-1")
    if ctype == b"zTXt":
        if not rest or rest[0] != 0:
            return None
        text = _inflate(rest[1:])
        return (key, text.decode("latin-1")) if text is not None else None
    # iTXt
    if len(rest) < 2:
        return None
    flag, method, rest = rest[0], rest[1], rest[2:]
    _lang, sep1, rest = rest.partition(b"\x00")
    _tkey, sep2, body = rest.partition(b"\x00")
    if not (sep1 and sep2):
        return None
    if flag:
        if method != 0:
            return None
        inflated = _inflate(body)
        if inflated is None:
            return None
        body = inflated
    return key, body.decode("utf-8", errors="replace")


def _inflate(data: bytes) -> bytes | None:
    # Bounded: a tiny zTXt chunk must not expand into gigabytes.
    d = zlib.decompressobj()
    out = d.decompress(data, _MAX_TEXT_READ)
    return None if d.unconsumed_tail else out


def read_recipe(source: bytes | Path | BinaryIO) -> dict[str, Any] | None:
    """The recipe embedded in a PNG we exported, or None.

    Reads the `studio:recipe` JSON chunk; if it is missing or unreadable, falls
    back to the individual text keys of `RECIPE_KEYS` (values are then strings,
    and a `prompt` key is required). Returns None for images without a recipe,
    for non-PNG data and for anything malformed. Walks chunks only: pixels are
    never decoded. Never raises on junk input. A file object given is read from
    its current position and left open; str paths are accepted too.
    """
    try:
        if isinstance(source, bytes | bytearray | memoryview):
            return _read_recipe_from(BytesIO(bytes(source)))
        if isinstance(source, str | os.PathLike):
            with open(source, "rb") as f:
                return _read_recipe_from(f)
        return _read_recipe_from(source)
    except Exception:  # junk in, None out
        log.debug("read_recipe: unreadable source", exc_info=True)
        return None


def _read_recipe_from(f: BinaryIO) -> dict[str, Any] | None:
    fallback: dict[str, Any] = {}
    try:
        if f.read(8) != _PNG_SIG:
            return None
        while True:
            head = f.read(8)
            if len(head) < 8:
                break
            length, ctype = struct.unpack(">I4s", head)
            if length > _MAX_CHUNK_LEN:
                break
            if ctype in _TEXT_CHUNKS and length <= _MAX_TEXT_READ:
                data = f.read(length)
                crc = f.read(4)
                if len(data) < length or len(crc) < 4:
                    break
                if struct.unpack(">I", crc)[0] != zlib.crc32(ctype + data):
                    continue  # a damaged chunk is ignored, not trusted
                parsed = _decode_text_chunk(ctype, data)
                if parsed is None:
                    continue
                key, text = parsed
                if key == RECIPE_CHUNK:
                    try:
                        doc = json.loads(text)
                    except ValueError:
                        continue
                    if isinstance(doc, dict):
                        return doc  # ours sits right after IHDR: no need to read on
                elif key in RECIPE_KEYS and key not in fallback:
                    fallback[key] = text
            else:
                _skip(f, length + 4)
            if ctype == b"IEND":
                break
    except Exception:
        log.debug("read_recipe: stopped on malformed data", exc_info=True)
    return fallback if "prompt" in fallback else None


def _skip(f: BinaryIO, n: int) -> None:
    try:
        if f.seekable():
            f.seek(n, os.SEEK_CUR)
            return
    except (AttributeError, OSError):
        pass
    while n > 0:  # non-seekable stream: read through
        piece = f.read(min(n, _COPY_SIZE))
        if not piece:
            return
        n -= len(piece)


# --------------------------------------------------------------------------- keeper


@dataclass(frozen=True)
class KeptImage:
    """An image kept on disk. `width`/`height` are measured from the image itself;
    `bytes` is the size of the stored PNG; `format` is always "PNG"."""

    sha256: str
    path: Path
    thumb_path: Path
    width: int
    height: int
    bytes: int
    format: str = "PNG"


def _sniff(head: bytes) -> bool:
    """Could these first bytes start a PNG, JPEG or WebP? Lets us stop reading an HTML page early.

    Pillow has the final word; this only rejects what can never be an image.
    """
    n = len(head)
    return (
        head[:8] == _PNG_SIG[:n][:8]
        or head[:3] == b"\xff\xd8\xff"[: min(n, 3)]
        or (head[:4] == b"RIFF"[: min(n, 4)] and (n < 12 or head[8:12] == b"WEBP"))
    )


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


def _pillow_error(exc: BaseException) -> DownloadError:
    """Map a Pillow failure during verify()/load() to our classes."""
    text = str(exc).lower()
    if isinstance(exc, EOFError) or "truncated" in text:
        return TruncatedDownload()
    return NotAnImage("The file is damaged and cannot be read as an image.", code="corrupt")


class ImageKeeper:
    """Downloads HiAPI outputs (or takes local bytes) and keeps them as described
    in this module's docstring. Thread-safe: every call works on its own temp
    files, and final files only ever appear through atomic renames.

    `http`, if given, is used only as a transport (connection pool, proxies,
    TLS settings): every request, redirects included, is built here with fixed
    headers, and the client's auth, default headers and cookies are never
    applied. The keeper closes only a client it created itself. Such a client
    makes its own connections, so each hop's host is resolved and checked
    beforehand but not pinned; the keeper's own clients pin the address.

    `allow_loopback` is the default for `fetch`; `resolve` replaces the name
    lookup (tests map made-up names to chosen addresses).
    """

    def __init__(
        self,
        root: Path,
        *,
        http: httpx.Client | None = None,
        max_bytes: int = 64 * 2**20,
        max_pixels: int = 8_294_400 * 2,
        thumb_size: int = 384,
        timeout: float = 60.0,
        total_timeout: float = DOWNLOAD_DEADLINE_S,
        allow_loopback: bool = False,
        resolve: Callable[[str, int], list[str]] = resolve_host,
    ) -> None:
        if max_bytes <= 0 or max_pixels <= 0:
            raise ValueError("max_bytes and max_pixels must be positive")
        if not 16 <= thumb_size <= 4096:
            raise ValueError("thumb_size must be between 16 and 4096")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.thumb_size = thumb_size
        self.timeout = timeout
        if not total_timeout > 0:
            raise ValueError("total_timeout must be positive")
        # A per-read timeout does not stop a server that trickles one byte a
        # second; the total deadline does.
        self.total_timeout = total_timeout
        self.allow_loopback = allow_loopback
        self._timeouts = httpx.Timeout(timeout, connect=min(timeout, 15.0))
        self._policies = {
            local: AddressPolicy(allow_loopback=local, resolve=resolve) for local in (False, True)
        }
        # One pool per policy: a connection opened to loopback for the simulator
        # must never be reused by a download that may not go there.
        self._clients: dict[bool, httpx.Client] = {}
        self._clients_lock = threading.Lock()
        self._http = http
        self._tmp = self.root / "tmp"
        self._originals = self.root / "originals"
        self._thumbs = self.root / "thumbs"
        for d in (self._tmp, self._originals, self._thumbs):
            d.mkdir(parents=True, exist_ok=True)

    # -- paths -------------------------------------------------------------

    @staticmethod
    def _checked_sha(sha256: str) -> str:
        # The sha becomes a file name: anything but 64 hex digits could escape root.
        if not isinstance(sha256, str) or not _SHA_RE.fullmatch(sha256):
            raise ValueError("not a sha256 hex digest")
        return sha256

    def original_path(self, sha256: str) -> Path:
        """`root/originals/<first two hex>/<sha256>.png`; ValueError for a malformed sha."""
        sha = self._checked_sha(sha256)
        return self._originals / sha[:2] / f"{sha}.png"

    def thumb_path(self, sha256: str) -> Path:
        """`root/thumbs/<first two hex>/<sha256>.webp`; ValueError for a malformed sha."""
        sha = self._checked_sha(sha256)
        return self._thumbs / sha[:2] / f"{sha}.webp"

    # -- public operations -------------------------------------------------

    def fetch(
        self, url: str, recipe: Mapping[str, Any] | None, *, allow_loopback: bool | None = None
    ) -> KeptImage:
        """Download `url` now and keep it with `recipe` embedded.

        Raises OutputExpired (404/410), NotAnImage, TooLarge, TruncatedDownload
        or DownloadFailed; see each class for `retryable`. No temp file survives
        a failure. The request never carries an Authorization header.
        `allow_loopback` (default: the keeper's) lets loopback targets through,
        for output URLs of a simulator on this machine; anything else must be
        https on a public address, or DownloadFailed(code="refused") is raised.
        """
        cleaned = clean_recipe(recipe)  # fail on a bad recipe before any network work
        local = self.allow_loopback if allow_loopback is None else bool(allow_loopback)
        src = self._download(url, local)
        try:
            return self._keep_file(src, cleaned)
        finally:
            src.unlink(missing_ok=True)

    def keep_bytes(
        self,
        data_or_path: bytes | bytearray | memoryview | str | os.PathLike[str],
        recipe: Mapping[str, Any] | None,
    ) -> KeptImage:
        """Keep an image from memory or a local file through the same pipeline as `fetch`.

        The source file is copied first and never modified. A source that cannot
        be read raises DownloadFailed(code="read_error", retryable=False).
        """
        cleaned = clean_recipe(recipe)
        src = self._new_temp("in-")
        try:
            with open(src, "wb") as out:
                if isinstance(data_or_path, bytes | bytearray | memoryview):
                    data = memoryview(data_or_path)
                    if data.nbytes > self.max_bytes:
                        raise self._too_many_bytes()
                    out.write(data)
                elif isinstance(data_or_path, str | os.PathLike):
                    self._copy_local(Path(data_or_path), out)
                else:
                    raise TypeError(f"expected bytes or a path, not {type(data_or_path).__name__}")
            return self._keep_file(src, cleaned)
        finally:
            src.unlink(missing_ok=True)

    def delete(self, sha256: str) -> None:
        """Remove the original and its thumbnail. Missing files are fine."""
        for p in (self.original_path(sha256), self.thumb_path(sha256)):
            p.unlink(missing_ok=True)

    def sweep_temp(self, older_than_s: float = 3600) -> int:
        """Remove temp files older than `older_than_s` (left by a crash); returns how many.

        Call at start-up. The default hour is far beyond any live download's
        deadline, so files still being written are left alone.
        """
        removed = 0
        cutoff = time.time() - older_than_s
        try:
            entries = list(self._tmp.iterdir())
        except FileNotFoundError:
            return 0
        for p in entries:
            try:
                if p.suffix == _TEMP_SUFFIX and p.is_file() and p.stat().st_mtime < cutoff:
                    p.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # another process swept it first
        return removed

    def close(self) -> None:
        """Close the HTTP clients the keeper created (never one passed in)."""
        with self._clients_lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> ImageKeeper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- download ----------------------------------------------------------

    def _client(self, local: bool) -> httpx.Client:
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

    def _download(self, url: str, local: bool) -> Path:
        """Stream `url` into a temp file; return its path (the caller removes it)."""
        target = _web_url(url, local)
        dst = self._new_temp("dl-")
        ok = False
        try:
            with open(dst, "wb") as out, deadline(self.total_timeout):
                self._stream_into(target, out, local)
            ok = True
            return dst
        finally:
            if not ok:
                dst.unlink(missing_ok=True)

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
        http = self._client(local)
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
                raise self._too_many_bytes()  # refused before reading a byte of body
            received = 0
            head = b""
            # Pieces as they arrive (no re-chunking), so the deadline is checked
            # after every read even when a passed-in client does not enforce it.
            for piece in response.iter_bytes():
                received += len(piece)
                if received > self.max_bytes:
                    raise self._too_many_bytes()
                if len(head) < 12:
                    head += piece[: 12 - len(head)]
                    if len(head) >= 12 and not _sniff(head):
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

    def _copy_local(self, src: Path, out: BinaryIO) -> None:
        try:
            with open(src, "rb") as f:
                copied = 0
                while piece := f.read(_COPY_SIZE):
                    copied += len(piece)
                    if copied > self.max_bytes:
                        raise self._too_many_bytes()
                    out.write(piece)
        except OSError:
            raise DownloadFailed("The file could not be read.", code="read_error", retryable=False) from None

    def _too_many_bytes(self) -> TooLarge:
        return TooLarge(f"The image is larger than the {self.max_bytes / 2**20:g} MB limit.")

    # -- verify, store, thumbnail -----------------------------------------

    def _open(self, path: Path) -> Image.Image:
        """Identify the image and check its pixel count from the header, before decoding."""
        with _WARNINGS_LOCK, warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; make it
            # an error for this call. catch_warnings restores the filters after.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                im = Image.open(path, formats=_FORMATS)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise TooLarge("The image declares an unreasonably large size and was refused.") from None
            except UnidentifiedImageError:
                raise NotAnImage() from None
            except Exception as exc:
                raise _pillow_error(exc) from None
        w, h = im.size
        if w <= 0 or h <= 0:
            im.close()
            raise NotAnImage("The file is damaged and cannot be read as an image.", code="corrupt")
        if w * h > self.max_pixels:
            im.close()
            raise TooLarge(f"The image is {w}×{h} pixels, more than the {self.max_pixels:,}-pixel limit.")
        return im

    def _decode(self, path: Path) -> Image.Image:
        """Open, verify() and fully load() the image; the caller closes it."""
        # Pillow's messages for a cut file vary by format and by where the cut
        # falls ("broken PNG file", "could not create decoder object"), so
        # completeness is checked from the container structure first.
        _check_complete(path)
        im = self._open(path)
        try:
            im.verify()  # checks PNG chunk CRCs; the image is unusable afterwards
        except DownloadError:
            raise
        except Exception as exc:
            raise _pillow_error(exc) from None
        finally:
            im.close()
        im = self._open(path)
        try:
            im.load()  # a full decode is the only reliable truncation check for JPEG
        except Exception as exc:
            im.close()
            raise _pillow_error(exc) from None
        return im

    def _keep_file(self, src: Path, recipe: dict[str, Any]) -> KeptImage:
        temps: list[Path] = []
        try:
            im = self._decode(src)
            try:
                width, height = im.size
                png_src = src
                if im.format != "PNG":
                    # JPEG/WebP: decode once, store lossless PNG of those pixels.
                    png_src = self._new_temp("png-")
                    temps.append(png_src)
                    self._save_png(im, png_src)

                out = self._new_temp("out-")
                temps.append(out)
                with open(out, "wb") as f:
                    sha, size = _splice_png(png_src, f, _recipe_chunks(recipe))
                    f.flush()
                    os.fsync(f.fileno())  # durable before the rename makes it visible

                final = self.original_path(sha)
                thumb = self.thumb_path(sha)
                thumb_tmp: Path | None = None
                if not thumb.exists():
                    thumb_tmp = self._new_temp("thumb-")
                    temps.append(thumb_tmp)
                    self._write_thumb(im, thumb_tmp)
            finally:
                im.close()  # release the decoded pixels before the file shuffle

            if _same_size(final, size):
                log.debug("image %s already kept; reusing it", sha[:12])
            else:
                _place(out, final)
            if thumb_tmp is not None:
                _place(thumb_tmp, thumb)
            return KeptImage(
                sha256=sha, path=final, thumb_path=thumb, width=width, height=height, bytes=size, format="PNG"
            )
        finally:
            for t in temps:
                t.unlink(missing_ok=True)

    @staticmethod
    def _save_png(im: Image.Image, dst: Path) -> None:
        icc = im.info.get("icc_profile")
        if im.mode == "CMYK":  # PNG has no CMYK; the CMYK profile no longer applies
            im = im.convert("RGB")
            icc = None
        params: dict[str, Any] = {"compress_level": 6}
        if icc:
            params["icc_profile"] = icc
        im.save(dst, "PNG", **params)

    def _write_thumb(self, im: Image.Image, dst: Path) -> None:
        """WebP, longest side at most thumb_size, quality 80. Shrinks `im` in place:
        no second full-size copy is made for the usual RGB/RGBA/L images."""
        icc = im.info.get("icc_profile")
        if im.mode not in ("RGB", "RGBA", "L", "LA"):
            # Palette and 1-bit images resize only with NEAREST; convert first.
            im = im.convert("RGBA" if im.has_transparency_data else "RGB")
        im.thumbnail((self.thumb_size, self.thumb_size), Image.Resampling.LANCZOS)
        if im.mode not in ("RGB", "RGBA"):
            im = im.convert("RGBA" if im.mode == "LA" else "RGB")
            icc = None  # a grey profile does not describe RGB pixels
        params: dict[str, Any] = {"quality": 80, "method": 4}
        if icc:
            params["icc_profile"] = icc
        with open(dst, "wb") as f:
            im.save(f, "WEBP", **params)
            f.flush()
            os.fsync(f.fileno())

    def _new_temp(self, prefix: str) -> Path:
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix=prefix, suffix=_TEMP_SUFFIX)
        os.close(fd)
        return Path(name)


def _check_complete(path: Path) -> None:
    """TruncatedDownload if a PNG or WebP file ends before its structure says it should.

    PNG: walk the chunk headers (seeking, no decompression) up to a complete
    IEND. WebP: compare the RIFF size field with the file size. JPEG has no
    such framing; Pillow's full decode reports a cut JPEG reliably.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        size = f.seek(0, os.SEEK_END)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            if size < struct.unpack("<I", head[4:8])[0] + 8:
                raise TruncatedDownload()
            return
        if head[:8] != _PNG_SIG:
            return
        pos = 8
        while True:
            if pos + 12 > size:  # no room for even an empty chunk: the file was cut
                raise TruncatedDownload()
            f.seek(pos)
            length, ctype = struct.unpack(">I4s", f.read(8))
            pos += 12 + length
            if pos > size:
                raise TruncatedDownload()
            if ctype == b"IEND":
                return


def _same_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def _place(tmp: Path, final: Path) -> None:
    """Atomically move a finished temp file into place and make the rename durable.

    tmp/ and the final folders live under the same root, so os.replace is a
    rename on one file system: readers see the old state or the whole file.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
