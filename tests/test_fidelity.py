"""Text fidelity: the matching rule, the reading passes, the store, and the tracker end to end.

OCR is real here (Debian's tesseract-ocr, which `make test` installs); only the
pass logic is also tested with a scripted reader, where no image is involved.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from studio import quotes
from studio.client import HiAPIClient
from studio.fidelity import (
    ERROR,
    MISMATCH,
    PASS,
    UNAVAILABLE,
    FidelityChecker,
    FidelityReport,
    StringCheck,
    TesseractReader,
    _closest,
    check_image,
    fold,
    match_text,
    wanted_strings,
)
from studio.images import ImageKeeper
from studio.models import Task, TaskRequest
from studio.simulator import Simulator, misspell, quoted_parts, render_image
from studio.store import GalleryQuery, Store
from studio.tracker import Tracker
from tests.support import wait_for

KEY = "sk-test-fidelity-0123456789"
POSTER = 'Poster with the headline "SUMMER DROP"'


# ------------------------------------------------------------------ matching


def test_case_whitespace_and_punctuation_do_not_matter():
    for read in (
        "SUMMER DROP",
        "summer drop",
        "Summer\nDrop!",
        "  SUMMER   DROP  ",
        "SUMMER-DROP",
        "SUMMERDROP",
    ):
        c = match_text("SUMMER DROP", read)
        assert c.matched and c.similarity == 1.0, read


def test_a_misspelling_is_caught_with_what_was_read_and_a_score():
    c = match_text("SUMMER DROP", "SIMULATED\nSUMMR DRP\nHiAPI simulator 1:1")
    assert not c.matched
    assert c.read == "SUMMR DRP"  # the closest stretch, as read, not the whole text
    assert c.similarity == pytest.approx(0.8)  # 2 of 10 letters missing


@pytest.mark.parametrize(
    "read",
    ["SUMMER DRIP", "SUMERR DROP", "SUMMERR DROP", "SUMMER", "UMMER DROP", "SSUMMER DROP", "SUMMER DROPS"],
)
def test_one_wrong_letter_is_a_mismatch(read):
    c = match_text("SUMMER DROP", read)
    assert not c.matched and 0.5 <= c.similarity < 1.0
    assert c.read == read  # an extra letter glued to a word is part of what was read


def test_the_wanted_string_is_found_inside_other_text():
    read = "Big sale!\nwww.example.com\nFresh bread daily - open 7 days\nterms apply"
    c = match_text("FRESH BREAD DAILY", read)
    assert c.matched and c.read == "Fresh bread daily"


def test_nothing_close_reads_as_not_found():
    c = match_text("Midnight Jazz Club", "SIMULATED\n1024x1024")
    assert not c.matched and c.read == "" and c.similarity < 0.5
    assert not match_text("SUMMER DROP", "").matched


def test_ocr_confusions_are_forgiven_but_letter_swaps_are_not():
    assert match_text("50% OFF TODAY", "5O% 0FF TODAY").matched  # 0 / O
    assert match_text("Limited edition", "Limited edit|on").matched is False  # | is an l, not an i
    assert match_text("Flat white 3.50", "Flat white 3,5O").matched
    assert match_text("Call 1 today", "Call l today").matched  # 1 / l
    assert not match_text("Free delivery", "Free deilvery").matched  # a swap is a misspelling


@pytest.mark.parametrize(
    "read",
    [
        "FRESH | BREAD DAILY",  # a shape's edge between two words
        "FRESH| BREAD DAILY",
        "FRESH |BREAD DAILY",
        "FRESH|BREAD DAILY",
        "| FRESH BREAD DAILY |",
        "FRESH │ BREAD ─ DAILY",  # box-drawing glyphs
        "FRESH I BREAD l DAILY",
        "FRESH ! BREAD — DAILY",
        "FRESH ¦ BREAD [ DAILY",
        "FRESH\n|\nBREAD DAILY",
    ],
)
def test_stray_strokes_between_words_do_not_fail_a_string(read):
    c = match_text("FRESH BREAD DAILY", read)
    assert c.matched and c.similarity == 1.0, read


@pytest.mark.parametrize(
    "read",
    [
        "FRESH | BRED DAILY",
        "FRSH | BREAD DAILY",
        "FRESH | BREAD DAILLY",
        "FRESH I BREAD",  # a whole word missing
        "FRESH BREAD | DAIY",
    ],
)
def test_misspellings_next_to_stray_strokes_are_still_caught(read):
    assert not match_text("FRESH BREAD DAILY", read).matched, read


def test_a_bar_inside_a_lower_case_word_is_still_an_l():
    assert match_text("Open daily", "Open dai|y").matched
    assert not match_text("Limited edition", "Limited edit|on").matched
    assert match_text("I LOVE NY", "I LOVE NY").matched  # a one-letter word of the wanted text still counts


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@settings(max_examples=300, deadline=None)
@given(wanted=st.text("abcd", min_size=1, max_size=6), read=st.text("abcdx", max_size=12))
def test_closest_stretch_is_the_best_substring(wanted, read):
    dist, start, end = _closest(wanted, read)
    best = min(_levenshtein(wanted, read[i:j]) for i in range(len(read) + 1) for j in range(i, len(read) + 1))
    assert dist == best
    assert _levenshtein(wanted, read[start:end]) == dist  # the stretch shown is the one scored


def test_fold_keeps_an_index_map_back_to_the_text():
    folded, where = fold("Ça va, SUMMER!")
    assert folded == "çavasummer"
    assert [("Ça va, SUMMER!")[i] for i in where][-6:] == list("SUMMER")


def test_wanted_strings_are_the_quoted_parts_worth_checking():
    prompt = 'Poster "SUMMER DROP" with \'New arrivals\', “summer drop” again and "★★★" don\'t'
    assert wanted_strings(prompt) == ["SUMMER DROP", "New arrivals"]  # deduplicated, symbols skipped
    assert wanted_strings("A quiet lake at dawn") == []
    assert match_text("★★★", "anything").matched  # nothing checkable never raises an alarm


def test_one_quote_rule_for_simulator_and_check():
    prompt = "Poster \"SUMMER DROP\" with '50% off' and “Free coffee” [sim:misspell]"
    assert quoted_parts(prompt) == quotes.quoted_parts(prompt) == ["SUMMER DROP", "50% off", "Free coffee"]
    # The simulator ignores its own markers inside quotes; the core rule is the same otherwise.
    assert quoted_parts('"SUMMER [sim:fail] DROP"') == ["SUMMER DROP"]


# ------------------------------------------------------------------ passes (scripted reader)


class ScriptedReader:
    """Returns canned readings, one per pass, and counts the passes asked for."""

    name = "scripted"

    def __init__(self, readings: list[str], available: bool = True, fail_at: int | None = None) -> None:
        self.readings = readings
        self._available = available
        self.fail_at = fail_at
        self.asked = 0

    def available(self) -> bool:
        return self._available

    def passes(self, image: Image.Image) -> Iterator[str]:
        for i, text in enumerate(self.readings):
            if self.fail_at == i:
                raise RuntimeError("tesseract crashed")
            self.asked += 1
            yield text


def blank() -> Image.Image:
    return Image.new("RGB", (64, 64), "white")


def test_reading_stops_at_the_first_pass_that_reads_everything():
    reader = ScriptedReader(["SUMMR DRP", "SUMMER DROP New arrivals", "never asked"])
    report = check_image(blank(), ["SUMMER DROP", "New arrivals"], reader)
    assert report.state == PASS and report.passes == 2 and reader.asked == 2


def test_each_string_keeps_its_best_reading_over_all_passes():
    reader = ScriptedReader(["SUMMER DROP", "SUMMR", "New arivals"])
    report = check_image(blank(), ["SUMMER DROP", "New arrivals"], reader)
    assert report.state == MISMATCH and report.passes == 3
    first, second = report.checks
    assert first.matched and first.read == "SUMMER DROP"
    assert not second.matched and second.read == "New arivals"
    assert report.matched == 1


def test_on_a_tie_the_reading_split_like_the_wanted_string_is_shown():
    report = check_image(blank(), ["SUMMER DROP"], ScriptedReader(["SU MMR DRP", "SUMMR DRP", "S UMMR DRP"]))
    assert report.checks[0].read == "SUMMR DRP" and report.checks[0].similarity == pytest.approx(0.8)


def test_missing_ocr_is_a_clear_unavailable_state():
    report = check_image(blank(), ["SUMMER DROP"], ScriptedReader([], available=False))
    assert report.state == UNAVAILABLE and "tesseract-ocr" in report.message
    assert [c.matched for c in report.checks] == [False]


def test_an_ocr_crash_is_an_error_state_not_an_exception():
    report = check_image(blank(), ["SUMMER DROP"], ScriptedReader(["SUMMR", "SUMMER DROP"], fail_at=1))
    assert report.state == ERROR and "RuntimeError" in report.message
    assert report.checks[0].read == "SUMMR"  # what was read before the crash is kept


def test_a_missing_tesseract_binary_reports_unavailable(tmp_path):
    reader = TesseractReader(cmd=str(tmp_path / "no-such-tesseract"))
    assert reader.available() is False and reader.version is None
    report = check_image(blank(), ["SUMMER DROP"], reader)
    assert report.state == UNAVAILABLE


# ------------------------------------------------------------------ real OCR on simulator renders


@pytest.fixture(scope="module")
def ocr() -> TesseractReader:
    reader = TesseractReader()
    if not reader.available():
        pytest.fail(f"tesseract is missing ({shutil.which('tesseract')}): `make test` installs tesseract-ocr")
    return reader


@pytest.mark.parametrize("ratio", ["9:16", "1:1", "16:9"])
def test_a_right_render_passes_and_a_misspelled_one_is_caught(ocr, ratio):
    prompt = "Poster with the headline \"SUMMER DROP\" and 'New arrivals'"
    right = check_image(render_image(prompt, ratio, "1K"), wanted_strings(prompt), ocr)
    assert right.state == PASS, right.checks
    wrong = check_image(render_image(prompt, ratio, "1K", misspelled=True), wanted_strings(prompt), ocr)
    assert wrong.state == MISMATCH
    headline, sub = wrong.checks
    assert not headline.matched and headline.read.replace("\n", " ") == misspell("SUMMER DROP") == "SUMMR DRP"
    assert not sub.matched and sub.similarity < 1.0


def _bar_between_words(words: list[str]) -> Image.Image:
    """Words in white with a thin light bar (a panel or shape edge) after the first one."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 72)
    img = Image.new("RGB", (1400, 300), (40, 60, 90))
    draw = ImageDraw.Draw(img)
    x = 60.0
    for i, word in enumerate(words):
        draw.text((x, 110), word, font=font, fill="white")
        x += draw.textlength(word, font=font) + 30
        if i == 0:
            draw.rectangle((x, 120, x + 5, 185), fill=(230, 230, 230))
            x += 35
    return img


