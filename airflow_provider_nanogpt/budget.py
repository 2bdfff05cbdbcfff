"""Cost guards: check the balance and estimate the price before paying for a video.

NanoGPT has no cost-estimate endpoint for video; the estimate comes from the ``pricing`` object of
``GET /api/v1/video-models``, whose shape varies by model (flat per generation, per second, per
resolution tier, per duration step, per resolution and second). Where the request leaves a priced
dimension open, the most expensive option is assumed, so the guard can only err on the safe side.
An unreadable pricing object gives no estimate, and ``max_cost_usd`` then fails closed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from airflow_provider_nanogpt.api.coerce import as_amount, as_mapping
from airflow_provider_nanogpt.api.responses import VideoModel
from airflow_provider_nanogpt.exceptions import NanoGPTBudgetError, NanoGPTResponseError
from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
from airflow_provider_nanogpt.validation import LENGTH_FIELDS

_PRO_FIELDS = ("pro", "pro_mode")


def _as_seconds(value: object) -> float | None:
    """A length from 5, "5" or Veo's "5s"; anything else is not a length."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and (match := re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*s?\s*", value)):
        return float(match.group(1))
    return None


def requested_seconds(payload: Mapping[str, Any], model: VideoModel | None = None) -> float | None:
    """The video's length as NanoGPT will read it, or None when that cannot be told.

    The model's catalog entry says which length field it reads (``duration``, or Sora's
    ``seconds``): a request may carry both (the operator's ``duration`` and ``seconds`` in
    ``extra_params``), and the declared one is what counts; unset, the longest of its declared
    values (its declared default is not trusted with money). A length given only in a field the
    entry does not declare may or may not be read: that cannot be told.
    When the entry declares neither, every length given must agree. None makes a per-second price
    fail closed and a per-duration price take its dearest step.
    """
    declared = model.supported_parameters if model is not None else {}
    fields = [name for name in LENGTH_FIELDS if name in declared]
    given = {name: payload[name] for name in LENGTH_FIELDS if payload.get(name) is not None}
    if fields and not any(name in given for name in fields):
        if given:
            return None  # only in a field this model may ignore
        return _longest_declared(declared, fields)
    lengths = {_as_seconds(value) for name, value in given.items() if not fields or name in fields}
    return lengths.pop() if len(lengths) == 1 else None


def _longest_declared(declared: Mapping[str, Any], fields: list[str]) -> float | None:
    """The longest length the declared fields allow, or None when one of them lists none."""
    longest: float | None = None
    for name in fields:
        values = as_mapping(declared[name]).get("values")
        lengths = [_as_seconds(v) for v in values] if isinstance(values, list) and values else []
        if not lengths or None in lengths:
            return None
        longest = max(x for x in [longest, *lengths] if x is not None)
    return longest


def _tier(table: Mapping[str, Any], key: str | None) -> float | None:
    """The price for ``key`` in a tier table, or the dearest tier when the key is unset.

    An unreadable price (not finite, negative, not a number) gives no estimate: it might be the
    dearest.
    """
    prices = {str(k): as_amount(v) for k, v in table.items()}
    if key is not None:
        return prices.get(str(key))  # a tier the catalog does not price: no honest estimate
    if not prices or None in prices.values():
        return None
    return max(p for p in prices.values() if p is not None)


# The pricing shapes the catalog uses, in the order they are tried.
_SHAPES = (
    "per_generation",
    "per_second",
    "per_resolution",
    "per_duration",
    "per_resolution_per_second",
)


def estimate_cost(model: VideoModel, payload: Mapping[str, Any]) -> float | None:
    """Upper-bound USD estimate for this request, or None when the pricing cannot be read.

    Every figure must be a finite, non-negative number in USD; anything else gives no estimate,
    so ``max_cost_usd`` fails closed.
    """
    pricing = model.pricing
    if pricing.get("currency", "USD") != "USD":
        return None
    seconds = requested_seconds(payload, model)
    resolution = payload.get("resolution")
    resolution_key = resolution if isinstance(resolution, str) else None
    shape = next((key for key in _SHAPES if pricing.get(key) is not None), None)
    value = pricing.get(shape) if shape else None
    estimate: float | None = None
    if shape == "per_generation":
        estimate = as_amount(value)
    elif shape == "per_second":
        rate = as_amount(value)
        estimate = rate * seconds if rate is not None and seconds is not None else None
    elif shape is not None and (table := as_mapping(value)):
        if shape == "per_duration":
            estimate = _tier(table, None if seconds is None else f"{seconds:g}")
        else:
            rate = _tier(table, resolution_key)
            per_second = shape == "per_resolution_per_second"
            estimate = (
                rate
                if not per_second
                else (rate * seconds if rate is not None and seconds is not None else None)
            )
    if estimate is not None and any(payload.get(field) for field in _PRO_FIELDS):
        estimate *= 2  # pro mode doubles the price (documented for Hunyuan; assumed elsewhere)
    # To the micro-dollar, as prices are quoted: 0.1 * 12 is $1.20, not a hair above a $1.20 cap.
    return None if estimate is None else round(estimate, 6)


