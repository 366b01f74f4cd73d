"""Who may use the studio: an optional team login, checked on every page and route.

Whoever can open the studio can spend the API key's money. When secrets hold
an `[auth]` section (Streamlit's built-in OIDC login, `st.login`), every page
asks for a sign-in first (`require_login`, called by app.py: `access.page`) and
every HTTP route of ours answers 401 without a valid identity (`protect`, used
by server.py: `access.routes`). An optional allow-list narrows who may sign in:

    [access]
    allowed_emails = ["ana@example.com"]
    allowed_domains = ["example.com"]

server.py imports `access.routes` and app.py `access.page`; the route check
never imports the page gate or `components` (tests/test_layers.py), so the
routes load without any page code. The names below stay importable from
`access` itself.
"""

from access.page import require_login
from access.routes import USER_COOKIE, email_allowed, login_configured, protect, secrets_dict, signed_in_user

__all__ = [
    "USER_COOKIE",
    "email_allowed",
    "login_configured",
    "protect",
    "require_login",
    "secrets_dict",
    "signed_in_user",
]