def test_a_shape_edge_read_as_a_bar_between_words_is_not_a_false_alarm(ocr):
    # Tesseract reads the bar as "|" in every pass ("FRESH | BREAD DAILY"), which
    # once folded to an extra "l" and turned a correct headline into a ✗.
    right = check_image(_bar_between_words(["FRESH", "BREAD", "DAILY"]), ["FRESH BREAD DAILY"], ocr)
    assert right.state == PASS, right.read_text
    wrong = check_image(_bar_between_words(["FRESH", "BRED", "DAILY"]), ["FRESH BREAD DAILY"], ocr)
    assert wrong.state == MISMATCH, wrong.read_text


# Headlines spread over every ratio (each ratio gets one, every headline several
# ratios): 16 right and 16 misspelled renders at 1K, the simulator's own pictures.
SIM_HEADLINES = ("FRESH BREAD DAILY", "Open late", "SUMMER DROP", "Midnight Jazz Club")


@pytest.mark.slow
def test_simulator_renders_at_every_ratio_give_no_false_alarm_and_every_misspelling_is_caught(ocr):
    from studio.ratios import RATIO_NAMES

    false_alarms, missed = [], []
    for i, ratio in enumerate(RATIO_NAMES):
        headline = SIM_HEADLINES[i % len(SIM_HEADLINES)]
        prompt = f'Bakery window sign "{headline}"'
        wanted = wanted_strings(prompt)
        right = check_image(render_image(prompt, ratio, "1K"), wanted, ocr)
        if right.state != PASS:
            false_alarms.append((ratio, headline, right.read_text))
        wrong = check_image(render_image(prompt, ratio, "1K", misspelled=True), wanted, ocr)
        if wrong.state != MISMATCH:
            missed.append((ratio, headline, wrong.read_text))
    assert len(RATIO_NAMES) == 16
    assert false_alarms == []
    assert missed == []


