"""The release tests: the distributions are built once per session, into a scratch directory.

Tests marked ``wheel`` build and install the distributions; they run only when ``-m`` names the
marker (``make wheel-test``), so the editable suites (``pytest -q``, ``pytest -m "not e2e and not
slow"``) leave them out instead of running them once per suite.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from scripts.environments import lock_file, makefile_airflow_versions, running_python
from tests.release.support import (
    REPO,
    WHEEL_PYTHON_ENV,
    WHEEL_PYTHON_VERSION,
    Dists,
    find_wheel_python,
    tail,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "wheel" in (config.getoption("markexpr") or ""):
        return  # `-m wheel` selects them, `-m "not wheel"` deselects them itself
    wheel_items = [item for item in items if item.get_closest_marker("wheel")]
    if wheel_items:
        config.hook.pytest_deselected(items=wheel_items)
        items[:] = [item for item in items if not item.get_closest_marker("wheel")]


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    """``python -m build`` of the checkout: the sdist, and the wheel built from that sdist."""
    for module in ("build", "twine"):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"{module} is not installed: pip install -e '.[dev]'", pytrace=False)
    out = tmp_path_factory.mktemp("dist")
    # The isolated build environment takes the build backend pinned by the checkout's lock.
    lock = lock_file(makefile_airflow_versions()[0], running_python())
    assert lock.is_file(), f"no lock for Python {running_python()}: make lock writes it"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        cwd=out,
        env={**os.environ, "PIP_CONSTRAINT": str(lock)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if built.returncode != 0:
        pytest.fail(
            f"python -m build failed:\n{tail(built.stdout)}\n{tail(built.stderr)}", pytrace=False
        )
    wheels = sorted(out.glob("*.whl"))
    sdists = sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return Dists(wheel=wheels[0], sdist=sdists[0])


@pytest.fixture(scope="session")
def wheel_python() -> str:
    """Python 3.12 for the wheel virtualenvs. Missing, the test fails and says so: never a skip."""
    found, looked_at = find_wheel_python()
    if found is None:
        pytest.fail(
            f"The wheel test installs the wheel with Python {WHEEL_PYTHON_VERSION} (the official "
            f"Airflow image's default), and there is none that works here. Looked at: "
            f"{', '.join(looked_at) or 'nothing'}. Install Python {WHEEL_PYTHON_VERSION} "
            f"(e.g. `pyenv install {WHEEL_PYTHON_VERSION}`) or point {WHEEL_PYTHON_ENV} "
            f"(make WHEEL_PYTHON=...) at one.",
            pytrace=False,
        )
    return found
