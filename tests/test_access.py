"""The team login: with `[auth]` in secrets, every page and every route refuses anyone not signed in.

The server runs for real with a secrets file holding an `[auth]` section. A
sign-in is represented by the identity cookie `st.login` sets at the end of
the OIDC flow (`_streamlit_user`, signed with the cookie secret, built here
with Streamlit's own signing helper), so routes and pages are checked against
exactly what a browser would carry.
"""

from __future__ import annotations

import io
import json
import zipfile

import httpx
import pytest
from PIL import Image
from playwright.sync_api import expect
from streamlit.web.server.starlette.starlette_app_utils import create_signed_value

from access import email_allowed, login_configured
from studio.blob_keys import export_key, new_token
from studio.images import ImageKeeper
from tests.support import StudioServer, screenshot

COOKIE_SECRET = "team-cookie-secret-0123456789abcdef"
ALLOWED = "ana@example.com"


def _secrets(path, allow_domain: str = "example.com") -> str:
    path.write_text(
        f"""
[auth]
redirect_uri = "http://127.0.0.1:{{port}}/oauth2callback"
cookie_secret = "{COOKIE_SECRET}"
client_id = "studio"
client_secret = "not-used-here"
server_metadata_url = "http://127.0.0.1:9/.well-known/openid-configuration"

[access]
allowed_domains = ["{allow_domain}"]
"""
    )
    return str(path)


def identity_cookie(
    server: StudioServer, *, email=ALLOWED, secret=COOKIE_SECRET, origin=None, logged_in=True
):
    """The `_streamlit_user` cookie as `st.login` sets it after a successful sign-in."""
    payload = {
        "origin": origin or server.url,
        "is_logged_in": logged_in,
        "email": email,
        "name": email.split("@")[0].title(),
    }
    return create_signed_value(secret, "_streamlit_user", json.dumps(payload)).decode()


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("team-data")
    buf = io.BytesIO()
    Image.new("RGB", (64, 40), (10, 120, 200)).save(buf, "PNG")
    keeper = ImageKeeper(data / "images", thumb_size=512)
    kept = keeper.keep_bytes(buf.getvalue(), {"prompt": "team"})
    token = new_token()
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("manifest.json", "[]")
    keeper.blobs.put(export_key(token), zipped.getvalue())
    server = StudioServer(data)
    server.extra_env["STREAMLIT_SECRETS_FILES"] = _secrets(data.parent / "team-secrets.toml")
    server.start()
    server.routes = [
        f"/images/{kept.sha256}.png",
        f"/thumbs/{kept.sha256}.webp",
        f"/exports/{token}.zip",
        "/api/health",
        "/api/view/queue",
        "/api/view/gallery?offset=0&limit=24",
    ]
    yield server
    server.stop()


def _get(server, path, cookie=None):
    cookies = {"_streamlit_user": cookie} if cookie else None
    return httpx.get(server.url + path, cookies=cookies, timeout=10)


def test_every_route_refuses_without_a_sign_in(team_server):
    for path in team_server.routes:
        r = _get(team_server, path)
        assert r.status_code == 401, path
        assert "Sign in" in r.text and r.headers["cache-control"] == "no-store"


def test_the_push_channel_refuses_without_a_sign_in(team_server):
    r = _get(team_server, "/api/events")  # a 401 is a plain answer, not an endless stream
    assert r.status_code == 401 and "Sign in" in r.text


@pytest.mark.parametrize(
    "why, cookie_kw",
    [
        ("signed with another secret", {"secret": "not-the-cookie-secret-at-all-000000"}),
        ("made for another origin", {"origin": "http://evil.example"}),
        ("not logged in", {"logged_in": False}),
        ("not on the allow-list", {"email": "mallory@elsewhere.org"}),
    ],
)
def test_a_bad_identity_is_refused(team_server, why, cookie_kw):
    cookie = identity_cookie(team_server, **cookie_kw)
    for path in team_server.routes:
        assert _get(team_server, path, cookie).status_code == 401, (why, path)
    assert _get(team_server, team_server.routes[0], cookie[:-4] + "AAAA").status_code == 401  # tampered


def test_a_signed_in_team_member_gets_every_route(team_server):
    cookie = identity_cookie(team_server)
    for path in team_server.routes:
        r = _get(team_server, path, cookie)
        assert r.status_code == 200, path
    png = _get(team_server, team_server.routes[0], cookie)
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")


@pytest.mark.browser
def test_pages_show_only_a_sign_in_until_signed_in(browser, team_server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        for path in ("/", "/gallery", "/settings"):
            page.goto(team_server.url + path)
            expect(page.get_by_role("button", name="Sign in")).to_be_visible()
            expect(page.get_by_text("Sign in to continue")).to_be_visible()
            assert (
                page.locator(".st-key-prompt_editor, [class*='st-key-card_'], .st-key-generate_box").count()
                == 0
            )
            assert page.get_by_text("Task tracker").count() == 0
        screenshot(page, "access-sign-in")
        context.add_cookies(
            [{"name": "_streamlit_user", "value": identity_cookie(team_server), "url": team_server.url}]
        )
        page.goto(team_server.url + "/")
        expect(page.locator(".st-key-prompt_editor textarea")).to_be_visible()
        expect(page.get_by_text(f"Signed in as {ALLOWED}")).to_be_visible()
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        screenshot(page, "access-signed-in")
        context.clear_cookies()
        context.add_cookies(
            [
                {
                    "name": "_streamlit_user",
                    "value": identity_cookie(team_server, email="mallory@elsewhere.org"),
                    "url": team_server.url,
                }
            ]
        )
        page.goto(team_server.url + "/")
        expect(page.get_by_text("not on the studio's allow-list")).to_be_visible()
        assert page.locator(".st-key-prompt_editor").count() == 0
    finally:
        context.close()


def test_login_and_allow_list_rules():
    auth = {"redirect_uri": "https://studio.example.com/oauth2callback", "cookie_secret": "x" * 32}
    assert login_configured({"auth": auth})
    assert not login_configured({})
    assert not login_configured({"auth": {"redirect_uri": "https://x/oauth2callback"}})  # no cookie secret
    rules = {"access": {"allowed_emails": ["Bob@Other.org"], "allowed_domains": ["@example.com"]}}
    assert email_allowed("ana@example.com", rules)
    assert email_allowed("bob@other.org", rules)
    assert not email_allowed("eve@other.org", rules)
    assert not email_allowed("ana@example.com.evil.org", rules)
    assert not email_allowed(None, rules)
    assert email_allowed("anyone@anywhere.org", {})  # no allow-list: the provider decides


def test_the_callback_route_is_left_to_its_own_checks(team_server):
    """HiAPI cannot sign in: its route answers by token and signature (here: callbacks off, 404), never 401."""
    r = httpx.post(team_server.url + "/hiapi/callback/" + "t" * 32, content=b"{}", timeout=10)
    assert r.status_code == 404
