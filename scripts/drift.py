"""`make drift`: what would break for someone who installs without constraints today.

For each Airflow version, on the Python that runs it: resolve the newest releases pyproject.toml
allows (no lock, no known-breaks caps), build a virtualenv from that resolution with the same
Makefile recipe as `make test`, and run the fast suites there. When a suite fails, bisect the
packages that differ from the lock (each reverted to its locked version in turn, only the failing
tests re-run) and name the release that breaks them. Not part of `make test`: its answer changes
with the package index, not with this repository. Everything it writes goes to .drift/.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from scripts.environments import (
    REPO,
    known_breaks_file,
    lock_file,
    makefile_airflow_versions,
    running_python,
)
from scripts.lock import normalise, read_pins, render, resolve

DRIFT = REPO / ".drift"
FAST_SUITES = [
    "-m",
    "not e2e and not slow",
    # It checks that an environment is exactly its lock: the drift environment never is.
    "--deselect",
    "tests/release/test_locks.py::test_this_environment_is_exactly_its_lock",
]
# Enough failing tests to show the break, few enough that each bisection step is quick.
BISECT_TESTS = 3
# How many failures are sorted into "from the upgrades" and "anyway" (one run, locked versions).
SORT_TESTS = 20
# Pins the bisection never swaps: the installer itself.
UNSWAPPABLE = {"pip"}
_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+?)(?: - .*)?$")


@dataclass
class Drift:
    airflow_version: str
    python_version: str
    root: Path
    locked: dict[str, str]
    newest: dict[str, str]
    failing: list[str] = field(default_factory=list)
    suite_log: Path | None = None
    culprits: list[str] = field(default_factory=list)
    not_drift: list[str] = field(default_factory=list)  # fail with the locked versions too
    verdict: str = ""

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def changed(self) -> list[str]:
        return sorted(
            name
            for name in self.locked.keys() & self.newest.keys()
            if self.locked[name] != self.newest[name] and name not in UNSWAPPABLE
        )

    def known_break(self, name: str) -> bool:
        breaks = known_breaks_file(self.airflow_version)
        listed = breaks.read_text().splitlines() if breaks.exists() else []
        return any(
            normalise(re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0]) == name
            for line in listed
            if line.strip() and not line.lstrip().startswith("#")
        )


def build(drift: Drift, constraints: Path) -> None:
    """The newest environment, built by the Makefile's own recipe with the drift resolution."""
    subprocess.run(
        [
            "make",
            "--no-print-directory",
            f"PYTHON={sys.executable}",
            f"VENV={drift.venv}",
            f"AIRFLOW_VERSION={drift.airflow_version}",
            f"LOCK={constraints}",
            "venv",
        ],
        cwd=REPO,
        check=True,
    )


def pytest_command(drift: Drift, *args: str) -> list[str]:
    return [str(drift.venv / "bin" / "pytest"), "-q", "-rfE", "-p", "no:cacheprovider", *args]


def failing_tests(output: str) -> list[str]:
    return [match.group(1) for line in output.splitlines() if (match := _FAILED.match(line))]


def bisect(drift: Drift, log: Callable[[str], None]) -> None:
    """Name the upgraded packages that make the failing tests fail.

    First the failures are sorted: run with every changed package back at its locked version,
    those that pass come from the upgrades; the rest fail anyway (a bug, a flaky test) and are
    reported as such. Then, on a few of the former: a state is the set of changed packages left
    at their newest version (the rest at their locked one). The smallest failing prefix of the
    remaining suspects ends in a culprit; with it taken out, the rest are tried again, so several
    independent breaks are all named. The environment is left at the newest versions.
    """
    installed: dict[str, str] = {}  # unknown: the first state installs every changed package

    def settle(upgraded: set[str]) -> None:
        wanted = {
            name: drift.newest[name] if name in upgraded else drift.locked[name]
            for name in drift.changed
        }
        swaps = [f"{n}=={v}" for n, v in sorted(wanted.items()) if installed.get(n) != v]
        if swaps:
            pip = str(drift.venv / "bin" / "pip")
            subprocess.run([pip, "install", "-qq", "--no-deps", *swaps], check=True)
            installed.update(wanted)

    def still_failing(upgraded: set[str], tests: list[str]) -> list[str]:
        settle(upgraded)
        run = subprocess.run(
            pytest_command(drift, *tests), cwd=REPO, capture_output=True, text=True
        )
        return failing_tests(run.stdout) if run.returncode != 0 else []

    log(f"Sorting {len(drift.failing)} failures: which pass with the locked versions?")
    drift.not_drift = still_failing(set(), drift.failing[:SORT_TESTS])
    caused = [test for test in drift.failing[:SORT_TESTS] if test not in drift.not_drift]
    if not caused:
        drift.verdict = "they fail with every package at its locked version too: not drift"
        settle(set(drift.changed))
        return
    selected = caused[:BISECT_TESTS]
    results: dict[frozenset[str], bool] = {}

    def fails(upgraded: set[str]) -> bool:
        key = frozenset(upgraded)
        if key not in results:
            results[key] = bool(still_failing(upgraded, selected))
            log(f"  {len(upgraded)} of {len(drift.changed)} upgraded: {_word(results[key])}")
        return results[key]

    log(f"Bisecting {len(drift.changed)} upgraded packages on {' '.join(selected)}")
    if not fails(set(drift.changed)):
        drift.verdict = "the failures did not happen again: flaky tests, not drift"
    remaining = list(drift.changed)
    while not drift.verdict and remaining and fails(set(remaining)):
        low, high = 1, len(remaining)
        while low < high:
            middle = (low + high) // 2
            if fails(set(remaining[:middle])):
                high = middle
            else:
                low = middle + 1
        drift.culprits.append(remaining.pop(high - 1))
    settle(set(drift.changed))


