"""What a published provider carries, checked in the checkout (fast; runs in the editable suites).

The built distributions and the installed wheel are checked by the ``wheel`` tests next to this.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from urllib.parse import urlsplit

from packaging.version import Version

from airflow_provider_nanogpt import __version__
from airflow_provider_nanogpt.get_provider_info import get_provider_info
from airflow_provider_nanogpt.hooks.settings import ClientSettings
from tests.release.support import PACKAGE, REPO

# sha256 of https://www.apache.org/licenses/LICENSE-2.0.txt, the full text.
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
# Hosts that exist. The project has no public home yet: add its URLs here once it has one.
REAL_HOSTS = {"nano-gpt.com", "docs.nano-gpt.com"}
CHANGELOG_SECTIONS = {"Breaking changes", "Features", "Bug fixes", "Misc"}


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_license_is_the_full_apache_2_text() -> None:
    text = (REPO / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_SHA256
    assert _pyproject()["project"]["license"] == "Apache-2.0"
    assert set(_pyproject()["project"]["license-files"]) == {"LICENSE", "NOTICE"}


def test_notice_names_the_project() -> None:
    notice = (REPO / "NOTICE").read_text()
    assert notice.splitlines()[0] == "airflow-provider-nanogpt"
    assert re.search(r"^Copyright \d{4}", notice, re.MULTILINE)


def test_py_typed_marks_the_package_typed() -> None:
    assert (REPO / PACKAGE / "py.typed").is_file()


def test_the_version_lives_in_one_place() -> None:
    Version(__version__)  # a valid PEP 440 version
    project = _pyproject()
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["hatch"]["version"]["path"] == f"{PACKAGE}/__init__.py"
    assignments = [
        path.relative_to(REPO).as_posix()
        for path in (REPO / PACKAGE).rglob("*.py")
        if re.search(r"^__version__\s*=", path.read_text(), re.MULTILINE)
    ]
    assert assignments == [f"{PACKAGE}/__init__.py"]


def test_provider_info_and_user_agent_carry_the_version() -> None:
    assert get_provider_info()["versions"] == [__version__]
    user_agent = ClientSettings(base_url="https://nano-gpt.com", api_key="k").user_agent
    assert user_agent.startswith(f"airflow-provider-nanogpt/{__version__} (+apache-airflow/")


def _readme_opening() -> str:
    """The README's first paragraph as plain text (links reduced to their words)."""
    paragraphs = (REPO / "README.md").read_text().split("\n\n")
    opening = next(p for p in paragraphs if p.strip() and not p.lstrip().startswith("#"))
    return " ".join(re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", opening).split())


def test_description_is_the_readme_opening_everywhere() -> None:
    description = get_provider_info()["description"]
    assert _readme_opening().startswith(description)
    assert _pyproject()["project"]["description"] == description


def _urls(value: object) -> list[str]:
    if isinstance(value, dict):
        return [url for item in value.values() for url in _urls(item)]
    if isinstance(value, list):
        return [url for item in value for url in _urls(item)]
    if isinstance(value, str) and re.match(r"https?://", value):
        return [value]
    return []


def test_urls_point_at_real_places_only() -> None:
    project = _pyproject()["project"]
    urls = _urls(project.get("urls", {})) + _urls(get_provider_info())
    assert urls, "the provider info names NanoGPT's API documentation"
    assert {urlsplit(url).hostname for url in urls} <= REAL_HOSTS, urls


def test_changelog_has_the_current_version_in_provider_style() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## (\S+)", changelog, re.MULTILINE)
    assert __version__ in releases, f"CHANGELOG.md has no section for {__version__}"
    assert releases[0] in ("Unreleased", __version__), "the newest section comes first"
    numbered = [Version(r) for r in releases if r != "Unreleased"]
    assert numbered == sorted(numbered, reverse=True)
    for section in re.split(r"^## ", changelog, flags=re.MULTILINE)[1:]:
        headings = set(re.findall(r"^### (.+)$", section, re.MULTILINE))
        assert headings, section.splitlines()[0]
        assert headings <= CHANGELOG_SECTIONS, (section.splitlines()[0], headings)
