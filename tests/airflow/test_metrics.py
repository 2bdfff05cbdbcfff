"""The documented metrics arrive at a StatsD server: DAGs run with dag.test() against the simulator,
in a process whose ``[metrics]`` points at a UDP listener in this test.

The names are read from docs/metrics.md, so the doc and the code cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.conftest import CANARY_KEY, REPO

pytestmark = pytest.mark.usefixtures("airflow_db")

DOC = REPO / "docs" / "metrics.md"
DOCUMENTED = re.findall(r"^\| `(nanogpt\.[a-z_]+)` \|", DOC.read_text(), flags=re.MULTILINE)
# One InfluxDB-style StatsD line: name,tag=value,…:value|type
LINE = re.compile(
    r"^(?P<name>[^,:]+)(?P<tags>(?:,[^,:=]+=[^,:]*)*):(?P<value>[^|]+)\|(?P<type>\w+)$"
)


@dataclass(frozen=True)
class Sample:
    name: str
    tags: dict[str, str]
    value: float
    kind: str


class StatsdListener:
    """A UDP socket that keeps every StatsD line sent to it."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                packet = self.socket.recv(65535)
            except TimeoutError:
                continue
            self.lines.extend(packet.decode().splitlines())

    def close(self) -> list[str]:
        self._stop.set()
        self._thread.join()
        self.socket.close()
        return self.lines


Emitted = tuple[dict[str, list["Sample"]], Path, list[str], list[dict[str, Any]]]
GROUP = "team video"


def parse(lines: list[str], prefix: str) -> dict[str, list[Sample]]:
    samples: dict[str, list[Sample]] = defaultdict(list)
    for line in lines:
        match = LINE.match(line)
        if match is None or not match["name"].startswith(prefix):
            continue
        name = match["name"].removeprefix(prefix)
        tags = dict(pair.split("=", 1) for pair in match["tags"].split(",") if pair)
        samples[name].append(Sample(name, tags, float(match["value"]), match["type"]))
    return samples