def _word(failed: bool) -> str:
    return "fails" if failed else "passes"


def report(drift: Drift) -> list[str]:
    label = f"Airflow {drift.airflow_version}, Python {drift.python_version}"
    lines = [f"## {label}", ""]
    changed = drift.changed
    added = sorted(drift.newest.keys() - drift.locked.keys())
    lines.append(f"{len(changed)} packages newer than the lock, {len(added)} new:")
    lines += [f"- {n} {drift.locked[n]} -> {drift.newest[n]}" for n in changed]
    lines += [f"- {n} {drift.newest[n]} (not in the lock)" for n in added]
    lines.append("")
    if not drift.failing:
        lines.append("The fast suites pass with the newest releases: no break.")
        return lines
    lines.append(f"{len(drift.failing)} tests fail with the newest releases ({drift.suite_log}):")
    lines += [f"- {test}" for test in drift.failing[:20]]
    lines.append("")
    if drift.not_drift:
        lines.append("These fail with the locked versions too (not drift: a bug or a flaky test):")
        lines += [f"- {test}" for test in drift.not_drift]
        lines.append("")
    for name in drift.culprits:
        known = " (known: listed in its known-breaks.txt)" if drift.known_break(name) else ""
        lines.append(
            f"BREAK: {name} {drift.newest[name]} breaks {label} "
            f"(locked: {drift.locked[name]}){known}"
        )
    if drift.verdict:
        lines.append(f"Not named: {drift.verdict}.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make drift", description=__doc__.splitlines()[0])
    parser.add_argument("--airflow", nargs="+", default=makefile_airflow_versions())
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="bisect again from the last run's environments and suite logs in .drift/",
    )
    args = parser.parse_args(argv)
    python_version = running_python()

    def log(message: str) -> None:
        print(message, flush=True)

    drifts = []
    for airflow_version in args.airflow:
        root = DRIFT / airflow_version
        root.mkdir(parents=True, exist_ok=True)
        constraints = root / f"constraints-{python_version}.txt"
        if not args.reuse:
            log(f"Resolving the newest releases for Airflow {airflow_version}")
            rendered = render(resolve(airflow_version, sys.executable, apply_known_breaks=False))
            if not constraints.exists() or constraints.read_text() != rendered:
                constraints.write_text(rendered)  # unchanged, the built environment is kept
        locked = read_pins(lock_file(airflow_version, python_version))
        drift = Drift(airflow_version, python_version, root, locked, read_pins(constraints))
        if not args.reuse:
            build(drift, constraints)
        drifts.append(drift)

    # The fast suites of every version side by side, as make test runs the floor suite.
    running: list[subprocess.Popen[bytes]] = []
    for drift in drifts if not args.reuse else []:
        suite_log = drift.suite_log = drift.root / "fast-suites.log"
        with suite_log.open("w") as out:
            command = pytest_command(drift, *FAST_SUITES)
            process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        running.append(process)
    for process in running:
        process.wait()
    for drift in drifts:
        drift.suite_log = drift.root / "fast-suites.log"
        drift.failing = failing_tests(drift.suite_log.read_text())
        log(f"Airflow {drift.airflow_version}: {len(drift.failing)} failing tests")

    lines = ["# make drift", ""]
    for drift in drifts:
        if drift.failing:
            bisect(drift, log)
        lines += [*report(drift), ""]
    (DRIFT / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"(also in {(DRIFT / 'report.md').relative_to(REPO)})")
    unexplained = [
        drift
        for drift in drifts
        if drift.failing
        and (
            drift.verdict
            or drift.not_drift
            or not all(drift.known_break(name) for name in drift.culprits)
        )
    ]
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
