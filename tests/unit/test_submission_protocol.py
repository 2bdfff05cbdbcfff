"""The submission protocol searched for breaks: one task instance across many tries and clears.

Each try drives the real ``find_or_submit`` with the real ``NanoGPTHook``, through a front
(``tests/hostile.py``) before the in-process simulator, with a dict-backed task state store that
survives tries (Airflow 3.3's); when it gets a run it waits for it, downloads the video and marks
it delivered. A try meets one submit answer, one lookup outcome and one crash point:

* submit answers: 2xx, 429, another 4xx, 5xx, a 5xx typed as a rate limit, a reset, a read
  timeout, a redirect, a slow drip, an unreadable 2xx. The front's answers come after it passed
  the request on, so NanoGPT did create (and charge) the job;
* lookup outcomes (NanoGPT's list of runs by tag, read after an uncertain send): found, lagging,
  429, 5xx, rows without a tag, undated rows;
* crash points: see ``CRASHES``.

After every step the promises are checked:

1. at most one charge per clear generation (the simulator's ledger, per submission tag);
2. a retry after delivery, with no clear between, delivers the same run again, unpaid;
3. a clear after delivery makes exactly one new video, once a try of the new generation delivers;
4. every error is one of the provider's typed errors, never a raw exception, and "a person must
   decide" (``NanoGPTSubmissionUnresolvedError``) only where the answer leaves no other way: a
   redirected submit, a lookup listing rows without a tag or a date.

Three drivers: every (submit answer x crash point) pair exhaustively, each followed by retries
that meet every lookup outcome in turn, a clear and a retry; a few named histories that clear
between a send and its delivery; and Hypothesis's state machine for deeper histories of tries and
clears. The whole file runs in about a minute on two busy cores: the time scales are tiny, and
the answer kinds the pairs leave out (daily cap, 429 slept out, 503 typed as a server error,
unreadable 2xx) come up in the state machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from airflow_provider_nanogpt.exceptions import (
    NanoGPTError,
    NanoGPTSubmissionUnresolvedError,
)
from airflow_provider_nanogpt.hooks import download as download_module
from airflow_provider_nanogpt.hooks import nanogpt as hook_module
from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
from airflow_provider_nanogpt.ledger import Budget, Ledger
from airflow_provider_nanogpt.shared_budget import BudgetGuard, BudgetPlan
from airflow_provider_nanogpt.simulator import NanoGPTSimulator, catalog
from airflow_provider_nanogpt.simulator.video import video_sha256
from airflow_provider_nanogpt.storage import atomic_writer
from airflow_provider_nanogpt.submission import (
    Attached,
    LookUpLater,
    RunRecords,
    TaskAttempt,
    find_or_submit,
    fingerprint,
    submission_tag,
)
from tests.conftest import FAST_RETRIES, connection_json
from tests.hostile import HostileServer, Reply, Seen, forward_to

LOG = logging.getLogger("test_submission_protocol")
# Late creations and the settle time are a few tenths of a second apart: run without neighbours.
# The protocol is the provider's own code over HTTP; the hook's Airflow side (its connection) is
# tested on every supported Airflow by tests/hook.
pytestmark = [pytest.mark.timing, pytest.mark.one_airflow]
IDENTITY = "dag/run/generate/-1"
# Real seconds per simulated second: a job (2 s queued + 8 s rendering) takes 0.05 s.
TIME_SCALE = 0.005
# One HTTP exchange, the submission included, may take this long (real seconds).
REQUEST_TIMEOUT = 0.25
# A "timeout" submit: the simulator holds the request this long, then creates the job, after the
# client has given up (real seconds; longer than REQUEST_TIMEOUT).
CREATED_AFTER_TIMEOUT = 0.3
# NanoGPT lists a new job in its lookup this late, when the lookup is lagging (real seconds).
LOOKUP_LAG = 0.1
# Longer than any job takes to be created and listed in this world: the protocol's assumption.
# A slow front answer (0.3 s) plus the lookup lag (0.1 s) leaves 0.6 s for a loaded machine: at
# 0.5 s, one CI run's submit reached the simulator late enough that a retry's lagging lookup
# could not list it yet, and the world broke its own premise.
SETTLE_SECONDS = 1.0
MAX_RATE_LIMIT_SLEEP = 0.5
VIDEO_BYTES = 20_000  # small, so downloads cost little; still more than one write

SUBMIT = "/api/generate-video"
RECOVER = "/api/generate-video/recover"
PAYLOADS = {
    "plain": {
        "model": "kling-video-v2",
        "prompt": f"a kite over a beach [sim:size={VIDEO_BYTES}]",
        "duration": "5",
    },
    # Every job ends FAILED (refunded): a later try submits a new one.
    "fails": {"model": "kling-video-v2", "prompt": "a kite [sim:fail]", "duration": "5"},
}

# Answers the simulator gives in place of processing the submit: nothing is created, except
# by "timeout-then-created" (it processes the request after the client gave up).
SIMULATOR_ANSWERS = {
    "429-retry-after-0": {"kind": "429", "retry_after": 0},  # slept out and re-sent in the call
    "429": {"kind": "429", "retry_after": 100_000, "count": 10},  # too long to sleep: raised
    "daily-cap": {"kind": "daily_cap", "count": 10},  # a typed rate_limit_error 429
    "404": {"kind": "404"},
    "500-nothing-created": {"kind": "500"},  # the answer does not prove it
    "503-typed": {"kind": "503", "body_shape": "openai"},
    "reset-nothing-created": {"kind": "reset"},
    "malformed": {"kind": "malformed"},  # a 200 that cannot be read
    "timeout-then-created": {"kind": "timeout", "delay": CREATED_AFTER_TIMEOUT / TIME_SCALE},
}
# Answers the front gives after passing the submit on: NanoGPT created and charged the job.
FRONT_ANSWERS = {
    "500": lambda _real: Reply(500, {"error": "Video generation failed", "status": 500}),
    "503-rate-limit": lambda _real: Reply(
        503,
        {"error": {"message": "Rate limit exceeded", "type": "rate_limit_error"}},
        headers={"Retry-After": "0"},
    ),
    "reset": lambda _real: Reply(reset=True),
    "redirect": lambda _real: Reply(
        307, b"", headers={"Location": "http://127.0.0.1:9/api/generate-video"}
    ),
    # The real 202, a byte each REQUEST_TIMEOUT: no complete answer in time.
    "drip": lambda real: Reply(real.status, real.body, headers=real.headers, drip=REQUEST_TIMEOUT),
}
SUBMIT_ANSWERS = ("ok", *SIMULATOR_ANSWERS, *FRONT_ANSWERS)
# One of each kind the issue names, for the exhaustive pairs (the others come up in histories).
PAIRED_ANSWERS = (
    "ok",
    "429",
    "404",
    "500",
    "500-nothing-created",
    "503-rate-limit",
    "reset",
    "reset-nothing-created",
    "timeout-then-created",
    "redirect",
    "drip",
)
LOOKUPS = ("ok", "lagging", "429", "500", "untagged", "undated")
# The lookup faults in the order a retry meets them: the failing ones leave the record as it is.
LOOKUP_FAULTS = ("429", "500", "untagged", "undated", "lagging")
CRASHES = (
    "none",
    "before-record",  # the worker dies before the intent is written (before_send)
    "after-record",  # the intent is written; the worker dies before the request leaves
    "before-answer",  # the request left; the worker dies before reading the answer
    "before-record-update",  # the answer came; the worker dies before recording it
    "while-waiting",  # the run was attached; the worker dies while waiting for it
    "during-download",  # the run completed; the worker dies with the video half written
    "after-delivery",  # delivered and marked, then the try fails (post_execute, say)
)


class WorkerCrash(BaseException):
    """The worker process dying at a chosen point (not an error the provider raises)."""


@dataclass(frozen=True)
class Try:
    submit: str = "ok"
    lookup: str = "ok"
    crash: str = "none"


@dataclass(frozen=True)
class Clear:
    pass


CLEAN = Try()


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
    """The real hook; it can kill the worker just before or just after the request leaves."""

    crash: str = "none"
    crash_mid_download = False

    def submit_video(self, payload: Any, **kwargs: Any) -> Any:
        if self.crash == "after-record":
            raise WorkerCrash("killed before the request left")
        if self.crash != "before-answer":
            return super().submit_video(payload, **kwargs)
        with contextlib.suppress(NanoGPTError):  # whatever NanoGPT answered, nobody read it
            super().submit_video(payload, **kwargs)
        raise WorkerCrash("killed before the answer was read")


class Front:
    """The hook's NanoGPT: the simulator, behind a front that can answer one submit its own way
    (after passing it on) and strip the tag or the date from the rows a lookup lists."""

    def __init__(self, simulator: NanoGPTSimulator) -> None:
        self.submit_answer: str | None = None
        self.lookup = "ok"
        # (received, answered by the simulator) of every submit passed on, for failure messages.
        self.submits: list[tuple[float, float]] = []
        self._forward = forward_to(simulator.url, timeout=5)
        self.server = HostileServer(fallback=self._handle)

    def _handle(self, seen: Seen) -> Reply:
        answer = self.submit_answer if (seen.method, seen.path) == ("POST", SUBMIT) else None
        self.submit_answer = None if answer else self.submit_answer
        received = time.time()
        real = self._forward(seen)
        if (seen.method, seen.path) == ("POST", SUBMIT):
            self.submits.append((received, time.time()))
        if answer is not None:
            return FRONT_ANSWERS[answer](real)
        if seen.path == RECOVER and self.lookup in ("untagged", "undated") and real.status == 200:
            body = json.loads(real.payload())
            for row in body.get("data", []):
                if self.lookup == "untagged":
                    row["conversationUUID"] = None
                else:
                    row.pop("createdAt", None)
            return Reply(200, body)
        return real


def _epoch_of(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@dataclass
class World:
    """One task instance's history, as the promises need it."""

    sim: NanoGPTSimulator
    front: Front
    hook: CrashingHook
    payload: dict[str, Any]
    output: Path
    budget: BudgetGuard
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
    began: float = field(default_factory=time.time)

    def tag(self, generation: int) -> str:
        return submission_tag(IDENTITY, fingerprint(self.payload), generation)

    def story(self) -> str:
        """The tries so far, each stamped with its end (seconds since the world began), then when
        each submit reached the simulator and when it answered: enough to tell a provider's
        mistake from a machine too slow for this world's settle time."""
        submits = [
            f"submit passed on at {received - self.began:.3f} s, answered at "
            f"{answered - self.began:.3f} s"
            for received, answered in self.front.submits
        ]
        created = [
            f"job {job['runId']} created at {_epoch_of(job['created_at']) - self.began:.3f} s"
            for job in self.sim.state()["jobs"]
        ]
        return "\n".join([*self.history, *submits, *created])

    def note(self, entry: str) -> None:
        self.history.append(f"[{time.time() - self.began:.3f} s] {entry}")

    def delivered_now(self) -> bool:
        return self.generation is not None and self.generation in self.delivered

    def charged(self) -> int:
        return sum(len(runs) for runs in self.sim.state()["ledger"].values())

    def charged_micro(self) -> int:
        """What NanoGPT holds charged (refunds left out), in micro-dollars."""
        jobs = self.sim.state()["jobs"]
        return sum(round(job["cost"] * 1_000_000) for job in jobs if not job["refunded"])

    def budget_counted_micro(self) -> int:
        """What the shared budget counts: spend plus open reservations."""
        (budget,) = self.budget.plan.budgets
        return self.budget.ledger.use(budget).total_micro

    def land_late_creations(self) -> None:
        time.sleep(max(0.0, self.in_flight_until - time.time()))


