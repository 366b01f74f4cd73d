"""The Generate path: validate with the shared rules, say what it costs, then hand the work to the tracker.

A prompt without variables sends one task per ratio; a prompt with `{{variables}}`
sends every row × every ratio as one campaign. Above the threshold in Settings
(images or cost) a dialog states the count and the estimated cost and waits for
a confirmation; what is confirmed is exactly what is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import streamlit as st

from components import draft
from components.services import get_services
from studio.campaign_store import CampaignStore, default_name, launch
from studio.campaigns import CampaignPlan, plan_campaign, variables
from studio.errors import HiAPIError
from studio.models import TaskRequest
from studio.pricing import Pricing, to_micros
from studio.ratios import combination_problem
from studio.validation import first_problem_by_field, validate_request

ERRORS = "submit_errors"
NOTICE = "submit_notice"
PENDING = "submit_pending"  # what the confirmation dialog is asking about
FOCUS = "campaign_focus"  # the campaign the Gallery's campaign view opens on


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


def current_plan(model: str) -> Plan | CampaignPlan:
    """The plan for the draft as it stands: a campaign when the prompt has variables."""
    text = draft.prompt()
    if variables(text):
        return plan_campaign(text, draft.rows(), draft.ratios(), draft.resolution())
    return plan(text, draft.ratios(), draft.resolution(), model)


def count_of(p: Plan | CampaignPlan) -> int:
    return p.images if isinstance(p, CampaignPlan) else len(p.requests)


def _summary(p: Plan | CampaignPlan, pricing: Pricing) -> dict:
    """What the confirmation states, frozen at the click."""
    n = count_of(p)
    res = p.resolution if isinstance(p, CampaignPlan) else draft.resolution()
    cost = pricing.estimate(n, res)
    shape = (
        f"{len(p.prompts)} row{'s' if len(p.prompts) != 1 else ''} × {len(p.ratios)} ratio"
        f"{'s' if len(p.ratios) != 1 else ''}"
        if isinstance(p, CampaignPlan)
        else f"{n} ratio{'s' if n != 1 else ''}"
    )
    return {
        "plan": p,
        "images": n,
        "resolution": res,
        "cost": cost,
        "unit": pricing.unit(res),
        "shape": shape,
        "money": pricing.money(cost),
        "unit_money": pricing.money(pricing.unit(res)),
        "done": False,
    }


def _send(summary: dict) -> None:
    """Hand a confirmed (or below-threshold) plan to the tracker; notes go to session state."""
    services = get_services()
    pricing = services.pricing
    p = summary["plan"]
    try:
        if isinstance(p, CampaignPlan):
            name = st.session_state.get(draft.CAMPAIGN_NAME, "").strip() or default_name()
            cid, ids = launch(services.tracker, p, name=name, pricing=pricing, model=services.settings.model)
            st.session_state[FOCUS] = cid
            note = f"Campaign “{name}” started: {len(ids)} image{'s' if len(ids) != 1 else ''}"
        else:
            ids = services.tracker.submit(p.requests)
            CampaignStore(services.store).record_spend(
                ids,
                resolution=summary["resolution"],
                unit_micros=to_micros(summary["unit"]),
                currency=pricing.currency,
            )
            note = f"Submitted {len(ids)} image{'s' if len(ids) != 1 else ''}"
    except (HiAPIError, ValueError) as exc:
        st.session_state[ERRORS] = {"general": getattr(exc, "message", None) or str(exc)}
        return
    if summary["cost"] > 0:
        note += f" · ≈{summary['money']}"
    note += "."
    if p.skipped:
        note += " Skipped " + ", ".join(f"{r} ({why})" for r, why in p.skipped)
    st.session_state[NOTICE] = note


def on_generate() -> None:
    """Button callback: runs before the page, so errors render beside their widgets."""
    services = get_services()
    p = current_plan(services.settings.model)
    errors = dict(p.errors) if isinstance(p, Plan) else dict(p.problems)
    st.session_state[ERRORS] = errors
    st.session_state[NOTICE] = None
    st.session_state[PENDING] = None
    if errors:
        return
    pricing = services.pricing
    summary = _summary(p, pricing)
    if pricing.needs_confirmation(summary["images"], summary["resolution"]):
        st.session_state[PENDING] = summary  # the page opens the dialog
        return
    _send(summary)


@st.dialog("Confirm generation", on_dismiss=lambda: st.session_state.pop(PENDING, None))
def _confirm(summary: dict) -> None:
    n = summary["images"]
    with st.container(key="confirm_text"):
        st.markdown(
            f"Generate **{n} images** ({summary['shape']} at {summary['resolution']}) "
            f"for about **{summary['money']}**?"
        )
        st.caption(
            f"{n} × {summary['unit_money']} per {summary['resolution']} image, from the price table in "
            "Settings. HiAPI's own pricing page is the final word."
        )
    p = summary["plan"]
    if isinstance(p, CampaignPlan):
        st.caption(
            "Tasks are sent a few at a time (the limit in Settings); you can pause or cancel the rest."
        )
    a, b = st.columns(2)
    if a.button(f"Generate {n} images", key="confirm_generate", type="primary", width="stretch"):
        if not summary["done"]:  # a double click sends once
            summary["done"] = True
            st.session_state.pop(PENDING, None)
            _send(summary)
        st.rerun()
    if b.button("Cancel", key="confirm_cancel", width="stretch"):
        st.session_state.pop(PENDING, None)
        st.rerun()


def confirm_if_pending() -> None:
    """Open the confirmation dialog when the last click asked for one."""
    summary = st.session_state.get(PENDING)
    if summary and not summary["done"]:
        _confirm(summary)


def errors() -> dict[str, str]:
    return st.session_state.get(ERRORS) or {}


def button_label(n: int, cost: Decimal, pricing: Pricing) -> str:
    label = f"Generate {n} image{'s' if n != 1 else ''}" if n else "Generate"
    if n and cost > 0:
        label += f" · ≈{pricing.money(cost)}"
    return label


def generate_button() -> None:
    services = get_services()
    pricing = services.pricing
    text = draft.prompt()
    res = draft.resolution()
    ratios = [r for r in draft.ratios() if not combination_problem(r, res)]
    if variables(text):
        p = plan_campaign(text, draft.rows(), draft.ratios(), res)
        n = len(p.prompts) * len(p.ratios) if not p.problems else 0
        if not n:
            rows = len([r for r in draft.rows() if any(str(v).strip() for v in r.values())])
            n = rows * len(ratios)
    else:
        n = len(ratios)
    st.button(
        button_label(n, pricing.estimate(n, res), pricing),
        key="generate",
        type="primary",
        on_click=on_generate,
        width="stretch",
        help="Ctrl/⌘+Enter in the prompt does the same. The cost is an estimate from the price table in Settings.",
    )
    notice = st.session_state.get(NOTICE)
    if notice:
        st.success(notice, icon=":material/send:")
    general = errors().get("general")
    if general:
        st.error(general, icon=":material/error:")
