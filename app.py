"""Entry script: the studio's pages, listed explicitly, behind the optional login."""

import gc

import streamlit as st

from access.page import require_login
from components import outage, submit
from components.chrome import mode_badge
from components.services import get_services
from studio.startup import StartupError

st.set_page_config(page_title="GPT Image 2 Studio", page_icon="🎨", layout="wide")

require_login()  # stops here until signed in, when a login is configured


@st.fragment(run_every=5.0)
def _retry_start() -> None:
    """While the database or the object store does not answer at start: try again, and
    draw the studio the moment it starts (a timer only on this error page)."""
    try:
        get_services()
    except StartupError as exc:
        if exc.transient and exc.message == st.session_state.get("startup_said"):
            return  # still the same wait
    st.rerun(scope="app")  # started, or another problem to say


try:
    services = get_services()
except StartupError as exc:
    # A clear sentence instead of a traceback; a reload tries again once it is fixed.
    st.title("GPT Image 2 Studio")
    st.error(f"The studio cannot start. {exc.message}", icon=":material/report:")
    st.session_state["startup_said"] = exc.message
    if exc.transient:  # a server not up yet: the page opens by itself once it answers
        st.caption("Trying again every few seconds: the studio opens by itself once it answers.")
        _retry_start()
    else:
        st.button("Try again", key="startup_retry", icon=":material/refresh:")
    st.stop()

pages = [
    st.Page("app_pages/studio.py", title="Studio", icon=":material/brush:", default=True),
    st.Page("app_pages/gallery.py", title="Gallery", icon=":material/photo_library:"),
    st.Page("app_pages/library.py", title="Library", icon=":material/library_books:"),
    st.Page("app_pages/settings.py", title="Settings", icon=":material/settings:"),
]


@st.cache_resource(show_spinner=False)
def _freeze_startup_heap() -> None:
    """Streamlit runs a full gc.collect() after every script run; freezing the
    long-lived start-up objects (modules, services) once takes them out of every
    later collection, which cut CPU per rerun about fivefold in `make bench`."""
    gc.collect()
    gc.freeze()


page = st.navigation(pages)
if page.title != "Studio":
    st.session_state.pop(submit.NOTICE, None)  # a "Submitted" note belongs to the visit that sent it
mode_badge()
if not outage.banner(services, drawn_without_database=page.title == "Studio"):
    st.stop()  # the database is away: its sentence only, every widget's value kept for its return
outage.run(page, services)
_freeze_startup_heap()
