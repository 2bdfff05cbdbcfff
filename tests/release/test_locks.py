"""The lock files in constraints/: every environment `make test` builds installs from them.

Fast, in the editable suites: the running virtualenv is checked against its own lock, so a
Makefile that stopped passing the lock (or a lock nobody installs from) fails here.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement

from airflow_provider_nanogpt import __version__ as provider_version
from scripts.environments import (
    REPO,
    SUPPORTED_PYTHONS,
    known_breaks_file,
    lock_file,
    makefile_airflow_versions,
    running_python,
)
from scripts.lock import PROJECT, normalise, read_pins

LOCKS = [
    (airflow, python) for airflow in makefile_airflow_versions() for python in SUPPORTED_PYTHONS
]


def _make_variables(*names: str) -> list[str]:
    """What the Makefile itself computes for these variables, for this interpreter."""
    show = "show-variables: ; @echo " + " ".join(f"$({name})" for name in names)
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-s",
            f"PYTHON={sys.executable}",
            f"--eval={show}",
            "show-variables",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def _pip_installs(target: str) -> list[list[str]]:
    """The `pip install` commands `make <target>` runs to build its virtualenv, split into words.

    ``-B`` prints the whole build whether or not the virtualenv is already up to date.
    """
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", f"PYTHON={sys.executable}", target],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    commands = [shlex.split(line) for line in done.stdout.splitlines()]
    return [words for words in commands if words[0].endswith("/bin/pip") and "install" in words]


@pytest.mark.parametrize(
    ("target", "extras"),
    [("venv", "[dev]"), ("floor-venv", "[dev]"), ("demo", "")],
)
def test_each_virtualenv_installs_its_extras_from_its_lock(target: str, extras: str) -> None:
    """make demo installs Airflow and the provider alone; the test virtualenvs add the dev extra.

    The demo's virtualenv would otherwise take the dev extra's browsers, Celery and database
    drivers, minutes of installing before a first video that needs none of them.
    """
    current, floor = makefile_airflow_versions()
    airflow = floor if target == "floor-venv" else current
    lock = str(lock_file(airflow, running_python()).relative_to(REPO))
    installs = _pip_installs(target)
    assert installs, f"make {target} builds no virtualenv"
    for words in installs:
        assert words[words.index("--constraint") + 1] == lock
    provider = installs[-1]
    assert provider[provider.index("-e") + 1] == f".{extras}"
    assert f"apache-airflow=={airflow}" in provider


def test_supported_pythons_are_the_classifiers() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    classified = {
        c.rsplit(" :: ", 1)[1]
        for c in pyproject["project"]["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert classified == set(SUPPORTED_PYTHONS)


def test_the_makefile_installs_from_the_locks_the_scripts_name() -> None:
    current, floor = makefile_airflow_versions()
    python = running_python()
    assert _make_variables("LOCK", "FLOOR_LOCK") == [
        str(lock_file(current, python).relative_to(REPO)),
        str(lock_file(floor, python).relative_to(REPO)),
    ]


@pytest.mark.parametrize(("airflow", "python"), LOCKS, ids=lambda v: v)
def test_each_lock_pins_a_whole_environment(airflow: str, python: str) -> None:
    path = lock_file(airflow, python)
    assert path.is_file(), f"{path} is missing: make lock writes it"
    pins = read_pins(path)
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    assert len(lines) == len(pins), "every line of a lock is an exact pin"
    assert pins["apache-airflow"] == airflow
    assert PROJECT not in pins, "the provider itself is never pinned: it is the checkout"
    for needed in ("pip", "hatchling", "cryptography", "apache-airflow-task-sdk", "pytest"):
        assert needed in pins, f"{path.name} does not pin {needed}"


@pytest.mark.parametrize(("airflow", "python"), LOCKS, ids=lambda v: v)
def test_each_lock_keeps_out_the_known_breaks(airflow: str, python: str) -> None:
    breaks = known_breaks_file(airflow)
    if not breaks.exists():
        pytest.skip(f"no known breaks for Airflow {airflow}")
    pins = read_pins(lock_file(airflow, python))
    caps = [
        Requirement(line)
        for line in breaks.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert caps
    for cap in caps:
        assert cap.specifier.contains(pins[normalise(cap.name)], prereleases=True), (
            f"{lock_file(airflow, python).name} pins {cap.name} {pins[normalise(cap.name)]}, "
            f"which {breaks.relative_to(REPO)} keeps out ({cap})"
        )


def test_this_environment_is_exactly_its_lock() -> None:
    """Whatever the suite runs in was installed from the lock for its Airflow and Python."""
    airflow = importlib.metadata.version("apache-airflow")
    pins = read_pins(lock_file(airflow, running_python()))
    installed = {
        normalise(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
    }
    assert installed.pop(PROJECT) == provider_version
    differing = {
        name: (version, pins.get(name))
        for name, version in installed.items()
        if pins.get(name) != version and name not in {"setuptools", "wheel"}
    }
    assert not differing, f"installed (version, locked version): {differing}"
