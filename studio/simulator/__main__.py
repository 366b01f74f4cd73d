"""Run the HiAPI simulator in the foreground: `python -m studio.simulator --port 8787`.

The base URL is printed alone on the first line of stdout, so scripts can read it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from .server import Faults, Simulator, realistic_duration


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m studio.simulator", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8787, help="0 picks a free port (default 8787)")
    ap.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="accept only this key (repeatable); by default any key starting with sk- is accepted",
    )
    ap.add_argument("--signing-key", default=None, help="sign callbacks with this secret (16-256 chars)")
    ap.add_argument("--min-duration", type=float, default=3.0, help="seconds (default 3)")
    ap.add_argument("--max-duration", type=float, default=8.0, help="seconds (default 8)")
    ap.add_argument(
        "--realistic",
        action="store_true",
        help="draw durations from the realistic model (1K ~45 s, 2K ~70 s, 4K ~110 s) instead",
    )
    ap.add_argument("--time-scale", type=float, default=1.0, help="divide all task durations by this")
    ap.add_argument("--output-ttl", type=float, default=7 * 24 * 3600, help="seconds output URLs stay valid")
    ap.add_argument(
        "--callback-backoff",
        type=float,
        default=None,
        metavar="SECONDS",
        help="first callback retry wait; later ones are 5x and 20x it (default 60, or "
        "$STUDIO_SIM_CALLBACK_BACKOFF: HiAPI's +1, +5, +20 minutes)",
    )
    ap.add_argument("--fail-rate", type=float, default=0.0, help="share of tasks that end in fail (0..1)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--quiet", action="store_true", help="do not log requests to stderr")
    args = ap.parse_args(argv)

    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        sim = Simulator(
            host=args.host,
            port=args.port,
            api_keys=args.api_key or None,
            signing_key=args.signing_key,
            min_duration=args.min_duration,
            max_duration=args.max_duration,
            duration_model=realistic_duration if args.realistic else None,
            time_scale=args.time_scale,
            output_ttl=args.output_ttl,
            faults=Faults(fail_rate=args.fail_rate),
            seed=args.seed,
            callback_backoff=args.callback_backoff,
        )
    except ValueError as e:
        ap.error(str(e))
    sim.start()
    print(sim.base_url, flush=True)
    print("HiAPI simulator running; Ctrl-C to stop.", file=sys.stderr, flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
