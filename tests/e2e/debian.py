"""Debian packages the tests need (PostgreSQL, Redis, Chromium), installed when absent.

CI starts from a clean machine: a test that needs a system server or browser installs Debian's
package itself through apt-get (root only), or fails with what to install.

`make test` runs its lanes side by side (the 3.3 and 3.1 suites), so two pytest sessions may look
for the same package at once: the look-and-install holds an exclusive lock on one file, and looks
again once it has it (the other session may have installed the package meanwhile). apt-get's own
lock would only make the second session fail instead.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
APT_TIMEOUT_SECONDS = 900
# One lock for every session on the machine (the temp dir, not a session's own directory).
LOCK_FILE = Path(tempfile.gettempdir()) / "nanogpt-tests-apt-get.lock"


def ensure_package(
    package: str,
    find: Callable[[], T | None],
    error: type[Exception],
    what: str,
    lock_file: Path = LOCK_FILE,
) -> T:
    """``find()``'s answer, installing Debian's ``package`` first if it finds nothing.

    Raises ``error`` when apt-get is not usable here, fails, or installs nothing ``find`` sees.
    """
    found = find()
    if found is not None:
        return found  # the usual case takes no lock
    try:
        install_missing({package: find}, lock_file)
    except AptError as exc:
        raise error(f"{what} is not installed: {exc}") from exc
    found = find()
    if found is None:
        raise error(f"apt-get installed {package}, but {what} was still not found")
    return found


class AptError(RuntimeError):
    """apt-get is not usable here, or it failed."""


def install_missing(
    packages: Mapping[str, Callable[[], object | None]], lock_file: Path = LOCK_FILE
) -> list[str]:
    """Install, in one apt-get transaction, each package whose ``find`` finds nothing; return
    the packages installed. Under the lock, each is looked for again first."""
    if all(find() is not None for find in packages.values()):
        return []
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        missing = " ".join(name for name, find in packages.items() if find() is None)
        raise AptError(
            f"apt-get is not usable here (needs root and Debian/Ubuntu). Install: {missing}."
        )
    with lock_file.open("a") as lock:
        # Waits while another session installs (bounded by its apt-get timeouts); closing the
        # file releases it.
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Another session may have installed some while this one waited for the lock.
        missing_now = [name for name, find in packages.items() if find() is None]
        if missing_now:
            _apt_get(missing_now)
        return missing_now


def _apt_get(packages: list[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", *packages]):
        try:
            done = subprocess.run(
                command,
                env=env,
                capture_output=True,
                text=True,
                timeout=APT_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AptError(f"`{' '.join(command)}` failed: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout)[-2000:]
            raise AptError(f"`{' '.join(command)}` exited {done.returncode}: {tail}")
