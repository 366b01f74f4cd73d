"""The Settings page's task-updates section through AppTest (fragment timers are not driven here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio import services as core

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "settings_" + "Mn4Op5Qr" * 4


@pytest.fixture
def settings_page(tmp_path, monkeypatch):
    import streamlit as st

    def open_with(**env: str) -> AppTest:
        for k in ("HIAPI_API_KEY", "HIAPI_BASE_URL", "HIAPI_CALLBACK_URL", "HIAPI_CALLBACK_TOKEN",
                  "HIAPI_WEBHOOK_SECRET"):  # fmt: skip
            monkeypatch.delenv(k, raising=False)
        monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        core.shutdown()
        st.cache_resource.clear()
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
        at.run()
        at.switch_page("app_pages/settings.py").run()
        assert not at.exception, at.exception
        return at

    yield open_with
    core.shutdown()
    st.cache_resource.clear()


def _everything(at) -> str:
    parts = [
        str(e.value)
        for kind in ("markdown", "text", "caption", "error", "warning", "info")
        for e in at.get(kind)
    ]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    return "\n".join(parts)


def test_callbacks_mode_shows_the_masked_url_and_counts(settings_page):
    at = settings_page(HIAPI_CALLBACK_URL="http://127.0.0.1:8501", HIAPI_CALLBACK_TOKEN=TOKEN)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Results arrive by"] == "Callbacks"
    assert metrics["Callbacks received"] == "0" and metrics["Callbacks rejected"] == "0"
    assert metrics["Reconciled"] == "0"
    text = _everything(at)
    assert "Callback URL: http://127.0.0.1:8501/hiapi/callback/••••••••" in text
    assert "HIAPI_WEBHOOK_SECRET" in text  # unsigned deliveries are called out
    assert TOKEN not in text


def test_generated_token_stays_out_of_the_page(settings_page, tmp_path):
    at = settings_page(HIAPI_CALLBACK_URL="http://127.0.0.1:8501")
    token = (tmp_path / "data" / "callback-token").read_text().strip()
    assert token and token not in _everything(at)
    assert str(tmp_path / "data" / "callback-token") in _everything(at)


def test_unusable_callback_url_keeps_polling_and_says_why(settings_page):
    at = settings_page(HIAPI_CALLBACK_URL="http://studio.example.com")
    assert {m.label: m.value for m in at.metric}["Results arrive by"] == "Polling"
    [error] = at.error
    message = re.sub(r"\\(.)", r"\1", error.value).replace("\u200b", "")  # as a person reads it
    assert "HIAPI_CALLBACK_URL must start with https://" in message and "polls" in message


def test_polling_mode_points_at_the_setting(settings_page):
    at = settings_page()
    assert {m.label: m.value for m in at.metric}["Results arrive by"] == "Polling"
    assert "HIAPI_CALLBACK_URL" in _everything(at)
    assert not at.error
