"""The submission protocol searched for breaks: one task instance across many tries and clears.

Hypothesis generates a history of one task instance: tries, each meeting a chosen submit answer,
a chosen lookup answer and a chosen crash point, and clears between them. Each try drives the
real ``find_or_submit`` with the real ``NanoGPTHook`` against the in-process simulator, with a
dict-backed task state store that survives tries (Airflow 3.3's), and, when it gets a run, waits
for it and marks it delivered. After every step the promises are checked:

1. at most one charge per clear generation (the simulator's ledger, per submission tag);
2. a retry after delivery, with no clear between, delivers the same run again, unpaid;
3. a clear after delivery makes exactly one new video, once a try of the new generation delivers;
4. every error is one of the provider's typed errors, never a raw exception.

A history ends with clean tries (no faults, no crashes): the current generation must deliver.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from airflow_provider_nanogpt.exceptions import (
    NanoGPTError,
    NanoGPTSubmissionUnresolvedError,
)
from airflow_provider_nanogpt.hooks import nanogpt as hook_module
from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from airflow_provider_nanogpt.submission import (
    Attached,
    LookUpLater,
    RunRecords,
    TaskAttempt,
    find_or_submit,
    fingerprint,
    submission_tag,
)
from tests.conftest import FAST_RETRIES

LOG = logging.getLogger("test_submission_protocol")
IDENTITY = "dag/run/generate/-1"
# Real seconds per simulated second: a job (2 s queued + 8 s rendering) takes 0.1 s.
TIME_SCALE = 0.01
# One HTTP exchange, the submission included, may take this long (real seconds).
REQUEST_TIMEOUT = 0.25
# A "timeout" submit: the simulator holds the request this long, then creates the job, after the
# client has given up (real seconds; longer than REQUEST_TIMEOUT).
CREATED_AFTER_TIMEOUT = 0.35
# NanoGPT lists a new job in its lookup this late, when the lookup is lagging (real seconds).
LOOKUP_LAG = 0.15
# Longer than any job takes to be created and listed in this world: the protocol's assumption.
SETTLE_SECONDS = 0.6
MAX_RATE_LIMIT_SLEEP = 0.5

PAYLOADS = {
    "plain": {"model": "kling-video-v2", "prompt": "a kite over a beach", "duration": "5"},
    # Every accepted submit creates the job and then answers 500.
    "created-then-500": {
        "model": "kling-video-v2",
        "prompt": "a kite over a beach [sim:submit500]",
        "duration": "5",
    },
    # Every job ends FAILED (refunded): a later try submits a new one.
    "fails": {"model": "kling-video-v2", "prompt": "a kite [sim:fail]", "duration": "5"},
}

SUBMIT_ANSWERS = (
    "ok",
    "429-retry-after-0",  # slept out and re-sent inside the call: nothing was created
    "429-long",  # longer than the call may sleep: NanoGPTRateLimitError, nothing created
    "daily-cap",  # a typed rate_limit_error 429 until midnight
    "404",  # a 4xx answer: nothing was created
    "500",  # nothing was created, but the answer does not prove it
    "503-typed",  # a typed JSON body on a 5xx: a 5xx stays a 5xx
    "reset",  # the connection dropped after the request left
    "malformed",  # a 200 that cannot be read
    "timeout-then-created",  # no answer in time; NanoGPT creates the job afterwards
)
LOOKUP_ANSWERS = ("ok", "429", "500", "lagging")
CRASHES = (
    "none",
    "before-record",  # the worker dies before the intent is written
    "before-answer",  # the request left; the worker dies before reading the answer
    "before-record-update",  # the answer came; the worker dies before recording it
    "before-delivery",  # the run was attached; the worker dies while waiting for it
    "after-delivery",  # delivered and marked, then the try fails (post_execute, say)
)


class WorkerCrash(BaseException):
    """The worker process dying at a chosen point (not an error the provider raises)."""


@dataclass(frozen=True)
class Try:
    submit: str
    lookup: str
    crash: str


@dataclass(frozen=True)
class Clear:
    pass


Step = Try | Clear

steps = st.lists(
    st.one_of(
        # Weighted toward the plain answer and no crash, so that histories get deep enough to
        # deliver, retry and clear, while every fault still comes up.
        st.builds(
            Try,
            st.sampled_from(("ok",) * 6 + SUBMIT_ANSWERS[1:]),
            st.sampled_from(("ok",) * 3 + LOOKUP_ANSWERS[1:]),
            st.sampled_from(("none",) * 2 + CRASHES[1:]),
        ),
        st.just(Clear()),
    ),
    min_size=4,
    max_size=7,
)


class CrashingStore(dict[str, Any]):
    """A task state store that survives tries; it can kill the worker on a chosen write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.crash_on_write: int | None = None

    def _mutating(self) -> None:
        self.writes += 1
        if self.crash_on_write is not None and self.writes >= self.crash_on_write:
            self.crash_on_write = None
            raise WorkerCrash("killed before the record was updated")

    def set(self, key: str, value: Any) -> None:
        self._mutating()
        self[key] = value

    def delete(self, key: str) -> None:
        self._mutating()
        self.pop(key, None)


