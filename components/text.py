"""Showing text that came from outside (HiAPI's messages, names people typed) inside markdown.

`st.error`, `st.caption` and friends render markdown, so a message holding
`[a link](https://…)`, an image, `**emphasis**`, `$maths$` or HTML would be
interpreted. `literal` backslash-escapes every markdown punctuation mark, so
the text shows exactly as it was received. (Prompts are never put in markdown
at all: they are shown with st.text or st.code.)
"""

from __future__ import annotations

import re

_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:&=\"'])")


def literal(text: object) -> str:
    """`text` escaped for markdown, newlines kept as spaces."""
    s = " ".join(str(text).split())
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", s)
