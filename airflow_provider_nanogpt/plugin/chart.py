"""Spend per day as bar charts the server draws (inline SVG): one chart per currency.

Only geometry is computed here; ``templates/spend_chart.html`` writes the SVG. No JavaScript.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

# A quarter of a year of bars still reads; a longer range shows its last days (the table has all).
MAX_CHART_DAYS = 92
WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 64, 8, 10, 30
PLOT_WIDTH, PLOT_HEIGHT = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


@dataclass(frozen=True)
class Bar:
    day: str
    amount: float
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Chart:
    currency: str
    bars: list[Bar]
    top: float  # the y axis' highest value
    ticks: list[tuple[float, float]]  # (value, y) of each y axis label
    x_labels: list[tuple[str, float]]  # (day, x) of each x axis label
    total: float
    first_day: str
    last_day: str
    note: str | None  # when the range was cut to the chart's last days


def spend_charts(
    by_day: dict[str, dict[str, float]], since: date | None, until: date | None
) -> list[Chart]:
    """One chart per currency of ``by_day`` (day -> currency -> sum), over the filtered range:
    every day from ``since`` (else the first day with spend) to ``until`` (else the last)."""
    if not by_day:
        return []
    spent_days = sorted(date.fromisoformat(day) for day in by_day)
    first, last = since or spent_days[0], until or spent_days[-1]
    note = None
    if (last - first).days + 1 > MAX_CHART_DAYS:
        # A wide filter (or none at one end): the days around the spend are what matter.
        first, last = max(first, spent_days[0]), min(last, spent_days[-1])
    if (last - first).days + 1 > MAX_CHART_DAYS:
        first = last - timedelta(days=MAX_CHART_DAYS - 1)
        note = f"The chart shows the last {MAX_CHART_DAYS} days; the table lists every day."
    days = [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
    currencies = sorted({currency for sums in by_day.values() for currency in sums})
    return [_chart(currency, days, by_day, note) for currency in currencies]


def _chart(
    currency: str, days: list[str], by_day: dict[str, dict[str, float]], note: str | None
) -> Chart:
    amounts = [by_day.get(day, {}).get(currency, 0.0) for day in days]
    top = _nice_ceiling(max(amounts))
    slot = PLOT_WIDTH / len(days)
    width = max(1.0, slot * 0.8)
    bars = []
    for n, (day, amount) in enumerate(zip(days, amounts, strict=True)):
        height = PLOT_HEIGHT * amount / top
        x = LEFT + n * slot + (slot - width) / 2
        bars.append(Bar(day, amount, x, TOP + PLOT_HEIGHT - height, width, height))
    ticks = [(top * k / 2, TOP + PLOT_HEIGHT * (1 - k / 2)) for k in range(3)]
    # The first and last day, and the middle one when there is room between them.
    label_at = sorted({0, len(days) - 1} | ({len(days) // 2} if len(days) >= 9 else set()))
    x_labels = [(days[n], LEFT + (n + 0.5) * slot) for n in label_at]
    return Chart(currency, bars, top, ticks, x_labels, sum(amounts), days[0], days[-1], note)


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at least ``value`` (1 for nothing)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power * (1 + 1e-9):
            return float(step * power)
    return float(10 * power)