class CrashingHook(NanoGPTHook):
    """The real hook; ``crash_before_answer`` kills the worker once the request has left."""

    crash_before_answer = False

    def submit_video(self, payload: Any, **kwargs: Any) -> Any:
        if not self.crash_before_answer:
            return super().submit_video(payload, **kwargs)
        with contextlib.suppress(NanoGPTError):  # whatever NanoGPT answered, nobody read it
            super().submit_video(payload, **kwargs)
        raise WorkerCrash("killed before the answer was read")


@dataclass
class World:
    """One task instance's history, as the promises need it."""

    sim: NanoGPTSimulator
    hook: CrashingHook
    payload: dict[str, Any]
    store: CrashingStore = field(default_factory=CrashingStore)
    try_number: int = 0
    generation: int | None = None  # None: the next try starts a generation
    generations: list[int] = field(default_factory=list)
    # generation -> the run delivered in it
    delivered: dict[int, str] = field(default_factory=dict)
    # every run delivered before the latest clear
    delivered_before_clear: set[str] = field(default_factory=set)
    in_flight_until: float = 0.0
    history: list[str] = field(default_factory=list)

    def tag(self, generation: int) -> str:
        return submission_tag(IDENTITY, fingerprint(self.payload), generation)


def arm_faults(world: World, step: Try) -> None:
    sim = world.sim
    submit = {
        "429-retry-after-0": {"kind": "429", "retry_after": 0},
        "429-long": {"kind": "429", "retry_after": 100_000, "count": 10},
        "daily-cap": {"kind": "daily_cap", "count": 10},
        "404": {"kind": "404"},
        "500": {"kind": "500"},
        "503-typed": {"kind": "503", "body_shape": "openai"},
        "reset": {"kind": "reset"},
        "malformed": {"kind": "malformed"},
        "timeout-then-created": {"kind": "timeout", "delay": CREATED_AFTER_TIMEOUT / TIME_SCALE},
    }.get(step.submit)
    if submit is not None:
        sim.add_fault(endpoint="submit", **submit)
    if step.submit == "timeout-then-created":
        world.in_flight_until = time.time() + CREATED_AFTER_TIMEOUT + 0.2
    if step.lookup == "429":
        sim.add_fault(endpoint="recover", kind="429", retry_after=100_000, count=10)
    elif step.lookup == "500":
        sim.add_fault(endpoint="recover", kind="500", count=10)
    sim.configure(recover_lag_seconds=LOOKUP_LAG / TIME_SCALE if step.lookup == "lagging" else 0)


def wait_for_run(hook: NanoGPTHook, run_id: str) -> str:
    """Poll until the run ends; its final state's name."""
    deadline = time.time() + 10
    while time.time() < deadline:
        status = hook.get_video_status(run_id)
        if status.is_terminal:
            return status.state.value
        time.sleep(0.02)
    raise AssertionError(f"run {run_id} did not end")


