"""Campaigns: one prompt with `{{name}}` variables, rows of values, several ratios.

Contract:
- A variable is `{{name}}` (spaces inside the braces allowed): `name` starts
  with a letter or `_` and goes on with letters, digits or `_`. Names are
  case-sensitive. `\\{{` writes a literal `{{`; any other `{{...}}` is a
  problem the user must fix, so a typo never reaches HiAPI as text.
- Values are inserted literally: a value that itself contains `{{x}}` is not
  expanded again. Every variable needs a non-blank value in every row.
- Rows come from the table editor or a file: CSV (UTF-8, comma, semicolon or
  tab) or XLSX (first sheet; needs the optional `openpyxl`). Files are refused
  with a sentence naming the problem and what to do: wrong encoding, empty,
  ragged lines, duplicate or blank headers, more than `MAX_ROWS` rows.
- Every row × every valid ratio is one task. A campaign holds at most
  `MAX_IMAGES` tasks.
This module never imports streamlit and does no I/O beyond parsing bytes.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import unicodedata
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .models import TaskRequest
from .ratios import combination_problem
from .validation import Problem, first_problem_by_field, validate_request

MAX_ROWS = 1_000  # rows per campaign (a table or a file)
MAX_IMAGES = 2_000  # rows × ratios per campaign
MAX_FILE_BYTES = 5 * 1024 * 1024
PREVIEW_ROWS = 3

# `\{{` is an escaped literal; `{{ name }}` a variable; any other `{{...}}` is flagged.
_TOKEN = re.compile(r"\\\{\{|\{\{(.*?)\}\}", re.DOTALL)
_NAME = re.compile(r"[^\W\d]\w*\Z")


class TableError(ValueError):
    """A table or file that cannot be used, with a sentence saying what to do."""


# -- variables -------------------------------------------------------------------


def variables(template: str) -> list[str]:
    """Variable names in order of first appearance, each once."""
    seen: dict[str, None] = {}
    for m in _TOKEN.finditer(template or ""):
        inner = m.group(1)
        if inner is not None and _NAME.match(inner.strip()):
            seen.setdefault(inner.strip(), None)
    return list(seen)


def template_problems(template: str) -> list[Problem]:
    """Placeholders that are not valid variables (a typo, or a `{{` meant literally)."""
    out: list[Problem] = []
    for m in _TOKEN.finditer(template or ""):
        inner = m.group(1)
        if inner is None or _NAME.match(inner.strip()):
            continue
        shown = m.group(0) if len(m.group(0)) <= 40 else m.group(0)[:37] + "…"
        out.append(
            Problem(
                "prompt",
                f"{shown} is not a variable: names start with a letter and use letters, digits or _ "
                r"(e.g. {{product}}). To write {{ literally, type \{{.",
            )
        )
    return out


def render(template: str, values: Mapping[str, object]) -> str:
    """The prompt with each `{{name}}` replaced by its value (inserted literally).

    Raises KeyError naming the first variable without a (non-blank) value.
    """

    def sub(m: re.Match[str]) -> str:
        inner = m.group(1)
        if inner is None:
            return "{{"  # the escape `\{{`
        name = inner.strip()
        if not _NAME.match(name):
            return m.group(0)
        value = values.get(name)
        text = "" if value is None else str(value).strip()
        if not text:
            raise KeyError(name)
        return text

    return _TOKEN.sub(sub, template or "")


# -- tables ----------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """Rows read from a file: the header's column names and one dict per row."""

    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]
    source: str = ""


def _normal(name: str) -> str:
    text = unicodedata.normalize("NFKC", name).strip().casefold()
    return re.sub(r"[\s\-]+", "_", text)


def auto_mapping(names: Sequence[str], columns: Sequence[str]) -> dict[str, str | None]:
    """Each variable's column, matched by name ignoring case, spaces and dashes."""
    by_norm: dict[str, str] = {}
    for c in columns:
        by_norm.setdefault(_normal(c), c)
    return {n: by_norm.get(_normal(n)) for n in names}


@dataclass(frozen=True)
class MappedRows:
    """A table projected onto the prompt's variables."""

    rows: tuple[dict[str, str], ...]
    missing: tuple[str, ...]  # variables with no column
    unused: tuple[str, ...]  # columns the prompt does not use


def map_table(table: Table, mapping: Mapping[str, str | None]) -> MappedRows:
    """One row per table row with a value per variable (blank when unmapped)."""
    used = {c for c in mapping.values() if c}
    rows = tuple({var: (r.get(col, "") if col else "") for var, col in mapping.items()} for r in table.rows)
    missing = tuple(v for v, c in mapping.items() if not c)
    unused = tuple(c for c in table.columns if c not in used)
    return MappedRows(rows, missing, unused)


