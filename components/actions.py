"""One-click actions on a finished task: send its recipe again as a new creative.

`resend` is what a queue card's Retry calls. It builds the request from the
stored submission (prompt, ratio, resolution, model as first sent) and hands it
to the tracker as a new creative, priced like Generate, under the click token
bound when the button was drawn (`retry_token`): a double click, or a rerun
that calls the callback twice, records one submission and one spend.
"""

from __future__ import annotations

import uuid

import streamlit as st

from components.services import get_services
from studio.errors import HiAPIError
from studio.models import TaskRequest
from studio.pricing import to_micros
from studio.references import reference_names
from studio.services import Services
from studio.store import SpendRate

RESENT = "queue_resent"  # submission id -> the new submission ids, or an error sentence


def resent() -> dict[int, list[int] | str]:
    return st.session_state.setdefault(RESENT, {})


def retry_token(submission_id: int) -> str:
    """The click token of this session's Retry of `submission_id` (one Retry, one creative)."""
    return st.session_state.setdefault(f"retry_token_{submission_id}", uuid.uuid4().hex)


def resend(submission_id: int, token: str) -> list[int]:
    """Button callback: send submission `submission_id`'s recipe again; returns the new ids."""
    return send_again(get_services(), submission_id, token, resent())


def send_again(
    services: Services, submission_id: int, token: str, done: dict[int, list[int] | str]
) -> list[int]:
    """`resend` with its services and its record of what was sent again (`done`) passed in."""
    sub = services.store.submission(submission_id)
    if sub is None:
        done[submission_id] = "This task is gone (deleted); nothing was sent."
        return []
    refs: tuple[str, ...] = ()
    if sub.references:  # signed URLs expire: the same kept references, signed anew
        from components.submit import reference_urls

        found = reference_urls(reference_names(sub.references))
        if isinstance(found, str):
            done[submission_id] = found
            return []
        refs = found
    request = TaskRequest(sub.prompt, sub.aspect_ratio, sub.resolution, sub.model, references=refs)
    pricing = services.pricing
    rate = SpendRate(sub.resolution, to_micros(pricing.unit(sub.resolution)), pricing.currency)
    try:
        ids = services.tracker.submit([request], click_token=token, spend=rate)
    except (HiAPIError, ValueError) as exc:
        done[submission_id] = getattr(exc, "message", None) or str(exc)
        return []
    done[submission_id] = ids
    return ids
