"""The components' browser code, read once: each component's JS with the shared module in front.

Components v2 take a component's JavaScript as one inline string, run by the
browser as an ES module from a blob URL, so a component cannot import a
sibling file by a relative path. The push-channel code every live component
shares (`frontend/feed.js`: connect, reconnect, catch up when the tab wakes,
one fetch at a time) is therefore put in front of each component's own file
here, and each component registers `script(name)`.
"""

from __future__ import annotations

from pathlib import Path

FRONTEND = Path(__file__).parent / "frontend"
SHARED = ("feed.js",)


def _read(name: str) -> str:
    return (FRONTEND / name).read_text(encoding="utf-8")


def script(name: str) -> str:
    """`name`'s JavaScript (a file in components/frontend/) preceded by the shared modules."""
    return "\n".join([*(_read(s) for s in SHARED), _read(name)])


def style(name: str) -> str:
    return _read(name)
