"""The one validation function and the one ratio table, case by case."""

import pytest

from studio.ratios import (
    MAX_LONG_EDGE,
    MAX_PIXELS,
    MIN_PIXELS,
    PIXEL_SIZES,
    RATIO_NAMES,
    RATIOS,
    RESOLUTIONS,
    combination_problem,
    pixel_size,
)
from studio.validation import MAX_PROMPT_CHARS, first_problem_by_field, validate_request

DOCUMENTED_RATIOS = [
    "auto", "1:1", "3:2", "2:3", "4:3", "3:4", "5:4", "4:5",
    "16:9", "9:16", "2:1", "1:2", "3:1", "1:3", "21:9", "9:21",
]  # fmt: skip


def test_table_has_exactly_the_documented_ratios():
    assert sorted(RATIO_NAMES) == sorted(DOCUMENTED_RATIOS)
    assert RESOLUTIONS == ("1K", "2K", "4K")


@pytest.mark.parametrize("ratio", DOCUMENTED_RATIOS)
@pytest.mark.parametrize("res", ["1K", "2K", "4K"])
def test_pixel_sizes_obey_the_model_family_limits(ratio, res):
    w, h = pixel_size(ratio, res)
    assert w % 16 == 0 and h % 16 == 0
    assert max(w, h) <= MAX_LONG_EDGE
    assert max(w, h) / min(w, h) <= 3.0 + 1e-9
    # Every combination HiAPI accepts on either model has a size inside the pixel budget.
    if (
        combination_problem(ratio, res, image_to_image=True) is None
        or combination_problem(ratio, res) is None
    ):
        assert MIN_PIXELS <= w * h <= MAX_PIXELS
    r = RATIOS[ratio]
    # Within 2 % of the nominal ratio after rounding to multiples of 16.
    assert abs((w / h) / (r.width / r.height) - 1) < 0.02


def test_reseller_rule_for_known_sizes():
    assert pixel_size("1:1", "1K") == (1024, 1024)
    assert pixel_size("16:9", "2K") == (2048, 1152)
    assert pixel_size("16:9", "4K") == (3840, 2160)
    assert pixel_size("9:16", "4K") == (2160, 3840)
    # Portrait sizes mirror landscape ones.
    for name in RATIO_NAMES:
        r = RATIOS[name]
        mirror = f"{r.height}:{r.width}"
        if mirror in RATIOS:
            for res in RESOLUTIONS:
                assert PIXEL_SIZES[(name, res)] == PIXEL_SIZES[(mirror, res)][::-1]


def test_valid_request_has_no_problems():
    assert validate_request("A poster", "16:9", "2K") == []
    assert validate_request("x" * MAX_PROMPT_CHARS, "auto", "1K") == []


@pytest.mark.parametrize(
    ("kwargs", "field", "needle"),
    [
        ({"prompt": ""}, "prompt", "required"),
        ({"prompt": "   \n\t"}, "prompt", "required"),
        ({"prompt": None}, "prompt", "required"),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt", "Shorten it by 1 character"),
        ({"prompt": "a\x00b"}, "prompt", "NUL"),
        ({"aspect_ratio": "7:5"}, "aspect_ratio", "not supported"),
        ({"aspect_ratio": None}, "aspect_ratio", "not supported"),
        ({"resolution": "8K"}, "resolution", "1K, 2K or 4K"),
        ({"resolution": "2k"}, "resolution", "1K, 2K or 4K"),
        ({"aspect_ratio": "auto", "resolution": "2K"}, "aspect_ratio", "only with 1K"),
        ({"aspect_ratio": "auto", "resolution": "4K"}, "aspect_ratio", "only with 1K"),
        ({"aspect_ratio": "1:1", "resolution": "4K"}, "aspect_ratio", "choose 1K or 2K"),
        ({"aspect_ratio": "5:4", "resolution": "2K"}, "aspect_ratio", "choose 1K or 4K"),
        ({"aspect_ratio": "9:21", "resolution": "4K"}, "aspect_ratio", "choose 1K."),
        ({"callback_url": "http://example.com/hook"}, "callback.url", "https"),
        ({"callback_url": "ftp://example.com/hook"}, "callback.url", "https"),
        ({"callback_url": "https:///nohost"}, "callback.url", "host"),
        ({"callback_url": ""}, "callback.url", "https"),
        ({"callback_url": "https://example.com/h", "callback_when": "always"}, "callback.when", "final"),
    ],
)
def test_each_rule_names_its_field(kwargs, field, needle):
    args = {"prompt": "A poster", "aspect_ratio": "16:9", "resolution": "2K"} | kwargs
    problems = validate_request(**args)
    by_field = first_problem_by_field(problems)
    assert field in by_field, problems
    assert needle.lower() in by_field[field].lower()


