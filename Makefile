# The two commands of the README: `make demo` and `make test`. Both build their virtualenv from
# scratch with nothing but Python 3.11+ on the machine: make demo a small one (.venv-demo: Airflow
# and the provider), make test .venv with the dev extra (it also installs the wheel with Python 3.12).
# Every virtualenv installs from a lock file in constraints/ (`make lock` writes them).
PYTHON ?= python3
VENV ?= .venv
# The demo's own virtualenv: Airflow and the provider only, none of the dev extra's test tools.
DEMO_VENV ?= .venv-demo
AIRFLOW_VERSION ?= 3.3.2
# The lowest supported Airflow minor, tested in a virtualenv of its own.
FLOOR_VENV ?= .venv-airflow-3.1
FLOOR_AIRFLOW_VERSION ?= 3.1.8
# The Python 3.12 the wheel test installs the wheel with (empty: python3.12 on PATH, or pyenv's).
WHEEL_PYTHON ?=
BIN := $(VENV)/bin
PIP_QUIET := --quiet --disable-pip-version-check
PYTHON_MINOR := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# Laid out as Airflow's constraints files (scripts/environments.py names the same paths).
LOCK := constraints/$(AIRFLOW_VERSION)/constraints-$(PYTHON_MINOR).txt
FLOOR_LOCK := constraints/$(FLOOR_AIRFLOW_VERSION)/constraints-$(PYTHON_MINOR).txt

.PHONY: venv floor-venv demo-venv demo system-packages test lint typecheck unit unit-parallel unit-timing e2e unit-floor floor-parallel floor-timing wheel-test scale-out dist bench lock drift clean

venv: $(VENV)/.installed

floor-venv: $(FLOOR_VENV)/.installed

demo-venv: $(DEMO_VENV)/.installed

# $(1) virtualenv, $(2) Airflow version, $(3) lock file, $(4) the provider's extras ("[dev]", or
# empty for none). Built anew whenever the lock changes, so
# nothing a previous lock installed stays behind. The lock pins pip and the build backend too
# (--build-constraint: the editable install's isolated build).
define build_venv
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -f $(3) || { echo "No lock file $(3): the locks cover Python 3.11 and 3.12 (PYTHON=python3.12 make ...), or write one with make lock."; exit 1; }
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install $(PIP_QUIET) --constraint $(3) --upgrade pip
	$(1)/bin/pip install $(PIP_QUIET) --constraint $(3) --build-constraint $(3) "apache-airflow==$(2)" -e ".$(4)"
	touch $(1)/.installed
endef

$(VENV)/.installed: pyproject.toml Makefile $(LOCK)
	$(call build_venv,$(VENV),$(AIRFLOW_VERSION),$(LOCK),[dev])

$(DEMO_VENV)/.installed: pyproject.toml Makefile $(LOCK)
	$(call build_venv,$(DEMO_VENV),$(AIRFLOW_VERSION),$(LOCK),)

$(FLOOR_VENV)/.installed: pyproject.toml Makefile $(FLOOR_LOCK)
	$(call build_venv,$(FLOOR_VENV),$(FLOOR_AIRFLOW_VERSION),$(FLOOR_LOCK),[dev])

# PostgreSQL, Redis and Chromium for the deployments and browser tests, installed in one apt-get
# transaction when missing (root on Debian only; elsewhere the tests say what is missing).
system-packages:
	$(PYTHON) -m tests.e2e.system_packages

demo: demo-venv
	PATH="$(CURDIR)/$(DEMO_VENV)/bin:$$PATH" bash scripts/demo.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

# Most tests wait on sockets, simulated renders and subprocesses rather than the CPU, so they are
# spread over this many worker processes (pytest-xdist; each has its own Airflow home and
# simulator), a test file at a time, so a module's api-server or DAG runs are set up once. The
# end-to-end deployments start a whole Airflow each, and the tests marked `timing` measure seconds:
# both run afterwards.
TEST_WORKERS ?= 4

