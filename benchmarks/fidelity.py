"""Text-fidelity check: accuracy and time per image on rendered samples.

    python -m benchmarks.fidelity            # 96 samples, each right and misspelled, plus simulator renders
    python -m benchmarks.fidelity --quick    # a smoke run (24 samples)
    python -m benchmarks.fidelity --samples 200 --seed 7 --show-misses

Every sample is a picture drawn here with Pillow: one wanted string in a font,
size, colour pair and background drawn deterministically from the seed. Each
is rendered twice, as asked and misspelled (a dropped vowel, two swapped
letters, one wrong letter or a doubled letter), and put through the studio's
real check (`studio.fidelity.check_image` with Tesseract). A right render
should pass (✓), a misspelled one must be caught (✗). The simulator's own
renders (every ratio at 1K, correct and `[sim:misspell]`) are a second set.

Printed: accuracy overall, the pass rate on right renders (false alarms are
the rest), the catch rate on misspelled ones, both broken down by size,
colour, background and font, and seconds per image (mean, p50, p95, max)
for right and misspelled renders separately: a right render usually stops
after its first OCR pass, a misspelled one runs every pass.

`run(quick)` returns the headline figures as `benchmarks.common.Row`s, so the
suite runner can include this section.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from studio.fidelity import TesseractReader, check_image, wanted_strings
from studio.ratios import RATIO_NAMES, pixel_size
from studio.simulator import misspell, render_image

TEXTS = (
    "SUMMER DROP",
    "New arrivals",
    "Grand Opening",
    "50% OFF TODAY",
    "Flat white 3.50",
    "The Quiet Harbour",
    "Open late",
    "FRESH BREAD DAILY",
    "Midnight Jazz Club",
    "Limited edition",
    "Free delivery",
    "WINTER SALE",
)
FONT_DIR = "/usr/share/fonts/truetype"
FONTS = {
    "DejaVu Sans Bold": f"{FONT_DIR}/dejavu/DejaVuSans-Bold.ttf",
    "DejaVu Serif": f"{FONT_DIR}/dejavu/DejaVuSerif.ttf",
    "Liberation Sans": f"{FONT_DIR}/liberation/LiberationSans-Regular.ttf",
    "Liberation Serif Italic": f"{FONT_DIR}/liberation/LiberationSerif-Italic.ttf",
    "Liberation Mono": f"{FONT_DIR}/liberation/LiberationMono-Regular.ttf",
    "DejaVu Condensed Bold": f"{FONT_DIR}/dejavu/DejaVuSansCondensed-Bold.ttf",
}
# Cap height of the text as a share of the canvas height (1024 px canvases).
SIZES = {"small 24px": 24, "medium 48px": 48, "large 110px": 110, "huge 200px": 200}
COLOURS = {
    "black on white": ((20, 20, 20), (250, 250, 248)),
    "white on dark": ((255, 255, 255), (28, 30, 46)),
    "red on cream": ((190, 30, 40), (246, 236, 214)),
    "yellow on blue": ((250, 214, 60), (30, 60, 140)),
    "low contrast": ((95, 95, 105), (165, 165, 172)),
}
BACKGROUNDS = ("flat", "gradient", "shapes", "texture")
CANVASES = ((1024, 1024), (1824, 1024), (1024, 1536))


def _wrong_letter(text: str, rng: random.Random) -> str:
    idx = [i for i, c in enumerate(text) if c.isalpha()]
    i = rng.choice(idx[1:] or idx)
    pool = "BCDFGHKMNPRSTVWXZ" if text[i].isupper() else "bcdfghkmnprstvwxz"
    c = rng.choice([p for p in pool if p.lower() != text[i].lower()])
    return text[:i] + c + text[i + 1 :]


def _swap(text: str, rng: random.Random) -> str:
    pairs = [i for i in range(len(text) - 1) if text[i].isalpha() and text[i + 1].isalpha()]
    pairs = [i for i in pairs if text[i].lower() != text[i + 1].lower()]
    i = rng.choice(pairs)
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


def _double(text: str, rng: random.Random) -> str:
    idx = [i for i, c in enumerate(text) if c.isalpha()]
    i = rng.choice(idx)
    return text[: i + 1] + text[i] + text[i + 1 :]


MISSPELLINGS: dict[str, Callable[[str, random.Random], str]] = {
    "dropped vowel": lambda t, _rng: misspell(t),
    "swapped letters": _swap,
    "wrong letter": _wrong_letter,
    "doubled letter": _double,
}


@dataclass(frozen=True)
class Sample:
    text: str
    font: str
    size: str
    colour: str
    background: str
    canvas: tuple[int, int]
    misspelling: str
    seed: int

    def render(self, misspelled: bool) -> tuple[Image.Image, str]:
        """The picture and the text actually drawn in it."""
        rng = random.Random(self.seed)
        shown = (
            MISSPELLINGS[self.misspelling](self.text, random.Random(self.seed + 1))
            if misspelled
            else self.text
        )
        fg, bg = COLOURS[self.colour]
        w, h = self.canvas
        img = _background(self.background, (w, h), bg, rng)
        draw = ImageDraw.Draw(img)
        px = SIZES[self.size]
        font = ImageFont.truetype(FONTS[self.font], px)
        # Shrink to fit the width, as a designer would.
        while font.getlength(shown) > w * 0.9 and px > 10:
            px = int(px * 0.9)
            font = ImageFont.truetype(FONTS[self.font], px)
        x = rng.uniform(0.05 * w, max(0.05 * w, w * 0.95 - font.getlength(shown)))
        y = rng.uniform(0.1 * h, 0.85 * h)
        draw.text((x, y), shown, font=font, fill=fg)
        # A little other text, as real posters have: the check must find the wanted one among it.
        small = ImageFont.truetype(FONTS["Liberation Sans"], 18)
        draw.text((0.05 * w, 0.95 * h), "www.example.com · terms apply", font=small, fill=fg)
        return img, shown


def _background(
    kind: str, size: tuple[int, int], bg: tuple[int, int, int], rng: random.Random
) -> Image.Image:
    w, h = size
    if kind == "flat":
        return Image.new("RGB", size, bg)
    if kind == "gradient":
        other = tuple(max(0, min(255, c + rng.choice((-50, 50)))) for c in bg)
        strip = Image.new("RGB", (1, 256))
        strip.putdata(
            [tuple(int(bg[c] + (other[c] - bg[c]) * y / 255) for c in range(3)) for y in range(256)]
        )
        return strip.resize(size, Image.Resampling.BILINEAR)
    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    if kind == "shapes":
        for _ in range(8):
            r = rng.uniform(0.05, 0.3) * min(w, h)
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            tint = tuple(max(0, min(255, c + rng.randint(-40, 40))) for c in bg)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tint)
        return img
    # texture: coarse noise, blurred, like a photo's grain and soft detail
    small = (w // 8, h // 8)
    grain = bytes(max(0, min(255, int(rng.gauss(128, 40)))) for _ in range(small[0] * small[1]))
    noise = Image.frombytes("L", small, grain).resize(size, Image.Resampling.BICUBIC)
    noise = noise.filter(ImageFilter.GaussianBlur(2))
    return Image.blend(img, Image.merge("RGB", (noise, noise, noise)), 0.25)


def samples(n: int, seed: int) -> list[Sample]:
    """`n` samples covering every font, size, colour and background evenly, in a seeded order."""
    rng = random.Random(seed)
    out = []
    kinds = list(MISSPELLINGS)
    fonts, sizes, colours = list(FONTS), list(SIZES), list(COLOURS)
    for i in range(n):
        out.append(
            Sample(
                text=TEXTS[i % len(TEXTS)],
                font=fonts[i % len(fonts)],
                size=sizes[(i // len(fonts)) % len(sizes)],
                colour=colours[(i // 3) % len(colours)],
                background=BACKGROUNDS[(i // 2) % len(BACKGROUNDS)],
                canvas=CANVASES[i % len(CANVASES)],
                misspelling=kinds[(i // 5) % len(kinds)],
                seed=rng.randrange(1 << 30),
            )
        )
    return out


@dataclass
class Result:
    group: dict[str, str]
    misspelled: bool
    correct: bool  # the verdict was right: ✓ for a right render, ✗ for a misspelled one
    seconds: float
    passes: int
    detail: str


def _check(img: Image.Image, wanted: list[str], reader: TesseractReader) -> tuple[bool, float, int, str]:
    report = check_image(img, wanted, reader)
    detail = "; ".join(f"{c.wanted!r} read {c.read!r} ({c.similarity:.2f})" for c in report.checks)
    return report.state == "pass", report.seconds, report.passes, detail


def measure(n: int, seed: int, reader: TesseractReader, progress: bool = True) -> list[Result]:
    results: list[Result] = []
    todo = samples(n, seed)
    for k, s in enumerate(todo):
        for misspelled in (False, True):
            img, shown = s.render(misspelled)
            ok, secs, passes, detail = _check(img, [s.text], reader)
            group = {
                "set": "drawn samples",
                "size": s.size,
                "colour": s.colour,
                "background": s.background,
                "font": s.font,
                "misspelling": s.misspelling if misspelled else "—",
            }
            results.append(
                Result(group, misspelled, ok != misspelled, secs, passes, f"drew {shown!r}: {detail}")
            )
        if progress:
            print(f"\r  drawn samples {k + 1}/{len(todo)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    prompt = "Poster with the headline \"SUMMER DROP\" and 'New arrivals'"
    for ratio in RATIO_NAMES[1:]:
        for misspelled in (False, True):
            img = render_image(prompt, ratio, "1K", misspelled=misspelled)
            ok, secs, passes, detail = _check(img, wanted_strings(prompt), reader)
            w, h = pixel_size(ratio, "1K")
            group = {"set": "simulator renders", "size": f"{ratio} {w}×{h}"}
            results.append(Result(group, misspelled, ok != misspelled, secs, passes, detail))
    return results


def _rate(rs: list[Result]) -> str:
    return (
        f"{sum(r.correct for r in rs)}/{len(rs)} ({100 * sum(r.correct for r in rs) / len(rs):.0f} %)"
        if rs
        else "—"
    )


def _secs(rs: list[Result]) -> str:
    t = sorted(r.seconds for r in rs)
    if not t:
        return "—"
    p = lambda q: t[min(len(t) - 1, round(q * (len(t) - 1)))]  # noqa: E731
    return f"mean {statistics.fmean(t):.2f} s · p50 {p(0.5):.2f} s · p95 {p(0.95):.2f} s · max {t[-1]:.2f} s"


def report(results: list[Result], reader: TesseractReader, show_misses: bool) -> str:
    lines = [f"Text-fidelity check ({reader.label}), {len(results)} images", ""]
    for set_name in ("drawn samples", "simulator renders"):
        rs = [r for r in results if r.group["set"] == set_name]
        right = [r for r in rs if not r.misspelled]
        wrong = [r for r in rs if r.misspelled]
        lines += [
            f"## {set_name}",
            f"accuracy              {_rate(rs)}",
            f"✓ on right renders    {_rate(right)}   (the rest are false alarms)",
            f"✗ on misspelled       {_rate(wrong)}   (caught)",
            f"time, right renders   {_secs(right)}   (mean {statistics.fmean(r.passes for r in right):.1f} OCR passes)",
            f"time, misspelled      {_secs(wrong)}   (mean {statistics.fmean(r.passes for r in wrong):.1f} OCR passes)",
            "",
        ]
        keys = (
            ("size", "colour", "background", "font", "misspelling")
            if set_name == "drawn samples"
            else ("size",)
        )
        for key in keys:
            groups: dict[str, list[Result]] = defaultdict(list)
            for r in rs:
                groups[r.group[key]].append(r)
            lines.append(f"by {key}:")
            for name, g in sorted(groups.items()):
                if name == "—":
                    continue
                gr = [r for r in g if not r.misspelled]
                gw = [r for r in g if r.misspelled]
                lines.append(f"  {name:<26} ✓ {_rate(gr):<16} ✗ {_rate(gw):<16} {_secs(g)}")
            lines.append("")
    if show_misses:
        lines.append("## wrong verdicts")
        for r in results:
            if not r.correct:
                kind = "missed misspelling" if r.misspelled else "false alarm"
                lines.append(f"- {kind} [{', '.join(f'{v}' for v in r.group.values())}]: {r.detail}")
    return "\n".join(lines)


def run(quick: bool = False) -> list:
    """Headline figures as rows for `python -m benchmarks` (see benchmarks/common.py)."""
    from benchmarks.common import Row

    reader = TesseractReader()
    if not reader.available():
        raise RuntimeError("tesseract is not installed: apt-get install tesseract-ocr")
    results = measure(24 if quick else 96, 1, reader, progress=False)
    right = [r for r in results if not r.misspelled]
    wrong = [r for r in results if r.misspelled]
    times = [r.seconds for r in results]
    acc = 100 * sum(r.correct for r in results) / len(results)
    return [
        Row("fidelity", "verdicts right (all renders)", acc, "%", target="≥ 95 %", met=acc >= 95),
        Row("fidelity", "✓ on right renders", 100 * sum(r.correct for r in right) / len(right), "%"),
        Row("fidelity", "misspellings caught", 100 * sum(r.correct for r in wrong) / len(wrong), "%"),
        Row("fidelity", "seconds per image (mean)", statistics.fmean(times), "s"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fidelity", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--samples", type=int, default=96, help="drawn samples (each rendered twice)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="24 samples: a smoke run")
    parser.add_argument(
        "--show-misses", action="store_true", help="list every wrong verdict with what was read"
    )
    args = parser.parse_args(argv)
    reader = TesseractReader()
    if not reader.available():
        print("tesseract is not installed: apt-get install tesseract-ocr (make run does)", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    results = measure(24 if args.quick else args.samples, args.seed, reader)
    print(report(results, reader, args.show_misses))
    print(f"\n{time.monotonic() - t0:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
