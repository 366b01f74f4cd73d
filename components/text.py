"""Showing text that came from outside (HiAPI's messages, names people typed) inside markdown.

`st.error`, `st.caption` and friends render markdown, so a message holding
`[a link](https://…)`, an image, `**emphasis**`, `$maths$` or HTML would be
interpreted. `literal` backslash-escapes every markdown punctuation mark and
breaks the spots where bare URLs and e-mail addresses would turn into links
(with an invisible zero-width space), so the text shows exactly as received
and nothing in it is clickable. (Prompts are never put in markdown at all:
they are shown with st.text or st.code.)
"""

from __future__ import annotations

import re

ZWSP = "\u200b"
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:&=\"'])")
_AUTOLINK = re.compile(r"(://|(?i:www)\.|@)")


def literal(text: object) -> str:
    """`text` escaped for markdown, newlines kept as spaces, no autolinks."""
    s = " ".join(str(text).split())
    s = _AUTOLINK.sub(lambda m: m.group(0)[:-1] + ZWSP + m.group(0)[-1], s)
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", s)
