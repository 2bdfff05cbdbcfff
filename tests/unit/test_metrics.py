"""A metric never fails a task: a metrics backend that raises is logged at debug and ignored."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_nanogpt import metrics
from airflow_provider_nanogpt.api.status import VideoState, VideoStatus


class BrokenStats:
    def incr(self, *args: Any, **kwargs: Any) -> None:
        raise OSError("statsd host unreachable")

    timing = incr


EMITTERS: dict[str, Callable[[], None]] = {
    "submitted": lambda: metrics.submitted("c", "m", "accepted"),
    "reattached": lambda: metrics.reattached("c", "m"),
    "charged": lambda: metrics.charged("c", "m", 0.5, "USD"),
    "refunded": lambda: metrics.refunded("c", "m", "failed", 0.5, "USD"),
    "rate_limit_wait": lambda: metrics.rate_limit_wait("c", "/api/generate-video", 1.0),
    "status_polled": lambda: metrics.status_polled("c", OSError()),
    "downloaded": lambda: metrics.downloaded("c", 10, 0.1),
    "reserved": lambda: metrics.reserved("c", "b", 1.0),
    "settled": lambda: metrics.settled("c", "b", 1.0),
    "released": lambda: metrics.released("c", "b", 1.0),
    "stages": lambda: _run_stages(),
}


def _run_stages() -> None:
    stages = metrics.RunStages("c", "m", waiting_since=0.0)
    for at, state in enumerate((VideoState.QUEUED, VideoState.RUNNING, VideoState.COMPLETED)):
        stages.observe(VideoStatus(run_id="vid_1", state=state), float(at))


@pytest.mark.parametrize("emit", EMITTERS.values(), ids=EMITTERS.keys())
def test_a_failing_metrics_backend_never_raises(
    emit: Callable[[], None], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(metrics, "_stats", BrokenStats)
    with caplog.at_level(logging.DEBUG, logger=metrics.__name__):
        emit()
    assert "Could not emit metric nanogpt." in caplog.text
    assert all(record.levelno == logging.DEBUG for record in caplog.records)


def test_a_charge_not_in_usd_is_counted_not_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, int, dict[str, str]]] = []
    monkeypatch.setattr(metrics, "_incr", lambda *args: sent.append(args))
    metrics.charged("c", "m", 12.0, "XNO")
    metrics.charged("c", "m", 0.123456, "USD")
    metrics.charged("c", None, 0.5, None)
    assert sent == [
        (metrics.SPEND_NOT_USD, 1, {"conn_id": "c", "model": "m", "currency": "XNO"}),
        (metrics.SPEND_USD_MICROS, 123456, {"conn_id": "c", "model": "m"}),
        (metrics.SPEND_NOT_USD, 1, {"conn_id": "c", "model": "unknown", "currency": "unknown"}),
    ]


MONEY_EMITTERS: dict[str, Callable[[float], None]] = {
    "charged": lambda amount: metrics.charged("c", "m", amount, "USD"),
    "refunded": lambda amount: metrics.refunded("c", "m", "failed", amount, "USD"),
    "reserved": lambda amount: metrics.reserved("c", "b", amount),
    "settled": lambda amount: metrics.settled("c", "b", amount),
    "released": lambda amount: metrics.released("c", "b", amount),
}


@pytest.mark.parametrize("amount", [float("nan"), float("inf"), -0.35, "0.35"])
@pytest.mark.parametrize("emit", MONEY_EMITTERS.values(), ids=MONEY_EMITTERS.keys())
def test_an_amount_that_is_no_money_figure_is_never_counted_and_never_raises(
    emit: Callable[[Any], None], amount: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, int, dict[str, str]]] = []
    monkeypatch.setattr(metrics, "_incr", lambda *args: sent.append(args))
    emit(amount)  # after a paid submission: raising here would fail a task NanoGPT charged
    assert [name for name, _, _ in sent if name.endswith("usd_micros")] == []
