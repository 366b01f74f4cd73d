"""The prompt editor: a large text area, a live character count and Ctrl/⌘+Enter to generate."""

from __future__ import annotations

import streamlit as st

from components import draft
from components.templates import TEMPLATES
from studio.validation import MAX_PROMPT_CHARS

# Runs in the page: updates the counter on every keystroke and maps
# Ctrl/⌘+Enter to the Generate button (after the text area has committed).
_EDITOR_JS = """
<script>
(function () {
  const win = window.parent || window;
  const doc = win.document;
  if (win.__studioEditorWired) return;
  win.__studioEditorWired = true;
  const LIMIT = __LIMIT__;
  const inEditor = (el) => el && el.tagName === "TEXTAREA" && el.closest(".st-key-prompt_editor");
  // Delegated listeners survive Streamlit re-rendering the text area.
  doc.addEventListener("input", (e) => {
    if (!inEditor(e.target)) return;
    const counter = doc.querySelector(".st-key-prompt_count p");
    if (!counter) return;
    const n = e.target.value.length;
    counter.textContent = n.toLocaleString("en-US") + " / " + LIMIT.toLocaleString("en-US") + " characters"
      + (n > LIMIT ? " — " + (n - LIMIT).toLocaleString("en-US") + " over the limit" : "");
    counter.style.color = n > LIMIT ? "#ff6b6b" : "";
  }, true);
  doc.addEventListener("keydown", (e) => {
    if (!inEditor(e.target) || e.key !== "Enter" || !(e.ctrlKey || e.metaKey)) return;
    e.preventDefault();
    e.target.blur();  // commits the text first
    setTimeout(() => {
      const btn = [...doc.querySelectorAll(".st-key-generate button")].find((b) => b.offsetParent !== null);
      if (btn && !btn.disabled) btn.click();
    }, 300);
  }, true);
})();
</script>
""".replace("__LIMIT__", str(MAX_PROMPT_CHARS))


def count_label(text: str) -> str:
    n = len(text)
    label = f"{n:,} / {MAX_PROMPT_CHARS:,} characters"
    if n > MAX_PROMPT_CHARS:
        label += f" — {n - MAX_PROMPT_CHARS:,} over the limit"
    return label


def template_row() -> None:
    st.caption("Start from an example")
    cols = st.columns(len(TEMPLATES))
    for col, t in zip(cols, TEMPLATES, strict=True):
        col.button(
            t.title,
            key=f"template_{t.key}",
            help=f"{t.use_case} · {', '.join(t.ratios)} at {t.resolution}",
            on_click=draft.load,
            args=(t.prompt, t.ratios, t.resolution),
            width="stretch",
        )


def prompt_editor(error: str | None = None) -> str:
    draft.init()
    st.text_area(
        "Prompt",
        key=draft.EDITOR_KEY,
        on_change=draft.sync_prompt,
        height=220,
        placeholder='Describe the image. Put exact text in quotes, e.g. a poster with the headline "SUMMER DROP".',
        help="Quoted text is what the image should spell. Ctrl/⌘+Enter generates.",
    )
    text = draft.prompt()
    with st.container(key="prompt_count"):
        st.caption(count_label(text))
    if error:
        st.error(error, icon=":material/error:")
    st.html(_EDITOR_JS, unsafe_allow_javascript=True)
    return text
