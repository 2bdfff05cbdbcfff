"""The submission rules, driven directly (no Airflow) against the simulator and a hostile server.

Each test asserts what matters to the payer: how many submissions NanoGPT accepted and charged,
which run the attempt delivers, and which error ends it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_nanogpt.exceptions import (
    NanoGPTDailyCapError,
    NanoGPTRateLimitError,
    NanoGPTSubmissionUncertainError,
    NanoGPTSubmissionUnresolvedError,
)
from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from airflow_provider_nanogpt.submission import (
    STATE_KEY,
    Attached,
    LookUpLater,
    RunRecord,
    RunRecords,
    TaskAttempt,
    find_or_submit,
    fingerprint,
    submission_tag,
)
from tests.conftest import FAST_RETRIES, connection_json
from tests.hostile import HostileServer, Reply

LOG = logging.getLogger("test_submission")
KLING = {"model": "kling-video-v2", "prompt": "a kite over a beach", "duration": "5"}
IDENTITY = "dag/run/generate/-1"


class Store(dict[str, Any]):
    """A task state store that also remembers every value written, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[Any] = []

    def set(self, key: str, value: Any) -> None:
        self.writes.append(value)
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


@pytest.fixture
def hook(nanogpt_connection: NanoGPTSimulator) -> Iterator[NanoGPTHook]:
    hook = NanoGPTHook(retry_policy=FAST_RETRIES)
    yield hook
    hook.close()


def attempt(
    try_number: int = 1, generation: int = 1, started_at: float | None = None
) -> TaskAttempt:
    return TaskAttempt(
        identity=IDENTITY,
        try_number=try_number,
        generation=generation,
        started_at=time.time() if started_at is None else started_at,
        not_before=time.time() - 3600,
    )


def run(
    hook: NanoGPTHook,
    store: Store | None,
    try_number: int = 1,
    payload: dict[str, Any] = KLING,
    settle: float = 60.0,
    **kwargs: Any,
) -> Any:
    return find_or_submit(
        hook,
        RunRecords(store),
        attempt(try_number, **kwargs),
        payload,
        log=LOG,
        settle_seconds=settle,
    )


def settle_time_passes(store: Store, seconds: float) -> None:
    """Date the recorded send ``seconds`` earlier: the clock is moved, not slept past."""
    store[STATE_KEY] = {**store[STATE_KEY], "sent_at": store[STATE_KEY]["sent_at"] - seconds}


def accepted(sim: NanoGPTSimulator) -> tuple[int, int]:
    state = sim.state()
    return state["submit_requests"], state["submits_accepted"]


# --- sending ----------------------------------------------------------------------------------


def test_the_record_is_written_before_the_request_leaves(
    hook: NanoGPTHook, simulator: NanoGPTSimulator
) -> None:
    store = Store()
    submits_when_recorded: list[int] = []
    original = store.set

    def set_and_look(key: str, value: Any) -> None:
        submits_when_recorded.append(simulator.state()["submit_requests"])
        original(key, value)

    store.set = set_and_look  # type: ignore[method-assign]
    decision = run(hook, store)
    assert isinstance(decision, Attached) and not decision.reattached
    first, final = store.writes
    assert submits_when_recorded == [0, 1]  # the intent was stored before the POST
    assert first["run_id"] is None and first["tag"] == final["tag"]
    assert final["run_id"] == decision.submission.run_id
    (job,) = simulator.state()["jobs"]
    assert job["conversationUUID"] == submission_tag(IDENTITY, fingerprint(KLING), 1)


def test_a_proven_refusal_forgets_the_intent(
    hook: NanoGPTHook, simulator: NanoGPTSimulator
) -> None:
    store = Store()
    simulator.add_fault(endpoint="submit", kind="429", retry_after=100_000)
    with pytest.raises(NanoGPTRateLimitError):
        find_or_submit(hook, RunRecords(store), attempt(), KLING, log=LOG, max_rate_limit_sleep=1.0)
    assert STATE_KEY not in store  # nothing was created, so nothing is pending
    assert accepted(simulator) == (1, 0)


