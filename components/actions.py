"""One-click actions on a finished task: send its recipe again as a new creative.

`resend` is what a queue card's Retry calls. It builds the request from the
stored submission (prompt, ratio, resolution, model as first sent), hands it to
the tracker as a new creative and prices it like Generate does. A session sends
a given submission again at most once: a double click (two callbacks before
the page redraws) spends once.
"""

from __future__ import annotations

import streamlit as st

from components.services import get_services
from studio.campaign_store import CampaignStore
from studio.errors import HiAPIError
from studio.models import TaskRequest
from studio.pricing import to_micros
from studio.services import Services

RESENT = "queue_resent"  # submission id -> the new submission ids, or an error sentence


def resent() -> dict[int, list[int] | str]:
    return st.session_state.setdefault(RESENT, {})


def resend(submission_id: int) -> list[int]:
    """Button callback: send submission `submission_id`'s recipe again; returns the new ids."""
    return send_again(get_services(), submission_id, resent())


def send_again(services: Services, submission_id: int, done: dict[int, list[int] | str]) -> list[int]:
    """`resend` with its services and its record of what was sent again (`done`) passed in."""
    if isinstance(done.get(submission_id), list):
        return done[submission_id]  # a second click of the same button
    sub = services.store.submission(submission_id)
    if sub is None:
        done[submission_id] = "This task is gone (deleted); nothing was sent."
        return []
    request = TaskRequest(sub.prompt, sub.aspect_ratio, sub.resolution, sub.model)
    try:
        ids = services.tracker.submit([request])
    except (HiAPIError, ValueError) as exc:
        done[submission_id] = getattr(exc, "message", None) or str(exc)
        return []
    pricing = services.pricing
    CampaignStore(services.store).record_spend(
        ids, resolution=sub.resolution, unit_micros=to_micros(pricing.unit(sub.resolution)),
        currency=pricing.currency,
    )  # fmt: skip
    done[submission_id] = ids
    return ids
