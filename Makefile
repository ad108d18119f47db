# Billbridge: `make run` starts the service, `make test` runs every check and test.
VENV      := .venv
BIN       := $(VENV)/bin
PYTHON    ?= python3
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test check format bench clean chromium screenshots lock wheel image

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installs are pinned by constraints.txt (committed); `make lock` refreshes it.
$(RUN_STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(DEV_STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
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

## lock: re-resolve every dependency (pyproject.toml, dev tools included) into constraints.txt
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet '.[dev]'
	{ echo "# Pinned versions of every package Billbridge and its dev tools install (make lock refreshes it)."; \
	  echo "# make run, make test and CI install with: pip install -c constraints.txt ..."; \
	  .lock-venv/bin/pip freeze --exclude billbridge; } > constraints.txt
	rm -rf .lock-venv

## wheel: build the wheel users install into dist/
wheel: $(DEV_STAMP)
	rm -rf dist
	$(BIN)/pip wheel --quiet --no-deps -w dist .

## image: the container image localhost/billbridge:latest (podman; IMAGE=..., BASE=... to change)
image:
	scripts/build-image.sh

format: $(DEV_STAMP)
	$(BIN)/ruff format src tests bench scripts
	$(BIN)/ruff check --fix src tests bench scripts

## bench: ingest, end-to-end and memory benchmarks (by hand, prints numbers)
bench: $(DEV_STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
