"""Delivery kits: one creative, every placement it is going to, at exact pixels.

A creative is what one Generate press made: the same prompt in one or more
ratios (same `creative_id`). A kit fills each chosen placement from the kept
image whose shape is closest (aspect ratios compared on a log scale, so 2:1
is as far from 1:1 as 1:2 is; ties go to the bigger image), scaled to cover
the placement and centre-cropped to its exact pixels in one Lanczos resample.

Contract:
- Every file has exactly the placement's pixels (`PLACEMENTS`, the one table).
- Nothing is upscaled silently: when a source is smaller than the placement
  the plan says so (`KitEntry.upscaled`, `scale`), the manifest records it,
  and the contact sheet marks the tile.
- `write_kit` writes the blob `kits/<token>/<creative>.zip` holding
  `<creative>/<placement>_<w>x<h>.png` for each placement, `<creative>/contact-sheet.png`
  (every format side by side, for review) and `<creative>/manifest.json` / `.csv`,
  plus the blob `kits/<token>/contact-sheet.png` for previews. Sources are read
  from the blob store by their sha256; images are streamed into a temp zip one
  at a time (nothing is built in memory whole), which then becomes the blob.
  The token is random, so kit URLs cannot be guessed; kits older than an hour
  (told by the token, `blob_keys.new_token`) are swept.
- Each PNG carries the source's recipe (plus the placement) in the studio's
  `studio:recipe` chunk, so a kit file restores its prompt like any export.
- `KitBuilder` writes kits on its own worker thread, off the page thread: a
  page starts a job and reads its `KitJob` (files written so far, the kit or
  the error) on each redraw.
Nothing here imports streamlit.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from . import routes
from .blob_keys import KITS, kit_key, new_token, original_key, token_expired, token_of
from .blobs import BlobNotFound, BlobStore, move_into, scratch_dir
from .errors import redact
from .events import EventBus
from .export import EXPORT_LIFETIME_S, csv_safe, slug
from .images import RECIPE_CHUNK, read_recipe
from .records import GalleryItem


@dataclass(frozen=True)
class Placement:
    """Where a creative goes, at the exact pixels that place wants."""

    key: str  # file-name safe
    label: str
    width: int
    height: int
    group: str  # social | web | print
    dpi: int = 72

    @property
    def ratio(self) -> float:
        return self.width / self.height

    @property
    def size_label(self) -> str:
        return f"{self.width}×{self.height}"

    def file_name(self) -> str:
        return f"{self.key}_{self.width}x{self.height}.png"


# The one table of placements. Print sizes are ISO A-series portrait at 300 dpi.
PLACEMENTS: tuple[Placement, ...] = (
    Placement("story", "Story / Reel", 1080, 1920, "social"),
    Placement("feed-portrait", "Feed portrait", 1080, 1350, "social"),
    Placement("square", "Square post", 1080, 1080, "social"),
    Placement("pin", "Pinterest pin", 1000, 1500, "social"),
    Placement("landscape", "Landscape / video", 1920, 1080, "web"),
    Placement("banner", "Web banner", 2560, 1097, "web"),
    Placement("x-header", "X / Twitter header", 1500, 500, "web"),
    Placement("poster-a5", "Flyer A5 (300 dpi)", 1748, 2480, "print", 300),
    Placement("poster-a4", "Poster A4 (300 dpi)", 2480, 3508, "print", 300),
    Placement("poster-a3", "Poster A3 (300 dpi)", 3508, 4961, "print", 300),
)
PLACEMENTS_BY_KEY: dict[str, Placement] = {p.key: p for p in PLACEMENTS}
DEFAULT_PLACEMENTS: tuple[str, ...] = ("story", "feed-portrait", "square", "landscape", "banner", "poster-a4")

MANIFEST_FIELDS = (
    "file", "placement", "label", "width", "height", "dpi", "source_output_id", "source_ratio",
    "source_resolution", "source_width", "source_height", "source_sha256", "scale", "upscaled",
    "used_share",
)  # fmt: skip
CONTACT_SHEET = "contact-sheet.png"
# The same ratio within 1 %: pick the bigger image instead of the marginally closer one.
_RATIO_TIE = math.log(1.01)


@dataclass(frozen=True)
class KitEntry:
    """One placement of a kit: which image fills it and how."""

    placement: Placement
    source: GalleryItem
    box: tuple[float, float, float, float]  # the part of the source used, in source pixels
    scale: float  # output pixels per source pixel (>1 means upscaled)

    @property
    def upscaled(self) -> bool:
        return self.scale > 1.0 + 1e-6

    @property
    def used_share(self) -> float:
        """Share of the source's area that ends up in the file (the rest is cropped)."""
        x0, y0, x1, y1 = self.box
        width, height = _dimensions(self.source)
        return (x1 - x0) * (y1 - y0) / (width * height)

    @property
    def note(self) -> str:
        parts = []
        if self.upscaled:
            parts.append(
                f"upscaled ×{self.scale:.2f}: the {self.source.aspect_ratio} image is only "
                f"{self.source.width}×{self.source.height}"
            )
        if self.used_share < 0.75:
            parts.append(f"crops {100 * (1 - self.used_share):.0f} % of the {self.source.aspect_ratio} image")
        return "; ".join(parts)


