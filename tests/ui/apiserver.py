"""A real ``airflow api-server`` on the test session's metadata DB, with users and passwords."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from tests.conftest import REPO

USERS = {
    "admin": ("admin", "adminpw"),
    "viewer": ("viewer", "viewerpw"),
    "limited": ("viewer", "limitedpw"),
}


# Signs the api-server's tokens (tests forge expired ones with it).
JWT_SECRET = "nanogpt-ui-tests-secret-" + "0123456789abcdef" * 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ApiServer:
    def __init__(self, url: str) -> None:
        self.url = url

    def token(self, user: str) -> str:
        password = USERS[user][1]
        answer = requests.post(
            f"{self.url}/auth/token", json={"username": user, "password": password}, timeout=30
        )
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    def get(
        self,
        path: str,
        user: str | None = None,
        token: str | None = None,
        *,
        follow: bool = True,
        **params: Any,
    ) -> requests.Response:
        headers = {}
        if user is not None:
            token = self.token(user)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.get(
            f"{self.url}{path}",
            headers=headers,
            params=params,
            timeout=60,
            allow_redirects=follow,
        )


def signed_in_users(workdir: Path) -> dict[str, str | None]:
    """Airflow settings under which ``USERS`` sign in with their passwords (written to a file in
    ``workdir``), as ``RestrictedAuthManager`` users; None removes a setting (nobody is an admin
    without signing in)."""
    passwords = workdir / "passwords.json"
    passwords.write_text(json.dumps({name: pw for name, (_, pw) in USERS.items()}))
    return {
        "AIRFLOW__CORE__AUTH_MANAGER": "tests.ui.restricted_auth.RestrictedAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
            f"{name}:{role}" for name, (role, _) in USERS.items()
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": None,
        # The auth manager is imported from the checkout's tests.
        "PYTHONPATH": str(REPO),
    }


@contextmanager
def api_server(workdir: Path, extra_env: dict[str, str]) -> Iterator[ApiServer]:
    port = free_port()
    settings = {
        **os.environ,
        **extra_env,
        **signed_in_users(workdir),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": JWT_SECRET,
    }
    env = {name: value for name, value in settings.items() if value is not None}
    log = (workdir / "api-server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow", "api-server", "-p", str(port), "-H", "127.0.0.1"],
        env=env,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = ApiServer(f"http://127.0.0.1:{port}")
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"api-server exited:\n{(workdir / 'api-server.log').read_text()[-3000:]}"
                )
            try:
                if requests.get(f"{server.url}/api/v2/monitor/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline:
                raise RuntimeError("api-server did not become healthy")
            time.sleep(0.5)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
