"""A metric never fails a task: a metrics backend that raises is logged at debug and ignored."""

from __future__ import annotations

import logging
import string
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    "budget_reserved": lambda: metrics.budget_reserved("c", "b", "day", 1),
    "budget_settled": lambda: metrics.budget_settled("c", "b", "day", 1),
    "budget_released": lambda: metrics.budget_released("c", "b", "day", 1, "spend"),
    "budget_exceeded": lambda: metrics.budget_exceeded("c", "b", "day", "failed"),
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
}
MICRO_EMITTERS: dict[str, Callable[[Any], None]] = {
    "budget_reserved": lambda amount: metrics.budget_reserved("c", "b", "day", amount),
    "budget_settled": lambda amount: metrics.budget_settled("c", "b", "day", amount),
    "budget_released": lambda amount: metrics.budget_released(
        "c", "b", "day", amount, "reservation"
    ),
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


@pytest.mark.parametrize("amount", [-1, 0.5, float("nan"), True, "350000", None])
@pytest.mark.parametrize("emit", MICRO_EMITTERS.values(), ids=MICRO_EMITTERS.keys())
def test_a_budget_amount_that_is_no_whole_micro_usd_is_never_counted(
    emit: Callable[[Any], None], amount: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, int, dict[str, str]]] = []
    monkeypatch.setattr(metrics, "_incr", lambda *args: sent.append(args))
    emit(amount)
    assert sent == []


@settings(max_examples=300, deadline=None)
@given(
    conn_id=st.text(max_size=300),
    model=st.one_of(st.none(), st.text(max_size=300)),
    budget=st.text(max_size=300),
)
def test_every_tag_value_keeps_the_metric_valid_for_airflow(
    conn_id: str, model: str | None, budget: str
) -> None:
    """In StatsD's InfluxDB mode the tags join the name, and Airflow drops a metric whose name
    has a character it does not allow or is over 250 characters: a budget named "team video"
    or a model id with a colon would silently never arrive."""
    from airflow.providers.common.compat.sdk import Stats  # noqa: F401  (Airflow imported)

    try:
        from airflow._shared.observability.metrics.validators import stat_name_default_handler
    except ImportError:  # Airflow < 3.2
        from airflow.metrics.validators import stat_name_default_handler  # type: ignore[no-redef]

    sent: list[tuple[str, dict[str, str]]] = []
    for emit in (
        lambda: metrics.submitted(conn_id, model, "uncertain"),
        lambda: metrics.budget_exceeded(conn_id, budget, "month", "waiting"),
        lambda: metrics.budget_released(conn_id, budget, "month", 1, "spend"),
    ):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(metrics, "_incr", lambda name, _count, tags: sent.append((name, tags)))
            emit()
    for name, tags in sent:
        influx = "airflow." + name + "".join(f",{key}={value}" for key, value in tags.items())
        allowed = set(string.ascii_letters + string.digits + "_.-/,=")
        assert stat_name_default_handler(influx, allowed_chars=allowed) == influx
        assert all(value for value in tags.values())  # never an empty tag
