"""Typed readings of NanoGPT's non-status responses: submit, balance, models, recover."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from airflow_provider_nanogpt.api.coerce import as_amount, as_mapping, as_str, snippet
from airflow_provider_nanogpt.api.status import VideoState, parse_state
from airflow_provider_nanogpt.exceptions import NanoGPTResponseError


@dataclass(frozen=True)
class Submission:
    """What NanoGPT answered when a job was created (``cost`` is the pre-charge)."""

    run_id: str
    model: str | None
    status: str | None = None
    cost: float | None = None
    payment_source: str | None = None
    remaining_balance: float | None = None
    # True when the run was found through ``recover`` after an ambiguous submit failure.
    recovered: bool = False

    @property
    def currency(self) -> str | None:
        """The currency of ``cost`` and ``remaining_balance``: what the job was paid from."""
        return currency_of(self.payment_source)

    def to_xcom(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("status")
        data["currency"] = self.currency
        return data


# paymentSource values that name a currency ("balance", in an old example, does not).
KNOWN_CURRENCIES = frozenset({"USD", "XNO"})


def currency_of(payment_source: str | None) -> str | None:
    code = (payment_source or "").strip().upper()
    return code if code in KNOWN_CURRENCIES else None


@dataclass(frozen=True)
class Balance:
    usd: float
    nano: float | None = None


@dataclass(frozen=True)
class VideoModel:
    id: str
    name: str | None = None
    pricing: Mapping[str, Any] = field(default_factory=dict)
    capabilities: Mapping[str, Any] = field(default_factory=dict)
    supported_parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecoveredRun:
    run_id: str
    model: str | None
    state: VideoState
    created_at: str | None = None
    conversation_uuid: str | None = None


def parse_submission(body: object) -> Submission:
    if not isinstance(body, Mapping):
        raise NanoGPTResponseError("NanoGPT's submit response is not a JSON object")
    run_id = as_str(body.get("runId")) or as_str(body.get("id"))
    if not run_id:
        raise NanoGPTResponseError("NanoGPT accepted the video but returned no runId")
    return Submission(
        run_id=run_id,
        model=as_str(body.get("model")),
        status=as_str(body.get("status")),
        cost=as_amount(body.get("cost")),
        payment_source=as_str(body.get("paymentSource")),
        remaining_balance=as_amount(body.get("remainingBalance")),
    )


def parse_balance(body: object) -> Balance:
    if not isinstance(body, Mapping):
        raise NanoGPTResponseError("NanoGPT's balance response is not a JSON object")
    usd = as_amount(body.get("usd_balance"))
    if usd is None:
        raise NanoGPTResponseError(
            "NanoGPT's balance response has no finite, non-negative usd_balance (it gave "
            f"{snippet(body.get('usd_balance'))})"
        )
    return Balance(usd=usd, nano=as_amount(body.get("nano_balance")))


def parse_video_models(body: object) -> list[VideoModel]:
    entries = body.get("data") if isinstance(body, Mapping) else body
    if not isinstance(entries, list):
        raise NanoGPTResponseError("NanoGPT's video-models response has no data list")
    models = []
    for entry in entries:
        if not isinstance(entry, Mapping) or not as_str(entry.get("id")):
            continue
        models.append(
            VideoModel(
                id=str(entry["id"]),
                name=as_str(entry.get("name")),
                pricing=as_mapping(entry.get("pricing")),
                capabilities=as_mapping(entry.get("capabilities")),
                supported_parameters=as_mapping(entry.get("supported_parameters")),
            )
        )
    return models


def parse_recovered_runs(body: object) -> list[RecoveredRun]:
    entries = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(entries, list):
        raise NanoGPTResponseError("NanoGPT's recover response has no data list")
    runs = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        run_id = as_str(entry.get("runId")) or as_str(entry.get("id"))
        if not run_id:
            continue
        runs.append(
            RecoveredRun(
                run_id=run_id,
                model=as_str(entry.get("model")),
                state=parse_state(entry.get("status")),
                created_at=as_str(entry.get("createdAt")),
                conversation_uuid=as_str(entry.get("conversationUUID")),
            )
        )
    return runs


# Where an entry of the usage answer may carry its spend and refunds (its shape is undocumented).
_USAGE_LISTS = ("data", "usage", "days", "items", "results")
_SPEND_FIELDS = ("spend", "cost", "total_cost", "totalCost", "amount", "usd", "spend_usd")
_REFUND_FIELDS = ("refunds", "refunded", "refund", "refunds_usd")


def parse_usage_usd(body: object) -> Decimal:
    """The USD the key spent, net of refunds, summed over a ``GET /api/v1/usage`` answer.

    NanoGPT does not document the body, so this reads it defensively and refuses rather than
    guesses: no list of entries, an entry without a spend figure, a figure that is not a finite
    amount >= 0, or a currency other than USD (stated at the top or per entry, and required)
    raises NanoGPTResponseError.
    """
    entries = body if isinstance(body, list) else None
    top: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    for key in _USAGE_LISTS:
        if entries is None and isinstance(top.get(key), list):
            entries = top[key]
    if entries is None:
        raise NanoGPTResponseError(f"NanoGPT's usage answer has no list of days: {snippet(body)}")
    total = Decimal(0)  # exact: money is never summed in floats
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise NanoGPTResponseError(f"NanoGPT's usage entry is not an object: {snippet(entry)}")
        currency = as_str(entry.get("currency")) or as_str(top.get("currency"))
        if (currency or "").strip().upper() != "USD":
            raise NanoGPTResponseError(
                f"NanoGPT's usage entry is not stated in USD (currency={currency!r})"
            )
        spend = _usage_amount(entry, _SPEND_FIELDS, required=True)
        total += spend - _usage_amount(entry, _REFUND_FIELDS, required=False)
    return max(Decimal(0), total)


def _usage_amount(entry: Mapping[str, Any], fields: tuple[str, ...], *, required: bool) -> Decimal:
    present = [name for name in fields if entry.get(name) is not None]
    if not present:
        if required:
            raise NanoGPTResponseError(f"NanoGPT's usage entry has no spend: {snippet(entry)}")
        return Decimal(0)
    amount = as_amount(entry[present[0]])
    if amount is None:
        raise NanoGPTResponseError(
            f"NanoGPT's usage entry has {present[0]}={snippet(entry[present[0]])}, not a finite "
            "amount >= 0"
        )
    return Decimal(str(amount))
