"""Headless Chromium for the UI tests: Debian's ``chromium`` package, driven by Playwright.

Playwright's own browser download is unreachable here, so it is pointed at the system binary
(``executable_path``); the package is installed with apt-get when it is missing, as the e2e
suite does for PostgreSQL.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.e2e.debian import ensure_package

CANDIDATES = ("chromium", "chromium-browser")
LAUNCH_ARGS = [
    "--no-sandbox",  # the test suite runs as root in CI containers
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--no-first-run",
]


class ChromiumUnavailable(RuntimeError):
    """Chromium is not installed and could not be installed."""


def find_chromium() -> Path | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def ensure_chromium() -> Path:
    """The Chromium binary, installing Debian's ``chromium`` package if it is absent."""
    return ensure_package("chromium", find_chromium, ChromiumUnavailable, "Chromium")
