"""The recipe: what made an image, scrubbed of credentials and embedded in its PNG.

* Every kept image carries an uncompressed iTXt chunk `studio:recipe` holding
  the JSON recipe, plus one text chunk per field of `RECIPE_KEYS` for other tools.
* The recipe is scrubbed before it is written (`clean_recipe`): keys named like
  a credential (api_key, authorization, token, secret, password, ...) are
  dropped at any depth, and `sk-...` keys or bearer tokens inside values are
  redacted. The same recipe always gives the same bytes (sorted keys).
* `read_recipe()` reads the recipe back from a PNG by walking its chunks; it
  never decodes pixels and never raises on junk input.
Nothing here imports streamlit.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
import zlib
from collections.abc import Mapping
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import redact
from .png import (
    MAX_CHUNK_LEN,
    MAX_TEXT_READ,
    PNG_SIG,
    TEXT_CHUNKS,
    decode_text_chunk,
    itxt_chunk,
    skip,
    text_chunk,
)

log = logging.getLogger("studio.images")

#: The fields written as individual PNG text chunks (besides the JSON chunk).
RECIPE_KEYS: tuple[str, ...] = ("prompt", "aspect_ratio", "resolution", "model", "task_id", "created")
#: Keyword of the iTXt chunk that holds the whole recipe as JSON.
RECIPE_CHUNK = "studio:recipe"
#: The text chunks a recipe is written as; an earlier copy is dropped when an image is kept again.
OWN_KEYWORDS = frozenset(k.encode("latin-1") for k in (RECIPE_CHUNK, *RECIPE_KEYS))


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


def recipe_chunks(recipe: dict[str, Any]) -> list[bytes]:
    """PNG chunks for a cleaned recipe: the JSON iTXt chunk, then one per RECIPE_KEYS field."""
    # sort_keys + fixed separators: the same recipe always gives the same bytes,
    # which is what makes content-addressed dedupe work.
    doc = json.dumps(recipe, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)
    chunks = [itxt_chunk(RECIPE_CHUNK, doc)]
    for key in RECIPE_KEYS:
        if key not in recipe or recipe[key] is None:
            continue
        value = recipe[key]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
        chunks.append(text_chunk(key, text.replace("\x00", "")))  # NUL is the field separator
    return chunks


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
        if f.read(8) != PNG_SIG:
            return None
        while True:
            head = f.read(8)
            if len(head) < 8:
                break
            length, ctype = struct.unpack(">I4s", head)
            if length > MAX_CHUNK_LEN:
                break
            if ctype in TEXT_CHUNKS and length <= MAX_TEXT_READ:
                data = f.read(length)
                crc = f.read(4)
                if len(data) < length or len(crc) < 4:
                    break
                if struct.unpack(">I", crc)[0] != zlib.crc32(ctype + data):
                    continue  # a damaged chunk is ignored, not trusted
                parsed = decode_text_chunk(ctype, data)
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
                skip(f, length + 4)
            if ctype == b"IEND":
                break
    except Exception:
        log.debug("read_recipe: stopped on malformed data", exc_info=True)
    return fallback if "prompt" in fallback else None
