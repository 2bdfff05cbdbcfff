"""Debian packages the tests need (PostgreSQL, Redis, Chromium), installed when absent.

CI starts from a clean machine: a test that needs a system server or browser installs Debian's
package itself through apt-get (root only), or fails with what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
APT_TIMEOUT_SECONDS = 900


def ensure_package(
    package: str, find: Callable[[], T | None], error: type[Exception], what: str
) -> T:
    """``find()``'s answer, installing Debian's ``package`` first if it finds nothing.

    Raises ``error`` when apt-get is not usable here, fails, or installs nothing ``find`` sees.
    """
    found = find()
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise error(
            f"{what} is not installed, and apt-get is not usable here (needs root and "
            f"Debian/Ubuntu). Install the `{package}` package."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", package]):
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
            raise error(f"`{' '.join(command)}` failed: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout)[-2000:]
            raise error(f"`{' '.join(command)}` exited {done.returncode}: {tail}")
    found = find()
    if found is None:
        raise error(f"apt-get installed {package}, but {what} was still not found")
    return found
