"""HiAPI's ratio/resolution limits, stated here from the contract notes alone, against the simulator.

This file does not import `studio.ratios` or `studio.validation`: it writes the
documented rules out on its own, sends every ratio x resolution on each model to
a real simulator over HTTP with a raw httpx client, and checks that exactly the
forbidden pairs answer 400 INVALID_REQUEST and every other pair is accepted. If
the one table drifts from the contract, this fails.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest

from studio.simulator import Simulator

KEY = "sk-test-contract-limits-0123456789"
REFERENCE = "https://cdn.example.com/reference.png"

# -- the contract's rules, transcribed ----------------------------------------------------
# "aspect_ratio: auto (default), 1:1, 3:2, 2:3, 4:3, 3:4, 5:4, 4:5, 16:9, 9:16, 2:1, 1:2,
#  3:1, 1:3, 21:9, 9:21"; "resolution: 1K (default), 2K, 4K".
RATIOS = (
    "auto", "1:1", "3:2", "2:3", "4:3", "3:4", "5:4", "4:5",
    "16:9", "9:16", "2:1", "1:2", "3:1", "1:3", "21:9", "9:21",
)  # fmt: skip
RESOLUTIONS = ("1K", "2K", "4K")
MODELS = ("gpt-image-2/text-to-image", "gpt-image-2", "gpt-image-2/image-to-image")


def forbidden(ratio: str, resolution: str, model: str) -> bool:
    """The contract's cross-field rules on the default route.

    - `auto` works only with `1K`;
    - `2K` is unavailable for `5:4`, `4:5`, `3:1`, `1:3`, `9:21`;
    - `4K` is unavailable for `3:1`, `1:3`, `9:21`, and for `1:1` on text-to-image only
      (image-to-image allows `1:1` at 4K); `gpt-image-2` is the legacy alias of text-to-image.
    """
    if ratio == "auto":
        return resolution != "1K"
    if resolution == "2K":
        return ratio in ("5:4", "4:5", "3:1", "1:3", "9:21")
    if resolution == "4K":
        text_to_image = model != "gpt-image-2/image-to-image"
        return ratio in ("3:1", "1:3", "9:21") or (ratio == "1:1" and text_to_image)
    return False


def body(ratio: str, resolution: str, model: str) -> dict:
    inp: dict = {"prompt": "a lighthouse at dusk", "aspect_ratio": ratio, "resolution": resolution}
    if model == "gpt-image-2/image-to-image":
        inp["input_urls"] = [REFERENCE]  # required there, 1-16 public URLs
    return {"model": model, "input": inp}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with Simulator(api_keys=[KEY], min_duration=0.05, max_duration=0.1, seed=11) as sim:
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=sim.base_url, headers=headers, timeout=10, trust_env=False) as client:
            yield client


def test_the_transcribed_rules_are_the_documented_counts():
    # 2 auto + 5 at 2K + 3 at 4K on every model, and the square at 4K on text-to-image.
    for model, extra in zip(MODELS, (1, 1, 0), strict=True):
        refused = [p for p in itertools.product(RATIOS, RESOLUTIONS) if forbidden(*p, model)]
        assert len(refused) == 10 + extra
    assert not forbidden("5:4", "4K", "gpt-image-2/text-to-image")
    assert not forbidden("4:5", "4K", "gpt-image-2/text-to-image")


@pytest.mark.parametrize("model", MODELS)
def test_exactly_the_forbidden_pairs_are_refused(http: httpx.Client, model: str):
    refused, accepted, wrong = [], [], []
    for ratio, resolution in itertools.product(RATIOS, RESOLUTIONS):
        r = http.post("/v1/tasks", json=body(ratio, resolution, model))
        envelope = r.json()
        if forbidden(ratio, resolution, model):
            ok = (
                r.status_code == 400
                and envelope.get("code") == 400
                and envelope.get("error_code") == "INVALID_REQUEST"
                and envelope.get("data") is None
                and ratio in envelope.get("message", "")
            )
            (refused if ok else wrong).append((ratio, resolution, r.status_code))
        else:
            ok = r.status_code == 200 and str(envelope["data"]["taskId"]).startswith("tk-hiapi-")
            (accepted if ok else wrong).append((ratio, resolution, r.status_code))
    assert wrong == []
    assert len(refused) + len(accepted) == len(RATIOS) * len(RESOLUTIONS)
