"""extra_params keys against the model's catalog entry: any key it does not list fails before
sending (NanoGPT would drop it and still charge), naming the closest listed one."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    assert f"extra_params key {key!r} is not among the parameters" in message
    assert "did you mean 'generateAudio'?" in message
    assert "Nothing was sent" in message


def _typos(name: str) -> st.SearchStrategy[str]:
    """One slip of the keyboard in ``name``: a letter dropped, doubled or swapped with the next."""
    index = st.integers(0, len(name) - 2)
    return st.one_of(
        index.map(lambda i: name[:i] + name[i + 1 :]),
        index.map(lambda i: name[:i] + name[i] + name[i:]),
        index.map(lambda i: name[:i] + name[i + 1] + name[i] + name[i + 2 :]),
    ).filter(lambda typo: typo != name)


@given(st.sampled_from(["generateAudio", "enhancePrompt", "camera_fixed"]).flatmap(_typos))
def test_every_typo_of_a_supported_key_fails_and_suggests_it(typo: str) -> None:
    with pytest.raises(NanoGPTValidationError, match="did you mean") as info:
        check_supported_parameters({typo: True}, VEO3)
    suggested = str(info.value).split("did you mean '", 1)[1].split("'", 1)[0]
    assert suggested in VEO3.supported_parameters


def test_every_unlisted_key_is_listed_at_once() -> None:
    with pytest.raises(NanoGPTValidationError) as info:
        check_supported_parameters({"generate_audio": True, "mystery_knob": 3}, VEO3)
    message = str(info.value)
    assert "'generate_audio'" in message and "'mystery_knob'" in message
    assert "allow_unlisted_params=['mystery_knob']" in message


def test_listed_keys_and_documented_alternative_spellings_pass() -> None:
    check_supported_parameters({"generateAudio": True, "cameraFixed": True}, VEO3)


@pytest.mark.parametrize("allow", [True, ["mystery_knob"], ("mystery_knob", "other")])
def test_allow_unlisted_lets_a_newer_key_through(allow: bool | list[str]) -> None:
    check_supported_parameters({"mystery_knob": 3}, VEO3, allow)
    with pytest.raises(NanoGPTValidationError):
        check_supported_parameters({"mystery_knob": 3}, VEO3, ["other_knob"])


def test_no_supported_parameters_means_nothing_to_compare() -> None:
    check_supported_parameters({"generate_audio": True}, VideoModel(id="m"))


@pytest.fixture
def hook(nanogpt_connection: NanoGPTSimulator) -> Iterator[NanoGPTHook]:
    hook = NanoGPTHook(retry_policy=FAST_RETRIES)
    yield hook
    hook.close()


def test_against_the_simulator_catalog(
    hook: NanoGPTHook, simulator: NanoGPTSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(NanoGPTValidationError, match="did you mean 'generateAudio'"):
        check_catalog_parameters(hook, "veo3-video", {"generate_audio": True}, LOG)
    with pytest.raises(NanoGPTValidationError, match="'turbo'"):
        check_catalog_parameters(hook, "hunyuan-video", {"pro_mode": True, "turbo": 1}, LOG)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        check_catalog_parameters(hook, "not-in-the-catalog", {"generate_audio": True}, LOG)
    assert not [r for r in caplog.records if r.name == LOG.name]
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


@pytest.mark.parametrize("extra", [{"cfg_scal": 0.7}, {"cfgscale": 0.7}, {"cfg-scale": 0.7}])
def test_a_typo_in_extra_params_fails_the_task_before_anything_is_paid(
    nanogpt_connection: NanoGPTSimulator, extra: dict[str, float]
) -> None:
    operator = GenerateVideoOperator(
        task_id="t", model="kling-video-v2", prompt="p", duration="5", extra_params=extra
    )
    with pytest.raises(NanoGPTValidationError, match="did you mean 'cfg_scale'"):
        operator.execute({})  # type: ignore[arg-type]
    state = nanogpt_connection.state()
    assert state["submit_requests"] == 0 and state["submits_accepted"] == 0


def test_the_opt_out_sends_the_unlisted_key(nanogpt_connection: NanoGPTSimulator) -> None:
    operator = GenerateVideoOperator(
        task_id="t",
        model="kling-video-v2",
        prompt="p",
        duration="5",
        extra_params={"motion_strength": 0.4},
        allow_unlisted_params=["motion_strength"],
    )
    assert operator.build_payload()["motion_strength"] == 0.4
