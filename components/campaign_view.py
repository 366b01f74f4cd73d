"""Campaigns in the UI: live progress with pause/resume/cancel, failed rows to fix and resubmit,
the rows × ratios grid, the campaign zip, and the estimated spend.

The live parts are fragments rerun by a watch (`components.watch`) when the push
channel tells of a change to one of the campaign's tasks, a new submission, or
a commit by another process; not on a timer."""

from __future__ import annotations

import hashlib
import time

import pandas as pd
import streamlit as st

from access.page import current_author, team_login_on
from components import outage
from components.chrome import spend_suffix
from components.gallery import EVERYONE, MINE, author_controls, author_filter
from components.pickers import shape_svg
from components.queue import status_badge
from components.services import get_services, image_url, show_image
from components.submit import FOCUS, reference_urls
from components.text import literal
from components.watch import version, watch
from studio import routes
from studio.campaign_store import Campaign, CampaignStore
from studio.events import NEW
from studio.pricing import format_money
from studio.usecases import export_campaign, resubmit_campaign

GRID_ROWS = 10
_STATUS = {
    "running": ("Running", "blue", ":material/play_circle:"),
    "paused": ("Paused", "orange", ":material/pause_circle:"),
    "cancelled": ("Cancelled", "gray", ":material/cancel:"),
    "finished": ("Finished", "green", ":material/check_circle:"),
}


def book() -> CampaignStore:
    return CampaignStore(get_services().store)


def campaign_badge(c: Campaign) -> None:
    label, color, icon = _STATUS.get(c.status, (c.status.title(), "gray", ":material/help:"))
    st.badge(label, color=color, icon=icon)


def progress_line(c: Campaign) -> str:
    p = c.progress
    return f"{p.done} done · {p.failed} failed · {p.left} left" + (
        f" · {p.cancelled} cancelled" if p.cancelled else ""
    )


def controls(c: Campaign, key: str) -> None:
    """Pause / resume / cancel the rest, for a campaign that still has work left."""
    tracker = get_services().intake
    if c.progress.finished:
        return
    a, b = st.columns(2)
    if c.state == "paused":
        if a.button("Resume", key=f"{key}_resume_{c.id}", icon=":material/play_arrow:", width="stretch"):
            tracker.resume_campaign(c.id)
            st.rerun(scope="fragment")
    elif a.button(
        "Pause",
        key=f"{key}_pause_{c.id}",
        icon=":material/pause:",
        width="stretch",
        help="Rows not sent yet wait; tasks already at HiAPI finish.",
    ):
        tracker.pause_campaign(c.id)
        st.rerun(scope="fragment")
    with b.popover("Cancel the rest", icon=":material/cancel:", width="stretch"):
        st.write(
            f"Cancel the {c.progress.held} image{'s' if c.progress.held != 1 else ''} not sent yet? "
            "Tasks already at HiAPI finish and are kept."
        )
        if st.button("Yes, cancel them", key=f"{key}_cancel_{c.id}", type="primary"):
            n = tracker.cancel_campaign(c.id)
            st.toast(f"Cancelled {n} image{'s' if n != 1 else ''}.")
            st.rerun(scope="fragment")


def _card(c: Campaign, key: str) -> None:
    with st.container(border=True, key=f"{key}_{c.id}"):
        head = st.columns([4, 2], vertical_alignment="center")
        head[0].markdown(f"**{literal(c.name)}**")
        with head[1]:
            campaign_badge(c)
        if team_login_on():
            st.caption(f"by {literal(c.author)}")  # the identity provider's text: literal
        p = c.progress
        st.progress(
            (p.done + p.failed + p.cancelled) / p.total if p.total else 0.0,
            text=progress_line(c),
        )
        controls(c, key)


RECENT_S = 600  # a finished campaign stays on the Studio page this long after it was made


def _recent(campaigns: list[Campaign], now: float) -> list[Campaign]:
    return [c for c in campaigns if not c.progress.finished or now - c.created_at < RECENT_S]


