"""Cost estimates from every pricing shape, and the budget guards against the simulator."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from airflow_provider_nanogpt.api.responses import VideoModel
from airflow_provider_nanogpt.budget import (
    enforce_budget,
    estimate_cost,
    guard_amount,
    requested_seconds,
)
from airflow_provider_nanogpt.exceptions import NanoGPTBudgetError
from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.conftest import FAST_RETRIES


def model(**pricing: object) -> VideoModel:
    return VideoModel(id="m", pricing={"currency": "USD", **pricing})


@pytest.mark.parametrize(
    ("pricing", "payload", "expected"),
    [
        ({"per_generation": 0.5}, {}, 0.5),
        ({"per_second": 0.1}, {"duration": "8"}, 0.8),
        ({"per_second": 0.1}, {"duration": "5s"}, 0.5),
        ({"per_second": 0.1}, {"seconds": "12"}, 1.2),
        ({"per_second": 0.1}, {}, None),
        ({"per_resolution": {"480p": 0.2, "1080p": 0.8}}, {"resolution": "480p"}, 0.2),
        ({"per_resolution": {"480p": 0.2, "1080p": 0.8}}, {}, 0.8),
        ({"per_resolution": {"480p": 0.2}}, {"resolution": "4k"}, None),
        ({"per_duration": {"5": 0.35, "10": 0.7}}, {"duration": 10}, 0.7),
        ({"per_duration": {"5": 0.35, "10": 0.7}}, {}, 0.7),
        (
            {"per_resolution_per_second": {"480p": 0.02}},
            {"resolution": "480p", "duration": "5"},
            0.1,
        ),
        ({"per_generation": 0.5}, {"pro_mode": True}, 1.0),
        ({"something_new": 1}, {}, None),
    ],
)
def test_estimates(pricing: dict, payload: dict, expected: float | None) -> None:
    estimate = estimate_cost(model(**pricing), payload)
    assert estimate == (pytest.approx(expected) if expected is not None else None)


def test_non_usd_pricing_gives_no_estimate() -> None:
    assert (
        estimate_cost(VideoModel(id="m", pricing={"currency": "XNO", "per_generation": 1}), {})
        is None
    )


def test_requested_seconds() -> None:
    assert requested_seconds({"duration": "5s"}) == 5
    assert requested_seconds({"duration": 10}) == 10
    assert requested_seconds({"duration": "soon"}) is None


@pytest.fixture
def hook(nanogpt_connection: NanoGPTSimulator) -> Iterator[NanoGPTHook]:
    hook = NanoGPTHook(retry_policy=FAST_RETRIES)
    yield hook
    hook.close()


LOG = logging.getLogger("test")


def test_min_balance_guard(hook: NanoGPTHook, simulator: NanoGPTSimulator) -> None:
    simulator.configure(balance_usd=3.0)
    with pytest.raises(NanoGPTBudgetError, match=r"\$3.00 is below min_balance_usd=\$5.00"):
        enforce_budget(
            hook, {"model": "kling-video-v2"}, min_balance_usd=5, max_cost_usd=None, log=LOG
        )
    enforce_budget(hook, {"model": "kling-video-v2"}, min_balance_usd=2, max_cost_usd=None, log=LOG)
    assert simulator.state()["submit_requests"] == 0


def test_max_cost_guard_uses_the_catalog(hook: NanoGPTHook, simulator: NanoGPTSimulator) -> None:
    cheap = {"model": "kling-video-v2", "duration": "5"}
    assert enforce_budget(hook, cheap, min_balance_usd=None, max_cost_usd=1.0, log=LOG) == 0.35
    with pytest.raises(NanoGPTBudgetError, match="exceeds max_cost_usd"):
        enforce_budget(
            hook, {**cheap, "duration": "10"}, min_balance_usd=None, max_cost_usd=0.5, log=LOG
        )
    with pytest.raises(NanoGPTBudgetError, match="Cannot estimate"):
        enforce_budget(
            hook, {"model": "not-in-catalog"}, min_balance_usd=None, max_cost_usd=5, log=LOG
        )
    assert simulator.state()["submit_requests"] == 0


def test_estimate_matches_the_simulated_precharge(
    hook: NanoGPTHook, simulator: NanoGPTSimulator
) -> None:
    for payload in (
        {"model": "kling-video-v2", "prompt": "x", "duration": "10"},
        {"model": "hunyuan-video", "prompt": "x", "resolution": "480p"},
        {"model": "seedance-video", "prompt": "x", "resolution": "480p", "duration": "5"},
    ):
        estimate = enforce_budget(hook, payload, min_balance_usd=None, max_cost_usd=100, log=LOG)
        assert hook.submit_video(payload).cost == pytest.approx(estimate)


@pytest.mark.parametrize(
    "rendered", ["", "None", "none", "  ", None, "nan", "inf", "-1", "abc", True]
)
@pytest.mark.parametrize("name", ["min_balance_usd", "max_cost_usd"])
def test_a_set_guard_rendered_to_nothing_or_junk_is_refused(name: str, rendered: object) -> None:
    with pytest.raises(NanoGPTBudgetError, match=name):
        guard_amount(name, rendered, given=True)


@pytest.mark.parametrize(("rendered", "amount"), [(0, 0.0), ("0", 0.0), (" 1.5 ", 1.5), (2, 2.0)])
def test_a_guard_given_as_a_number_or_numeric_text_is_read(rendered: object, amount: float) -> None:
    assert guard_amount("max_cost_usd", rendered, given=True) == amount


def test_a_guard_never_set_is_off() -> None:
    assert guard_amount("max_cost_usd", None, given=False) is None
