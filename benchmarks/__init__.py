"""Performance benchmarks for airflow-provider-nanogpt (``python -m benchmarks``).

Every figure is printed next to a baseline measured in the same run, because absolute numbers
depend on the machine and on whatever else it runs. See docs/performance.md for what each
benchmark measures and the latest results.
"""

from __future__ import annotations

# name -> module under benchmarks/, in the order they run.
BENCHMARKS: dict[str, str] = {
    "triggerer": "benchmarks.triggerer",
    "worker_slots": "benchmarks.worker_slots",
    "polling": "benchmarks.polling",
    "dag_parse": "benchmarks.dag_parse",
    "download": "benchmarks.download",
    "batch": "benchmarks.batch",
    "ui_page": "benchmarks.ui_page",
    "budget": "benchmarks.budget",
}
