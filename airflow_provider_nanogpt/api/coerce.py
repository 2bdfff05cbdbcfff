"""Lenient readers for JSON values whose types NanoGPT's docs disagree on (numbers as strings…)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def as_str(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def as_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def as_mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def first_str(*values: object) -> str | None:
    return next((v for v in map(as_str, values) if v is not None), None)


def first_number(*values: object) -> float | None:
    return next((v for v in map(as_number, values) if v is not None), None)
