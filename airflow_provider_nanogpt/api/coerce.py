"""Lenient readers for JSON values whose types NanoGPT's docs disagree on (numbers as strings…)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


def as_str(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def as_number(value: object) -> float | None:
    """A finite number from a JSON number or numeric string; NaN, infinities and junk are absent."""
    if isinstance(value, bool):
        return None
    number: float
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def as_mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def first_str(*values: object) -> str | None:
    return next((v for v in map(as_str, values) if v is not None), None)


def first_number(*values: object) -> float | None:
    return next((v for v in map(as_number, values) if v is not None), None)


def as_amount(value: object) -> float | None:
    """A finite, non-negative number (money, progress, seconds); anything else is absent."""
    number = as_number(value)
    return number if number is not None and number >= 0 else None


def first_amount(*values: object) -> float | None:
    return next((v for v in map(as_amount, values) if v is not None), None)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced, whatever Airflow's log masker does later."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def scrub_decoded(value: Any, secrets: Iterable[str]) -> Any:
    """A decoded JSON value with every secret replaced in every string, keys included.

    Run after decoding: a server can spell a secret with JSON escapes (``\\u0061`` for ``a``) that
    no scrub of the raw body matches, and that decoding turns back into the secret itself.
    """
    secrets = tuple(secrets)
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, Mapping):
        return {scrub(str(k), secrets): scrub_decoded(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_decoded(item, secrets) for item in value]
    return value


def snippet(value: object, limit: int = 80) -> str:
    """A short description of an unexpected JSON value, for an error message."""
    if value is None:
        return "null"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, bool | int | float):
        return f"the {type(value).__name__} {value!r}"[:limit]
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
