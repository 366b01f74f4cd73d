"""Page logic through Streamlit's AppTest (fragment timers are not driven here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from components.templates import TEMPLATES
from studio import services as core
from studio.campaigns import plan_prompt as plan
from tests.support import generate_button

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def app(tmp_path, monkeypatch):
    for k in ("HIAPI_API_KEY", "HIAPI_BASE_URL", "HIAPI_CALLBACK_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STUDIO_SIM_MIN_DURATION", "0.05")
    monkeypatch.setenv("STUDIO_SIM_MAX_DURATION", "0.1")
    core.shutdown()
    import streamlit as st

    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    yield at
    core.shutdown()
    st.cache_resource.clear()


def _checkbox(at, label):
    return next(c for c in at.checkbox if c.label == label)


def _texts(at):
    """Messages as a person reads them: markdown escapes (of text from outside) removed."""
    raw = " ".join(str(e.value) for e in list(at.error) + list(at.warning) + list(at.success))
    return re.sub(r"\\(.)", r"\1", raw).replace("\u200b", "")


def test_page_shows_simulator_badge_and_all_sixteen_ratios(app):
    labels = {c.label for c in app.checkbox}
    assert {"1:1", "16:9", "9:16", "21:9", "9:21", "3:1", "1:3"} <= labels
    assert any("auto" in c for c in labels)
    assert len(labels) == 16
    assert "Simulator" in app.sidebar.markdown[0].value
    assert "simulator" in app.sidebar.caption[0].value


def test_empty_prompt_is_refused_with_the_field_named_and_nothing_sent(app):
    generate_button(app).click().run()
    assert "Prompt is required" in _texts(app)
    assert core.current().store.recent() == []


def test_too_long_prompt_keeps_the_text(app):
    text = "y" * 20_001
    app.text_area(key="prompt_editor").input(text).run()
    generate_button(app).click().run()
    assert "limit is 20,000" in _texts(app)
    assert app.text_area(key="prompt_editor").value == text
    assert core.current().store.recent() == []


def test_4k_disables_square_and_auto_with_reason(app):
    _checkbox(app, "1:1").uncheck().run()
    app.get("button_group")[0].set_value("4K").run()
    square = _checkbox(app, "1:1")
    assert square.disabled
    assert "4K" in (square.help or "")
    assert _checkbox(app, "16:9").disabled is False


def test_template_fills_editor_and_suggests_settings(app):
    poster = next(t for t in TEMPLATES if t.key == "poster")
    app.button(key="template_poster").click().run()
    assert app.text_area(key="prompt_editor").value == poster.prompt
    picked = {c.label for c in app.checkbox if c.value}
    assert picked == set(poster.ratios)


def test_fan_out_submits_one_task_per_ratio_as_one_creative(app):
    app.button(key="template_launch").click().run()
    generate_button(app).click().run()
    subs = core.current().store.recent()
    launch = next(t for t in TEMPLATES if t.key == "launch")
    assert sorted(s.aspect_ratio for s in subs) == sorted(launch.ratios)
    assert len({s.creative_id for s in subs}) == 1
    assert "Submitted 4 images" in _texts(app)


def test_plan_skips_invalid_ratios_and_explains():
    p = plan("a poster", ["1:1", "16:9", "auto"], "4K", "gpt-image-2")
    assert [r.aspect_ratio for r in p.requests] == ["16:9"]
    assert {r for r, _ in p.skipped} == {"1:1", "auto"}
    assert not p.problems and p.images == 1
    only_bad = plan("a poster", ["1:1"], "4K", "gpt-image-2")
    assert only_bad.requests == [] and "aspect_ratio" in only_bad.problems
    none = plan("a poster", [], "1K", "gpt-image-2")
    assert "Pick at least one" in none.problems["aspect_ratio"]


def _caption_texts(at):
    return re.sub(r"\\(.)", r"\1", " ".join(str(c.value) for c in at.caption)).replace("\u200b", "")


def test_generate_is_disabled_with_the_reason_beside_it_when_no_ratio_can_be_sent(app):
    # "auto" alone at 2K: 2K unticks it (and says so), so nothing can be sent; the button says why.
    _checkbox(app, "1:1").uncheck().run()
    next(c for c in app.checkbox if "auto" in c.label).check().run()
    app.get("button_group")[0].set_value("2K").run()
    button = generate_button(app)
    assert button.disabled
    assert "Unticked auto: not available at 2K" in _caption_texts(app)
    assert "Pick at least one aspect ratio" in _caption_texts(app)
    assert not next(c for c in app.checkbox if "auto" in c.label).value
    # A sendable ratio enables it again and the reasons go away.
    _checkbox(app, "16:9").check().run()
    assert not generate_button(app).disabled
    assert "Pick at least one aspect ratio" not in _caption_texts(app)
    assert "Unticked" not in _caption_texts(app)


def test_a_submit_error_is_shown_next_to_the_button(app):
    generate_button(app).click().run()
    shown = [re.sub(r"\\(.)", r"\1", str(e.value)) for e in app.error]
    # Beside the editor, and again beside Generate with the field named, where the eye is after a click.
    assert any(t.startswith("Prompt: ") and "required" in t for t in shown), shown


def test_stale_messages_clear_when_the_draft_changes(app):
    generate_button(app).click().run()
    assert "Prompt is required" in _texts(app)
    app.text_area(key="prompt_editor").input("a lighthouse at dusk").run()
    assert "required" not in _texts(app)  # the error was about the old draft
    generate_button(app).click().run()
    assert "Submitted 1 image" in _texts(app)
    app.text_area(key="prompt_editor").input("a lighthouse at dawn").run()
    assert "Submitted" not in _texts(app)  # an old "Submitted" does not stay under a new prompt


def _replayed_click():
    """One click's callback run twice, as overlapping Streamlit reruns can do."""
    import streamlit as st

    from components import draft, submit

    draft.init()
    if "replayed" not in st.session_state:
        st.session_state.replayed = True
        st.session_state[draft.PROMPT] = "a kite over dunes"
        st.session_state[draft.RATIOS] = ["1:1", "16:9"]
        submit.on_generate("click-replay-0001")
        submit.on_generate("click-replay-0001")
    st.write(st.session_state.get(submit.NOTICE) or "")


