"""The soak's short version (the full one is `make soak`): 30 submissions, faults on, a SIGKILL mid-way."""

from __future__ import annotations

from studio.soak import parse_args, run


def test_short_soak_loses_nothing_and_creates_nothing_twice(tmp_path):
    # Slow creates: the kill lands while some POSTs are in flight (resent with their key after).
    args = parse_args(
        [
            "--submissions",
            "30",
            "--kill-at",
            "0.2",
            "--create-delay",
            "1.5",
            "--timeout",
            "150",
            "--data",
            str(tmp_path / "d"),
        ]
    )
    result = run(args)
    print(result.report())
    assert result.kill_snapshot["terminal"] < 30  # the kill landed with work unfinished,
    assert result.kill_snapshot["sending"] > 0  # creates among it
    assert result.terminal == result.submissions == 30
    assert result.duplicates == 0 and result.orphans == 0
    assert result.tasks_created == result.with_task == 30
    assert result.lost_images == [] and result.images_verified == result.successes
    assert result.failures_with_reason == result.failures_matching == result.failures
    assert result.sim_stats["create_answers_dropped"] + result.sim_stats["idempotent_replays"] > 0
    assert result.ok, result.problems
