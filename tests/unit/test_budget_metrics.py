"""The budget metrics add up to what the ledger holds: whatever a reservation goes through
(settled at a pre-charge, settled again at a final cost above or below it, refunded, released
before anything was created), ``budget_settled - budget_released{from=spend}`` is the window's
spent, and each release says where it came from. Generated sequences against a real SQLite
ledger, counted by ``shared_budget.count_moves`` as the guard and reconciliation count them."""

from __future__ import annotations

import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_nanogpt import metrics
from airflow_provider_nanogpt.ledger import Budget, Ledger
from airflow_provider_nanogpt.shared_budget import count_moves

BUDGET = Budget("team video", "day", 10**12, "UTC")
IDS = ("a", "b")
# A step: (reservation, operation, amount in micro-USD or None: no USD charge known).
steps = st.lists(
    st.tuples(
        st.sampled_from(IDS),
        st.sampled_from(("reserve", "settle", "final", "release")),
        st.one_of(st.none(), st.integers(min_value=0, max_value=2_000_000)),
    ),
    max_size=12,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=steps)
def test_the_metrics_add_up_to_the_ledger(
    plan: list[tuple[str, str, int | None]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}")
    sent: dict[tuple[str, str], int] = defaultdict(int)

    def incr(name: str, count: int, tags: dict[str, str]) -> None:
        assert tags["budget"] == "team_video" and tags["period"] == "day"
        assert count > 0  # a counter only ever grows
        sent[(name, tags.get("from", ""))] += count

    monkeypatch.setattr(metrics, "_incr", incr)
    for rid, operation, amount in plan:
        if operation == "reserve":
            estimate = 350_000 if amount is None else amount
            held = ledger.reserve(rid, rid, [BUDGET], estimate, sent=True)
            if not held.reused:
                metrics.budget_reserved("c", BUDGET.name, BUDGET.period, estimate)
        elif operation == "settle":
            count_moves("c", ledger.settle(rid, amount), "settled", amount)
        elif operation == "final":  # NanoGPT's final cost, counted only where it is higher
            final = 300_000 if amount is None else amount
            before = ledger.state_of(rid)
            moved = ledger.settle_final(rid, final, "run")
            count_moves("c", moved, "settled", final, raise_only=True)
            for budget_key, (state, _, charged) in before.items():
                if state == "settled":  # never lowered
                    assert ledger.state_of(rid)[budget_key][2] == max(charged or 0, final)
        else:
            count_moves("c", ledger.release(rid), "released")

        spent = (
            sent[(metrics.BUDGET_SETTLED_USD_MICROS, "")]
            - sent[(metrics.BUDGET_RELEASED_USD_MICROS, "spend")]
        )
        assert spent == ledger.use(BUDGET).spent_micro, plan
        # Nothing released from a reservation that was never made.
        released = sent[(metrics.BUDGET_RELEASED_USD_MICROS, "reservation")]
        assert released <= sent[(metrics.BUDGET_RESERVED_USD_MICROS, "")]


@pytest.mark.parametrize(
    ("final", "counted", "more"), [(300_000, 350_000, 0), (400_000, 400_000, 50_000)]
)
def test_a_final_cost_counts_only_above_the_pre_charge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, final: int, counted: int, more: int
) -> None:
    # NanoGPT's docs do not say a lower final cost is given back: the pre-charge stays spent.
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.db'}")
    sent: list[tuple[str, int, dict[str, Any]]] = []
    monkeypatch.setattr(metrics, "_incr", lambda *args: sent.append(args))
    ledger.reserve("a", "a", [BUDGET], 700_000, sent=True)
    count_moves("c", ledger.settle("a", 350_000), "settled", 350_000)  # the pre-charge
    moved = ledger.settle_final("a", final, "run-a")
    count_moves("c", moved, "settled", final, raise_only=True)
    assert [(name, count, tags.get("from")) for name, count, tags in sent] == [
        (metrics.BUDGET_SETTLED_USD_MICROS, 350_000, None),
        *([(metrics.BUDGET_SETTLED_USD_MICROS, more, None)] if more else []),
    ]
    assert ledger.use(BUDGET).spent_micro == counted
