"""Keeping generated images: verified, recipe-stamped PNGs in the blob store.

HiAPI's output URLs are temporary (7 days by default, 24 h seen too), so every
result is downloaded at once (`images.fetch`) and kept. The contract:

* Pillow verifies the file: only PNG, JPEG and WebP are accepted; the pixel
  count is checked from the header before any decoding (decompression bombs
  are refused); `verify()` plus a full `load()` detect truncation. Pillow's
  global flags (`LOAD_TRUNCATED_IMAGES`, `MAX_IMAGE_PIXELS`) are never changed.
* Every kept image is a PNG with the recipe embedded (`images.recipe`). A PNG
  source keeps every other byte (pixels, colour profile, other metadata) as it
  was; a JPEG or WebP source is decoded once and re-encoded losslessly as PNG.
* Images are content-addressed by the SHA-256 of the final PNG bytes: the blob
  `originals/ab/<sha>.png` and a WebP thumbnail `thumbs/ab/<sha>.webp`
  (`blob_keys`). Decoding and splicing use local temp files; the final place is
  always the blob store's atomic `put`. An existing blob of the same size is
  reused (identical image and recipe give identical bytes).
* Temp files are removed on every failure path; a crash can leave one behind,
  which `sweep_temp()` removes at start-up.
* Failures raise a `DownloadError` subclass (`images.errors`).
Nothing here imports streamlit.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from PIL import Image, UnidentifiedImageError

from ..blob_keys import original_key, thumb_key
from ..blobs import BlobStore, LocalBlobStore
from ..transport import resolve_host
from .errors import DownloadError, DownloadFailed, NotAnImage, TooLarge, pillow_error
from .fetch import DOWNLOAD_DEADLINE_S, Downloader
from .png import COPY_SIZE, check_complete, splice_png
from .recipe import OWN_KEYWORDS, clean_recipe, recipe_chunks

log = logging.getLogger("studio.images")

# Formats we accept; restricting Pillow's plugins also narrows the attack surface.
_FORMATS = ("PNG", "JPEG", "WEBP")
_TEMP_SUFFIX = ".part"

# warnings.catch_warnings() swaps process-wide state; two threads interleaving
# enter/exit could leave our filter installed for good. Serialising our own use
# keeps the change scoped to the call (it only covers cheap header parsing).
_WARNINGS_LOCK = threading.Lock()


@dataclass(frozen=True)
class KeptImage:
    """An image kept in the blob store. `width`/`height` are measured from the image itself;
    `bytes` is the size of the stored PNG; `format` is always "PNG". `path`/`thumb_path`
    are the local files when the store is on this machine (for tools and tests), else
    None; the database keeps only `sha256`."""

    sha256: str
    width: int
    height: int
    bytes: int
    format: str = "PNG"
    path: Path | None = None
    thumb_path: Path | None = None

    @property
    def key(self) -> str:
        return original_key(self.sha256)

    @property
    def thumb_key(self) -> str:
        return thumb_key(self.sha256)


class ImageKeeper:
    """Downloads HiAPI outputs (or takes local bytes) and keeps them as described
    in this module's docstring. Thread-safe: every call works on its own temp
    files, and blobs only ever appear whole (the store's atomic put).

    `blobs` is the blob store, or a folder for a `LocalBlobStore` there. Temp
    files go to `tmp_dir` (default: `tmp/` in a local store's folder, so a
    finished file is renamed into place, not copied; a fresh temp folder for
    any other store). `http`, `resolve`, `timeout` and `total_timeout` are the
    download's (`images.fetch.Downloader`); `allow_loopback` is the default for
    `fetch`.
    """

    def __init__(
        self,
        blobs: BlobStore | Path | str,
        *,
        tmp_dir: Path | None = None,
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
        if not total_timeout > 0:
            raise ValueError("total_timeout must be positive")
        self.blobs: BlobStore = LocalBlobStore(blobs) if isinstance(blobs, str | os.PathLike) else blobs
        self._local = self.blobs if isinstance(self.blobs, LocalBlobStore) else None
        #: The local store's folder (None for a remote store).
        self.root: Path | None = self._local.root if self._local is not None else None
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.thumb_size = thumb_size
        self.timeout = timeout
        self.total_timeout = total_timeout
        self.allow_loopback = allow_loopback
        self._downloader = Downloader(
            http=http, max_bytes=max_bytes, timeout=timeout, total_timeout=total_timeout, resolve=resolve
        )
        if tmp_dir is None:
            tmp_dir = self.root / "tmp" if self.root else Path(tempfile.mkdtemp(prefix="studio-images-"))
        self._tmp = Path(tmp_dir)
        self._tmp.mkdir(parents=True, exist_ok=True)

    # -- where images are ----------------------------------------------------

    def original_key(self, sha256: str) -> str:
        """`originals/<first two hex>/<sha256>.png`; ValueError for a malformed sha."""
        return original_key(sha256)

    def thumb_key(self, sha256: str) -> str:
        """`thumbs/<first two hex>/<sha256>.webp`; ValueError for a malformed sha."""
        return thumb_key(sha256)

    def open_original(self, sha256: str) -> BinaryIO:
        """The kept PNG, open for reading; `blobs.BlobNotFound` when it is gone."""
        return self.blobs.open(original_key(sha256))

    def original_path(self, sha256: str) -> Path:
        """The local file of a kept original (a local store only; ValueError otherwise)."""
        return self._local_path(original_key(sha256))

    def thumb_path(self, sha256: str) -> Path:
        """The local file of a thumbnail (a local store only; ValueError otherwise)."""
        return self._local_path(thumb_key(sha256))

    def _local_path(self, key: str) -> Path:
        if self._local is None:
            raise ValueError("this image keeper's blob store is not on this machine")
        return self._local.path(key)

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
        src = self._new_temp("dl-")
        try:
            with open(src, "wb") as out:
                self._downloader.download(url, out, local)
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
                        raise self._downloader.too_many_bytes()
                    out.write(data)
                elif isinstance(data_or_path, str | os.PathLike):
                    self._copy_local(Path(data_or_path), out)
                else:
                    raise TypeError(f"expected bytes or a path, not {type(data_or_path).__name__}")
            return self._keep_file(src, cleaned)
        finally:
            src.unlink(missing_ok=True)

    def delete(self, sha256: str) -> None:
        """Remove the original and its thumbnail from the blob store. Missing blobs are fine.

        The caller decides that no output uses the hash any more
        (`Store.delete_outputs` / `purge_due` return exactly those)."""
        for key in (original_key(sha256), thumb_key(sha256)):
            self.blobs.delete(key)

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
        self._downloader.close()

    def __enter__(self) -> ImageKeeper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- local sources -------------------------------------------------------

    def _copy_local(self, src: Path, out: BinaryIO) -> None:
        try:
            with open(src, "rb") as f:
                copied = 0
                while piece := f.read(COPY_SIZE):
                    copied += len(piece)
                    if copied > self.max_bytes:
                        raise self._downloader.too_many_bytes()
                    out.write(piece)
        except OSError:
            raise DownloadFailed("The file could not be read.", code="read_error", retryable=False) from None

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
                raise pillow_error(exc) from None
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
        check_complete(path)
        im = self._open(path)
        try:
            im.verify()  # checks PNG chunk CRCs; the image is unusable afterwards
        except DownloadError:
            raise
        except Exception as exc:
            raise pillow_error(exc) from None
        finally:
            im.close()
        im = self._open(path)
        try:
            im.load()  # a full decode is the only reliable truncation check for JPEG
        except Exception as exc:
            im.close()
            raise pillow_error(exc) from None
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
                    sha, size = splice_png(png_src, f, recipe_chunks(recipe), drop=OWN_KEYWORDS)
                    f.flush()
                    os.fsync(f.fileno())  # durable before the store makes it visible

                key, tkey = original_key(sha), thumb_key(sha)
                thumb_tmp: Path | None = None
                if not self.blobs.exists(tkey):
                    thumb_tmp = self._new_temp("thumb-")
                    temps.append(thumb_tmp)
                    self._write_thumb(im, thumb_tmp)
            finally:
                im.close()  # release the decoded pixels before the blobs are written

            if self.blobs.size(key) == size:
                log.debug("image %s already kept; reusing it", sha[:12])
            else:
                self._place(key, out)
            if thumb_tmp is not None:
                self._place(tkey, thumb_tmp)
            local = self._local
            return KeptImage(
                sha256=sha, width=width, height=height, bytes=size, format="PNG",
                path=local.path(key) if local else None, thumb_path=local.path(tkey) if local else None,
            )  # fmt: skip
        finally:
            for t in temps:
                t.unlink(missing_ok=True)

    def _place(self, key: str, tmp: Path) -> None:
        """Hand a finished, fsynced temp file to the blob store (a rename for a local one)."""
        if self._local is not None:
            self._local.move_in(key, tmp)
        else:
            self.blobs.put(key, tmp)

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
