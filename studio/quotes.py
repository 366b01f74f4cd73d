"""The exact strings a prompt asks to see in the picture: its quoted parts.

One function for the whole studio: the simulator draws these as the headline
and the text-fidelity check reads them back from every image, so both always
agree on what "the wanted text" of a prompt is.
"""

from __future__ import annotations

import re

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
