"""Campaigns, cost and the library through Streamlit's AppTest (fragment timers are not driven here)."""

# ruff: noqa: F811  (the `app` fixture is shared with test_studio_page)

from __future__ import annotations

import re
from decimal import Decimal

from studio import services as core
from studio.campaign_store import CampaignStore
from studio.library import Library
from studio.pricing import Pricing, save
from tests.support import generate_button
from tests.test_studio_page import _checkbox, _texts, app  # noqa: F401

CSV = b"product,headline,sku\nMug,HOT DEAL,A1\nBowl,FRESH,A2\nVase,NEW,A3\n"
PROMPT = 'A poster of a {{product}} with the headline "{{headline}}"'


def _prompt(at, text):
    at.text_area(key="prompt_editor").input(text).run()


def _generate_label(at):
    return generate_button(at).label


def test_csv_rows_become_a_campaign_after_one_confirmation_stating_count_and_cost(app):
    _prompt(app, PROMPT)
    captions = [re.sub(r"\\(.)", r"\1", c.value) for c in app.caption]  # markdown escapes removed
    assert any("{{product}}, {{headline}}" in c for c in captions)  # variables detected
    app.get("button_group")[0].set_value("2K").run()
    _checkbox(app, "16:9").check().run()
    app.file_uploader(key="rows_file").upload("products.csv", CSV, "text/csv").run()
    assert any("Not used by the prompt: sku" in c.value for c in app.caption)
    app.button(key="rows_use").click().run()
    assert any("3. A poster of a Vase" in t.value for t in app.text)  # preview
    assert _generate_label(app) == "Generate 6 images · ≈$0.36"  # 6 × the 2K placeholder price

    app.text_input(key="draft_campaign_name").input("Spring launch").run()
    generate_button(app).click().run()
    assert core.current().store.recent() == []  # nothing sent before the confirmation
    stated = " ".join(m.value for m in app.markdown)
    assert "Generate **6 images** (3 rows × 2 ratios at 2K) for about **$0.36**?" in stated

    app.button(key="confirm_generate").click().run()
    subs = core.current().store.recent()
    assert len(subs) == 6
    assert sorted({(s.prompt, s.aspect_ratio) for s in subs})[0] == (
        'A poster of a Bowl with the headline "FRESH"',
        "16:9",
    )
    [camp] = CampaignStore(core.current().store).campaigns()
    assert camp.name == "Spring launch" and camp.progress.total == 6
    assert camp.unit_price == Decimal("0.06")
    assert "Campaign “Spring launch” started: 6 images · ≈$0.36 simulated." in _texts(app)


def test_cancelling_the_confirmation_sends_nothing(app):
    _prompt(app, PROMPT)
    app.file_uploader(key="rows_file").upload("products.csv", CSV, "text/csv").run()
    app.button(key="rows_use").click().run()
    _checkbox(app, "16:9").check().run()
    generate_button(app).click().run()
    app.button(key="confirm_cancel").click().run()
    assert core.current().store.recent() == []
    assert "confirm_generate" not in [b.key for b in app.button]  # the dialog is closed


def test_below_the_threshold_generates_at_once_and_records_the_cost(app):
    _prompt(app, "A lighthouse at dawn")
    _checkbox(app, "16:9").check().run()
    assert _generate_label(app) == "Generate 2 images · ≈$0.06"
    generate_button(app).click().run()
    assert len(core.current().store.recent()) == 2
    [line] = CampaignStore(core.current().store).spend("all")
    assert line.pending_images + line.images == 2


def test_bad_file_and_missing_values_are_explained(app):
    _prompt(app, PROMPT)
    app.file_uploader(key="rows_file").upload(
        "bad.csv", "product\nCafé\n".encode("latin-1"), "text/csv"
    ).run()
    assert "bad.csv: The file is not UTF-8" in _texts(app)
    app.file_uploader(key="rows_file").upload("half.csv", b"product\nMug\n", "text/csv").run()
    assert "No column for {{headline}}" in _texts(app)
    app.button(key="rows_use").click().run()
    generate_button(app).click().run()
    assert "Row 1: {{headline}} is empty" in _texts(app)
    assert core.current().store.recent() == []


