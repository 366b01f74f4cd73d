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
  const doc = window.parent ? window.parent.document : document;
  const LIMIT = %d;
  function wire() {
    const area = doc.querySelector('.st-key-prompt_editor textarea');
    const counter = doc.querySelector('.st-key-prompt_count [data-testid="stMarkdownContainer"] p');
    if (!area) { setTimeout(wire, 300); return; }
    if (area.dataset.studioWired) return;
    area.dataset.studioWired = "1";
    const update = () => {
      if (!counter) return;
      const n = area.value.length;
      counter.textContent = n.toLocaleString() + " / " + LIMIT.toLocaleString() + " characters"
        + (n > LIMIT ? " — " + (n - LIMIT).toLocaleString() + " over the limit" : "");
      counter.style.color = n > LIMIT ? "#ff6b6b" : "";
    };
    area.addEventListener("input", update);
    area.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        area.blur();
        setTimeout(() => {
          const btn = doc.querySelector('.st-key-generate button');
          if (btn && !btn.disabled) btn.click();
        }, 250);
      }
    });
  }
  wire();
})();
</script>
""" % MAX_PROMPT_CHARS


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
