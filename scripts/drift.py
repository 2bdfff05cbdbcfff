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
FAST_SUITES = ["-m", "not e2e and not slow"]
# Enough failing tests to show the break, few enough that each bisection step is quick.
BISECT_TESTS = 3
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

    A state is the set of changed packages left at their newest version (the rest at their locked
    one). The smallest failing prefix of the remaining suspects ends in a culprit; with it taken
    out, the rest are tried again, so several independent breaks are all named.
    """
    selected = drift.failing[:BISECT_TESTS]
    installed = dict(drift.newest)
    results: dict[frozenset[str], bool] = {}

    def fails(upgraded: set[str]) -> bool:
        key = frozenset(upgraded)
        if key not in results:
            wanted = {
                name: drift.newest[name] if name in upgraded else drift.locked[name]
                for name in drift.changed
            }
            swaps = [f"{n}=={v}" for n, v in sorted(wanted.items()) if installed.get(n) != v]
            if swaps:
                subprocess.run(
                    [str(drift.venv / "bin" / "pip"), "install", "-qq", "--no-deps", *swaps],
                    check=True,
                )
                installed.update(wanted)
            run = subprocess.run(
                pytest_command(drift, *selected), cwd=REPO, capture_output=True, text=True
            )
            results[key] = run.returncode != 0
            log(f"  {len(upgraded)} of {len(drift.changed)} upgraded: {_word(results[key])}")
        return results[key]

    log(f"Bisecting {len(drift.changed)} upgraded packages on {' '.join(selected)}")
    if not fails(set(drift.changed)):
        drift.verdict = "the failures did not happen again: flaky tests, not drift"
        return
    if fails(set()):
        drift.verdict = "they fail with every package at its locked version too: not drift"
        return
    remaining = list(drift.changed)
    while remaining and fails(set(remaining)):
        low, high = 1, len(remaining)
        while low < high:
            middle = (low + high) // 2
            if fails(set(remaining[:middle])):
                high = middle
            else:
                low = middle + 1
        drift.culprits.append(remaining.pop(high - 1))


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
    args = parser.parse_args(argv)
    python_version = running_python()

    def log(message: str) -> None:
        print(message, flush=True)

    drifts = []
    for airflow_version in args.airflow:
        root = DRIFT / airflow_version
        root.mkdir(parents=True, exist_ok=True)
        log(f"Resolving the newest releases for Airflow {airflow_version}")
        resolution = resolve(airflow_version, sys.executable, apply_known_breaks=False)
        constraints = root / f"constraints-{python_version}.txt"
        constraints.write_text(render(resolution))
        locked = read_pins(lock_file(airflow_version, python_version))
        drift = Drift(airflow_version, python_version, root, locked, resolution.pins)
        build(drift, constraints)
        drifts.append(drift)

    # The fast suites of every version side by side, as make test runs the floor suite.
    running = []
    for drift in drifts:
        suite_log = drift.suite_log = drift.root / "fast-suites.log"
        with suite_log.open("w") as out:
            command = pytest_command(drift, *FAST_SUITES)
            process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        running.append((drift, suite_log, process))
    for drift, suite_log, process in running:
        process.wait()
        drift.failing = failing_tests(suite_log.read_text())
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
        and (drift.verdict or not all(drift.known_break(name) for name in drift.culprits))
    ]
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