def arm_faults(world: World, step: Try) -> None:
    sim = world.sim
    if (submit := SIMULATOR_ANSWERS.get(step.submit)) is not None:
        sim.add_fault(endpoint="submit", **submit)
    world.front.submit_answer = step.submit if step.submit in FRONT_ANSWERS else None
    if step.submit == "timeout-then-created":
        world.in_flight_until = time.time() + CREATED_AFTER_TIMEOUT + 0.2
    if step.lookup == "429":
        sim.add_fault(endpoint="recover", kind="429", retry_after=100_000, count=10)
    elif step.lookup == "500":
        sim.add_fault(endpoint="recover", kind="500", count=10)
    world.front.lookup = step.lookup
    sim.configure(recover_lag_seconds=LOOKUP_LAG / TIME_SCALE if step.lookup == "lagging" else 0)
    world.hook.crash = step.crash if step.crash in ("after-record", "before-answer") else "none"
    world.hook.crash_mid_download = step.crash == "during-download"
    world.store.crash_on_write = (
        world.store.writes + 2 if step.crash == "before-record-update" else None
    )


def disarm(world: World) -> None:
    world.sim.clear_faults()
    world.sim.configure(recover_lag_seconds=0)
    world.front.submit_answer, world.front.lookup = None, "ok"
    world.hook.crash = "none"
    world.hook.crash_mid_download = False
    world.store.crash_on_write = None