@pytest.fixture(scope="module")
def emitted(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Emitted:
    """Five DAG runs, in one process with StatsD (InfluxDB tags) on, all under the connection's
    shared budget: a deferred generation rate limited once and saved to a file, a run refunded
    then retried, a retry that reattaches to the run the failed try delivered, and two videos
    against a group budget that holds one."""
    from tests.conftest import connection_json

    out = tmp_path_factory.mktemp("metrics") / "video.mp4"
    results = out.with_name("runs.jsonl")
    listener = StatsdListener()
    with NanoGPTSimulator(
        api_key=CANARY_KEY, time_scale=0.1, quiet=True, queue_seconds=5, render_seconds=10
    ) as sim:
        sim.add_fault(endpoint="submit", kind="429", count=1, retry_after=1)
        runs = [
            [
                "nanogpt_deferrable",
                # Queued for 3 real seconds and rendering for 4: a loaded machine's polls still
                # see it queued, then rendering, so both stages are timed (0.5 s of queue, then
                # 1 s of render, were missed under load: a poll read queued, the next completed).
                {
                    "prompt": "a kite [sim:shape=nested] [sim:queue=30] [sim:render=40]",
                    "output_path": str(out),
                },
            ],
            ["nanogpt_refunded_then_retried", {"prompt": "a heron"}],
            ["nanogpt_fails_after_delivery", {"prompt": "a fox"}],
            # The group budget "team video" ($0.50 a day) holds the first $0.35 video only.
            ["nanogpt_group_budget_by_tag", {}],
            ["nanogpt_group_budget_by_argument", {}],
        ]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            # Every run spends from the connection's daily budget, the last two from a group's.
            "AIRFLOW_CONN_NANOGPT_DEFAULT": connection_json(
                sim.url,
                budget_usd_per_day=100,
                budget_ledger_conn_id="metrics_ledger",
                budgets={GROUP: {"usd_per_day": 0.5}},
            ),
            "AIRFLOW_CONN_METRICS_LEDGER": json.dumps(
                {"conn_type": "sqlite", "host": str(out.with_name("ledger.db"))}
            ),
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(listener.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
            "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
        }
        finished = subprocess.run(
            [sys.executable, "-m", "tests.airflow.metrics_runner", json.dumps(runs), str(results)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    lines = listener.close()
    assert finished.returncode == 0, finished.stderr[-3000:]
    states = [json.loads(line) for line in results.read_text().splitlines()]
    expected = ["success"] * 4 + ["failed"]  # the last video does not fit the group budget
    assert [s["state"] for s in states] == expected, finished.stdout[-3000:]
    return parse(lines, "airflow."), out, lines, sim.state()["jobs"]


def test_the_doc_lists_metrics() -> None:
    assert len(DOCUMENTED) >= 16 and len(set(DOCUMENTED)) == len(DOCUMENTED)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_each_documented_metric_arrives(name: str, emitted: Emitted) -> None:
    samples = emitted[0]
    assert samples.get(name), f"{name} never arrived; got {sorted(samples)}"
    for sample in samples[name]:
        assert sample.tags.get("conn_id") == "nanogpt_default"
        assert sample.value >= 0


def test_every_emitted_nanogpt_metric_is_documented(emitted: Emitted) -> None:
    ours = {name for name in emitted[0] if name.startswith("nanogpt.")}
    assert ours <= set(DOCUMENTED)


def test_values_are_what_happened(emitted: Emitted) -> None:
    samples, out, lines, jobs = emitted

    def total(name: str, **tags: str) -> float:
        return sum(
            s.value for s in samples[name] if all(s.tags.get(k) == v for k, v in tags.items())
        )

    # Five jobs created (the refunded one and its retry count twice; the group budget's first
    # video), one 429 refused first.
    assert total("nanogpt.submissions", outcome="accepted") == 5
    assert total("nanogpt.submissions", outcome="refused") == 0  # the 429 was re-sent in-call
    assert total("nanogpt.rate_limit_waits", endpoint="/api/generate-video") == 1
    assert total("nanogpt.reattachments", model="kling-video-v2") == 1
    assert total("nanogpt.refunds", outcome="failed") == 1
    assert total("nanogpt.refund_usd_micros") > 0
    assert total("nanogpt.spend_usd_micros", model="kling-video-v2") > total(
        "nanogpt.refund_usd_micros"
    )
    assert total("nanogpt.download_bytes") == out.stat().st_size > 0
    assert [s.kind for s in samples["nanogpt.render_time"]] == ["ms"] * len(
        samples["nanogpt.render_time"]
    )
    # Rendering lasts 4 s in the simulator: seen from polls 0.2 s apart (a busy machine delays
    # them), so milliseconds, not seconds, and not more than the whole run.
    assert all(0 < s.value < 60_000 for s in samples["nanogpt.render_time"])
    assert all(s.tags.get("model") == "kling-video-v2" for s in samples["nanogpt.queue_time"])
    assert total("nanogpt.status_polls", outcome="completed") >= 3
    # The shared budgets: every job created reserved and settled at its charge, in the
    # connection's budget; the refunded one given back from spend; the group's second video
    # refused before it was sent.
    own = {"budget": "connection_nanogpt_default", "period": "day"}
    group = {"budget": "team_video", "period": "day"}  # the space is not allowed in a tag
    charged = sum(round(job["cost"] * 1_000_000) for job in jobs)
    refunded = sum(round(job["cost"] * 1_000_000) for job in jobs if job["refunded"])
    assert len(jobs) == 5 and refunded > 0
    # One reservation per job created (none for the reattaching retry), at the estimate: the
    # test DAGs set no duration, estimated at the model's longest, 10 s ($0.70); the group
    # budget's DAG asks for 5 s ($0.35), as the jobs were charged.
    reserved = [
        s.value
        for s in samples["nanogpt.budget_reserved_usd_micros"]
        if s.tags["budget"] == own["budget"]
    ]
    assert sorted(reserved) == [350_000] + [700_000] * 4
    assert total("nanogpt.budget_settled_usd_micros", **own) == charged
    assert total("nanogpt.budget_released_usd_micros", **own, **{"from": "spend"}) == refunded
    assert total("nanogpt.budget_released_usd_micros", **{"from": "reservation"}) == 0
    assert total("nanogpt.budget_reserved_usd_micros", **group) == 350_000
    assert total("nanogpt.budget_settled_usd_micros", **group) == 350_000
    assert total("nanogpt.budget_exceeded", **group, action="failed") == 1
    assert total("nanogpt.budget_exceeded") == 1
    # Nothing secret, and no prompt, in any line sent.
    assert not [line for line in lines if CANARY_KEY in line or "kite" in line]
