"""The environments `make demo`, `make test` and the wheel tests build, in one place: which Airflow
and Python versions they cover, where each one's lock file lives, and how to find a Python.

Stdlib only: `make lock` and `make drift` run it with the Python that runs make, before any
virtualenv exists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "constraints"
# The Python versions the provider supports (pyproject's classifiers); each has its own locks.
SUPPORTED_PYTHONS = ("3.11", "3.12")


def running_python() -> str:
    """This interpreter's version as the lock files name it: "3.11"."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def makefile_airflow_versions() -> list[str]:
    """The Airflow versions `make test` covers: the Makefile's AIRFLOW_VERSION and the floor's."""
    makefile = (REPO / "Makefile").read_text()
    found = []
    for variable in ("AIRFLOW_VERSION", "FLOOR_AIRFLOW_VERSION"):
        match = re.search(rf"^{variable}\s*\?=\s*(\S+)", makefile, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"Makefile does not set {variable}")
        found.append(match.group(1))
    return found


def lock_file(airflow_version: str, python_version: str, root: Path = CONSTRAINTS) -> Path:
    """Laid out as Airflow's own constraints: one folder per Airflow version, a file per Python.

    The Makefile spells the same path (LOCK, FLOOR_LOCK); tests/release checks they agree.
    """
    return root / airflow_version / f"constraints-{python_version}.txt"


def known_breaks_file(airflow_version: str, root: Path = CONSTRAINTS) -> Path:
    """Caps on releases known to break this Airflow version: for its locks, never for users."""
    return root / airflow_version / "known-breaks.txt"


def _version_key(path: str) -> tuple[int, ...]:
    match = re.search(r"/versions/(\d+(?:\.\d+)*)", path)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def find_python(version: str, override: str | None = None) -> tuple[str | None, list[str]]:
    """A working Python ``version`` ("3.12") with venv and ensurepip, and every place looked at.

    ``override`` (a path) is the only candidate when given. Otherwise: ``pythonX.Y`` on PATH (which
    may be a pyenv shim that refuses to run, so each candidate is tried), pyenv's installs, newest
    first, then /usr/local/bin and /usr/bin.
    """
    if override:
        candidates = [override]
    else:
        candidates = [found for found in [shutil.which(f"python{version}")] if found]
        pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
        pyenv = [
            str(path) for path in (pyenv_root / "versions").glob(f"{version}*/bin/python{version}")
        ]
        candidates += sorted(pyenv, key=_version_key, reverse=True)
        candidates += [f"/usr/local/bin/python{version}", f"/usr/bin/python{version}"]
    probe = "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"
    for candidate in candidates:
        try:
            answer = subprocess.run(
                [candidate, "-c", probe], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if answer.returncode == 0 and answer.stdout.strip() == version:
            return candidate, candidates
    return None, candidates
