"""The PNG codec: chunks written, spliced and walked without decoding a pixel.

- `splice_png` copies a PNG byte for byte with new chunks right after IHDR
  (dropping earlier text chunks of the given keywords) and requires a complete
  IEND, hashing what it writes as it goes.
- `check_complete` finds a PNG or WebP file cut short from its framing alone.
- `sniff` tells from a few leading bytes whether data can be a PNG, JPEG or WebP.
- Text chunks (tEXt, zTXt, iTXt) are built and decoded here; inflating is bounded.
Failures are `images.errors` classes. Nothing here imports streamlit.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import NotAnImage, TruncatedDownload

PNG_SIG = b"\x89PNG\r\n\x1a\n"
TEXT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt"})
MAX_CHUNK_LEN = 2**31 - 1  # PNG spec limit
MAX_TEXT_READ = 8 * 2**20  # text chunks bigger than this are not read
COPY_SIZE = 1 << 20


def chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def itxt_chunk(keyword: str, text: str) -> bytes:
    # keyword NUL, compression flag 0, method 0, empty language NUL, empty
    # translated keyword NUL, UTF-8 text. Uncompressed on purpose: readable by
    # any tool, and a scrubbed secret can be checked for in the raw bytes.
    return chunk(b"iTXt", keyword.encode("latin-1") + b"\x00" * 5 + text.encode("utf-8"))


def text_chunk(keyword: str, text: str) -> bytes:
    """tEXt when the text is Latin-1, else iTXt (what Pillow's PngInfo.add_text does)."""
    try:
        return chunk(b"tEXt", keyword.encode("latin-1") + b"\x00" + text.encode("latin-1"))
    except UnicodeEncodeError:
        return itxt_chunk(keyword, text)


def read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise TruncatedDownload()
    return data


def copy_exact(f: BinaryIO, n: int, emit: Callable[[bytes], None]) -> None:
    while n > 0:
        piece = f.read(min(n, COPY_SIZE))
        if not piece:
            raise TruncatedDownload()
        emit(piece)
        n -= len(piece)


def splice_png(
    src: Path, dst: BinaryIO, chunks: list[bytes], *, drop: frozenset[bytes] = frozenset()
) -> tuple[str, int]:
    """Copy the PNG at `src` to `dst` with `chunks` inserted right after IHDR.

    Text chunks whose keyword is in `drop` (the recipe's, from a re-import) are dropped; every other
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
        if f.read(8) != PNG_SIG:
            raise NotAnImage()
        emit(PNG_SIG)
        first = True
        while True:
            head = read_exact(f, 8)
            length, ctype = struct.unpack(">I4s", head)
            if length > MAX_CHUNK_LEN or (first and ctype != b"IHDR"):
                raise NotAnImage("The file is damaged and cannot be read as an image.", code="corrupt")
            if ctype in TEXT_CHUNKS:
                prefix = read_exact(f, min(length, 80))  # a keyword is at most 79 bytes + NUL
                if prefix.split(b"\x00", 1)[0] in drop:
                    read_exact(f, length - len(prefix) + 4)  # skip the rest and the CRC
                    continue
                emit(head)
                emit(prefix)
                copy_exact(f, length - len(prefix) + 4, emit)
            else:
                emit(head)
                copy_exact(f, length + 4, emit)
            if first:
                for c in chunks:
                    emit(c)
                first = False
            if ctype == b"IEND":
                # Requiring a complete IEND catches truncation even if Pillow
                # tolerates it (or LOAD_TRUNCATED_IMAGES was set elsewhere).
                break
    return h.hexdigest(), size


def decode_text_chunk(ctype: bytes, data: bytes) -> tuple[str, str] | None:
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
        text = inflate(rest[1:])
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
        inflated = inflate(body)
        if inflated is None:
            return None
        body = inflated
    return key, body.decode("utf-8", errors="replace")


def inflate(data: bytes) -> bytes | None:
    # Bounded: a tiny zTXt chunk must not expand into gigabytes.
    d = zlib.decompressobj()
    out = d.decompress(data, MAX_TEXT_READ)
    return None if d.unconsumed_tail else out


def skip(f: BinaryIO, n: int) -> None:
    try:
        if f.seekable():
            f.seek(n, os.SEEK_CUR)
            return
    except (AttributeError, OSError):
        pass
    while n > 0:  # non-seekable stream: read through
        piece = f.read(min(n, COPY_SIZE))
        if not piece:
            return
        n -= len(piece)


def sniff(head: bytes) -> bool:
    """Could these first bytes start a PNG, JPEG or WebP? Lets us stop reading an HTML page early.

    Pillow has the final word; this only rejects what can never be an image.
    """
    n = len(head)
    return (
        head[:8] == PNG_SIG[:n][:8]
        or head[:3] == b"\xff\xd8\xff"[: min(n, 3)]
        or (head[:4] == b"RIFF"[: min(n, 4)] and (n < 12 or head[8:12] == b"WEBP"))
    )


def check_complete(path: Path) -> None:
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
        if head[:8] != PNG_SIG:
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
