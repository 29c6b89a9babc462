# Beacon: `make run` starts everything on embedded defaults; `make test` runs the suite.
# Both set themselves up (virtual environment in .venv, install, migrations).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# uv installs exactly what uv.lock pins (versions and hashes), never resolving anew; it uses the
# machine's Python and never downloads one.
UV := UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv

.PHONY: run test lint lock generate migrate bench soak setup clean

# A new .venv gets the locked uv (pip, hash-checked), then uv makes .venv equal the lock: it
# installs, upgrades and removes until every package is the locked version (uv included).
$(STAMP): pyproject.toml uv.lock
	@test -x $(BIN)/uv || { \
		$(PYTHON) -m venv $(VENV) && \
		$(PYTHON) scripts/uv_requirement.py uv.lock > $(VENV)/uv-requirement.txt && \
		$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
			-r $(VENV)/uv-requirement.txt; }
	$(UV) sync --frozen --extra dev --python $(BIN)/python
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/beacon dev

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(UV) lock --check
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

# Upgrades every package to the newest release pyproject.toml allows and rewrites uv.lock (then
# `make setup` installs it; `make generate` if grpcio-tools changed). PACKAGE=name upgrades one.
lock: $(STAMP)
	$(UV) lock $(if $(PACKAGE),--upgrade-package $(PACKAGE),--upgrade)

# generated/ from protos/, and the docs generated from the contract and from Settings.
generate: $(STAMP)
	scripts/generate.sh
	$(BIN)/python scripts/api_table.py --update docs/api.md
	$(BIN)/python scripts/settings_table.py --update docs/configuration.md

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
