"""The campaign rows under the prompt: a table with one column per `{{variable}}`, a CSV/XLSX
upload mapped onto them, and a preview of the first rendered prompts.

The rows live in the draft (session state), so a page switch or an error never
loses them. The table editor is re-seeded from the draft whenever its columns
change or a file replaces the rows.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from components import draft
from components.text import literal
from studio.campaigns import (
    MAX_FILE_BYTES,
    MAX_ROWS,
    PREVIEW_ROWS,
    TableError,
    auto_mapping,
    map_table,
    plan_campaign,
    preview,
    read_table,
    template_problems,
    variables,
)

UPLOAD = "campaign_upload"  # the parsed table of the last file
USE_ASK = "rows_use_ask"  # the file's rows, waiting for replace / append (typed rows exist)
NONE = "— not from the file —"
MAX_FILE_MB = MAX_FILE_BYTES // (1024 * 1024)


def typed_rows() -> list[dict[str, str]]:
    """The rows in the table that hold at least one value (blank rows are not "typed")."""
    return [r for r in draft.rows() if any(str(v).strip() for v in r.values())]


def _use_rows(rows: list[dict[str, str]], how: str) -> None:
    """Button callback: put the file's rows in the table, replacing or after the typed ones."""
    st.session_state.pop(USE_ASK, None)
    draft.set_rows(rows if how == "replace" else [*typed_rows(), *rows])


def _editor_key() -> str:
    return f"rows_editor_{st.session_state.get(draft.ROWS_EPOCH, 0)}"


def _frame(rows: list[dict[str, str]], names: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        [{n: str(r.get(n, "") or "") for n in names} for r in rows], columns=names, dtype=object
    )


def _rows_of(df: pd.DataFrame, names: list[str]) -> list[dict[str, str]]:
    out = []
    for rec in df.to_dict("records"):
        out.append({n: ("" if rec.get(n) is None or pd.isna(rec.get(n)) else str(rec.get(n))) for n in names})
    return out


def _table(names: list[str]) -> None:
    ss = st.session_state
    # New or renamed variables: carry the current rows over into the new columns.
    if ss.get("draft_rows_names") != names:
        ss["draft_rows_names"] = names
        draft.set_rows([{n: r.get(n, "") for n in names} for r in draft.rows()])
    elif _editor_key() not in ss:
        # The editor's own state was dropped (a page switch): seed it from the draft.
        ss[draft.ROWS_BASE] = draft.rows()
    edited = st.data_editor(
        _frame(ss[draft.ROWS_BASE], names),
        key=_editor_key(),
        num_rows="dynamic",
        width="stretch",
        hide_index=True,  # its 0-based numbers would contradict "Row 1" in messages and the zip
        column_config={n: st.column_config.TextColumn("{{" + n + "}}", width="medium") for n in names},
        placeholder="",
    )
    ss[draft.ROWS] = _rows_of(edited, names)


