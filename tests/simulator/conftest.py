"""Fixtures for the simulator tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator

from ._helpers import KEY


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
