"""One-click actions on a finished task: send its recipe again as a new creative.

`resend` is what a queue card's Retry calls. It builds the request from the
stored submission (prompt, ratio, resolution, model, quality, background and
storage as first sent, in `studio.usecases.send_again`) as a new creative,
priced like Generate, under the click token
bound when the button was drawn (`retry_token`): a double click, or a rerun
that calls the callback twice, records one submission and one spend.
`make_final` is the same path for a draft's "Make final": its recipe at Final
quality (`ext` route, `high`), with its own token (`final_token`).
"""

from __future__ import annotations

import uuid

import streamlit as st

from access.page import current_author
from components import outage
from components.services import get_services
from studio.errors import HiAPIError
from studio.pricing import QUALITY_NAMES
from studio.services import Services
from studio.usecases import send_again as send_recipe_again

RESENT = "queue_resent"  # submission id -> the new submission ids, or an error sentence


def resent() -> dict[int, list[int] | str]:
    return st.session_state.setdefault(RESENT, {})


def retry_token(submission_id: int) -> str:
    """The click token of this session's Retry of `submission_id` (one Retry, one creative)."""
    return st.session_state.setdefault(f"retry_token_{submission_id}", uuid.uuid4().hex)


FINAL_QUALITY = "high"


def final_token(submission_id: int) -> str:
    """The click token of this session's "Make final" of `submission_id`."""
    return st.session_state.setdefault(f"final_token_{submission_id}", uuid.uuid4().hex)


def can_make_final(quality: str | None) -> bool:
    """A result sent at a lower `ext` quality can be sent again at Final."""
    return quality is not None and quality != FINAL_QUALITY


def make_final_label() -> str:
    return f"Make {QUALITY_NAMES[FINAL_QUALITY].lower()}"


@outage.callback
def make_final(submission_id: int, token: str) -> list[int]:
    """Button callback: send `submission_id`'s recipe again at Final quality; returns the new ids."""
    return send_again(get_services(), submission_id, token, resent(), quality=FINAL_QUALITY)


def resend(submission_id: int, token: str) -> list[int]:
    """Button callback: send submission `submission_id`'s recipe again; returns the new ids."""
    return send_again(get_services(), submission_id, token, resent())


def send_again(
    services: Services,
    submission_id: int,
    token: str,
    done: dict[int, list[int] | str],
    *,
    quality: str | None = None,
) -> list[int]:
    """`resend` with its services and its record of what was sent again (`done`) passed in.

    `quality` overrides the stored one (Make final); the rest is the recipe as stored.
    """
    from components.submit import reference_urls

    try:
        sent = send_recipe_again(
            services.store,
            services.intake,
            services.read_pricing(),
            submission_id,
            click_token=token,
            sign=lambda names: reference_urls(names, services),
            quality=quality,
            author=current_author(),
        )
    except (HiAPIError, ValueError) as exc:
        done[submission_id] = getattr(exc, "message", None) or str(exc)
        return []
    done[submission_id] = sent
    return sent if isinstance(sent, list) else []
