"""Studio: write a prompt, pick where the image goes, generate, watch results arrive.

A prompt with {{variables}} grows a table of rows: every row × every ratio is one
image, sent as one campaign.
"""

import streamlit as st

from components import draft, submit
from components.campaign_editor import variables_panel
from components.campaign_view import active_campaigns
from components.editor import prompt_editor, template_row
from components.library import save_to_library
from components.pickers import ratio_picker, resolution_picker
from components.queue import live_queue

draft.init()
errs = submit.errors()

st.title("Studio")
template_row()
left, right = st.columns([3, 1], gap="large")
with left:
    prompt_editor(errs.get("prompt"))
with right:
    resolution_picker(errs.get("resolution"))
    submit.generate_button()
    save_to_library()
variables_panel(errs.get("rows"))
ratio_picker(errs.get("aspect_ratio"))
submit.confirm_if_pending()

active_campaigns()
st.subheader("Queue")
live_queue()
