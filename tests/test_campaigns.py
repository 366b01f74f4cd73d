"""Campaign logic without a server: variables, CSV/XLSX mapping, planning, cost arithmetic."""

from __future__ import annotations

import datetime as dt
import io
import sys
import zipfile
from decimal import Decimal

import pytest

from studio.campaigns import (
    MAX_CELL_CHARS,
    MAX_COLUMNS,
    MAX_IMAGES,
    MAX_ROWS,
    TableError,
    auto_mapping,
    map_table,
    plan_campaign,
    preview,
    read_csv,
    read_table,
    read_xlsx,
    render,
    template_problems,
    variables,
)
from studio.pricing import Pricing, build, defaults_from, format_money, from_micros, parse_amount, to_micros

# -- variables -------------------------------------------------------------------


def test_variables_are_found_in_order_once_with_spaces_allowed():
    t = "A {{product}} poster: {{ headline }} / {{product}} in {{Colour_2}}"
    assert variables(t) == ["product", "headline", "Colour_2"]
    assert template_problems(t) == []


def test_escaped_braces_are_literal_and_not_variables():
    t = r"Show the code \{{name}} next to {{name}}"
    assert variables(t) == ["name"]
    assert render(t, {"name": "Ada"}) == "Show the code {{name}} next to Ada"


def test_bad_placeholders_are_problems_that_say_how_to_escape():
    problems = template_problems("Price {{1st price}} and {{}} and {{ok}}")
    assert len(problems) == 2
    assert all(p.field == "prompt" for p in problems)
    assert "{{1st price}} is not a variable" in problems[0].message
    assert r"\{{" in problems[0].message
    assert variables("Price {{1st price}} and {{ok}}") == ["ok"]


def test_render_inserts_values_literally_and_never_expands_them_again():
    assert render("Say {{a}}", {"a": "{{b}}"}) == "Say {{b}}"
    assert render("{{a}}{{b}}", {"a": " x ", "b": 3}) == "x3"


def test_missing_or_blank_value_raises_naming_the_variable():
    with pytest.raises(KeyError, match="headline"):
        render("{{product}}: {{headline}}", {"product": "mug"})
    with pytest.raises(KeyError, match="headline"):
        render("{{product}}: {{headline}}", {"product": "mug", "headline": "   "})


def test_unicode_variable_names():
    assert variables("{{größe}} {{名前}}") == ["größe", "名前"]
    assert render("{{größe}}", {"größe": "XL"}) == "XL"


# -- planning --------------------------------------------------------------------


def test_plan_is_rows_times_valid_ratios_and_skips_bad_ratios():
    rows = [{"product": "mug"}, {"product": "bowl"}, {"product": "vase"}]
    p = plan_campaign('A poster of a {{product}} with "SALE"', rows, ["1:1", "16:9", "auto"], "2K")
    assert not p.problems
    assert p.images == 6
    assert p.ratios == ["1:1", "16:9"] and [r for r, _ in p.skipped] == ["auto"]
    cells = p.cells("gpt-image-2")
    assert [(c.row, c.request.aspect_ratio) for c in cells][:3] == [(1, "1:1"), (1, "16:9"), (2, "1:1")]
    assert cells[-1].request.prompt == 'A poster of a vase with "SALE"'


def test_plan_names_the_row_and_variable_that_is_empty():
    rows = [{"product": "mug", "price": "4"}, {"product": "bowl", "price": ""}, {"product": "", "price": ""}]
    p = plan_campaign("{{product}} at {{price}}", rows, ["1:1"], "1K")
    # the fully blank third row is dropped, the half-filled second one is a problem
    assert p.images == 0
    assert p.problems["rows"].startswith("Row 2: {{price}} is empty")


def test_plan_checks_each_rendered_prompt_against_the_shared_limit():
    p = plan_campaign("{{text}}", [{"text": "ok"}, {"text": "x" * 20_001}], ["1:1"], "1K")
    assert "Row 2" in p.problems["rows"] and "20,000" in p.problems["rows"]


def test_plan_without_rows_asks_for_them_and_caps_images():
    assert "Add at least one row" in plan_campaign("{{a}}", [], ["1:1"], "1K").problems["rows"]
    rows = [{"a": str(i)} for i in range(MAX_ROWS)]
    ratios = ["1:1", "16:9", "9:16"]
    p = plan_campaign("{{a}}", rows, ratios, "1K")
    assert len(rows) * len(ratios) > MAX_IMAGES
    assert f"at most {MAX_IMAGES:,}" in p.problems["rows"]


