"""Text from outside our code reaches markdown only through `components.text.literal`.

Each test puts a hostile string (a link, a remote image, emphasis, maths) where
it can arrive — a typed placeholder, a template's note, a restored PNG recipe,
an unknown HiAPI status, a rejected callback's reason — and checks the element
Streamlit would render as markdown: the string is there escaped (so it shows
exactly as typed) and no markdown link or image syntax survives.
"""

# ruff: noqa: F811  (the `app` fixture is shared with test_studio_page)

from __future__ import annotations

import io
import json
import re
from dataclasses import replace

from PIL import Image, PngImagePlugin
from streamlit.testing.v1 import AppTest

from components.text import literal
from studio import services as core
from studio.library import Library, Template
from studio.models import MAX_STATUS_CHARS, Task, TaskRequest
from studio.records import GalleryQuery
from tests.support import generate_button
from tests.test_gallery_page import team_app  # noqa: F401
from tests.test_settings_page import settings_page  # noqa: F401
from tests.test_studio_page import app  # noqa: F401

LINK = "[win](https://evil.example/x)"
IMAGE = "![pixel](https://evil.example/p.png)"
HOSTILE = f"{LINK} {IMAGE} **bold** $x^2$"


def shown(markdown: str) -> str:
    """What a person reads: CommonMark backslash escapes removed, zero-width spaces dropped."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\u200b", "")


def assert_inert(markdown: str, where: str) -> None:
    """No link or image syntax survives in `markdown` (every bracket is escaped)."""
    assert "](" not in markdown and "![" not in markdown, f"raw markdown link or image in {where}: {markdown}"
    assert "**bold**" not in markdown and "$x^2$" not in markdown, where


def _values(at, *kinds: str) -> list[str]:
    return [str(e.value) for kind in kinds for e in at.get(kind)]


def test_a_bad_placeholder_is_quoted_literally_and_says_to_type_backslash_braces(app):
    placeholder = "{{" + IMAGE + "}}"
    app.text_area(key="prompt_editor").input("A poster of a {{product}} " + placeholder).run()
    [panel] = [v for v in _values(app, "error") if "is not a variable" in v]
    assert_inert(panel, "the campaign rows panel")
    assert shown(panel).startswith(placeholder + " is not a variable")
    assert "To write {{ literally, type \\{{." in shown(panel)  # the backslash is shown, not eaten

    generate_button(app).click().run()
    errors = [v for v in _values(app, "error") if "is not a variable" in v]
    assert len(errors) >= 2  # the panel and the prompt field at least
    for e in errors:
        assert_inert(e, "the prompt field's error")
        assert "type \\{{." in shown(e)
    assert core.current().store.recent() == []


def test_a_library_templates_note_shows_literally_on_its_card_and_in_the_starter_tooltip(app):
    lib = Library(core.current().store)
    lib.save(Template("Hostile note", "A lighthouse", ("1:1",), "1K", HOSTILE))
    starter = lib.starters()[0]
    lib.save(replace(starter, note=HOSTILE))

    app.run()
    [button] = [b for b in app.button if b.key == f"template_{starter.starter}"]
    assert_inert(button.help, "a starter template's tooltip")
    assert shown(button.help).startswith(HOSTILE)

    app.switch_page("app_pages/library.py").run()
    assert not app.exception
    captions = [c for c in _values(app, "caption") if "evil" in c]
    assert len(captions) == 2  # the new template and the edited starter
    for c in captions:
        assert_inert(c, "a library card")
        assert HOSTILE in shown(c)


def _png_with_recipe(recipe: dict) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("studio:recipe", json.dumps(recipe))
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def test_a_restored_recipes_ratio_and_resolution_show_literally(app):
    png = _png_with_recipe({"prompt": "A lighthouse", "aspect_ratio": LINK, "resolution": IMAGE})
    app.switch_page("app_pages/gallery.py").run()
    app.file_uploader(key="restore_upload").upload("recipe.png", png, "image/png").run()
    assert not app.exception
    [caption] = [c for c in _values(app, "caption") if "evil" in c]
    assert_inert(caption, "the restored recipe")
    assert shown(caption) == f"{LINK} · {IMAGE}"


def _badge_page():
    from components.queue import status_badge

    status_badge("[win](https://evil.example/x) ![p](https://evil.example/p.png)")


def test_an_unknown_hiapi_status_badge_shows_literally():
    at = AppTest.from_function(_badge_page).run()
    assert not at.exception
    [badge] = _values(at, "markdown")
    assert "badge[" in badge  # st.badge is a markdown directive: a "]" in the label would end it
    inner = badge.split("badge[", 1)[1]
    assert_inert(inner, "the status badge")
    assert "\\]" in inner and "Evil.Example" in shown(inner)


def test_an_unknown_status_is_capped_when_parsed():
    task = Task.parse({"taskId": "t1", "status": "s" * 10_000})
    assert task is not None and len(task.status) == MAX_STATUS_CHARS
    assert Task.parse({"taskId": "t2", "status": "queued"}).status == "queued"


def test_the_last_rejected_callbacks_reason_shows_literally(settings_page):
    at = settings_page(HIAPI_CALLBACK_URL="http://127.0.0.1:8501")
    core.current().tracker.note_callback_rejected(400, HOSTILE)
    at.run()
    [warning] = [w for w in _values(at, "warning") if "Last rejected callback" in w]
    assert_inert(warning, "the last rejected callback")
    assert shown(warning).endswith(f"400 {HOSTILE}")


def test_literal_escapes_every_markdown_mark_and_breaks_autolinks():
    out = literal("a [b](c) ![d](e) **f** `g` $h$ <i> https://x.example j@k.example \\{{")
    assert_inert(out, "literal()")
    assert shown(out) == "a [b](c) ![d](e) **f** `g` $h$ <i> https://x.example j@k.example \\{{"
    assert out.count("\u200b") == 2  # the bare URL and the e-mail address are broken, not linked


def test_an_authors_name_shows_literally_in_the_lightbox_and_on_campaigns(team_app):  # noqa: F811
    from dataclasses import replace as with_

    from studio.records import NewCampaign
    from tests.test_gallery_page import _by

    services = core.current()
    store = services.store
    _by(store, services.keeper, HOSTILE, 7, "a hostile author's image")  # a name as the provider sent it
    [item] = store.gallery(GalleryQuery(author=HOSTILE))[0]
    new = with_(
        NewCampaign("Hostile", "A {{p}}", ("p",), ("1:1",), "1K", (({"p": "x"}, "A x"),)), author=HOSTILE
    )
    store.launch_campaign_once(new, [(1, TaskRequest("A x"), "hostile-0")], unit_micros=1, currency="USD")

    team_app.switch_page("app_pages/gallery.py").run()
    team_app.session_state["gallery_lightbox"] = item.output_id
    team_app.run()
    assert not team_app.exception, team_app.exception
    [caption] = [c for c in _values(team_app, "caption") if c.startswith("Model ")]
    assert_inert(caption, "the lightbox's author")
    assert shown(caption).endswith(f" · by {HOSTILE}")

    team_app.session_state["gallery_lightbox"] = None
    team_app.switch_page("app_pages/studio.py").run()
    [card] = [c for c in _values(team_app, "caption") if "evil" in c]
    assert_inert(card, "a campaign card's author")
    assert shown(card) == f"by {HOSTILE}"
