"""The exact strings a prompt asks to see in the picture: its quoted parts.

One module for the whole studio: the simulator draws these as the headline
and the text-fidelity check reads them back from every image, so both always
agree on what "the wanted text" of a prompt is. `wanted_strings` is the rule
both the checker and the store use to decide that a prompt has text to check;
`fold` is how a string is compared (see `studio.fidelity`).
"""

from __future__ import annotations

import re
import unicodedata

# OCR confusions in sans-serif fonts that are never a designer-visible misspelling.
CONFUSABLE = str.maketrans({"0": "o", "1": "l", "|": "l"})

# Text inside "double", 'single', “curly double”, ‘curly single’ or «guillemet» quotes.
# A single quote only opens after a non-word character and only closes before one,
# so apostrophes ("don't", "Bob's") are not taken for quotes.
_QUOTE_RE = re.compile(
    r'"(?P<d>[^"\n]+?)"'
    r"|“(?P<c>[^”\n]+?)”"
    r"|(?<!\w)‘(?P<cs>[^\n]+?)’(?!\w)"
    r"|«(?P<g>[^»\n]+?)»"
    r"|(?<!\w)'(?P<s>[^\n]+?)'(?!\w)"
)


def quoted_parts(text: str) -> list[str]:
    """The quoted pieces of `text`, in order, stripped; empty ones dropped.

    `'Poster "SUMMER DROP" with 'New arrivals''` -> `["SUMMER DROP", "New arrivals"]`;
    apostrophes inside words never open or close a quote.
    """
    out: list[str] = []
    for m in _QUOTE_RE.finditer(text):
        part = next(g for g in m.groups() if g is not None).strip()
        if part:
            out.append(part)
    return out


def fold(text: str) -> tuple[str, list[int]]:
    """`text` folded for comparison, plus each kept character's index in `text`.

    NFKC and case-folding are applied per character so the index map stays
    exact; characters that fold to several (e.g. "ß" -> "ss") map to one index.
    """
    out: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        for c in unicodedata.normalize("NFKC", ch).casefold().translate(CONFUSABLE):
            if c.isalnum():
                out.append(c)
                where.append(i)
    return "".join(out), where


def wanted_strings(prompt: str) -> list[str]:
    """The prompt's quoted parts that have something to check (letters or digits), deduplicated."""
    out: list[str] = []
    seen: set[str] = set()
    for part in quoted_parts(prompt):
        key = fold(part)[0]
        if key and key not in seen:
            seen.add(key)
            out.append(part)
    return out