def test_preview_marks_missing_values():
    out = preview("{{a}} and {{b}}", [{"a": "x", "b": ""}, {"a": "y", "b": "z"}])
    assert out == ["x and ⟨b?⟩", "y and z"]


# -- CSV -------------------------------------------------------------------------


def test_csv_with_bom_and_semicolons_maps_to_variables_and_reports_unused_columns():
    data = "\ufeffProduct Name;Headline;SKU\nMug;Hot deal;A1\nBowl;Fresh;A2\n".encode()
    table = read_csv(data)
    assert table.columns == ("Product Name", "Headline", "SKU")
    mapping = auto_mapping(["product_name", "headline", "price"], table.columns)
    assert mapping == {"product_name": "Product Name", "headline": "Headline", "price": None}
    mapped = map_table(table, mapping)
    assert mapped.rows[0] == {"product_name": "Mug", "headline": "Hot deal", "price": ""}
    assert mapped.missing == ("price",)
    assert mapped.unused == ("SKU",)


def test_csv_quoted_cells_with_commas_and_newlines():
    data = b'product,headline\n"Mug, large","Line one\nline two"\n'
    table = read_csv(data)
    assert table.rows == ({"product": "Mug, large", "headline": "Line one\nline two"},)


def test_csv_in_the_wrong_encoding_is_refused_with_what_to_do():
    data = "product\nCafé crème\n".encode("latin-1")
    with pytest.raises(TableError, match=r"not UTF-8 .*line 2.*CSV UTF-8"):
        read_csv(data)


def test_utf16_csv_from_excel_unicode_text_is_read():
    data = "product\tprice\nMug\t4\n".encode("utf-16")
    assert read_csv(data).rows == ({"product": "Mug", "price": "4"},)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"  \n\n", "empty"),
        (b"product,headline\n", "no rows"),
        (b"product,,headline\nA,B,C\n", "Column 2 has no name"),
        (b"product,Product\nA,B\n", "both named"),
        (b"product\nA,B\n", "Line 2 has 2 values"),
    ],
)
def test_bad_csv_files_get_a_clear_message(data, message):
    with pytest.raises(TableError, match=message):
        read_csv(data)


def test_ten_thousand_rows_are_refused_naming_the_limit():
    data = ("product\n" + "".join(f"item {i}\n" for i in range(10_000))).encode()
    with pytest.raises(TableError, match=f"at most {MAX_ROWS:,}"):
        read_csv(data)
    # just over the limit is refused too, exactly at the limit is fine
    over = ("product\n" + "".join(f"item {i}\n" for i in range(MAX_ROWS + 1))).encode()
    with pytest.raises(TableError, match=f"more than {MAX_ROWS:,}"):
        read_csv(over)
    at = ("product\n" + "".join(f"item {i}\n" for i in range(MAX_ROWS))).encode()
    assert len(read_csv(at).rows) == MAX_ROWS


def test_blank_lines_and_trailing_empty_cells_are_ignored():
    data = b"product,headline,,\nMug,Hi,,\n\n,,,\nBowl,Yo\n"
    assert [r["product"] for r in read_csv(data).rows] == ["Mug", "Bowl"]


def test_read_table_dispatches_by_extension():
    with pytest.raises(TableError, match=r"\.xls workbooks are not supported"):
        read_table("old.xls", b"whatever")
    assert read_table("rows.csv", b"a\n1\n").rows == ({"a": "1"},)


# -- XLSX ------------------------------------------------------------------------


def _xlsx(rows) -> bytes:
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    ws = wb.active
    for r in rows:
        ws.append(r)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def test_xlsx_first_sheet_with_numbers_and_dates_as_people_typed_them():
    data = _xlsx([["product", "price", "launch"], ["Mug", 4.0, dt.date(2025, 7, 12)], ["Bowl", 3.5, None]])
    table = read_xlsx(data)
    assert table.rows == (
        {"product": "Mug", "price": "4", "launch": "2025-07-12"},
        {"product": "Bowl", "price": "3.5", "launch": ""},
    )


