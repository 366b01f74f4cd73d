"""The page gate: on every page, a sign-in (or a refusal) until signed in.

app.py calls `require_login` before anything else; the rules it applies
(`login_configured`, `email_allowed`) are the route check's, so a page and a
route never disagree about who is in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from access.routes import email_allowed, login_configured, secrets_dict
from studio.records import LOCAL_AUTHOR


def require_login() -> None:
    """On a page: when a login is configured, show only a sign-in (or refusal) until signed in."""
    import streamlit as st

    from components.text import literal

    secrets = secrets_dict()
    if not login_configured(secrets):
        return
    user = st.user
    if not user.is_logged_in:
        st.title("GPT Image 2 Studio")
        st.write("This studio is shared with a team. Sign in to continue.")
        st.button("Sign in", key="sign_in", type="primary", icon=":material/login:", on_click=_login)
        st.stop()
    if not email_allowed(user.get("email"), secrets):
        st.title("GPT Image 2 Studio")
        st.error(
            "This account is not on the studio's allow-list. Ask whoever runs the studio to add it, "
            "or sign in with another account.",
            icon=":material/block:",
        )
        st.button("Sign out", key="sign_out_refused", on_click=st.logout)
        st.stop()
    with st.sidebar:
        who = user.get("email") or user.get("name") or "you"
        st.caption(f"Signed in as {literal(who)}")  # provider data: shown as text, not markdown
        st.button("Sign out", key="sign_out", icon=":material/logout:", on_click=st.logout)


def author_of(user: Any, *, login_on: bool) -> str:
    """Who work done on a page is recorded as: with the team login on, the signed-in person's
    email (their name when the provider gives none); `LOCAL_AUTHOR` ("local") without a login,
    or when nobody is signed in (a page behind the gate never sees that)."""
    if not login_on or user is None:
        return LOCAL_AUTHOR
    try:
        if not user.get("is_logged_in"):
            return LOCAL_AUTHOR
        who = user.get("email") or user.get("name")
    except Exception:  # no identity behind this session
        return LOCAL_AUTHOR
    who = str(who or "").strip()
    return who or LOCAL_AUTHOR


def team_login_on() -> bool:
    """Is the team login configured (so work is recorded per person and the gallery can show "Mine")?"""
    return login_configured(secrets_dict())


def current_author() -> str:
    """The author of what this page's session does: the signed-in person, or "local"."""
    import streamlit as st

    on = team_login_on()
    if not on:
        return LOCAL_AUTHOR
    try:
        user: Any = st.user
    except Exception:  # no browser session (a script run)
        user = None
    return author_of(user, login_on=on)


def _login() -> None:
    import streamlit as st

    auth = secrets_dict().get("auth") or {}
    providers = [k for k, v in auth.items() if isinstance(v, Mapping)]
    # One provider in its own [auth.NAME] section: name it; flat [auth] means the default one.
    st.login(providers[0] if len(providers) == 1 and "client_id" not in auth else None)
