"""Studio: write a prompt, pick where the image goes, generate, watch results arrive.

A prompt with {{variables}} grows a table of rows: every row × every ratio is one
image, sent as one campaign.

Layout: the prompt and its controls on the left, the live results on the right,
so prompt, Generate and results share the first screen; on a phone the columns
stack and the results come right under Generate. The draft is saved per
browser at the end of the run (`draft.persist`).

While the database is away the page is still drawn, so the prompt can still be
written: the parts that read it are `outage.tolerant` and Generate says why it waits.
"""

import streamlit as st

from components import draft, outage, submit
from components.campaign_editor import variables_panel
from components.campaign_view import active_campaigns
from components.editor import prompt_editor, template_row
from components.library import save_to_library
from components.options import options_panel
from components.pickers import ratio_picker, resolution_picker
from components.queue import live_queue
from components.references import references_fold, references_strip

# On a phone the page name is in the (collapsed) menu already; its line is worth more to the results.
# A shorter prompt box there too: it grows as you type past it (and Ctrl/⌘+Enter still sends).
_PHONE_CSS = (
    "<style>@media (max-width: 480px) { .st-key-studio_head h2 { display: none; }"
    " .st-key-prompt_editor textarea { min-height: 84px !important; height: 84px !important; } }</style>"
)

draft.init()
errs = submit.errors()

with st.container(horizontal=True, vertical_alignment="center", gap="small", key="studio_head"):
    st.html(_PHONE_CSS)
    st.header("Studio", anchor=False)
    with outage.tolerant():
        template_row()
    with outage.tolerant():
        save_to_library()
compose, results = st.columns([1, 1], gap="medium")
with compose, st.container(gap="small", key="compose"):
    prompt_editor(errs.get("prompt"))
    with outage.tolerant():
        variables_panel(errs.get("rows"))
    resolution_picker(errs.get("resolution"))
    with st.container(horizontal=True, gap="small", key="folds"):  # folded choices, side by side
        with outage.tolerant():
            references_fold()
        options_panel()
    with outage.tolerant():
        references_strip(errs.get("references"))
    ratio_picker(errs.get("aspect_ratio"))
    submit.generate_button()
submit.confirm_if_pending()
with results:
    with outage.tolerant():
        active_campaigns()
    st.subheader("Results", anchor=False)
    with outage.tolerant():
        live_queue()
draft.persist()
