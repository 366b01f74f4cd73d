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
  ragged lines, duplicate or blank headers, more than `MAX_ROWS` rows or
  `MAX_COLUMNS` columns, a cell longer than `MAX_CELL_CHARS` (the prompt limit).
- Reading is bounded: a file is at most `MAX_FILE_BYTES`; an XLSX's zip members
  are checked against `MAX_XLSX_MEMBER_BYTES` / `MAX_XLSX_UNPACKED_BYTES` (and
  shared strings against `MAX_SHARED_STRINGS_BYTES`) before anything is parsed,
  so a zip bomb is refused unopened. Any failure inside a workbook becomes one
  sentence saying what to do, never a traceback.
- Every row × every valid ratio is one task. A campaign holds at most
  `MAX_IMAGES` tasks.
- One planner for every Generate (`plan_generation`): a prompt with variables
  plans a campaign (`plan_campaign`), one without plans one task per valid
  ratio (`plan_prompt`). Either plan says what it would send, what it skips and
  why, and its problems by field; nothing is sent while it has problems.
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
from .ratios import EXT_ROUTE, combination_problem
from .validation import MAX_PROMPT_CHARS, Problem, first_problem_by_field, validate_request

MAX_ROWS = 1_000  # rows per campaign (a table or a file)
MAX_IMAGES = 2_000  # rows × ratios per campaign
MAX_FILE_BYTES = 5 * 1024 * 1024
PREVIEW_ROWS = 3
MAX_COLUMNS = 200  # header columns of a file (a prompt uses a handful)
MAX_CELL_CHARS = MAX_PROMPT_CHARS  # a longer value could never make a valid prompt
# An .xlsx is a zip: its members' declared sizes bound what zipfile will ever
# inflate (it stops at the declared size and fails the CRC), so checking them
# before parsing refuses a bomb without unpacking it.
MAX_XLSX_UNPACKED_BYTES = 40 * 1024 * 1024
MAX_XLSX_MEMBER_BYTES = 24 * 1024 * 1024
MAX_SHARED_STRINGS_BYTES = 8 * 1024 * 1024  # openpyxl holds every shared string in memory

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
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise TableError(
                "The file starts like UTF-16 text but is cut short or damaged: save it again as "
                "'CSV UTF-8' (Excel: File › Save As › CSV UTF-8) or upload the .xlsx instead."
            ) from None
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
    if len(cols) > MAX_COLUMNS:
        raise TableError(
            f"The header names {len(cols):,} columns; a campaign file takes at most {MAX_COLUMNS}: "
            "delete the columns the prompt does not use."
        )
    _check_cells(1, cols, [str(i) for i in range(1, len(cols) + 1)])
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


def _check_cells(line_no: int, cells: Sequence[str], header: Sequence[str]) -> None:
    for i, c in enumerate(cells):
        if len(c) > MAX_CELL_CHARS:
            column = header[i] if i < len(header) else str(i + 1)
            column = column if len(column) <= 40 else column[:37] + "…"
            raise TableError(
                f"Line {line_no}, column {column!r} holds {len(c):,} characters; a cell takes at most "
                f"{MAX_CELL_CHARS:,} (the prompt limit): shorten it."
            )


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
        _check_cells(line_no, cells, header)
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
    delimiter = max(counts, key=counts.__getitem__) if any(counts.values()) else ","
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


_UNREADABLE = (
    "{source} is not a readable .xlsx workbook ({why}): open it in a spreadsheet app and save it "
    "again as .xlsx, or as CSV UTF-8, then upload it again."
)


def _unreadable(source: str, why: str) -> TableError:
    return TableError(_UNREADABLE.format(source=source, why=why))


