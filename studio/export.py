"""Bulk export: a zip of originals with a manifest (CSV and JSON, one recipe per file).

The zip is streamed into a temp file, never built in memory, so a large export
does not grow the server, then becomes the blob `exports/<token>.zip`; the app
serves it over HTTP (`routes.export`).

- Links are one-off downloads: an export lives `EXPORT_LIFETIME_S` (1 hour),
  told by its token (`blob_keys.new_token`); after that its link answers 410
  and the blob is swept (before each new export, and at start-up).
- Every CSV the studio writes goes through `csv_cell`: a cell starting with
  `=`, `+`, `-`, `@`, a tab or a carriage return would be run as a formula by
  spreadsheet apps, so it gets a leading `'`. `manifest.json` keeps the true value.
- Blobs are written owner-only (0600) on a local store, like everything in the data folder.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import shutil
import tempfile
import time
import unicodedata
import zipfile
from collections.abc import Sequence
from pathlib import Path

from .blob_keys import EXPORTS, export_key, new_token, original_key, token_expired, token_of
from .blobs import BlobStore, move_into, scratch_dir
from .records import GalleryItem
from .references import reference_names

#: How long an export link works; `sweep_exports` removes older files.
EXPORT_LIFETIME_S = 3600.0
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A value as a spreadsheet may show it: text that would start a formula gets a leading quote."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_safe(row: dict) -> dict:
    """A CSV row with every cell through `csv_cell`."""
    return {k: csv_cell(v) for k, v in row.items()}


def link_expired(token: str, lifetime_s: float = EXPORT_LIFETIME_S, *, now: float | None = None) -> bool:
    """True when a one-off download link (an export's or a kit's token) has outlived its lifetime."""
    return token_expired(token, lifetime_s, now=now)


MANIFEST_FIELDS = (
    "file", "prompt", "aspect_ratio", "resolution", "model", "task_id",
    "width", "height", "bytes", "sha256", "created", "references",
)  # fmt: skip


def slug(text: str, max_len: int = 40) -> str:
    """A filesystem-safe, ASCII slug of the start of a prompt."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return (text[:max_len].rstrip("-")) or "image"


def file_name(item: GalleryItem) -> str:
    ratio = item.aspect_ratio.replace(":", "x")
    return f"{slug(item.prompt)}_{ratio}_{item.resolution}_{item.output_id}.png"


def manifest_rows(items: Sequence[GalleryItem]) -> list[dict]:
    return [
        {
            "file": file_name(i),
            "prompt": i.prompt,
            "aspect_ratio": i.aspect_ratio,
            "resolution": i.resolution,
            "model": i.model,
            "task_id": i.task_id,
            "width": i.width,
            "height": i.height,
            "bytes": i.bytes,
            "sha256": i.sha256,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(i.created_at)),
            # The kept reference images it was made from, by name (`<sha256>.<ext>`), space-separated.
            "references": " ".join(reference_names(i.references)),
        }
        for i in items
    ]


def campaign_manifest_rows(
    campaign_name: str, variables: Sequence[str], items: Sequence[tuple[int, GalleryItem, dict]]
) -> list[dict]:
    """Manifest rows of a campaign zip: each file with its row number and that row's values.

    `items` are (row number, kept image, row values). Files are named
    `row-003_16x9_2K.png` so they sort by row, then ratio.
    """
    rows, seen = [], set()
    base = manifest_rows([it for _, it, _ in items])
    for (row, item, values), m in zip(items, base, strict=True):
        name = f"row-{row:03d}_{item.aspect_ratio.replace(':', 'x')}_{item.resolution}.png"
        if name in seen:  # one task with several outputs
            name = name.removesuffix(".png") + f"_{item.output_id}.png"
        seen.add(name)
        rows.append(
            m
            | {
                "file": name,
                "campaign": campaign_name,
                "row": row,
                "values": {v: values.get(v, "") for v in variables},
            }
        )
    return rows


def _csv_rows(rows: Sequence[dict]) -> tuple[list[str], list[dict]]:
    """Flatten `values` into one `{{name}}` column per variable (no clash with the fixed fields)."""
    fields: list[str] = []
    flat = []
    for r in rows:
        out = {}
        for k, v in r.items():
            if k == "values" and isinstance(v, dict):
                for name, value in v.items():
                    out["{{" + name + "}}"] = value
            else:
                out[k] = v
        for k in out:
            if k not in fields:
                fields.append(k)
        flat.append(out)
    return fields, flat


def write_zip(
    items: Sequence[GalleryItem],
    blobs: BlobStore,
    *,
    manifest: Sequence[dict] | None = None,
    now: float | None = None,
) -> str:
    """Write the blob `exports/<token>.zip` with every original and manifest.csv/json; returns the token.

    Originals are read from `blobs` by their sha256. `manifest` (one row per
    item, each with its `file` name) replaces the default rows, e.g. a
    campaign's. The token is random so export URLs cannot be guessed.
    """
    sweep_exports(blobs, now=now)  # like kits: old exports go when a new one is made
    token = new_token(now)
    rows = list(manifest) if manifest is not None else manifest_rows(items)
    fields, flat = _csv_rows(rows) if manifest is not None else (list(MANIFEST_FIELDS), rows)
    fd, name = tempfile.mkstemp(dir=scratch_dir(blobs), prefix="export-", suffix=".part")
    tmp = Path(name)
    try:
        with open(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
                for item, row in zip(items, rows, strict=True):
                    # PNGs are already compressed: stored as they are, streamed from the store.
                    with blobs.open(original_key(item.sha256 or "")) as src, zf.open(row["file"], "w") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                buf = io.StringIO()
                writer = csv.DictWriter(buf, fieldnames=fields)
                writer.writeheader()
                writer.writerows(csv_safe(r) for r in flat)
                zf.writestr("manifest.csv", buf.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
                zf.writestr(
                    "manifest.json",
                    json.dumps(rows, indent=2, ensure_ascii=False),
                    compress_type=zipfile.ZIP_DEFLATED,
                )
            f.flush()
            os.fsync(f.fileno())
        move_into(blobs, export_key(token), tmp)
    finally:
        tmp.unlink(missing_ok=True)
    return token


def sweep_exports(
    blobs: BlobStore, older_than_s: float = EXPORT_LIFETIME_S, *, now: float | None = None
) -> int:
    """Remove exports older than their link's lifetime; they are one-off downloads."""
    n = 0
    for key in list(blobs.keys(EXPORTS)):
        token = token_of(key)
        if token is None or token_expired(token, older_than_s, now=now):
            n += blobs.delete(key)
    return n


def images_zip_name(count: int, day: dt.date | None = None) -> str:
    """The download name of a Gallery zip: what is in it and when, e.g. `studio-images-2026-12-02-12-images.zip`."""
    day = day or dt.date.today()
    return f"studio-images-{day:%Y-%m-%d}-{count}-image{'s' if count != 1 else ''}.zip"


def campaign_zip_name(campaign: str, day: dt.date | None = None) -> str:
    """The download name of a campaign zip, e.g. `campaign-summer-drop-2026-12-02.zip`."""
    day = day or dt.date.today()
    return f"campaign-{slug(campaign, 60)}-{day:%Y-%m-%d}.zip"
