# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8501
ADDRESS ?= 127.0.0.1
STUDIO_DATA_DIR ?= data
export STUDIO_DATA_DIR

.PHONY: run team test test-fast install install-test browser ocr team-deps lint bench soak soak-team clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[xlsx]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,team]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Debian's Chromium for the browser tests (Playwright's own download does not work offline).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "Installing Debian's chromium..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi

# Debian's Tesseract for the text-fidelity check (the studio runs without it, showing "OCR unavailable").
ocr:
	@if ! command -v tesseract >/dev/null 2>&1; then \
	  echo "Installing Debian's tesseract-ocr..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq tesseract-ocr >/dev/null; \
	fi

# Debian's PostgreSQL for the team-mode tests: the fixtures run a throwaway cluster from
# /usr/lib/postgresql/<version>/bin as an unprivileged user. SeaweedFS (`weed`) and the
# drivers come with the `team` extra of pyproject.toml.
team-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "Installing Debian's postgresql..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; \
	fi

# `launch` is `streamlit run server.py` whose refusals (exposed address with a real key,
# a data folder another studio holds) come before the port is bound.
run: install ocr
	$(BIN)/python -m launch --server.port $(PORT) --server.address $(ADDRESS)

# Team mode on this machine: a throwaway PostgreSQL cluster in $(STUDIO_DATA_DIR)/team/pg, SeaweedFS
# (`weed mini` on 127.0.0.1), one simulator, and two replicas on ports 8501 and 8502 sharing them.
# Ctrl+C stops all (tools/team.py).
team: install-test team-deps
	$(BIN)/python -m tools.team --ports 8501 8502

# The checks that keep the layout honest run before the tests: lint, formatting, the core's types
# (the layer contracts are tests/test_layers.py).
test: install-test browser ocr team-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy studio
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# The quick loop while working: everything but the browser tests and the few slow ones. These tests
# spend most of their time waiting on loopback HTTP and the simulator (about a third of it on CPU),
# so 4 workers on 2 cores overlap the waits; one file per worker keeps each module's server single.
test-fast: install-test ocr team-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not browser and not slow" -n 4 --dist loadfile

# 300 submissions under faults, the tracker killed with SIGKILL twice mid-way and restarted;
# prints the figures and fails unless all are terminal, none duplicated, none lost.
# (`make test` runs a 30-submission version.) `make` cannot pass `--team` on its command line,
# so team mode is `make soak TEAM=1` (or `make soak-team`): two replicas on a throwaway PostgreSQL
# + SeaweedFS, one SIGKILLed twice and restarted; it installs the team extra and engines first.
# SUBMISSIONS sets the count either way: `make soak TEAM=1 SUBMISSIONS=60`.
SUBMISSIONS ?= 300
TEAM ?=
SOAK_TEAM := $(filter-out 0 no false,$(strip $(TEAM)))
soak: $(if $(SOAK_TEAM),install-test team-deps,install)
	$(BIN)/python -m tools.soak $(if $(SOAK_TEAM),--team )--submissions $(SUBMISSIONS)

soak-team:
	$(MAKE) soak TEAM=1 SUBMISSIONS=$(SUBMISSIONS)

lint: install-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install-test browser ocr
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