# What a template renders when the value it reads is missing (text rendering, native rendering).
_RENDERED_NOTHING = frozenset({"", "none"})


def guard_amount(name: str, value: object, *, given: bool) -> float | None:
    """The amount of the money guard ``name`` as rendered, or None when it was never set.

    A guard that was set (``given``) must come out as a finite amount >= 0: a template that
    renders to nothing (``""``, ``"None"``, None, blanks: a missing param) or to junk would
    otherwise turn the guard off without a word, so it raises NanoGPTBudgetError instead.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in _RENDERED_NOTHING):
        if not given:
            return None
        raise NanoGPTBudgetError(
            f"{name} was set but rendered to {value!r}, so it would guard nothing; check the "
            "template and the param or conf value it reads. Nothing was submitted."
        )
    amount: float | None = None
    if not isinstance(value, bool):
        try:
            amount = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            amount = None
    if amount is None or not (math.isfinite(amount) and amount >= 0):
        raise NanoGPTBudgetError(
            f"{name}={value!r} is not a finite amount >= 0, so it cannot guard anything; "
            "nothing was submitted."
        )
    return amount


def enforce_budget(
    hook: NanoGPTHook,
    payload: Mapping[str, Any],
    *,
    min_balance_usd: float | None,
    max_cost_usd: float | None,
    log: Any,
) -> float | None:
    """Raise NanoGPTBudgetError before any submission that would break a guard.

    Returns the cost estimate when ``max_cost_usd`` is set.
    """
    model_id = str(payload.get("model"))
    min_balance_usd = guard_amount("min_balance_usd", min_balance_usd, given=False)
    max_cost_usd = guard_amount("max_cost_usd", max_cost_usd, given=False)
    if min_balance_usd is not None:
        try:
            balance = hook.get_balance().usd
        except NanoGPTResponseError as exc:
            raise NanoGPTBudgetError(
                f"Cannot check min_balance_usd=${min_balance_usd:.2f}: {exc}. Nothing was "
                "submitted."
            ) from exc
        if balance < min_balance_usd:
            raise NanoGPTBudgetError(
                f"NanoGPT balance ${balance:.2f} is below min_balance_usd=${min_balance_usd:.2f}; "
                "nothing was submitted. Top up the account or lower the threshold."
            )
        log.info("NanoGPT balance $%.2f (minimum $%.2f).", balance, min_balance_usd)
    if max_cost_usd is None:
        return None
    model = _catalog_entry(hook, model_id)
    estimate = estimate_cost(model, payload) if model is not None else None
    if estimate is None:
        raise NanoGPTBudgetError(
            f"Cannot estimate the cost of a {model_id} video from NanoGPT's model catalog "
            f"(pricing: {dict(model.pricing) if model else 'model not listed'}), so "
            f"max_cost_usd=${max_cost_usd:.2f} cannot be enforced; nothing was submitted. "
            "Set duration/resolution, or drop max_cost_usd to proceed without a cost cap."
        )
    if estimate > max_cost_usd:
        raise NanoGPTBudgetError(
            f"Estimated cost ${estimate:.4f} of this {model_id} video exceeds "
            f"max_cost_usd=${max_cost_usd:.2f}; nothing was submitted."
        )
    log.info("Estimated cost $%.4f (limit $%.2f).", estimate, max_cost_usd)
    return estimate


def _catalog_entry(hook: NanoGPTHook, model_id: str) -> VideoModel | None:
    return next((m for m in hook.list_video_models() if m.id == model_id), None)


def estimate_for(hook: NanoGPTHook, payload: Mapping[str, Any]) -> float | None:
    """The upper-bound USD estimate of ``payload`` from NanoGPT's catalog (None: unknown)."""
    model = _catalog_entry(hook, str(payload.get("model")))
    return estimate_cost(model, payload) if model is not None else None
