"""The README's performance figures are docs/performance.md's measured ones, each labelled.

The README quotes two kinds of figure: the real deployment's (the Celery scale-out run, under
"## Scale-out" in docs/performance.md) and the in-process benchmark's (the rest of that page).
Every number the README quotes under a label is written, exactly so, in its part of the page: a
figure nobody measured, or one taken from the other kind of run, fails.
"""

from __future__ import annotations

import re

from tests.conftest import REPO

# 1.90, 144, 1.135 and 1000; not a version like 3.3.2 (neither side touches a digit or a dot-digit).
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w]|\.\d)")
_DEPLOYMENT = "**Real deployment**"
_IN_PROCESS = "**In-process benchmark**"


def _readme_figures() -> tuple[str, str]:
    """The README's deployment part and in-process part of its Performance bullet."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("- [Performance](docs/performance.md)")
    following_bullet = re.compile(r"^- ", re.MULTILINE).search(readme, start + 1)
    assert following_bullet is not None
    paragraph = readme[start : following_bullet.start()]
    deployment, in_process = paragraph.index(_DEPLOYMENT), paragraph.index(_IN_PROCESS)
    assert deployment < in_process
    return paragraph[deployment:in_process], paragraph[in_process:]


def _measured() -> tuple[set[str], set[str]]:
    """Numbers written in the scale-out section, and in the rest of docs/performance.md."""
    page = (REPO / "docs" / "performance.md").read_text(encoding="utf-8")
    start = page.index("## Scale-out")
    following = page.find("\n## ", start + 1)
    section = page[start : following if following != -1 else len(page)]
    rest = page[:start] + (page[following:] if following != -1 else "")
    return set(_NUMBER.findall(section)), set(_NUMBER.findall(rest))


def test_the_readme_quotes_the_deployment_slot_time_beside_the_in_process_one() -> None:
    deployment, in_process = _readme_figures()
    assert "slot per video" in deployment
    assert "slot-seconds per" in in_process


def test_every_figure_the_readme_quotes_was_measured_in_that_kind_of_run() -> None:
    deployment, in_process = _readme_figures()
    deployment_measured, in_process_measured = _measured()
    assert [n for n in _NUMBER.findall(deployment) if n not in deployment_measured] == []
    assert [n for n in _NUMBER.findall(in_process) if n not in in_process_measured] == []