def test_the_same_click_replayed_by_a_rerun_sends_once(app):
    at = AppTest.from_function(_replayed_click, default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    subs = core.current().store.recent()
    assert sorted(s.aspect_ratio for s in subs) == ["16:9", "1:1"]
    assert "Submitted 2 images" in at.markdown[0].value


def _creatives() -> dict[str, int]:
    """Submissions per creative, as recorded (one creative per click that sent)."""
    counts: dict[str, int] = {}
    for s in core.current().store.recent():
        counts[s.creative_id] = counts.get(s.creative_id, 0) + 1
    return counts


def _press_on_the_redrawn_button():
    """A double click where the second press lands on the button the first one's rerun redrew."""
    import streamlit as st

    from components import draft, submit

    draft.init()
    if "pressed" not in st.session_state:
        st.session_state.pressed = True
        st.session_state[draft.PROMPT] = "a kite over dunes"
        st.session_state[draft.RATIOS] = ["1:1", "16:9"]
        first = submit._token()
        submit.on_generate(first)
        redrawn = submit._token()  # what the Generate button carries once the first press's rerun drew it
        st.session_state.fresh = redrawn != first
        submit.on_generate(redrawn)
    st.write(st.session_state.get(submit.NOTICE) or "")


def test_a_second_press_on_the_redrawn_button_records_nothing_new(app):
    at = AppTest.from_function(_press_on_the_redrawn_button, default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    assert at.session_state.fresh  # the redrawn button carries a new token, and still:
    assert list(_creatives().values()) == [2]
    assert "Submitted 2 images" in at.markdown[0].value


def test_pressing_generate_again_on_the_same_draft_sends_nothing_until_another_variant(app):
    app.text_area(key="prompt_editor").input('A kite "ONCE"').run()
    for _ in range(3):  # a double click and a mashed Ctrl+Enter: each lands on the button drawn last
        generate_button(app).click().run()
        assert not app.exception, app.exception
    assert len(_creatives()) == 1
    assert "Submitted 1 image" in _texts(app)

    another = app.button(key="another_variant")
    another.click().run()
    assert not [b for b in app.button if b.key == "another_variant"]
    generate_button(app).click().run()
    generate_button(app).click().run()
    assert len(_creatives()) == 2  # another variant, deliberately: one more, however often pressed


def test_each_changed_draft_is_a_new_creative_even_back_to_an_earlier_one(app):
    for text in ('A kite "A"', 'A kite "B"', 'A kite "A"'):
        app.text_area(key="prompt_editor").input(text).run()
        generate_button(app).click().run()
    assert list(_creatives().values()) == [1, 1, 1]
    _checkbox(app, "16:9").check().run()  # a changed ratio is a changed draft too
    generate_button(app).click().run()
    generate_button(app).click().run()
    assert sorted(_creatives().values()) == [1, 1, 1, 2]


def test_a_press_on_generate_after_a_confirmed_send_asks_nothing_and_sends_nothing(app):
    from decimal import Decimal

    from studio.pricing import Pricing, save

    save(core.current().store, Pricing(confirm_images=1, confirm_cost=Decimal("5")))
    app.text_area(key="prompt_editor").input('A banner "ASK FIRST"').run()
    _checkbox(app, "16:9").check().run()
    generate_button(app).click().run()
    generate_button(app).click().run()  # a double click on Generate: one dialog, nothing sent yet
    assert core.current().store.recent() == []
    app.button(key="confirm_generate").click().run()
    assert list(_creatives().values()) == [2]
    # The confirm's second click lands on Generate once the dialog has closed.
    generate_button(app).click().run()
    assert "confirm_generate" not in [b.key for b in app.button]
    assert list(_creatives().values()) == [2]
    assert "Submitted 2 images" in _texts(app)