def _check_size(data: bytes, what: str) -> None:
    if len(data) > MAX_FILE_BYTES:
        raise TableError(
            f"The {what} is {len(data) / 1e6:.1f} MB; the limit is {MAX_FILE_BYTES // (1024 * 1024)} MB. "
            f"A campaign takes at most {MAX_ROWS:,} rows: split the file."
        )
    if not data.strip():
        raise TableError(
            f"The {what} is empty: it needs a header row naming the columns and at least one row of values."
        )


def _too_many(n: int | str) -> TableError:
    return TableError(
        f"The file has {n} rows; a campaign takes at most {MAX_ROWS:,}. "
        "Split it into several files and run one campaign per file."
    )


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TableError(
            f"The file is not UTF-8 text (byte 0x{data[exc.start]:02X} on line {line}). "
            "Save it as 'CSV UTF-8' (Excel: File › Save As › CSV UTF-8) or upload the .xlsx instead."
        ) from None


def _header(raw: Sequence[str]) -> tuple[str, ...]:
    cols = [c.strip() for c in raw]
    while cols and not cols[-1]:  # trailing empty cells from spreadsheet exports
        cols.pop()
    if not cols:
        raise TableError("The first row must name the columns (e.g. product, headline); it is empty.")
    for i, c in enumerate(cols, 1):
        if not c:
            raise TableError(f"Column {i} has no name in the header row: name it or delete the column.")
    seen: dict[str, int] = {}
    for i, c in enumerate(cols, 1):
        key = _normal(c)
        if key in seen:
            raise TableError(
                f"Columns {seen[key]} and {i} are both named {c!r}: give each column its own name."
            )
        seen[key] = i
    return tuple(cols)


def _rows(header: tuple[str, ...], lines: Iterable[tuple[int, list[str]]]) -> tuple[dict[str, str], ...]:
    rows: list[dict[str, str]] = []
    for line_no, cells in lines:
        cells = [c.strip() for c in cells]
        if not any(cells):
            continue  # blank lines are not rows
        extra = cells[len(header) :]
        if any(extra):
            raise TableError(
                f"Line {line_no} has {len(cells)} values but the header names {len(header)} columns: "
                "add a column name, or quote values that contain the delimiter."
            )
        if len(rows) >= MAX_ROWS:
            raise _too_many(f"more than {MAX_ROWS:,}")
        rows.append({h: (cells[i] if i < len(cells) else "") for i, h in enumerate(header)})
    if not rows:
        raise TableError("The file has a header but no rows: add one row of values per image set.")
    return tuple(rows)


def read_csv(data: bytes, source: str = "CSV file") -> Table:
    """Parse a CSV (UTF-8; comma, semicolon or tab). Raises TableError."""
    _check_size(data, "file")
    text = _decode(data)
    first = text.lstrip("\ufeff").split("\n", 1)[0]
    counts = {d: first.count(d) for d in (",", ";", "\t")}
    delimiter = max(counts, key=counts.get) if any(counts.values()) else ","
    total = text.count("\n") + (0 if text.endswith("\n") else 1) - 1
    if total > MAX_ROWS * 2:  # refuse a huge file before parsing it whole
        raise _too_many(f"about {total:,}")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        raw_header = next(reader)
        header = _header(raw_header)
        rows = _rows(header, ((reader.line_num, r) for r in reader))
    except csv.Error as exc:
        raise TableError(f"The CSV cannot be read near line {reader.line_num}: {exc}.") from None
    except StopIteration:
        raise TableError("The file is empty: it needs a header row and at least one row.") from None
    return Table(header, rows, source)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


XLSX_MISSING = (
    "Reading .xlsx files needs the optional package openpyxl (pip install openpyxl, or "
    "pip install 'hiapi-studio[xlsx]'). Or save the sheet as 'CSV UTF-8' and upload that."
)


def read_xlsx(data: bytes, source: str = "XLSX file") -> Table:
    """Parse the first sheet of an .xlsx workbook. Raises TableError."""
    _check_size(data, "file")
    try:
        import openpyxl
    except ImportError:
        raise TableError(XLSX_MISSING) from None
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, TypeError) as exc:
        raise TableError(
            f"This is not a readable .xlsx workbook ({type(exc).__name__}). "
            "Open it in a spreadsheet app and save it as .xlsx or as CSV UTF-8."
        ) from None
    try:
        sheet = book.worksheets[0] if book.worksheets else None
        if sheet is None:
            raise TableError("The workbook has no sheets.")
        declared = sheet.max_row or 0
        if declared > MAX_ROWS * 2:
            raise _too_many(f"{declared - 1:,}")
        it = sheet.iter_rows(values_only=True)
        first = next(it, None)
        if first is None or not any(v not in (None, "") for v in first):
            raise TableError(
                "The first sheet is empty: put the column names in row 1 and one row per image set below."
            )
        header = _header([_cell(v) for v in first])
        rows = _rows(header, ((n, [_cell(v) for v in r]) for n, r in enumerate(it, start=2)))
    finally:
        book.close()
    return Table(header, rows, source)


