"""The one table of aspect ratios, resolutions and approximate pixel sizes.

HiAPI does not publish what 1K/2K/4K mean in pixels. The model family takes
sides that are multiples of 16, at most 3840 px on the long edge, a ratio of at
most 3:1 and 655,360-8,294,400 pixels in all. We follow one reseller's rule:
1K fixes the short edge near 1024; 2K and 4K fix the long edge at 2048 and
3840, shrunk to stay within the pixel budget. Where that rule would make 2K no
larger than 1K (2:1 and wider), 2K is 1K grown by a quarter. Sizes are shown as approximate;
the real image is always measured.

The table also holds HiAPI's current limits on the default route: each row says
at which resolutions HiAPI does not offer that ratio (`not_at`, on both models)
and where text-to-image alone refuses it (`not_at_text_to_image`: 1:1 at 4K;
image-to-image allows it). `combination_problem` is the one reading of those
limits: the pickers, the validation and the simulator all call it, so they
cannot drift apart. On HiAPI's `ext` route (`route="ext"`, chosen by picking a
quality) every ratio works at every resolution: pass `route` and the limits vanish.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RESOLUTIONS: tuple[str, ...] = ("1K", "2K", "4K")
EXT_ROUTE = "ext"  # HiAPI's route without ratio/resolution limits (quality required)
DEFAULT_RATIO = "auto"
DEFAULT_RESOLUTION = "1K"

SIDE_STEP = 16
MAX_LONG_EDGE = 3840
MIN_PIXELS = 655_360
MAX_PIXELS = 8_294_400


@dataclass(frozen=True)
class Ratio:
    """One aspect ratio HiAPI accepts, with the placements it suits."""

    name: str
    width: int  # ratio terms; `auto` is drawn square
    height: int
    group: str  # square, landscape, portrait, wide, tall, auto
    placements: tuple[str, ...]
    not_at: tuple[str, ...] = ()  # resolutions HiAPI refuses for this ratio on every model
    not_at_text_to_image: tuple[str, ...] = ()  # ...and those only text-to-image refuses

    @property
    def value(self) -> float:
        return self.width / self.height


_TABLE: tuple[Ratio, ...] = (
    Ratio("auto", 1, 1, "auto", ("let the model choose",), not_at=("2K", "4K")),
    Ratio("1:1", 1, 1, "square", ("feed post", "profile", "product tile"), not_at_text_to_image=("4K",)),
    Ratio("5:4", 5, 4, "landscape", ("print 8x10 landscape",), not_at=("2K",)),
    Ratio("4:3", 4, 3, "landscape", ("classic slide", "tablet")),
    Ratio("3:2", 3, 2, "landscape", ("photo print", "blog header")),
    Ratio("16:9", 16, 9, "landscape", ("slide", "video", "YouTube thumbnail")),
    Ratio("4:5", 4, 5, "portrait", ("feed post (portrait)", "print 8x10"), not_at=("2K",)),
    Ratio("3:4", 3, 4, "portrait", ("poster", "Pinterest")),
    Ratio("2:3", 2, 3, "portrait", ("poster", "book cover")),
    Ratio("9:16", 9, 16, "portrait", ("story / reel", "phone wallpaper")),
    Ratio("2:1", 2, 1, "wide", ("email header", "Twitter/X header")),
    Ratio("21:9", 21, 9, "wide", ("web banner", "cinema")),
    Ratio("3:1", 3, 1, "wide", ("LinkedIn banner", "leaderboard"), not_at=("2K", "4K")),
    Ratio("1:2", 1, 2, "tall", ("skyscraper ad",)),
    Ratio("9:21", 9, 21, "tall", ("tall banner",), not_at=("2K", "4K")),
    Ratio("1:3", 1, 3, "tall", ("roll-up banner", "side skyscraper"), not_at=("2K", "4K")),
)

RATIOS: dict[str, Ratio] = {r.name: r for r in _TABLE}
RATIO_NAMES: tuple[str, ...] = tuple(RATIOS)
GROUPS: tuple[str, ...] = ("square", "landscape", "portrait", "wide", "tall")


def _round16(x: float) -> int:
    return max(SIDE_STEP, int(round(x / SIDE_STEP)) * SIDE_STEP)


def _compute(ratio: Ratio, resolution: str) -> tuple[int, int]:
    # Work in landscape orientation and swap at the end, so 4:5 mirrors 5:4.
    a, b = max(ratio.width, ratio.height), min(ratio.width, ratio.height)
    if resolution == "1K":
        long, short = 1024 * a / b, 1024.0
    else:
        long = 2048.0 if resolution == "2K" else float(MAX_LONG_EDGE)
        one_k_long = 1024 * a / b
        if resolution == "2K" and one_k_long >= long:
            # Very wide ratios: the literal rule would make 2K no bigger than 1K.
            long = min(float(MAX_LONG_EDGE), one_k_long * 1.25)
        short = long * b / a
    L, S = _round16(long), _round16(short)
    if L * S > MAX_PIXELS:  # shrink both sides, rounding down to stay in budget
        S = int(short * math.sqrt(MAX_PIXELS / (long * short))) // SIDE_STEP * SIDE_STEP
        L = _round16(S * a / b)
        while L * S > MAX_PIXELS:
            S -= SIDE_STEP
            L = _round16(S * a / b)
    return (L, S) if ratio.width >= ratio.height else (S, L)


# Precomputed: (ratio name, resolution) -> (width, height)
PIXEL_SIZES: dict[tuple[str, str], tuple[int, int]] = {
    (r.name, res): _compute(r, res) for r in _TABLE for res in RESOLUTIONS
}


def pixel_size(ratio: str, resolution: str) -> tuple[int, int]:
    """Approximate (width, height) in pixels; KeyError for unknown values."""
    return PIXEL_SIZES[(ratio, resolution)]


def size_label(ratio: str, resolution: str) -> str:
    w, h = pixel_size(ratio, resolution)
    return f"≈{w}×{h}"


def offered_resolutions(
    ratio: str, *, image_to_image: bool = False, route: str | None = None
) -> tuple[str, ...]:
    """The resolutions HiAPI accepts for `ratio` on this model and route; KeyError for an unknown ratio."""
    row = RATIOS[ratio]
    if route == EXT_ROUTE:
        return RESOLUTIONS
    refused = set(row.not_at) | (set() if image_to_image else set(row.not_at_text_to_image))
    return tuple(res for res in RESOLUTIONS if res not in refused)


def combination_problem(
    ratio: str, resolution: str, *, image_to_image: bool = False, route: str | None = None
) -> str | None:
    """Why HiAPI rejects this ratio/resolution pair, or None if it accepts it.

    HiAPI's current limits (the default route): `auto` only at 1K; 2K never for
    5:4, 4:5, 3:1, 1:3, 9:21; 4K never for 3:1, 1:3, 9:21, nor for 1:1 on
    text-to-image (`image_to_image=True` allows 1:1 at 4K). On `route="ext"`
    every pair is accepted. Unknown ratios or resolutions are not this
    function's business (None): validation names them.
    """
    if ratio not in RATIOS or resolution not in RESOLUTIONS or route == EXT_ROUTE:
        return None
    offered = offered_resolutions(ratio, image_to_image=image_to_image)
    if resolution in offered:
        return None
    choices = " or ".join(offered)
    if ratio == "auto":
        return f"Aspect ratio 'auto' works only with 1K; pick a fixed ratio for {resolution}."
    if resolution in RATIOS[ratio].not_at_text_to_image and resolution not in RATIOS[ratio].not_at:
        return f"Aspect ratio '{ratio}' is not available at {resolution} for text-to-image; choose {choices}."
    return f"Aspect ratio '{ratio}' is not available at {resolution} on HiAPI; choose {choices}."


def limits_summary() -> str:
    """One line stating today's limits, built from the table (for help texts)."""
    parts = []
    for res in RESOLUTIONS:
        refused = [r.name for r in _TABLE if res in r.not_at and r.name != "auto"]
        if refused:
            parts.append(f"no {res} for " + ", ".join(refused))
    squares = [r.name for r in _TABLE if r.not_at_text_to_image]
    text_only = "; ".join(
        f"no {res} for {name} without a reference image"
        for name in squares
        for res in RATIOS[name].not_at_text_to_image
    )
    return "'auto' needs 1K; " + "; ".join(parts) + ("; " + text_only if text_only else "") + "."
