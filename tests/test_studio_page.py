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
