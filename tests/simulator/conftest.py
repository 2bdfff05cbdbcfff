"""Fixtures for the simulator tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator

from ._helpers import KEY

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The simulator never imports Airflow: one Airflow version tests it as well as two.
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.one_airflow)


@pytest.fixture
def sim() -> Iterator[NanoGPTSimulator]:
    """Real-time clock (time_scale=1): tests move time with ``sim.advance``."""
    with NanoGPTSimulator(api_key=KEY, time_scale=1.0, quiet=True) as simulator:
        yield simulator


@pytest.fixture
def fast_sim() -> Iterator[NanoGPTSimulator]:
    """A 50x accelerated clock (60 s window = 1.2 real s; a default job = 0.2 real s)."""
    with NanoGPTSimulator(api_key=KEY, time_scale=0.02, quiet=True) as simulator:
        yield simulator


@pytest.fixture
def open_sim() -> Iterator[NanoGPTSimulator]:
    """Accepts any non-empty key, so different keys are different owners."""
    with NanoGPTSimulator(api_key=None, time_scale=1.0, quiet=True) as simulator:
        yield simulator