# Everything, on the newest supported Airflow: unit, hook, dag.test(), simulator, end to end.
# (Tests marked `wheel` are left out unless -m names them: wheel-test runs them.)
unit: unit-parallel unit-timing e2e

# Less the 200-video soak (marked slow): it runs beside the deployments, which leave a core idle.
unit-parallel: venv
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not e2e and not timing and not slow"

unit-timing: venv
	$(BIN)/pytest -q -m "timing and not e2e"

# The scale-out batch runs alone (its figures are the deployment's own); the other deployments
# mostly wait on renders and the browser, so they run side by side with the 200-video soak, a
# module per worker (four modules).
SCALE_OUT := tests/e2e/test_scale_out.py

e2e: venv
	$(BIN)/pytest -q -m "e2e or slow" -n 4 --dist loadfile --ignore=$(SCALE_OUT)
	$(MAKE) --no-print-directory scale-out

# The scale-out batch alone: its report (test-artifacts/scale-out/report.json) holds the figures
# docs/performance.md quotes.
scale-out: venv
	$(BIN)/pytest -q -m e2e $(SCALE_OUT)

# The same suites on the lowest supported Airflow, less the deployment, the 200-video soak and the
# tests of code that does not change with Airflow's version (marked one_airflow).
unit-floor: floor-parallel floor-timing

floor-parallel: floor-venv
	$(FLOOR_VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not e2e and not slow and not timing and not one_airflow"

floor-timing: floor-venv
	$(FLOOR_VENV)/bin/pytest -q -m "timing and not e2e and not slow and not one_airflow"

# The wheel a user installs: `python -m build` (sdist, and the wheel from it) and `twine check`,
# the wheel's files against the package's, then the wheel in a fresh Python 3.12 virtualenv per
# supported Airflow version: providers get, plugins, the simulator's console script, and the
# text-to-video example through `airflow dags test`.
wheel-test: venv
	NANOGPT_WHEEL_AIRFLOW_VERSIONS="$(AIRFLOW_VERSION) $(FLOOR_AIRFLOW_VERSION)" \
	NANOGPT_WHEEL_PYTHON="$(WHEEL_PYTHON)" \
	$(BIN)/pytest -q -m wheel tests/release

# Side by side where nothing is shared (each pytest session has its own Airflow home and ports;
# output kept per target): the two virtualenvs are built and the system packages installed
# together, then lint, the type check and the suites that tolerate a busy machine (3.3, the 3.1
# floor and the wheel checks) run together, which fills the time their tests spend waiting on
# sockets and simulated renders. The tests that measure time run afterwards with nothing beside
# them but each other (they mostly sleep, a process each), then the end-to-end deployments (see
# e2e).
test:
	$(MAKE) --no-print-directory -j3 --output-sync=target venv floor-venv system-packages
	$(MAKE) --no-print-directory -j5 --output-sync=target lint typecheck unit-parallel floor-parallel wheel-test
	$(MAKE) --no-print-directory -j2 --output-sync=target unit-timing floor-timing
	$(MAKE) --no-print-directory e2e

# The release artifacts in dist/: sdist and wheel, checked.
dist: venv
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

bench: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmarks

# Rewrite every lock in constraints/ from the newest releases pyproject.toml allows, less each
# Airflow version's known-breaks.txt (docs/testing.md: when, and what to run after).
lock:
	$(PYTHON) -m scripts.lock --airflow $(AIRFLOW_VERSION) $(FLOOR_AIRFLOW_VERSION)

# Not part of make test: the environments as a user without constraints would get them today,
# the fast suites on each, and the release that breaks a suite named (docs/testing.md).
drift:
	$(PYTHON) -m scripts.drift --airflow $(AIRFLOW_VERSION) $(FLOOR_AIRFLOW_VERSION)

clean:
	rm -rf $(VENV) $(FLOOR_VENV) $(DEMO_VENV) .drift .airflow output dist build .pytest_cache .mypy_cache .ruff_cache
