"""Why an image could not be kept: one exception family for the fetch, the PNG codec and the keeper.

Every failure raises a `DownloadError` subclass with a short `code`, a
`retryable` flag and a message that is safe to show (no URL, no key).
"""

from __future__ import annotations

from ..errors import redact


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


def pillow_error(exc: BaseException) -> DownloadError:
    """Map a Pillow failure during verify()/load() to our classes."""
    text = str(exc).lower()
    if isinstance(exc, EOFError) or "truncated" in text:
        return TruncatedDownload()
    return NotAnImage("The file is damaged and cannot be read as an image.", code="corrupt")
