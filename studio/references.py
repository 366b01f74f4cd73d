"""Reference images (image-to-image): checked, kept content-addressed, served at signed expiring URLs.

Contract:
- A reference is a JPEG, PNG or WebP (sniffed from its bytes, never its name),
  at most `MAX_BYTES`, at most `MAX_PIXELS`, a single frame, and it decodes
  whole. Anything else raises `ReferenceRefused` whose message names the file
  and says what to do; nothing is kept.
- Kept as the original bytes (HiAPI gets exactly what the person chose) as the
  blob `refs/<sha256>.<ext>` (the blob store writes atomically, 0600 on disk). The same bytes are
  one reference however often they are added.
- HiAPI downloads `input_urls` itself, so each reference is served at
  `{base}/refs/{sha256}.{ext}?exp=<unix>&sig=<hex>`: unguessable (the hash of
  the content plus an HMAC-SHA256 of path and expiry under the studio's
  signing key) and valid until `exp`. A create must be resent with the same
  body, so a submission stores its URLs once; they live `URL_LIFETIME_S`,
  HiAPI's idempotency window.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import re
import secrets
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from . import routes
from .blob_keys import reference_key
from .blobs import BlobNotFound, BlobStore, LocalBlobStore

MAX_REFERENCES = 16  # HiAPI's image-to-image takes 1-16 input_urls
MAX_BYTES = 20 * 1024 * 1024  # per file (HiAPI's ext route documents 20 MB; the same cap for both)
MAX_PIXELS = 40_000_000  # larger is a decompression bomb or far beyond what the model reads
URL_LIFETIME_S = 24 * 3600  # HiAPI replays a create by its key for about 24 h
KEY_FILE = "reference-signing-key"

_KINDS = {"jpeg": ("jpg", "image/jpeg"), "png": ("png", "image/png"), "webp": ("webp", "image/webp")}
EXT_MEDIA = {ext: media for ext, media in _KINDS.values()}
_NAME = re.compile(r"^([0-9a-f]{64})\.(jpg|png|webp)$")


class ReferenceRefused(ValueError):
    """A file that cannot be a reference; `message` names the file and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Reference:
    """One kept reference image: its content hash, file type and pixel size."""

    sha256: str
    ext: str  # jpg | png | webp
    width: int
    height: int
    bytes: int

    @property
    def name(self) -> str:
        return f"{self.sha256}.{self.ext}"

    @property
    def media_type(self) -> str:
        return EXT_MEDIA[self.ext]


