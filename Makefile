# Beacon: `make run` starts everything on embedded defaults; `make test` runs the suite.
# Both set themselves up (virtual environment in .venv, install, migrations).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint generate migrate bench soak setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/beacon dev

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy src
	$(BIN)/mypy tests bench
	$(BIN)/lint-imports
	$(BIN)/buf lint
	@if git rev-parse --verify --quiet main >/dev/null; then \
		$(BIN)/buf breaking --against '.git#branch=main'; \
	else echo "buf breaking: no main branch to compare against"; fi
	@scripts/check-generated.sh

generate: $(STAMP)
	scripts/generate.sh

migrate: $(STAMP)
	$(BIN)/beacon migrate

bench: $(STAMP)
	$(BIN)/python -m bench

# Mixed load on 2 serve + 1 worker + 2 ticker with Redis and PostgreSQL restarted midway
# (private instances); SOAK_MINUTES (default 30), SOAK_USERS (default 8). Not part of `make test`.
soak: $(STAMP)
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