def test_xlsx_bad_files():
    with pytest.raises(TableError, match="not a readable .xlsx workbook .not a zip archive.: open it"):
        read_xlsx(b"PK\x03\x04 definitely not a workbook")
    with pytest.raises(TableError, match="first sheet is empty"):
        read_xlsx(_xlsx([]))
    big = _xlsx([["product"]] + [[f"item {i}"] for i in range(10_000)])
    with pytest.raises(TableError, match=f"at most {MAX_ROWS:,}"):
        read_xlsx(big)


def _rezip(data: bytes, replace: dict) -> bytes:
    """`data` (an .xlsx) with members replaced or added; a callable body streams into the member."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for info in src.infolist():
            if info.filename not in replace:
                z.writestr(info.filename, src.read(info))
        for name, body in replace.items():
            if callable(body):
                with z.open(name, "w", force_zip64=True) as f:
                    body(f)
            else:
                z.writestr(name, body)
    return out.getvalue()


_SST = b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="1"><si><t>'
_SHEET_USING_STRING_0 = (
    b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
    b'<row r="1"><c r="A1" t="inlineStr"><is><t>product</t></is></c></row>'
    b'<row r="2"><c r="A2" t="s"><v>0</v></c></row></sheetData></worksheet>'
)


def _with_shared_string(write_text, part="xl/sharedStrings.xml") -> bytes:
    """A real workbook whose row 2 is shared string 0, written by `write_text(file)`."""
    base = _xlsx([["product"], ["placeholder"]])
    types = zipfile.ZipFile(io.BytesIO(base)).read("[Content_Types].xml").decode()
    override = (
        f'<Override PartName="/{part}" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml" />'
    )
    types = types.replace("</Types>", override + "</Types>")

    def strings(f):
        f.write(_SST)
        write_text(f)
        f.write(b"</t></si></sst>")

    return _rezip(
        base,
        {"[Content_Types].xml": types, "xl/worksheets/sheet1.xml": _SHEET_USING_STRING_0, part: strings},
    )


def test_the_shared_strings_detour_works_for_a_normal_string():
    # the hostile files below are built this way; this proves the construction itself is read
    data = _with_shared_string(lambda f: f.write(b"Mug from the shared strings"))
    assert read_xlsx(data).rows == ({"product": "Mug from the shared strings"},)


@pytest.mark.parametrize("part", ["xl/sharedStrings.xml", "xl/innocent.xml"])
def test_a_small_xlsx_holding_a_300_mb_shared_string_is_refused_unopened(part):
    chunk = b"A" * (1 << 20)

    def huge(f):
        for _ in range(300):
            f.write(chunk)

    data = _with_shared_string(huge, part)
    assert len(data) < 1024 * 1024  # a zip bomb: ~300 KB on the wire
    with pytest.raises(TableError, match=r"^bomb\.xlsx holds 300 MB of text .*at most 8 MB.*CSV UTF-8"):
        read_table("bomb.xlsx", data)


def test_a_workbook_that_unpacks_past_the_total_cap_is_refused():
    noise = b"<!-- " + b"x" * (30 * 1024 * 1024) + b" -->"
    data = _rezip(_xlsx([["product"], ["Mug"]]), {"xl/a.xml": noise, "xl/b.xml": noise})
    with pytest.raises(TableError, match=r"^big\.xlsx unpacks to more than 40 MB"):
        read_table("big.xlsx", data)


def test_a_cell_longer_than_the_prompt_limit_is_refused_naming_line_and_column():
    data = _with_shared_string(lambda f: f.write(b"B" * (MAX_CELL_CHARS + 1)))
    with pytest.raises(TableError, match=r"Line 2, column 'product' holds 20,001 characters.*at most 20,000"):
        read_xlsx(data)
    csv_data = b"product,headline\nMug," + b"C" * (MAX_CELL_CHARS + 5) + b"\n"
    with pytest.raises(TableError, match=r"Line 2, column 'headline' holds 20,005 characters"):
        read_csv(csv_data)
    at_limit = b"product\n" + b"D" * MAX_CELL_CHARS + b"\n"
    assert len(read_csv(at_limit).rows[0]["product"]) == MAX_CELL_CHARS


def test_too_many_columns_are_refused():
    header = ",".join(f"c{i}" for i in range(MAX_COLUMNS + 1)).encode()
    with pytest.raises(
        TableError, match=f"{MAX_COLUMNS + 1} columns; a campaign file takes at most {MAX_COLUMNS}"
    ):
        read_csv(header + b"\n" + b"x\n")


@pytest.mark.parametrize(
    "member, body",
    [
        ("xl/worksheets/sheet1.xml", b"<worksheet><sheetData><row r='1'><c r='A1' t='inlineStr'><is><t>prod"),
        ("xl/worksheets/sheet1.xml", b"not xml at all <<<&&&"),
        ("xl/workbook.xml", b"<workbook><sheets><sheet name='x' "),
        ("[Content_Types].xml", b"<Types"),
        ("xl/styles.xml", b"<styleSheet><<"),
    ],
)
def test_malformed_xml_in_a_workbook_is_one_sentence_naming_the_file(member, body):
    data = _rezip(_xlsx([["product"], ["Mug"]]), {member: body})
    with pytest.raises(TableError) as caught:
        read_table("rows.xlsx", data)
    message = str(caught.value)
    assert message.startswith("rows.xlsx is not a readable .xlsx workbook")
    assert "save it again as .xlsx, or as CSV UTF-8" in message
    assert message.count(". ") == 0 and "Traceback" not in message  # one sentence


def test_a_damaged_utf16_csv_is_a_sentence_not_a_traceback():
    with pytest.raises(TableError, match="UTF-16 .*cut short or damaged"):
        read_csv(b"\xff\xfep\x00r\x00o\x00d\x00\n")


def test_xlsx_without_openpyxl_says_how_to_get_it(monkeypatch):
    data = _xlsx([["a"], ["1"]])
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # import fails as if not installed
    with pytest.raises(TableError, match="pip install openpyxl.*CSV UTF-8"):
        read_xlsx(data)


# -- cost arithmetic -------------------------------------------------------------


def test_cost_is_exact_decimal_arithmetic():
    p = Pricing(prices={"1K": Decimal("0.1"), "2K": Decimal("0.06"), "4K": Decimal("0.12")})
    assert p.estimate(3, "1K") == Decimal("0.3")  # not 0.30000000000000004
    assert p.estimate(6, "2K") == Decimal("0.36")
    assert p.estimate(0, "4K") == 0
    assert from_micros(to_micros(Decimal("0.0125"))) == Decimal("0.0125")
    assert to_micros(Decimal("0.0000005")) == 1  # half up


def test_confirmation_rule_counts_images_or_cost():
    p = Pricing(
        prices={"1K": Decimal("0.03"), "2K": Decimal("0.06"), "4K": Decimal("0.50")},
        confirm_images=4,
        confirm_cost=Decimal("1.00"),
    )
    assert not p.needs_confirmation(4, "1K")
    assert p.needs_confirmation(5, "1K")  # more images than the threshold
    assert p.needs_confirmation(3, "4K")  # $1.50 is above $1.00
    assert not p.needs_confirmation(2, "4K")  # exactly $1.00 is not above


def test_money_formatting():
    assert format_money(Decimal("0.36"), "USD") == "$0.36"
    assert format_money(Decimal("1204.5"), "EUR") == "€1,204.50"
    assert format_money(Decimal("0.0045"), "CHF") == "0.0045 CHF"
    assert format_money(Decimal(0), "USD") == "$0.00"


def test_price_fields_are_parsed_with_the_field_named_on_error():
    assert parse_amount("$0.04", "Price per 1K image")[0] == Decimal("0.04")
    assert parse_amount("0,04", "Price per 1K image")[0] == Decimal("0.04")
    _, problem = parse_amount("cheap", "Price per 2K image")
    assert problem.field == "Price per 2K image" and "must be a number" in problem.message
    _, problem = parse_amount("-1", "Price per 4K image")
    assert "zero or more" in problem.message
    pricing, problems = build({"prices": {"1K": "0.05", "2K": "nope"}, "max_active": "0", "currency": "usd"})
    assert pricing.prices["1K"] == Decimal("0.05")
    assert pricing.prices["2K"] == Pricing().prices["2K"]  # kept the default
    assert pricing.currency == "USD" and pricing.max_active == Pricing().max_active
    assert {p.field for p in problems} == {"Price per 2K image", "max_active"}


def test_defaults_come_from_environment_or_secrets():
    pricing, problems = defaults_from(
        {"STUDIO_PRICE_2K": "0.08", "STUDIO_CURRENCY": "EUR", "STUDIO_MAX_ACTIVE_TASKS": "3"}
    )
    assert not problems
    assert pricing.prices["2K"] == Decimal("0.08") and pricing.currency == "EUR" and pricing.max_active == 3
    assert pricing.from_user
    assert not defaults_from({})[0].from_user
