"""The route check: who may call the studio's HTTP routes, and the rules pages share.

`login_configured` and `email_allowed` read the secrets (see `access`'s
docstring); `protect` wraps a Starlette endpoint so it answers 401 without a
valid identity when a login is configured. Nothing here draws a page.

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
