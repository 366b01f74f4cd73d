"""Draw the simulator's stand-in images with Pillow.

Each image is exactly `ratios.pixel_size(ratio, resolution)` pixels, uses a
palette derived from a hash of the prompt, shows the prompt's quoted text as a
headline (or a small excerpt when nothing is quoted) and carries a visible
"SIMULATED" corner label. Only the prompt, ratio and resolution reach this
module: no key or other secret can end up in a picture.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import re
from functools import lru_cache

from PIL import Image, ImageChops, ImageDraw, ImageFont

from ..errors import redact
from ..quotes import quoted_parts as _core_quoted_parts
from ..ratios import pixel_size

BOLD_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",
    "/Library/Fonts/Arial Bold.ttf",
    "C:/Windows/Fonts/arialbd.ttf",
)
REGULAR_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:/Windows/Fonts/arial.ttf",
)

#: A prompt holding this marker gets its quoted headline drawn misspelled.
MISSPELL_MARKER = "[sim:misspell]"
#: Prompt markers the simulator understands; they never show up in the picture.
MARKER_RE = re.compile(r"\[sim:[a-z_-]+\]", re.IGNORECASE)

_VOWELS = set("AEIOUaeiou")
_MAX_HEADLINE_CHARS = 140


def strip_markers(prompt: str) -> str:
    return " ".join(MARKER_RE.sub(" ", prompt).split())


def _drawable(text: str) -> str:
    # Belt and braces: anything shaped like an API key is never drawn.
    return redact(text)


def quoted_parts(prompt: str) -> list[str]:
    """The prompt's wanted text (`studio.quotes.quoted_parts`), simulator markers ignored."""
    return _core_quoted_parts(strip_markers(prompt))


def misspell(text: str) -> str:
    """Deliberately misspell text: drop the last vowel (not the first letter) of each word.

    "SUMMER DROP" -> "SUMMR DRP". Text with no droppable vowel gets its last
    letter doubled, so the result always differs when there is any letter.
    """

    def word(m: re.Match[str]) -> str:
        w = m.group(0)
        for i in range(len(w) - 1, 0, -1):
            if w[i] in _VOWELS:
                return w[:i] + w[i + 1 :]
        return w

    out = re.sub(r"[^\W\d_]+", word, text)
    if out == text:
        letters = [i for i, ch in enumerate(text) if ch.isalnum()]
        if letters:
            i = letters[-1]
            out = text[: i + 1] + text[i] + text[i + 1 :]
    return out


# What `_font` can hand back: FreeType when a font file (or Pillow >= 10.1's sized default) loads.
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@lru_cache(maxsize=128)
def _font(bold: bool, size: int) -> Font:
    for path in BOLD_FONTS if bold else REGULAR_FONTS:
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def _text_width(font: Font, text: str) -> float:
    return font.getlength(text)


def _line_height(font: Font) -> int:
    box = font.getbbox("ÁgyQ|")
    return int(box[3] - box[1])


def _wrap(text: str, font: Font, width: float) -> list[str] | None:
    """Greedy word wrap; None if a single word is wider than `width`."""
    lines: list[str] = []
    current = ""
    for w in text.split():
        trial = f"{current} {w}" if current else w
        if _text_width(font, trial) <= width:
            current = trial
            continue
        if _text_width(font, w) > width:
            return None
        lines.append(current)
        current = w
    if current:
        lines.append(current)
    return lines


