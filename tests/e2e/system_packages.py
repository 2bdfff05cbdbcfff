"""Install every Debian package the test suite needs, in one apt-get transaction.

`make test` runs this beside building the virtualenvs, so the suites find PostgreSQL, Redis and
Chromium installed instead of each installing its own while tests wait. Where apt-get is not
usable it only says so: each suite then installs or reports what it lacks itself. Standard
library only (it runs before any virtualenv exists): ``python -m tests.e2e.system_packages``.
"""

from __future__ import annotations

import sys

from tests.e2e.chromium import find_chromium
from tests.e2e.debian import AptError, install_missing
from tests.e2e.postgres import find_bindir
from tests.e2e.redis import find_server

PACKAGES = {"postgresql": find_bindir, "redis-server": find_server, "chromium": find_chromium}


def main() -> int:
    try:
        installed = install_missing(PACKAGES)
    except AptError as exc:
        print(f"system packages not installed up front: {exc}", file=sys.stderr)
        return 0  # the suites that need them say what is missing
    print(
        f"system packages installed: {' '.join(installed)}"
        if installed
        else "system packages: all present"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
