"""extra_params keys against the model's catalog entry: misspellings fail, unknown keys warn."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from airflow_provider_nanogpt.api.responses import VideoModel
from airflow_provider_nanogpt.exceptions import NanoGPTValidationError
from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
from airflow_provider_nanogpt.operators.video import GenerateVideoOperator
from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from airflow_provider_nanogpt.validation import (
    check_catalog_parameters,
    check_supported_parameters,
)
from tests.conftest import FAST_RETRIES

LOG = logging.getLogger("test.catalog")
CATALOG = "GET /api/v1/video-models"
VEO3 = VideoModel(
    id="veo3-video",
    supported_parameters={
        "prompt": {"type": "string"},
        "generateAudio": {"type": "boolean"},
        "enhancePrompt": {"type": "boolean"},
        "camera_fixed": {"type": "boolean"},
    },
)


@pytest.mark.parametrize("key", ["generate_audio", "GenerateAudio", "generateaudio"])
def test_a_misspelt_supported_key_fails_naming_the_right_one(key: str) -> None:
    with pytest.raises(NanoGPTValidationError) as info:
        check_supported_parameters({key: True}, VEO3)
    message = str(info.value)
    assert f"extra_params key {key!r} is not a veo3-video parameter" in message
    assert "NanoGPT spells it 'generateAudio'" in message
    assert "Nothing was sent" in message


def test_every_misspelling_is_listed_at_once() -> None:
    with pytest.raises(NanoGPTValidationError) as info:
        check_supported_parameters({"generate_audio": True, "enhance_prompt": True}, VEO3)
    assert "'generateAudio'" in str(info.value) and "'enhancePrompt'" in str(info.value)


def test_unknown_keys_and_documented_alternative_spellings_only_warn() -> None:
    warnings = check_supported_parameters(
        {"generateAudio": True, "mystery_knob": 3, "cameraFixed": True}, VEO3
    )
    assert len(warnings) == 2
    assert "'mystery_knob' is not among the parameters" in warnings[0]
    assert "'cameraFixed'" in warnings[1]  # NanoGPT documents cameraFixed and camera_fixed


def test_no_supported_parameters_means_nothing_to_compare() -> None:
    assert check_supported_parameters({"generate_audio": True}, VideoModel(id="m")) == []


@pytest.fixture
def hook(nanogpt_connection: NanoGPTSimulator) -> Iterator[NanoGPTHook]:
    hook = NanoGPTHook(retry_policy=FAST_RETRIES)
    yield hook
    hook.close()


def test_against_the_simulator_catalog(
    hook: NanoGPTHook, simulator: NanoGPTSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(NanoGPTValidationError, match="NanoGPT spells it 'generateAudio'"):
        check_catalog_parameters(hook, "veo3-video", {"generate_audio": True}, LOG)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        check_catalog_parameters(hook, "hunyuan-video", {"pro_mode": True, "turbo": 1}, LOG)
        check_catalog_parameters(hook, "not-in-the-catalog", {"generate_audio": True}, LOG)
    assert [r.getMessage() for r in caplog.records if r.name == LOG.name] == [
        "extra_params key 'turbo' is not among the parameters NanoGPT's catalog lists for "
        "hunyuan-video; NanoGPT ignores unknown keys, so it may have no effect."
    ]
    check_catalog_parameters(hook, "veo3-video", {}, LOG)  # nothing to check: no call
    state = simulator.state()
    assert state["requests"] == {CATALOG: 1}  # one read, kept by the hook for a minute
    assert state["submit_requests"] == 0


def test_an_unreachable_catalog_is_a_warning(
    hook: NanoGPTHook, simulator: NanoGPTSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    simulator.add_fault(endpoint="models", kind="500", count=FAST_RETRIES.max_retries + 1)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        check_catalog_parameters(hook, "veo3-video", {"generate_audio": True}, LOG)
    assert "Could not read NanoGPT's model catalog" in caplog.text
    assert "sending them unchecked" in caplog.text


@pytest.mark.parametrize(("validate", "catalog_calls"), [(True, 1), (False, 0)])
def test_the_operator_checks_the_catalog_once_and_only_with_validate(
    nanogpt_connection: NanoGPTSimulator, validate: bool, catalog_calls: int
) -> None:
    operator = GenerateVideoOperator(
        task_id="t",
        model="veo3-video",
        prompt="p",
        extra_params={"generate_audio": True},
        validate=validate,
    )
    if validate:
        with pytest.raises(NanoGPTValidationError, match="'generateAudio'"):
            operator.build_payload()
    else:
        assert operator.build_payload()["generate_audio"] is True
    assert nanogpt_connection.state()["requests"].get(CATALOG, 0) == catalog_calls
