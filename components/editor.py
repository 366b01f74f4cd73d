"""The prompt editor: a large text area, a live character count and Ctrl/⌘+Enter to generate.

A text area reaches the server only when it commits (on blur). So that a reload
right after typing loses nothing, the page script commits the prompt after a
short pause in typing (blur and refocus, caret kept); the draft is then saved.
"""

from __future__ import annotations

import streamlit as st

from components import draft
from components.references import PASTE_JS
from components.services import get_services
from components.templates import TEMPLATES
from components.text import literal
from studio.campaigns import variables
from studio.library import Library
from studio.validation import MAX_PROMPT_CHARS

IDLE_COMMIT_MS = 1500  # a pause in typing this long commits the prompt (and so saves the draft)

# Runs in the page: updates the counter on every keystroke and maps
# Ctrl/⌘+Enter to the Generate button (after the text area has committed).
_EDITOR_JS = r"""
<script>
(function () {
  const win = window.parent || window;
  const doc = win.document;
  if (win.__studioEditorWired) return;
  win.__studioEditorWired = true;
  const LIMIT = __LIMIT__;
  const IDLE_MS = __IDLE_MS__;
  let idle = null;
  const commit = (area) => {
    if (doc.activeElement !== area) return;
    const start = area.selectionStart, end = area.selectionEnd, top = area.scrollTop;
    area.blur();  // Streamlit commits a text area on blur
    area.focus({ preventScroll: true });
    area.setSelectionRange(start, end);
    area.scrollTop = top;
  };
  const GENERATE = ".st-key-generate_box button";
  const inEditor = (el) => el && el.tagName === "TEXTAREA" && el.closest(".st-key-prompt_editor");
  // Delegated listeners survive Streamlit re-rendering the text area.
  doc.addEventListener("input", (e) => {
    if (!inEditor(e.target)) return;
    clearTimeout(idle);
    idle = setTimeout(commit, IDLE_MS, e.target);
    const counter = doc.querySelector(".st-key-prompt_count p");
    if (!counter) return;
    // Code points, as the server counts them (value.length counts an emoji twice).
    const n = Array.from(e.target.value).length;
    counter.textContent = n.toLocaleString("en-US") + " / " + LIMIT.toLocaleString("en-US") + " characters"
      + (n > LIMIT ? " — " + (n - LIMIT).toLocaleString("en-US") + " over the limit" : "");
    counter.style.color = n > LIMIT ? "#ff6b6b" : "";
    // {{variables}} as you type (the same rule as studio/campaigns.py).
    const vars = doc.querySelector(".st-key-prompt_vars p");
    if (vars) {
      const names = [];
      for (const m of e.target.value.matchAll(/\\\{\{|\{\{([\s\S]*?)\}\}/g)) {
        const name = (m[1] || "").trim();
        if (m[1] !== undefined && /^[\p{L}_][\p{L}\p{N}_]*$/u.test(name) && !names.includes(name)) names.push(name);
      }
      vars.textContent = names.length
        ? "Variables: " + names.map((x) => "{{" + x + "}}").join(", ") + " — one image set per row"
        : "Tip: {{name}} makes a variable";
    }
  }, true);
  doc.addEventListener("keydown", (e) => {
    if (!inEditor(e.target) || e.key !== "Enter" || !(e.ctrlKey || e.metaKey)) return;
    e.preventDefault();
    clearTimeout(idle);
    e.target.blur();  // commits the text first
    setTimeout(() => {
      const btn = [...doc.querySelectorAll(GENERATE)].find((b) => b.offsetParent !== null);
      if (btn && !btn.disabled) btn.click();
    }, 300);
  }, true);
})();
</script>
""".replace("__LIMIT__", str(MAX_PROMPT_CHARS)).replace("__IDLE_MS__", str(IDLE_COMMIT_MS))


def count_label(text: str) -> str:
    n = len(text)
    label = f"{n:,} / {MAX_PROMPT_CHARS:,} characters"
    if n > MAX_PROMPT_CHARS:
        label += f" — {n - MAX_PROMPT_CHARS:,} over the limit"
    return label


def template_row() -> None:
    """The starter templates, as the library holds them now (edited ones load as edited), in a popover."""
    starters = Library(get_services().store).starters()
    if not starters:
        return
    with st.popover("Examples", icon=":material/auto_awesome:", key="examples"):
        st.caption("Start from an example — or open the Library for your own templates")
        for t in starters[: len(TEMPLATES)]:
            st.button(
                t.name,
                key=f"template_{t.starter}",
                help=literal(f"{t.note} · {', '.join(t.ratios)} at {t.resolution}"),  # the note is typed
                on_click=draft.load,
                args=(t.prompt, t.ratios, t.resolution, list(t.rows) or None),
                width="stretch",
            )


def prompt_editor(error: str | None = None) -> str:
    draft.init()
    st.text_area(
        "Prompt",
        key=draft.EDITOR_KEY,
        on_change=draft.sync_prompt,
        height=150,
        placeholder='Describe the image. Put exact text in quotes, e.g. a poster with the headline "SUMMER DROP".',
        help="Quoted text is what the image should spell. Ctrl/⌘+Enter generates.",
    )
    text = draft.prompt()
    with st.container(horizontal=True, gap="small", key="prompt_meta"):
        with st.container(key="prompt_count", width="content"):
            st.caption(count_label(text))
        with st.container(key="prompt_vars"):
            names = variables(text)
            st.caption(
                "Variables: "
                + ", ".join(literal("{{" + n + "}}") for n in names)
                + " — one image set per row"
                if names
                else "Tip: {{name}} makes a variable"
            )
        # In this row, so the script's (empty) element adds no vertical gap to the column.
        st.html(_EDITOR_JS + PASTE_JS, width="content", unsafe_allow_javascript=True)
    if error:
        st.error(literal(error), icon=":material/error:")  # e.g. a bad {{…}} quotes the prompt
    return text
