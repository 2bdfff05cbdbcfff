"""Run test DAGs with dag.test() in a process of its own: Airflow picks its metrics backend once
per process, so the metrics test starts this one with ``[metrics]`` set in its environment.

Usage: ``python -m tests.airflow.metrics_runner '[["dag_id", {conf}], ...]' RESULTS``; writes one
JSON line per run, ``{"dag_id", "state"}``, to the file RESULTS (not stdout: Airflow's log lines,
written by other threads, land in stdout mid-line). It must not import tests.conftest (a new
Airflow home).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TEST_DAGS = Path(__file__).resolve().parent.parent / "dags"


def main(argv: list[str]) -> None:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    from tests.airflow.execution_api import build_the_execution_api_once

    build_the_execution_api_once()
    bag = DagBag(dag_folder=str(TEST_DAGS))
    with Path(argv[1]).open("w") as results:
        for dag_id, conf in json.loads(argv[0]):
            run = bag.get_dag(dag_id).test(run_conf=conf)
            results.write(json.dumps({"dag_id": dag_id, "state": str(run.state)}) + "\n")

    from airflow_provider_nanogpt import metrics

    # What no simulator run makes: a charge in XNO.
    metrics.charged("nanogpt_default", "kling-video-v2", 12.0, "XNO")


if __name__ == "__main__":
    main(sys.argv[1:])
