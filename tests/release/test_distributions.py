"""The sdist and wheel `python -m build` makes: what they hold and what their metadata says."""

from __future__ import annotations

import configparser
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from email.parser import Parser

import pytest

from airflow_provider_nanogpt import __version__
from airflow_provider_nanogpt.get_provider_info import get_provider_info
from tests.release.support import (
    DIST_NAME,
    PACKAGE,
    REPO,
    Dists,
    is_cache_or_build_junk,
    package_data,
    package_files,
    tail,
)

pytestmark = pytest.mark.wheel

DIST_INFO = f"{PACKAGE}-{__version__}.dist-info"
NOT_IN_THE_WHEEL = ("tests/", "benchmarks/", "example_dags/", "docs/", "scripts/")


def _wheel_names(dists: Dists) -> set[str]:
    with zipfile.ZipFile(dists.wheel) as wheel:
        return set(wheel.namelist())


def _sdist_members(dists: Dists) -> dict[str, bytes]:
    top = f"{PACKAGE}-{__version__}/"
    with tarfile.open(dists.sdist) as sdist:
        members = {}
        for member in sdist.getmembers():
            assert member.name.startswith(top), member.name
            if member.isfile():
                extracted = sdist.extractfile(member)
                assert extracted is not None
                members[member.name.removeprefix(top)] = extracted.read()
        return members


def _metadata(dists: Dists) -> Message:
    with zipfile.ZipFile(dists.wheel) as wheel:
        return Parser().parsestr(wheel.read(f"{DIST_INFO}/METADATA").decode())


def test_twine_check_passes_on_both(dists: Dists) -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(dists.sdist), str(dists.wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, tail(checked.stdout + checked.stderr)
    assert checked.stdout.count("PASSED") == 2, checked.stdout


def test_the_wheel_holds_the_package_and_nothing_else(dists: Dists) -> None:
    names = _wheel_names(dists)
    files = package_files()
    expected = files | {
        f"{DIST_INFO}/{name}"
        for name in (
            "METADATA",
            "WHEEL",
            "RECORD",
            "entry_points.txt",
            "licenses/LICENSE",
            "licenses/NOTICE",
        )
    }
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    assert not names - expected, f"not expected in the wheel: {sorted(names - expected)}"
    # Spelled out, though the set above covers them: what users and Airflow rely on.
    for needed in (
        "__init__.py",
        "get_provider_info.py",
        "py.typed",
        "simulator/__main__.py",
        "simulator/media/sample.mp4",  # the simulator's default video
        "plugin/templates/jobs.html",
        "plugin/templates/video.html",
    ):
        assert f"{PACKAGE}/{needed}" in names
    # Package data: py.typed, the UI plugin's templates and the simulator's video.
    assert package_data(files) <= names
    assert not [n for n in names if n.startswith(NOT_IN_THE_WHEEL) or is_cache_or_build_junk(n)]


def test_the_wheel_carries_the_checkouts_license_and_notice(dists: Dists) -> None:
    with zipfile.ZipFile(dists.wheel) as wheel:
        for name in ("LICENSE", "NOTICE"):
            assert wheel.read(f"{DIST_INFO}/licenses/{name}") == (REPO / name).read_bytes()


def test_the_sdist_holds_sources_examples_docs_license_notice_and_changelog(dists: Dists) -> None:
    members = _sdist_members(dists)
    required = package_files() | {
        "PKG-INFO",
        "pyproject.toml",
        "README.md",
        "CHANGELOG.md",
        "LICENSE",
        "NOTICE",
        "docs/installation.md",
        "example_dags/example_nanogpt_text_to_video.py",
    }
    assert not required - set(members), f"missing from the sdist: {sorted(required - set(members))}"
    for name in ("LICENSE", "NOTICE", "CHANGELOG.md"):
        assert members[name] == (REPO / name).read_bytes()
    assert not [n for n in members if n.startswith(("tests/", "benchmarks/"))]
    assert not [n for n in members if is_cache_or_build_junk(n)]
    pkg_info = Parser().parsestr(members["PKG-INFO"].decode())
    assert pkg_info["Version"] == __version__


def test_the_metadata_says_what_the_provider_says(dists: Dists) -> None:
    meta = _metadata(dists)
    assert meta["Name"] == DIST_NAME
    assert meta["Version"] == __version__
    assert dists.wheel.name == f"{PACKAGE}-{__version__}-py3-none-any.whl"
    assert dists.sdist.name == f"{PACKAGE}-{__version__}.tar.gz"
    assert meta["Summary"] == get_provider_info()["description"]
    assert meta["License-Expression"] == "Apache-2.0"
    assert sorted(meta.get_all("License-File") or []) == ["LICENSE", "NOTICE"]
    assert not [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    # No project URLs until the project has a public home (see test_release_files).
    assert not meta.get_all("Project-URL")
    assert not meta.get("Home-page")
    assert meta["Requires-Python"] == ">=3.11"
    assert "apache-airflow>=3.1.0" in (meta.get_all("Requires-Dist") or [])
    assert meta["Description-Content-Type"] == "text/markdown"


def test_the_entry_points_are_airflows_and_the_simulators(dists: Dists) -> None:
    with zipfile.ZipFile(dists.wheel) as wheel:
        entry_points = configparser.ConfigParser()
        entry_points.read_string(wheel.read(f"{DIST_INFO}/entry_points.txt").decode())
    assert dict(entry_points["apache_airflow_provider"]) == {
        "provider_info": f"{PACKAGE}.get_provider_info:get_provider_info"
    }
    assert entry_points["console_scripts"]["nanogpt-simulator"] == (
        f"{PACKAGE}.simulator.__main__:main"
    )
