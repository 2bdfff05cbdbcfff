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
