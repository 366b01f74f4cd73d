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


def _soak_recipe(*variables: str) -> tuple[str, str]:
    """What `make soak` would run with `variables` (make's dry run): its prerequisites' commands
    and the soak's own command line."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        ["make", "-n", "-s", "-C", str(root), "--no-print-directory", *variables],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    lines = out.strip().splitlines()
    return "\n".join(lines[:-1]), lines[-1]


def test_make_soak_passes_team_and_the_count_and_installs_the_team_engines_first():
    before, single = _soak_recipe("soak")
    assert single.endswith("-m tools.soak --submissions 300") and "--team" not in single
    assert "postgresql" not in before
    before, team = _soak_recipe("soak", "TEAM=1", "SUBMISSIONS=60")
    assert team.endswith("-m tools.soak --team --submissions 60")
    assert "apt-get install -y -qq postgresql" in before or "initdb" in before  # team-deps ran first
    assert _soak_recipe("soak-team", "SUBMISSIONS=20")[1].endswith("-m tools.soak --team --submissions 20")
    assert "--team" not in _soak_recipe("soak", "TEAM=0")[1]