def _check_unpacked(data: bytes, source: str) -> None:
    """Refuse a workbook whose members would unpack past the caps, before parsing any of it."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = z.infolist()
            strings = _shared_strings_parts(z)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise _unreadable(source, "not a zip archive") from None
    mb = 1024 * 1024
    total = 0
    for m in members:
        total += m.file_size
        shared = m.filename in strings or m.filename.lower().endswith("sharedstrings.xml")
        limit = MAX_SHARED_STRINGS_BYTES if shared else None
        if limit is not None and m.file_size > limit:
            raise TableError(
                f"{source} holds {m.file_size / mb:,.0f} MB of text (shared strings); a campaign file "
                f"takes at most {limit // mb} MB: keep only the rows and columns the campaign needs, "
                "or save the sheet as CSV UTF-8."
            )
        if m.file_size > MAX_XLSX_MEMBER_BYTES or total > MAX_XLSX_UNPACKED_BYTES:
            raise TableError(
                f"{source} unpacks to more than {MAX_XLSX_UNPACKED_BYTES // mb} MB (it is a zip); a "
                "campaign file takes less: keep only the sheet with the rows, or save it as CSV UTF-8."
            )


_CONTENT_TYPES = "[Content_Types].xml"
_OVERRIDE = re.compile(r"<(?:\w+:)?Override\b[^>]*>", re.IGNORECASE)
_PART_NAME = re.compile(r"""PartName\s*=\s*["']/?([^"']+)["']""")


def _shared_strings_parts(z: zipfile.ZipFile) -> set[str]:
    """Members the manifest declares as shared strings (the name may be anything)."""
    try:
        info = z.getinfo(_CONTENT_TYPES)
    except KeyError:
        return set()
    if info.file_size > 1024 * 1024:  # a manifest is a few KB; a big one is parsed by nobody
        raise zipfile.BadZipFile("oversized manifest")
    text = z.read(info).decode("utf-8", "replace")
    parts = set()
    for tag in _OVERRIDE.findall(text):
        name = _PART_NAME.search(tag)
        if name and "sharedstrings+xml" in tag.lower():
            parts.add(name.group(1))
    return parts


def read_xlsx(data: bytes, source: str = "The workbook") -> Table:
    """Parse the first sheet of an .xlsx workbook. Raises TableError.

    The zip is checked first (`_check_unpacked`); then openpyxl reads it in
    read-only mode, row by row. Whatever goes wrong inside (broken XML, a bad
    zip member, an unexpected value) is answered with one sentence naming
    `source`; the caps on rows, columns and cells still apply.
    """
    _check_size(data, "file")
    try:
        import openpyxl
    except ImportError:
        raise TableError(XLSX_MISSING) from None
    _check_unpacked(data, source)
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - a hostile or broken file may fail anywhere inside
        raise _unreadable(source, _why(exc)) from None
    try:
        return _first_sheet(book, source)
    except TableError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. malformed XML found while streaming the rows
        raise _unreadable(source, _why(exc)) from None
    finally:
        try:
            book.close()
        except Exception:  # noqa: BLE001, S110 - closing a broken archive must not hide the message
            pass


def _why(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):  # xml.etree's ParseError
        return "its XML is broken"
    if isinstance(exc, zipfile.BadZipFile):
        return "a damaged zip"
    if isinstance(exc, MemoryError):
        return "too large to read"
    return "an unexpected structure"


def _first_sheet(book, source: str) -> Table:
    sheet = book.worksheets[0] if book.worksheets else None
    if sheet is None:
        raise TableError(f"{source} has no sheets: put the rows on its first sheet.")
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
    return Table(header, rows, source)


def read_table(name: str, data: bytes) -> Table:
    """Dispatch on the file name: .xlsx to `read_xlsx`, anything else as CSV.

    Every refusal is a TableError whose sentence names the file.
    """
    try:
        return _read_named(name, data)
    except TableError as exc:
        text = str(exc)
        raise TableError(text if text.startswith(name) else f"{name}: {text}") from None


def _read_named(name: str, data: bytes) -> Table:
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
    references: tuple[str, ...] = ()  # reference image URLs every cell carries (image-to-image)

    @property
    def images(self) -> int:
        return len(self.prompts) * len(self.ratios) if not self.problems else 0

    @property
    def quality(self) -> str | None:
        """Campaigns go on HiAPI's default route: no `ext` quality to price them at."""
        return None

    def cells(self, model: str) -> list[Cell]:
        return [
            Cell(i, TaskRequest(p, r, self.resolution, model, references=self.references))
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
    references: Sequence[str] = (),
) -> CampaignPlan:
    """Render every row, validate every prompt with the shared rules, pick valid ratios.

    With `references` (image URLs) every image is image-to-image, whose limits apply.
    """
    names = variables(template)
    table = clean_rows(rows, names)
    p = CampaignPlan(template, names, table, [], [], resolution, references=tuple(references))
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
        why = (
            combination_problem(r, resolution, image_to_image=bool(references))
            if "resolution" not in base
            else None
        )
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


