"""CLI: ``python -m airflow_provider_nanogpt.simulator [options]``, or ``nanogpt-simulator``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .app import NanoGPTSimulator
from .markers import MARKER_HELP, SHAPES, marker_syntax

API_KEY_ENV = "NANOGPT_SIM_API_KEY"
MARKER_COLUMN = 30


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default in its help (except "none": that help says what unset means), and
    the epilog's marker table kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def program_name() -> str:
    """The name this command was called by: the console script's (``nanogpt-simulator``) or
    ``python -m airflow_provider_nanogpt.simulator``, where argparse alone says ``__main__.py``."""
    called = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if called in ("", "-c", "__main__.py"):
        return f"python -m {__package__ or 'airflow_provider_nanogpt.simulator'}"
    return called


def markers_epilog() -> str:
    """The prompt markers, one a line, for ``--help``."""
    lines = [
        "prompt markers (write them in a job's prompt; each applies to that job only,",
        "an unknown one makes the submit answer 400):",
    ]
    for name, meaning in sorted(MARKER_HELP.items()):
        syntax = marker_syntax(name)
        if len(syntax) + 2 < MARKER_COLUMN:
            lines.append(f"  {syntax:<{MARKER_COLUMN - 2}}{meaning}")
        else:
            lines += [f"  {syntax}", f"{'':<{MARKER_COLUMN}}{meaning}"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (defaults match :class:`NanoGPTSimulator`, port 8787)."""
    parser = argparse.ArgumentParser(
        prog=program_name(),
        description="Local NanoGPT video API simulator (loopback only, no real charges).",
        epilog=markers_epilog(),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=8787, help="port (0 = pick a free one)")
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"the only accepted API key (unset: ${API_KEY_ENV}; if that is unset too, any key)",
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
        help="a real .mp4/.webm/.mov file to serve as every finished job's video "
        "(unset: a generated MP4, 256 KiB or [sim:size=N])",
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