def read_table(name: str, data: bytes) -> Table:
    """Dispatch on the file name: .xlsx to `read_xlsx`, anything else as CSV."""
    lower = name.lower()
    if lower.endswith((".xlsx", ".xlsm")):
        return read_xlsx(data, name)
    if lower.endswith(".xls"):
        raise TableError("Old .xls workbooks are not supported: save it as .xlsx or as CSV UTF-8.")
    return read_csv(data, name)


# -- the plan for one click ------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One task of a campaign: a row (1-based, as the user sees it) in one ratio."""

    row: int
    request: TaskRequest


@dataclass
class CampaignPlan:
    """What one Generate would send for a prompt with variables.

    `problems` maps a field (prompt, rows, aspect_ratio, resolution) to the first
    sentence to show; nothing is sent unless it is empty.
    """

    template: str
    names: list[str]
    rows: list[dict[str, str]]
    prompts: list[str]
    ratios: list[str]
    resolution: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    row_problems: list[str] = field(default_factory=list)

    @property
    def images(self) -> int:
        return len(self.prompts) * len(self.ratios) if not self.problems else 0

    def cells(self, model: str) -> list[Cell]:
        return [
            Cell(i, TaskRequest(p, r, self.resolution, model))
            for i, p in enumerate(self.prompts, 1)
            for r in self.ratios
        ]


def clean_rows(rows: Iterable[Mapping[str, object]], names: Sequence[str]) -> list[dict[str, str]]:
    """Rows as strings keyed by variable; rows where every variable is blank are dropped."""
    out = []
    for r in rows:
        values = {n: ("" if r.get(n) is None else str(r.get(n)).strip()) for n in names}
        if any(values.values()):
            out.append(values)
    return out


def plan_campaign(
    template: str,
    rows: Iterable[Mapping[str, object]],
    ratios: Sequence[str],
    resolution: str,
) -> CampaignPlan:
    """Render every row, validate every prompt with the shared rules, pick valid ratios."""
    names = variables(template)
    table = clean_rows(rows, names)
    p = CampaignPlan(template, names, table, [], [], resolution)
    bad = template_problems(template)
    if bad:
        p.problems["prompt"] = bad[0].message
    base = first_problem_by_field(validate_request(template, "auto", resolution))
    base.pop("aspect_ratio", None)
    if "resolution" in base:
        p.problems["resolution"] = base["resolution"]
    if not ratios:
        p.problems["aspect_ratio"] = "Pick at least one aspect ratio."
    for r in ratios:
        why = combination_problem(r, resolution) if "resolution" not in base else None
        if why:
            p.skipped.append((r, why))
        else:
            p.ratios.append(r)
    if ratios and not p.ratios and "resolution" not in base:
        p.problems["aspect_ratio"] = f"None of the picked ratios works at {resolution}: " + "; ".join(
            w for _, w in p.skipped
        )
    if not names:
        p.problems.setdefault("rows", "The prompt has no {{variables}}.")
        return p
    if not table:
        listed = ", ".join("{{" + n + "}}" for n in names)
        p.problems["rows"] = f"Add at least one row of values for {listed}, in the table or from a file."
        return p
    if len(table) > MAX_ROWS:
        p.problems["rows"] = f"{len(table):,} rows is more than a campaign takes ({MAX_ROWS:,}): remove some."
        return p
    for i, values in enumerate(table, 1):
        blank = [n for n in names if not values.get(n)]
        if blank:
            p.row_problems.append(
                f"Row {i}: "
                + ", ".join("{{" + n + "}}" for n in blank)
                + " is empty — fill it in or delete the row."
            )
            continue
        prompt = render(template, values)
        why = first_problem_by_field(validate_request(prompt, "auto", "1K")).get("prompt")
        if why:
            p.row_problems.append(f"Row {i}: {why}")
            continue
        p.prompts.append(prompt)
    if p.row_problems:
        more = len(p.row_problems) - 1
        p.problems["rows"] = p.row_problems[0] + (f" (and {more} more)" if more else "")
        p.prompts = []
    elif len(p.prompts) * max(1, len(p.ratios)) > MAX_IMAGES:
        n = len(p.prompts) * len(p.ratios)
        p.problems["rows"] = (
            f"{len(p.prompts):,} rows × {len(p.ratios)} ratios is {n:,} images; a campaign holds at most "
            f"{MAX_IMAGES:,}. Use fewer rows or ratios."
        )
    return p


def preview(template: str, rows: Sequence[Mapping[str, object]], n: int = PREVIEW_ROWS) -> list[str]:
    """The first rendered prompts, with `⟨name?⟩` where a value is still missing."""
    out = []
    for values in clean_rows(rows, variables(template))[:n]:
        filled = {k: (v if v else f"⟨{k}?⟩") for k, v in values.items()}
        out.append(render(template, filled))
    return out
