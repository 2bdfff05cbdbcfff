"""``python -m benchmarks [--quick] [--only NAME[,NAME]] [--json FILE]``: run and tabulate."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from benchmarks import BENCHMARKS
from benchmarks._common import (
    DETAILS,
    Row,
    RunContext,
    machine_info,
    markdown_table,
    prepare_environment,
)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N[,N...], got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return sizes


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="airflow-provider-nanogpt benchmarks against the local simulator. "
        "Every figure is compared with a baseline measured in the same run.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: proves every benchmark still runs"
    )
    parser.add_argument(
        "--only",
        type=_names,
        default=None,
        metavar="NAME[,NAME]",
        help=f"run only these: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--json", metavar="FILE", help="also write rows and details as JSON")
    parser.add_argument(
        "--trigger-sizes",
        type=_sizes,
        default=None,
        metavar="N[,N]",
        help="triggerer benchmark: run every mode at these N instead of the defaults "
        "(on loopback and with 100 ms per answer)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the log directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    own_home = not os.environ.get("NANOGPT_BENCH_AIRFLOW_HOME")
    home = prepare_environment()
    log_dir = Path(tempfile.mkdtemp(prefix="nanogpt-bench-logs-"))
    ctx = RunContext(
        quick=args.quick,
        log_dir=log_dir,
        trigger_sizes=args.trigger_sizes,
    )
    info = machine_info()
    print(
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gib']} GiB RAM, "
        f"{info['os']}; Python {info['python']}, Airflow {info['airflow']}, "
        f"httpx {info['httpx']}, requests {info['requests']}; "
        f"load average {info['loadavg_start']}",
        flush=True,
    )
    rows: list[Row] = []
    failed: list[str] = []
    durations: dict[str, float] = {}
    started = time.perf_counter()
    for name in args.only or list(BENCHMARKS):
        print(f"== {name}", flush=True)
        began = time.perf_counter()
        try:
            module = importlib.import_module(BENCHMARKS[name])
            rows.extend(module.run(ctx))
        except Exception:
            traceback.print_exc()
            failed.append(name)
        durations[name] = round(time.perf_counter() - began, 1)
        print(f"   {name}: {durations[name]:.0f} s", flush=True)
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    info["total_seconds"] = round(time.perf_counter() - started, 1)

    print()
    print(markdown_table(rows))
    print(f"\nTotal {info['total_seconds']:.0f} s; load average at the end {info['loadavg_end']}.")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": info,
                    "quick": args.quick,
                    "durations": durations,
                    "rows": [row.to_json() for row in rows],
                    "details": DETAILS,
                    "failed": failed,
                },
                indent=2,
            )
        )
    if own_home:
        shutil.rmtree(home, ignore_errors=True)
    if failed:
        print(f"FAILED: {', '.join(failed)}; logs kept in {log_dir}", file=sys.stderr)
        return 1
    if args.keep_logs:
        print(f"Logs: {log_dir}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