def wait_for_run(hook: NanoGPTHook, run_id: str) -> Any:
    """Poll until the run ends; its final status."""
    deadline = time.time() + 10
    while time.time() < deadline:
        status = hook.get_video_status(run_id)
        if status.is_terminal:
            return status
        time.sleep(0.02)
    raise AssertionError(f"run {run_id} did not end")


def may_need_a_person(step: Try) -> bool:
    """Whether this try may end in NanoGPTSubmissionUnresolvedError: only a redirected submit
    (sending again would meet it again) or a lookup whose rows cannot be told apart."""
    return step.submit == "redirect" or step.lookup in ("untagged", "undated")


def one_try(world: World, step: Try) -> bool:
    """One try of the task: find or submit, wait, download, deliver; crashes and errors end it.

    Whether the try reached its crash point (a try that ends earlier never gets there).
    """
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

    arm_faults(world, step)
    outcome = "?"
    reached = step.crash == "none"
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
                budget=world.budget,
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
                f"generation {generation} got {outcome}\n{world.story()}"
            )
            assert world.sim.state()["submit_requests"] == submits_before
        if step.crash == "while-waiting":
            raise WorkerCrash("killed while waiting for the run")
        status = wait_for_run(world.hook, run_id)
        outcome += f", ended {status.state.value}"
        if not status.is_deliverable:
            return reached  # the operator fails the try; the job was refunded
        world.hook.download_video(status.video_url, world.output)
        # The whole video of this run, and nothing a killed download left behind.
        assert video_sha256_of(world.output) == video_sha256(run_id, VIDEO_BYTES)
        assert not list(world.output.parent.glob("*.part"))
        records.mark_regenerate_after_clear()
        if generation not in world.delivered:
            # Promise 3: after a clear, a delivery is a new video, charged once to this clear.
            assert run_id not in world.delivered_before_clear, (
                f"generation {generation} delivered {run_id}, delivered before the clear\n"
                + world.story()
            )
        world.delivered[generation] = run_id
        outcome += ", delivered"
        if step.crash == "after-delivery":
            outcome += ", then the try failed"
            reached = True
    except WorkerCrash as crash:
        outcome += f", crashed ({crash})"
        reached = True
    except NanoGPTSubmissionUnresolvedError as exc:
        if not may_need_a_person(step):
            raise AssertionError(
                f"try {world.try_number} {step} needs a person: {exc}\n{world.story()}"
            ) from exc
        outcome = "unresolved: a person decides"
    except NanoGPTError as exc:  # promise 4: typed (anything else fails the test as it is)
        outcome = f"raised {type(exc).__name__}"
    finally:
        disarm(world)
        world.note(f"try {world.try_number} (gen {generation}) {step}: {outcome}")
    return reached


