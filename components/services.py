"""The process-wide services, cached for every session."""

from __future__ import annotations

from typing import Any

import streamlit as st

from studio.config import Settings
from studio.services import Services, boot


def _secrets() -> dict[str, Any]:
    try:
        return {k: st.secrets[k] for k in st.secrets}
    except Exception:  # no secrets.toml is the normal case
        return {}


@st.cache_resource(show_spinner=False)
def get_services() -> Services:
    """One store, client and tracker per server process (shared with the HTTP routes)."""
    return boot(Settings.load(secrets=_secrets()))


def show_image(path: str, *, width: int | str = "stretch", caption: str | None = None) -> None:
    """Show an image served by one of our routes, never through the media store."""
    url = image_url(path)
    if "://" in url:
        st.image(url, width=width, caption=caption)
    else:  # no page URL known (e.g. under AppTest): the browser resolves it
        st.markdown(f"![{caption or ''}]({url})")


def image_url(path: str) -> str:
    """Absolute URL of a route on this server (st.image needs absolute URLs)."""
    try:
        url = st.context.url or ""
    except Exception:
        url = ""
    if "://" in url:
        scheme, rest = url.split("://", 1)
        origin = f"{scheme}://{rest.split('/', 1)[0]}"
        return origin + path
    return path
