"""Cost estimates from every pricing shape, and the budget guards against the simulator."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_nanogpt.api.responses import VideoModel, parse_video_models
from airflow_provider_nanogpt.budget import (
    enforce_budget,
    estimate_cost,
    guard_amount,
    requested_seconds,
)
from airflow_provider_nanogpt.exceptions import NanoGPTBudgetError
from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from airflow_provider_nanogpt.simulator import catalog as sim_catalog
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


SECONDS_MODEL = VideoModel(
    id="s", supported_parameters={"seconds": {"values": ["4", "8", "12"], "default": "4"}}
)
DURATION_MODEL = VideoModel(
    id="d", supported_parameters={"duration": {"values": ["5", "10"], "default": "5"}}
)
OPEN_LENGTH_MODEL = VideoModel(id="o", supported_parameters={"duration": {"default": "5"}})
SILENT_MODEL = VideoModel(id="n")  # its catalog entry declares no length field


@pytest.mark.parametrize(
    ("model", "payload", "expected"),
    [
        (SECONDS_MODEL, {"duration": "4", "seconds": "12"}, 12),  # the declared field counts
        (SECONDS_MODEL, {"seconds": "8"}, 8),
        (SECONDS_MODEL, {}, 12),  # unset: the longest declared value, never the default
        (SECONDS_MODEL, {"duration": "12"}, None),  # only in a field the model may ignore
        (DURATION_MODEL, {"duration": "5", "seconds": "12"}, 5),
        (DURATION_MODEL, {"seconds": "12"}, None),
        (DURATION_MODEL, {}, 10),
        (OPEN_LENGTH_MODEL, {}, None),  # no declared values: cannot tell
        (SILENT_MODEL, {"duration": "5", "seconds": "12"}, None),  # two lengths: cannot tell
        (SILENT_MODEL, {"duration": "5", "seconds": "5s"}, 5),
        (SILENT_MODEL, {"seconds": 8}, 8),
        (SILENT_MODEL, {}, None),
    ],
)
def test_the_length_is_read_from_the_field_the_catalog_declares(
    model: VideoModel, payload: dict, expected: float | None
) -> None:
    assert requested_seconds(payload, model) == expected


_lengths = st.one_of(
    st.none(), st.sampled_from(["4", "5", "8", "10", "12", "5s", 4, 10, 12.0, "soon", "", "0"])
)


@settings(max_examples=300)
@given(
    spec=st.sampled_from(sorted(sim_catalog.MODELS.values(), key=lambda spec: spec.id)),
    duration=_lengths,
    seconds=_lengths,
    resolution=st.sampled_from([None, "480p", "720p", "1080p", "1792x1024", "4k"]),
    pro=st.booleans(),
)
def test_the_estimate_is_never_below_what_the_simulator_charges(
    spec: Any, duration: object, seconds: object, resolution: str | None, pro: bool
) -> None:
    """Differential: the simulator prices as the fact sheet says; the guard may only err high."""
    payload = {
        key: value
        for key, value in {
            "model": spec.id,
            "duration": duration,
            "seconds": seconds,
            "resolution": resolution,
            "pro": pro or None,
        }.items()
        if value is not None
    }
    try:
        charged = float(sim_catalog.compute_cost(spec, payload))
    except sim_catalog.PricingError:
        return  # NanoGPT refuses it: nothing is charged
    (entry,) = parse_video_models({"data": [sim_catalog.model_entry(spec, detailed=True)]})
    estimate = estimate_cost(entry, payload)
    assert estimate is None or estimate >= charged - 1e-9, (payload, estimate, charged)


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


def test_a_length_in_seconds_is_priced_as_sora_reads_it(
    nanogpt_connection: NanoGPTSimulator, hook: NanoGPTHook
) -> None:
    """duration="4" from the operator and seconds="12" in extra_params: Sora makes 12 s ($1.20)."""
    from airflow_provider_nanogpt.operators.video import GenerateVideoOperator

    operator = GenerateVideoOperator(
        task_id="t",
        model="sora-2",
        prompt="p",
        duration="4",
        extra_params={"seconds": "12"},
    )
    payload = operator.build_payload()  # what the operator would send
    with pytest.raises(NanoGPTBudgetError, match=r"Estimated cost \$1\.2000"):
        enforce_budget(hook, payload, min_balance_usd=None, max_cost_usd=0.5, log=LOG)
    assert enforce_budget(hook, payload, min_balance_usd=None, max_cost_usd=1.2, log=LOG) == 1.2
    state = nanogpt_connection.state()
    assert state["submit_requests"] == 0 and state["submits_accepted"] == 0


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