def video_sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clear(world: World) -> None:
    world.delivered_before_clear.update(world.delivered.values())
    world.generation = None
    world.note("clear")


def check_charges(world: World) -> None:
    """Promise 1: every job carries one of this task's tags, and no tag stands charged twice."""
    state = world.sim.state()
    tags = {world.tag(generation) for generation in world.generations}
    for job in state["jobs"]:
        assert job["conversationUUID"] in tags, f"an untagged or foreign job: {job['runId']}"
    doubled = {tag: runs for tag, runs in state["ledger"].items() if len(runs) > 1}
    assert not doubled, f"charged twice in one generation: {doubled}\n{world.story()}"
    # The shared budget reserves before every send: it never counts less than NanoGPT charged.
    counted, charged = world.budget_counted_micro(), world.charged_micro()
    assert counted >= charged, (
        f"budget counts {counted}, NanoGPT charged {charged}\n{world.story()}"
    )


def check_budget_settled(world: World) -> None:
    """Once the tries are over: the budget counts exactly what NanoGPT charged (every send that
    made no video released its reservation; the world's estimate is the real price), and no
    reservation is left open: a send found to have made its video is settled, tied to that run."""
    counted, charged = world.budget_counted_micro(), world.charged_micro()
    assert counted == charged, (
        f"budget counts {counted}, NanoGPT charged {charged}\n{world.story()}"
    )
    (budget,) = world.budget.plan.budgets
    open_ones = [use for use in world.budget.ledger.use_by_tag(budget) if use.reserved_micro]
    assert not open_ones, f"reservations left open: {open_ones}\n{world.story()}"


