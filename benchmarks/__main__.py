"""`make bench`: run every benchmark, print one table, write benchmarks/RESULTS.md."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import Row, machine, table

SECTIONS = ("detection", "gallery", "load", "sessions", "startup", "fidelity", "interaction", "team")
# Sections kept small inside `make bench` to stay under ten minutes; each has a
# fuller run of its own (`python -m benchmarks.fidelity` reads 96×2 samples).
ALWAYS_QUICK = {"fidelity"}
RESULTS = Path(__file__).with_name("RESULTS.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument(
        "--quick", action="store_true", help="smaller runs (a smoke test, not for RESULTS.md)"
    )
    parser.add_argument("sections", nargs="*", default=list(SECTIONS), help=f"any of {', '.join(SECTIONS)}")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    timings: dict[str, float] = {}
    failed = []
    started = time.monotonic()
    for name in args.sections:
        t0 = time.monotonic()
        print(f"… {name}", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            rows.extend(module.run(quick=args.quick or name in ALWAYS_QUICK))
        except Exception:  # one broken section must not hide the others
            failed.append(name)
            traceback.print_exc()
        timings[name] = time.monotonic() - t0
    total = time.monotonic() - started
    out = table(rows)
    print(out)
    missed = [r for r in rows if r.met is False]
    summary = (
        f"{sum(r.met is True for r in rows)} targets met, {len(missed)} missed"
        + (f", sections failed: {', '.join(failed)}" if failed else "")
        + f"; {total:.0f} s in all ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())})"
    )
    print(summary)
    if not args.quick and set(args.sections) == set(SECTIONS):
        notes = [f"- {r.section} · {r.metric}: {r.note}" for r in rows if r.note]
        RESULTS.write_text(
            "# Benchmark results\n\n"
            f"Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — {machine()}.\n"
            "Every figure is measured in this run beside a baseline from the same run; "
            "ratio = value / baseline.\n\n"
            + out
            + "\n\n"
            + summary
            + "\n"
            + ("\n## Notes\n\n" + "\n".join(notes) + "\n" if notes else "")
            + (RESULTS_COMMENTARY.read_text() if RESULTS_COMMENTARY.exists() else "")
        )
        print(f"wrote {RESULTS}")
    if not args.quick and "team" in args.sections and "team" not in failed:
        from benchmarks.team import SECTION as TEAM
        from benchmarks.team import write_results

        write_results(
            [r for r in rows if r.section == TEAM], "python -m benchmarks " + " ".join(args.sections)
        )
    return 1 if failed else 0


RESULTS_COMMENTARY = Path(__file__).with_name("COMMENTARY.md")

if __name__ == "__main__":
    sys.exit(main())
