"""The Generate button: the core plans the draft and prices it, this draws it and calls `generate`.

A prompt without variables sends one task per ratio; a prompt with `{{variables}}`
sends every row × every ratio as one campaign. Above the threshold in Settings
(images or cost) a dialog states the count and the estimated cost and waits for
a confirmation; what is confirmed is exactly what is sent.

One creative per draft, by construction: a click on Generate, Ctrl/⌘+Enter or
a confirm sends the draft as it stands under a click token, and while the draft
(prompt, ratios, resolution, rows, campaign name, quality, background,
references) is the one last sent, every further click carries that creative's
token again and records nothing new — whichever button it lands on, the one
the first click was drawn with or the one its rerun redrew, however late the
second click of a double click or a mashed Enter arrives. A new creative needs
a changed draft, or "Another variant" (`ANOTHER`) first: it sends nothing
itself, it only lets the next Generate of the same draft make a new creative.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from decimal import Decimal

import streamlit as st

from access.page import current_author
from components import draft, outage
from components.chrome import spend_suffix
from components.services import get_services
from components.text import literal
from studio.campaigns import (
    CampaignPlan,
    PromptPlan,
    plan_campaign,
    plan_generation,
    ratio_problem,
    variables,
)
from studio.errors import HiAPIError
from studio.health import SENTENCES
from studio.output_storage import storage_value
from studio.pricing import Pricing
from studio.ratios import EXT_ROUTE, combination_problem
from studio.services import Services
from studio.usecases import Quote, generate, quote, sign_references

ERRORS = "submit_errors"
NOTICE = "submit_notice"
PENDING = "submit_pending"  # what the confirmation dialog is asking about
FOCUS = "campaign_focus"  # the campaign the Gallery's campaign view opens on
TOKEN = "generate_token"  # the click token the Generate button carries now
LAST = "generate_last"  # the last creative sent: its token, its draft, the button press that made it
ANOTHER = "another_variant"  # the key of the button that lets the same draft make a new creative
ARMED = "another_variant_for"  # the draft "Another variant" was pressed for
SAID_FOR = "submit_said_for"  # the draft the notice and errors were written for
FIELD_NAMES = {
    "prompt": "Prompt",
    "aspect_ratio": "Aspect ratio",
    "resolution": "Resolution",
    "rows": "Rows",
    "references": "Reference images",
    "quality": "Quality",
    "background": "Background",
}


def current_plan(model: str) -> PromptPlan | CampaignPlan:
    """The plan for the draft as it stands (the core's one planner): a campaign when the prompt has variables.

    Reference images travel as signed URLs made now (valid for HiAPI's replay
    window); when HiAPI could not reach them, nothing can be sent and the
    plan says what to set.
    """
    text = draft.prompt()
    urls: tuple[str, ...] = ()
    if draft.references():
        found = reference_urls(draft.references())
        if isinstance(found, str):
            failed = PromptPlan(draft.resolution())
            failed.problems["references"] = found
            return failed
        urls = found
    return plan_generation(
        text,
        draft.rows(),
        draft.ratios(),
        draft.resolution(),
        model,
        urls,
        quality=draft.quality(),
        background=draft.background(),
        storage=storage_value(get_services().store),
    )


def reference_urls(names: Sequence[str], services: Services | None = None) -> tuple[str, ...] | str:
    """The signed URLs HiAPI fetches these references from, or the sentence saying why it cannot."""
    services = services or get_services()
    base = services.reference_base(st.config.get_option("server.port"))
    return sign_references(services.references, base, names, simulated=services.settings.simulated)


def count_of(p: PromptPlan | CampaignPlan) -> int:
    return p.images


def _summary(p: PromptPlan | CampaignPlan, pricing: Pricing) -> dict:
    """What the confirmation states, frozen at the click (the quote is what is sent and priced)."""
    q = quote(p, pricing)
    n = q.images
    shape = (
        f"{len(p.prompts)} row{'s' if len(p.prompts) != 1 else ''} × {len(p.ratios)} ratio"
        f"{'s' if len(p.ratios) != 1 else ''}"
        if isinstance(p, CampaignPlan)
        else f"{n} ratio{'s' if n != 1 else ''}"
    )
    return {
        "quote": q,
        "plan": p,
        "images": n,
        "resolution": q.resolution,
        "cost": q.cost,
        "shape": shape,
        "money": pricing.money(q.cost),
        "unit_money": pricing.money(q.unit),
        "done": False,
    }


def _token() -> str:
    """The token of the next click: one token, at most one creative (see Tracker.submit)."""
    return st.session_state.setdefault(TOKEN, uuid.uuid4().hex)


def _draft_signature() -> str:
    """What the user has typed and picked; a notice or an error belongs to one signature."""
    return json.dumps(
        [
            draft.prompt(),
            draft.ratios(),
            draft.resolution(),
            draft.rows(),
            st.session_state.get(draft.CAMPAIGN_NAME),
            draft.quality(),
            draft.background(),
            draft.references(),
        ],
        sort_keys=True,
        default=str,
    )


def click_token(bound: str) -> str:
    """The token a press of the Generate button drawn with `bound` sends under.

    While the draft is the one the last creative was sent from — or this is
    the very press that sent it, replayed — the answer is that creative's
    token: a double click, a mashed Ctrl/⌘+Enter or a replayed callback
    records nothing new, even when the second press lands on the button the
    first one's rerun redrew (which carries a fresh `bound`). Otherwise this
    press starts a new creative under its own `bound` token. The choice is
    noted before anything is sent, so a press interrupted mid-send is
    answered the same way next time.
    """
    ss = st.session_state
    signature = _draft_signature()
    last = ss.get(LAST)
    if last and (last["draft"] == signature or last["bound"] == bound):
        return last["token"]
    ss[LAST] = {"token": bound, "draft": signature, "bound": bound, "sent": False}
    return bound


def _sent_already(token: str) -> bool:
    """Whether `token` is the last creative's and it was recorded (so asking to confirm it is moot)."""
    last = st.session_state.get(LAST)
    return bool(last and last["token"] == token and last["sent"])


def another_variant() -> None:
    """Let the next Generate of the unchanged draft make a new creative; sends nothing itself.

    A click of its own, apart from Generate, so that no double click, mashed
    Enter or rerun can reach it by accident; pressing it twice is harmless.
    """
    st.session_state.pop(LAST, None)
    st.session_state[NOTICE] = None
    st.session_state[ARMED] = _draft_signature()


def _say(*, errors: dict[str, str] | None = None, notice: str | None = None) -> None:
    st.session_state[ERRORS] = errors or {}
    st.session_state[NOTICE] = notice
    st.session_state[SAID_FOR] = _draft_signature()


def forget_stale() -> None:
    """Drop the notice and errors once the draft they were about has changed."""
    ss = st.session_state
    if (ss.get(NOTICE) or ss.get(ERRORS)) and ss.get(SAID_FOR) != _draft_signature():
        ss[NOTICE] = None
        ss[ERRORS] = {}


def _send(summary: dict) -> None:
    """Hand a confirmed (or below-threshold) quote to `generate`; notes go to session state.

    The summary carries the click's token (`click_token`): sending it again (a
    rerun that calls the callback twice, a double click on the confirm or on
    Generate) records nothing new.
    """
    services = get_services()
    q: Quote = summary["quote"]
    token = summary["token"]
    bound = summary.get("bound", token)
    try:
        done = generate(
            services.intake,
            q,
            model=services.settings.model,
            click_token=token,
            campaign_name=st.session_state.get(draft.CAMPAIGN_NAME, "") or "",
            author=current_author(),
        )
    except (HiAPIError, ValueError) as exc:
        _say(errors={"general": getattr(exc, "message", None) or str(exc)})
        return
    except Exception as exc:
        # The database went away: the click's one transaction was not written, so nothing is
        # sent; the same click (its token) after it is back still makes one creative.
        if not _outage_said(exc):
            raise
        return
    n = len(done.submission_ids)
    if done.campaign_id is not None:
        st.session_state[FOCUS] = done.campaign_id
        note = f"Campaign “{done.campaign_name}” started: {n} image{'s' if n != 1 else ''}"
    else:
        note = f"Submitted {n} image{'s' if n != 1 else ''}"
    last = st.session_state.get(LAST)
    if last and last["token"] == token:
        last["sent"] = True
    if st.session_state.get(TOKEN) == bound:
        # The redrawn button gets a fresh token, used only once the draft changes (`click_token`).
        st.session_state[TOKEN] = uuid.uuid4().hex
    if summary["cost"] > 0:
        note += f" · ≈{summary['money']}{spend_suffix()}"
    note += "."
    if q.plan.skipped:
        note += " Skipped " + ", ".join(f"{r} ({why})" for r, why in q.plan.skipped)
    _say(notice=note)


def on_generate(token: str) -> None:
    """Button callback (runs before the page, so errors render beside their widgets).

    `token` is bound when the button is drawn, so every call for one click —
    Streamlit may run a click's callback again when reruns overlap — carries
    the same token; `click_token` turns it into the creative's token, so a
    press on the unchanged draft sends at most once in all. A press on a
    creative already recorded shows its notice again, with no dialog to confirm.
    """
    services = get_services()
    p = current_plan(services.settings.model)
    errors = dict(p.problems)
    _say(errors=errors)
    st.session_state[PENDING] = None
    if errors:
        return
    try:
        summary = _summary(
            p, services.read_pricing()
        )  # the click is quoted at today's prices, never old ones
        summary["bound"] = token
        summary["token"] = click_token(token)
        if summary["quote"].needs_confirmation and not _sent_already(summary["token"]):
            st.session_state[PENDING] = summary  # the page opens the dialog
            return
    except Exception as exc:  # the price table and the click's record are in the database
        if not _outage_said(exc):
            raise
        return
    _send(summary)


def _outage_said(exc: Exception) -> bool:
    """An outage met by a click: noticed, and said beside Generate (nothing was sent). False
    when `exc` is another kind of error (the caller re-raises it)."""
    dep = get_services().health.noticed_error(exc)
    if dep is None:
        return False
    _say(errors={"general": SENTENCES[dep]})
    return True


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
    """The last click's problems, while the draft is still the one they were about."""
    forget_stale()
    return st.session_state.get(ERRORS) or {}


def button_label(n: int, cost: Decimal, pricing: Pricing) -> str:
    label = f"Generate {n} image{'s' if n != 1 else ''}" if n else "Generate"
    if n and cost > 0:
        label += f" · ≈{pricing.money(cost)}"
    return label


def generate_button() -> None:
    """Generate, its cost, and every message about sending, in one place beside the prompt."""
    services = get_services()
    pricing = services.pricing  # the last prices read, while the database is away
    away = outage.database_down()
    forget_stale()
    text = draft.prompt()
    res = draft.resolution()
    i2i = draft.image_to_image()
    campaign = bool(variables(text))
    quality = None if campaign else draft.quality()  # campaigns go on the default route
    route = EXT_ROUTE if quality is not None else None
    ratios = [r for r in draft.ratios() if not combination_problem(r, res, image_to_image=i2i, route=route)]
    if campaign:
        # For the count only the image-to-image rule matters, not the URLs themselves.
        p = plan_campaign(text, draft.rows(), draft.ratios(), res, references=("counted",) if i2i else ())
        n = len(p.prompts) * len(p.ratios) if not p.problems else 0
        if not n:
            rows = len([r for r in draft.rows() if any(str(v).strip() for v in r.values())])
            n = rows * len(ratios)
    else:
        n = len(ratios)
    # Only what the pickers decide disables the button: the prompt commits on
    # blur, so a click right after typing must still reach the callback.
    blocked = ratio_problem(draft.ratios(), res, route, image_to_image=i2i)
    if away:  # a click could not be recorded, so it is not offered (the banner says why)
        blocked = "Generate waits for the studio's database to be back; what you typed is kept."
    token = _token()
    last = st.session_state.get(LAST)
    signature = _draft_signature()
    notice = st.session_state.get(NOTICE)
    offer = bool(last and last["sent"] and last["draft"] == signature)
    armed = not last and st.session_state.get(ARMED) == signature
    # "Another variant" sits beside Generate (one row, so the results stay in a phone's first
    # screen) but outside the Generate box: no click or Ctrl/⌘+Enter meant for Generate lands on it.
    with st.container(key="generate_row", horizontal=True, vertical_alignment="center", wrap=False):
        with st.container(key="generate_box"):
            st.button(
                button_label(n, pricing.estimate(n, res, quality), pricing),
                key=f"generate_{token}",
                type="primary",
                on_click=on_generate,
                args=(token,),
                disabled=blocked is not None,
                width="stretch",
                help="Ctrl/⌘+Enter in the prompt does the same. The cost is an estimate from the price table in Settings.",
            )
            if blocked:
                with st.container(key="generate_blocked"):
                    st.caption(f":material/block: {literal(blocked)}")
            for name, message in errors().items():
                if name == "general":
                    st.error(literal(message), icon=":material/error:")
                elif not (blocked and name == "aspect_ratio"):
                    st.error(
                        f"{FIELD_NAMES.get(name, name.title())}: {literal(message)}", icon=":material/error:"
                    )
        if offer:
            with st.container(key="another_variant_box", width="content"):
                st.button(
                    "Another variant",
                    key=ANOTHER,
                    icon=":material/add:",
                    type="tertiary",
                    on_click=another_variant,
                    help="Generate again sends nothing new while the draft is the one just sent. "
                    "Press this first to make another creative of the same prompt and settings.",
                )
    if notice or armed:
        with st.container(key="sent_row"):
            if notice:
                st.success(literal(notice), icon=":material/send:")
            if armed:
                with st.container(
                    key="another_variant_note"
                ):  # its own key: never mistaken for the button's box
                    st.caption(":material/add: The next Generate makes another creative of this draft.")
