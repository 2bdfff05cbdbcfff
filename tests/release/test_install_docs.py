"""docs/installation.md says what works today, and what the wheel test runs.

Fast (no wheel is built): the `pip` lines the page prints are the ones the wheel test
(test_installed_wheel.py) reads from it and runs, so they are checked here for what they must say.
"""

from __future__ import annotations

import re
from pathlib import Path

from scripts.environments import SUPPORTED_PYTHONS
from tests.release.support import INSTALLATION_DOC, documented_install

CONSTRAINTS = Path("/locks/constraints-3.12.txt")
WHEEL_DIR = Path("/scratch/dist")


def test_the_documented_install_builds_the_checkout_and_installs_the_wheel_pinned() -> None:
    steps = documented_install("3.1.8", CONSTRAINTS, WHEEL_DIR, source=Path("/checkout"))
    assert steps.build == ["pip", "wheel", "--no-deps", "--wheel-dir", str(WHEEL_DIR), "/checkout"]
    assert steps.airflow == [
        "pip",
        "install",
        "apache-airflow==3.1.8",
        "--constraint",
        str(CONSTRAINTS),
    ]
    # The wheel the build made, next to the Airflow the first install pinned: never from PyPI.
    assert steps.provider[:3] == ["pip", "install", "apache-airflow==3.1.8"]
    assert steps.provider[3:] == [str(WHEEL_DIR / "airflow_provider_nanogpt-*-py3-none-any.whl")]


def test_the_page_says_the_package_is_not_on_pypi_and_labels_the_pypi_lines() -> None:
    page = INSTALLATION_DOC.read_text()
    assert "**The package is not on PyPI yet**" in page
    # Every command installing the provider by name sits under the "once published" heading.
    published = page.index("### Once published on PyPI")
    next_section = page.index("\n### ", published + 1)
    by_name = [
        m.start() for m in re.finditer(r"^ *pip install [^\n]*airflow-provider-nanogpt", page, re.M)
    ]
    assert by_name
    assert all(published < at < next_section for at in by_name), by_name
    # The Dockerfile copies the wheel in.
    assert "COPY dist/airflow_provider_nanogpt-*-py3-none-any.whl /tmp/" in page


def test_the_python_versions_the_page_names_are_the_supported_ones() -> None:
    """SUPPORTED_PYTHONS is the classifiers (test_locks.py) and each has its own locks."""
    row = next(
        line for line in INSTALLATION_DOC.read_text().splitlines() if line.startswith("| Python |")
    )
    supported_cell = row.split("|")[2]
    assert re.findall(r"3\.\d+", supported_cell) == list(SUPPORTED_PYTHONS)
    assert "later" not in supported_cell