def deliver_with_clean_tries(world: World) -> bool:
    """Clean tries (no faults, no crashes) until the current generation delivers (at most 3)."""
    for _ in range(3):
        if world.delivered_now():
            break
        one_try(world, CLEAN)
        check_charges(world)
    return world.delivered_now()


@contextlib.contextmanager
def dying_writer(hook: CrashingHook, destination: Any) -> Iterator[IO[bytes]]:
    """The download's file writer; armed, the worker dies with the first bytes written, leaving
    the partial file behind as a killed process does (no clean-up runs)."""
    if not hook.crash_mid_download:
        with atomic_writer(destination) as handle:
            yield handle
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.parent / f".{destination.name}.killed.part"
    with partial.open("wb") as handle:

        class Dying:
            def write(self, chunk: bytes) -> int:
                handle.write(chunk[: len(chunk) // 2])
                handle.flush()
                raise WorkerCrash("killed with the video half written")

        yield Dying()  # type: ignore[misc]


@pytest.fixture
def world_parts(
    simulator: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[NanoGPTSimulator, Front, CrashingHook, Path]]:
    # A submission may wait as long as any other exchange here, so "no answer in time" is quick.
    monkeypatch.setattr(hook_module, "SUBMIT_TIMEOUT_FLOOR", REQUEST_TIMEOUT)
    front = Front(simulator)
    with front.server:
        monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(front.server.url))
        hook = CrashingHook(request_timeout=REQUEST_TIMEOUT, retry_policy=FAST_RETRIES)
        monkeypatch.setattr(
            download_module, "atomic_writer", lambda target: dying_writer(hook, target)
        )
        yield simulator, front, hook, tmp_path / "out" / "video.mp4"
        hook.close()


class WorldBudget(BudgetGuard):
    """The guard as the operator builds it, on a ledger handed to it instead of one opened
    through an Airflow connection."""

    def __init__(self, *args: Any, ledger: Ledger, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._world_ledger = ledger

    @property
    def ledger(self) -> Ledger:
        return self._world_ledger


def new_world(parts: tuple[NanoGPTSimulator, Front, CrashingHook, Path], payload: str) -> World:
    simulator, front, hook, output = parts
    simulator.reset()
    simulator.configure(time_scale=TIME_SCALE)
    front.submits.clear()
    request = dict(PAYLOADS[payload])
    spec = catalog.get_model(request["model"])
    assert spec is not None
    price = float(catalog.compute_cost(spec, request))
    # A budget never exhausted, in a ledger of this world's own: every world's tries use the same
    # submission tags, so their reservation ids would meet in a shared one.
    plan = BudgetPlan(
        budgets=(Budget("protocol world", "day", 10**12),),
        ledger_conn_id="-",
        conn_id="nanogpt_default",
    )
    ledger = Ledger.from_url(f"sqlite:///{output.parent.parent / f'ledger-{uuid.uuid4()}.db'}")
    budget = WorldBudget(plan, lambda: price, log=LOG, ledger=ledger)
    return World(simulator, front, hook, request, output, budget)


# --- every single fault -------------------------------------------------------------------------


# The suite-wide check would repeat what this test already fails on, with less context.
@pytest.mark.charges_twice(reason="checked after every step by the test itself")
@pytest.mark.parametrize("crash", CRASHES)
@pytest.mark.parametrize("answer", PAIRED_ANSWERS)
def test_every_answer_at_every_crash_point_then_every_lookup_then_a_clear(
    world_parts: tuple[NanoGPTSimulator, Front, CrashingHook, Path], answer: str, crash: str
) -> None:
    """One faulty try, retries meeting each lookup fault, a clean retry; then a clear: exactly
    one new video.

    A crash point the faulty try does not reach (one past attaching, after an answer that
    leaves the outcome open) waits for the first retry that does.
    """
    world = new_world(world_parts, "plain")
    try:
        for submit, lookup in ((answer, "ok"), *(("ok", fault) for fault in LOOKUP_FAULTS)):
            if one_try(world, Try(submit, lookup, crash)):
                crash = "none"
            check_charges(world)
        assert deliver_with_clean_tries(world), "clean tries did not deliver:\n" + world.story()
        one_try(world, CLEAN)  # a retry after delivery: the same run, unpaid (promise 2)
        world.land_late_creations()
        check_charges(world)
        charged_before_clear = world.charged()
        clear(world)
        assert deliver_with_clean_tries(world), "no delivery after the clear:\n" + world.story()
        assert world.charged() == charged_before_clear + 1, (
            "a clear must make exactly one new video\n" + world.story()
        )
        world.land_late_creations()
        check_budget_settled(world)
        LOG.info("history:\n%s", world.story())
    finally:
        world.land_late_creations()


# --- histories worth keeping ---------------------------------------------------------------------

NAMED_HISTORIES = {
    # A run sent before a clear, delivered after it: the retry that follows reattaches.
    "sent-before-a-clear": [Try(crash="while-waiting"), Clear(), CLEAN, CLEAN],
    # Delivered, cleared, the new generation's send dies unanswered: its retry finds that run.
    "clear-then-crash": [CLEAN, Clear(), Try("drip", crash="before-answer"), CLEAN, CLEAN],
    # Killed mid-download after a clear: the retry delivers the new run, not the old one.
    "clear-then-killed-download": [CLEAN, Clear(), Try(crash="during-download"), CLEAN],
    # Two clears, each delivery failing after it was made.
    "two-clears": [
        Try(crash="after-delivery"),
        Clear(),
        Try("503-rate-limit", crash="after-delivery"),
        CLEAN,
        Clear(),
        CLEAN,
    ],
}


@pytest.mark.charges_twice(reason="checked after every step by the test itself")
@pytest.mark.parametrize("name", NAMED_HISTORIES)
def test_named_history(
    world_parts: tuple[NanoGPTSimulator, Front, CrashingHook, Path], name: str
) -> None:
    world = new_world(world_parts, "plain")
    try:
        for step in NAMED_HISTORIES[name]:
            if isinstance(step, Try):
                one_try(world, step)
            else:
                clear(world)
            check_charges(world)
        assert deliver_with_clean_tries(world), "clean tries did not deliver:\n" + world.story()
        world.land_late_creations()
        check_charges(world)
        # Each generation that delivered got its own video.
        assert len(set(world.delivered.values())) == len(world.delivered), world.story()
        check_budget_settled(world)
        LOG.info("history:\n%s", world.story())
    finally:
        world.land_late_creations()


# --- deeper histories ---------------------------------------------------------------------------


class Histories(RuleBasedStateMachine):
    """Tries and clears in any order; faults weighted so that histories get deep enough to
    deliver, retry and clear, while every fault still comes up."""

    parts: tuple[NanoGPTSimulator, Front, CrashingHook, Path]

    def __init__(self) -> None:
        super().__init__()
        self.world: World | None = None
        self.payload = "plain"

    @initialize(payload=st.sampled_from(("plain", "plain", "plain", "fails")))
    def start(self, payload: str) -> None:
        self.payload = payload
        self.world = new_world(self.parts, payload)

    @rule(
        submit=st.sampled_from(("ok",) * 6 + SUBMIT_ANSWERS[1:]),
        lookup=st.sampled_from(("ok",) * 3 + LOOKUPS[1:]),
        crash=st.sampled_from(("none",) * 3 + CRASHES[1:]),
    )
    def a_try(self, submit: str, lookup: str, crash: str) -> None:
        assert self.world is not None
        one_try(self.world, Try(submit, lookup, crash))

    @rule()
    def a_clear(self) -> None:
        assert self.world is not None
        clear(self.world)

    @invariant()
    def charged_at_most_once(self) -> None:
        if self.world is not None:
            check_charges(self.world)

    def teardown(self) -> None:
        world = self.world
        if world is None:
            return
        try:
            # Clean tries: the current generation delivers (or, when every job fails, pays
            # nothing).
            delivered = deliver_with_clean_tries(world)
            world.land_late_creations()
            check_charges(world)
            if self.payload == "fails":
                assert not world.sim.state()["ledger"], "a failed job stayed charged"
            else:
                assert delivered, "clean tries did not deliver:\n" + world.story()
        finally:
            world.land_late_creations()


@pytest.mark.charges_twice(reason="checked after every step by the test itself")
def test_no_history_of_tries_and_clears_pays_twice_or_loses_a_delivery(
    world_parts: tuple[NanoGPTSimulator, Front, CrashingHook, Path],
) -> None:
    Histories.parts = world_parts
    run_state_machine_as_test(
        Histories,
        settings=settings(
            max_examples=30,
            stateful_step_count=7,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
