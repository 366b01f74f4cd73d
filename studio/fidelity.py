"""Text fidelity: does the image show the exact text the prompt asked for?

The wanted strings are the prompt's quoted parts (`studio.quotes`). Each kept
image is read with Tesseract (Debian's `tesseract-ocr`, through `pytesseract`)
and every wanted string is looked for in what was read.

Matching contract (`match_text`):
- Both sides are folded first: Unicode NFKC, case-folded, and only letters and
  digits kept, so case, whitespace, line breaks and punctuation never matter
  ("SUMMER DROP" matches "Summer\\ndrop!"). Glyphs OCR cannot tell apart in
  common sans fonts are folded together: `0`/`o`, and `1`/`i`/`l`/`|`.
- The wanted string is aligned against the best-matching stretch of the read
  text (edit distance with free start and end in the read text), so other text
  around it never lowers the score; the stretch is then widened to whole words,
  so an extra letter glued to the start or end ("SSUMMER") still counts.
  `similarity = 1 - distance / len(wanted)`.
- Stray strokes are forgiven between words: OCR reads the edge of a shape or
  a rule as `|`, `!`, `I`, `l`, `1` or a box-drawing glyph. When the reading as
  it is does not match, it is matched again with every whitespace-separated
  token made only of such strokes removed, and with `|`-like glyphs glued to
  the start or end of a word or between two capitals removed ("FRESH | BREAD",
  "FRESH| BREAD" and "FRESH|BREAD" match "FRESH BREAD"). Inside a lower-case
  word a `|` still counts as an `l` ("Dai|y" is "Daily"), and the
  wanted string is never changed, so no letter of it can go missing unseen.
- A string matches only when `similarity >= threshold` (default 1.0: every
  letter right). A misspelling of one letter is exactly what the check exists
  to catch, so there is no "close enough" by default.

Reading contract (`TesseractReader`): several passes over differently prepared
copies of the image (grey, inverted, binarised, halved); a string counts as
matched when any pass reads it exactly. A correct render needs one good
reading, while a misspelled one cannot be read correctly by any pass, so extra
passes lower false alarms without hiding misspellings. Passes stop as soon as
every wanted string matched. When the `tesseract` binary (or pytesseract) is
missing, the reader reports itself unavailable and checks end in the
`unavailable` state instead of failing.

`FidelityChecker` runs checks off the page thread: the tracker hands it each
kept output (`submit`), one worker thread reads images one at a time (OCR is
CPU-bound; two cores are shared with the server) and the result is written
to the store. `backfill()` queues kept images that were never checked (a
crash, or images older than this feature). Nothing here imports streamlit.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from PIL import Image, ImageOps

from .quotes import fold, wanted_strings  # re-exported: fold and wanted_strings lived here
from .records import FidelityReport, StringCheck, TextCheckState  # re-exported: the checker's vocabulary
from .repositories import TextCheckRepository

log = logging.getLogger("studio.fidelity")

# Check states, as stored.
PASS = TextCheckState.PASS
MISMATCH = TextCheckState.MISMATCH
UNAVAILABLE = TextCheckState.UNAVAILABLE
ERROR = TextCheckState.ERROR
STATES = tuple(TextCheckState)

DEFAULT_THRESHOLD = 1.0
#: The backfill's lease (a named lease in the store): one process reads old images at a time.
BACKFILL_LEASE = "text-check-backfill"
BACKFILL_LEASE_S = 900.0
# Below this a "closest reading" is noise, not a misspelling: show "not found" instead.
SHOWN_SIMILARITY = 0.5

# What the edge of a shape, a rule or a panel reads as. A token made only of
# these (between spaces) is a stroke, not a word; `_BARS` glued to a word's
# start or end are strokes too (inside a word `|` is an `l`).
_STROKE_CHARS = "|¦‖ǀIl1!i[](){}/\\:;.,'`\"_~=+*-–—•·" + "".join(map(chr, range(0x2500, 0x25A0)))
_BARS = "|¦‖ǀ" + "".join(map(chr, range(0x2500, 0x2580)))
_STROKE_TOKEN = re.compile(f"(?<!\\S)[{re.escape(_STROKE_CHARS)}]+(?!\\S)")
_GLUED_BARS = re.compile(f"(?<!\\S)[{re.escape(_BARS)}]+|[{re.escape(_BARS)}]+(?!\\S)")
# Between two capitals a bar is a stroke too: an "L" in capitals never reads as "|".
_BAR_IN_CAPITALS = re.compile(f"(?<=[A-Z])[{re.escape(_BARS)}]+(?=[A-Z])")


# --------------------------------------------------------------------- matching


def _closest(wanted: str, read: str) -> tuple[int, int, int]:
    """(distance, start, end) of the stretch of `read` closest to `wanted` (both folded).

    Edit distance where skipping text before and after the stretch is free
    (Sellers' algorithm); start/end index into `read`.
    """
    m, n = len(wanted), len(read)
    if m == 0:
        return 0, 0, 0
    if n == 0:
        return m, 0, 0
    exact = read.find(wanted)
    if exact >= 0:  # the common case for a right render: no table to fill
        return 0, exact, exact + m
    prev = [0] * (n + 1)  # row 0: an empty prefix of `wanted` matches anywhere for free
    prev_start = list(range(n + 1))
    for i in range(1, m + 1):
        cur = [i] + [0] * n
        cur_start = [0] * (n + 1)
        wc = wanted[i - 1]
        for j in range(1, n + 1):
            sub = prev[j - 1] + (wc != read[j - 1])
            dele = prev[j] + 1  # a wanted character missing from the image
            ins = cur[j - 1] + 1  # an extra character in the image
            best = min(sub, dele, ins)
            cur[j] = best
            if best == sub:
                cur_start[j] = prev_start[j - 1]
            elif best == dele:
                cur_start[j] = prev_start[j]
            else:
                cur_start[j] = cur_start[j - 1]
        prev, prev_start = cur, cur_start
    end = min(range(n + 1), key=lambda j: (prev[j], -j))
    start = prev_start[end] if end else 0
    return prev[end], start, end


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def without_strokes(read: str) -> str:
    """`read` without stray strokes: stroke-only tokens and bars glued to a word's ends."""
    return _BAR_IN_CAPITALS.sub(" ", _GLUED_BARS.sub("", _STROKE_TOKEN.sub(" ", read)))


def match_text(wanted: str, read: str, threshold: float = DEFAULT_THRESHOLD) -> StringCheck:
    """Compare one wanted string with everything read from an image (see the module contract)."""
    c = _match(wanted, read, threshold)
    if c.matched:
        return c
    cleaned = without_strokes(read)
    if cleaned == read:
        return c
    d = _match(wanted, cleaned, threshold)
    return d if d.similarity > c.similarity else c


def _match(wanted: str, read: str, threshold: float) -> StringCheck:
    fw, _ = fold(wanted)
    fr, where = fold(read)
    if not fw:
        # Nothing checkable (only punctuation or symbols): never a false alarm.
        return StringCheck(wanted, "", 1.0, True)
    dist, start, end = _closest(fw, fr)
    shown = ""
    if end > start:
        # Whole words only: a stretch glued to more letters ("SSUMMER" for "SUMMER")
        # is compared with the whole word it sits in, so an extra first or last
        # letter is a misspelling, not a free skip.
        a, b = where[start], where[end - 1] + 1
        while a > 0 and read[a - 1].isalnum():
            a -= 1
        while b < len(read) and read[b].isalnum():
            b += 1
        if (a, b) != (where[start], where[end - 1] + 1):
            dist = _levenshtein(fw, fold(read[a:b])[0])
        shown = " ".join(read[a:b].split())
    similarity = max(0.0, 1.0 - dist / len(fw))
    if similarity < SHOWN_SIMILARITY:
        shown = ""
    return StringCheck(wanted, shown, round(similarity, 4), similarity >= threshold)


# ---------------------------------------------------------------------- reading


class TextReader(Protocol):
    """Something that reads text from an image, one preparation at a time."""

    name: str

    def available(self) -> bool: ...

    def passes(self, image: Image.Image) -> Iterator[str]: ...


def _grey(image: Image.Image) -> Image.Image:
    return ImageOps.grayscale(image if image.mode in ("RGB", "L") else image.convert("RGB"))


def _at_long_edge(grey: Image.Image, long_edge: int) -> Image.Image:
    scale = long_edge / max(grey.size)
    size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
    return grey if size == grey.size else grey.resize(size, Image.Resampling.LANCZOS)


def _binarised(grey: Image.Image) -> Image.Image:
    # Otsu's threshold on the histogram: text and background split cleanly even on gradients.
    hist = grey.histogram()
    total = sum(hist)
    sum_all = sum(i * h for i, h in enumerate(hist))
    best_t, best_var, w0, sum0 = 128, -1.0, 0, 0.0
    for t in range(256):
        w0 += hist[t]
        if w0 == 0 or w0 == total:
            continue
        sum0 += t * hist[t]
        w1 = total - w0
        m0, m1 = sum0 / w0, (sum_all - sum0) / w1
        var = w0 * w1 * (m0 - m1) ** 2
        if var > best_var:
            best_t, best_var = t, var
    return grey.point(lambda v: 255 if v > best_t else 0)


# (long edge in px, preparation, Tesseract page-segmentation mode), cheapest and
# most often right first. Chosen on rendered samples (benchmarks/fidelity.py,
# tuned on another seed than the one it reports): headlines read best with the
# image brought down to 800 px as sparse text (psm 11), uniform blocks at
# 1280 px (psm 6), small print at 2048 px with automatic layout (psm 3), and
# low-contrast or coloured text after Otsu binarisation.
READ_PASSES: tuple[tuple[int, str, int], ...] = (
    (800, "grey", 11),
    (1280, "grey", 6),
    (2048, "grey", 3),
    (1280, "binary", 11),
)


class TesseractReader:
    """Tesseract through pytesseract; `available()` is False when either is missing."""

    name = "tesseract"

    def __init__(self, lang: str = "eng", cmd: str | None = None, timeout_s: float = 60.0) -> None:
        self.lang = lang
        self.cmd = cmd
        self.timeout_s = timeout_s
        self._version: str | None = None
        self._checked = False
        self._lock = threading.Lock()
        # One OpenMP thread per run (measured ~3x faster here): on two shared
        # cores, Tesseract's threads only get in each other's way. pytesseract
        # passes os.environ to the binary; an operator's own setting wins.
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")

    def _pytesseract(self) -> Any:
        import pytesseract

        # pytesseract keeps the binary's path in a module global: set it on every
        # use so one reader's `cmd` never leaks into another's.
        pytesseract.pytesseract.tesseract_cmd = self.cmd or "tesseract"
        return pytesseract

    def available(self) -> bool:
        """True when the binary runs (looked up once, then remembered)."""
        with self._lock:
            if not self._checked:
                self._checked = True
                try:
                    self._version = str(self._pytesseract().get_tesseract_version())
                except Exception as exc:  # ImportError, TesseractNotFoundError, OSError...
                    log.warning("OCR unavailable: %s", exc)
                    self._version = None
            return self._version is not None

    @property
    def version(self) -> str | None:
        self.available()
        return self._version

    @property
    def label(self) -> str:
        return f"tesseract {self._version}" if self._version else "tesseract (missing)"

    def _read(self, image: Image.Image, psm: int) -> str:
        return self._pytesseract().image_to_string(
            image, lang=self.lang, config=f"--psm {psm}", timeout=self.timeout_s
        )

    def passes(self, image: Image.Image) -> Iterator[str]:
        """Text read from successive preparations of `image` (`READ_PASSES`); the caller stops early."""
        grey = _grey(image)
        for long_edge, prep, psm in READ_PASSES:
            prepared = _at_long_edge(grey, long_edge)
            if prep == "binary":
                prepared = _binarised(prepared)
            yield self._read(prepared, psm)


# ---------------------------------------------------------------------- checking


def _better(new: StringCheck, old: StringCheck) -> bool:
    """A closer reading wins; on a tie, the one split into words like the wanted string
    (OCR sometimes breaks a word apart: "SU MMR" is less likely what is printed than "SUMMR")."""
    if new.similarity != old.similarity:
        return new.similarity > old.similarity
    words = len(new.wanted.split())
    return abs(len(new.read.split()) - words) < abs(len(old.read.split()) - words)


def check_image(
    image: Image.Image | Path | str | BinaryIO,
    wanted: Sequence[str],
    reader: TextReader,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    max_passes: int | None = None,
) -> FidelityReport:
    """Read `image` and match every wanted string (see the module contract).

    Each string keeps its best reading over all passes; reading stops once all
    matched. Never raises for OCR trouble: that is the `error` state.
    """
    t0 = time.perf_counter()
    wanted = list(wanted)
    if not reader.available():
        return FidelityReport(
            UNAVAILABLE,
            tuple(StringCheck(w, "", 0.0, False) for w in wanted),
            "",
            reader.name,
            0.0,
            message="OCR unavailable: install Debian's tesseract-ocr (make run does) to check text.",
        )
    engine = getattr(reader, "label", reader.name)
    best: dict[int, StringCheck] = {}
    texts: list[str] = []
    n = 0
    try:
        with image if isinstance(image, Image.Image) else Image.open(image) as im:
            im.load()
            for text in reader.passes(im):
                n += 1
                texts.append(text)
                for i, w in enumerate(wanted):
                    if i in best and best[i].matched:
                        continue
                    c = match_text(w, text, threshold)
                    if i not in best or _better(c, best[i]):
                        best[i] = c
                if all(best[i].matched for i in range(len(wanted))) or (max_passes and n >= max_passes):
                    break
    except Exception as exc:
        log.warning("text check failed: %r", exc)
        return FidelityReport(
            ERROR,
            tuple(best.get(i, StringCheck(w, "", 0.0, False)) for i, w in enumerate(wanted)),
            "\n---\n".join(texts),
            engine,
            time.perf_counter() - t0,
            n,
            message=f"The text could not be read: {type(exc).__name__}.",
        )
    checks = tuple(best.get(i, StringCheck(w, "", 0.0, False)) for i, w in enumerate(wanted))
    state = PASS if all(c.matched for c in checks) else MISMATCH
    return FidelityReport(state, checks, "\n---\n".join(texts), engine, time.perf_counter() - t0, n)


class FidelityChecker:
    """Checks kept images in the background and records the result in the store.

    `submit(output_id)` is the tracker's hook (cheap, never blocks: it only
    queues); one worker thread does the reading; results go to a `TextCheckRepository`
    (the backfill's lease too); `open_image(sha256)` opens a kept image (without it
    nothing is checked).
    """

    def __init__(
        self,
        store: TextCheckRepository,
        reader: TextReader | None = None,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        on_checked: Callable[[int, FidelityReport], None] | None = None,
        open_image: Callable[[str], BinaryIO] | None = None,
    ) -> None:
        self.store = store
        # A kept image by its sha256 (`ImageKeeper.open_original`): the database keeps no paths.
        self.open_image = open_image
        self.reader = reader if reader is not None else TesseractReader()
        self.threshold = threshold
        self.on_checked = on_checked
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="text-check")
        self._lock = threading.Lock()
        self._queued: set[int] = set()
        self._closed = False
        self.checked = 0
        self.failures = 0

    def available(self) -> bool:
        return self.reader.available()

    def submit(self, output_id: int) -> bool:
        """Queue one kept output for checking; False when already queued or closed."""
        with self._lock:
            if self._closed or output_id in self._queued:
                return False
            self._queued.add(output_id)
        try:
            self._pool.submit(self._run, output_id)
        except RuntimeError:  # shut down meanwhile
            with self._lock:
                self._queued.discard(output_id)
            return False
        return True

    def backfill(self, limit: int = 500, *, holder: str | None = None, now: float | None = None) -> int:
        """Queue kept images with wanted text and no usable check yet; returns how many.

        Claimed: only the process holding the `text-check-backfill` lease runs
        it (0 otherwise), so two workers starting together never read the same
        images twice. The lease is let go once the queued checks are done, and
        lapses by itself after BACKFILL_LEASE_S if this process dies.
        """
        now = time.time() if now is None else now
        holder = holder or f"{os.getpid()}:{uuid.uuid4().hex[:8]}"
        if not self.store.take_lease(BACKFILL_LEASE, holder, BACKFILL_LEASE_S, now):
            return 0
        redo_unavailable = self.reader.available()
        n = 0
        try:
            for output_id in self.store.outputs_needing_text_check(
                redo_unavailable=redo_unavailable, limit=limit
            ):
                n += self.submit(output_id)
        finally:
            self._release_backfill(holder)
        return n

    def _release_backfill(self, holder: str) -> None:
        """Let the backfill lease go once the checks queued so far are done (off this thread)."""

        def release() -> None:
            self.store.release_lease(BACKFILL_LEASE, holder)

        try:
            self._pool.submit(release)  # one worker: runs after every check queued before it
        except RuntimeError:  # closed meanwhile: the lease lapses by itself
            pass

    def pending(self) -> int:
        with self._lock:
            return len(self._queued)

    def check_now(self, output_id: int) -> FidelityReport | None:
        """Check one output on this thread and record it; None when there is nothing to check."""
        found = self.store.text_check_candidate(output_id)
        if found is None:
            return None
        prompt, sha256 = found
        wanted = wanted_strings(prompt)
        if not wanted or self.open_image is None:
            return None
        try:
            image = self.open_image(sha256)
        except KeyError:  # BlobNotFound: deleted meanwhile
            return None
        with image:
            report = check_image(image, wanted, self.reader, threshold=self.threshold)
        self.store.record_text_check(output_id, report)
        return report

    def _run(self, output_id: int) -> None:
        try:
            report = self.check_now(output_id)
            self.checked += 1
            if report is not None and self.on_checked is not None:
                self.on_checked(output_id, report)
        except Exception as exc:  # a bad row must not stop the worker
            self.failures += 1
            log.warning("text check of output %s failed: %r", output_id, exc)
        finally:
            with self._lock:
                self._queued.discard(output_id)

    def close(self, wait: bool = True) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=wait, cancel_futures=True)
