"""Who may use the studio: an optional team login, checked on every page and route.

Whoever can open the studio can spend the API key's money. When secrets hold
an `[auth]` section (Streamlit's built-in OIDC login, `st.login`), every page
asks for a sign-in first (`require_login`, called by app.py) and every HTTP
route of ours answers 401 without a valid identity (`protect`, used by
server.py). An optional allow-list narrows who may sign in:

    [access]
    allowed_emails = ["ana@example.com"]
    allowed_domains = ["example.com"]

How routes check the sign-in: `st.login` ends by setting Streamlit's identity
cookie `_streamlit_user`, a JSON document signed with itsdangerous using the
cookie secret (`[auth] cookie_secret`), possibly split in chunks. Streamlit
itself reads it only on the websocket; `signed_in_user` verifies it the same
way for a plain HTTP request (signature, age, `is_logged_in`, and the origin
of the configured redirect URI) with Streamlit's own helpers.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

log = logging.getLogger("studio.access")

USER_COOKIE = "_streamlit_user"
_REQUIRED_AUTH_KEYS = ("redirect_uri", "cookie_secret")


def secrets_dict() -> dict[str, Any]:
    """Streamlit secrets as a plain dict ({} when there are none)."""
    import streamlit as st

    try:
        return {k: st.secrets[k] for k in st.secrets}
    except Exception:  # no secrets.toml is the normal case
        return {}


def login_configured(secrets: Mapping[str, Any] | None = None) -> bool:
    """True when secrets hold an `[auth]` section Streamlit can log in with."""
    secrets = secrets_dict() if secrets is None else secrets
    auth = secrets.get("auth")
    return isinstance(auth, Mapping) and all(auth.get(k) for k in _REQUIRED_AUTH_KEYS)


def email_allowed(email: Any, secrets: Mapping[str, Any] | None = None) -> bool:
    """Is this signed-in email on the `[access]` allow-list (everyone, when there is none)?"""
    secrets = secrets_dict() if secrets is None else secrets
    rules = secrets.get("access")
    if not isinstance(rules, Mapping):
        return True
    emails = {str(e).strip().lower() for e in rules.get("allowed_emails") or ()}
    domains = {str(d).strip().lower().lstrip("@") for d in rules.get("allowed_domains") or ()}
    if not emails and not domains:
        return True
    if not isinstance(email, str) or "@" not in email:
        return False
    email = email.strip().lower()
    return email in emails or email.rsplit("@", 1)[1] in domains


def signed_in_user(cookies: Mapping[str, str]) -> dict[str, Any] | None:
    """The identity in a verified `_streamlit_user` cookie, or None.

    Verified exactly as Streamlit verifies it on the websocket: itsdangerous
    signature with the cookie secret (each chunk salted with its own name),
    the cookie's age, `is_logged_in`, and the origin of the configured
    `redirect_uri`.
    """
    from streamlit.auth_util import get_cookie_with_chunks, get_origin_from_redirect_uri
    from streamlit.web.server.server_util import get_cookie_secret
    from streamlit.web.server.starlette.starlette_app_utils import decode_signed_value

    secret = get_cookie_secret()

    def one(name: str) -> bytes | None:
        value = cookies.get(name)
        if not value:
            return None
        return decode_signed_value(secret, name, value.encode("latin-1"))

    try:
        raw = get_cookie_with_chunks(one, USER_COOKIE)
        payload = json.loads(raw) if raw else None
    except Exception:  # a forged or damaged cookie is simply not a sign-in
        return None
    if not isinstance(payload, dict) or payload.get("is_logged_in") is not True:
        return None
    expected = get_origin_from_redirect_uri()
    if not expected or payload.get("origin") != expected:
        return None
    return payload


def protect(handler: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
    """Wrap a Starlette endpoint: 401 unless signed in (when a login is configured)."""

    @functools.wraps(handler)
    async def guarded(request: Any) -> Any:
        secrets = secrets_dict()
        if login_configured(secrets):
            user = signed_in_user(request.cookies)
            if user is None or not email_allowed(user.get("email"), secrets):
                from starlette.responses import PlainTextResponse

                return PlainTextResponse(
                    "Sign in to the studio first.", status_code=401, headers={"Cache-Control": "no-store"}
                )
        return await handler(request)

    return guarded


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


def _login() -> None:
    import streamlit as st

    auth = secrets_dict().get("auth") or {}
    providers = [k for k, v in auth.items() if isinstance(v, Mapping)]
    # One provider in its own [auth.NAME] section: name it; flat [auth] means the default one.
    st.login(providers[0] if len(providers) == 1 and "client_id" not in auth else None)
