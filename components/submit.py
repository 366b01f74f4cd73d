"""The Generate path: validate with the shared rules, then hand the requests to the tracker."""

from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

from components import draft
from components.services import get_services
from studio.errors import HiAPIError
from studio.models import TaskRequest
from studio.ratios import combination_problem
from studio.validation import first_problem_by_field, validate_request

ERRORS = "submit_errors"
NOTICE = "submit_notice"


@dataclass
class Plan:
    """What one click would send: valid requests, and what is skipped and why."""

    requests: list[TaskRequest] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def plan(prompt: str, ratios: list[str], resolution: str, model: str) -> Plan:
    """One request per valid ratio; field errors if nothing can be sent."""
    p = Plan()
    if not ratios:
        p.errors["aspect_ratio"] = "Pick at least one aspect ratio."
    # Prompt and resolution rules do not depend on the ratio: check them once.
    base = first_problem_by_field(validate_request(prompt, "auto", resolution))
    base.pop("aspect_ratio", None)
    p.errors.update(base)
    if p.errors:
        return p
    for ratio in ratios:
        why = combination_problem(ratio, resolution)
        if why:
            p.skipped.append((ratio, why))
            continue
        problems = validate_request(prompt, ratio, resolution)
        if problems:
            p.errors.update(first_problem_by_field(problems))
            return p
        p.requests.append(TaskRequest(prompt, ratio, resolution, model))
    if not p.requests:
        p.errors["aspect_ratio"] = (
            "None of the picked ratios works at " + resolution + ": " + "; ".join(why for _, why in p.skipped)
        )
    return p


def on_generate() -> None:
    """Button callback: runs before the page, so errors render beside their widgets."""
    services = get_services()
    p = plan(draft.prompt(), draft.ratios(), draft.resolution(), services.settings.model)
    st.session_state[ERRORS] = p.errors
    st.session_state[NOTICE] = None
    if p.errors:
        return
    try:
        ids = services.tracker.submit(p.requests)
    except HiAPIError as exc:
        st.session_state[ERRORS] = {"general": exc.message}
        return
    n = len(ids)
    note = f"Submitted {n} image{'s' if n != 1 else ''}."
    if p.skipped:
        note += " Skipped " + ", ".join(f"{r} ({why})" for r, why in p.skipped)
    st.session_state[NOTICE] = note


def errors() -> dict[str, str]:
    return st.session_state.get(ERRORS) or {}


def generate_button() -> None:
    n = len([r for r in draft.ratios() if not combination_problem(r, draft.resolution())])
    label = f"Generate {n} image{'s' if n != 1 else ''}" if n > 1 else "Generate"
    st.button(
        label,
        key="generate",
        type="primary",
        on_click=on_generate,
        width="stretch",
        help="Ctrl/⌘+Enter in the prompt does the same.",
    )
    notice = st.session_state.get(NOTICE)
    if notice:
        st.success(notice, icon=":material/send:")
    general = errors().get("general")
    if general:
        st.error(general, icon=":material/error:")