@pytest.mark.parametrize(
    ("fault", "error", "outcome"),
    [
        ("daily_usd_cap", NanoGPTDailyCapError, "daily_cap"),
        ("daily_cap", NanoGPTDailyCapError, "daily_cap"),
        ("429", NanoGPTRateLimitError, "refused"),
        ("500", NanoGPTSubmissionUncertainError, "uncertain"),
    ],
)
def test_the_submission_metric_names_a_daily_cap(
    hook: NanoGPTHook,
    simulator: NanoGPTSimulator,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
    error: type[Exception],
    outcome: str,
) -> None:
    from airflow_provider_nanogpt import metrics

    sent: list[tuple[str, int, dict[str, str]]] = []
    monkeypatch.setattr(metrics, "_incr", lambda *args: sent.append(args))
    simulator.add_fault(endpoint="submit", kind=fault, retry_after=100_000)
    with pytest.raises(error):
        find_or_submit(
            hook, RunRecords(Store()), attempt(), KLING, log=LOG, max_rate_limit_sleep=1.0
        )
    assert [tags["outcome"] for name, _, tags in sent if name == metrics.SUBMISSIONS] == [outcome]
    assert accepted(simulator) == (1, 0)


@pytest.mark.parametrize(("kind", "marker"), [("500", ""), ("", " [sim:submit500]"), ("reset", "")])
def test_an_uncertain_send_is_kept_and_never_resent_in_the_same_try(
    hook: NanoGPTHook, simulator: NanoGPTSimulator, kind: str, marker: str
) -> None:
    if kind:
        simulator.add_fault(endpoint="submit", kind=kind)
    store = Store()
    payload = {**KLING, "prompt": KLING["prompt"] + marker}
    with pytest.raises(NanoGPTSubmissionUncertainError, match="not sent again"):
        run(hook, store, payload=payload)
    record = RunRecord.from_json(store[STATE_KEY])
    assert record is not None and record.run_id is None and record.try_number == 1
    with pytest.raises(NanoGPTSubmissionUncertainError, match="same try"):
        run(hook, store, payload=payload)
    assert simulator.state()["submit_requests"] == 1


# --- settling an uncertain send on a later try ------------------------------------------------


def test_a_later_try_adopts_the_job_an_uncertain_send_created(
    hook: NanoGPTHook, simulator: NanoGPTSimulator
) -> None:
    store = Store()
    payload = {**KLING, "prompt": KLING["prompt"] + " [sim:submit500]"}
    with pytest.raises(NanoGPTSubmissionUncertainError):
        run(hook, store, payload=payload)
    decision = run(hook, store, try_number=2, payload=payload)
    assert isinstance(decision, Attached) and decision.reattached
    (job,) = simulator.state()["jobs"]
    assert decision.submission.run_id == job["runId"]
    assert store[STATE_KEY]["run_id"] == job["runId"]  # later tries reattach from the record
    assert accepted(simulator) == (1, 1)


def test_not_listed_yet_is_not_nothing_created(
    hook: NanoGPTHook, simulator: NanoGPTSimulator
) -> None:
    # NanoGPT lists a new job in recover only after a while (50 simulated s = 1 s here).
    simulator.configure(recover_lag_seconds=50)
    store = Store()
    payload = {**KLING, "prompt": KLING["prompt"] + " [sim:submit500]"}
    with pytest.raises(NanoGPTSubmissionUncertainError):
        run(hook, store, payload=payload)
    early = run(hook, store, try_number=2, payload=payload, settle=60.0)
    assert isinstance(early, LookUpLater)
    assert early.at == pytest.approx(store[STATE_KEY]["sent_at"] + 60.0)
    time.sleep(1.5)  # NanoGPT lists the job now; the settle time is moved, not slept
    settle_time_passes(store, 61.0)
    decision = run(hook, store, try_number=2, payload=payload, settle=60.0)
    assert isinstance(decision, Attached) and decision.reattached
    assert accepted(simulator) == (1, 1)


def test_nothing_listed_after_the_settle_time_is_sent_again(
    hook: NanoGPTHook, simulator: NanoGPTSimulator
) -> None:
    simulator.add_fault(endpoint="submit", kind="500")  # failed without creating anything
    store = Store()
    with pytest.raises(NanoGPTSubmissionUncertainError):
        run(hook, store)
    assert isinstance(run(hook, store, try_number=2, settle=60.0), LookUpLater)
    settle_time_passes(store, 61.0)
    decision = run(hook, store, try_number=2, settle=60.0)
    assert isinstance(decision, Attached) and not decision.reattached
    assert accepted(simulator) == (2, 1)


