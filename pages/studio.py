"""Studio: write a prompt, pick where the image goes, generate, watch results arrive."""

import streamlit as st

from components import draft, submit
from components.editor import prompt_editor, template_row
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
ratio_picker(errs.get("aspect_ratio"))

st.subheader("Queue")
live_queue()