def sniff(head: bytes) -> str | None:
    """The reference kind of these leading bytes: "jpeg", "png", "webp" or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def check(data: bytes, filename: str = "the file") -> Reference:
    """Check bytes as a reference (see the module contract); returns what would be kept."""
    label = f"“{filename}”"
    if len(data) > MAX_BYTES:
        raise ReferenceRefused(
            f"{label} is {len(data) / 1e6:.1f} MB; a reference can be at most {MAX_BYTES // (1024 * 1024)} MB. "
            "Export it smaller and add it again."
        )
    kind = sniff(data[:16])
    if kind is None:
        raise ReferenceRefused(f"{label} is not a JPEG, PNG or WebP image; add one of those.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                if width * height > MAX_PIXELS:
                    raise ReferenceRefused(
                        f"{label} is {width}×{height} pixels; a reference can have at most "
                        f"{MAX_PIXELS / 1e6:.0f} million. Scale it down and add it again."
                    )
                if getattr(im, "n_frames", 1) > 1:
                    raise ReferenceRefused(f"{label} is animated; add a still image (one frame).")
                im.load()
    except ReferenceRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ReferenceRefused(
            f"{label} has too many pixels to open safely; scale it down and add it again."
        ) from None
    except Exception:  # Pillow raises many kinds on damaged files
        raise ReferenceRefused(f"{label} is damaged or incomplete; export it again and add it.") from None
    ext = _KINDS[kind][0]
    return Reference(hashlib.sha256(data).hexdigest(), ext, width, height, len(data))


class ReferenceShelf:
    """The kept references (blobs `refs/<sha256>.<ext>`), and the signer of their public URLs.

    `blobs` is the studio's blob store, or a folder for a local one (tests)."""

    def __init__(self, blobs: BlobStore | Path | str, signing_key: bytes) -> None:
        if len(signing_key) < 16:
            raise ValueError("the reference signing key must be at least 16 bytes")
        self.blobs: BlobStore = LocalBlobStore(blobs) if isinstance(blobs, str | os.PathLike) else blobs
        self._key = signing_key

    # -- keeping --------------------------------------------------------------
    def add(self, data: bytes, filename: str = "the file") -> Reference:
        """Check and keep `data`; returns the reference (the same one for the same bytes)."""
        ref = check(data, filename)
        key = self.key(ref.name)
        if self.blobs.size(key) != len(data):
            self.blobs.put(key, data)  # atomic, 0600 on a local store
        return ref

    def key(self, name: str) -> str:
        """The blob key of a reference named `<sha256>.<ext>` (ValueError for any other name)."""
        return reference_key(name)

    def get(self, name: str) -> Reference | None:
        """The kept reference of that name, or None (its size read from the blob)."""
        data = self.read(name)
        if data is None:
            return None
        try:
            return check(data, name)
        except ReferenceRefused:
            return None

    def read(self, name: str) -> bytes | None:
        try:
            key = self.key(name)
        except ValueError:
            return None
        try:
            with self.blobs.open(key) as f:
                return f.read()
        except BlobNotFound:
            return None

    def adopt_folder(self, folder: Path) -> int:
        """Move references kept as files in `folder` (before the blob store) into it; returns how many."""
        moved = 0
        if not folder.is_dir():
            return 0
        for p in sorted(folder.iterdir()):
            if p.is_file() and _NAME.match(p.name):
                if not self.blobs.exists(self.key(p.name)):
                    self.blobs.put(self.key(p.name), p)
                p.unlink()
                moved += 1
        return moved

    # -- public URLs ------------------------------------------------------------
    def _sign(self, name: str, exp: int) -> str:
        return hmac.new(self._key, f"{name}.{exp}".encode(), hashlib.sha256).hexdigest()

    def url(self, base: str, name: str, *, now: float | None = None, lifetime: float = URL_LIFETIME_S) -> str:
        """The signed URL HiAPI fetches this reference from, valid for `lifetime` seconds."""
        self.key(name)  # validates the name
        exp = int((time.time() if now is None else now) + lifetime)
        return routes.reference(base, name, exp=exp, sig=self._sign(name, exp))

    def verify(self, name: str, exp: str | None, sig: str | None, *, now: float | None = None) -> bool:
        """True when `sig` signs `name` until `exp` and `exp` has not passed (constant-time)."""
        if not exp or not sig or not exp.isdigit() or not _NAME.match(name):
            return False
        if int(exp) < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(self._sign(name, int(exp)), sig)

    def name_in(self, url: str) -> str | None:
        """The reference name a URL of ours points at (None for any other URL)."""
        return reference_name(url)


def reference_name(url: str) -> str | None:
    """The reference name (`<sha256>.<ext>`) a signed reference URL points at, else None."""
    parts = urlsplit(url)
    tail = parts.path.rsplit(routes.REFERENCE_PREFIX, 1)
    if len(tail) != 2 or not _NAME.match(tail[1]):
        return None
    q = parse_qs(parts.query)
    return tail[1] if q.get("sig") and q.get("exp") else None


def reference_names(urls: tuple[str, ...] | list[str]) -> list[str]:
    """The names of the studio's own references among `urls`, in order."""
    return [n for n in (reference_name(u) for u in urls) if n]


def load_or_create_key(data_dir: Path) -> bytes:
    """The studio's reference signing key: kept in the data folder (0600), made once."""
    path = Path(data_dir) / KEY_FILE
    try:
        key = bytes.fromhex(path.read_text().strip())
        if len(key) >= 16:
            return key
    except (OSError, ValueError):
        pass
    key = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex())
    os.replace(tmp, path)
    return key