def _dimensions(item: GalleryItem) -> tuple[int, int]:
    """Width and height of a kept image; `choose_source` only picks items that have both."""
    assert item.width is not None and item.height is not None
    return item.width, item.height


def cover_box(
    src: tuple[int, int], target: tuple[int, int]
) -> tuple[tuple[float, float, float, float], float]:
    """The centred part of a `src`-sized image that scales to exactly cover `target`, and the scale."""
    sw, sh = src
    tw, th = target
    scale = max(tw / sw, th / sh)
    cw, ch = min(sw, tw / scale), min(sh, th / scale)
    # Clamped: rounding must never push the box a hair outside the source (Pillow refuses that).
    x0, y0 = max(0.0, (sw - cw) / 2), max(0.0, (sh - ch) / 2)
    return (x0, y0, min(float(sw), x0 + cw), min(float(sh), y0 + ch)), scale


def choose_source(placement: Placement, items: Sequence[GalleryItem]) -> GalleryItem:
    """The kept image closest in shape to the placement (ties: the bigger one)."""
    kept = [i for i in items if i.width and i.height]
    if not kept:
        raise ValueError("This creative has no kept image yet: wait for one to finish.")

    def distance(i: GalleryItem) -> float:
        width, height = _dimensions(i)
        return abs(math.log((width / height) / placement.ratio))

    best = min(distance(i) for i in kept)
    close = [i for i in kept if distance(i) <= best + _RATIO_TIE]
    return max(close, key=lambda i: (math.prod(_dimensions(i)), -distance(i), i.output_id or 0))


def plan_kit(items: Sequence[GalleryItem], placement_keys: Sequence[str]) -> list[KitEntry]:
    """Which image fills each placement and how; raises ValueError naming a bad placement."""
    if not placement_keys:
        raise ValueError("Placements: pick at least one placement for the kit.")
    plan = []
    for key in dict.fromkeys(placement_keys):  # once each, in the order given
        placement = PLACEMENTS_BY_KEY.get(key)
        if placement is None:
            known = ", ".join(PLACEMENTS_BY_KEY)
            raise ValueError(f"Placements: unknown placement {key!r}; pick from {known}.")
        src = choose_source(placement, items)
        box, scale = cover_box(_dimensions(src), (placement.width, placement.height))
        plan.append(KitEntry(placement, src, box, scale))
    return plan


