"""Settings: where the studio sends work, how results come back, and how the tracker is doing."""

import time

import streamlit as st

from components import outage
from components.services import get_services
from components.text import literal
from studio.output_storage import PRICE_NOTE, storage_value
from studio.pricing import (
    MAX_ACTIVE_LIMIT,
    QUALITY_NAMES,
    SETTINGS_KEY,
    Pricing,
    build,
    price_key,
    price_label,
)
from studio.ratios import RESOLUTIONS
from studio.usecases import apply_settings, set_output_storage

SAVED_FLASH = "settings_saved"

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
ocr = services.fidelity.reader if services.fidelity else None
if ocr is not None and ocr.available():
    st.text(f"Text check: {getattr(ocr, 'label', ocr.name)} reads the quoted text of every new image")
else:
    st.warning(
        "Text check: OCR unavailable, so quoted text is not checked. Install Debian's tesseract-ocr "
        "(`make run` does) and restart.",
        icon=":material/visibility_off:",
    )
if s.simulated:
    st.info(
        "Running on the built-in HiAPI simulator. Set HIAPI_API_KEY in the environment or in "
        ".streamlit/secrets.toml and restart to use HiAPI.",
        icon=":material/science:",
    )


def prices_and_limits() -> None:
    """The price table (per resolution), when to ask before generating, and tasks at once."""
    st.subheader("Prices and limits")
    pricing = services.pricing
    defaults = services.pricing_defaults or Pricing()
    if not pricing.from_user:
        st.warning(
            "These prices are placeholders, not HiAPI's: HiAPI publishes prices only on its pricing page. "
            "Enter yours here (or set STUDIO_PRICE_1K/2K/4K and STUDIO_PRICE_1K_LOW … STUDIO_PRICE_4K_HIGH "
            "in the environment or secrets).",
            icon=":material/price_check:",
        )
    for p in services.pricing_problems:
        st.error(f"In the environment or secrets: {literal(p.message)}", icon=":material/error:")
    with st.form("pricing_form", border=True):
        cols = st.columns(4)
        values = {f"price_{res}": cols[i].text_input(f"Price per {res} image", value=str(pricing.prices[res]))
                  for i, res in enumerate(RESOLUTIONS)}  # fmt: skip
        values["currency"] = cols[3].text_input("Currency", value=pricing.currency, max_chars=5)
        st.caption("Draft, Standard and Final (HiAPI's ext route) are priced on their own:")
        for quality, name in QUALITY_NAMES.items():
            row = st.columns(4)
            for i, res in enumerate(RESOLUTIONS):
                key = price_key(res, quality)
                values[f"price_{key}"] = row[i].text_input(
                    f"Price per {price_label(key)}", value=str(pricing.prices[key]), key=f"price_{key}"
                )
            row[3].caption(f"{name} (quality {quality})")
        a, b, c = st.columns(3)
        values["confirm_images"] = a.number_input(
            "Ask before more than … images", min_value=0, max_value=100_000, value=pricing.confirm_images,
            help="A click that would send more images than this opens a confirmation first.",
        )  # fmt: skip
        values["confirm_cost"] = b.text_input(
            "…or before spending more than", value=str(pricing.confirm_cost),
            help="Estimated from the prices above.",
        )  # fmt: skip
        values["max_active"] = c.number_input(
            "Campaigns: tasks at HiAPI at once", min_value=1, max_value=MAX_ACTIVE_LIMIT, value=pricing.max_active,
            help="Campaign rows wait while this many tasks are at HiAPI (a single prompt's images go at once). "
            "HiAPI answers 429 when pushed too hard; the studio then holds every create and slows campaigns.",
        )  # fmt: skip
        saved = st.form_submit_button("Save prices and limits", type="primary")
    if saved:
        new, problems = build(values, pricing)
        if problems:
            for p in problems:
                st.error(literal(p.message), icon=":material/error:")
        else:
            apply_settings(services.store, services.intake, new, defaults=defaults)
            # Shown after the rerun below (a message written now would vanish with it).
            st.session_state[SAVED_FLASH] = "Saved prices and limits."
            st.rerun()
    flash = st.session_state.pop(SAVED_FLASH, None)
    if flash:
        with st.container(key="pricing_saved"):
            st.success(flash, icon=":material/check:")
    if services.store.get_setting(SETTINGS_KEY) and st.button("Reset to defaults", key="pricing_reset"):
        apply_settings(services.store, services.intake, None, defaults=defaults)
        st.rerun()