@pytest.mark.parametrize(
    ("fault", "raised", "message"),
    [
        # A 429 says when to ask again: raised as such, for the caller to wait and call again.
        ("429", NanoGPTRateLimitError, "429"),
        ("503", NanoGPTSubmissionUncertainError, "Could not look up"),
        ("reset", NanoGPTSubmissionUncertainError, "Could not look up"),
    ],
)
def test_a_failed_lookup_is_never_read_as_nothing_created(
    hook: NanoGPTHook,
    simulator: NanoGPTSimulator,
    fault: str,
    raised: type[Exception],
    message: str,
) -> None:
    store = Store()
    payload = {**KLING, "prompt": KLING["prompt"] + " [sim:submit500]"}
    with pytest.raises(NanoGPTSubmissionUncertainError):
        run(hook, store, payload=payload)
    store[STATE_KEY]["sent_at"] -= 3600  # long settled: only the lookup stands in the way
    simulator.add_fault(endpoint="recover", kind=fault, count=10, retry_after=100_000)
    with pytest.raises(raised, match=message):
        run(hook, store, try_number=2, payload=payload)
    assert accepted(simulator) == (1, 1)
    assert store[STATE_KEY]["run_id"] is None  # still unresolved: the next call looks again


# --- runs recorded earlier --------------------------------------------------------------------


def wait_done(hook: NanoGPTHook, run_id: str) -> None:
    for _ in range(200):
        if hook.get_video_status(run_id).is_terminal:
            return
        time.sleep(0.05)
    raise AssertionError(f"{run_id} did not finish")


@pytest.mark.parametrize("marker", ["", " [sim:no_url]", " [sim:never]"])
def test_a_recorded_run_that_may_deliver_is_reattached_never_paid_again(
    hook: NanoGPTHook, simulator: NanoGPTSimulator, marker: str
) -> None:
    store = Store()
    payload = {**KLING, "prompt": KLING["prompt"] + marker}
    first = run(hook, store, payload=payload)
    if marker != " [sim:never]":
        wait_done(hook, first.submission.run_id)  # COMPLETED, with or without its URL
    again = run(hook, store, try_number=2, payload=payload)
    assert again.reattached and again.submission.run_id == first.submission.run_id
    assert accepted(simulator) == (1, 1)


@pytest.mark.parametrize("marker", [" [sim:fail]", " [sim:cancel]"])
def test_a_recorded_run_that_ended_refunded_is_replaced(
    hook: NanoGPTHook, simulator: NanoGPTSimulator, marker: str
) -> None:
    store = Store()
    payload = {**KLING, "prompt": KLING["prompt"] + marker}
    first = run(hook, store, payload=payload)
    wait_done(hook, first.submission.run_id)
    again = run(hook, store, try_number=2, payload=payload)
    assert not again.reattached and again.submission.run_id != first.submission.run_id
    assert accepted(simulator) == (2, 2)


STORED_AS = ["regenerate_after_clear", "delivered (0.1.0)"]


def _delivered_then(
    hook: NanoGPTHook, stored_as: str, generation: int
) -> tuple[Attached, Attached]:
    """A run sent and delivered (marked as this release stores it, or as 0.1.0 did), then the
    next try in clear ``generation``: the first run's decision and the next one's."""
    store = Store()
    first = run(hook, store)
    if stored_as == "regenerate_after_clear":
        RunRecords(store).mark_regenerate_after_clear()
        assert store[STATE_KEY]["regenerate_after_clear"] is True
    else:
        record = {k: v for k, v in store[STATE_KEY].items() if k != "regenerate_after_clear"}
        store[STATE_KEY] = {**record, "delivered": True}
    return first, run(hook, store, try_number=2, generation=generation)


@pytest.mark.parametrize("stored_as", STORED_AS)
def test_a_delivered_run_is_replaced_with_a_new_tag_after_a_clear(
    hook: NanoGPTHook, simulator: NanoGPTSimulator, stored_as: str
) -> None:
    # A clear starts a new generation (Airflow raises max_tries): the first try after it is 2.
    first, again = _delivered_then(hook, stored_as, generation=2)
    assert not again.reattached
    jobs = simulator.state()["jobs"]
    assert [job["runId"] for job in jobs] == [first.submission.run_id, again.submission.run_id]
    assert jobs[0]["conversationUUID"] != jobs[1]["conversationUUID"]


@pytest.mark.parametrize("stored_as", STORED_AS)
def test_a_retry_after_delivery_reattaches_to_the_delivered_run(
    hook: NanoGPTHook, simulator: NanoGPTSimulator, stored_as: str
) -> None:
    first, again = _delivered_then(hook, stored_as, generation=1)  # a retry: the same generation
    assert again.reattached and again.submission.run_id == first.submission.run_id
    assert accepted(simulator) == (1, 1)


def test_a_changed_request_is_a_new_video(hook: NanoGPTHook, simulator: NanoGPTSimulator) -> None:
    store = Store()
    first = run(hook, store)
    again = run(hook, store, try_number=2, payload={**KLING, "prompt": "another prompt"})
    assert not again.reattached and again.submission.run_id != first.submission.run_id