def render_entry(entry: KitEntry, source: Image.Image) -> Image.Image:
    """The placement's image: exactly its pixels, from the entry's crop of `source`."""
    if source.size != (entry.source.width, entry.source.height):
        # The file on disk is the truth; recompute the crop for its real size.
        box, _ = cover_box(source.size, (entry.placement.width, entry.placement.height))
    else:
        box = entry.box
    # Kit files are PNG, which keeps alpha: a transparent source stays transparent.
    keep_alpha = source.mode in ("RGBA", "LA", "PA") or source.has_transparency_data
    rgb = source if source.mode in ("RGB", "RGBA") else source.convert("RGBA" if keep_alpha else "RGB")
    return rgb.resize((entry.placement.width, entry.placement.height), Image.Resampling.LANCZOS, box=box)


def flatten(img: Image.Image, backdrop: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """RGB for formats without alpha (JPEG, the contact sheet): transparency becomes white."""
    if img.mode not in ("RGBA", "LA", "PA") and not img.has_transparency_data:
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    out = Image.new("RGB", rgba.size, backdrop)
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def creative_name(items: Sequence[GalleryItem]) -> str:
    """The kit's folder name: a slug of the prompt plus the start of the creative id."""
    first = items[0]
    return f"{slug(first.prompt, 32)}-{slug(first.creative_id, 6)}"


@dataclass(frozen=True)
class Kit:
    """A written kit: its token, its blobs and what is in it."""

    token: str
    name: str
    entries: tuple[KitEntry, ...]

    @property
    def zip_name(self) -> str:
        return f"{self.name}.zip"

    @property
    def zip_key(self) -> str:
        return kit_key(self.token, self.zip_name)

    @property
    def contact_key(self) -> str:
        return kit_key(self.token, CONTACT_SHEET)

    @property
    def zip_route(self) -> str:
        return routes.kit(self.token, self.zip_name)

    @property
    def contact_route(self) -> str:
        return routes.kit(self.token, CONTACT_SHEET)


def manifest_rows(entries: Sequence[KitEntry], name: str) -> list[dict[str, Any]]:
    return [
        {
            "file": f"{name}/{e.placement.file_name()}",
            "placement": e.placement.key,
            "label": e.placement.label,
            "width": e.placement.width,
            "height": e.placement.height,
            "dpi": e.placement.dpi,
            "source_output_id": e.source.output_id,
            "source_ratio": e.source.aspect_ratio,
            "source_resolution": e.source.resolution,
            "source_width": e.source.width,
            "source_height": e.source.height,
            "source_sha256": e.source.sha256,
            "scale": round(e.scale, 4),
            "upscaled": e.upscaled,
            "used_share": round(e.used_share, 4),
        }
        for e in entries
    ]


def write_kit(
    items: Sequence[GalleryItem],
    placement_keys: Sequence[str],
    blobs: BlobStore,
    progress: Callable[[int, int], None] | None = None,
    *,
    now: float | None = None,
) -> Kit:
    """Plan and write a kit for one creative's kept `items` (see the module contract).

    `progress(done, total)` is called after each file (placements, then the contact sheet).
    """
    entries = plan_kit(items, placement_keys)
    total = len(entries) + 1
    report = progress or (lambda done, total: None)
    name = creative_name(items)
    sweep_kits(blobs, now=now)
    kit = Kit(new_token(now), name, tuple(entries))
    rows = manifest_rows(entries, name)
    tiles: list[tuple[KitEntry, Image.Image]] = []
    recipes: dict[str, dict[str, Any]] = {}
    fd, tmp_name = tempfile.mkstemp(dir=scratch_dir(blobs), prefix="kit-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with open(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                for entry in entries:
                    sha = entry.source.sha256 or ""
                    if sha not in recipes:
                        with blobs.open(original_key(sha)) as src_file:
                            recipes[sha] = read_recipe(src_file) or {"prompt": entry.source.prompt}
                    with blobs.open(original_key(sha)) as src_file, Image.open(src_file) as src:
                        out = render_entry(entry, src)
                    info = PngImagePlugin.PngInfo()
                    recipe = dict(recipes[sha]) | {"placement": entry.placement.key, "source_sha256": sha}
                    info.add_itxt(RECIPE_CHUNK, json.dumps(recipe, ensure_ascii=False))
                    # PNGs are already compressed: stored as they are, streamed entry by entry.
                    with zf.open(f"{name}/{entry.placement.file_name()}", "w", force_zip64=True) as zipped:
                        dpi = (entry.placement.dpi, entry.placement.dpi)
                        out.save(zipped, format="PNG", pnginfo=info, dpi=dpi)
                    out.thumbnail((640, 640), Image.Resampling.LANCZOS)
                    tiles.append((entry, out))
                    report(len(tiles), total)
                sheet = contact_sheet(tiles, title=name, prompt=items[0].prompt)
                png = io.BytesIO()
                sheet.save(png, format="PNG")
                blobs.put(kit.contact_key, png.getvalue())
                report(total, total)
                zf.writestr(f"{name}/{CONTACT_SHEET}", png.getvalue())
                buf = io.StringIO()
                writer = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS)
                writer.writeheader()
                writer.writerows([csv_safe({k: r[k] for k in MANIFEST_FIELDS}) for r in rows])
                zf.writestr(f"{name}/manifest.csv", buf.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
                manifest = {
                    "creative_id": items[0].creative_id,
                    "prompt": items[0].prompt,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                    "contact_sheet": f"{name}/{CONTACT_SHEET}",
                    "files": rows,
                }
                zf.writestr(
                    f"{name}/manifest.json",
                    json.dumps(manifest, indent=2, ensure_ascii=False),
                    compress_type=zipfile.ZIP_DEFLATED,
                )
            f.flush()
            os.fsync(f.fileno())
        move_into(blobs, kit.zip_key, tmp)
    finally:
        tmp.unlink(missing_ok=True)
    return kit


# ------------------------------------------------------------------ building off the page thread


@dataclass(frozen=True)
class KitJob:
    """Where one kit build stands: `running`, `done` (with `kit`) or `failed` (with `error`)."""

    id: str
    total: int
    done: int = 0
    state: str = "running"
    kit: Kit | None = None
    error: str | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


class KitBuilder:
    """Builds kits one at a time on a worker thread; pages read `status(job_id)` when the bus
    (if given) says the job moved.

    One worker: a kit is CPU-bound resampling, and on a small machine two at
    once only make both slower. Jobs are kept (newest `keep`) so a page that
    comes back finds its finished kit.
    """

    def __init__(self, blobs: BlobStore, *, keep: int = 64, events: EventBus | None = None) -> None:
        self.blobs = blobs
        self.keep = keep
        self.events = events  # told of every file written and of the end (`KIT`, with the job id)
        self._jobs: dict[str, KitJob] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kit")

    def start(self, items: Sequence[GalleryItem], placement_keys: Sequence[str]) -> KitJob:
        """Queue a build; raises ValueError (naming the field) before queueing a bad one."""
        entries = plan_kit(items, placement_keys)
        job = KitJob(secrets.token_urlsafe(8), total=len(entries) + 1)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self.keep:
                self._jobs.pop(next(iter(self._jobs)))
        self._pool.submit(self._build, job.id, list(items), list(placement_keys))
        return job

    def status(self, job_id: str) -> KitJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            if job_id in self._jobs:
                self._jobs[job_id] = replace(self._jobs[job_id], **changes)
        if self.events is not None:
            self.events.publish_kit(job_id)

    def _build(self, job_id: str, items: list[GalleryItem], keys: list[str]) -> None:
        try:
            kit = write_kit(
                items, keys, self.blobs,
                progress=lambda done, total: self._update(job_id, done=done),
            )  # fmt: skip
        except (FileNotFoundError, BlobNotFound):
            self._update(job_id, state="failed", error="An image of this creative was deleted meanwhile.")
        except (OSError, ValueError) as exc:
            self._update(job_id, state="failed", error=f"The kit could not be written: {redact(str(exc))}")
        else:
            self._update(job_id, state="done", kit=kit)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------ contact sheet

_FONTS = (
    (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    ),
    (
        "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ),
)
SHEET_TILE_HEIGHT = 360
SHEET_MAX_WIDTH = 2200
_PAD = 28
_BG = (24, 24, 30)
_INK = (236, 236, 240)
_MUTED = (160, 160, 172)
_WARN = (255, 176, 32)


@lru_cache(maxsize=16)
def _font(bold: bool, size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for pair in _FONTS:
        try:
            return ImageFont.truetype(pair[0] if bold else pair[1], size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def _fit_text(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: float) -> str:
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def contact_sheet(tiles: Sequence[tuple[KitEntry, Image.Image]], *, title: str, prompt: str) -> Image.Image:
    """Every format of a creative side by side at one height, labelled, for review.

    Tiles keep their true shapes; an upscaled placement is labelled in amber.
    """
    title_font, label_font, small_font = _font(True, 30), _font(True, 20), _font(False, 17)
    h = SHEET_TILE_HEIGHT
    sizes = [(max(1, round(h * e.placement.ratio)), h) for e, _ in tiles]
    # Lay out left to right, wrapping to a new row when the next tile does not fit.
    rows: list[list[int]] = [[]]
    x = _PAD
    for i, (w, _) in enumerate(sizes):
        if rows[-1] and x + w + _PAD > SHEET_MAX_WIDTH:
            rows.append([])
            x = _PAD
        rows[-1].append(i)
        x += w + _PAD
    label_h = 84
    header_h = 96
    width = max(
        min(SHEET_MAX_WIDTH, max(sum(sizes[i][0] + _PAD for i in row) + _PAD for row in rows)),
        900,
    )
    height = header_h + len(rows) * (h + label_h + _PAD) + _PAD
    sheet = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(sheet)
    draw.text((_PAD, 22), _fit_text(title, title_font, width - 2 * _PAD), font=title_font, fill=_INK)
    # The prompt is shown as typed, minus anything shaped like a key (belt and braces).
    line = " ".join(redact(prompt).split())
    draw.text((_PAD, 60), _fit_text(line, small_font, width - 2 * _PAD), font=small_font, fill=_MUTED)
    y = header_h
    for row in rows:
        x = _PAD
        for i in row:
            entry, img = tiles[i]
            w, _ = sizes[i]
            tile = img.convert("RGBA").resize((w, h), Image.Resampling.LANCZOS)
            sheet.paste(flatten(tile), (x, y))
            colour = _WARN if entry.upscaled else (90, 90, 104)
            draw.rectangle((x - 1, y - 1, x + w, y + h), outline=colour, width=2 if entry.upscaled else 1)
            draw.text(
                (x, y + h + 8), _fit_text(entry.placement.label, label_font, w), font=label_font, fill=_INK
            )
            size = f"{entry.placement.size_label} · from {entry.source.aspect_ratio}"
            draw.text((x, y + h + 34), _fit_text(size, small_font, w), font=small_font, fill=_MUTED)
            if entry.upscaled:
                warn = f"⚠ upscaled ×{entry.scale:.2f}"
                draw.text((x, y + h + 56), _fit_text(warn, small_font, w), font=small_font, fill=_WARN)
            x += w + _PAD
        y += h + label_h + _PAD
    return sheet


#: How long a kit's links work (the zip and its contact sheet); `sweep_kits` removes older kits.
KIT_LIFETIME_S = EXPORT_LIFETIME_S


def sweep_kits(blobs: BlobStore, older_than_s: float = KIT_LIFETIME_S, *, now: float | None = None) -> int:
    """Remove kits older than their links' lifetime (every blob under the token); returns how many kits."""
    gone: set[str] = set()
    for key in list(blobs.keys(KITS)):
        token = token_of(key)
        if token is None or token_expired(token, older_than_s, now=now):
            blobs.delete(key)
            gone.add(token or key)
    return len(gone)