def _fit(
    text: str, width: float, height: float, max_size: int, max_lines: int, bold: bool = True
) -> tuple[Font, list[str]]:
    """The largest font (binary search) whose wrapped text fits the box."""
    lo, hi = 8, max(8, max_size)
    best: tuple[Font, list[str]] | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        font = _font(bold, mid)
        lines = _wrap(text, font, width)
        if lines is not None and len(lines) <= max_lines:
            spacing = int(_line_height(font) * 0.25)
            total = len(lines) * _line_height(font) + (len(lines) - 1) * spacing
            if total <= height:
                best = (font, lines)
                lo = mid + 1
                continue
        hi = mid - 1
    if best is None:  # nothing fits: smallest font, hard-wrapped by characters
        font = _font(bold, 8)
        per_line = max(1, int(width // max(1.0, _text_width(font, "M"))))
        best = (font, [text[i : i + per_line] for i in range(0, len(text), per_line)][:max_lines])
    return best


def palette(prompt: str) -> list[tuple[int, int, int]]:
    """Five colours derived from a hash of the prompt (markers ignored)."""
    digest = hashlib.sha256(strip_markers(prompt).encode("utf-8")).digest()
    hue = digest[0] / 255.0
    spread = 0.08 + digest[1] / 255.0 * 0.35
    out = []
    for i, (dh, light, sat) in enumerate(
        (
            (0.0, 0.30, 0.55),
            (spread, 0.45, 0.60),
            (-spread, 0.22, 0.50),
            (0.5, 0.60, 0.65),
            (0.25, 0.50, 0.45),
        )
    ):
        light = min(0.85, max(0.12, light + (digest[2 + i] / 255.0 - 0.5) * 0.12))
        r, g, b = colorsys.hls_to_rgb((hue + dh) % 1.0, light, sat)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def _gradient(size: tuple[int, int], top: tuple[int, ...], bottom: tuple[int, ...]) -> Image.Image:
    w, h = size
    strip = Image.new("RGB", (1, 256))
    strip.putdata([tuple(int(top[c] + (bottom[c] - top[c]) * y / 255) for c in range(3)) for y in range(256)])
    return strip.resize((w, h), Image.Resampling.BILINEAR)


def _panel(
    img: Image.Image, box: tuple[float, float, float, float], color: tuple[int, int, int], alpha: float
) -> None:
    """Darken a rounded box of the image (cheap: only the box is blended)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(img.width, x1), min(img.height, y1)
    if x1 <= x0 or y1 <= y0:
        return
    region = img.crop((x0, y0, x1, y1))
    blended = Image.blend(region, Image.new("RGB", region.size, color), alpha)
    mask = Image.new("L", region.size, 0)
    radius = max(2, min(region.size) // 8)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, region.width - 1, region.height - 1), radius, fill=255)
    img.paste(blended, (x0, y0), mask)


def render_png(
    prompt: str,
    aspect_ratio: str = "auto",
    resolution: str = "1K",
    *,
    misspelled: bool = False,
    compress_level: int = 1,
    reference: bytes | None = None,
    transparent: bool = False,
) -> bytes:
    """PNG bytes of the stand-in image for a prompt, at the table's exact pixel size.

    With a `reference` (image-to-image), the result is visibly built from it:
    the reference fitted into the canvas, the quoted text over it. With
    `transparent` (a `background: "transparent"` task) the PNG is RGBA: the
    background gradient is fully transparent, shapes and the text panel stay opaque.
    """
    img = render_image(prompt, aspect_ratio, resolution, misspelled=misspelled, reference=reference)
    if transparent:
        img = _cut_out_gradient(img, prompt)
    return encode_png(img, compress_level)


def _cut_out_gradient(img: Image.Image, prompt: str) -> Image.Image:
    """RGBA: alpha 0 wherever the picture still shows the bare background gradient."""
    colors = palette(prompt)
    bare = _gradient(img.size, colors[0], colors[2])
    changed = ImageChops.difference(img, bare).convert("L").point(lambda v: 255 if v else 0)
    out = img.convert("RGBA")
    out.putalpha(changed)
    return out


def encode_png(img: Image.Image, compress_level: int = 1) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def _fitted(reference: bytes, size: tuple[int, int]) -> Image.Image | None:
    """The reference scaled to fit inside `size` (aspect kept), or None if it cannot be read."""
    try:
        with Image.open(io.BytesIO(reference)) as src:
            im = src.convert("RGB")
    except Exception:
        return None
    scale = min(size[0] / im.width, size[1] / im.height)
    return im.resize(
        (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.LANCZOS
    )


def render_image(
    prompt: str,
    aspect_ratio: str = "auto",
    resolution: str = "1K",
    *,
    misspelled: bool = False,
    reference: bytes | None = None,
) -> Image.Image:
    w, h = pixel_size(aspect_ratio, resolution)
    base = min(w, h)
    colors = palette(prompt)
    digest = hashlib.sha256(("shapes:" + strip_markers(prompt)).encode("utf-8")).digest()

    img = _gradient((w, h), colors[0], colors[2])
    draw = ImageDraw.Draw(img)
    fitted = _fitted(reference, (w, h)) if reference else None
    if fitted is not None:
        # Image-to-image: the first reference, fitted into the canvas, carries the result.
        img.paste(fitted, ((w - fitted.width) // 2, (h - fitted.height) // 2))

    # Blocks and discs placed from the hash: each prompt gets its own layout.
    for i in range(0 if fitted is not None else 6):
        b = digest[i * 4 : i * 4 + 4]
        cx, cy = b[0] / 255 * w, b[1] / 255 * h
        r = base * (0.12 + b[2] / 255 * 0.35)
        fill = colors[1 + (b[3] % 4)]
        mix = tuple(int(fill[c] * 0.55 + colors[0][c] * 0.45) for c in range(3))
        if b[3] % 2:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=mix)
        else:
            draw.rectangle((cx - r, cy - r * 0.6, cx + r * 1.4, cy + r * 0.6), fill=mix)

    margin = int(base * 0.06)
    parts = [_drawable(p) for p in quoted_parts(prompt)]
    if misspelled or MISSPELL_MARKER in prompt.lower():
        parts = [misspell(p) for p in parts]

    if parts:
        headline = parts[0]
        if len(headline) > _MAX_HEADLINE_CHARS:
            headline = headline[: _MAX_HEADLINE_CHARS - 1].rstrip() + "…"
        box_w = w - 2 * margin - 2 * int(base * 0.04)
        box_h = h * 0.46
        font, lines = _fit(headline, box_w, box_h, max_size=int(base * 0.28), max_lines=5)
        lh = _line_height(font)
        spacing = int(lh * 0.25)
        block_h = len(lines) * lh + (len(lines) - 1) * spacing
        sub_font: Font | None = None
        sub_lines: list[str] = []
        if len(parts) > 1:
            sub_text = " · ".join(parts[1:])[:200]
            # Only a FreeType font has a size (the bitmap fallback of Pillow < 10.1 has none).
            assert isinstance(font, ImageFont.FreeTypeFont)
            sub_font, sub_lines = _fit(
                sub_text, box_w, h * 0.14, max_size=max(10, int(font.size * 0.45)), max_lines=2
            )
            sub_h = len(sub_lines) * _line_height(sub_font)
            block_h += int(lh * 0.5) + sub_h
        pad = int(base * 0.04)
        widest = max(_text_width(font, ln) for ln in lines)
        if sub_font:
            widest = max(widest, *(_text_width(sub_font, ln) for ln in sub_lines))
        top = (h - block_h) / 2
        _panel(
            img,
            (w / 2 - widest / 2 - pad, top - pad, w / 2 + widest / 2 + pad, top + block_h + pad),
            (12, 12, 18),
            0.62,
        )
        y = top
        for ln in lines:
            draw.text((w / 2, y), ln, font=font, fill=(255, 255, 255), anchor="mt")
            y += lh + spacing
        if sub_font:
            y += int(lh * 0.5) - spacing
            for ln in sub_lines:
                draw.text((w / 2, y), ln, font=sub_font, fill=(235, 235, 235), anchor="mt")
                y += _line_height(sub_font)
    else:
        excerpt = _drawable(strip_markers(prompt))[:160]
        if excerpt:
            size = max(10, base // 36)
            font, lines = _fit(excerpt, w - 2 * margin, size * 3, max_size=size, max_lines=2, bold=False)
            lh = _line_height(font)
            y = h - margin - 2.6 * lh - len(lines) * lh * 1.2
            right = margin + max(_text_width(font, ln) for ln in lines)
            box = (margin - lh * 0.5, y - lh * 0.4, right + lh * 0.5, y + len(lines) * lh * 1.2 + lh * 0.2)
            _panel(img, box, (12, 12, 18), 0.5)
            for ln in lines:
                draw.text((margin, y), ln, font=font, fill=(240, 240, 240))
                y += lh * 1.2

    # The "SIMULATED" corner label, always visible.
    label_font = _font(True, max(12, base // 22))
    text = "SIMULATED"
    tw = _text_width(label_font, text)
    lh = _line_height(label_font)
    pad = max(4, lh // 2)
    x0, y0 = max(6, base // 50), max(6, base // 50)
    draw.rectangle(
        (x0, y0, x0 + tw + 2 * pad, y0 + lh + 2 * pad),
        fill=(200, 24, 32),
        outline=(255, 255, 255),
        width=max(1, lh // 12),
    )
    draw.text((x0 + pad, y0 + pad + lh / 2), text, font=label_font, fill=(255, 255, 255), anchor="lm")

    # Footer: what was asked for, in small print.
    foot_font = _font(False, max(10, base // 48))
    foot = f"HiAPI simulator · {aspect_ratio} · {resolution} · {w}×{h}"
    fl = _line_height(foot_font)
    draw.text(
        (w - x0, h - x0),
        foot,
        font=foot_font,
        fill=(255, 255, 255),
        anchor="rd",
        stroke_width=max(1, fl // 10),
        stroke_fill=(0, 0, 0),
    )
    return img
