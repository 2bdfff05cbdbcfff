"""CLI: ``python -m airflow_provider_nanogpt.simulator [options]``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .app import NanoGPTSimulator
from .markers import SHAPES

API_KEY_ENV = "NANOGPT_SIM_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (defaults match :class:`NanoGPTSimulator`, port 8787)."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_nanogpt.simulator",
        description="Local NanoGPT video API simulator (loopback only, no real charges).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=8787, help="port (0 = pick a free one)")
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"accepted API key (default: ${API_KEY_ENV}; unset = any key)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="real seconds per simulated second (0.05 = 20x faster)",
    )
    parser.add_argument("--balance", type=float, default=100.0, help="starting USD balance")
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=50,
        help="submits per minute per client IP (0 = unlimited)",
    )
    parser.add_argument(
        "--recover-rate-limit",
        type=int,
        default=20,
        help="recover calls per minute per client IP (0 = unlimited)",
    )
    parser.add_argument(
        "--status-shape", choices=SHAPES, default="nested", help="unified status response shape"
    )
    parser.add_argument(
        "--queue-seconds", type=float, default=2.0, help="simulated seconds a job stays queued"
    )
    parser.add_argument(
        "--render-seconds",
        type=float,
        default=8.0,
        help="simulated seconds a job stays in progress",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="real seconds added before every API response (a network round trip)",
    )
    parser.add_argument(
        "--recover-lag",
        type=float,
        default=0.0,
        help="simulated seconds before a new job is listed by recover",
    )
    parser.add_argument(
        "--sample-video",
        default=None,
        help="a .mp4/.webm/.mov file to serve as every finished job's video "
        "(default: the shipped 3 s H.264 clip)",
    )
    parser.add_argument("--quiet", action="store_true", help="no access log on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until SIGINT/SIGTERM; returns the exit code."""
    args = build_parser().parse_args(argv)
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    try:
        sim = NanoGPTSimulator(
            host=args.host,
            port=args.port,
            api_key=api_key,
            time_scale=args.time_scale,
            balance_usd=args.balance,
            rate_limit_per_minute=args.rate_limit,
            recover_limit_per_minute=args.recover_rate_limit,
            status_shape=args.status_shape,
            queue_seconds=args.queue_seconds,
            render_seconds=args.render_seconds,
            quiet=args.quiet,
            latency_seconds=args.latency,
            recover_lag_seconds=args.recover_lag,
            sample_video=args.sample_video,
        )
        sim.start()
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"NanoGPT simulator listening on {sim.url}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