# --- without a state store (Airflow before 3.3) ----------------------------------------------


def test_without_a_store_a_retry_finds_the_earlier_tries_run_by_tag(
    hook: NanoGPTHook, simulator: NanoGPTSimulator
) -> None:
    payload = {**KLING, "prompt": KLING["prompt"] + " [sim:submit500]"}
    with pytest.raises(NanoGPTSubmissionUncertainError):
        run(hook, None, payload=payload)
    decision = run(hook, None, try_number=2, payload=payload)
    assert isinstance(decision, Attached) and decision.reattached
    assert accepted(simulator) == (1, 1)


def test_without_a_store_a_retry_waits_the_settle_time_from_its_start(
    hook: NanoGPTHook, simulator: NanoGPTSimulator
) -> None:
    # The try's start is set, not slept past, so a slow machine cannot move the decision.
    started = time.time()
    early = run(hook, None, try_number=2, settle=60.0, started_at=started)
    assert isinstance(early, LookUpLater) and early.at == pytest.approx(started + 60.0)
    assert accepted(simulator) == (0, 0)
    settled = run(hook, None, try_number=2, settle=60.0, started_at=started - 61.0)
    assert isinstance(settled, Attached)
    assert accepted(simulator) == (1, 1)


# --- a conversationUUID set by the DAG --------------------------------------------------------


def test_a_users_tag_is_sent_but_never_used_to_adopt_someone_elses_run(
    hook: NanoGPTHook, simulator: NanoGPTSimulator
) -> None:
    shared = {**KLING, "conversationUUID": "my-project"}
    other_task = run(hook, Store(), payload={**shared, "prompt": "task A's video"})
    store = Store()
    simulator.add_fault(endpoint="submit", kind="500")  # task B's send: nothing created
    with pytest.raises(NanoGPTSubmissionUncertainError, match="my-project"):
        run(hook, store, payload=shared)
    with pytest.raises(NanoGPTSubmissionUnresolvedError, match=other_task.submission.run_id):
        run(hook, store, try_number=2, payload=shared)
    assert accepted(simulator) == (2, 1)  # task A's job only; B neither adopted nor re-sent


def test_a_users_tag_with_no_run_since_is_sent_again_after_settling(
    hook: NanoGPTHook, simulator: NanoGPTSimulator
) -> None:
    store = Store()
    simulator.add_fault(endpoint="submit", kind="500")
    payload = {**KLING, "conversationUUID": "lonely-tag"}
    with pytest.raises(NanoGPTSubmissionUncertainError):
        run(hook, store, payload=payload)
    store[STATE_KEY]["sent_at"] -= 120
    decision = run(hook, store, try_number=2, payload=payload)
    assert isinstance(decision, Attached) and not decision.reattached
    assert simulator.state()["jobs"][0]["conversationUUID"] == "lonely-tag"


# --- runs NanoGPT lists with an odd or old creation time (a hostile server) -------------------


def _recover_server(server: HostileServer, tag: str, created_at: object) -> None:
    entry = {"runId": "vid_listed", "status": "completed", "conversationUUID": tag}
    if created_at is not None:
        entry["createdAt"] = created_at
    server.route("GET", "/api/generate-video/recover", Reply(200, {"data": [entry]}))
    server.route(
        "POST",
        "/api/generate-video",
        Reply(202, {"runId": "vid_new", "id": "vid_new", "status": "pending", "cost": 0.35}),
    )


def _uncertain_record(tag: str, sent_at: float) -> Store:
    store = Store()
    record = RunRecord(fingerprint(KLING), tag, False, sent_at, try_number=1, model=KLING["model"])
    RunRecords(store).save(record)
    return store


@pytest.mark.parametrize("created_at", [None, "yesterday", "2026-01-01T00:00:00", 1700000000])
def test_a_listed_run_of_unknown_age_is_neither_adopted_nor_paid_again(
    monkeypatch: pytest.MonkeyPatch, created_at: object
) -> None:
    tag = submission_tag(IDENTITY, fingerprint(KLING), 1)
    with HostileServer() as server:
        _recover_server(server, tag, created_at)
        monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(server.url))
        store = _uncertain_record(tag, time.time() - 3600)
        with pytest.raises(NanoGPTSubmissionUnresolvedError, match="vid_listed"):
            run(NanoGPTHook(retry_policy=FAST_RETRIES), store, try_number=2)
        assert server.requests_to("/api/generate-video") == []