def one_try(world: World, step: Try) -> None:
    """One try of the task: find or submit, wait, deliver; crashes and errors end it."""
    world.try_number += 1
    if world.generation is None:
        world.generation = world.try_number
        world.generations.append(world.generation)
    generation = world.generation
    attempt = TaskAttempt(
        identity=IDENTITY,
        try_number=world.try_number,
        generation=generation,
        started_at=time.time(),
        not_before=time.time() - 3600,
    )
    records = RunRecords(world.store)
    submits_before = world.sim.state()["submit_requests"]

    def before_send() -> None:
        if step.crash == "before-record":
            raise WorkerCrash("killed before the intent was written")

    world.store.crash_on_write = (
        world.store.writes + 2 if step.crash == "before-record-update" else None
    )
    world.hook.crash_before_answer = step.crash == "before-answer"
    arm_faults(world, step)
    outcome = "?"
    try:
        while True:
            decision = find_or_submit(
                world.hook,
                records,
                attempt,
                world.payload,
                log=LOG,
                settle_seconds=SETTLE_SECONDS,
                before_send=before_send,
                max_rate_limit_sleep=MAX_RATE_LIMIT_SLEEP,
            )
            if isinstance(decision, Attached):
                break
            assert isinstance(decision, LookUpLater)
            time.sleep(max(0.0, decision.at - time.time()))  # the operator waits, then looks
        run_id = decision.submission.run_id
        outcome = f"attached {run_id} reattached={decision.reattached}"
        if generation in world.delivered:
            # Promise 2: a retry after delivery delivers the same run, and pays nothing.
            assert (run_id, decision.reattached) == (world.delivered[generation], True), (
                f"try {world.try_number} after delivering {world.delivered[generation]} in "
                f"generation {generation} got {outcome}"
            )
            assert world.sim.state()["submit_requests"] == submits_before
        if step.crash == "before-delivery":
            raise WorkerCrash("killed while waiting for the run")
        final = wait_for_run(world.hook, run_id)
        outcome += f", ended {final}"
        if final != "COMPLETED":
            return  # the operator fails the try; the job was refunded
        records.mark_regenerate_after_clear()
        if generation not in world.delivered:
            # Promise 3: after a clear, a delivery is a new video, charged once to this clear.
            assert run_id not in world.delivered_before_clear, (
                f"generation {generation} delivered {run_id}, delivered before the clear"
            )
        world.delivered[generation] = run_id
        outcome += ", delivered"
        if step.crash == "after-delivery":
            outcome += ", then the try failed"
    except WorkerCrash as crash:
        outcome += f", crashed ({crash})"
    except NanoGPTSubmissionUnresolvedError as exc:
        # Every run the simulator lists is tagged and dated: a person is never needed here.
        raise AssertionError(f"needs a person in a world that never does: {exc}") from exc
    except NanoGPTError as exc:  # promise 4: typed (anything else fails the test as it is)
        outcome = f"raised {type(exc).__name__}"
    finally:
        world.sim.clear_faults()
        world.sim.configure(recover_lag_seconds=0)
        world.hook.crash_before_answer = False
        world.store.crash_on_write = None
        world.history.append(f"try {world.try_number} (gen {generation}) {step}: {outcome}")


def clear(world: World) -> None:
    world.delivered_before_clear.update(world.delivered.values())
    world.generation = None
    world.history.append("clear")


def check_charges(world: World) -> None:
    """Promise 1: every job carries one of this task's tags, and no tag stands charged twice."""
    state = world.sim.state()
    tags = {world.tag(generation) for generation in world.generations}
    for job in state["jobs"]:
        assert job["conversationUUID"] in tags, f"an untagged or foreign job: {job['runId']}"
    doubled = {tag: runs for tag, runs in state["ledger"].items() if len(runs) > 1}
    assert not doubled, f"charged twice in one generation: {doubled}\n" + "\n".join(world.history)


@pytest.fixture
def fast_hook(
    nanogpt_connection: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CrashingHook]:
    # A submission may wait as long as any other exchange here, so "no answer in time" is quick.
    monkeypatch.setattr(hook_module, "SUBMIT_TIMEOUT_FLOOR", REQUEST_TIMEOUT)
    hook = CrashingHook(request_timeout=REQUEST_TIMEOUT, retry_policy=FAST_RETRIES)
    yield hook
    hook.close()


# The suite-wide check would repeat what this test already fails on, with less context.
@pytest.mark.charges_twice(reason="checked after every step by the test itself")
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payload=st.sampled_from(("plain", "plain", "created-then-500", "fails")), history=steps)
@example(
    payload="plain",
    history=[
        Try("ok", "ok", "before-delivery"),
        Clear(),
        Try("ok", "ok", "none"),
        Try("ok", "ok", "none"),
    ],
)  # a run sent before a clear, delivered after it: the retry that follows reattaches
def test_no_history_of_tries_and_clears_pays_twice_or_loses_a_delivery(
    simulator: NanoGPTSimulator, fast_hook: CrashingHook, payload: str, history: list[Step]
) -> None:
    simulator.reset()
    simulator.configure(time_scale=TIME_SCALE)
    world = World(simulator, fast_hook, PAYLOADS[payload])
    try:
        for step in history:
            if isinstance(step, Clear):
                clear(world)
            else:
                one_try(world, step)
            check_charges(world)
        # Clean tries: the current generation delivers (or, when every job fails, pays nothing).
        generation_delivered = world.generation is not None and world.generation in world.delivered
        for _ in range(3):
            if generation_delivered:
                break
            one_try(world, Try("ok", "ok", "none"))
            check_charges(world)
            generation_delivered = world.generation in world.delivered
        time.sleep(max(0.0, world.in_flight_until - time.time()))  # late creations land
        check_charges(world)
        if payload == "fails":
            assert not simulator.state()["ledger"], "a failed job stayed charged"
        else:
            assert generation_delivered, "clean tries did not deliver:\n" + "\n".join(world.history)
    finally:
        time.sleep(max(0.0, world.in_flight_until - time.time()))