def test_a_broken_workbook_is_one_sentence_on_the_page_and_the_typed_prompt_stays(app):
    _prompt(app, PROMPT)
    broken = _broken_xlsx()
    app.file_uploader(key="rows_file").upload("rows.xlsx", broken, XLSX_TYPE).run()
    assert not app.exception
    assert "rows.xlsx is not a readable .xlsx workbook (its XML is broken)" in _texts(app)
    assert app.text_area(key="prompt_editor").value == PROMPT
    assert "rows_use" not in [b.key for b in app.button]


XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _broken_xlsx() -> bytes:
    import io
    import zipfile

    import openpyxl

    wb = openpyxl.Workbook()
    wb.active.append(["product"])
    buf = io.BytesIO()
    wb.save(buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            broken = info.filename == "xl/worksheets/sheet1.xml"
            z.writestr(info.filename, b"<worksheet><sheetData><row" if broken else src.read(info))
    return out.getvalue()


def test_bad_placeholder_is_refused_with_the_prompt_field_named(app):
    _prompt(app, "A poster {{2nd}} and {{product}}")
    generate_button(app).click().run()
    assert "{{2nd}} is not a variable" in _texts(app)
    assert core.current().store.recent() == []


def _settings_form(at, **fields):
    for label, value in fields.items():
        next(t for t in at.text_input if t.label == label).input(value)  # form fields commit on submit
    next(b for b in at.button if b.label == "Save prices and limits").click().run()


def test_settings_price_table_is_saved_and_bad_values_name_the_field(app):
    app.switch_page("app_pages/settings.py").run()
    assert any("placeholders" in w.value for w in app.warning)
    _settings_form(app, **{"Price per 2K image": "abc"})
    assert "Price per 2K image must be a number such as 0.04 (got 'abc')" in _texts(app)
    assert core.current().pricing.prices["2K"] == Decimal("0.06")
    _settings_form(app, **{"Price per 2K image": "0.10", "Currency": "eur"})
    pricing = core.current().pricing
    assert pricing.prices["2K"] == Decimal("0.10") and pricing.currency == "EUR" and pricing.from_user
    assert not any("placeholders" in w.value for w in app.warning)


def test_threshold_in_settings_applies_to_generate(app):
    save(core.current().store, Pricing(confirm_images=10, confirm_cost=Decimal("5")))
    _prompt(app, PROMPT)
    app.file_uploader(key="rows_file").upload("products.csv", CSV, "text/csv").run()
    app.button(key="rows_use").click().run()
    generate_button(app).click().run()
    assert len(core.current().store.recent()) == 3  # 3 images at $0.03 each: no dialog


def test_save_to_library_then_use_it_from_the_library_page(app):
    _prompt(app, PROMPT)
    app.file_uploader(key="rows_file").upload("products.csv", CSV, "text/csv").run()
    app.button(key="rows_use").click().run()
    app.text_input(key="lib_save_name").input("Product poster").run()
    app.button(key="lib_save").click().run()
    saved = Library(core.current().store).by_name("Product poster")
    assert saved.prompt == PROMPT and len(saved.rows) == 3 and saved.variables == ["product", "headline"]
    app.button(key="lib_save").click().run()
    assert "already exists" in _texts(app)

    app.switch_page("app_pages/library.py").run()
    app.text_input(key="lib_query").input("poster").run()
    titles = [m.value for m in app.markdown if m.value.startswith("**")]
    assert "**Product poster**" in titles and "**Event poster**" in titles  # a starter matches too
    app.button(key=f"lib_use_{saved.id}").click().run()
    assert app.text_area(key="prompt_editor").value == PROMPT
    assert _generate_label(app).startswith("Generate 3 images")