prices_and_limits()


def output_storage() -> None:
    """Whether HiAPI keeps outputs long term (billed) instead of about 7 days."""
    st.subheader("Output storage at HiAPI")
    on = storage_value(services.store) is not None
    new = st.toggle(
        "Keep outputs at HiAPI long term (persistent storage, billed)",
        value=on,
        key="storage_persistent",
        help="Sends storage: persistent with every new image. Off: HiAPI keeps outputs about 7 days.",
    )
    st.caption(PRICE_NOTE)
    if new != on:
        set_output_storage(services.store, new)
        st.rerun()


output_storage()


def _clock(at: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) if at else "none yet"


@st.fragment(run_every=2.0)
@outage.guarded
def task_updates() -> None:
    h = services.intake.health()
    st.subheader("Task updates")
    receiver = services.callbacks
    with st.container(key="task_updates"):
        if receiver is None:
            st.metric("Results arrive by", "Polling")
            st.caption(
                "The tracker asks HiAPI about each task on an adaptive schedule. For production, set "
                "HIAPI_CALLBACK_URL to this studio's public https:// address so HiAPI calls back instead "
                "(see the README's deployment notes)."
            )
        else:
            a, b, c, d = st.columns(4)
            a.metric("Results arrive by", "Callbacks")
            b.metric(
                "Callbacks received",
                h["callbacks_received"],
                help=(
                    f"{h['callbacks_stored']} stored, {h['callbacks_duplicate']} duplicates, "
                    f"{h['callbacks_held']} arrived before their create answer, "
                    f"{h['callbacks_ignored']} for tasks this studio does not know"
                ),
            )
            c.metric(
                "Callbacks rejected",
                h["callbacks_rejected"],
                help="Wrong token, too big, bad signature or body",
            )
            d.metric(
                "Reconciled",
                h["reconciled"],
                help=f"Results fetched by GET because their callback did not come ({h['reconcile_polls']} GETs)",
            )
            st.text(f"Callback URL: {services.callback_url_masked}")
            st.caption(
                f"Token from {services.callback_token_source}. "
                + (
                    "Deliveries must be signed (HIAPI_WEBHOOK_SECRET is set)."
                    if receiver.signed
                    else "Deliveries are not signature-checked: set HIAPI_WEBHOOK_SECRET to the signing key "
                    "from the HiAPI console."
                )
                + f" Last callback: {_clock(h['last_callback_at'])}."
            )
            if h["last_rejection"]:
                st.warning(
                    f"Last rejected callback at {_clock(h['last_rejection_at'])}: {literal(h['last_rejection'])}",
                    icon=":material/gpp_maybe:",
                )
        for problem in services.callback_problems:
            st.error(literal(problem), icon=":material/error:")


@st.fragment(run_every=2.0)
@outage.guarded
def tracker_health() -> None:
    h = services.intake.health()
    st.subheader("Task tracker")
    if not h["works"]:
        st.info(
            "This process serves pages only (STUDIO_ROLE=web): worker processes (`python -m studio.worker`) "
            "send and follow the tasks. The numbers below come from the database.",
            icon=":material/info:",
        )
    a, b, c, d = st.columns(4)
    a.metric("Running", ("yes" if h["alive"] else "NO") if h["works"] else "elsewhere")
    b.metric("Tasks in flight", h["in_flight"])
    c.metric("Polls", h["polls"], help=f"{h['poll_errors']} failed")
    d.metric("Images kept", h["downloads"], help=f"{h['download_errors']} failed attempts")
    st.caption(
        f"At HiAPI now: {h['active']} of {h['max_active']} · waiting to be sent: {h['waiting_to_send']}"
        + (
            f" · slowed to {h['pace']} after {h['rate_limited']} rate limits (429)"
            if h["rate_limited"]
            else ""
        )
    )
    st.caption(f"Last poll: {_clock(h['last_poll_at'])}")
    if h["last_error"]:
        st.warning(f"Last error: {literal(h['last_error'])}", icon=":material/warning:")
    counts = services.store.counts()
    if counts:
        st.caption(
            "Submissions by state: " + ", ".join(f"{literal(k)} {v}" for k, v in sorted(counts.items()))
        )


task_updates()
tracker_health()
