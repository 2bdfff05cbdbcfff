"""A throwaway PostgreSQL cluster for the end-to-end suite.

Airflow in production runs on PostgreSQL, and SQLite locks under a scheduler, a triggerer and
several workers writing at once, so the e2e deployment gets a private cluster: created in a temp
dir, listening on a free loopback port, stopped and deleted afterwards. The server refuses to run
as root, so when the suite runs as root (CI) every server command runs as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.e2e.debian import ensure_package
from tests.e2e.ports import free_port, log_tail

DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
START_ATTEMPTS = 3


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed and cannot be installed here."""


def _has_server(bindir: Path) -> bool:
    return all((bindir / tool).exists() for tool in ("initdb", "pg_ctl", "postgres"))


def find_bindir() -> Path | None:
    """The directory holding initdb/pg_ctl: on PATH, or Debian's versioned directory."""
    on_path = shutil.which("pg_ctl")
    if on_path and _has_server(Path(on_path).resolve().parent):
        return Path(on_path).resolve().parent

    def version(path: str) -> tuple[int, ...]:
        digits = Path(path).parent.name
        return tuple(int(p) for p in digits.split(".") if p.isdigit())

    # Debian keeps the server binaries off PATH (only wrappers live in /usr/bin).
    for candidate in sorted(glob.glob(DEBIAN_BIN_GLOB), key=version, reverse=True):
        if _has_server(Path(candidate)):
            return Path(candidate)
    return None


def ensure_installed() -> Path:
    """Find PostgreSQL's server binaries, installing Debian's ``postgresql`` if absent."""
    return ensure_package(
        "postgresql", find_bindir, PostgresUnavailable, "PostgreSQL's server (initdb, pg_ctl)"
    )


class PostgresCluster:
    """One private cluster with one database; ``stop()`` removes every trace of it."""

    def __init__(self, bindir: Path, database: str = "airflow", *, durable: bool = False) -> None:
        self.bindir = bindir
        self.database = database
        # Off for the tests' throwaway clusters (speed); on where a benchmark must pay what a
        # production server pays for each commit (fsync, synchronous commit).
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="nanogpt-e2e-pg-"))
        self.data = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self.port = 0
        self.user = "postgres"
        self._run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PostgresUnavailable(
                    "running as root, but there is no `postgres` user"
                ) from exc
            os.chown(self.root, self._run_as.pw_uid, self._run_as.pw_gid)

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def connect(self, database: str | None = None) -> Any:
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname=database or self.database
        )

    def _run(self, args: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if self._run_as is not None:
            # Drop root's supplementary groups too, not just the uid.
            kwargs = {
                "user": self._run_as.pw_uid,
                "group": self._run_as.pw_gid,
                "extra_groups": [],
            }
        return subprocess.run(
            [str(a) for a in args],
            cwd=self.root,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )

    def start(self) -> None:
        # trust auth is safe here: the server only listens on loopback and lives for one test run.
        init = self._run(
            [
                self.bindir / "initdb",
                "-D",
                self.data,
                "-U",
                self.user,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr or init.stdout}")
        # Another process may grab the "free" port before the server binds it: retry on a new one.
        last_error = ""
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            options = (
                f"-p {self.port} -c listen_addresses=127.0.0.1 "
                f"-c unix_socket_directories={self.root} -c max_connections=200 "
                # Durability is pointless for a throwaway cluster; speed is not.
                + (
                    ""
                    if self.durable
                    else "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                )
            )
            started = self._run(
                [
                    self.bindir / "pg_ctl",
                    "-D",
                    self.data,
                    "-l",
                    self.log_file,
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    options,
                    "start",
                ]
            )
            if started.returncode == 0:
                break
            last_error = f"{started.stderr or started.stdout}\n{log_tail(self.log_file)}"
        else:
            raise RuntimeError(f"PostgreSQL did not start: {last_error}")
        self.create_database(self.database)

    def create_database(self, name: str) -> None:
        """Another database on this cluster (CREATE DATABASE cannot run in a transaction)."""
        conn = self.connect("postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def dump(self) -> str:
        """The whole database as SQL text (pg_dump), for scanning every stored value."""
        dumped = self._run(
            [
                self.bindir / "pg_dump",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "--no-owner",
                self.database,
            ],
            timeout=120,
        )
        if dumped.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {dumped.stderr}")
        return dumped.stdout

    def stop(self) -> None:
        """Stop the server (immediately: the data is thrown away) and delete the cluster."""
        if (self.data / "postmaster.pid").exists():
            stopped = self._run(
                [self.bindir / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"],
                timeout=60,
            )
            if stopped.returncode != 0:
                self._kill_postmaster()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        # Last resort: the postmaster this cluster started, by the pid it recorded.
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
