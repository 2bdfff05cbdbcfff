"""What the release tests share: the checkout's view of the package, the interpreter and the
Airflow versions of the wheel test, and a fresh virtualenv that sees nothing of the checkout."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scripts.environments import REPO, find_python, makefile_airflow_versions

PACKAGE = "airflow_provider_nanogpt"
DIST_NAME = "airflow-provider-nanogpt"

# The wheel test runs on the official Airflow image's default Python, not the checkout's 3.11.
WHEEL_PYTHON_VERSION = "3.12"
WHEEL_PYTHON_ENV = "NANOGPT_WHEEL_PYTHON"
# Space-separated; `make wheel-test` passes the Makefile's two tested Airflow versions.
AIRFLOW_VERSIONS_ENV = "NANOGPT_WHEEL_AIRFLOW_VERSIONS"
# Set to keep the wheel virtualenvs after the run (they are removed otherwise; logs are kept).
KEEP_VENVS_ENV = "NANOGPT_WHEEL_KEEP_VENVS"

CACHE_DIRS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
# Nothing from the checkout's environment reaches a wheel virtualenv's commands.
_DROPPED_ENV_PREFIXES = ("AIRFLOW", "_AIRFLOW", "PYTHON", "VIRTUAL_ENV", "NANOGPT", "PYTEST")


def package_files() -> set[str]:
    """The package's files in the checkout, as paths relative to it: what the wheel must carry.

    Git's view (tracked files plus new ones it does not ignore) is exactly what the build backend
    takes, so caches and other ignored files are left out the same way; any non-Python file in
    there (``py.typed``, a plugin's static files and templates) is package data to ship.
    """
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", PACKAGE],
            cwd=REPO,
            check=True,
            capture_output=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked sdist)
        return {
            path.relative_to(REPO).as_posix()
            for path in (REPO / PACKAGE).rglob("*")
            if path.is_file() and not CACHE_DIRS & set(path.parts) and path.suffix != ".pyc"
        }
    return {name for name in listed.split("\0") if name and (REPO / name).is_file()}


def package_data(files: set[str]) -> set[str]:
    """The package's files that are not modules: ``py.typed`` and any plugin assets."""
    return {name for name in files if not name.endswith(".py")}


def is_cache_or_build_junk(name: str) -> bool:
    parts = name.split("/")
    return bool(CACHE_DIRS & set(parts)) or name.endswith((".pyc", ".pyo")) or ".egg-info" in name


INSTALLATION_DOC = REPO / "docs" / "installation.md"
# The marker of the block in INSTALLATION_DOC whose `pip` lines the wheel test runs.
_TODAY_BLOCK = re.compile(
    r"<!-- snippet: [^>]*tests/release runs these pip lines[^>]*-->\s*```bash\n(.*?)```", re.DOTALL
)


@dataclass(frozen=True)
class DocumentedInstall:
    """The `pip` commands docs/installation.md prints for installing the provider today."""

    build: list[str]  # pip wheel ... --wheel-dir dist .
    airflow: list[str]  # pip install apache-airflow==X --constraint CONSTRAINTS
    provider: list[str]  # pip install apache-airflow==X dist/<wheel glob>


def documented_install(
    airflow_version: str, constraints: Path, wheel_dir: Path, source: Path = REPO
) -> DocumentedInstall:
    """The page's three `pip` lines, word for word, with only its placeholders filled in.

    ``${AIRFLOW_VERSION}`` and ``${CONSTRAINTS}`` become the given version and file, the page's
    ``dist`` folder ``wheel_dir`` and the checkout ``.`` ``source``; the wheel's glob is left for
    the caller to expand once the wheel exists.
    """
    found = _TODAY_BLOCK.search(INSTALLATION_DOC.read_text())
    assert found, f"{INSTALLATION_DOC.name}: no block marked 'tests/release runs these pip lines'"
    words = [
        shlex.split(
            line.replace("${AIRFLOW_VERSION}", airflow_version).replace(
                "${CONSTRAINTS}", str(constraints)
            ),
            comments=True,
        )
        for line in found.group(1).splitlines()
        if line.startswith("pip ")
    ]

    def placed(word: str) -> str:
        if word == ".":
            return str(source)
        if word == "dist" or word.startswith("dist/"):
            return str(wheel_dir / word.removeprefix("dist").lstrip("/"))
        return word

    commands = [[placed(word) for word in command] for command in words]
    assert [command[:2] for command in commands] == [
        ["pip", "wheel"],
        ["pip", "install"],
        ["pip", "install"],
    ], commands
    return DocumentedInstall(*commands)


def airflow_versions() -> list[str]:
    """The Airflow versions the wheel is installed with: the two the Makefile tests."""
    return os.environ.get(AIRFLOW_VERSIONS_ENV, "").split() or makefile_airflow_versions()


def find_wheel_python() -> tuple[str | None, list[str]]:
    """A working Python 3.12 with venv, and every place looked at (for the failure message)."""
    return find_python(WHEEL_PYTHON_VERSION, os.environ.get(WHEEL_PYTHON_ENV) or None)


def _inside_repo(entry: str) -> bool:
    try:
        return Path(entry).resolve().is_relative_to(REPO)
    except (OSError, ValueError):
        return False


def isolated_env(venv: Path, **extra: str) -> dict[str, str]:
    """The environment of a wheel virtualenv's commands: its bin first, no checkout anywhere."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(_DROPPED_ENV_PREFIXES)
    }
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and not _inside_repo(p)]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    env.update(extra)
    return env


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def last_json(stdout: str) -> Any:
    """The JSON document a command printed, ignoring any log lines around it."""
    try:
        return json.loads(stdout)
    except ValueError:
        pass
    for line in reversed(stdout.splitlines()):
        if line.strip().startswith(("[", "{")):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise AssertionError(f"no JSON in the output:\n{tail(stdout)}")


@dataclass(frozen=True)
class Dists:
    """The two distributions ``python -m build`` made."""

    wheel: Path
    sdist: Path


@dataclass
class WheelVenv:
    """A fresh virtualenv holding the built wheel and one pinned Airflow, and nothing else."""

    root: Path
    venv: Path
    work: Path
    airflow_home: Path
    dags: Path
    airflow_version: str
    wheel: Path
    env: dict[str, str]

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        timeout: float = 300,
        check: bool = True,
        log: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the scratch directory (never the checkout), with the clean env."""
        done = subprocess.run(
            list(args),
            cwd=self.work,
            env=env or self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if log:
            (self.root / f"{log}.log").write_text(
                f"$ {' '.join(args)}\n--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
            )
        if check and done.returncode != 0:
            pytest.fail(
                f"`{' '.join(args)}` exited {done.returncode} (Airflow {self.airflow_version})\n"
                f"--- stdout ---\n{tail(done.stdout)}\n--- stderr ---\n{tail(done.stderr)}",
                pytrace=False,
            )
        return done

    def python_json(self, code: str) -> Any:
        """Run ``code`` with the virtualenv's Python; it prints one JSON document last."""
        return last_json(self.run([self.bin("python"), "-c", code]).stdout)
