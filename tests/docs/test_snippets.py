"""Every fenced code block in README.md and docs/*.md is run, or at least checked.

A block runs as written, against the simulator, except for these stand-ins: NanoGPT's origin (and
the ``127.0.0.1:8787`` the docs start the simulator on) becomes the test's simulator, the
placeholder key ``sk-nano-…`` a test key, ``s3://`` and ``/data/`` a temporary directory.

- ``python``: executed in a namespace that holds the provider's public names, ``timedelta``, and
  ``sim``/``nanogpt`` (the simulator). A block that defines DAGs is loaded with ``DagBag`` (no
  import errors, at least one DAG), and each DAG with ``schedule=None`` is run with ``dag.test()``.
- ``bash``/``shell``/``sh``/``console``: run with bash (``-e``) in a temporary directory, the
  venv's ``bin`` first on ``PATH``, and a fresh ``AIRFLOW_HOME`` (a migrated metadata DB) in which
  the page's earlier runnable shell blocks run first (a connection it added, a pool it set).
- ``json``/``toml``/``yaml``/``ini`` are parsed; ``dockerfile`` instructions are checked.
- ``text`` and unlabelled blocks are output or diagrams and are not run.

An HTML comment right before the fence changes that, for one block:

- ``<!-- snippet: needs-real-key: why -->`` / ``<!-- snippet: compile-only: why -->``: only compiled
  (Python) or syntax-checked (``bash -n``).
- ``<!-- snippet: file PATH -->``: the block is the file PATH for the page's ``pytest`` blocks.
- ``<!-- snippet: pytest -->``: the block is a test module, run with pytest in a fresh process,
  next to the page's ``file`` blocks, together with the ``<!-- snippet: pytest continues -->``
  blocks right after it.
- ``<!-- snippet: excerpt -->`` (JSON only): an abbreviated excerpt (``…``), not parsed.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.conftest import REPO, connection_json

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PYTHON = {"python", "py"}
SHELL = {"bash", "shell", "sh", "console"}
PARSED = {"json", "toml", "yaml", "yml", "ini", "dockerfile"}
NOT_RUN = {"", "text"}
CHECK_ONLY = {"needs-real-key", "compile-only"}
KEY = "sk-nano-snippets"
VENV_BIN = Path(sys.executable).parent
# A snippet in a subprocess that runs longer than this hangs: a guard, not a speed check (the
# testing.md example takes a minute alone and passed 120 s on a busy machine).
HANG_GUARD_SECONDS = 600

_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(.+?)\s*-->\s*$")


@dataclass(frozen=True)
class Snippet:
    page: Path
    line: int
    lang: str
    source: str
    marker: str  # the text of the <!-- snippet: … --> comment before the fence, or ""

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def kind(self) -> str:
        return self.marker.split(":")[0].split()[0] if self.marker else ""


def collect(page: Path) -> list[Snippet]:
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Snippet] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while not re.match(rf"^{opening.group(1)}```\s*$", lines[end]):
            end += 1
        before = next((ln for ln in reversed(lines[:index]) if ln.strip()), "")
        marker = _MARKER.match(before)
        found.append(
            Snippet(
                page=page,
                line=index + 1,
                lang=opening.group(2).lower(),
                source=textwrap.dedent("\n".join(lines[index + 1 : end])) + "\n",
                marker=marker.group(1) if marker else "",
            )
        )
        index = end + 1
    return found


SNIPPETS = [snippet for page in PAGES for snippet in collect(page)]
RUN = [s for s in SNIPPETS if s.lang not in NOT_RUN and s.kind not in {"file"}]


def test_every_fence_has_a_known_language() -> None:
    unknown = {s.id: s.lang for s in SNIPPETS if s.lang not in PYTHON | SHELL | PARSED | NOT_RUN}
    assert not unknown, unknown
    markers = {s.id: s.marker for s in SNIPPETS if s.marker}
    bad = {
        i: m
        for i, m in markers.items()
        if m.split(":")[0].split()[0] not in CHECK_ONLY | {"file", "pytest", "excerpt"}
    }
    assert not bad, bad


def stand_ins(source: str, sim_url: str, data_dir: Path) -> str:
    for real in ("https://api.nano-gpt.com", "https://nano-gpt.com", "http://127.0.0.1:8787"):
        source = source.replace(real, sim_url)
    return (
        source.replace("sk-nano-…", KEY)
        .replace("s3://", f"{data_dir}/s3/")
        .replace("/data/", f"{data_dir}/")
    )


@pytest.fixture
def snippet_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[NanoGPTSimulator]:
    """A simulator that takes any key (the docs use several); nanogpt_default points at it."""
    with NanoGPTSimulator(time_scale=0.02, quiet=True, queue_seconds=2, render_seconds=8) as sim:
        monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(sim.url, key=KEY))
        yield sim


# --- python ------------------------------------------------------------------------------------


def _prelude(sim: NanoGPTSimulator) -> dict[str, Any]:
    import datetime

    import airflow_provider_nanogpt as provider

    namespace: dict[str, Any] = {name: getattr(provider, name) for name in provider.__all__}
    namespace.update(
        timedelta=datetime.timedelta,
        NanoGPTSimulator=NanoGPTSimulator,
        sim=sim,
        nanogpt=sim,
        __name__="snippet",
    )
    return namespace


def _run_dags(path: Path, source: str) -> None:
    from tests.airflow.harness import load_dag

    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    bag = DagBag(dag_folder=str(path))
    assert not bag.import_errors, bag.import_errors
    assert bag.dags, "the block defines a DAG but creates none (is the @dag function called?)"
    for dag_id, dag in bag.dags.items():
        if dag.timetable.can_be_scheduled or "@dag(schedule=None" not in source.replace("\n", ""):
            continue  # scheduled on assets or time: its runs need what the schedule provides
        bundles = json.loads(os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"])
        bundles.append(
            {
                "name": f"snippet-{path.stem}",
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(path.parent)},
            }
        )
        # dag.test() runs only DAGs from a configured bundle: this block's folder becomes one.
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
            run = load_dag(dag_id, path).test()
        assert str(run.state) == "success", f"{dag_id}: {run.state}"


def check_python(snippet: Snippet, sim: NanoGPTSimulator, tmp_path: Path, airflow_db: Path) -> None:
    source = stand_ins(snippet.source, sim.url, tmp_path)
    code = compile(source, snippet.id, "exec")
    if snippet.kind in CHECK_ONLY:
        return
    if snippet.marker == "pytest continues":
        return  # run with the pytest block it continues
    if snippet.kind == "pytest":
        run_pytest_snippet(snippet, tmp_path, airflow_db)
        return
    if re.search(r"^@dag\b|\bDAG\(", source, re.MULTILINE):
        path = tmp_path / "dags" / f"snippet_{snippet.line}.py"
        path.parent.mkdir()
        path.write_text(source, encoding="utf-8")
        _run_dags(path, source)
        return
    exec(code, _prelude(sim))


def fresh_airflow_home(airflow_db: Path, tmp_path: Path) -> dict[str, str]:
    """A new AIRFLOW_HOME whose metadata DB is a copy of the session's migrated one (no DAG of
    another block under the same id), and no connection: the block brings its own."""
    home = tmp_path / "airflow-home"
    home.mkdir()
    shutil.copy(airflow_db / "airflow.db", home / "airflow.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
    )
    return env


def run_pytest_snippet(snippet: Snippet, tmp_path: Path, airflow_db: Path) -> None:
    """The page's ``file`` blocks and this test module (with the blocks it continues), in a fresh
    pytest process that knows nothing of this suite's DAGs folder or connections."""
    page = [s for s in SNIPPETS if s.page == snippet.page]
    for block in page:
        if block.kind == "file":
            target = tmp_path / block.marker.split()[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.source, encoding="utf-8")
    # The head block runs with every block that continues it, in one pytest process.
    position = page.index(snippet)
    chain = [snippet]
    for block in page[position + 1 :]:
        if block.marker == "pytest":
            break
        if block.marker == "pytest continues":
            chain.append(block)
    module = "\n\n".join(block.source for block in chain)
    (tmp_path / "test_snippet.py").write_text(module, encoding="utf-8")
    env = fresh_airflow_home(airflow_db, tmp_path)
    for setting in ("AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"):
        env.pop(setting, None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_snippet.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


# --- shell -------------------------------------------------------------------------------------

_INSTALLS = re.compile(r"^\s*(\w+=\S+\s+)*(pip|apt|apt-get|docker|make)\b", re.MULTILINE)


def _bash(script: str, cwd: Path, env: dict[str, str], *flags: str) -> None:
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", *flags, "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
    )
    assert done.returncode == 0, f"{script}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def check_shell(snippet: Snippet, sim: NanoGPTSimulator, tmp_path: Path, airflow_db: Path) -> None:
    if snippet.kind in CHECK_ONLY:
        _bash(snippet.source, tmp_path, dict(os.environ), "-n")
        return
    # Never install, build or run the long make targets from a test: those must be marked.
    assert not _INSTALLS.search(snippet.source), "mark it <!-- snippet: compile-only: why -->"
    env = fresh_airflow_home(airflow_db, tmp_path)
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env['PATH']}", PYTHONPATH=str(REPO))
    # The page's earlier blocks first (a connection the page created, a pool it set).
    earlier = [
        s
        for s in SNIPPETS
        if s.page == snippet.page
        and s.line < snippet.line
        and s.lang in SHELL
        and s.kind not in CHECK_ONLY
        and not _INSTALLS.search(s.source)
    ]
    for block in [*earlier, snippet]:
        _bash(stand_ins(block.source, sim.url, tmp_path), tmp_path, env)