def test_a_listed_run_older_than_the_uncertain_send_is_not_adopted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The same tag's run from before the record: a video delivered earlier, not this send's.
    tag = submission_tag(IDENTITY, fingerprint(KLING), 1)
    with HostileServer() as server:
        _recover_server(server, tag, "2026-01-01T00:00:00Z")
        monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(server.url))
        store = _uncertain_record(tag, time.time() - 3600)
        decision = run(NanoGPTHook(retry_policy=FAST_RETRIES), store, try_number=2)
        assert isinstance(decision, Attached) and decision.submission.run_id == "vid_new"
        assert len(server.requests_to("/api/generate-video")) == 1


def test_a_redirected_submission_is_uncertain_and_needs_a_person(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A 303 after a POST may even mean "created, see there": never re-sent, never retried as is.
    with HostileServer() as server:
        server.route("POST", "/api/generate-video", Reply(303, b"", {"Location": "/api/runs/1"}))
        monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(server.url))
        store = Store()
        with pytest.raises(NanoGPTSubmissionUnresolvedError, match="redirect"):
            run(NanoGPTHook(retry_policy=FAST_RETRIES), store)
        assert RunRecord.from_json(store[STATE_KEY]).run_id is None  # the send stays on record
        assert len(server.requests_to("/api/generate-video")) == 1


# --- rows the tag-filtered lookup returns without a readable tag (a hostile server) -----------

MISSING = object()
# conversationUUID as a row may carry it: absent, null, empty, blank, or not a string.
UNREADABLE_TAGS = [
    pytest.param(MISSING, id="missing"),
    pytest.param(None, id="null"),
    pytest.param("", id="empty"),
    pytest.param("   ", id="blank"),
    pytest.param(42, id="number"),
    pytest.param(["tag"], id="list"),
    pytest.param({"id": "tag"}, id="object"),
]


def _untagged_server(server: HostileServer, conversation_uuid: object, **row: object) -> None:
    entry: dict[str, object] = {"runId": "vid_untagged", "status": "processing", **row}
    entry.setdefault("createdAt", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if conversation_uuid is not MISSING:
        entry["conversationUUID"] = conversation_uuid
    server.route("GET", "/api/generate-video/recover", Reply(200, {"data": [entry]}))
    server.route(
        "POST",
        "/api/generate-video",
        Reply(202, {"runId": "vid_new", "id": "vid_new", "status": "pending", "cost": 0.35}),
    )


@pytest.mark.parametrize("conversation_uuid", UNREADABLE_TAGS)
@pytest.mark.parametrize("with_store", [True, False], ids=["record", "no-store"])
def test_a_listed_run_without_a_readable_tag_is_neither_adopted_nor_paid_again(
    monkeypatch: pytest.MonkeyPatch, conversation_uuid: object, with_store: bool
) -> None:
    # Well past the settle time: only the lookup's answer stands between the task and a re-send.
    with HostileServer() as server:
        _untagged_server(server, conversation_uuid)
        monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(server.url))
        hook = NanoGPTHook(retry_policy=FAST_RETRIES)
        if with_store:  # Airflow 3.3+: the record of the uncertain send, an hour old
            store: Store | None = _uncertain_record(
                submission_tag(IDENTITY, fingerprint(KLING), 1), time.time() - 3600
            )
            started_at = None
        else:  # Airflow 3.1: no record; the retry looks the tag up, an hour into its try
            store, started_at = None, time.time() - 3600
        with pytest.raises(NanoGPTSubmissionUnresolvedError, match="vid_untagged"):
            run(hook, store, try_number=2, started_at=started_at)
        assert server.requests_to("/api/generate-video") == []
        assert len(server.requests_to("/api/generate-video/recover")) == 1


@pytest.mark.parametrize(
    "row",
    [
        pytest.param({"conversationUUID": "someone-elses-tag"}, id="another-tag"),
        pytest.param({"status": "failed"}, id="untagged-refunded"),
        pytest.param({"createdAt": "2026-01-01T00:00:00Z"}, id="untagged-before-the-send"),
    ],
)
def test_a_listed_run_that_provably_is_not_ours_lets_the_request_be_sent_again(
    monkeypatch: pytest.MonkeyPatch, row: dict[str, object]
) -> None:
    tag = submission_tag(IDENTITY, fingerprint(KLING), 1)
    with HostileServer() as server:
        _untagged_server(server, row.pop("conversationUUID", MISSING), **row)
        monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(server.url))
        store = _uncertain_record(tag, time.time() - 3600)
        decision = run(NanoGPTHook(retry_policy=FAST_RETRIES), store, try_number=2)
        assert isinstance(decision, Attached) and decision.submission.run_id == "vid_new"
        assert len(server.requests_to("/api/generate-video")) == 1
