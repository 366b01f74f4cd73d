"""Settings: where the studio sends work, and how the tracker is doing."""

import time

import streamlit as st

from components.services import get_services

services = get_services()
s = services.settings
st.title("Settings")

st.subheader("Connection")
c1, c2 = st.columns(2)
c1.metric("Mode", s.mode)
c2.metric("API key", "set" if s.api_key else "not set")
st.text(f"Base URL: {services.base_url}")
st.text(f"Model: {s.model}")
st.text(f"Data folder: {s.data_dir.resolve()}")
if s.simulated:
    st.info(
        "Running on the built-in HiAPI simulator. Set HIAPI_API_KEY in the environment or in "
        ".streamlit/secrets.toml and restart to use HiAPI.",
        icon=":material/science:",
    )


@st.fragment(run_every=2.0)
def tracker_health() -> None:
    h = services.tracker.health()
    st.subheader("Task tracker")
    a, b, c, d = st.columns(4)
    a.metric("Running", "yes" if h["alive"] else "NO")
    b.metric("Tasks in flight", h["in_flight"])
    c.metric("Polls", h["polls"], help=f"{h['poll_errors']} failed")
    d.metric("Images kept", h["downloads"], help=f"{h['download_errors']} failed attempts")
    last = h["last_poll_at"]
    st.caption(f"Last poll: {time.strftime('%H:%M:%S', time.localtime(last)) if last else 'none yet'}")
    if h["last_error"]:
        st.warning(f"Last error: {h['last_error']}", icon=":material/warning:")
    counts = services.store.counts()
    if counts:
        st.caption("Submissions by state: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


tracker_health()