@st.fragment
@outage.guarded
def active_campaigns() -> None:
    """Campaigns with work left (or finished in the last ten minutes), for the Studio page;
    with the team login on, everyone's or the signed-in person's ("Mine"), each naming its author."""
    since = version(get_services().events)
    now = time.time()
    everyone = _recent(book().campaigns(limit=10), now)
    author = None
    if everyone:
        st.subheader("Campaigns")
        if team_login_on():
            scope = st.segmented_control("Made by", [MINE, EVERYONE], default=EVERYONE, key="sc_scope")
            author = author_filter(scope, None, current_author(), login_on=True)
    recent = everyone if author is None else _recent(book().campaigns(limit=10, author=author), now)
    shown = recent[:6]
    finished = [c.created_at + RECENT_S - now for c in shown if c.progress.finished]
    # A campaign launched elsewhere is a NEW event; one shown changes through its tasks' events.
    watch(
        "studio_campaigns_watch",
        since,
        submissions=[x.submission_id for c in shown for x in book().cells(c.id)],
        kinds=[NEW],
        unknown=True,
        due_in=min(finished) if finished else None,
    )
    if not recent:
        if everyone:
            st.caption("None of yours is running: pick Everyone to see the team's.")
        return
    cols = st.columns(min(3, len(recent)))
    for i, c in enumerate(shown):
        with cols[i % len(cols)]:
            _card(c, "studio_campaign")
    if st.button("Open in Gallery", key="studio_campaigns_open", icon=":material/grid_view:"):
        st.session_state[FOCUS] = recent[0].id
        st.session_state["g_view"] = "Campaigns"
        st.switch_page("app_pages/gallery.py")


# -- the Gallery's campaign view -------------------------------------------------


def _failed_rows(c: Campaign) -> None:
    cells = [x for x in book().cells(c.id) if x.failed or x.cancelled]
    if not cells:
        return
    rows = {r.idx: r for r in book().rows(c.id)}
    reasons: dict[int, list[str]] = {}
    for x in cells:
        why = f"{x.aspect_ratio}: {x.error_code or 'FAILED'} — {x.error_message or 'no reason given'}"
        reasons.setdefault(x.row, []).append(why)
    failed = sum(x.failed for x in cells)
    title = f"{failed} failed" + (f", {len(cells) - failed} cancelled" if len(cells) > failed else "")
    with st.container(border=True, key="failed_rows"):
        st.markdown(f"**{title}** — fix the values and resubmit those images")
        data = [
            {"row": i, **{n: rows[i].values.get(n, "") for n in c.variables}, "reason": "; ".join(reasons[i])}
            for i in sorted(reasons)
            if i in rows
        ]
        df = pd.DataFrame(data, columns=["row", *c.variables, "reason"], dtype=object)
        edited = st.data_editor(
            df,
            key=f"failed_editor_{c.id}_{len(cells)}_{sum(x.submission_id for x in cells)}",
            hide_index=True,
            width="stretch",
            disabled=["row", "reason"],
            column_config={
                "row": st.column_config.NumberColumn("Row", width="small"),
                "reason": st.column_config.TextColumn("Why", width="large"),
                **{n: st.column_config.TextColumn("{{" + n + "}}") for n in c.variables},
            },
        )
        if st.button(
            f"Resubmit {len(cells)} image{'s' if len(cells) != 1 else ''}",
            key=f"resubmit_rows_{c.id}",
            type="primary",
            icon=":material/replay:",
        ):
            edits = {
                int(r["row"]): {n: "" if pd.isna(r[n]) else str(r[n]) for n in c.variables}
                for r in edited.to_dict("records")
            }
            services = get_services()
            try:
                # One intent, one token: these failed cells, resubmitted once however often the
                # click is replayed by overlapping reruns.
                failed = ",".join(str(x.submission_id) for x in sorted(cells, key=lambda x: x.submission_id))
                token = f"resub-{c.id}-" + hashlib.sha256(failed.encode()).hexdigest()[:24]
                # The campaign's references are signed anew: the links it was first sent with expire.
                ids = resubmit_campaign(
                    services.intake,
                    c.id,
                    edits,
                    pricing=services.read_pricing(),
                    model=services.settings.model,
                    click_token=token,
                    sign=reference_urls,
                    author=current_author(),
                )
            except ValueError as exc:
                st.error(literal(exc), icon=":material/error:")
                return
            st.toast(f"Resubmitted {len(ids)} image{'s' if len(ids) != 1 else ''}.")
            st.rerun(scope="fragment")


