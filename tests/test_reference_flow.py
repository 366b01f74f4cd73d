"""Reference images through the studio: kept with the submission, sent as signed URLs, in the recipe,
brought back by Reuse; refused files named; real HiAPI without a public URL refused before sending."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from studio import services as core
from studio.images import read_recipe
from studio.models import TaskRequest
from studio.references import ReferenceShelf, reference_names
from studio.simulator import Simulator
from tests.support import wait_for
from tests.test_tracker import KEY, all_terminal, make_tracker

ROOT = Path(__file__).resolve().parent.parent


def _png(color=(20, 200, 60), size=(160, 90)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def sim():
    s = Simulator(api_keys=[KEY], min_duration=0.1, max_duration=0.2, seed=9).start()
    yield s
    s.stop()


def test_a_reference_travels_with_its_submission_into_the_recipe(sim, tmp_path, reference_urls):
    tracker, store = make_tracker(sim, tmp_path)
    [url] = reference_urls(1)
    shelf = ReferenceShelf(tmp_path / "references", b"s" * 32)
    ref = shelf.add(_png(), "product.png")
    # A signed URL of ours (served here by the same loopback server): its name goes into the recipe.
    signed = shelf.url(url.rsplit("/", 1)[0], ref.name)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest('restyle "FRESH"', "16:9", "1K", references=(url,))])
        [other] = tracker.submit([TaskRequest("named", "1:1", "1K", references=(url, signed))])
        assert wait_for(lambda: store.submission(sid).is_terminal and store.submission(other).is_terminal)
        sub = store.submission(sid)
        assert sub.state == "success" and sub.references == (url,)
        assert sub.request.references == (url,)  # a resend carries the same body
        assert sub.request.wire_model == "gpt-image-2/image-to-image"
        assert sim.stats()["inputs_fetched"] >= 1
        assert wait_for(all_terminal(store))
        [o] = store.outputs_for([other])[other]
        assert read_recipe(tracker.keeper.original_path(o.sha256))["references"] == [ref.name]
        [item] = store.gallery_items([o.id])
        assert reference_names(item.references) == [ref.name]
    finally:
        tracker.stop()


@pytest.fixture
def env(tmp_path, monkeypatch):
    for k in ("HIAPI_API_KEY", "HIAPI_BASE_URL", "HIAPI_CALLBACK_URL", "STUDIO_PUBLIC_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STUDIO_SIM_MIN_DURATION", "0.05")
    monkeypatch.setenv("STUDIO_SIM_MAX_DURATION", "0.1")
    core.shutdown()
    import streamlit as st

    st.cache_resource.clear()
    yield monkeypatch
    core.shutdown()
    st.cache_resource.clear()


def _add_and_generate():
    import io

    import streamlit as st
    from PIL import Image

    from components import draft, references, submit

    draft.init()
    if "ran" not in st.session_state:
        st.session_state.ran = True
        st.session_state[draft.PROMPT] = 'restyle this product as a premium ad "NEW"'
        st.session_state[draft.RATIOS] = ["16:9"]
        buf = io.BytesIO()
        Image.new("RGB", (120, 80), (10, 200, 90)).save(buf, "PNG")
        st.session_state.problems = references.add_files(
            [
                ("photo.png", buf.getvalue()),
                ("notes.png", b"not an image"),
                ("photo again.png", buf.getvalue()),
            ]
        )
        submit.on_generate("click-refs-0001")
    st.write(" | ".join(st.session_state.problems) or "-")
    st.write(st.session_state.get(submit.NOTICE) or "-")
    st.write(" | ".join((st.session_state.get(submit.ERRORS) or {}).values()) or "-")
    st.write(",".join(draft.references()) or "-")
    st.write(draft.prompt())


def test_refused_files_are_named_and_the_rest_is_sent_as_image_to_image(env):
    at = AppTest.from_function(_add_and_generate, default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    problems, notice, errors, refs, prompt = (m.value for m in at.markdown[:5])
    assert problems == "“notes.png” is not a JPEG, PNG or WebP image; add one of those."
    assert len(refs.split(",")) == 1  # the same photo twice is one reference
    assert notice.startswith("Submitted 1 image"), (notice, errors)
    [sub] = core.current().store.recent()
    assert sub.request.wire_model == "gpt-image-2/image-to-image"
    assert reference_names(sub.references) == refs.split(",")
    assert prompt.startswith("restyle this product")


def test_real_hiapi_without_a_public_url_refuses_before_sending_and_keeps_the_draft(env):
    env.setenv("HIAPI_API_KEY", "sk-test-no-public-url-0001")
    env.setenv("HIAPI_BASE_URL", "http://127.0.0.1:9")  # never reached: nothing is sent
    at = AppTest.from_function(_add_and_generate, default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    _, notice, errors, refs, prompt = (m.value for m in at.markdown[:5])
    assert notice == "-"
    assert "set STUDIO_PUBLIC_URL" in errors
    assert refs != "-" and prompt.startswith("restyle this product")
    assert core.current().store.recent() == []


def test_a_campaign_with_references_sends_them_with_every_cell_under_image_to_image_rules():
    from studio.campaigns import plan_campaign

    urls = ("https://studio.example.com/refs/a.png?exp=1&sig=x",)
    p = plan_campaign(
        "A {{product}} on a table", [{"product": "mug"}, {"product": "vase"}], ["1:1"], "4K", urls
    )
    assert not p.problems and p.ratios == ["1:1"]  # a square at 4K is fine for image-to-image
    assert {c.request.references for c in p.cells("gpt-image-2/text-to-image")} == {urls}
    assert {c.request.wire_model for c in p.cells("gpt-image-2/text-to-image")} == {
        "gpt-image-2/image-to-image"
    }
    plain = plan_campaign("A {{product}} on a table", [{"product": "mug"}], ["1:1"], "4K")
    assert plain.ratios == [] and "aspect_ratio" in plain.problems


def _seventeen():
    import io

    import streamlit as st
    from PIL import Image

    from components import draft, references

    draft.init()
    if "ran" not in st.session_state:
        st.session_state.ran = True
        files = []
        for i in range(17):
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), (i * 10, 0, 0)).save(buf, "PNG")
            files.append((f"ref{i}.png", buf.getvalue()))
        st.session_state.problems = references.add_files(files)
    st.write(" | ".join(st.session_state.problems))
    st.write(str(len(draft.references())))


def test_a_seventeenth_reference_is_refused_by_name(env):
    at = AppTest.from_function(_seventeen, default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    assert at.markdown[0].value == "“ref16.png” was not added: at most 16 references; remove one first."
    assert at.markdown[1].value == "16"