def test_the_simulator_misspell_fault_is_caught(ocr):
    import httpx

    with Simulator(api_keys=[KEY], min_duration=0.05, max_duration=0.1, seed=4) as sim:
        sim.set_faults(misspell_rate=1.0)
        client = HiAPIClient(KEY, base_url=sim.base_url)
        task_id = client.create_task(TaskRequest(POSTER, "3:2", "1K")).task_id
        assert wait_for(lambda: client.get_task(task_id).is_terminal, 10)
        png = httpx.get(client.get_task(task_id).outputs[0].url).content
        client.close()
    report = check_image(Image.open(io.BytesIO(png)), wanted_strings(POSTER), ocr)
    assert report.state == MISMATCH and report.checks[0].read == "SUMMR DRP"


# ------------------------------------------------------------------ store


def kept_output(store: Store, keeper: ImageKeeper, prompt: str, ratio: str = "1:1", n: int = 0) -> int:
    sid = store.add_submission(TaskRequest(prompt, ratio, "1K"), idempotency_key=f"k{n}", creative_id=f"c{n}")
    store.mark_created(sid, f"tk-{n}")
    store.record_task(
        Task.parse(
            {
                "taskId": f"tk-{n}",
                "status": "success",
                "output": [{"url": "https://x/a.png", "type": "image"}],
            }
        )
    )
    kept = keeper.keep_bytes(_png(render_image(prompt, ratio, "1K")), {"prompt": prompt})
    [o] = store.outputs_for([sid])[sid]
    store.output_kept(
        o.id, sha256=kept.sha256, width=kept.width, height=kept.height, nbytes=kept.bytes,
    )  # fmt: skip
    return o.id


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def report_of(state: str, *checks: StringCheck) -> FidelityReport:
    return FidelityReport(state, tuple(checks), "read", "tesseract 5", 0.4, 1)