def _grid(c: Campaign) -> None:
    services = get_services()
    cells = book().cells(c.id)
    rows = book().rows(c.id)
    by_cell = {(x.row, x.aspect_ratio): x for x in cells}
    outputs = services.store.outputs_for([x.submission_id for x in cells])
    pages = max(1, -(-len(rows) // GRID_ROWS))
    page = min(st.session_state.get(f"grid_page_{c.id}", 1), pages)
    shown = rows[(page - 1) * GRID_ROWS : page * GRID_ROWS]
    widths = [2] + [1] * len(c.ratios)
    with st.container(key="campaign_grid"):
        head = st.columns(widths, vertical_alignment="bottom")
        head[0].caption("Row")
        for col, ratio in zip(head[1:], c.ratios, strict=True):
            col.caption(ratio)
        for r in shown:
            with st.container(border=True, key=f"grid_row_{c.id}_{r.idx}"):
                line = st.columns(widths, vertical_alignment="center")
                with line[0]:
                    st.markdown(f"**Row {r.idx}**")
                    st.text("\n".join(f"{k}: {v[:60]}" for k, v in r.values.items()))
                for col, ratio in zip(line[1:], c.ratios, strict=True):
                    with col:
                        _grid_cell(by_cell.get((r.idx, ratio)), outputs, ratio)
    if pages > 1:
        st.pagination(pages, key=f"grid_page_{c.id}")


def _grid_cell(cell, outputs, ratio: str) -> None:
    if cell is None:
        st.caption("—")
        return
    kept = [o for o in outputs.get(cell.submission_id, []) if o.state == "kept" and o.sha256]
    if kept:
        show_image(routes.thumb(kept[0].sha256 or ""))
        return
    status_badge(cell.state, cell.error_code)
    if cell.cancelled:
        st.caption("Cancelled")
    elif cell.failed:
        st.caption(literal(f"{cell.error_code}: {cell.error_message or ''}"[:120]))
    else:
        st.image(shape_svg(ratio, box=48), width=48)


def _zip(c: Campaign) -> None:
    services = get_services()
    kept = book().kept_items(c.id)
    key = f"campaign_zip_{c.id}"
    if st.button(
        f"Prepare campaign zip ({len(kept)} image{'s' if len(kept) != 1 else ''})",
        key=f"campaign_zip_make_{c.id}",
        icon=":material/folder_zip:",
        disabled=not kept,
        help="Every kept image, named by row and ratio, with manifest.csv/json mapping each file to its row.",
    ):
        export = export_campaign(services.store, services.blobs, c.id)
        if export is not None:
            st.session_state[key] = image_url(export.route)
    if st.session_state.get(key):
        st.link_button("Download campaign zip", st.session_state[key], icon=":material/download:")


@st.fragment
@outage.guarded
def _live(campaign_id: int) -> None:
    since = version(get_services().events)
    c = book().campaign(campaign_id)
    if c is None:
        st.info("This campaign no longer exists.")
        return
    # Its tasks' events; NEW for its cells sent again (from another tab: new submission ids).
    watch(
        f"campaign_watch_{c.id}",
        since,
        submissions=[x.submission_id for x in book().cells(c.id)],
        kinds=[NEW],
        unknown=True,
    )
    spent, planned = book().campaign_spend(c.id)
    top = st.columns([3, 1, 1, 1, 1], vertical_alignment="center")
    with top[0]:
        campaign_badge(c)
    p = c.progress
    top[1].metric("Done", p.done)
    top[2].metric("Failed", p.failed)
    top[3].metric("Left", p.left)
    top[4].metric(
        "Spent (est.)",
        format_money(spent, c.currency) + spend_suffix(),
        help=f"Planned {format_money(planned, c.currency)}{spend_suffix()}",
    )
    st.progress((p.total - p.left) / p.total if p.total else 0.0, text=progress_line(c))
    controls(c, "gallery_campaign")
    _failed_rows(c)
    _zip(c)
    _grid(c)


def campaign_gallery() -> None:
    """The Gallery's campaign view: pick a campaign, follow it, fix failures, download it.
    With the team login on, the list is everyone's, one person's or the signed-in person's
    ("Mine"), like the images, and each campaign names its author."""
    login_on = team_login_on()
    author = author_controls(get_services().store, key="gc")
    campaigns = book().campaigns(limit=200, author=author)
    if not campaigns:
        st.info(
            "No campaigns by this person yet: pick Everyone to see the team's."
            if author is not None
            else "No campaigns yet. In the Studio, put {{variables}} in a prompt and add rows.",
            icon=":material/table_rows:",
        )
        return
    ids = [c.id for c in campaigns]
    # Options of a selectbox are plain text: the author needs no escaping here.
    names = {
        c.id: f"{c.name} · {time.strftime('%Y-%m-%d %H:%M', time.localtime(c.created_at))} · "
        f"{c.progress.total} images" + (f" · by {c.author}" if login_on else "")
        for c in campaigns
    }
    focus = st.session_state.get(FOCUS)
    cid = st.selectbox(
        "Campaign",
        ids,
        index=ids.index(focus) if focus in ids else 0,
        format_func=names.get,
        key="g_campaign",
    )
    st.session_state[FOCUS] = cid
    c = next(x for x in campaigns if x.id == cid)
    st.caption(
        f"{len(c.variables)} variable{'s' if len(c.variables) != 1 else ''} · ratios {', '.join(c.ratios)} at "
        f"{c.resolution} · {format_money(c.unit_price, c.currency)} per image"
        + (f" · by {literal(c.author)}" if login_on else "")
    )
    with st.expander("Prompt template"):
        st.code(c.template, language=None, wrap_lines=True)
    _live(cid)


def spend_summary() -> None:
    """Estimated spend: overall, per day and per campaign (successful images only), and per
    person when the team login is on."""
    b = book()
    overall = b.spend("all")
    if not overall:
        return
    sim = spend_suffix()
    text = " · ".join(
        f"{format_money(line.spent, line.currency)}{sim} for {line.images} image{'s' if line.images != 1 else ''}"
        + (f" (+{format_money(line.pending, line.currency)} running)" if line.pending_images else "")
        for line in overall
    )
    with st.expander(f"Estimated spend: {text}", icon=":material/payments:"):
        st.caption(
            "From the price table in Settings at the time of each click; failed and cancelled images are "
            "not counted. "
            + (
                "Simulator mode: nothing was charged; the amounts show what HiAPI would bill."
                if sim
                else "HiAPI's billing is the final word."
            )
        )
        per_person = team_login_on()
        a, b_, *c_ = st.columns(3 if per_person else 2)
        with a:
            st.markdown("**Per day**")
            st.dataframe(_spend_frame(b.spend("day")), hide_index=True, width="stretch")
        with b_:
            st.markdown("**Per campaign**")
            st.dataframe(_spend_frame(b.spend("campaign")), hide_index=True, width="stretch")
        if per_person:
            with c_[0]:
                st.markdown("**Per person**")
                st.dataframe(_spend_frame(b.spend("author")), hide_index=True, width="stretch")


def _spend_frame(lines) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "": line.key,
                "images": line.images,
                "spent": format_money(line.spent, line.currency),
                "running": format_money(line.pending, line.currency) if line.pending_images else "",
            }
            for line in lines
        ]
    )
