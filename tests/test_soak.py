"""The soak's short version (the full one is `make soak`): 30 submissions, faults on, SIGKILLs mid-way."""

from __future__ import annotations

import pytest

from tools.soak import parse_args, run


@pytest.mark.slow
def test_short_soak_loses_nothing_and_creates_nothing_twice(tmp_path):
    # Slow creates, so the first kill lands while POSTs are in flight; the second at 15 terminal.
    args = parse_args(
        [
            "--submissions",
            "30",
            "--kill-at",
            "0.5",
            "--create-delay",
            "1",
            "--timeout",
            "150",
            "--data",
            str(tmp_path / "d"),
        ]
    )
    result = run(args)
    print(result.report())
    first, second = result.kill_snapshots
    assert first["sending"] > 0  # killed with creates in flight: resent with their keys after
    assert second["terminal"] < 30  # killed again with results still coming
    assert result.terminal == result.submissions == 30
    assert result.duplicates == 0 and result.orphans == 0
    assert result.tasks_created == result.with_task == 30
    assert result.lost_images == [] and result.images_verified == result.successes
    assert result.failures_with_reason == result.failures_matching == result.failures
    assert result.sim_stats["create_answers_dropped"] + result.sim_stats["idempotent_replays"] > 0
    assert result.ok, result.problems