def test_store_round_trip_filter_and_cascade(tmp_path):
    store = Store(tmp_path / "s.db")
    keeper = ImageKeeper(tmp_path / "images")
    good = kept_output(store, keeper, POSTER, n=1)
    bad = kept_output(store, keeper, POSTER + " [sim:misspell]", n=2)
    plain = kept_output(store, keeper, "A quiet lake at dawn", n=3)
    assert store.record_text_check(
        good, report_of(PASS, StringCheck("SUMMER DROP", "SUMMER DROP", 1.0, True))
    )
    assert store.record_text_check(
        bad, report_of(MISMATCH, StringCheck("SUMMER DROP", "SUMMR DRP", 0.8, False))
    )
    got = store.text_check(bad)
    assert got.state == MISMATCH and got.checks == (StringCheck("SUMMER DROP", "SUMMR DRP", 0.8, False),)
    assert got.engine == "tesseract 5" and got.matched == 0
    assert set(store.text_checks_for([good, bad, plain])) == {good, bad}
    # The gallery filter keeps only mismatches, with the other filters still applying.
    items, total = store.gallery(GalleryQuery(text_mismatch=True))
    assert total == 1 and [i.output_id for i in items] == [bad]
    assert store.gallery(GalleryQuery(text_mismatch=True, text="lake"))[1] == 0
    assert store.gallery(GalleryQuery())[1] == 3
    # Deleting the image deletes its check; a late result for it is dropped, not an error.
    store.delete_outputs([bad])
    assert store.text_check(bad) is None
    assert store.record_text_check(bad, report_of(MISMATCH)) is False


def test_a_database_that_skipped_slot_3_gets_the_table_back(tmp_path):
    from studio.store import SCHEMA_VERSION
    from tests.support import old_database

    path = tmp_path / "studio.db"
    old_database(path, 5, placeholders=(3,))  # as written while slot 3 was still "SELECT 1"
    store = Store(path)  # the upgrade to the current version repairs slot 3
    assert store.schema_version() == SCHEMA_VERSION
    keeper = ImageKeeper(tmp_path / "images")
    out = kept_output(store, keeper, POSTER, n=1)
    assert store.record_text_check(out, report_of(PASS)) and store.text_check(out).state == PASS


def test_images_needing_a_check_are_those_with_quoted_text(tmp_path):
    store = Store(tmp_path / "s.db")
    keeper = ImageKeeper(tmp_path / "images")
    quoted = kept_output(store, keeper, POSTER, n=1)
    kept_output(store, keeper, "A quiet lake, don't you think", n=2)
    later = kept_output(store, keeper, "Sign that reads 'OPEN LATE'", n=3)
    assert store.outputs_needing_text_check() == [quoted, later]
    store.record_text_check(quoted, report_of(PASS))
    store.record_text_check(later, report_of(UNAVAILABLE))
    assert store.outputs_needing_text_check() == []
    assert store.outputs_needing_text_check(redo_unavailable=True) == [later]  # OCR came back