def _upload(names: list[str]) -> None:
    ss = st.session_state
    up = st.file_uploader(
        "Rows from a CSV or XLSX file",
        type=["csv", "tsv", "txt", "xlsx"],
        key="rows_file",
        max_upload_size=MAX_FILE_MB,
        help=f"First row: column names. One row per image set, at most {MAX_ROWS:,} rows and "
        f"{MAX_FILE_MB} MB. Columns are matched to variables by name (case and spaces ignored).",
    )
    if up is None:
        ss.pop(UPLOAD, None)
        ss.pop(USE_ASK, None)
        return
    token = (up.name, up.size, getattr(up, "file_id", ""))
    if ss.get(UPLOAD, {}).get("token") != token:
        try:
            ss[UPLOAD] = {"token": token, "table": read_table(up.name, up.getvalue()), "error": None}
        except TableError as exc:
            ss[UPLOAD] = {"token": token, "table": None, "error": str(exc)}
    info = ss[UPLOAD]
    if info["error"]:
        st.error(literal(info["error"]), icon=":material/error:")  # the sentence names the file
        return
    table = info["table"]
    st.caption(f"{literal(up.name)}: {len(table.rows):,} row{'s' if len(table.rows) != 1 else ''}, columns "
               + ", ".join(literal(c) for c in table.columns))  # fmt: skip
    auto = auto_mapping(names, table.columns)
    mapping: dict[str, str | None] = {}
    cols = st.columns(min(3, len(names)) or 1)
    for i, n in enumerate(names):
        options = [NONE, *table.columns]
        choice = cols[i % len(cols)].selectbox(
            "{{" + n + "}} from",
            options,
            index=options.index(auto[n]) if auto[n] else 0,
            key=f"map_{n}_{hash(token) & 0xFFFF}",
        )
        mapping[n] = None if choice == NONE else choice
    mapped = map_table(table, mapping)
    if mapped.missing:
        st.warning(
            "No column for " + ", ".join(literal("{{" + n + "}}") for n in mapped.missing)
            + ": pick one above, or fill those cells in the table after loading.",
            icon=":material/link_off:",
        )  # fmt: skip
    if mapped.unused:
        st.caption("Not used by the prompt: " + ", ".join(literal(c) for c in mapped.unused))
    n = len(mapped.rows)
    if st.button(f"Use these {n:,} rows", key="rows_use", icon=":material/table_rows:"):
        if typed_rows():  # never drop what was typed without asking
            ss[USE_ASK] = True
        else:
            draft.set_rows(list(mapped.rows))
            st.rerun()
    if ss.get(USE_ASK) and not typed_rows():  # the typed rows were cleared meanwhile
        ss.pop(USE_ASK)
    if ss.get(USE_ASK):
        typed = len(typed_rows())
        with st.container(border=True, key="rows_use_ask"):
            st.warning(
                f"The table already has {typed:,} typed row{'s' if typed != 1 else ''}. "
                f"Replace {'them' if typed != 1 else 'it'} with the file's {n:,}, or add the file's rows after?",
                icon=":material/help:",
            )
            with st.container(horizontal=True, gap="small"):
                st.button(
                    f"Replace with {n:,}",
                    key="rows_use_replace",
                    on_click=_use_rows,
                    args=(list(mapped.rows), "replace"),
                    icon=":material/swap_horiz:",
                )
                st.button(
                    f"Append {n:,}",
                    key="rows_use_append",
                    on_click=_use_rows,
                    args=(list(mapped.rows), "append"),
                    icon=":material/playlist_add:",
                    type="primary",
                )
                st.button("Cancel", key="rows_use_cancel", on_click=lambda: ss.pop(USE_ASK, None))


def variables_panel(error: str | None = None) -> None:
    """Shown when the prompt has `{{variables}}`: the rows, a file upload and a preview."""
    draft.init()
    text = draft.prompt()
    bad = template_problems(text)
    names = variables(text)
    if not names and not bad:
        return
    with st.container(border=True, key="campaign_rows"):
        st.markdown("**Campaign rows** — every row × every picked ratio becomes one image")
        for p in bad:
            st.error(literal(p.message), icon=":material/data_object:")  # it quotes what was typed
        if not names:
            return
        left, right = st.columns([3, 2], gap="medium")
        with left:
            _table(names)
        with right:
            _upload(names)
            st.text_input(
                "Campaign name",
                key=draft.CAMPAIGN_NAME,
                placeholder="e.g. Spring launch — defaults to the date and time",
                max_chars=120,
            )
        rows = draft.rows()
        if error:
            st.error(literal(error), icon=":material/error:")
        else:
            p = plan_campaign(text, rows, draft.ratios(), draft.resolution())
            if p.row_problems:
                st.warning(
                    "\n".join(f"- {m}" for m in p.row_problems[:5])
                    + (f"\n- … and {len(p.row_problems) - 5} more" if len(p.row_problems) > 5 else ""),
                    icon=":material/edit_note:",
                )
        shown = preview(text, rows)
        if shown:
            with st.container(key="campaign_preview"):
                st.caption(f"Preview of the first {min(PREVIEW_ROWS, len(shown))} prompts")
                for i, prompt in enumerate(shown, 1):
                    # st.text shows the prompt literally: no markdown, no HTML.
                    st.text(f"{i}. {prompt[:400]}{'…' if len(prompt) > 400 else ''}")
