"""The NanoGPT page's files and chart, without a server: CSV cells, download names, bar geometry."""

from __future__ import annotations

import csv
import io
import unicodedata
from datetime import date
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_nanogpt.plugin import chart
from airflow_provider_nanogpt.plugin.export import (
    FORMULA_STARTS,
    MAX_NAME_BYTES,
    content_disposition,
    csv_cell,
    csv_lines,
    file_name,
)


def _parsed(lines: list[str]) -> list[list[str]]:
    return list(csv.reader(io.StringIO("".join(lines))))


@pytest.mark.parametrize("start", FORMULA_STARTS)
def test_text_starting_like_a_formula_gets_an_apostrophe(start: str) -> None:
    prompt = f'{start}HYPERLINK("http://evil.example","click")'
    ((cell,),) = _parsed(list(csv_lines(["prompt"], [[prompt]])))[1:]
    assert cell == "'" + prompt


@given(st.text())
def test_every_text_cell_is_kept_and_none_runs(text: str) -> None:
    cell = csv_cell(text)
    assert not cell.startswith(FORMULA_STARTS)
    assert cell in (text, "'" + text)
    # What a spreadsheet reads back is the text, behind the apostrophe where there is one.
    ((read,),) = _parsed(list(csv_lines(["x"], [[text]])))[1:] or [[""]]
    assert read == cell


@pytest.mark.parametrize(("value", "cell"), [(-0.5, "-0.5"), (3, "3"), (None, ""), (True, "true")])
def test_numbers_and_empties_are_written_as_they_are(value: object, cell: str) -> None:
    assert csv_cell(value) == cell


HOSTILE_IDS = [
    'say "hi"',
    "../../etc/passwd",
    "a\\b/c:d*e?f<g>h|i",
    "line\r\nContent-Type: text/html",
    "vidéo_日本語_🎬",
    "\u202egnp.exe",  # a right-to-left override hiding the real extension
    "...",
    "CON",
    "x" * 400,
    "",
]
FORBIDDEN = set('/\\:*?"<>|')


def _check_name(name: str, extension: str) -> None:
    assert name.endswith(extension)
    assert not FORBIDDEN & set(name)
    assert all(unicodedata.category(ch) not in ("Cc", "Cf") for ch in name)
    assert not name.startswith((".", " "))
    assert len(name.encode()) <= MAX_NAME_BYTES + len(extension.encode())
    assert unicodedata.is_normalized("NFC", name)


@pytest.mark.parametrize("dag_id", HOSTILE_IDS)
@pytest.mark.parametrize("run_id", ["manual__2026-01-01T00:00:00+00:00", 'r"\n/..'])
def test_download_names_are_safe_on_every_os(dag_id: str, run_id: str) -> None:
    name = file_name([dag_id, "generate [A hummingbird / 2]", run_id], ".mp4")
    _check_name(name, ".mp4")
    header = content_disposition(name)
    header.encode("ascii")  # a header value: never raw unicode, never a line break
    assert "\r" not in header and "\n" not in header
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert not {'"', "\\", ";"} & set(fallback)
    assert unquote(header.split("filename*=UTF-8''", 1)[1]) == name  # RFC 6266: the exact name


@given(st.lists(st.text(), min_size=1, max_size=4))
def test_any_ids_give_a_safe_name(parts: list[str]) -> None:
    _check_name(file_name(parts, ".mp4"), ".mp4")


def test_a_name_keeps_its_dag_task_and_run() -> None:
    name = file_name(["vidéos", "generate [Neon-lit alley]", "manual__2026-01-01T00:00:00"], ".mp4")
    assert name == "vidéos__generate [Neon-lit alley]__manual__2026-01-01T00_00_00.mp4"
    assert 'filename="vid_os__generate_Neon-lit_alley_' in content_disposition(name)


def test_bars_are_as_tall_as_the_spend_and_cover_the_range() -> None:
    by_day = {"2026-03-05": {"USD": 0.5, "XNO": 2.0}, "2026-03-02": {"USD": 1.25}}
    usd, xno = chart.spend_charts(by_day, date(2026, 3, 1), date(2026, 3, 7))
    assert (usd.currency, xno.currency) == ("USD", "XNO")
    assert [bar.day for bar in usd.bars] == [f"2026-03-0{n}" for n in range(1, 8)]
    assert {bar.day: bar.amount for bar in usd.bars if bar.amount} == {
        "2026-03-02": 1.25,
        "2026-03-05": 0.5,
    }
    assert usd.top == 2.0 and usd.total == 1.75
    for bar in usd.bars:
        assert bar.height == pytest.approx(chart.PLOT_HEIGHT * bar.amount / usd.top)
        assert bar.y + bar.height == pytest.approx(chart.TOP + chart.PLOT_HEIGHT)
    assert [bar.x for bar in usd.bars] == sorted(bar.x for bar in usd.bars)


def test_a_range_too_long_to_draw_shows_the_days_around_the_spend() -> None:
    by_day = {"2026-01-10": {"USD": 1.0}, "2026-02-10": {"USD": 2.0}}
    (wide,) = chart.spend_charts(by_day, date(2000, 1, 1), date(9999, 12, 31))
    assert (wide.first_day, wide.last_day, wide.note) == ("2026-01-10", "2026-02-10", None)
    far = {"2025-01-01": {"USD": 1.0}, "2026-01-01": {"USD": 1.0}}
    (cut,) = chart.spend_charts(far, None, None)
    assert len(cut.bars) == chart.MAX_CHART_DAYS and cut.last_day == "2026-01-01"
    assert cut.note is not None
    assert chart.spend_charts({}, None, None) == []
