"""The delivery-kit panel: pick placements, see where each comes from, build, download.

Building runs on the core's `KitBuilder` thread, never on the page thread: Build
queues a job and a small fragment shows its progress, rerun by a watch
(`components.watch`) each time the builder tells the bus it wrote a file; when
the kit is written one full run shows the download (the page stays usable
meanwhile).
"""

from __future__ import annotations

import streamlit as st

from components import outage
from components.fidelity import md
from components.services import get_services, image_url, show_image
from components.watch import version, watch
from studio.kit import DEFAULT_PLACEMENTS, PLACEMENTS, PLACEMENTS_BY_KEY, KitEntry, KitJob, plan_kit
from studio.ratios import RESOLUTIONS, combination_problem
from studio.usecases import start_kit


def _label(key: str) -> str:
    p = PLACEMENTS_BY_KEY[key]
    return f"{p.label} {p.size_label}"


def sharper_hint(entries: list[KitEntry]) -> str:
    """What to generate for a sharper file: only resolutions above the source's that the ratio allows."""
    bigger: dict[str, list[str]] = {}
    for e in entries:
        ratio, res = e.source.aspect_ratio, e.source.resolution
        above = RESOLUTIONS[RESOLUTIONS.index(res) + 1 :] if res in RESOLUTIONS else ()
        bigger[ratio] = [r for r in above if not combination_problem(ratio, r)]
    ask = [f"{ratio} at {' or '.join(rs)}" for ratio, rs in sorted(bigger.items()) if rs]
    largest = [ratio for ratio, rs in sorted(bigger.items()) if not rs]
    parts = []
    if ask:
        parts.append("Generate " + "; ".join(ask) + " for a sharper file.")
    if largest:
        parts.append(
            ", ".join(largest) + (" is" if len(largest) == 1 else " are") + " already at the largest size "
            "HiAPI makes for that ratio."
        )
    return " ".join(parts)


def kit_panel(creative_id: str, *, key: str) -> None:
    """Everything to make one creative's kit; `key` keeps widgets apart per place shown."""
    services = get_services()
    items = services.store.creative_items(creative_id)
    if not items:
        st.caption("A kit can be made once an image of this creative is kept.")
        return
    ratios = ", ".join(sorted({i.aspect_ratio for i in items}))
    st.caption(
        f"Each placement is cut from the closest of this creative's {len(items)} image"
        f"{'s' if len(items) != 1 else ''} ({ratios}): scaled to cover, centre-cropped to exact pixels."
    )
    picks = st.pills(
        "Placements",
        [p.key for p in PLACEMENTS],
        selection_mode="multi",
        default=list(DEFAULT_PLACEMENTS),
        format_func=_label,
        key=f"{key}_placements",
    )
    try:
        plan = plan_kit(items, picks or [])
    except ValueError as exc:
        st.info(str(exc), icon=":material/info:")
        return
    lines = ["| placement | pixels | from | note |", "| --- | --- | --- | --- |"]
    for e in plan:
        note = md(e.note) if e.note else "—"
        if e.upscaled:
            note = f":orange[:material/warning: {note}]"
        lines.append(
            f"| {md(e.placement.label)} | {e.placement.size_label} | "
            f"{e.source.aspect_ratio} · {e.source.width}×{e.source.height} | {note} |"
        )
    st.markdown("\n".join(lines))
    smaller = [e for e in plan if e.upscaled]
    if smaller:
        st.warning(
            f"{len(smaller)} placement{'s are' if len(smaller) != 1 else ' is'} larger than the closest "
            "image and will be upscaled (marked in the contact sheet and the manifest). "
            + sharper_hint(smaller),
            icon=":material/warning:",
        )
    if st.button("Build kit", key=f"{key}_build", icon=":material/package_2:", type="primary"):
        try:
            if services.kits is None:
                raise ValueError("Kits cannot be built here: the kit builder is off.")
            job = start_kit(services.kits, services.store, creative_id, picks or [])
        except ValueError as exc:
            st.error(str(exc), icon=":material/error:")
        else:
            st.session_state[f"{key}_job"] = job.id
    job_id = st.session_state.get(f"{key}_job")
    if not job_id:
        return
    job = services.kits.status(job_id)
    if job is None:  # the server restarted since: the job is gone
        st.session_state.pop(f"{key}_job", None)
    elif job.state == "running":
        _progress(job_id)
    else:
        _result(job)


@st.fragment
@outage.guarded
def _progress(job_id: str) -> None:
    since = version(get_services().events)
    job = get_services().kits.status(job_id)
    if job is None or job.state != "running":
        st.rerun()  # finished: one full run swaps the bar for the download
    st.progress(job.fraction, text=f"Writing the kit… {job.done} of {job.total} files")
    watch(f"kit_watch_{job_id}", since, job=job_id, gap=0.2)


def _result(job: KitJob) -> None:
    if job.state == "failed" or job.kit is None:
        st.error(job.error or "The kit could not be written.", icon=":material/error:")
        return
    kit = job.kit
    st.link_button(
        f"Download kit ({kit.zip_name}, {len(kit.entries)} files + contact sheet)",
        image_url(kit.zip_route),
        icon=":material/download:",
    )
    show_image(kit.contact_route, caption="Contact sheet: every format side by side")