def test_loopback_http_callbacks_only_when_allowed():
    url = "http://127.0.0.1:9000/hook"
    assert validate_request("p", "1:1", "1K", url)
    assert validate_request("p", "1:1", "1K", url, allow_loopback_http=True) == []
    assert validate_request("p", "1:1", "1K", "http://localhost/h", allow_loopback_http=True) == []
    assert validate_request("p", "1:1", "1K", "http://10.0.0.1/h", allow_loopback_http=True)
    assert validate_request("p", "1:1", "1K", "https://hooks.example.com/h") == []


# HiAPI's current limits, written out: auto only at 1K; no 2K for 5:4, 4:5, 3:1, 1:3,
# 9:21; no 4K for 3:1, 1:3, 9:21; and no 1:1 at 4K on text-to-image only.
BOTH_MODELS_REFUSE = (
    {("auto", "2K"), ("auto", "4K")}
    | {(r, "2K") for r in ("5:4", "4:5", "3:1", "1:3", "9:21")}
    | {(r, "4K") for r in ("3:1", "1:3", "9:21")}
)


def test_combination_rules_match_hiapi_today():
    def refused(**kw):
        return {(r, res) for r in RATIO_NAMES for res in RESOLUTIONS if combination_problem(r, res, **kw)}

    assert refused() == BOTH_MODELS_REFUSE | {("1:1", "4K")}
    assert refused(image_to_image=True) == BOTH_MODELS_REFUSE
    assert combination_problem("5:4", "4K") is None and combination_problem("4:5", "4K") is None


def test_each_refusal_says_what_to_choose_instead():
    assert "for text-to-image" in combination_problem("1:1", "4K")
    for ratio, res in BOTH_MODELS_REFUSE - {("auto", "2K"), ("auto", "4K")}:
        why = combination_problem(ratio, res)
        offered = [r for r in RESOLUTIONS if (ratio, r) not in BOTH_MODELS_REFUSE]
        assert why.endswith(f"choose {' or '.join(offered)}."), why
        assert ratio in why and res in why


def test_image_to_image_allows_a_square_at_4k_and_needs_references():
    refs = ["https://example.com/a.png"]
    assert validate_request("p", "1:1", "4K", image_to_image=True, references=refs) == []
    assert first_problem_by_field(validate_request("p", "1:1", "4K"))["aspect_ratio"]
    missing = first_problem_by_field(validate_request("p", "1:1", "1K", image_to_image=True))
    assert "1-16 reference image URLs" in missing["references"]
    too_many = validate_request("p", "1:1", "1K", image_to_image=True, references=refs * 17)
    assert first_problem_by_field(too_many)["references"]
    not_url = validate_request("p", "1:1", "1K", image_to_image=True, references=["a.png"])
    assert "not an http(s) URL" in first_problem_by_field(not_url)["references"]
    stray = first_problem_by_field(validate_request("p", "1:1", "1K", references=refs))
    assert "image-to-image model" in stray["references"]


@pytest.mark.parametrize("references", [5, "https://example.com/a.png", {"url": "https://example.com/a.png"}])
def test_references_that_are_not_a_list_are_refused_with_a_message(references):
    problems = validate_request("p", "1:1", "1K", image_to_image=True, references=references)
    assert first_problem_by_field(problems)["references"] == (
        "Image-to-image needs 1-16 reference image URLs (input_urls); give them as a list."
    )


def test_too_many_references_say_how_many_to_remove():
    refs = ["https://example.com/a.png"] * 18
    problems = validate_request("p", "1:1", "1K", image_to_image=True, references=refs)
    assert first_problem_by_field(problems)["references"].endswith("; remove 2.")


def test_many_problems_are_all_reported():
    problems = validate_request("", "9:9", "16K")
    assert {p.field for p in problems} == {"prompt", "aspect_ratio", "resolution"}
