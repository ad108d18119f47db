# Billbridge: `make run` starts the service, `make test` runs every check and test.
VENV      := .venv
BIN       := $(VENV)/bin
PYTHON    ?= python3
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test check format bench clean chromium screenshots

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(RUN_STAMP)

## run: install, migrate and serve on http://127.0.0.1:8000 (SQLite under ./var/, dev webhook secret)
run: $(RUN_STAMP)
	$(BIN)/billbridge serve --dev

## check: lint, format check and strict type check
check: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy

## test: the checks, then the whole suite (SQLite and PostgreSQL at 127.0.0.1:5432, Chromium)
test: check chromium
	$(BIN)/pytest

## chromium: Debian's Chromium for the browser tests (never `playwright install`; see DEVELOPERS.md)
chromium:
	@test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)

## screenshots: regenerate docs/screenshots/*.png (starts a demo instance with the fakes)
screenshots: $(DEV_STAMP) chromium
	$(BIN)/python scripts/screenshots.py

format: $(DEV_STAMP)
	$(BIN)/ruff format src tests bench scripts
	$(BIN)/ruff check --fix src tests bench scripts

## bench: ingest, end-to-end and memory benchmarks (by hand, prints numbers)
bench: $(DEV_STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
