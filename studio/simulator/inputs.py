"""How the simulator downloads an image-to-image task's `input_urls`, the way HiAPI does.

HiAPI fetches every reference itself; one it cannot use ends the task as `fail`
with a reason. Here: http(s) only, no redirects followed, a whole-download
deadline, a byte cap, and the bytes must be a JPEG, PNG or WebP that decodes.
(Loopback is allowed: the simulator runs beside the studio.)
"""

from __future__ import annotations

import io
import time

import httpx
from PIL import Image

from ..references import sniff

MAX_INPUT_BYTES = 20 * 1024 * 1024
INPUT_TIMEOUT_S = 10.0


class InputFetchError(Exception):
    """An input URL that could not be used; the message reads after "input_urls[i] "."""


def fetch_input(url: str, *, timeout: float = INPUT_TIMEOUT_S, max_bytes: int = MAX_INPUT_BYTES) -> bytes:
    """The image at `url`, or InputFetchError saying why not."""
    if not url.lower().startswith(("http://", "https://")):
        raise InputFetchError("is not an http(s) URL.")
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    try:
        with httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False) as client:
            with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise InputFetchError(f"could not be downloaded: HTTP {response.status_code}.")
                for chunk in response.iter_bytes(64 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        raise InputFetchError(f"is larger than {max_bytes // (1024 * 1024)} MB.")
                    if time.monotonic() > deadline:
                        raise InputFetchError(f"took longer than {timeout:g} s to download.")
                    chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise InputFetchError(f"could not be downloaded: {type(exc).__name__}.") from None
    data = b"".join(chunks)
    if sniff(data[:16]) is None:
        raise InputFetchError("is not a JPEG, PNG or WebP image.")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception:
        raise InputFetchError("is not an image that can be decoded.") from None
    return data
