"""Two test sessions that need the same Debian package at once install it once, one at a time.

`make test` runs its lanes side by side, and each may find Chromium missing on a clean machine.
Two real processes call ``ensure_package`` together against a stand-in ``apt-get`` (first on
PATH) that records each call and fails if another install is running beside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.one_airflow

FAKE_APT_GET = """#!/bin/sh
# A stand-in apt-get: "update" is slow (both sessions have looked by then), "install" refuses to
# run beside another install and leaves the package's file behind.
echo "$*" >> "$WORK/calls"
if [ "$1" = "update" ]; then sleep 1.5; exit 0; fi
if [ -e "$WORK/installing" ]; then echo "two installs at once" >> "$WORK/calls"; exit 100; fi
touch "$WORK/installing"; sleep 1; touch "$WORK/installed"; rm "$WORK/installing"
"""

SESSION = """
import os, sys
from pathlib import Path
os.geteuid = lambda: 0  # apt-get is the stand-in; root is only what ensure_package checks for
from tests.e2e.debian import ensure_package

work = Path(os.environ["WORK"])
def find():
    return work / "installed" if (work / "installed").exists() else None
print(ensure_package("fakepkg", find, RuntimeError, "the fake package", work / "apt.lock"))
"""


def test_two_sessions_at_once_install_the_package_once(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt_get = bin_dir / "apt-get"
    apt_get.write_text(FAKE_APT_GET)
    apt_get.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "WORK": str(tmp_path),
    }
    sessions = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(SESSION)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [session.communicate(timeout=60)[0] for session in sessions]

    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == ["update", "install -y fakepkg"], (calls, outputs)
    assert [session.returncode for session in sessions] == [0, 0], outputs
    assert all(out.strip() == str(tmp_path / "installed") for out in outputs), outputs


FAKE_APT_GET_PER_PACKAGE = """#!/bin/sh
# A stand-in apt-get that records each call and leaves one file per package it installs.
echo "$*" >> "$WORK/calls"
if [ "$1" = "install" ]; then shift 2; for p in "$@"; do touch "$WORK/$p"; done; fi
"""

PRE_INSTALL = """
import os
from pathlib import Path
os.geteuid = lambda: 0  # apt-get is the stand-in
from tests.e2e.debian import install_missing

work = Path(os.environ["WORK"])
def finder(name):
    return lambda: work / name if (work / name).exists() else None
wanted = {name: finder(name) for name in ("present", "one", "two")}
print(install_missing(wanted, work / "apt.lock"))
print(install_missing(wanted, work / "apt.lock"))
"""


def test_the_up_front_install_asks_apt_get_once_for_what_is_missing(tmp_path: Path) -> None:
    """`make test`'s system-packages step: one update and one install of exactly the missing
    packages; run again, it installs nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt_get = bin_dir / "apt-get"
    apt_get.write_text(FAKE_APT_GET_PER_PACKAGE)
    apt_get.chmod(0o755)
    (tmp_path / "present").touch()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "WORK": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PRE_INSTALL)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['one', 'two']", "[]"]
    assert (tmp_path / "calls").read_text().splitlines() == ["update", "install -y one two"]
