"""Lenient readers for JSON values whose types NanoGPT's docs disagree on (numbers as strings…)."""

from __future__ import annotations

import math
from collections.abc import Mapping
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
