"""Text-fidelity widgets: ✓ / ✗ per wanted string, with what the image actually shows."""

from __future__ import annotations

import streamlit as st

from components.text import literal
from studio.fidelity import ERROR, MISMATCH, PASS, UNAVAILABLE, wanted_strings
from studio.records import TextCheck


def passes_label(n: int) -> str:
    """'1 pass', '3 passes'."""
    return f"{n} pass{'' if n == 1 else 'es'}"


def md(text: str) -> str:
    """User or OCR text made literal inside markdown (no links, colours or icons)."""
    return literal(text)  # also breaks bare URLs and e-mail addresses, which markdown would link


def badge(check: TextCheck | None) -> None:
    """The small chip a gallery card shows; nothing for images without quoted text."""
    if check is None:
        return
    if check.state == PASS:
        st.badge("Text ✓", color="green", help="Every quoted string reads right.")
    elif check.state == MISMATCH:
        st.badge(
            f"Text ✗ {check.matched}/{len(check.checks)}",
            color="red",
            help="A quoted string is missing or misspelled: open the image.",
        )
    else:
        st.badge("Text ?", color="gray", help="The text could not be checked.")


def text_check(prompt: str, check: TextCheck | None, *, key: str, detail: bool = False) -> None:
    """One line per wanted string: ✓ or ✗, and for a ✗ what was read instead.

    `detail` (the lightbox) adds the engine, the time taken and everything read.
    """
    with st.container(key=key, gap="small"):
        _text_check(prompt, check, detail)


def _text_check(prompt: str, check: TextCheck | None, detail: bool) -> None:
    wanted = wanted_strings(prompt)
    if not wanted:
        if detail:
            st.caption("No quoted text in the prompt, so there is no text to check.")
        return
    if check is None:
        st.caption(":material/hourglass_top: Checking the text…")
        return
    if check.state == UNAVAILABLE:
        st.caption(":material/visibility_off: OCR unavailable: the text was not checked.")
        if detail and check.message:
            st.caption(md(check.message))
        return
    if check.state == ERROR:
        st.caption(f":material/warning: Text check failed: {md(check.message or 'unknown error')}")
        return
    for c in check.checks:
        if c.matched:
            st.markdown(f":green[**✓**] {md(c.wanted)}")
        else:
            st.markdown(f":red[**✗**] {md(c.wanted)}")
            if c.read:
                st.caption(f"read “{md(c.read)}” · {100 * c.similarity:.0f} % alike")
            else:
                st.caption("not found in the image")
    if detail:
        st.caption(f"Read by {md(check.engine)} in {check.seconds:.1f} s ({passes_label(check.passes)})")
        if check.read_text.strip():
            with st.expander("Everything read from the image", icon=":material/text_fields:"):
                st.code(check.read_text.strip(), language=None, wrap_lines=True)
