"""The blob store: where every byte the studio keeps lives (originals, thumbnails,
references, exports, kits), behind one small Protocol.

Contract, enforced by `tests/contracts/test_blob_store.py` for every implementation:

- Keys are relative, `/`-separated, made of `[A-Za-z0-9._-]` segments, never `..`,
  never absolute, at most 512 characters (`check_key`). A bad key is a ValueError
  before any I/O, so a key can never escape the store.
- `put(key, data)` is atomic: a reader sees the whole blob or nothing, never a part.
  Putting the same key again replaces it whole.
- `open(key)` returns a readable binary file object; `BlobNotFound` if absent.
- `exists`, `size` and `delete` (True if something was deleted) never raise for a
  missing key.
- `keys(prefix)` lists the keys under a prefix (for sweeps of exports and kits).
- An object store that stops answering (down, unreachable, 5xx) makes any method raise
  `BlobStoreUnavailable`; the same call works again once it is back.
- `url(key, expires_s=...)` is a URL a browser or HiAPI may fetch directly (a presigned
  URL on S3), or None when the studio must stream the blob through its own route
  (local files). It never embeds a credential that outlives `expires_s`.

The database keeps content hashes and keys, never paths; only an implementation of
this Protocol knows where a blob physically is. This module never imports streamlit.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
MAX_KEY = 512


class BlobNotFound(KeyError):
    """No blob under this key."""


class BlobStoreUnavailable(Exception):
    """The object store cannot be reached right now: try again later (never a missing key)."""


def check_key(key: str) -> str:
    """The key itself if it is a safe relative key (see the module docstring); else ValueError."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY:
        raise ValueError("a blob key is a non-empty string of at most 512 characters")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", "..") or not _SEGMENT.fullmatch(part):
            raise ValueError(f"not a safe blob key: {key!r}")
    return key


@runtime_checkable
class BlobStore(Protocol):
    def put(self, key: str, data: bytes | BinaryIO | Path) -> int:
        """Store `data` (bytes, a readable binary file, or a local file to copy) under `key`
        atomically; return its size in bytes."""
        ...

    def open(self, key: str) -> BinaryIO: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int | None: ...

    def delete(self, key: str) -> bool: ...

    def keys(self, prefix: str = "") -> Iterator[str]: ...

    def url(self, key: str, *, expires_s: int = 3600) -> str | None: ...

    def ping(self) -> None:
        """Return when the store answers now; `BlobStoreUnavailable` (within seconds) when not."""
        ...


class LocalBlobStore:
    """Blobs as files under `root`: written to a temp file in `root/.tmp`, fsynced, made 0600,
    then renamed into place (atomic on one filesystem). `url` is None: the studio streams
    local blobs through its own routes."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """Where `key` lives on disk. For code that must hand a file to a library
        (a zip writer, a file response); the database never stores it."""
        return self.root / check_key(key)

    def put(self, key: str, data: bytes | BinaryIO | Path) -> int:
        dst = self.path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="put-", suffix=".part")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                if isinstance(data, bytes | bytearray | memoryview):
                    f.write(data)
                elif isinstance(data, Path):
                    with open(data, "rb") as src:
                        while chunk := src.read(1 << 20):
                            f.write(chunk)
                else:
                    while chunk := data.read(1 << 20):
                        f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
                size = f.tell()
            os.chmod(tmp, 0o600)
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(dst.parent)  # the rename itself survives a power cut
        return size

    def move_in(self, key: str, src: Path) -> int:
        """Like `put(key, src)` but moves the file instead of copying it (a rename when
        `src` is on the store's file system; `src` is gone afterwards either way).
        The caller has fsynced `src`. For the image keeper's finished temp files."""
        dst = self.path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            size = src.stat().st_size
            os.chmod(src, 0o600)
            os.replace(src, dst)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            size = self.put(key, src)  # another file system: copy, then drop the source
            src.unlink(missing_ok=True)
            return size
        _fsync_dir(dst.parent)
        return size

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self.path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int | None:
        try:
            p = self.path(key)
            return p.stat().st_size if p.is_file() else None
        except OSError:
            return None

    def delete(self, key: str) -> bool:
        try:
            self.path(key).unlink()
            return True
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False

    def keys(self, prefix: str = "") -> Iterator[str]:
        base = self.root
        for p in sorted(base.rglob("*")):
            if not p.is_file():
                continue
            rel = p.relative_to(base).as_posix()
            if rel.startswith(".tmp/"):
                continue
            if rel.startswith(prefix):
                yield rel

    def url(self, key: str, *, expires_s: int = 3600) -> str | None:
        check_key(key)
        return None

    def ping(self) -> None:
        """`BlobStore.ping`: the folder is there (a local disk does not go away between calls)."""
        if not self.root.is_dir():
            raise BlobStoreUnavailable(f"the image folder {self.root} is missing")


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (POSIX; best effort elsewhere)."""
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


def scratch_dir(store: BlobStore) -> Path:
    """Where to build a file that will become a blob: inside a local store (so
    `move_into` is a rename), else the system's temp folder."""
    if isinstance(store, LocalBlobStore):
        store._tmp.mkdir(parents=True, exist_ok=True)
        return store._tmp
    return Path(tempfile.gettempdir())


def move_into(store: BlobStore, key: str, src: Path) -> int:
    """Make the finished local file `src` the blob `key` and remove `src`; returns the size."""
    if isinstance(store, LocalBlobStore):
        return store.move_in(key, src)
    try:
        return store.put(key, src)
    finally:
        src.unlink(missing_ok=True)