# --- other formats -----------------------------------------------------------------------------

_DOCKERFILE_INSTRUCTIONS = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
}


def check_parsed(snippet: Snippet) -> None:
    source = snippet.source
    if snippet.lang == "json":
        if snippet.kind == "excerpt":
            return
        try:
            json.loads(source)
        except json.JSONDecodeError:
            json.loads("{" + source + "}")  # one member of an object, as a facet excerpt shows
    elif snippet.lang == "toml":
        tomllib.loads(source)
    elif snippet.lang in {"yaml", "yml"}:
        yaml.safe_load(source)
    elif snippet.lang == "ini":
        configparser.ConfigParser().read_string(source)
    elif snippet.lang == "dockerfile":
        for line in source.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                assert line.split()[0].upper() in _DOCKERFILE_INSTRUCTIONS, line


@pytest.mark.parametrize("snippet", RUN, ids=[s.id for s in RUN])
def test_snippet(
    snippet: Snippet,
    snippet_sim: NanoGPTSimulator,
    tmp_path: Path,
    airflow_db: Path,
) -> None:
    if snippet.lang in PYTHON:
        check_python(snippet, snippet_sim, tmp_path, airflow_db)
    elif snippet.lang in SHELL:
        check_shell(snippet, snippet_sim, tmp_path, airflow_db)
    else:
        check_parsed(snippet)
