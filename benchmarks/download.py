"""Benchmark 5: streaming a large video to disk with ``NanoGPTHook.download_video``.

The simulator serves a ``[sim:size=...]`` video (500 MB; 20 MB with ``--quick``). Three
downloaders fetch the same URL in turn, each in its own process, repeated and alternated:

* ``curl -o`` (the throughput baseline; skipped when curl is missing);
* a plain ``urllib.request`` + ``shutil.copyfileobj`` copy (the memory baseline: the same
  measurement method as the hook);
* ``NanoGPTHook.download_video`` (requests, 256 KiB chunks, atomic rename).

Throughput is bytes / wall seconds of the transfer itself. RSS growth is the process's peak RSS
(``getrusage``) minus its RSS just before the transfer, after imports.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import (
    CONN_ID,
    JobSubmitter,
    Row,
    RunContext,
    SimulatorProcess,
    median,
    peak_rss_bytes,
    report,
    reset_peak_rss,
    run_child,
    write_json,
)

NAME = "download"
MB = 1024 * 1024
FULL_SIZE, FULL_REPEATS = 500 * MB, 5
QUICK_SIZE, QUICK_REPEATS = 20 * MB, 1


def _curl(url: str, destination: Path) -> dict[str, float]:
    started = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "-o", str(destination), url], check=True)
    return {"seconds": time.perf_counter() - started}


def _child_measure(method: str, url: str, destination: str) -> dict[str, Any]:
    import psutil

    if method == "hook":
        import requests  # noqa: F401 - imported before the baseline RSS, as in a worker

        from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

        hook = NanoGPTHook(CONN_ID)
        hook.settings()

        def transfer() -> int:
            return hook.download_video(url, destination).size_bytes

    else:

        def transfer() -> int:
            with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as f:
                shutil.copyfileobj(response, f, MB)
            return os.path.getsize(destination)

    reset_peak_rss()
    rss_before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    size = transfer()
    seconds = time.perf_counter() - started
    peak = peak_rss_bytes()
    return {
        "seconds": seconds,
        "bytes": size,
        "rss_growth_mb": max(0, peak - rss_before) / MB,
    }


def run(ctx: RunContext) -> list[Row]:
    size = QUICK_SIZE if ctx.quick else FULL_SIZE
    repeats = QUICK_REPEATS if ctx.quick else FULL_REPEATS
    has_curl = shutil.which("curl") is not None
    samples: dict[str, list[dict[str, Any]]] = {"curl": [], "urllib": [], "hook": []}
    with (
        SimulatorProcess(log_dir=ctx.log_dir) as sim,
        tempfile.TemporaryDirectory(prefix="nanogpt-bench-download-", dir=ctx.log_dir) as tmp,
    ):
        with JobSubmitter(sim.url, workers=1) as submitter:
            ((run_id, _),) = submitter.submit(
                [f"benchmark [sim:queue=0][sim:render=0][sim:size={size}]"]
            )
        url = f"{sim.url}/files/videos/{run_id}.mp4"
        destination = Path(tmp, "video.mp4")
        methods = ("curl", "urllib", "hook")
        for attempt in range(repeats):
            # Rotate the order so no method always follows the same one (page-cache writeback).
            for method in methods[attempt % 3 :] + methods[: attempt % 3]:
                if method == "curl":
                    if not has_curl:
                        continue
                    sample = _curl(url, destination)
                    sample["bytes"] = destination.stat().st_size
                else:
                    sample = run_child(
                        __name__,
                        ["--child", method, url, str(destination)],
                        ctx.log_dir / f"download-{method}-{attempt}.log",
                    )
                if sample["bytes"] != size:
                    raise RuntimeError(f"{method} saved {sample['bytes']} of {size} bytes")
                sample["mb_per_s"] = size / MB / sample["seconds"]
                samples[method].append(sample)
                destination.unlink()

    def throughput(method: str) -> float | None:
        values = [s["mb_per_s"] for s in samples[method]]
        return median(values) if values else None

    def growth(method: str) -> float:
        return median([s["rss_growth_mb"] for s in samples[method]])

    hook, curl, plain = throughput("hook"), throughput("curl"), throughput("urllib")
    report(
        f"download {size // MB} MB x{repeats}: MB/s hook {hook:.0f}, urllib {plain:.0f}, "
        f"curl {f'{curl:.0f}' if curl else 'not installed'}; RSS growth hook "
        f"{growth('hook'):.1f} MB, urllib {growth('urllib'):.1f} MB"
    )
    reference, label = (curl, "curl -o") if curl else (plain, "urllib copy (no curl)")
    return [
        Row(
            NAME,
            f"download throughput, {size // MB} MB",
            "MB/s",
            hook,
            [(label, reference)] + ([("urllib copy", plain)] if curl else []),
            f">= 80% of {label.split(' ')[0]}",
            hook is not None and reference is not None and hook >= 0.8 * reference,
        ),
        Row(
            NAME,
            "peak RSS growth while downloading",
            "MB",
            growth("hook"),
            [("urllib copy", growth("urllib"))],
            "< 64 MB",
            growth("hook") < 64,
        ),
    ]


def child_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=("hook", "urllib"), required=True)
    parser.add_argument("url")
    parser.add_argument("destination")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    write_json(args.out, _child_measure(args.child, args.url, args.destination))
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