def test_checker_backfills_and_records_real_results(tmp_path, ocr):
    store = Store(tmp_path / "s.db")
    keeper = ImageKeeper(tmp_path / "images")
    good = kept_output(store, keeper, POSTER, "16:9", n=1)
    bad = kept_output(store, keeper, POSTER + " [sim:misspell]", "16:9", n=2)
    kept_output(store, keeper, "A quiet lake at dawn", n=3)
    checker = FidelityChecker(store, ocr, open_image=keeper.open_original)
    try:
        assert checker.backfill() == 2
        assert wait_for(lambda: len(store.text_checks_for([good, bad])) == 2)
    finally:
        checker.close()
    assert store.text_check(good).state == PASS
    wrong = store.text_check(bad)
    assert wrong.state == MISMATCH and wrong.checks[0].read == "SUMMR DRP"
    assert "SUMMR" in wrong.read_text and wrong.engine.startswith("tesseract ")


# ------------------------------------------------------------------ tracker end to end


def test_tracker_checks_every_kept_image_and_catches_the_misspelled_render(tmp_path, ocr):
    sim = Simulator(api_keys=[KEY], min_duration=0.2, max_duration=0.5, seed=8).start()
    store = Store(tmp_path / "studio.db")
    keeper = ImageKeeper(tmp_path / "images")
    checker = FidelityChecker(store, ocr, open_image=keeper.open_original)
    tracker = Tracker(
        store,
        HiAPIClient(KEY, base_url=sim.base_url, backoff_base=0.05, backoff_cap=0.2),
        keeper,
        priors={"1K": 0.4, "2K": 0.4, "4K": 0.4},
        on_kept=checker.submit,
    ).start()
    try:
        right = tracker.submit([TaskRequest(POSTER, r, "1K") for r in ("9:16", "1:1", "16:9")])
        [wrong] = tracker.submit([TaskRequest(POSTER + " [sim:misspell]", "4:3", "1K")])
        [plain] = tracker.submit([TaskRequest("A quiet lake at dawn", "1:1", "1K")])

        def out_id(sid: int) -> int | None:
            outs = store.outputs_for([sid]).get(sid, [])
            return outs[0].id if outs and outs[0].state == "kept" else None

        assert wait_for(lambda: all(out_id(s) for s in [*right, wrong, plain]))
        ids = {s: out_id(s) for s in [*right, wrong, plain]}
        assert wait_for(lambda: len(store.text_checks_for([ids[s] for s in [*right, wrong]])) == 4)
        checks = store.text_checks_for(list(ids.values()))
        assert [checks[ids[s]].state for s in right] == [PASS, PASS, PASS]
        miss = checks[ids[wrong]]
        assert miss.state == MISMATCH and miss.checks[0].wanted == "SUMMER DROP"
        assert miss.checks[0].read == "SUMMR DRP"
        assert ids[plain] not in checks  # no quoted text: skipped, no row
        assert [i.output_id for i in store.gallery(GalleryQuery(text_mismatch=True))[0]] == [ids[wrong]]
    finally:
        tracker.stop()
        checker.close()
        sim.stop()


def test_a_failing_hook_never_loses_the_image(tmp_path):
    sim = Simulator(api_keys=[KEY], min_duration=0.1, max_duration=0.2, seed=9).start()
    store = Store(tmp_path / "studio.db")

    def broken_hook(output_id: int) -> None:
        raise RuntimeError("hook broke")

    tracker = Tracker(
        store,
        HiAPIClient(KEY, base_url=sim.base_url),
        ImageKeeper(tmp_path / "images"),
        priors={"1K": 0.2, "2K": 0.2, "4K": 0.2},
        on_kept=broken_hook,
    ).start()
    try:
        [sid] = tracker.submit([TaskRequest(POSTER, "1:1", "1K")])
        assert wait_for(lambda: any(o.state == "kept" for o in store.outputs_for([sid]).get(sid, [])), 30)
        assert wait_for(lambda: "hook broke" in (tracker.health()["last_error"] or ""), 10)
        [o] = store.outputs_for([sid])[sid]
        assert o.state == "kept" and o.sha256
    finally:
        tracker.stop()
        sim.stop()
