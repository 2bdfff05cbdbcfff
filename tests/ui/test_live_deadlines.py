"""The NanoGPT page's live calls end by their budgets, however slowly NanoGPT or a host answers.

No api-server needed: the page's fan-out and the video stream are called as the app calls them,
against a hostile server on loopback that answers slowly.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_provider_nanogpt.plugin import app
from airflow_provider_nanogpt.plugin.jobs import Job, JobState
from airflow_provider_nanogpt.plugin.live import stream_video
from tests.conftest import connection_json
from tests.hostile import HostileServer, Reply, Seen

# Page budgets and stream deadlines are measured in seconds.
pytestmark = pytest.mark.timing

# Generous for a loaded CI machine; what matters is that no wait adds up per row or per byte.
SLACK_SECONDS = 2.0


def _rendering_job(run_id: str) -> Job:
    card: dict[str, Any] = {"state": JobState.SUBMITTED, "run_id": run_id, "conn_id": "slow"}
    return Job("dag", "run", f"t_{run_id}", -1, "deferred", card, datetime.now(UTC))


def test_a_page_of_rendering_rows_waits_no_longer_than_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def slow_status(seen: Seen) -> Reply:
        time.sleep(3.0)  # under the per-call deadline, but 24 of them add up
        run_id = seen.query.get("requestId", ["?"])[0]
        return Reply(200, {"requestId": run_id, "status": "IN_PROGRESS", "progress": 50})

    with HostileServer() as server:
        server.route("GET", "/api/video/status", slow_status)
        monkeypatch.setenv("AIRFLOW_CONN_SLOW", connection_json(server.url))
        jobs = [_rendering_job(f"vid_page_{time.time_ns()}_{n}") for n in range(24)]
        started = time.monotonic()
        app._add_progress(jobs)
        elapsed = time.monotonic() - started
    assert elapsed < app.PAGE_LIVE_BUDGET_SECONDS + SLACK_SECONDS, elapsed
    # The budget was spent on real answers: the rows that came back in time show them.
    assert any(job.progress == 50 for job in jobs)


def test_a_dripping_video_stream_ends_by_the_download_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = b"\x00" * 200  # 0.05 s a byte: 10 s in all
    with HostileServer() as server:
        server.route("GET", "/v.mp4", Reply(200, body, {"Content-Type": "video/mp4"}, drip=0.05))
        monkeypatch.setenv(
            "AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(server.url, download_timeout=1)
        )
        started = time.monotonic()
        stream = stream_video("nanogpt_default", f"{server.url}/v.mp4", None)
        received = b"".join(stream.chunks)
        elapsed = time.monotonic() - started
    assert elapsed < 1 + SLACK_SECONDS, elapsed
    assert len(received) < len(body)
