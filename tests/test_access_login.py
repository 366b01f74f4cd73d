"""The documented team login end to end: a real OIDC sign-in through Streamlit's `st.login`.

A small OpenID Connect provider on loopback (discovery, authorize, token with
an RS256-signed id_token, JWKS) stands in for Google or Okta. The browser
clicks *Sign in*, goes through Streamlit's own OIDC flow (Authlib), comes back
with the identity cookie Streamlit sets, and from then on pages and image
routes open, while the same routes refuse a request without it.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import secrets
import threading
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from playwright.sync_api import expect

from tests.support import StudioServer, screenshot, wait_for
from tests.test_browser_studio import set_prompt

pytestmark = pytest.mark.browser


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64int(n: int) -> str:
    return _b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class FakeOIDC:
    """Just enough OpenID Connect for Authlib: code flow with PKCE, RS256 id_tokens."""

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.email = "ana@example.com"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.codes: dict[str, dict] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _json(self, obj, status=200):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                url = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    self._json(outer.metadata())
                elif url.path == "/jwks":
                    self._json({"keys": [outer.jwk()]})
                elif url.path == "/authorize":
                    code = secrets.token_urlsafe(16)
                    outer.codes[code] = q | {"email": outer.email}
                    self.send_response(302)
                    self.send_header(
                        "Location", q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]})
                    )
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._json({"error": "not_found"}, 404)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(n).decode()).items()}
                grant = outer.codes.pop(form.get("code", ""), None)
                if self.path != "/token" or grant is None or not outer.client_ok(self.headers, form):
                    self._json({"error": "invalid_grant"}, 400)
                    return
                if grant.get("code_challenge"):
                    digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                    if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant["code_challenge"]:
                        self._json({"error": "invalid_grant", "error_description": "PKCE"}, 400)
                        return
                self._json(
                    {
                        "access_token": secrets.token_urlsafe(16),
                        "token_type": "Bearer",
                        "expires_in": 3600,
                        "id_token": outer.id_token(grant),
                    }
                )

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def metadata(self) -> dict:
        return {
            "issuer": self.url,
            "authorization_endpoint": self.url + "/authorize",
            "token_endpoint": self.url + "/token",
            "jwks_uri": self.url + "/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        }

    def client_ok(self, headers, form) -> bool:
        auth = headers.get("Authorization", "")
        if auth.startswith("Basic "):
            ident, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        else:
            ident, secret = form.get("client_id"), form.get("client_secret")
        return ident == self.client_id and secret == self.client_secret

    def id_token(self, grant: dict) -> str:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "sub": hashlib.sha256(grant["email"].encode()).hexdigest()[:16],
            "aud": self.client_id,
            "iat": now,
            "exp": now + 600,
            "nonce": grant.get("nonce"),
            "email": grant["email"],
            "email_verified": True,
            "name": grant["email"].split("@")[0].title(),
        }
        signing_input = _b64(json.dumps({"alg": "RS256", "kid": "k1", "typ": "JWT"}).encode()) + "."
        signing_input += _b64(json.dumps(claims).encode())
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64(signature)

    def jwk(self) -> dict:
        numbers = self.key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "kid": "k1",
            "alg": "RS256",
            "use": "sig",
            "n": _b64int(numbers.n),
            "e": _b64int(numbers.e),
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def provider():
    p = FakeOIDC("studio-web", "client-secret-0123456789")
    yield p
    p.close()


@pytest.fixture(scope="module")
def team_studio(provider, tmp_path_factory):
    data = tmp_path_factory.mktemp("login-data")
    secrets_file = data.parent / "login-secrets.toml"
    secrets_file.write_text(
        f"""
[auth]
redirect_uri = "http://127.0.0.1:{{port}}/oauth2callback"
cookie_secret = "{secrets.token_urlsafe(32)}"
client_id = "{provider.client_id}"
client_secret = "{provider.client_secret}"
server_metadata_url = "{provider.url}/.well-known/openid-configuration"

[access]
allowed_domains = ["example.com"]
"""
    )
    server = StudioServer(data, env={"STREAMLIT_SECRETS_FILES": str(secrets_file)}).start()
    yield server
    server.stop()


def _sign_in(page, server, provider, email):
    provider.email = email
    page.goto(server.url + "/")
    page.get_by_role("button", name="Sign in").click()


def test_team_member_signs_in_through_oidc_and_gets_pages_and_images(browser, team_studio, provider):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        _sign_in(page, team_studio, provider, "ana@example.com")
        expect(page.locator(".st-key-prompt_editor textarea")).to_be_visible()
        expect(page.get_by_text("Signed in as ana@example.com")).to_be_visible()
        names = {c["name"] for c in context.cookies()}
        assert "_streamlit_user" in names  # the identity cookie Streamlit itself set

        # Generate one image: its thumbnail loads through the guarded route with the cookie…
        set_prompt(page, 'A badge that reads "TEAM"')
        page.locator(".st-key-generate_box button:visible").click()
        thumb = page.locator("[class*='st-key-task_'] img[src*='/thumbs/']")
        expect(thumb).to_have_count(1, timeout=30_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll(\"img[src*='/thumbs/']\")].some(i => i.complete && i.naturalWidth > 0)"
        )
        src = thumb.get_attribute("src")
        assert page.request.get(src).status == 200
        # …and not without it.
        assert httpx.get(src).status_code == 401
        assert httpx.get(team_studio.url + "/api/health").status_code == 401
        screenshot(page, "access-oidc-signed-in")

        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        # Signing out ends with Streamlit's logout route clearing the identity cookie; then the image is refused.
        wait_for(lambda: "_streamlit_user" not in {c["name"] for c in context.cookies()}, timeout=60)
        assert page.request.get(src).status == 401
    finally:
        context.close()


def test_an_account_off_the_allow_list_signs_in_but_gets_nothing(browser, team_studio, provider):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        _sign_in(page, team_studio, provider, "mallory@elsewhere.org")
        expect(page.get_by_text("not on the studio's allow-list")).to_be_visible()
        assert page.locator(".st-key-prompt_editor").count() == 0
        assert page.request.get(team_studio.url + "/api/health").status == 401
        screenshot(page, "access-oidc-refused")
    finally:
        context.close()
