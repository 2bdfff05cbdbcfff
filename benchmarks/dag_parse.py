"""Benchmark 4: DAG-parse overhead of using GenerateVideoOperator.

Two DAG files of the same shape (one DAG, one task): one uses ``GenerateVideoOperator``, the
baseline defines a trivial operator with ``airflow.sdk`` only. Each run is a fresh interpreter
that first imports what a DAG processor has already loaded (``airflow.sdk``'s ``DAG`` and
``BaseOperator``, ``pendulum``), then times executing the DAG file. The runs alternate between
the two files; the figure is the difference of the medians.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks._common import REPO, Row, RunContext, median, report

NAME = "dag_parse"
FULL_RUNS = 15
QUICK_RUNS = 1
HEAVY_MODULES = ("requests", "httpx", "tenacity", "urllib3", "httpcore")

BASELINE_DAG = '''\
"""Benchmark DAG: one task, airflow.sdk only."""
import pendulum
from airflow.sdk import DAG, BaseOperator


class Generate(BaseOperator):
    def __init__(self, *, model, prompt, duration=None, output_path=None, **kwargs):
        super().__init__(**kwargs)
        self.model, self.prompt = model, prompt
        self.duration, self.output_path = duration, output_path

    def execute(self, context):
        return None


with DAG("bench_baseline", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    Generate(task_id="generate", model="kling-video-v2", prompt="A cat", duration="5",
             output_path="/tmp/cat.mp4")
'''

PROVIDER_DAG = '''\
"""Benchmark DAG: one task, GenerateVideoOperator."""
import pendulum
from airflow.sdk import DAG

from airflow_provider_nanogpt.operators.video import GenerateVideoOperator

with DAG("bench_provider", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    GenerateVideoOperator(task_id="generate", model="kling-video-v2", prompt="A cat",
                          duration="5", output_path="/tmp/cat.mp4")
'''

# Runs in the fresh interpreter; prints one JSON line.
PROBE = """\
import importlib.util, json, sys, time
import pendulum
from airflow.sdk import DAG, BaseOperator  # already loaded in a DAG processor
before = set(sys.modules)
spec = importlib.util.spec_from_file_location("bench_dag", sys.argv[1])
module = importlib.util.module_from_spec(spec)
started = time.perf_counter()
spec.loader.exec_module(module)
elapsed = time.perf_counter() - started
new = set(sys.modules) - before
print(json.dumps({"ms": elapsed * 1000, "modules": len(new),
                  "heavy": sorted(m for m in HEAVY if m in new)}))
""".replace("HEAVY", repr(HEAVY_MODULES))


def _probe(path: Path) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"parsing {path.name} failed:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run(ctx: RunContext) -> list[Row]:
    runs = QUICK_RUNS if ctx.quick else FULL_RUNS
    with tempfile.TemporaryDirectory(prefix="nanogpt-bench-dags-") as folder:
        baseline_file = Path(folder, "bench_baseline.py")
        provider_file = Path(folder, "bench_provider.py")
        baseline_file.write_text(BASELINE_DAG)
        provider_file.write_text(PROVIDER_DAG)
        baseline: list[dict[str, Any]] = []
        provider: list[dict[str, Any]] = []
        if ctx.quick:
            # Only proves the probe works: both at once, timings not comparable.
            with ThreadPoolExecutor(max_workers=2) as pool:
                b, p = pool.map(_probe, (baseline_file, provider_file))
            baseline.append(b)
            provider.append(p)
        for _ in range(0 if ctx.quick else runs):
            baseline.append(_probe(baseline_file))
            provider.append(_probe(provider_file))
    base_ms = median([r["ms"] for r in baseline])
    prov_ms = median([r["ms"] for r in provider])
    heavy = sorted({m for r in provider for m in r["heavy"]})
    report(
        f"dag_parse {runs} fresh interpreters each: sdk-only DAG median {base_ms:.1f} ms "
        f"(min {min(r['ms'] for r in baseline):.1f}); provider DAG median {prov_ms:.1f} ms "
        f"(min {min(r['ms'] for r in provider):.1f}); modules newly imported: baseline "
        f"{baseline[0]['modules']}, provider {provider[0]['modules']}; HTTP/retry libraries "
        f"imported at parse time: {', '.join(heavy) or 'none'}"
    )
    return [
        Row(
            NAME,
            "DAG file execution time, median",
            "ms",
            prov_ms,
            [("sdk-only DAG file", base_ms)],
        ),
        Row(
            NAME,
            "extra parse time of a GenerateVideoOperator DAG",
            "ms",
            prov_ms - base_ms,
            [],
            "< 10 ms",
            prov_ms - base_ms < 10,
        ),
    ]