# -- one prompt without variables --------------------------------------------------


@dataclass
class PromptPlan:
    """What one Generate of a prompt without variables would send: one request per valid ratio.

    `problems` maps a field (prompt, aspect_ratio, resolution, references,
    quality, background) to the first sentence to show; `requests` is empty
    while it is not. `quality` is the `ext` tier the images are priced at (None:
    the default route).
    """

    resolution: str
    quality: str | None = None
    requests: list[TaskRequest] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def images(self) -> int:
        return len(self.requests) if not self.problems else 0


def ratio_problem(
    ratios: Sequence[str], resolution: str, route: str | None = None, *, image_to_image: bool = False
) -> str | None:
    """Why no picked ratio can be sent at this resolution on this route (None when one can).

    Known before any click, so Generate is disabled with this reason beside it.
    """
    if not ratios:
        return "Pick at least one aspect ratio."
    why = [combination_problem(r, resolution, image_to_image=image_to_image, route=route) for r in ratios]
    if all(why):
        return f"None of the picked ratios works at {resolution}: " + "; ".join(w for w in why if w)
    return None


def plan_prompt(
    prompt: str,
    ratios: Sequence[str],
    resolution: str,
    model: str,
    references: Sequence[str] = (),
    *,
    quality: str | None = None,
    background: str | None = None,
    storage: str | None = None,
) -> PromptPlan:
    """One request per valid ratio; field problems if nothing can be sent.

    `references` (reference image URLs) make every request image-to-image.
    `quality` sends on the `ext` route; `background` and `storage` are sent only when set.
    """
    p = PromptPlan(resolution, quality)
    refs = tuple(references)
    i2i = bool(refs)
    route = EXT_ROUTE if quality is not None else None
    ratio_why = ratio_problem(ratios, resolution, route, image_to_image=i2i)
    if ratio_why:
        p.problems["aspect_ratio"] = ratio_why
    # Prompt, resolution and option rules do not depend on the ratio: check them once.
    base = first_problem_by_field(
        validate_request(
            prompt, "auto", resolution, route=route, quality=quality, background=background, storage=storage
        )
    )
    base.pop("aspect_ratio", None)
    p.problems.update(base)
    if p.problems:
        return p
    for ratio in ratios:
        why = combination_problem(ratio, resolution, image_to_image=i2i, route=route)
        if why:
            p.skipped.append((ratio, why))
            continue
        request = TaskRequest(
            prompt,
            ratio,
            resolution,
            model,
            references=refs,
            quality=quality,
            background=background,
            storage=storage,
        )
        problems = request.problems(allow_loopback_http=True)
        if problems:
            p.problems.update(first_problem_by_field(problems))
            p.requests = []
            return p
        p.requests.append(request)
    return p


def plan_generation(
    prompt: str,
    rows: Iterable[Mapping[str, object]],
    ratios: Sequence[str],
    resolution: str,
    model: str,
    references: Sequence[str] = (),
    *,
    quality: str | None = None,
    background: str | None = None,
    storage: str | None = None,
) -> PromptPlan | CampaignPlan:
    """What one Generate sends: a campaign when the prompt has `{{variables}}`, else one task per ratio.

    Campaigns go on the default route: `quality`, `background` and `storage`
    apply to a prompt without variables only, as the studio has always sent them.
    """
    if variables(prompt):
        return plan_campaign(prompt, rows, ratios, resolution, references=references)
    return plan_prompt(
        prompt,
        ratios,
        resolution,
        model,
        references,
        quality=quality,
        background=background,
        storage=storage,
    )
